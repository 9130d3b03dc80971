//! The tower layer and extractor, driven in-process.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use keyward::{Actor, Engine, NewKey, NewTool, NewWorkspace};
use keyward_core::Limits;
use keyward_core::limits::Concurrency;
use keyward_core::permission::Permission;
use keyward_http::{KeywardLayer, VerifiedKey};
use tower::ServiceExt;

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn layer_verifies_and_hands_over_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("k.redb")).unwrap();
    let ws = engine.create_workspace(NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    engine
        .create_tool(
            ws,
            NewTool {
                name: "reports".into(),
                enabled: true,
                permission: None,
                cooldown_ms: None,
                daily_limit: None,
                upstream: None,
                timeout_ms: None,
            },
            &Actor::Admin,
        )
        .unwrap();
    let reader = engine
        .create_key(
            ws,
            NewKey {
                name: "r".into(),
                permissions: vec![Permission::parse("reports:read").unwrap()],
                ..NewKey::default()
            },
            &Actor::Admin,
        )
        .unwrap();
    let other = engine.create_key(ws, NewKey { name: "o".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let single = engine
        .create_key(
            ws,
            NewKey {
                name: "s".into(),
                permissions: vec![Permission::parse("reports:read").unwrap()],
                limits: Some(Limits {
                    concurrency: Some(Concurrency { max: 1, lease_ms: 60_000 }),
                    ..Limits::default()
                }),
                ..NewKey::default()
            },
            &Actor::Admin,
        )
        .unwrap();

    let app = Router::new()
        .route("/report", get(|k: VerifiedKey| async move { k.key_id.to_string() }))
        .layer(KeywardLayer::new(engine.clone()).permission("reports:read").tool("reports"));
    let call = |token: Option<&str>| {
        let mut req = Request::builder().uri("/report");
        if let Some(t) = token {
            req = req.header("x-api-key", t);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let ok = call(Some(reader.token.expose())).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(body_text(ok).await, reader.info.id.to_string());
    let r = call(Some(other.token.expose())).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(body_text(r).await.contains("INSUFFICIENT_PERMISSIONS"));
    assert_eq!(call(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    engine.revoke_key(reader.info.id, &Actor::Admin).unwrap();
    assert_eq!(call(Some(reader.token.expose())).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // The lease is released when the handler has answered.
    for _ in 0..3 {
        assert_eq!(call(Some(single.token.expose())).await.unwrap().status(), StatusCode::OK);
    }
}
