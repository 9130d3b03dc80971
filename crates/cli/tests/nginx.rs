//! nginx `auth_request` in front of a protected location, pointing at
//! `/v1/auth`. Needs the `nginx` binary: CI installs it and sets
//! `KEYWARD_REQUIRE_NGINX=1`; elsewhere the test is skipped with a message
//! when nginx is missing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, bearer, request};
use serde_json::json;

fn nginx_binary() -> Option<String> {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).exists() {
            return Some(p.to_owned());
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The snippet from the README, around a generated server block.
fn config(dir: &std::path::Path, port: u16, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};

        location = /_keyward_auth {{
            internal;
            proxy_pass http://{upstream}/v1/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}

        location /protected/ {{
            auth_request /_keyward_auth;
            auth_request_set $keyward_key_id $upstream_http_x_keyward_key_id;
            auth_request_set $keyward_status $upstream_status;
            add_header X-Key-Id $keyward_key_id always;
            error_page 500 = @keyward_error;
            root {d}/www;
        }}

        # nginx turns any auth status other than 2xx/401/403 into 500; give
        # 429 back its meaning.
        location @keyward_error {{
            if ($keyward_status = 429) {{ return 429 "rate limited\n"; }}
            return 500;
        }}
    }}
}}
"#
    )
}

#[test]
fn nginx_auth_request() {
    let Some(nginx) = nginx_binary() else {
        assert!(
            std::env::var("KEYWARD_REQUIRE_NGINX").is_err(),
            "KEYWARD_REQUIRE_NGINX is set but nginx is not installed"
        );
        eprintln!("skipping: nginx is not installed (apt-get install -y nginx)");
        return;
    };
    let s = Server::start(&["--trusted-proxy", "127.0.0.1/32"]);
    let root = s.root.clone();
    let mk = |body: serde_json::Value| {
        let r = request("POST", &s.url("/v1/api-keys"), &[("authorization", &bearer(&root))], Some(&body));
        (r.data()["secret"].as_str().unwrap().to_owned(), r.data()["id"].as_str().unwrap().to_owned())
    };
    let (valid, valid_id) = mk(json!({"name": "ok"}));
    let (limited, _) = mk(json!({"name": "rl", "limits": {"rate": {"limit": 1, "window_ms": 600000}}}));
    let (denied, _) = mk(json!({"name": "ip", "ip_rules": [{"action": "deny", "cidr": "127.0.0.0/8"}]}));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), port, &s.addr)).unwrap();
    std::fs::create_dir_all(dir.path().join("www/protected")).unwrap();
    std::fs::write(dir.path().join("www/protected/page"), "protected content\n").unwrap();
    let mut child = Command::new(&nginx)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-p",
            dir.path().to_str().unwrap(),
            "-e",
            dir.path().join("error.log").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/protected/page");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let get = |headers: &[(&str, &str)]| request("GET", &url, headers, None);
    let result = std::panic::catch_unwind(|| {
        let r = get(&[("x-api-key", &valid)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, serde_json::Value::Null, "the static page, not JSON");
        assert_eq!(r.header("x-key-id"), Some(valid_id.as_str()));
        assert_eq!(get(&[("authorization", &bearer(&valid))]).status, 200);
        assert_eq!(get(&[]).status, 401);
        assert_eq!(get(&[("x-api-key", "kw_live_wrong")]).status, 401);
        assert_eq!(get(&[("x-api-key", &denied)]).status, 403, "client IP 127.0.0.1 forwarded by the trusted proxy");
        assert_eq!(get(&[("x-api-key", &limited)]).status, 200);
        assert_eq!(get(&[("x-api-key", &limited)]).status, 429);
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
