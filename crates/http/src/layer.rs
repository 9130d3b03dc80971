//! A tower layer that protects an app's own routes, and the extractor that
//! hands the verified key to handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use keyward::Engine;
use keyward_core::credentials::{self, Credential};
use keyward_core::{KeyId, Verdict, WorkspaceId};
use tower::{Layer, Service};

use crate::client_ip::TrustedProxies;
use crate::envelope::{ApiError, Reply};

/// The key a request was verified with, put in the request extensions by
/// [`KeywardLayer`] and taken out by handlers as an extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The key.
    pub key_id: KeyId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// The full verdict (quota figures, leases).
    pub verdict: Verdict,
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<VerifiedKey>().cloned().ok_or_else(|| {
            // The route is not behind KeywardLayer: a wiring mistake, not the client's.
            Reply::error(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "route is not protected by KeywardLayer",
            ))
            .into_response()
        })
    }
}

#[derive(Clone)]
struct Config {
    engine: Engine,
    tool: Option<String>,
    permissions: Vec<String>,
    proxies: TrustedProxies,
}

/// Verifies every request before the inner service sees it. Refused requests
/// get the verdict's status and a JSON error; admitted ones carry a
/// [`VerifiedKey`] in their extensions.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use keyward_http::{KeywardLayer, VerifiedKey};
/// # fn demo(engine: keyward::Engine) -> Router {
/// Router::new()
///     .route("/report", get(|key: VerifiedKey| async move { format!("hello {}", key.key_id) }))
///     .layer(KeywardLayer::new(engine).permission("reports:read"))
/// # }
/// ```
#[derive(Clone)]
pub struct KeywardLayer {
    config: Arc<Config>,
}

impl KeywardLayer {
    /// Verifies with `engine`; no tool, no required permission, no trusted proxies.
    pub fn new(engine: Engine) -> Self {
        Self {
            config: Arc::new(Config {
                engine,
                tool: None,
                permissions: Vec::new(),
                proxies: TrustedProxies::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Charge calls as calls of this tool (its limits and permission apply).
    pub fn tool(self, tool: impl Into<String>) -> Self {
        let tool = tool.into();
        self.edit(|c| c.tool = Some(tool))
    }

    /// Require a permission (may be called several times; all are required).
    pub fn permission(self, permission: impl Into<String>) -> Self {
        let p = permission.into();
        self.edit(|c| c.permissions.push(p))
    }

    /// Proxies trusted to set `X-Forwarded-For`.
    pub fn trusted_proxies(self, proxies: TrustedProxies) -> Self {
        self.edit(|c| c.proxies = proxies)
    }
}

impl<S> Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KeywardService { inner, config: Arc::clone(&self.config) }
    }
}

/// The service [`KeywardLayer`] wraps around yours.
#[derive(Clone)]
pub struct KeywardService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Service<Request> for KeywardService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let config = Arc::clone(&self.config);
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let headers = req.headers();
            let pairs = headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
            let cred = match credentials::parse(pairs) {
                Ok(c @ (Credential::ApiKey(_) | Credential::Session(_))) => c,
                Ok(_) | Err(_) => {
                    let e = ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "MALFORMED", "no usable credential");
                    return Ok(standalone(e));
                }
            };
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            let ip = peer.and_then(|p| config.proxies.client_ip(p, headers));
            let perms: Vec<&str> = config.permissions.iter().map(String::as_str).collect();
            let r = keyward::Request { ip, tool: config.tool.as_deref(), permissions: &perms, ..Default::default() };
            let guard = match crate::blocking::verifying(&config.engine, || config.engine.acquire(&cred, &r)) {
                Ok(g) => g,
                Err(v) => {
                    let status = axum::http::StatusCode::from_u16(v.code.http_status())
                        .unwrap_or(axum::http::StatusCode::UNAUTHORIZED);
                    let mut resp = standalone(ApiError::new(status, v.code.as_str(), "request refused"));
                    if let Some(ms) = v.retry_after_ms.filter(|_| v.code.http_status() == 429)
                        && let Ok(h) = ms.div_ceil(1000).to_string().parse()
                    {
                        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, h);
                    }
                    return Ok(resp);
                }
            };
            let v = guard.verdict().clone();
            if let (Some(key_id), Some(workspace_id)) = (v.key_id, v.workspace_id) {
                req.extensions_mut().insert(VerifiedKey { key_id, workspace_id, verdict: v });
            }
            // The lease is held until the inner service has answered.
            let resp = inner.call(req).await;
            drop(guard);
            resp
        })
    }
}

/// An error response outside the keyward router (no request-id middleware).
fn standalone(e: ApiError) -> Response {
    let body = serde_json::json!({"success": false, "error": {"code": e.code, "message": e.message}});
    (e.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
