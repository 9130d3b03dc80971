//! The verification itself, in plain Rust: what JavaScript asked, and what
//! the [`Index`] (keyward-core's decision over the snapshot) answered, copied
//! out so that no borrow of the verifier is held while JavaScript objects are
//! built.

use core::net::IpAddr;
use std::borrow::Cow;

use keyward_core::credentials::{Credential, CredentialError};
use keyward_core::limits::{Cost, Quota};
use keyward_core::path::{GatewayPath, PathError, gateway_tool};
use keyward_core::{Code, Request, UnixMillis, token};

use crate::boundary::KeyStrings;
use crate::index::Index;

/// Why a session credential is refused at the edge.
pub(crate) const SESSION_AT_EDGE: &str = "session tokens (aptoken) are verified by the keyward engine only: \
     sessions are not in the snapshot; send an API key (X-API-Key or Authorization: Bearer)";

/// Why a signed credential is refused at the edge.
pub(crate) const SIGNED_AT_EDGE: &str = "signed requests (APIKey, Signature, UserId, Nonce) are verified by the keyward \
     engine only: API secrets and nonce state are not in the snapshot; send an API key (X-API-Key or \
     Authorization: Bearer)";

/// Everything a verification asks besides the key.
#[derive(Debug, Default)]
pub(crate) struct Ask<'a> {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) tool: Option<Cow<'a, str>>,
    pub(crate) permissions: Vec<&'a str>,
    pub(crate) credits: u64,
    pub(crate) now: UnixMillis,
    /// Why the request's path names no tool at all (`verifyRequest` only).
    pub(crate) path_error: Option<PathError>,
}

/// The answer, owned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) code: Code,
    /// The key's position in the snapshot, once it was found. Its id,
    /// workspace, permissions, metadata and expiry are the verdict's (see
    /// [`key_strings`]), made into JavaScript strings once per key.
    pub(crate) key: Option<usize>,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) quota: Quota,
    /// Why the request was refused before a key could be looked up.
    pub(crate) error: Option<String>,
}

impl Outcome {
    fn malformed(error: String) -> Self {
        Self { code: Code::Malformed, key: None, retry_after_ms: None, quota: Quota::default(), error: Some(error) }
    }
}

/// Verifies a raw token, charging the verifier's in-memory counters.
pub(crate) fn verify(verifier: &mut Index, raw: &str, ask: &Ask<'_>) -> Outcome {
    let req = Request {
        ip: ask.ip,
        tool: ask.tool.as_deref(),
        permissions: &ask.permissions,
        permission_query: None,
        cost: Cost { credits: ask.credits, rates: &[] },
        now: ask.now,
    };
    let d = verifier.verify(raw, &req);
    let error = (d.code == Code::Malformed).then(|| match token::check(raw) {
        Err(e) => e.to_string(),
        // Not reached: a token passing the check is looked up, never MALFORMED.
        Ok(()) => "token is malformed".to_owned(),
    });
    Outcome { code: d.code, key: d.key, retry_after_ms: d.retry_after_ms, quota: d.quota, error }
}

/// The strings of the key at `index`, for the JavaScript cache.
pub(crate) fn key_strings(verifier: &Index, index: usize) -> Option<KeyStrings> {
    let k = verifier.snapshot().keys.get(index)?;
    let permissions: Vec<&str> = k.permissions.iter().map(|p| p.as_str()).collect();
    Some(KeyStrings {
        id: k.id.to_string(),
        workspace: k.workspace.to_string(),
        permissions: permissions.join(" "),
        meta: k.meta.clone(),
        expires_at: k.expires_at.map(UnixMillis::get),
    })
}

/// Verifies the credential taken from request headers. Only API keys can be
/// checked against a snapshot; the other kinds answer `MALFORMED` with the reason.
pub(crate) fn verify_credential(
    verifier: &mut Index,
    credential: Result<Credential, CredentialError>,
    ask: &Ask<'_>,
) -> Outcome {
    if let Some(e) = ask.path_error {
        return Outcome::malformed(e.to_string());
    }
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

/// The tool a gateway URL (`/api/v2/{tool}`) names, by keyward-core's one
/// path rule ([`gateway_tool`]), as the engine's gateway reads it.
///
/// `None` off the gateway. A gateway path whose tool name is not valid keeps
/// the decoded rest, so verification answers `UNKNOWN_TOOL` for it rather
/// than passing the request as if it named no tool. A path that could be
/// read two ways (`//`, dot segments, `%2F`, `%25`) is an error.
pub(crate) fn tool_from_url(url: &str) -> Result<Option<String>, PathError> {
    Ok(match gateway_tool(path_of(url))? {
        GatewayPath::Elsewhere => None,
        GatewayPath::Tool(tool) | GatewayPath::Invalid(tool) => Some(tool),
    })
}

/// Decodes hex of either case, ignoring surrounding ASCII whitespace.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    keyward_core::hex::decode(text.trim_ascii())
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
        assert_eq!(tool_from_url("https://h/api/v2/gl_ping?debug=1"), Ok(Some("gl_ping".to_owned())));
        assert_eq!(tool_from_url("https://h/api/v2/gl%5Fping"), Ok(Some("gl_ping".to_owned())));
        assert_eq!(tool_from_url("https://h/api/v1/gl_ping"), Ok(None));
        assert_eq!(tool_from_url("https://h/"), Ok(None));
        assert_eq!(tool_from_url("https://h"), Ok(None));
        assert_eq!(tool_from_url("https://h/api/v2/a/b?q"), Ok(Some("a".to_owned())));
        assert_eq!(tool_from_url("https://h/api/v2/"), Ok(Some(String::new())));
        assert_eq!(tool_from_url("https://h/api/v2//gl_ping"), Err(PathError::EmptySegment));
        assert_eq!(tool_from_url("https://h/api/v2/a%2Fb"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn hex() {
        assert_eq!(unhex(" 00ffAb\n"), Some(vec![0x00, 0xff, 0xab]));
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["0", "0g", "+1", "00 11", "é0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    fn ask(now: u64) -> Ask<'static> {
        Ask { credits: 1, now: UnixMillis(now), ..Ask::default() }
    }

    #[test]
    fn verify_finds_the_key_and_its_strings() {
        let f = fx::build(3);
        let mut v = Index::new(f.snapshot.clone());
        let out = verify(&mut v, f.token("valid"), &ask(fx::CREATED_AT));
        assert_eq!((out.code, out.error.as_deref()), (Code::Valid, None));
        let index = out.key.unwrap();
        assert_eq!(v.snapshot().keys[index].id, f.key_id("valid"));
        let s = key_strings(&v, index).unwrap();
        assert_eq!(s.id, f.key_id("valid").to_string());
        assert_eq!(s.workspace, f.workspace_id("acme").to_string());
        assert_eq!(s.permissions, "tools:gl_ping keys:read");
        assert_eq!((s.meta.as_str(), s.expires_at), (fx::VALID_META, Some(fx::FAR_FUTURE)));
        let bulk = verify(&mut v, &f.bulk_tokens[2], &ask(fx::CREATED_AT));
        assert_eq!(v.snapshot().keys[bulk.key.unwrap()].hash, keyward_core::KeyHash::of(&f.bulk_tokens[2]));
    }

    #[test]
    fn malformed_says_why() {
        let f = fx::build(0);
        let mut v = Index::new(f.snapshot.clone());
        let out = verify(&mut v, "kw_live_short", &ask(fx::CREATED_AT));
        assert_eq!(
            (out.code, out.error.as_deref()),
            (Code::Malformed, Some("token body must be 36 base62 characters"))
        );
        let out = verify(&mut v, f.token("unknown"), &ask(fx::CREATED_AT));
        assert_eq!((out.code, out.key, out.error), (Code::NotFound, None, None));
    }

    #[test]
    fn credential_kinds() {
        let f = fx::build(0);
        let mut v = Index::new(f.snapshot.clone());
        let a = ask(fx::CREATED_AT);
        let session = keyward_core::credentials::parse([("aptoken", "s")]);
        let out = verify_credential(&mut v, session, &a);
        assert_eq!((out.code, out.error.as_deref()), (Code::Malformed, Some(SESSION_AT_EDGE)));
        let signed =
            keyward_core::credentials::parse([("APIKey", "k"), ("Signature", "ab"), ("UserId", "9"), ("Nonce", "1")]);
        assert_eq!(verify_credential(&mut v, signed, &a).error.as_deref(), Some(SIGNED_AT_EDGE));
        let none = keyward_core::credentials::parse([("host", "x")]);
        assert_eq!(
            verify_credential(&mut v, none, &a).error.as_deref(),
            Some("no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers")
        );
        let bearer = format!("Bearer {}", f.token("valid"));
        let key = keyward_core::credentials::parse([("Authorization", bearer.as_str())]);
        assert_eq!(verify_credential(&mut v, key, &a).code, Code::Valid);
    }
}
