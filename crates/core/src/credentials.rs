//! Reading a request: the one credential its headers carry ([`parse`]), and
//! the tool it calls ([`check_tool_name`], [`tool_from_path`]).

use core::fmt;

use zeroize::Zeroizing;

/// Longest accepted credential header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Longest accepted tool name.
pub const MAX_TOOL_LEN: usize = 64;

/// The credential a request carries.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// An API key from `X-API-Key` or `Authorization: Bearer`.
    ApiKey(Zeroizing<String>),
    /// A session token from `aptoken`.
    Session(Zeroizing<String>),
    /// The signed header set of SPEC §5.
    Signed(SignedHeaders),
}

/// The four signed headers.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `APIKey`.
    pub api_key: Zeroizing<String>,
    /// `Signature` (hex).
    pub signature: String,
    /// `UserId`.
    pub user_id: String,
    /// `Nonce`.
    pub nonce: String,
}

impl Credential {
    /// A short name of the kind: `api_key`, `session` or `signed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ApiKey(_) => "api_key",
            Credential::Session(_) => "session",
            Credential::Signed(_) => "signed",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Credential::Session(_) => f.write_str("Session(<redacted>)"),
            Credential::Signed(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("api_key", &"<redacted>")
            .field("user_id", &self.user_id)
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// Why no credential could be taken from the headers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// No credential header at all.
    #[error("no credential: send X-API-Key, Authorization: Bearer, aptoken, or the signed headers")]
    Missing,
    /// A credential header appears more than once.
    #[error("header `{0}` appears more than once")]
    Duplicate(&'static str),
    /// Two different kinds of credential were sent.
    #[error("conflicting credentials: `{0}` and `{1}`")]
    Conflict(&'static str, &'static str),
    /// Some but not all of the signed headers.
    #[error("signed request is missing header `{0}`")]
    IncompleteSigned(&'static str),
    /// `Authorization` with a scheme other than Bearer.
    #[error("Authorization scheme must be Bearer")]
    Scheme,
    /// A value that is empty after trimming.
    #[error("header `{0}` is empty")]
    Empty(&'static str),
    /// A value over [`MAX_HEADER_VALUE`] bytes.
    #[error("header `{0}` is longer than {MAX_HEADER_VALUE} bytes")]
    TooLong(&'static str),
    /// A control character or non-ASCII byte in a value.
    #[error("header `{0}` contains a control or non-ASCII character")]
    BadCharacter(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    XApiKey,
    Authorization,
    ApToken,
    ApiKey,
    Signature,
    UserId,
    Nonce,
}

const SLOTS: [(Slot, &str); 7] = [
    (Slot::XApiKey, "X-API-Key"),
    (Slot::Authorization, "Authorization"),
    (Slot::ApToken, "aptoken"),
    (Slot::ApiKey, "APIKey"),
    (Slot::Signature, "Signature"),
    (Slot::UserId, "UserId"),
    (Slot::Nonce, "Nonce"),
];

fn clean<'a>(name: &'static str, value: &'a [u8]) -> Result<&'a str, CredentialError> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(CredentialError::TooLong(name));
    }
    if value.iter().any(|&b| !(b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b))) {
        return Err(CredentialError::BadCharacter(name));
    }
    let text = core::str::from_utf8(value).map_err(|_| CredentialError::BadCharacter(name))?;
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(CredentialError::Empty(name));
    }
    Ok(text)
}

/// Takes the one credential from a list of header `(name, value)` pairs.
///
/// Names match case-insensitively; other headers are ignored. Exactly one of
/// these must be present: `X-API-Key`, `Authorization: Bearer …` (scheme
/// case-insensitive), `aptoken`, or all four of `APIKey`, `Signature`,
/// `UserId`, `Nonce`. Duplicates, mixtures, oversize values and control
/// characters are refused.
pub fn parse<'h, I, N, V>(headers: I) -> Result<Credential, CredentialError>
where
    I: IntoIterator<Item = (&'h N, &'h V)>,
    N: AsRef<[u8]> + ?Sized + 'h,
    V: AsRef<[u8]> + ?Sized + 'h,
{
    let mut found: [Option<&'h [u8]>; 7] = [None; 7];
    for (name, value) in headers {
        let name = name.as_ref();
        let slot = SLOTS.iter().zip(&mut found).find(|((_, n), _)| n.as_bytes().eq_ignore_ascii_case(name));
        if let Some(((_, canonical), slot)) = slot
            && slot.replace(value.as_ref()).is_some()
        {
            return Err(CredentialError::Duplicate(canonical));
        }
    }
    let mut kinds = [
        (found[0].is_some(), "X-API-Key"),
        (found[1].is_some(), "Authorization"),
        (found[2].is_some(), "aptoken"),
        (found[3..].iter().any(Option::is_some), "signed headers"),
    ]
    .into_iter()
    .filter_map(|(present, label)| present.then_some(label));
    match (kinds.next(), kinds.next()) {
        (None, _) => return Err(CredentialError::Missing),
        (Some(_), None) => {}
        (Some(first), Some(second)) => return Err(CredentialError::Conflict(first, second)),
    }
    if let Some(v) = found[0] {
        return Ok(Credential::ApiKey(Zeroizing::new(clean("X-API-Key", v)?.to_owned())));
    }
    if let Some(v) = found[1] {
        let text = clean("Authorization", v)?;
        let (scheme, rest) = text.split_once([' ', '\t']).ok_or(CredentialError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::Scheme);
        }
        let token = rest.trim_matches([' ', '\t']);
        if token.is_empty() || token.contains([' ', '\t']) {
            return Err(CredentialError::Empty("Authorization"));
        }
        return Ok(Credential::ApiKey(Zeroizing::new(token.to_owned())));
    }
    if let Some(v) = found[2] {
        return Ok(Credential::Session(Zeroizing::new(clean("aptoken", v)?.to_owned())));
    }
    let mut parts = [""; 4];
    for ((part, &(_, name)), v) in parts.iter_mut().zip(&SLOTS[3..]).zip(&found[3..]) {
        let v = v.ok_or(CredentialError::IncompleteSigned(name))?;
        *part = clean(name, v)?;
    }
    Ok(Credential::Signed(SignedHeaders {
        api_key: Zeroizing::new(parts[0].to_owned()),
        signature: parts[1].to_owned(),
        user_id: parts[2].to_owned(),
        nonce: parts[3].to_owned(),
    }))
}

/// Why a tool name or gateway path is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolNameError {
    /// The path is not `/api/v2/{tool}`.
    #[error("path is not /api/v2/{{tool}}")]
    NotGateway,
    /// The name is empty, too long, or has characters outside `A-Z a-z 0-9 _ - .`.
    #[error("tool name must be 1 to {MAX_TOOL_LEN} characters of A-Z a-z 0-9 _ - .")]
    Invalid,
}

/// Checks a tool name: 1–64 characters of `A-Z a-z 0-9 _ - .`.
pub fn check_tool_name(name: &str) -> Result<(), ToolNameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOOL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name != "."
        && name != "..";
    if ok { Ok(()) } else { Err(ToolNameError::Invalid) }
}

/// Takes the tool name out of a gateway path `/api/v2/{tool}` (a query string
/// is ignored; a trailing slash or further segments are refused).
pub fn tool_from_path(path: &str) -> Result<&str, ToolNameError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let tool = path.strip_prefix("/api/v2/").ok_or(ToolNameError::NotGateway)?;
    check_tool_name(tool)?;
    Ok(tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[(&str, &str)]) -> Result<Credential, CredentialError> {
        parse(list.iter().map(|(n, v)| (*n, *v)))
    }

    fn key(c: Result<Credential, CredentialError>) -> String {
        match c {
            Ok(Credential::ApiKey(k)) => k.to_string(),
            other => panic!("not an api key: {other:?}"),
        }
    }

    #[test]
    fn each_form() {
        assert_eq!(key(p(&[("x-api-key", "kw_live_abc")])), "kw_live_abc");
        assert_eq!(key(p(&[("X-Api-Key", "  kw_live_abc\t")])), "kw_live_abc");
        assert_eq!(key(p(&[("authorization", "Bearer kw_live_abc")])), "kw_live_abc");
        assert_eq!(key(p(&[("Authorization", "bEaReR   kw_live_abc ")])), "kw_live_abc");
        assert!(matches!(p(&[("APToken", "sess")]), Ok(Credential::Session(s)) if s.as_str() == "sess"));
        let signed = p(&[("apikey", "k"), ("signature", "AB"), ("userid", "96"), ("nonce", "1"), ("host", "x")]);
        match signed {
            Ok(Credential::Signed(s)) => {
                assert_eq!(
                    (s.api_key.as_str(), s.signature.as_str(), s.user_id.as_str(), s.nonce.as_str()),
                    ("k", "AB", "96", "1")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(p(&[]), Err(CredentialError::Missing));
        assert_eq!(p(&[("cookie", "a=b")]), Err(CredentialError::Missing));
        assert_eq!(p(&[("x-api-key", "a"), ("X-API-KEY", "a")]), Err(CredentialError::Duplicate("X-API-Key")));
        assert_eq!(
            p(&[("x-api-key", "a"), ("authorization", "Bearer a")]),
            Err(CredentialError::Conflict("X-API-Key", "Authorization"))
        );
        assert_eq!(p(&[("aptoken", "a"), ("nonce", "1")]), Err(CredentialError::Conflict("aptoken", "signed headers")));
        assert_eq!(
            p(&[("apikey", "k"), ("signature", "s"), ("nonce", "1")]),
            Err(CredentialError::IncompleteSigned("UserId"))
        );
        assert_eq!(p(&[("authorization", "Basic abc")]), Err(CredentialError::Scheme));
        assert_eq!(p(&[("authorization", "Bearer")]), Err(CredentialError::Scheme));
        assert_eq!(p(&[("authorization", "Bearer a b")]), Err(CredentialError::Empty("Authorization")));
        assert_eq!(p(&[("x-api-key", "   ")]), Err(CredentialError::Empty("X-API-Key")));
        assert_eq!(p(&[("x-api-key", "a\r\nb")]), Err(CredentialError::BadCharacter("X-API-Key")));
        assert_eq!(p(&[("x-api-key", "a\u{7f}")]), Err(CredentialError::BadCharacter("X-API-Key")));
        assert_eq!(p(&[("x-api-key", "é")]), Err(CredentialError::BadCharacter("X-API-Key")));
        let long = "a".repeat(MAX_HEADER_VALUE + 1);
        assert_eq!(p(&[("x-api-key", long.as_str())]), Err(CredentialError::TooLong("X-API-Key")));
    }

    #[test]
    fn byte_headers() {
        let h: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"X-API-KEY".to_vec(), b"abc".to_vec())];
        let c = parse(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        assert_eq!(key(c), "abc");
    }

    #[test]
    fn redacted_debug() {
        let c = p(&[("x-api-key", "kw_live_secret")]).unwrap();
        assert_eq!(format!("{c:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn tool_paths() {
        assert_eq!(tool_from_path("/api/v2/gl_ping"), Ok("gl_ping"));
        assert_eq!(tool_from_path("/api/v2/generate-image.v2?x=1"), Ok("generate-image.v2"));
        assert_eq!(tool_from_path("/api/v1/gl_ping"), Err(ToolNameError::NotGateway));
        assert_eq!(tool_from_path("/api/v2/"), Err(ToolNameError::Invalid));
        assert_eq!(tool_from_path("/api/v2/a/b"), Err(ToolNameError::Invalid));
        assert_eq!(tool_from_path("/api/v2/.."), Err(ToolNameError::Invalid));
        assert_eq!(tool_from_path(&format!("/api/v2/{}", "a".repeat(65))), Err(ToolNameError::Invalid));
    }
}
