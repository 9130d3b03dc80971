//! Connection limits of `keyward serve`: header timeout, idle keep-alive
//! timeout, request timeout, connection cap.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, request};

/// Reads until the server closes the connection; returns when it did (or
/// `None` if it still had not by `limit`) and what it sent.
fn closed_within(s: &mut TcpStream, limit: Duration) -> (Option<Instant>, Vec<u8>) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (None, got);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (Some(Instant::now()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (None, got),
            Err(_) => return (Some(Instant::now()), got),
        }
    }
}

const HALF: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

#[test]
fn half_sent_requests_hold_up_nobody_and_are_cut_at_the_header_timeout() {
    let s = Server::start(&["--header-timeout-ms", "2000"]);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut c = TcpStream::connect(&s.addr).unwrap();
            c.write_all(HALF).unwrap();
            c
        })
        .collect();
    // A normal client is answered at once.
    let t = Instant::now();
    let r = request("GET", &s.url("/healthz"), &[], None);
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_millis(1000), "answered after {:?}", t.elapsed());
    // The half-sent ones are still open before the timeout...
    let (early, _) = closed_within(&mut slow[0], Duration::from_millis(1000).saturating_sub(opened.elapsed()));
    assert_eq!(early, None, "closed before the header timeout");
    // ...and every one is closed, without an answer, soon after it.
    for c in &mut slow {
        let (at, got) = closed_within(c, Duration::from_secs(6));
        let at = at.expect("a half-sent request was never cut");
        let after = at.duration_since(opened);
        assert!(after >= Duration::from_millis(1900), "cut after {after:?}");
        assert!(after < Duration::from_millis(5000), "cut after {after:?}");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    assert_eq!(request("GET", &s.url("/healthz"), &[], None).status, 200);
}

#[test]
fn idle_keepalive_outlives_the_header_timeout_and_then_closes() {
    let s = Server::start(&["--header-timeout-ms", "500", "--keepalive-timeout-ms", "2000"]);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let answered = Instant::now();
    // Idle for longer than the header timeout: still open, still serves.
    let (closed, _) = closed_within(&mut c, Duration::from_millis(1200));
    assert_eq!(closed, None, "an idle keep-alive connection was cut at the header timeout");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let answered_again = Instant::now();
    let (closed, _) = closed_within(&mut c, Duration::from_secs(6));
    let idle = closed.expect("an idle connection was never closed").duration_since(answered_again);
    assert!(idle >= Duration::from_millis(1900) && idle < Duration::from_millis(4000), "closed after {idle:?} idle");
    assert!(answered.elapsed() > Duration::from_millis(3000));
}

#[test]
fn a_request_past_the_request_timeout_is_answered_503() {
    let s = Server::start(&["--request-timeout-ms", "700", "--header-timeout-ms", "5000"]);
    let mut c = TcpStream::connect(&s.addr).unwrap();
    // Headers complete, body promised and never sent: the handler waits for it.
    let head = format!(
        "POST /v1/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        s.root
    );
    c.write_all(head.as_bytes()).unwrap();
    let t = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(took >= Duration::from_millis(650) && took < Duration::from_millis(3000), "answered after {took:?}");
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(body["error"]["message"], "the request took longer than 700 ms");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let s = Server::start(&["--max-connections", "2", "--header-timeout-ms", "30000"]);
    let a = TcpStream::connect(&s.addr).unwrap();
    let b = TcpStream::connect(&s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The third is not served while two are open...
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (closed, got) = closed_within(&mut c, Duration::from_millis(1000));
    assert_eq!((closed, got.len()), (None, 0), "served past the cap: {}", String::from_utf8_lossy(&got));
    // ...and is as soon as one of them closes.
    drop(a);
    let (closed, got) = closed_within(&mut c, Duration::from_secs(5));
    assert!(closed.is_some());
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    drop(b);
}
