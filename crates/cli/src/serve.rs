//! `keyward serve`: plain HTTP, or HTTPS with rustls (`--tls-cert`, `--tls-key`).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Args;
use keyward_http::{AppState, TrustedProxies};
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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
    /// Serve HTTPS with this PEM certificate chain (leaf first). Needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A shared store (`--store redis://…`): how long, in milliseconds, keys
    /// are still verified from memory after the store stopped answering;
    /// then every key is refused with STORE_UNAVAILABLE until it answers.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    store_stale_ms: u64,
    /// A shared store: while it does not answer, decide limited keys on this
    /// node's own counters instead of refusing them (calls admitted then are
    /// not counted on other nodes).
    #[arg(long)]
    fail_open_limits: bool,
}

pub(crate) fn run(db: &crate::Place, args: ServeArgs) -> Result<u8, Fail> {
    let proxies = args
        .trusted_proxies
        .iter()
        .map(|c| keyward_core::parse_cidr(c).map_err(|e| Fail(2, format!("--trusted-proxy: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // Before the database: a bad certificate must not leave a fresh database behind.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let fresh = !db.exists();
    if fresh {
        keyward_core::Prefix::parse(&args.prefix).map_err(|e| Fail(2, format!("--prefix: {e}")))?;
    }
    let (stale, fail_open) = (Duration::from_millis(args.store_stale_ms), args.fail_open_limits);
    let tune = move |b: keyward::EngineBuilder| b.store_stale(stale).fail_open_limits(fail_open);
    let engine = crate::open_or_create(db, Duration::from_millis(args.flush_ms.max(1)), &tune)?;
    if fresh || engine.workspaces().is_empty() {
        let init = crate::initialise(&engine, &args.prefix)?;
        say(&format!("created {} with workspace {}", engine.path().display(), init.workspace));
        say(&format!("ROOT KEY (shown once, store it now): {}", init.root_key));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let state =
        AppState::new(engine.clone()).with_trusted_proxies(TrustedProxies(proxies)).with_secure_cookies(tls.is_some());
    let watched = engine.clone();
    let served = rt.block_on(async move {
        tokio::spawn(watch_health(watched));
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let app = keyward_http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        match tls {
            None => {
                announce("http", addr);
                axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
            }
            Some(config) => {
                // `tap_io` also gives the listener axum's `ConnectInfo<SocketAddr>`.
                let listener = TlsListener::new(listener, addr, config).tap_io(|tls| {
                    let _ = tls.get_ref().0.set_nodelay(true);
                });
                announce("https", addr);
                axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
            }
        }
    });
    // In-flight requests have finished; write the counters.
    engine.close()?;
    served.map_err(|e| Fail(2, e.to_string()))?;
    say("keyward stopped");
    Ok(0)
}

/// Logs the store's health to stderr when it changes: a failing flush or
/// commit (with its reason), and the recovery.
async fn watch_health(engine: keyward::Engine) {
    let mut was: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let h = engine.health();
        if h.degraded != was {
            use std::io::Write;
            // A closed stderr is no reason to stop serving.
            let _ = match &h.degraded {
                Some(why) => writeln!(
                    io::stderr(),
                    "keyward: store degraded ({} failed flushes, {} failed commits): {why}",
                    h.flush_failures,
                    h.write_failures
                ),
                None => writeln!(io::stderr(), "keyward: store recovered"),
            };
            was = h.degraded;
        }
    }
}

/// Prints a line and flushes it, for the scripts that read them. A closed
/// stdout is no reason to stop serving (`println!` would panic).
fn say(line: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The line scripts wait for before they connect.
fn announce(scheme: &str, addr: SocketAddr) {
    say(&format!("keyward listening on {scheme}://{addr}"));
}

/// Loads the certificate chain and key into a rustls server config (ring
/// provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN). Every problem is exit code 2.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Fail> {
    let pem_error = |flag: &str, path: &Path, e: pem::Error| {
        let why = match e {
            pem::Error::NoItemsFound => match flag {
                "--tls-cert" => "no CERTIFICATE block found".to_owned(),
                _ => "no PRIVATE KEY block found".to_owned(),
            },
            pem::Error::Io(e) => e.to_string(),
            other => format!("not valid PEM ({other:?})"),
        };
        Fail(2, format!("{flag} {}: {why}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error("--tls-cert", cert, e))?;
    if chain.is_empty() {
        return Err(pem_error("--tls-cert", cert, pem::Error::NoItemsFound));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("--tls-key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Fail(2, format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "the private key does not match the certificate".to_owned()
                }
                other => other.to_string(),
            };
            Fail(2, format!("--tls-cert {} / --tls-key {}: {why}", cert.display(), key.display()))
        })?;
    // axum serves HTTP/1.1 only (its `http2` feature is off).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener that hands axum only connections whose TLS handshake has
/// finished. Handshakes run in tasks of their own, so a slow or silent client
/// holds up nobody; axum's graceful shutdown drops the listener, which stops
/// accepting at once.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    fn new(tcp: TcpListener, local: SocketAddr, config: Arc<ServerConfig>) -> Self {
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Self { ready, local, _accepting: AbortOnDrop(task) }
    }
}

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors and the like: back off rather than spin
            // (as axum does for plain TCP).
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                let _ = ready.send((tls, peer)).await;
            }
        });
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // Unreachable while the accept loop runs (it holds a sender and
            // never returns); if it ever stopped, accept nothing rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
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
