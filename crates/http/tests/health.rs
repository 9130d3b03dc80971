//! `/healthz` and `/metrics` while the store refuses writes, and after.

#[path = "../../keyward/tests/common/faulty.rs"]
mod faulty;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use keyward::{Actor, Engine, NewWorkspace};
use serde_json::Value;
use tower::ServiceExt;

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let resp = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_store_fails_and_200_after() {
    let dir = tempfile::tempdir().unwrap();
    let disk = faulty::FaultyBackend::open(&dir.path().join("k.redb"));
    let engine =
        Engine::builder().flush_interval(std::time::Duration::from_secs(3600)).open_backend(disk.clone()).unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    let root = keyward::NewKey {
        name: "root".into(),
        permissions: vec![keyward_core::permission::Permission::parse("*").unwrap()],
        ..keyward::NewKey::default()
    };
    let root = engine.create_key(ws, root, &Actor::Admin).unwrap().token.expose().to_owned();
    let app = keyward_http::router(keyward_http::AppState::new(engine.clone()));

    let (status, body) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["success"].as_bool(), v["data"]["status"].as_str()), (Some(true), Some("ok")));

    disk.fail(true);
    assert!(engine.create_workspace(NewWorkspace::named("x"), &Actor::Admin).is_err());
    // A change over HTTP is refused 503; the store's own message stays out
    // of the answer (it is for operators, on /healthz).
    let create = Request::post("/v1/api-keys")
        .header("authorization", format!("Bearer {root}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"x"}"#))
        .unwrap();
    let resp = app.clone().oneshot(create).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (Some("STORE_UNAVAILABLE"), Some("not changed: the store is unavailable; retry later"))
    );
    let (status, body) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["success"], Value::Bool(false));
    assert_eq!(v["data"]["status"], "degraded");
    assert_eq!((v["data"]["write_failures"].as_u64(), v["data"]["flush_failures"].as_u64()), (Some(2), Some(0)));
    assert!(v["data"]["reason"].as_str().unwrap().contains("injected fault"), "{body}");
    let (_, metrics) = get(&app, "/metrics").await;
    for line in ["keyward_write_failures_total 2", "keyward_flush_failures_total 0", "keyward_store_degraded 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    disk.fail(false);
    // The flusher's next tick (or any commit) probes the store again.
    engine.flush().unwrap();
    let (status, _) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(metrics.lines().any(|l| l == "keyward_store_degraded 0"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "keyward_store_stale 0"), "{metrics}");
}
