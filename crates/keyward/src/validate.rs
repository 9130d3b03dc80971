//! Checks of what callers send, before anything is changed, and the values
//! derived from it.

use keyward_core::credentials::check_tool_name;
use keyward_core::signature::ApiSecret;
use keyward_core::{KeyId, Limits, Prefix};

use crate::error::{Error, Result};

/// Largest metadata object, serialised.
pub const MAX_META_BYTES: usize = 16 * 1024;
/// Longest signing user id.
pub const MAX_USER_ID_LEN: usize = 64;
/// Most items a page holds.
pub const MAX_PAGE: usize = 100;
/// Longest external id.
pub const MAX_EXTERNAL_ID_LEN: usize = 255;
/// Longest role label.
pub const MAX_ROLE_LEN: usize = 128;
/// Most role labels on one key.
pub const MAX_ROLES: usize = 64;

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > keyward_core::policy::MAX_NAME_LEN {
        return Err(Error::invalid("name", format!("must be 1 to {} characters", keyward_core::policy::MAX_NAME_LEN)));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "must not contain control characters"));
    }
    if name.trim().is_empty() {
        return Err(Error::invalid("name", "must not be blank"));
    }
    Ok(())
}

pub(crate) fn encode_meta(meta: Option<&serde_json::Value>) -> Result<String> {
    match meta {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_META_BYTES {
                return Err(Error::invalid("meta", format!("must be at most {MAX_META_BYTES} bytes")));
            }
            Ok(text)
        }
        Some(_) => Err(Error::invalid("meta", "must be a JSON object")),
    }
}

pub(crate) fn decode_meta(text: &str) -> Option<serde_json::Value> {
    if text.is_empty() { None } else { serde_json::from_str(text).ok() }
}

pub(crate) fn validate_limits(field: &'static str, limits: &Limits) -> Result<()> {
    limits.validate().map_err(|e| Error::invalid(field, e.to_string()))
}

pub(crate) fn validate_tools(tools: &[String], tool_limits: &[(String, Limits)]) -> Result<()> {
    for t in tools {
        check_tool_name(t).map_err(|e| Error::invalid("tools", format!("`{t}`: {e}")))?;
    }
    for (i, (t, l)) in tool_limits.iter().enumerate() {
        check_tool_name(t).map_err(|e| Error::invalid("tool_limits", format!("`{t}`: {e}")))?;
        if tool_limits.iter().take(i).any(|(o, _)| o == t) {
            return Err(Error::invalid("tool_limits", format!("tool `{t}` appears twice")));
        }
        validate_limits("tool_limits", l)?;
    }
    Ok(())
}

pub(crate) fn validate_external_id(id: Option<&str>) -> Result<()> {
    match id {
        Some(id)
            if id.is_empty()
                || id.len() > MAX_EXTERNAL_ID_LEN
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            Err(Error::invalid(
                "external_id",
                format!("must be 1 to {MAX_EXTERNAL_ID_LEN} characters of A-Z a-z 0-9 _ . -"),
            ))
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_roles(roles: &[String]) -> Result<()> {
    if roles.len() > MAX_ROLES {
        return Err(Error::invalid("roles", format!("at most {MAX_ROLES} roles")));
    }
    for (i, r) in roles.iter().enumerate() {
        let ok = !r.is_empty()
            && r.len() <= MAX_ROLE_LEN
            && r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'));
        if !ok {
            return Err(Error::invalid(
                "roles",
                format!(
                    "`{}` must be 1 to {MAX_ROLE_LEN} characters of A-Z a-z 0-9 : . _ -",
                    r.chars().take(40).collect::<String>()
                ),
            ));
        }
        if roles.iter().take(i).any(|o| o == r) {
            return Err(Error::invalid("roles", format!("`{r}` appears twice")));
        }
    }
    Ok(())
}

/// The prefix a native token's display start begins with (`start` is the
/// prefix, `_` and the first body characters).
pub(crate) fn prefix_of_start(start: &str) -> Option<Prefix> {
    let cut = start.len().checked_sub(1 + keyward_core::token::START_CHARS)?;
    Prefix::parse(start.get(..cut)?).ok()
}

pub(crate) fn validate_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN || !user_id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(Error::invalid(
            "signing.user_id",
            format!("must be 1 to {MAX_USER_ID_LEN} visible ASCII characters"),
        ));
    }
    Ok(())
}

/// Derives the API secret of a signing identity: HMAC-SHA256(master key,
/// "keyward signing v1" ‖ key id), hex. Never stored; recomputed to verify.
pub(crate) fn derive_api_secret(master: &[u8], id: KeyId) -> ApiSecret {
    use hmac::{KeyInit, Mac};
    // Invariant: HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(master).expect("HMAC takes keys of any length");
    m.update(b"keyward signing v1");
    m.update(&id.0);
    ApiSecret::new(keyward_core::hex::encode(&m.finalize().into_bytes()).into_bytes())
}

/// The fields an update sets, listed in its audit event.
#[derive(Default)]
pub(crate) struct Changes(Vec<&'static str>);

impl Changes {
    /// Sets `slot` to `value` when the update gives one, noting `name`.
    pub(crate) fn set<T>(&mut self, name: &'static str, slot: &mut T, value: Option<T>) {
        if let Some(v) = value {
            *slot = v;
            self.0.push(name);
        }
    }

    /// Notes a change made otherwise.
    pub(crate) fn note(&mut self, name: &'static str) {
        self.0.push(name);
    }

    /// The names, comma-separated.
    pub(crate) fn list(&self) -> String {
        self.0.join(",")
    }
}

/// A duration in milliseconds as people write it: `30d`, `12h`, `90s`,
/// `1500ms` (the largest unit that divides it).
pub(crate) fn duration_text(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Longest upstream URL a tool may have.
pub const MAX_UPSTREAM_LEN: usize = 2048;

/// Checks a tool's upstream: `http://` or `https://`, a host (and port),
/// an optional path; no user info, query or fragment (the gateway appends
/// the call's own path and query).
pub(crate) fn validate_upstream(url: &str) -> Result<()> {
    let bad = |m: &str| Err(Error::invalid("upstream", m));
    if url.len() > MAX_UPSTREAM_LEN {
        return bad("at most 2048 characters");
    }
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return bad("must start with http:// or https://");
    };
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("must be printable ASCII without spaces");
    }
    if url.contains(['?', '#']) {
        return bad("must not have a query or fragment");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return bad("must not carry credentials");
    }
    let host = match authority.strip_prefix('[') {
        // An IPv6 literal, then an optional `:port`.
        Some(v6) => match v6.split_once(']') {
            Some((addr, port)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                check_port(port)?;
                addr
            }
            _ => return bad("has a malformed IPv6 host"),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => {
                check_port(&format!(":{port}"))?;
                host
            }
            None => authority,
        },
    };
    if host.is_empty() {
        return bad("must name a host");
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')) {
        return bad("has a malformed host");
    }
    Ok(())
}

fn check_port(rest: &str) -> Result<()> {
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Ok(()),
        Some(p) if p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(Error::invalid("upstream", "has a malformed port")),
    }
}

/// Checks an upstream timeout: 1 ms to [`crate::MAX_UPSTREAM_TIMEOUT_MS`].
pub(crate) fn validate_timeout(ms: u64) -> Result<()> {
    if (1..=crate::MAX_UPSTREAM_TIMEOUT_MS).contains(&ms) {
        Ok(())
    } else {
        Err(Error::invalid("timeout_ms", format!("must be 1 to {}", crate::MAX_UPSTREAM_TIMEOUT_MS)))
    }
}

#[cfg(test)]
mod upstream_tests {
    use super::validate_upstream;

    #[test]
    fn upstreams() {
        for ok in ["http://127.0.0.1:8080", "https://api.example.com/base", "http://[::1]:9/x/", "http://h"] {
            assert!(validate_upstream(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://h",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h",
            "http://h/x?y=1",
            "http://h/#f",
            "http://h /",
            "http://[zz]:1",
            "localhost:80",
        ] {
            let e = validate_upstream(bad).unwrap_err();
            assert!(e.to_string().contains("upstream"), "{bad}: {e}");
        }
    }
}
