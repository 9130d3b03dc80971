//! keyward-http: the HTTP surface of keyward.
//!
//! [`router`] serves the whole API (admin, gateway, verify, nginx
//! `auth_request`, signed authentication, health and metrics, and its
//! OpenAPI document at `GET /openapi.json`) around an
//! [`Engine`]; [`KeywardLayer`] and [`VerifiedKey`] protect an application's
//! own axum routes. The types it answers with are in [`wire`], made from the
//! engine's values by [`key_view`], [`tool_view`], [`workspace_view`] and
//! their siblings, so another front end (`keyward … --json`) prints the
//! same shapes.
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
// Attacker input yields an error, never a panic (STYLE.md, "Errors"): outside
// tests, every unwrap, expect, panic or unchecked index is either rewritten or
// carries a scoped `allow` with a comment stating why it cannot fire.
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod apex;
mod blocking;
mod body;
mod client_ip;
mod console;
mod envelope;
mod gateway;
mod json;
mod layer;
mod metrics;
mod openapi;
mod routes;
mod unkey;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use keyward::Engine;

pub use client_ip::TrustedProxies;
pub use envelope::{ApiError, Reply, RequestId};
pub use gateway::DEFAULT_GATEWAY_BODY;
pub use json::{
    DEFAULT_LEASE_MS, MAX_BATCH_BODY, MAX_BATCH_SPECS, MAX_BODY, audit_view, created_key_view, import_spec, key_view,
    rotated_key_view, tool_view, verify_view, workspace_view,
};
pub use layer::{KeywardLayer, KeywardService, VerifiedKey};
pub use metrics::Metrics;
pub use routes::history_json;

/// What the router's handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Proxies trusted to set `X-Forwarded-For`. By default none.
    pub proxies: TrustedProxies,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// Hosts the gateway answers on; `None`: any.
    gateway_hosts: Option<Arc<[String]>>,
    /// Largest body the gateway forwards.
    gateway_body_limit: u64,
    /// The gateway's pooled client.
    upstreams: Arc<gateway::Upstreams>,
    /// Who may read `GET /metrics`. By default, anyone who reaches the router.
    pub metrics_access: MetricsAccess,
    /// How long a request may take, body included, before it is answered
    /// 503 `timeout`. By default, no limit.
    pub request_timeout: Option<std::time::Duration>,
    /// Browser console sessions (`/console`).
    pub(crate) console: console::Console,
}

/// Who may read `GET /metrics`.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum MetricsAccess {
    /// Anyone who reaches the router (the default).
    #[default]
    Open,
    /// Only requests with `Authorization: Bearer <token>` (compared in
    /// constant time); others get 401.
    Token(Arc<zeroize::Zeroizing<String>>),
    /// Not on [`router`]: serve [`metrics_router`] on a listener of its own.
    Elsewhere,
}

impl AppState {
    /// State around an engine, trusting no proxy.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            proxies: TrustedProxies::default(),
            metrics: Arc::new(Metrics::default()),
            gateway_hosts: None,
            gateway_body_limit: DEFAULT_GATEWAY_BODY,
            upstreams: Arc::new(gateway::Upstreams::new()),
            metrics_access: MetricsAccess::Open,
            request_timeout: None,
            console: Default::default(),
        }
    }

    /// Answers gateway calls (`/api/v2/...`) only when their `Host` (port
    /// ignored, any case) is one of `hosts`; others get 403. The admin API
    /// answers on every host. By default the gateway answers on any host;
    /// an empty list keeps that default.
    pub fn with_gateway_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        let hosts: Vec<String> = hosts.into_iter().collect();
        self.gateway_hosts = (!hosts.is_empty()).then(|| hosts.into());
        self
    }

    /// The largest request body the gateway forwards (streamed, never held
    /// whole); a larger one is refused with 413. By default
    /// [`DEFAULT_GATEWAY_BODY`] (256 MiB).
    pub fn with_gateway_body_limit(mut self, bytes: u64) -> Self {
        self.gateway_body_limit = bytes;
        self
    }

    /// Sets who may read `GET /metrics`.
    pub fn with_metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    /// Answers requests that take longer than `limit` with 503 `timeout`
    /// (the handler is dropped). By default, no limit.
    pub fn with_request_timeout(mut self, limit: std::time::Duration) -> Self {
        self.request_timeout = Some(limit);
        self
    }

    /// Sets the trusted proxies.
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }
}

/// `GET /metrics` alone, with the envelope and request log of [`router`],
/// for a listener of its own ([`MetricsAccess::Elsewhere`]; a token set with
/// [`MetricsAccess::Token`] is asked here too).
pub fn metrics_router(state: AppState) -> Router {
    let mut state = state;
    if matches!(state.metrics_access, MetricsAccess::Elsewhere) {
        state.metrics_access = MetricsAccess::Open;
    }
    Router::new()
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(envelope::envelope))
        .layer(axum::middleware::from_fn_with_state(state.clone(), envelope::stamp))
        .with_state(state)
}

/// The whole keyward API. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so client IPs are known.
pub fn router(state: AppState) -> Router {
    let gateway_only_post = || {
        post(gateway::gateway).fallback(|| async {
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
        .route("/v1/api-keys/batch", post(routes::create_keys).layer(DefaultBodyLimit::max(json::MAX_BATCH_BODY)))
        .route("/v1/api-keys/{id}", get(routes::get_key).patch(routes::update_key).delete(routes::delete_key))
        .route("/v1/api-keys/{id}/revoke", post(routes::revoke_key))
        .route("/v1/api-keys/{id}/rotate", post(routes::rotate_key))
        .route("/v1/api-keys/{id}/usage", get(routes::key_usage))
        .route("/v1/api-keys/{id}/usage/history", get(routes::key_history))
        .route("/v1/usage/history", get(routes::workspace_history))
        .route("/v1/audit", get(routes::audit))
        .route("/v1/workspaces/{id}", get(routes::get_workspace).patch(routes::update_workspace))
        .route("/api/v1/keys", post(routes::apimall_create_key))
        .route("/v1/tools", post(routes::create_tool).get(routes::list_tools))
        .route("/v1/tools/{name}", axum::routing::patch(routes::update_tool))
        .route("/api/v2/{tool}", gateway_only_post())
        .route("/api/v2/{tool}/", gateway_only_post())
        .route("/api/v2/{tool}/{*rest}", gateway_only_post())
        .route("/v1/verify", post(routes::verify))
        .route("/v1/leases/{lease_id}/release", post(routes::release_lease))
        .route("/v1/auth", any(routes::auth))
        .route("/v1/AuthenticateUser", post(routes::authenticate_user))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn(envelope::envelope))
        // Merged after the envelope layer so APEX clients get APEX's own format.
        .merge(apex::routes())
        // Likewise for Unkey's SDKs (`/v2/keys.*`, `/v2/apis.listKeys`).
        .merge(unkey::routes())
        .merge(console::routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(state.clone(), console::guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), envelope::stamp))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
