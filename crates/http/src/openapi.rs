//! `GET /openapi.json`: the OpenAPI 3.1 document of the native API, derived
//! from the types in [`crate::wire`] and built once.
//!
//! The functions here only carry each route's `#[utoipa::path]`; the
//! handlers are in [`crate::routes`].

#![allow(dead_code)] // The path functions exist for their attributes.

use std::sync::{Arc, LazyLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::wire::*;

const DESCRIPTION: &str = "keyward's native API. Every answer but `/metrics` and \
a forwarded gateway call wears the envelope: `{\"success\":true,\"data\":…,\"request_id\":…}` \
or `{\"success\":false,\"error\":{\"code\",\"message\"},\"request_id\":…}`; \
the request id is also in `X-Request-Id`. Admin calls authenticate with \
`Authorization: Bearer <key>` and need the permission each operation names. \
Not described here: the Unkey-compatible surface (`/v2/*`), the APEX-compatible \
surface (`/ap/*`) and the browser console (`/console`).";

#[derive(OpenApi)]
#[openapi(
    info(title = "keyward", description = DESCRIPTION, license(name = "MIT OR Apache-2.0")),
    paths(
        create_key, list_keys, create_keys, get_key, update_key, delete_key, revoke_key, rotate_key,
        key_usage, key_history, workspace_history, audit, get_workspace, update_workspace,
        apimall_create_key, create_tool, list_tools, update_tool, gateway, verify, release_lease,
        auth, authenticate_user, healthz, metrics, openapi_json,
    ),
    components(schemas(ErrorReply, ErrorBody, BatchError, VerdictCode)),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "keys", description = "API keys"),
        (name = "usage", description = "Usage and audit"),
        (name = "workspaces", description = "Workspaces"),
        (name = "tools", description = "Tools and the gateway"),
        (name = "verification", description = "Verifying keys"),
        (name = "server", description = "Health, metrics and this document"),
    ),
)]
struct Doc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document, serialised once.
static DOCUMENT: LazyLock<Arc<str>> = LazyLock::new(|| {
    let doc = Doc::openapi();
    // Serialising the document's own types cannot fail; an empty object
    // would say so to a client rather than take the server down.
    Arc::from(doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()))
});

/// The document as JSON text.
pub(crate) fn document() -> Arc<str> {
    DOCUMENT.clone()
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document().to_string()).into_response()
}

// ---- keys ----------------------------------------------------------------

#[utoipa::path(post, path = "/v1/api-keys", tag = "keys",
    description = "Creates a key in the caller's workspace. Needs `keys:write`.",
    request_body = KeySpec,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = CreatedKeyReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn create_key() {}

#[utoipa::path(get, path = "/v1/api-keys", tag = "keys",
    description = "Lists the caller's workspace's keys. Needs `keys:read`.",
    params(
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of keys", body = KeyPageReply),
        (status = 400, description = "Invalid query", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn list_keys() {}

#[utoipa::path(post, path = "/v1/api-keys/batch", tag = "keys",
    description = "Creates up to 1000 keys in one commit, all or nothing (body up to 4 MiB). \
If any spec is refused nothing is created and `error.errors` lists every refused spec. Needs `keys:write`.",
    request_body = BatchSpec,
    responses(
        (status = 201, description = "Created, in the order of the specs", body = CreatedKeysReply),
        (status = 400, description = "Invalid body or a refused spec", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn create_keys() {}

#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = "keys",
    description = "A key of the caller's workspace. Needs `keys:read`.",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn get_key() {}

#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = "keys",
    description = "Changes a key, in one commit. Needs `keys:write`.",
    params(("id" = String, Path, description = "The key's id")),
    request_body = KeyPatch,
    responses(
        (status = 200, description = "The changed key", body = KeyReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn update_key() {}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys",
    description = "Deletes a key. Needs `keys:write`.",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn delete_key() {}

#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", tag = "keys",
    description = "Revokes a key for good. Needs `keys:write`.",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The revoked key", body = KeyReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn revoke_key() {}

#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = "keys",
    description = "Replaces a key by a new one with the same settings; the old one stays \
valid for `grace_seconds`. The body may be empty. Needs `keys:write`.",
    params(("id" = String, Path, description = "The key's id")),
    request_body(content = Option<RotateSpec>),
    responses(
        (status = 200, description = "The new key; the secret is shown this once", body = RotatedKeyReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn rotate_key() {}

#[utoipa::path(get, path = "/v1/api-keys/{id}/usage", tag = "usage",
    description = "A key's usage and where its limits stand. Needs `keys:read`.",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The usage", body = UsageReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn key_usage() {}

#[utoipa::path(get, path = "/v1/api-keys/{id}/usage/history", tag = "usage",
    description = "A key's calls by verdict code over time. Needs `keys:read`. \
Unknown query parameters are refused.",
    params(
        ("id" = String, Path, description = "The key's id"),
        ("granularity" = Option<Granularity>, Query, description = "Bucket size (default hour)"),
        ("from" = Option<String>, Query, description = "RFC 3339 or Unix ms (default: an hour of minutes, a day of hours or 30 days of days before `to`)"),
        ("to" = Option<String>, Query, description = "RFC 3339 or Unix ms (default now)"),
    ),
    responses(
        (status = 200, description = "The history", body = HistoryReply),
        (status = 400, description = "Invalid query", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such key in the caller's workspace", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn key_history() {}

#[utoipa::path(get, path = "/v1/usage/history", tag = "usage",
    description = "The caller's workspace's calls by verdict code over time. Needs `keys:read`. \
Unknown query parameters are refused.",
    params(
        ("granularity" = Option<Granularity>, Query, description = "Bucket size (default hour)"),
        ("from" = Option<String>, Query, description = "RFC 3339 or Unix ms"),
        ("to" = Option<String>, Query, description = "RFC 3339 or Unix ms (default now)"),
    ),
    responses(
        (status = 200, description = "The history", body = HistoryReply),
        (status = 400, description = "Invalid query", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn workspace_history() {}

#[utoipa::path(get, path = "/v1/audit", tag = "usage",
    description = "The caller's workspace's audit log, oldest first. Needs `audit:read`.",
    params(
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 100 (default 50)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of events", body = AuditPageReply),
        (status = 400, description = "Invalid query", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn audit() {}

// ---- workspaces ------------------------------------------------------------

#[utoipa::path(get, path = "/v1/workspaces/{id}", tag = "workspaces",
    description = "The caller's workspace. Needs `workspaces:read`.",
    params(("id" = String, Path, description = "The workspace's id")),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "Not the caller's workspace", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn get_workspace() {}

#[utoipa::path(patch, path = "/v1/workspaces/{id}", tag = "workspaces",
    description = "Changes the caller's workspace. Needs `workspaces:write`.",
    params(("id" = String, Path, description = "The workspace's id")),
    request_body = WorkspacePatch,
    responses(
        (status = 200, description = "The changed workspace", body = WorkspaceReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "Not the caller's workspace", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn update_workspace() {}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys",
    description = "Creates a key the APIMall way, with its creator's permissions. Needs `keys:write`.",
    request_body = ApimallSpec,
    responses(
        (status = 201, description = "Created; the token is shown this once", body = ApimallKeyReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn apimall_create_key() {}

// ---- tools -----------------------------------------------------------------

#[utoipa::path(post, path = "/v1/tools", tag = "tools",
    description = "Creates a tool. Needs `tools:write`.",
    request_body = ToolSpec,
    responses(
        (status = 201, description = "Created", body = ToolReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 409, description = "A tool of that name exists", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn create_tool() {}

#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    description = "The caller's workspace's tools. Needs `tools:read`.",
    responses(
        (status = 200, description = "The tools", body = ToolListReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn list_tools() {}

#[utoipa::path(patch, path = "/v1/tools/{name}", tag = "tools",
    description = "Changes a tool. Needs `tools:write`.",
    params(("name" = String, Path, description = "The tool's name")),
    request_body = ToolPatch,
    responses(
        (status = 200, description = "The changed tool", body = ToolReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "No such tool", body = ErrorReply),
        (status = 409, description = "Conflict", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn update_tool() {}

#[utoipa::path(post, path = "/api/v2/{tool}", tag = "tools",
    description = "The gateway: verifies the caller's key for the tool and forwards the call \
(and any path beyond the tool) to the tool's upstream, whose answer comes back as it gave it, \
outside the envelope. Refusals wear the envelope, with `Retry-After` and `RateLimit-*` headers \
when limited.",
    params(("tool" = String, Path, description = "The tool's name")),
    request_body(content = Object, description = "Forwarded as is", content_type = "*/*"),
    responses(
        (status = 200, description = "The upstream's answer (any status of its own)"),
        (status = 401, description = "No valid key", body = ErrorReply),
        (status = 403, description = "Refused (permission, IP, disabled, tool disabled, host)", body = ErrorReply),
        (status = 404, description = "No such tool", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "Limited", body = ErrorReply),
        (status = 501, description = "The tool has no upstream", body = ErrorReply),
        (status = 502, description = "The upstream could not be reached", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
        (status = 504, description = "The upstream took longer than the tool's timeout", body = ErrorReply),
    ))]
fn gateway() {}

// ---- verification ----------------------------------------------------------

#[utoipa::path(post, path = "/v1/verify", tag = "verification",
    description = "Verifies a key of the caller's workspace. The answer is 200 whatever the \
verdict. Needs `keys:verify`.",
    request_body = VerifySpec,
    responses(
        (status = 200, description = "The verdict", body = VerifyReply),
        (status = 400, description = "Invalid body", body = ErrorReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 413, description = "Body too large", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn verify() {}

#[utoipa::path(post, path = "/v1/leases/{lease_id}/release", tag = "verification",
    description = "Frees the leases a `/v1/verify` call with `\"hold\": true` kept. Any body is ignored. \
Needs `keys:verify`.",
    params(("lease_id" = String, Path, description = "From `/v1/verify`")),
    responses(
        (status = 200, description = "Released", body = ReleasedReply),
        (status = 401, description = "No valid caller key", body = ErrorReply),
        (status = 403, description = "The caller lacks the permission", body = ErrorReply),
        (status = 404, description = "Released already, expired or unknown", body = ErrorReply),
        (status = 429, description = "The caller is rate limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn release_lease() {}

#[utoipa::path(get, path = "/v1/auth", tag = "verification",
    description = "For nginx `auth_request` (any method): verifies the request's own credential \
(bearer key, signed headers or session), for the tool named in `X-Keyward-Tool`. \
Accepted: 200 with `X-Keyward-Key-Id`.",
    params(("X-Keyward-Tool" = Option<String>, Header, description = "The tool called")),
    responses(
        (status = 200, description = "Accepted", body = AuthReply),
        (status = 401, description = "No valid credential", body = ErrorReply),
        (status = 403, description = "Refused (an unknown tool is 403 here)", body = ErrorReply),
        (status = 429, description = "Limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn auth() {}

#[utoipa::path(post, path = "/v1/AuthenticateUser", tag = "verification",
    description = "Signed login: send `APIKey`, `Signature`, `UserId` and `Nonce` headers; \
the answer's session token goes in `APToken` on later calls.",
    security(()),
    responses(
        (status = 200, description = "Logged in", body = SessionReply),
        (status = 401, description = "Refused", body = ErrorReply),
        (status = 429, description = "Limited", body = ErrorReply),
        (status = 503, description = "The store is unavailable; retry", body = ErrorReply),
    ))]
fn authenticate_user() {}

// ---- server ----------------------------------------------------------------

#[utoipa::path(get, path = "/healthz", tag = "server",
    description = "Health: 503 while the store fails to commit or a shared store does not answer.",
    security(()),
    responses(
        (status = 200, description = "Healthy", body = HealthReply),
        (status = 503, description = "Degraded (still described, with `success: false`)", body = HealthReply),
    ))]
fn healthz() {}

#[utoipa::path(get, path = "/metrics", tag = "server",
    description = "Prometheus text. Open, or behind its own bearer token, as the server is configured.",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain"),
        (status = 401, description = "The metrics token is required", body = ErrorReply),
        (status = 404, description = "Served on a listener of its own", body = ErrorReply),
    ))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "server",
    description = "This document.",
    security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
fn openapi_json() {}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(&super::document()).unwrap_or(Value::Null)
    }

    fn properties(doc: &Value, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn is_openapi_3_1_with_every_native_route() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/v1/api-keys",
            "/v1/api-keys/batch",
            "/v1/api-keys/{id}",
            "/v1/api-keys/{id}/revoke",
            "/v1/api-keys/{id}/rotate",
            "/v1/api-keys/{id}/usage",
            "/v1/api-keys/{id}/usage/history",
            "/v1/usage/history",
            "/v1/audit",
            "/v1/workspaces/{id}",
            "/api/v1/keys",
            "/v1/tools",
            "/v1/tools/{name}",
            "/api/v2/{tool}",
            "/v1/verify",
            "/v1/leases/{lease_id}/release",
            "/v1/auth",
            "/v1/AuthenticateUser",
            "/healthz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let codes: Vec<&str> = keyward_core::Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(doc["components"]["schemas"]["VerdictCode"]["enum"], serde_json::json!(codes));
        assert_eq!(codes.len(), 19);
    }

    /// The handlers read bodies into the documented types, which refuse
    /// unknown fields: the document says so for every request body and
    /// every object inside one.
    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "KeySpec",
            "LimitsSpec",
            "RateSpec",
            "NamedRateSpec",
            "LeasedConcurrency",
            "CreditsSpec",
            "RefillSpec",
            "SigningSpec",
            "IpRule",
            "KeyPatch",
            "CreditsPatch",
            "BatchSpec",
            "RotateSpec",
            "ApimallSpec",
            "ToolSpec",
            "ToolPatch",
            "WorkspacePatch",
            "VerifySpec",
        ] {
            assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
        }
        // Every operation's body is one of them.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                // A gateway call's body is the upstream's business.
                let Some(body) = op.get("requestBody").filter(|_| !path.starts_with("/api/v2/")) else { continue };
                let schema = &body["content"]["application/json"]["schema"];
                let reference = schema["$ref"]
                    .as_str()
                    .or_else(|| schema["oneOf"].as_array()?.iter().find_map(|s| s["$ref"].as_str()));
                let name = reference.and_then(|r| r.strip_prefix("#/components/schemas/"));
                let name = name.unwrap_or_else(|| panic!("{method} {path}: {schema}"));
                assert_eq!(schemas[name]["additionalProperties"], false, "{method} {path}");
            }
        }
    }

    /// The documented limits of names are the engine's.
    #[test]
    fn name_limits_are_the_engines() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        for (schema, field) in
            [("KeySpec", "name"), ("KeySpec", "title"), ("KeyPatch", "name"), ("ApimallSpec", "title")]
        {
            let f = &schemas[schema]["properties"][field];
            assert_eq!(
                (f["minLength"].as_u64(), f["maxLength"].as_u64()),
                (Some(1), Some(keyward_core::policy::MAX_NAME_LEN as u64))
            );
        }
        let pattern = format!("^[A-Za-z0-9_.-]{{1,{}}}$", keyward_core::credentials::MAX_TOOL_LEN);
        assert_eq!(schemas["ToolSpec"]["properties"]["name"]["pattern"], pattern.as_str());
    }

    /// A PATCH field that `null` clears is documented as nullable.
    #[test]
    fn patch_fields_that_clear_are_nullable() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let nullable = |schema: &str, field: &str| {
            let f = &schemas[schema]["properties"][field];
            let types = f["type"].as_array().cloned().unwrap_or_default();
            let one_of = f["oneOf"].as_array().cloned().unwrap_or_default();
            types.contains(&Value::from("null")) || one_of.iter().any(|s| s["type"] == "null")
        };
        for field in ["expires_at", "ip_rules", "limits", "tools", "meta"] {
            assert!(nullable("KeyPatch", field), "KeyPatch.{field}: {}", schemas["KeyPatch"]["properties"][field]);
        }
        for field in ["permission", "cooldown_ms", "daily_limit", "upstream", "timeout_ms"] {
            assert!(nullable("ToolPatch", field), "ToolPatch.{field}");
        }
        for field in ["default_key_ttl", "max_key_ttl"] {
            assert!(nullable("WorkspacePatch", field), "WorkspacePatch.{field}");
        }
    }

    /// A key's real view has exactly the fields its schema names.
    #[test]
    fn a_key_view_has_the_schema_fields() {
        use keyward::{Actor, BatchKey, NewWorkspace};
        let dir = tempfile::tempdir().unwrap();
        let engine = keyward::Engine::open(dir.path().join("k.redb")).unwrap();
        let ws = engine.create_workspace(NewWorkspace::named("t"), &Actor::Admin).unwrap().policy.id;
        let spec = serde_json::json!({
            "name": "full",
            "expires_at": "2099-01-01T00:00:00.000Z",
            "ip_rules": [{"action": "allow", "cidr": "10.0.0.0/8"}],
            "limits": {
                "rate": {"limit": 10, "window_ms": 1000},
                "cooldown_ms": 5, "daily": 100, "concurrency": 2,
                "credits": {"remaining": 7, "refill": {"interval": "monthly", "amount": 7, "day": 3}}
            },
            "tools": ["gl_ping"],
            "meta": {"a": 1}
        });
        let BatchKey::New(key) = crate::json::import_spec(spec.to_string().as_bytes()).unwrap() else {
            panic!("a new key")
        };
        let created = engine.create_key(ws, key, &Actor::Admin).unwrap();
        let doc = doc();
        let view = crate::json::key_json(&created.info);
        let mut fields: Vec<String> = view.as_object().unwrap().keys().cloned().collect();
        fields.push("signing".into()); // Signing keys only.
        fields.sort();
        assert_eq!(fields, properties(&doc, "Key"));
        let mut limits: Vec<String> = view["limits"].as_object().unwrap().keys().cloned().collect();
        limits.sort();
        assert_eq!(limits, properties(&doc, "Limits"));
        assert_eq!(view["limits"]["credits"]["refill"]["day"], 3);
        let workspace = crate::json::workspace_json(&engine.workspace(ws).unwrap());
        let mut fields: Vec<String> = workspace.as_object().unwrap().keys().cloned().collect();
        fields.sort();
        assert_eq!(fields, properties(&doc, "Workspace"));
    }
}
