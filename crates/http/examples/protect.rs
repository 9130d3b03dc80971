//! An axum app that protects its own routes with keyward.
//!
//! ```sh
//! cargo run -p keyward-http --example protect
//! curl -H "X-API-Key: <printed key>" http://127.0.0.1:3000/report
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use keyward::{Actor, Engine, NewKey, NewWorkspace};
use keyward_core::permission::Permission;
use keyward_http::{KeywardLayer, VerifiedKey};

async fn report(key: VerifiedKey) -> String {
    format!("report for {} (workspace {})\n", key.key_id, key.workspace_id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path().join("example.redb"))?;
    let ws = engine.create_workspace(NewWorkspace::named("example"), &Actor::Admin)?;
    let key = engine.create_key(
        ws.policy.id,
        NewKey { name: "reader".into(), permissions: vec![Permission::parse("reports:read")?], ..NewKey::default() },
        &Actor::Admin,
    )?;
    println!("key: {}", key.token.expose());

    let app = Router::new()
        .route("/report", get(report))
        .layer(KeywardLayer::new(engine).permission("reports:read"))
        .route("/", get(|| async { "public\n" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
