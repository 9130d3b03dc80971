//! A `redis-server` the test starts on a free loopback port (Debian's
//! package), shared with keyward-cli's tests. Without `redis-server` a test
//! skips with a message, unless `KEYWARD_REQUIRE_REDIS=1` (CI) makes it fail.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child: append-only file fsynced on every write, so a
/// restart keeps what it acknowledged. Killed on drop.
pub struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one, or `None` (after saying why) when `redis-server` is missing.
    pub fn start() -> Option<Self> {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            assert!(
                std::env::var("KEYWARD_REQUIRE_REDIS").as_deref() != Ok("1"),
                "KEYWARD_REQUIRE_REDIS=1 but redis-server is not installed"
            );
            println!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(port, dir.path());
        Some(Self { child, port, dir })
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, self.dir.path());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
