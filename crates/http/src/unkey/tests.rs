//! The `/v2/` router end to end, without sockets: status, content type,
//! request id and exact bodies. Each operation's own tests use [`app`] and
//! [`call`].

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use keyward::{Actor, Engine, NewKey, NewWorkspace};
use keyward_core::permission::Permission;
use keyward_core::{KeyId, WorkspaceId};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::DEFAULT_NAME;
use super::problem::ERROR_DOCS;
use crate::AppState;
use crate::json::MAX_BODY;

/// A fresh engine with one workspace, its root key (`*`) and the router.
pub(super) struct App {
    _dir: tempfile::TempDir,
    pub(super) engine: Engine,
    router: Router,
    pub(super) ws: WorkspaceId,
    pub(super) root: String,
}

pub(super) fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("k.redb")).unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("t"), &Actor::Admin).unwrap().policy.id;
    let spec = NewKey { name: "root".into(), permissions: vec![Permission::parse("*").unwrap()], ..NewKey::default() };
    let root = engine.create_key(ws, spec, &Actor::Admin).unwrap().token.expose().to_owned();
    App { _dir: dir, router: crate::router(AppState::new(engine.clone())), engine, ws, root }
}

/// One request; the answer's status, content type and body without `meta`
/// (checked to carry the request id).
pub(super) async fn call(app: &App, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    let resp = app.router.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let id = resp.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    if let Some(meta) = v.as_object_mut().and_then(|m| m.remove("meta")) {
        assert_eq!(meta["requestId"].as_str(), id.as_deref(), "X-Request-Id is meta.requestId");
        assert!(id.is_some_and(|id| id.starts_with("req_") && id.len() == 24));
    }
    (status, ctype, v)
}

#[tokio::test]
async fn create_and_verify() {
    let a = app();
    let body = json!({"apiId": a.ws.to_string(), "name": "k", "credits": {"remaining": 1}}).to_string();
    let (status, ctype, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &body).await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"), "{v}");
    let key = v["data"]["key"].as_str().unwrap().to_owned();
    let key_id = v["data"]["keyId"].as_str().unwrap().to_owned();
    assert_eq!(v, json!({"data": {"keyId": key_id, "key": key}}));

    let verify = |k: &str| json!({ "key": k }).to_string();
    let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"data": {
            "valid": true, "code": "VALID", "keyId": key_id, "name": "k", "credits": 0,
            "enabled": true, "permissions": [], "roles": [],
        }})
    );
    // Every verdict is a 200.
    let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
    assert_eq!(status, 200);
    assert_eq!((&v["data"]["valid"], &v["data"]["code"]), (&json!(false), &json!("USAGE_EXCEEDED")));
    let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify("kw_live_x")).await;
    assert_eq!((status, v), (200, json!({"data": {"valid": false, "code": "NOT_FOUND"}})));
    // A revoked key is NOT_FOUND, and described no more than an unknown one.
    a.engine.revoke_key(KeyId::parse(&key_id).unwrap(), &Actor::Admin).unwrap();
    let (status, _, v) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &verify(&key)).await;
    assert_eq!((status, v), (200, json!({"data": {"valid": false, "code": "NOT_FOUND"}})));
}

#[tokio::test]
async fn errors() {
    let a = app();
    let get = json!({"keyId": "key_x"}).to_string();
    let (status, ctype, v) = call(&a, "POST", "/v2/keys.getKey", None, &get).await;
    assert_eq!((status, ctype.as_str()), (400, "application/json"));
    assert_eq!(v["error"]["errors"][0]["location"], "header.Authorization");
    assert_eq!(v["error"]["status"], 400);
    let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some("kw_live_nope"), &get).await;
    assert_eq!((status, &v["error"]["title"]), (401, &json!("Unauthorized")));
    assert!(v["error"].get("errors").is_none());
    let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some(&a.root), &get).await;
    assert_eq!((status, &v["error"]["type"]), (404, &json!(format!("{ERROR_DOCS}unkey/data/key_not_found"))));
    let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some(&a.root), "{").await;
    assert_eq!((status, &v["error"]["errors"][0]["location"]), (400, &json!("body")));
    let (status, _, v) = call(&a, "POST", "/v2/keys.getKey", Some(&a.root), "[]").await;
    assert_eq!(
        (status, &v["error"]["errors"][0]),
        (400, &json!({"location": "body", "message": "invalid type: sequence, expected a JSON object"}))
    );
    let (status, _, _) = call(&a, "GET", "/v2/keys.getKey", Some(&a.root), "").await;
    assert_eq!(status, 405);
    let (status, _, v) = call(&a, "POST", "/v2/ratelimit.limit", Some(&a.root), "{}").await;
    assert_eq!((status, &v["error"]["status"]), (404, &json!(404)));
    let big = format!("{{\"key\":\"{}\"}}", "a".repeat(MAX_BODY));
    let (status, _, _) = call(&a, "POST", "/v2/keys.verifyKey", Some(&a.root), &big).await;
    assert_eq!(status, 413);
    // The rest of the API keeps keyward's envelope.
    let (status, _, v) = call(&a, "GET", "/healthz", None, "").await;
    assert_eq!((status, &v["success"]), (200, &json!(true)));
}

#[tokio::test]
async fn a_root_key_over_its_limit_gets_a_problem_document() {
    let a = app();
    let spec = json!({
        "apiId": a.ws.to_string(),
        "permissions": ["keys:read"],
        "ratelimits": [{"name": "api", "limit": 1, "duration": 60_000, "autoApply": true}],
    });
    let (_, _, v) = call(&a, "POST", "/v2/keys.createKey", Some(&a.root), &spec.to_string()).await;
    let limited = v["data"]["key"].as_str().unwrap().to_owned();
    let whoami = json!({ "key": limited }).to_string();
    let (status, _, v) = call(&a, "POST", "/v2/keys.whoami", Some(&limited), &whoami).await;
    assert_eq!((status, &v["data"]["name"]), (200, &json!(DEFAULT_NAME)));
    let (status, ctype, v) = call(&a, "POST", "/v2/keys.whoami", Some(&limited), &whoami).await;
    assert_eq!((status, ctype.as_str()), (429, "application/problem+json"));
    assert_eq!(v["error"]["title"], "Too Many Requests");
    let (status, _, _) = call(&a, "POST", "/v2/keys.createKey", Some(&limited), &spec.to_string()).await;
    assert_eq!(status, 403, "permissions are checked before limits");
}
