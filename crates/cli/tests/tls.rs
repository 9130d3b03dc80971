//! `keyward serve --tls-cert --tls-key`: HTTPS with rustls, end to end, with a
//! certificate made at test time.

mod common;

#[path = "../examples/gencert.rs"]
#[allow(dead_code)]
mod gencert;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{BIN, Server, bearer, request_with};
use gencert::TestCerts;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

/// Writes fresh certificates into `dir`; returns (CA PEM, cert path, key path).
fn certs(dir: &Path) -> (String, PathBuf, PathBuf) {
    let c = TestCerts::generate().unwrap();
    let [_, cert, key] = c.write(dir).unwrap();
    (c.ca, cert, key)
}

/// A server on HTTPS, the CA to trust, and the rest of its stdout (sent when it exits).
struct Tls {
    server: Server,
    ca: String,
}

/// Serves a fresh database over HTTPS.
fn start_tls() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyward.redb");
    let (_, root) = common::init(&db);
    let (ca, cert, key) = certs(dir.path());
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let server = Server::serve_scheme(dir, db, root, &tls, "https");
    Tls { server, ca }
}

/// A rustls client (ring) that trusts only `ca`.
fn agent(ca: &str) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new().tls_config(Arc::new(config)).timeout(Duration::from_secs(20)).build()
}

#[test]
fn https_health_and_apex_flow() {
    let Tls { server: mut s, ca } = start_tls();
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let a = agent(&ca);
    let r = request_with(&a, "GET", &s.url("/healthz"), &[], None);
    assert_eq!((r.status, &r.body["data"]), (200, &json!({"status": "ok"})));
    common::assert_envelope(&r);

    // The name in the certificate works as well as the address.
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    let r = request_with(&a, "GET", &format!("https://localhost:{port}/healthz"), &[], None);
    assert_eq!(r.status, 200);

    let r = request_with(
        &a,
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        // The IP rule proves the client address reaches the handlers over TLS
        // (with rules in place an unknown address is refused).
        Some(&json!({"name": "exchange", "signing": {"user_id": "96", "nonce_policy": "unique"},
            "ip_rules": [{"action": "allow", "cidr": "127.0.0.1/32"}]})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = r.data()["secret"].as_str().unwrap().to_owned();
    let secret = keyward_core::signature::ApiSecret::new(r.data()["api_secret"].as_str().unwrap().as_bytes().to_vec());
    let nonce = "813502977";
    let sig = keyward_core::signature::sign_hex(&secret, nonce, "96", &key);
    let r = request_with(
        &a,
        "GET",
        &s.url("/ap/AuthenticateUser"),
        &[("APIKey", &key), ("Signature", &sig), ("UserId", "96"), ("Nonce", nonce)],
        None,
    );
    assert_eq!((r.status, &r.body["Authenticated"], &r.body["User"]["UserId"]), (200, &json!(true), &json!(96)));
    let session = r.body["SessionToken"].as_str().unwrap().to_owned();

    let ping = |a: &ureq::Agent| {
        request_with(
            a,
            "POST",
            &s.url("/api/v2/gl_ping"),
            &[("aptoken", &session)],
            Some(&json!({"ip": "198.51.100.4"})),
        )
    };
    let r = ping(&a);
    assert_eq!((r.status, &r.data()["ip"]), (200, &json!("198.51.100.4")));
    let r = request_with(
        &a,
        "POST",
        &s.url("/v1/api-keys"),
        &[("authorization", &bearer(&s.root))],
        Some(&json!({"name": "elsewhere", "ip_rules": [{"action": "allow", "cidr": "10.0.0.0/8"}]})),
    );
    let elsewhere = r.data()["secret"].as_str().unwrap().to_owned();
    let r =
        request_with(&a, "POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &elsewhere)], Some(&json!({"ip": "::1"})));
    assert_eq!((r.status, r.code()), (403, "IP_DENIED"));
    let r = request_with(&a, "POST", &s.url("/ap/LogOut"), &[("aptoken", &session)], Some(&json!({})));
    assert_eq!(r.body, json!({"result": true, "errormsg": null, "errorcode": 0, "detail": null}));
    let r = ping(&a);
    assert_eq!((r.status, r.code()), (401, "NOT_FOUND"));

    // Without the test CA the certificate is refused; plain HTTP gets no answer.
    let untrusted = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    match untrusted.get(&s.url("/healthz")).call() {
        Err(ureq::Error::Transport(t)) => assert!(t.to_string().contains("UnknownIssuer"), "{t}"),
        other => panic!("untrusted certificate accepted: {other:?}"),
    }
    let plain = format!("http://{}/healthz", s.addr);
    assert!(untrusted.get(&plain).call().is_err(), "plain HTTP answered on the TLS port");
    // A client that never finishes its handshake holds up nobody.
    let _silent = std::net::TcpStream::connect(&s.addr).unwrap();
    assert_eq!(request_with(&a, "GET", &s.url("/healthz"), &[], None).status, 200);

    // Graceful shutdown works over TLS too.
    assert_eq!(s.terminate(), 0);
    assert_eq!(s.stdout_tail.recv_timeout(Duration::from_secs(10)).unwrap(), "keyward stopped\n");
}

/// Runs `serve` with the given TLS flags; returns (exit code, stderr).
fn serve_fails(dir: &Path, tls: &[&Path], flags: &[&str]) -> (i32, String) {
    let db = dir.join("never.redb");
    let mut cmd = Command::new(BIN);
    cmd.arg("--db").arg(&db).args(["serve", "--listen", "127.0.0.1:0"]);
    for (flag, path) in flags.iter().zip(tls) {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().unwrap();
    assert!(!db.exists(), "a failed start left a database behind");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_certificate_or_key_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, cert, key) = certs(d);
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, _, other_key) = certs(&other);
    let missing = d.join("missing.pem");
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let both = ["--tls-cert", "--tls-key"];

    let cases: Vec<([&Path; 2], String)> = vec![
        ([&missing, &key], format!("--tls-cert {}: No such file or directory (os error 2)", missing.display())),
        ([&cert, &missing], format!("--tls-key {}: No such file or directory (os error 2)", missing.display())),
        ([&garbage, &key], format!("--tls-cert {}: no CERTIFICATE block found", garbage.display())),
        ([&key, &key], format!("--tls-cert {}: no CERTIFICATE block found", key.display())),
        ([&cert, &garbage], format!("--tls-key {}: no PRIVATE KEY block found", garbage.display())),
        ([&cert, &cert], format!("--tls-key {}: no PRIVATE KEY block found", cert.display())),
        (
            [&cert, &other_key],
            format!(
                "--tls-cert {} / --tls-key {}: the private key does not match the certificate",
                cert.display(),
                other_key.display()
            ),
        ),
    ];
    for (paths, want) in cases {
        let (code, err) = serve_fails(d, &paths, &both);
        assert_eq!((code, err.trim_end()), (2, format!("keyward: error: {want}").as_str()), "{paths:?}");
    }
    // One without the other is a usage error.
    for flag in both {
        let (code, err) = serve_fails(d, &[&cert], &[flag]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("required arguments were not provided"), "{err}");
    }
}

/// Over HTTPS the console's session cookie is `Secure` and `__Host-` bound,
/// and works for the API with its CSRF token.
#[test]
fn https_console_cookie_is_secure() {
    let Tls { server: s, ca } = start_tls();
    let a = agent(&ca);
    let r = request_with(&a, "POST", &s.url("/console/api/login"), &[], Some(&json!({"key": s.root})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let set = r.header("set-cookie").unwrap().to_owned();
    let id = set.strip_prefix("__Host-keyward_session=").unwrap().split(';').next().unwrap();
    assert_eq!(set, format!("__Host-keyward_session={id}; Path=/; HttpOnly; SameSite=Strict; Secure"));
    let cookie = format!("__Host-keyward_session={id}");
    let csrf = r.data()["csrf_token"].as_str().unwrap().to_owned();
    let r = request_with(&a, "GET", &s.url("/v1/api-keys"), &[("cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let made = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = request_with(&a, "POST", &s.url("/v1/api-keys"), &made, Some(&json!({"name": "over-tls"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
}
