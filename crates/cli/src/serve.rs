//! `keyward serve`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use keyward_http::{AppState, TrustedProxies};

use crate::Fail;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Proxy allowed to set X-Forwarded-For (CIDR, repeatable). Default: none.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<String>,
    /// Prefix of the default workspace's keys, when the database is created.
    #[arg(long, default_value = "kw_live")]
    prefix: String,
    /// How often counters are written behind, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    flush_ms: u64,
}

pub(crate) fn run(db: &Path, args: ServeArgs) -> Result<u8, Fail> {
    let proxies = args
        .trusted_proxies
        .iter()
        .map(|c| keyward_core::parse_cidr(c).map_err(|e| Fail(2, format!("--trusted-proxy: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let fresh = !db.exists();
    if fresh {
        keyward_core::Prefix::parse(&args.prefix).map_err(|e| Fail(2, format!("--prefix: {e}")))?;
    }
    let engine = crate::open_or_create(db, Duration::from_millis(args.flush_ms.max(1)))?;
    if fresh || engine.workspaces().is_empty() {
        let init = crate::initialise(&engine, &args.prefix)?;
        println!("created {} with workspace {}", db.display(), init.workspace);
        println!("ROOT KEY (shown once, store it now): {}", init.root_key);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let state = AppState::new(engine.clone()).with_trusted_proxies(TrustedProxies(proxies));
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        println!("keyward listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let app = keyward_http::router(state);
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    // In-flight requests have finished; write the counters.
    engine.close()?;
    served.map_err(|e| Fail(2, e.to_string()))?;
    println!("keyward stopped");
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
