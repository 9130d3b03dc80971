//! `keyward serve`: plain HTTP, or HTTPS with rustls (`--tls-cert`, `--tls-key`);
//! connection limits, request logs, and where `/metrics` is served.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use clap::Args;
use hyper_util::rt::{TokioIo, TokioTimer};
use keyward_http::{AppState, MetricsAccess, TrustedProxies};
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

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
    /// Host the gateway (`/api/v2/...`) answers on (repeatable; port
    /// ignored, any case). Calls to other hosts get 403. Default: any host.
    #[arg(long = "gateway-host", value_name = "NAME")]
    gateway_hosts: Vec<String>,
    /// Largest request body the gateway forwards, in bytes (streamed, never
    /// held whole). Default: 256 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = keyward_http::DEFAULT_GATEWAY_BODY)]
    gateway_max_body: u64,
    /// Request log format on stderr: one line per request.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Request log level. Without it, `RUST_LOG` decides (full filter
    /// syntax), and without that, `info`.
    #[arg(long, value_enum)]
    log_level: Option<LogLevel>,
    /// Time a client has, from connecting (or from the first byte of its
    /// next request on a kept-alive connection), to send a request's
    /// headers, TLS handshake included; then the connection is closed.
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Time a request may take from its headers to its answer, body
    /// included; then it is answered 503 `timeout`.
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Connections served at once; further clients wait in the listen
    /// backlog until one closes.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Time a kept-alive connection may sit idle between requests.
    #[arg(long, default_value_t = 60_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_timeout_ms: u64,
    /// `GET /metrics` then needs `Authorization: Bearer TOKEN` (401 otherwise).
    /// Default: open to whoever reaches the listener.
    #[arg(long, value_name = "TOKEN")]
    metrics_token: Option<String>,
    /// Serve `GET /metrics` on this address only (plain HTTP), not on --listen.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Keep audit events of the last N days; older ones are removed about
    /// once a minute (the events kept keep their sequence numbers).
    /// Default: keep every event. Refused with --store.
    #[arg(long, value_name = "N", conflicts_with = "audit_keep", value_parser = clap::value_parser!(u32).range(1..))]
    audit_keep_days: Option<u32>,
    /// Keep the last N audit events; older ones are removed about once a
    /// minute. Default: keep every event. Refused with --store.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    audit_keep: Option<u64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// `key=value` fields after a timestamp, level and message.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The connection limits of one listener.
#[derive(Clone, Copy)]
struct Limits {
    header: Duration,
    keepalive: Duration,
    connections: u32,
}

pub(crate) fn run(db: &crate::Place, args: ServeArgs) -> Result<u8, Fail> {
    let proxies = args
        .trusted_proxies
        .iter()
        .map(|c| keyward_core::ip::parse_cidr(c).map_err(|e| Fail(2, format!("--trusted-proxy: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if args.metrics_token.as_deref().is_some_and(|t| t.is_empty() || t.bytes().any(|b| !b.is_ascii_graphic())) {
        return Err(Fail(2, "--metrics-token: must be printable ASCII without spaces, not empty".into()));
    }
    // Held to the end: dropping it writes out the lines still queued.
    let _logs = init_logs(args.log_format, args.log_level)?;
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
    let keep = match (args.audit_keep_days, args.audit_keep) {
        (Some(days), _) => keyward::AuditRetention::Days(days),
        (None, Some(n)) => keyward::AuditRetention::Count(n),
        (None, None) => keyward::AuditRetention::Forever,
    };
    let tune = move |b: keyward::EngineBuilder| b.store_stale(stale).fail_open_limits(fail_open).audit_retention(keep);
    let engine = crate::open_or_create(db, Duration::from_millis(args.flush_ms.max(1)), &tune)?;
    if fresh || engine.workspaces().is_empty() {
        let init = crate::initialise(&engine, &args.prefix)?;
        say(&format!("created {} with workspace {}", engine.path().display(), init.workspace));
        say(&format!("ROOT KEY (shown once, store it now): {}", init.root_key));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let state = AppState::new(engine.clone())
        .with_trusted_proxies(TrustedProxies(proxies))
        .with_gateway_hosts(args.gateway_hosts)
        .with_gateway_body_limit(args.gateway_max_body)
        .with_request_timeout(Duration::from_millis(args.request_timeout_ms))
        .with_secure_cookies(tls.is_some());
    let metrics_access = match args.metrics_token {
        Some(t) => MetricsAccess::Token(Arc::new(zeroize::Zeroizing::new(t))),
        None => MetricsAccess::Open,
    };
    let limits = Limits {
        header: Duration::from_millis(args.header_timeout_ms),
        keepalive: Duration::from_millis(args.keepalive_timeout_ms),
        connections: args.max_connections,
    };
    let watched = engine.clone();
    let served: io::Result<()> = rt.block_on(async move {
        tokio::spawn(watch_health(watched));
        let (stop, stopped) = watch::channel(false);
        let mut servers = Vec::new();
        let listener = TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        let main_state = match args.metrics_listen {
            Some(_) => state.clone().with_metrics_access(MetricsAccess::Elsewhere),
            None => state.clone().with_metrics_access(metrics_access.clone()),
        };
        let acceptor = tls.map(TlsAcceptor::from);
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let app = keyward_http::router(main_state);
        // Announced before the main listener: scripts read up to that line.
        if let Some(at) = args.metrics_listen {
            let listener = TcpListener::bind(at).await?;
            let addr = listener.local_addr()?;
            let app = keyward_http::metrics_router(state.with_metrics_access(metrics_access));
            servers.push(tokio::spawn(serve(listener, None, app, limits, stopped.clone())));
            say(&format!("keyward metrics on http://{addr}/metrics"));
        }
        servers.push(tokio::spawn(serve(listener, acceptor, app, limits, stopped.clone())));
        // The handlers are in place before anyone learns the address: a
        // signal sent right after the first answer stops the server
        // cleanly instead of killing it.
        let signalled = shutdown_signal();
        announce(scheme, addr);
        signalled.await;
        let _ = stop.send(true);
        // Each server stops accepting, lets its connections finish their
        // requests, and returns once the last one closed.
        for s in servers {
            let _ = s.await;
        }
        Ok(())
    });
    // In-flight requests have finished; write the counters.
    engine.close()?;
    served.map_err(|e| Fail(2, e.to_string()))?;
    say("keyward stopped");
    Ok(0)
}

/// Sends request logs (and the server's own events) to stderr.
///
/// Lines are formatted on the thread that logs them and written by a thread
/// of their own, which writes whatever has queued up in one `write` (a
/// request no longer waits for a system call to log its line, and a busy
/// server makes one call for many lines). No line is dropped: when the queue
/// is full, the request logging waits for room. The returned guard writes out
/// what is queued when it is dropped.
fn init_logs(format: LogFormat, level: Option<LogLevel>) -> Result<tracing_appender::non_blocking::WorkerGuard, Fail> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(match l {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).map_err(|e| Fail(2, format!("RUST_LOG: {e}")))?,
            _ => EnvFilter::new("info"),
        },
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("keyward-logs")
        .finish(io::BufWriter::with_capacity(64 * 1024, io::stderr()));
    let builder = tracing_subscriber::fmt().with_writer(writer).with_env_filter(filter).with_ansi(false);
    let done = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
    done.map_err(|e| Fail(2, format!("logs: {e}")))?;
    Ok(guard)
}

/// Accepts connections on `listener` until `stop` turns true, then lets
/// the open ones finish their requests and returns once all are closed.
///
/// At most `limits.connections` are served at once: the next one is not
/// accepted (it waits in the kernel's backlog) until one closes.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.connections as usize));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&open).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(conn) => conn,
                Err(e) if is_connection_error(&e) => continue,
                // Out of file descriptors and the like: back off rather than
                // spin (as axum does).
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let (tls, app, mut stop) = (tls.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let phase = Arc::new(Phase::new());
            match tls {
                None => connection(Activity::new(stream, &phase), peer, app, limits, phase, stop).await,
                Some(acceptor) => {
                    // The handshake counts against the header timeout; a
                    // stopping server does not wait for it.
                    let handshake = tokio::time::timeout(limits.header, acceptor.accept(stream));
                    let tls = tokio::select! {
                        done = handshake => done,
                        () = stopped(&mut stop) => return,
                    };
                    if let Ok(Ok(tls)) = tls {
                        connection(Activity::new(tls, &phase), peer, app, limits, phase, stop).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection task holds a permit until it ends.
    let _ = open.acquire_many(limits.connections).await;
}

/// Returns once the server is told to stop (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection (HTTP/1.1) until the client closes it, it times
/// out (headers, or idle between requests), or the server stops.
async fn connection<T>(
    io: Activity<T>,
    peer: SocketAddr,
    app: axum::Router,
    limits: Limits,
    phase: Arc<Phase>,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let on_request = Arc::clone(&phase);
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        on_request.begin();
        req.extensions_mut().insert(ConnectInfo(peer));
        // `Router` is always ready: calling without `poll_ready` is allowed.
        let answer = tower::Service::call(&mut app.clone(), req);
        let phase = Arc::clone(&on_request);
        async move {
            let resp = answer.await;
            phase.end();
            resp
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // Header and idle deadlines are kept below (hyper's own header timeout
    // would also cut kept-alive connections idle for that long).
    http.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = phase.deadline(&limits).unwrap_or_else(|| Instant::now() + limits.header);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(deadline) => {
                if phase.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            () = stopped(&mut stop), if !stopping => {
                // Finishes the request in flight, then closes.
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// Where a connection is: waiting for a request's headers, serving a
/// request, or idle between requests; and since when.
struct Phase(std::sync::Mutex<(Stage, Instant)>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Busy,
    Idle,
}

impl Phase {
    fn new() -> Self {
        Self(std::sync::Mutex::new((Stage::Head, Instant::now())))
    }

    fn set(&self, f: impl FnOnce(&mut (Stage, Instant))) {
        // A poisoned lock only means a panic elsewhere while it was held;
        // the pair inside is still one of its valid states.
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Bytes arrived: an idle connection starts a request.
    fn read(&self) {
        self.set(|p| {
            if p.0 == Stage::Idle {
                *p = (Stage::Head, Instant::now());
            }
        });
    }

    /// The headers are in; the request is being served.
    fn begin(&self) {
        self.set(|p| *p = (Stage::Busy, Instant::now()));
    }

    /// The answer is out; the connection idles until the next request.
    fn end(&self) {
        self.set(|p| *p = (Stage::Idle, Instant::now()));
    }

    /// When the connection is to be closed if nothing changes (none while
    /// a request is served: the request timeout bounds that).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let (stage, since) = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match stage {
            Stage::Head => Some(since + limits.header),
            Stage::Idle => Some(since + limits.keepalive),
            Stage::Busy => None,
        }
    }
}

/// A connection's stream that tells its [`Phase`] when bytes arrive.
struct Activity<T> {
    io: T,
    phase: Arc<Phase>,
}

impl<T> Activity<T> {
    fn new(io: T, phase: &Arc<Phase>) -> Self {
        Self { io, phase: Arc::clone(phase) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.phase.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
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

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// Installs the SIGINT and SIGTERM handlers now; the future completes at
/// the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = int => {},
                () = term => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
