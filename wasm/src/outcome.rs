//! The verification itself, in plain Rust: what JavaScript asked, and what
//! keyward-core's [`LocalVerifier`] answered, copied out so that no borrow of
//! the verifier is held while JavaScript objects are built.

use core::net::IpAddr;

use keyward_core::{
    Code, Cost, Credential, CredentialError, KeyId, LocalVerifier, Quota, Request, ToolNameError, UnixMillis,
    WorkspaceId, check_token, tool_from_path,
};

/// Why a session credential is refused at the edge.
pub(crate) const SESSION_AT_EDGE: &str = "session tokens (aptoken) are verified by the keyward engine only: \
     sessions are not in the snapshot; send an API key (X-API-Key or Authorization: Bearer)";

/// Why a signed credential is refused at the edge.
pub(crate) const SIGNED_AT_EDGE: &str = "signed requests (APIKey, Signature, UserId, Nonce) are verified by the keyward \
     engine only: API secrets and nonce state are not in the snapshot; send an API key (X-API-Key or \
     Authorization: Bearer)";

/// Everything a verification asks besides the key.
#[derive(Debug, Default)]
pub(crate) struct Ask {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) tool: Option<String>,
    pub(crate) permissions: Vec<String>,
    pub(crate) credits: u64,
    pub(crate) now: UnixMillis,
}

/// What the key that was found says about itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyFacts {
    pub(crate) permissions: Vec<String>,
    /// JSON text, or empty.
    pub(crate) meta: String,
    pub(crate) expires_at: Option<u64>,
}

/// The answer, owned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) code: Code,
    pub(crate) key_id: Option<KeyId>,
    pub(crate) workspace_id: Option<WorkspaceId>,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) quota: Quota,
    pub(crate) key: Option<KeyFacts>,
    /// Why the request was refused before a key could be looked up.
    pub(crate) error: Option<String>,
}

impl Outcome {
    fn malformed(error: String) -> Self {
        Self {
            code: Code::Malformed,
            key_id: None,
            workspace_id: None,
            retry_after_ms: None,
            quota: Quota::default(),
            key: None,
            error: Some(error),
        }
    }
}

/// Verifies a raw token, charging the verifier's in-memory counters.
pub(crate) fn verify(verifier: &mut LocalVerifier, raw: &str, ask: &Ask) -> Outcome {
    let permissions: Vec<&str> = ask.permissions.iter().map(String::as_str).collect();
    let req = Request {
        ip: ask.ip,
        tool: ask.tool.as_deref(),
        permissions: &permissions,
        permission_query: None,
        cost: Cost { credits: ask.credits, rates: &[] },
        now: ask.now,
    };
    let checked = verifier.verify(raw, &req);
    let v = checked.verdict;
    let error = (v.code == Code::Malformed).then(|| match check_token(raw) {
        Err(e) => e.to_string(),
        // Not reached: a token passing the check is looked up, never MALFORMED.
        Ok(()) => "token is malformed".to_owned(),
    });
    Outcome {
        code: v.code,
        key_id: v.key_id,
        workspace_id: v.workspace_id,
        retry_after_ms: v.retry_after_ms,
        quota: v.quota,
        key: checked.key.map(|k| KeyFacts {
            permissions: k.permissions.iter().map(|p| p.as_str().to_owned()).collect(),
            meta: k.meta.clone(),
            expires_at: k.expires_at.map(UnixMillis::get),
        }),
        error,
    }
}

/// Verifies the credential taken from request headers. Only API keys can be
/// checked against a snapshot; the other kinds answer `MALFORMED` with the reason.
pub(crate) fn verify_credential(
    verifier: &mut LocalVerifier,
    credential: Result<Credential, CredentialError>,
    ask: &Ask,
) -> Outcome {
    match credential {
        Ok(Credential::ApiKey(key)) => verify(verifier, &key, ask),
        Ok(Credential::Session(_)) => Outcome::malformed(SESSION_AT_EDGE.to_owned()),
        Ok(Credential::Signed(_)) => Outcome::malformed(SIGNED_AT_EDGE.to_owned()),
        Ok(other) => Outcome::malformed(format!("{} credentials cannot be verified at the edge", other.kind())),
        Err(e) => Outcome::malformed(e.to_string()),
    }
}

/// The path of a request URL (`https://host/p?q` → `/p?q`); the fragment is dropped.
pub(crate) fn path_of(url: &str) -> &str {
    let url = url.split_once('#').map_or(url, |(u, _)| u);
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// The tool a gateway URL (`/api/v2/{tool}`) names.
///
/// `None` off the gateway. A gateway path whose tool name is not valid keeps
/// the raw segment, so verification answers `UNKNOWN_TOOL` for it rather than
/// passing the request as if it named no tool.
pub(crate) fn tool_from_url(url: &str) -> Option<String> {
    let path = path_of(url);
    match tool_from_path(path) {
        Ok(tool) => Some(tool.to_owned()),
        Err(ToolNameError::NotGateway) => None,
        Err(_) => {
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            Some(path.strip_prefix("/api/v2/").unwrap_or(path).to_owned())
        }
    }
}

/// Decodes hex of either case, ignoring surrounding ASCII whitespace.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_ascii().as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16);
    digits.chunks_exact(2).map(|pair| Some(((nibble(pair[0])? << 4) | nibble(pair[1])?) as u8)).collect()
}

#[cfg(test)]
mod tests {
    use keyward_wasm_fixtures as fx;

    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path_of("https://edge.example/api/v2/gl_ping?x=1#frag"), "/api/v2/gl_ping?x=1");
        assert_eq!(path_of("https://edge.example"), "/");
        assert_eq!(path_of("http://[::1]:8080/a"), "/a");
        assert_eq!(path_of("/api/v2/x"), "/api/v2/x");
        assert_eq!(tool_from_url("https://h/api/v2/gl_ping?debug=1"), Some("gl_ping".to_owned()));
        assert_eq!(tool_from_url("https://h/api/v1/gl_ping"), None);
        assert_eq!(tool_from_url("https://h/"), None);
        assert_eq!(tool_from_url("https://h/api/v2/a/b?q"), Some("a/b".to_owned()));
        assert_eq!(tool_from_url("https://h/api/v2/"), Some(String::new()));
    }

    #[test]
    fn hex() {
        assert_eq!(unhex(" 00ffAb\n"), Some(vec![0x00, 0xff, 0xab]));
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["0", "0g", "+1", "00 11", "é0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    fn ask(now: u64) -> Ask {
        Ask { credits: 1, now: UnixMillis(now), ..Ask::default() }
    }

    #[test]
    fn verify_copies_the_key_facts() {
        let f = fx::build(0);
        let mut v = LocalVerifier::new(f.snapshot.clone());
        let out = verify(&mut v, f.token("valid"), &ask(fx::CREATED_AT));
        assert_eq!(out.code, Code::Valid);
        assert_eq!(out.key_id, Some(f.key_id("valid")));
        assert_eq!(out.workspace_id, Some(f.workspace_id("acme")));
        assert_eq!(
            out.key,
            Some(KeyFacts {
                permissions: vec!["tools:gl_ping".into(), "keys:read".into()],
                meta: fx::VALID_META.into(),
                expires_at: Some(fx::FAR_FUTURE),
            })
        );
        assert_eq!(out.error, None);
    }

    #[test]
    fn malformed_says_why() {
        let f = fx::build(0);
        let mut v = LocalVerifier::new(f.snapshot.clone());
        let out = verify(&mut v, "kw_live_short", &ask(fx::CREATED_AT));
        assert_eq!(
            (out.code, out.error.as_deref()),
            (Code::Malformed, Some("token body must be 36 base62 characters"))
        );
        let out = verify(&mut v, f.token("unknown"), &ask(fx::CREATED_AT));
        assert_eq!((out.code, out.error), (Code::NotFound, None));
    }

    #[test]
    fn credential_kinds() {
        let f = fx::build(0);
        let mut v = LocalVerifier::new(f.snapshot.clone());
        let a = ask(fx::CREATED_AT);
        let session = keyward_core::parse_credentials([("aptoken", "s")]);
        let out = verify_credential(&mut v, session, &a);
        assert_eq!((out.code, out.error.as_deref()), (Code::Malformed, Some(SESSION_AT_EDGE)));
        let signed =
            keyward_core::parse_credentials([("APIKey", "k"), ("Signature", "ab"), ("UserId", "9"), ("Nonce", "1")]);
        assert_eq!(verify_credential(&mut v, signed, &a).error.as_deref(), Some(SIGNED_AT_EDGE));
        let none = keyward_core::parse_credentials([("host", "x")]);
        assert_eq!(
            verify_credential(&mut v, none, &a).error.as_deref(),
            Some("no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers")
        );
        let bearer = format!("Bearer {}", f.token("valid"));
        let key = keyward_core::parse_credentials([("Authorization", bearer.as_str())]);
        assert_eq!(verify_credential(&mut v, key, &a).code, Code::Valid);
    }
}
