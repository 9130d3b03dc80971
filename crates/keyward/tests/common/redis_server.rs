//! `redis-server`s the tests start on free loopback ports (Debian's
//! package): one server, one over TLS, or a three-master Redis Cluster.
//! Shared with keyward-cli's tests. Without `redis-server` a test skips with
//! a message, unless `KEYWARD_REQUIRE_REDIS=1` (CI) makes it fail.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `redis-server` is installed; says why not (or fails, when CI
/// requires it).
fn installed() -> bool {
    if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok() {
        return true;
    }
    assert!(
        std::env::var("KEYWARD_REQUIRE_REDIS").as_deref() != Ok("1"),
        "KEYWARD_REQUIRE_REDIS=1 but redis-server is not installed"
    );
    println!("skipped: redis-server is not installed (apt-get install redis-server)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` child: append-only file fsynced on every write, so a
/// restart keeps what it acknowledged. Killed on drop.
pub struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments it was started with (TLS, cluster mode).
    extra: Vec<String>,
    /// `rediss` when it speaks TLS only.
    scheme: &'static str,
}

impl Redis {
    /// Starts one, or `None` (after saying why) when `redis-server` is missing.
    pub fn start() -> Option<Self> {
        installed().then(|| Self::with(free_port(), Vec::new(), "redis"))
    }

    /// Starts one that speaks TLS only, with a certificate for 127.0.0.1
    /// from a CA of its own; returns it with that CA (PEM).
    pub fn start_tls() -> Option<(Self, String)> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "keyward test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let file = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let port = free_port();
        let extra = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem", cert.pem()),
            "--tls-key-file".into(),
            file("server.key", key.serialize_pem()),
            "--tls-ca-cert-file".into(),
            file("ca.pem", ca_cert.pem()),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let redis = Self::with(port, extra, "rediss");
        // The certificates live as long as the server's own directory.
        std::mem::forget(dir);
        Some((redis, ca_cert.pem()))
    }

    fn with(port: u16, extra: Vec<String>, scheme: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, dir.path(), &extra);
        Self { child, port, dir, extra, scheme }
    }

    fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Listening is not ready: while it replays its AOF it answers
        // LOADING. A TLS server is asked by its clients' own retries.
        let tls = extra.iter().any(|a| a.starts_with("--tls"));
        while !(if tls { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() } else { answers_ping(port) }) {
            assert!(Instant::now() < deadline, "redis-server did not answer on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/0", self.scheme, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it at once (SIGKILL): what it acknowledged is in its AOF.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and files (its AOF replayed).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.dir.path(), &self.extra);
    }
}

/// Whether the server on `port` answers PING with PONG.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas), every slot assigned.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts one, or `None` (after saying why) when `redis-server` is missing.
    pub fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        let nodes: Vec<Redis> =
            (0..3).map(|_| Redis::with(free_port(), vec!["--cluster-enabled".into(), "yes".into()], "redis")).collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().unwrap();
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info =
                    Command::new("redis-cli").args(["-p", &n.port.to_string(), "cluster", "info"]).output().unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not become ready");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(Self { nodes })
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
