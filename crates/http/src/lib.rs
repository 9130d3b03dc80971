//! keyward-http: the HTTP surface of keyward.
//!
//! [`router`] serves the whole API (admin, gateway, verify, nginx
//! `auth_request`, signed authentication, health and metrics) around an
//! [`Engine`]; [`KeywardLayer`] and [`VerifiedKey`] protect an application's
//! own axum routes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = keyward::Engine::open("keyward.redb")?;
//! let app = keyward_http::router(keyward_http::AppState::new(engine));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apex;
mod blocking;
mod client_ip;
mod console;
mod envelope;
mod json;
mod layer;
mod metrics;
mod routes;
mod unkey;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use keyward::Engine;

pub use client_ip::TrustedProxies;
pub use envelope::{ApiError, Reply, RequestId};
pub use json::{DEFAULT_LEASE_MS, MAX_BODY};
pub use layer::{KeywardLayer, KeywardService, VerifiedKey};
pub use metrics::Metrics;

/// What the router's handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Proxies trusted to set `X-Forwarded-For`. By default none.
    pub proxies: TrustedProxies,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// Browser console sessions (`/console`).
    pub(crate) console: console::Console,
}

impl AppState {
    /// State around an engine, trusting no proxy.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            proxies: TrustedProxies::default(),
            metrics: Arc::new(Metrics::default()),
            console: Default::default(),
        }
    }

    /// Sets the trusted proxies.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }
}

/// The whole keyward API. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so client IPs are known.
pub fn router(state: AppState) -> Router {
    let gateway_only_post = || {
        post(routes::gateway).fallback(|| async {
            envelope::Reply::error(ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            ))
            .header(axum::http::header::ALLOW, "POST")
        })
    };
    Router::new()
        .route("/v1/api-keys", post(routes::create_key).get(routes::list_keys))
        .route("/v1/api-keys/{id}", get(routes::get_key).patch(routes::update_key).delete(routes::delete_key))
        .route("/v1/api-keys/{id}/revoke", post(routes::revoke_key))
        .route("/v1/api-keys/{id}/rotate", post(routes::rotate_key))
        .route("/v1/api-keys/{id}/usage", get(routes::key_usage))
        .route("/v1/audit", get(routes::audit))
        .route("/v1/workspaces/{id}", get(routes::get_workspace).patch(routes::update_workspace))
        .route("/api/v1/keys", post(routes::apimall_create_key))
        .route("/v1/tools", post(routes::create_tool).get(routes::list_tools))
        .route("/v1/tools/{name}", axum::routing::patch(routes::update_tool))
        .route("/api/v2/{tool}", gateway_only_post())
        .route("/v1/verify", post(routes::verify))
        .route("/v1/auth", any(routes::auth))
        .route("/v1/AuthenticateUser", post(routes::authenticate_user))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), envelope::envelope))
        // Merged after the envelope layer so APEX clients get APEX's own format.
        .merge(apex::routes(state.clone()))
        // Likewise for Unkey's SDKs (`/v2/keys.*`, `/v2/apis.listKeys`).
        .merge(unkey::routes(state.clone()))
        .merge(console::routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), console::guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
