//! Rules for new keys over HTTP: inherited permissions, the workspace's key
//! lifetimes (and its routes), and the APIMall-shaped create call.

mod common;

use common::{Server, assert_envelope, bearer, cli, request};
use serde_json::{Value, json};

fn post(s: &Server, path: &str, caller: &str, body: Value) -> common::Resp {
    request("POST", &s.url(path), &[("authorization", &bearer(caller))], Some(&body))
}

fn get(s: &Server, path: &str, caller: &str) -> common::Resp {
    request("GET", &s.url(path), &[("authorization", &bearer(caller))], None)
}

fn patch(s: &Server, path: &str, caller: &str, body: Value) -> common::Resp {
    request("PATCH", &s.url(path), &[("authorization", &bearer(caller))], Some(&body))
}

fn permissions(r: &common::Resp) -> Vec<String> {
    r.data()["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()
}

fn workspace_id(s: &Server) -> String {
    let r = get(s, "/v1/api-keys", &s.root);
    r.data()["items"][0]["workspace_id"].as_str().unwrap().to_owned()
}

#[test]
fn omitted_permissions_are_the_creator_s_and_an_empty_list_is_none() {
    let s = Server::start(&[]);
    // The root key holds `*`: so does a key it makes without permissions.
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "heir"}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(permissions(&r), ["*"]);
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "none", "permissions": []}));
    assert_eq!(permissions(&r), Vec::<String>::new());
    // A narrower creator hands down exactly what it holds.
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "ops", "permissions": ["keys:write", "tools:search"]}));
    let ops = r.data()["secret"].as_str().unwrap().to_owned();
    let r = post(&s, "/v1/api-keys", &ops, json!({"name": "child"}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(permissions(&r), ["keys:write", "tools:search"]);
    // Asking for more than it holds is still refused.
    let r = post(&s, "/v1/api-keys", &ops, json!({"name": "more", "permissions": ["keys:read"]}));
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_PERMISSIONS"));
}

#[test]
fn the_workspace_routes_show_and_change_key_lifetimes() {
    let s = Server::start(&[]);
    let ws = workspace_id(&s);
    let path = format!("/v1/workspaces/{ws}");
    let r = get(&s, &path, &s.root);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_envelope(&r);
    let d = r.data();
    assert_eq!(
        (d["id"].as_str(), d["default_key_ttl"].clone(), d["max_key_ttl"].clone()),
        (Some(ws.as_str()), Value::Null, Value::Null)
    );
    assert_eq!(d["limit_sync"], "exact");

    // 30 days by default, 90 at most (seconds on the wire).
    let r = patch(&s, &path, &s.root, json!({"default_key_ttl": 2_592_000, "max_key_ttl": 7_776_000}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.data()["default_key_ttl"].as_u64(), r.data()["max_key_ttl"].as_u64()),
        (Some(2_592_000), Some(7_776_000))
    );

    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "default"}));
    let created = chrono_ms(r.data()["created_at"].as_str().unwrap());
    let expires = chrono_ms(r.data()["expires_at"].as_str().unwrap());
    assert_eq!(expires - created, 2_592_000_000);
    // Past the maximum: 400 naming the field, and no key made.
    let before = get(&s, "/v1/api-keys?limit=100", &s.root).data()["items"].as_array().unwrap().len();
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "late", "expires_at": "2999-01-01T00:00:00.000Z"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert_eq!(r.body["error"]["message"], "expires_at: is later than the workspace allows: keys live at most 90d");
    assert_eq!(get(&s, "/v1/api-keys?limit=100", &s.root).data()["items"].as_array().unwrap().len(), before);
    // `expire_now` still wins.
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "now", "expire_now": true}));
    assert_eq!(r.data()["status"], "expired");

    // Bad input names the field and changes nothing.
    for (body, message) in [
        (json!({"default_key_ttl": 8_000_000}), "default_key_ttl: must not be longer than max_key_ttl"),
        (json!({"max_key_ttl": -1}), "max_key_ttl: invalid value: integer `-1`, expected a non-negative integer"),
        (json!({"max_key_ttl": 0}), "max_key_ttl: must be 1 second to 100 years"),
        (
            json!({"max_ttl": 5}),
            "max_ttl: unknown field `max_ttl`, expected one of `name`, `prefix`, `api_access`, `ip_rules`, `default_limits`, `limit_sync`, `default_key_ttl`, `max_key_ttl`",
        ),
        (json!({"limit_sync": "sometimes"}), "limit_sync: expected `exact` or `local:MS`"),
    ] {
        let r = patch(&s, &path, &s.root, body.clone());
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}");
        assert_eq!(r.body["error"]["message"], message, "{body}");
    }
    let r = get(&s, &path, &s.root);
    assert_eq!(
        (r.data()["default_key_ttl"].as_u64(), r.data()["max_key_ttl"].as_u64()),
        (Some(2_592_000), Some(7_776_000))
    );
    // `null` clears one and keeps the other.
    let r = patch(&s, &path, &s.root, json!({"default_key_ttl": null, "limit_sync": "local:50"}));
    assert_eq!((r.data()["default_key_ttl"].clone(), r.data()["max_key_ttl"].as_u64()), (Value::Null, Some(7_776_000)));
    assert_eq!(r.data()["limit_sync"], "local:50");

    // Another workspace's id, or a key without the permission.
    let r = get(&s, "/v1/workspaces/ws_00000000000000000000000000", &s.root);
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = post(&s, "/v1/api-keys", &s.root, json!({"name": "reader", "permissions": ["workspaces:read"]}));
    let reader = r.data()["secret"].as_str().unwrap().to_owned();
    assert_eq!(get(&s, &path, &reader).status, 200);
    let r = patch(&s, &path, &reader, json!({"max_key_ttl": null}));
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_PERMISSIONS"));
    // The plan is the operator's, even for the root key.
    let r = patch(&s, &path, &s.root, json!({"api_access": false}));
    assert_eq!((r.status, r.code()), (403, "INSUFFICIENT_PERMISSIONS"));
    assert_eq!(r.body["error"]["message"], "only an operator changes api_access");

    // The CLI sees and sets the same settings.
    let mut s = s;
    s.terminate();
    let (code, out, err) =
        cli(&s.db, &["workspace", "update", "--default-key-ttl", "7d", "--max-key-ttl", "none", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["default_key_ttl"].as_u64(), v["max_key_ttl"].clone()), (Some(604_800), Value::Null));
    assert_eq!(v["limit_sync"], "local:50");
    let (code, _, err) = cli(&s.db, &["workspace", "update", "--max-key-ttl", "3 weeks"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`3 weeks`: expected a number with s, m, h or d (such as 30d), or none"), "{err}");
}

#[test]
fn the_apimall_create_call_answers_in_its_own_shape() {
    let s = Server::start(&[]);
    // The root key made by `init` is the workspace's first.
    let r = post(&s, "/api/v1/keys", &s.root, json!({"title": "my app"}));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_envelope(&r);
    let d = r.data();
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["api_key", "created_at", "id", "status", "title"]);
    assert_eq!(
        (d["id"].as_u64(), d["title"].as_str(), d["status"].as_str()),
        (Some(2), Some("my app"), Some("created"))
    );
    let token = d["api_key"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kw_live_"), "{token}");
    assert_eq!(d["created_at"].as_str().unwrap().len(), "2024-03-01T10:00:00.000Z".len());
    let r = post(&s, "/api/v1/keys", &s.root, json!({"title": "second"}));
    assert_eq!(r.data()["id"].as_u64(), Some(3));

    // The same key everywhere else, its number shown as `serial`, its
    // permissions its creator's.
    let items = get(&s, "/v1/api-keys?limit=100", &s.root).data()["items"].clone();
    let mine = items.as_array().unwrap().iter().find(|k| k["name"] == "my app").unwrap();
    assert_eq!((mine["serial"].as_u64(), mine["permissions"].clone()), (Some(2), json!(["*"])));
    let r = request("POST", &s.url("/api/v2/gl_ping"), &[("x-api-key", &token)], Some(&json!({"ip": "192.0.2.1"})));
    assert_eq!(r.status, 200, "{:?}", r.body);

    for body in [json!({}), json!({"title": ""}), json!({"title": "   "}), json!({"title": 7}), json!({"title": null})]
    {
        let r = post(&s, "/api/v1/keys", &s.root, body.clone());
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}");
        assert_eq!(r.body["error"]["message"], "Invalid title", "{body}");
        assert_envelope(&r);
    }
    let r = post(&s, "/api/v1/keys", &s.root, json!({"title": "x", "owner": "me"}));
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (400, Some("owner: unknown field `owner`, expected `title`"))
    );
    let r = request("POST", &s.url("/api/v1/keys"), &[], Some(&json!({"title": "anon"})));
    assert_eq!(r.status, 401);
    // Nothing refused took a number.
    assert_eq!(post(&s, "/api/v1/keys", &s.root, json!({"title": "third"})).data()["id"].as_u64(), Some(4));
}

/// Milliseconds since the epoch of an RFC 3339 time as keyward writes it.
fn chrono_ms(text: &str) -> u64 {
    keyward_core::UnixMillis::parse_rfc3339(text).unwrap().get()
}
