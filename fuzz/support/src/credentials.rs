//! The `credentials` target: header lists → [`keyward_core::credentials::parse`].
use keyward_core::credentials::{
    self, Credential, CredentialError, MAX_HEADER_VALUE, MAX_TOOL_LEN, check_tool_name, tool_from_path,
};

use crate::input::{Input, Seed, flip_case, lossy};

/// Header names a case picks from by index; the first seven are the
/// credential headers: `X-API-Key`, `Authorization`, `aptoken`, then the four
/// signed headers.
const HEADER_NAMES: [&str; 10] =
    ["X-API-Key", "Authorization", "aptoken", "APIKey", "Signature", "UserId", "Nonce", "Host", "Cookie", "Forwarded"];
const CREDENTIAL_NAMES: usize = 7;
/// What a `Conflict` calls each kind of credential, in the order it names them.
const KIND_LABELS: [&str; 4] = ["X-API-Key", "Authorization", "aptoken", "signed headers"];
/// A selector byte at or above this reads the header name as raw bytes.
const RAW_NAME: u8 = 0xF0;
const MAX_HEADERS: usize = 16;

/// A header list as the target reads it: `(name, value)`.
type Headers<'a> = Vec<(Vec<u8>, &'a [u8])>;

/// One header list: `(selector [case mask | raw name], value)` pairs until the
/// input ends.
fn read_headers<'a>(input: &mut Input<'a>) -> Headers<'a> {
    let mut headers = Vec::new();
    while !input.is_empty() && headers.len() < MAX_HEADERS {
        let sel = input.u8();
        let name = if sel >= RAW_NAME {
            input.short().to_vec()
        } else {
            let mask = input.u8();
            flip_case(HEADER_NAMES[usize::from(sel) % HEADER_NAMES.len()], mask).into_bytes()
        };
        headers.push((name, input.long()));
    }
    headers
}

/// Header `(name, value)` pairs a seed is written from.
pub(crate) type SeedHeaders<'a> = &'a [(&'a str, &'a [u8])];

pub(crate) fn write_headers(seed: &mut Seed, headers: SeedHeaders<'_>) {
    for (name, value) in headers {
        match HEADER_NAMES.iter().position(|n| n == name) {
            Some(i) => seed.u8(i as u8).u8(0),
            None => seed.u8(RAW_NAME).short(name.as_bytes()),
        };
        seed.long(value);
    }
}

fn parse(headers: &[(Vec<u8>, &[u8])]) -> Result<Credential, CredentialError> {
    credentials::parse(headers.iter().map(|(n, v)| (n.as_slice(), *v)))
}

/// Which credential header `name` is (an index into [`HEADER_NAMES`]):
/// names match case-insensitively.
fn slot(name: &[u8]) -> Option<usize> {
    HEADER_NAMES[..CREDENTIAL_NAMES].iter().position(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// The kind of credential a slot belongs to (an index into [`KIND_LABELS`]).
fn kind_of(slot: usize) -> usize {
    slot.min(3)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A byte RFC 9110 allows in a field value that keyward accepts: visible
/// ASCII, space or tab.
fn allowed(b: u8) -> bool {
    is_blank(b) || b.is_ascii_graphic()
}

/// Whether a header value is handed out exactly as sent: 1–1024 bytes of
/// visible ASCII, spaces and tabs, with a visible character at each end.
pub(crate) fn kept_as_sent(v: &[u8]) -> bool {
    (1..=MAX_HEADER_VALUE).contains(&v.len())
        && v.iter().all(|&b| allowed(b))
        && !is_blank(v[0])
        && !is_blank(v[v.len() - 1])
}

/// Whether `value` is `raw` with only spaces and tabs taken off its ends.
fn is_trimmed_from(value: &str, raw: &[u8]) -> bool {
    let start = raw.iter().position(|&b| !is_blank(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|&b| !is_blank(b)).map_or(start, |i| i + 1);
    raw[start..end] == *value.as_bytes()
}

/// A value the parser hands out: 1–1024 bytes of visible ASCII, with spaces
/// or tabs only inside (RFC 9110 field values allow them), none at the ends.
fn assert_clean_value(v: &str, inner_blanks: bool) {
    assert!(!v.is_empty() && v.len() <= MAX_HEADER_VALUE, "value length {}", v.len());
    assert!(v.bytes().all(allowed), "control or non-ASCII byte: {v:?}");
    assert!(!v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t']), "untrimmed: {v:?}");
    if !inner_blanks {
        assert!(!v.contains([' ', '\t']), "blank inside: {v:?}");
    }
}

/// `credentials` target: header lists → [`keyward_core::credentials::parse`].
///
/// Properties, not a second parser: a repeated credential header is a
/// `Duplicate`, none is `Missing`, two kinds are a `Conflict` naming two of
/// them; a single kind yields that kind or an error naming one of its headers;
/// every value handed out is clean and is the header's value with only blanks
/// trimmed, and a value that needs no trimming is handed out as sent; header
/// order, the case of header names and unrelated headers do not matter;
/// `Debug` never shows a secret; and gateway paths yield valid tool names.
pub fn credentials(data: &[u8]) {
    let mut input = Input::new(data);
    let headers = read_headers(&mut input);
    let got = parse(&headers);
    check_outcome(&headers, &got);

    match &got {
        Ok(Credential::ApiKey(k)) => {
            let from_bearer = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"authorization"));
            assert_clean_value(k, !from_bearer);
        }
        Ok(Credential::Session(s)) => assert_clean_value(s, true),
        Ok(Credential::Signed(s)) => {
            for v in [s.api_key.as_str(), &s.signature, &s.user_id, &s.nonce] {
                assert_clean_value(v, true);
            }
        }
        Ok(other) => panic!("a credential of unknown kind {}", other.kind()),
        Err(_) => {}
    }
    // Secrets never reach `Debug` output.
    if let Ok(c) = &got {
        let want = match c {
            Credential::ApiKey(_) => "ApiKey(<redacted>)".to_owned(),
            Credential::Session(_) => "Session(<redacted>)".to_owned(),
            Credential::Signed(s) => {
                format!(
                    "SignedHeaders {{ api_key: \"<redacted>\", user_id: {:?}, nonce: {:?}, .. }}",
                    s.user_id, s.nonce
                )
            }
            _ => unreachable!("checked above"),
        };
        assert_eq!(format!("{c:?}"), want);
    }
    // Header order is irrelevant unless a header is repeated (then which
    // repeat is reported may change).
    if !matches!(got, Err(CredentialError::Duplicate(_))) {
        let reversed: Headers<'_> = headers.iter().rev().cloned().collect();
        assert_eq!(parse(&reversed), got, "order changed the result");
    }
    // So are the case of header names and every header that is not a credential.
    let shouted: Headers<'_> = headers.iter().map(|(n, v)| (n.to_ascii_uppercase(), *v)).collect();
    assert_eq!(parse(&shouted), got, "the case of a header name changed the result");
    let only_credentials: Headers<'_> = headers.iter().filter(|(n, _)| slot(n).is_some()).cloned().collect();
    assert_eq!(parse(&only_credentials), got, "a non-credential header changed the result");

    for (_, value) in &headers {
        round_trips(value);
        // Every value doubles as a gateway path.
        let path = lossy(value);
        if let Ok(tool) = tool_from_path(&path) {
            assert!(path.starts_with("/api/v2/"));
            assert_eq!(check_tool_name(tool), Ok(()));
            assert!((1..=MAX_TOOL_LEN).contains(&tool.len()) && tool != "." && tool != "..");
        }
    }
}

/// What the result must be, given which credential headers are present.
fn check_outcome(headers: &[(Vec<u8>, &[u8])], got: &Result<Credential, CredentialError>) {
    let mut values: [Vec<&[u8]>; CREDENTIAL_NAMES] = Default::default();
    for (name, value) in headers {
        if let Some(i) = slot(name) {
            values[i].push(value);
        }
    }
    let repeated: Vec<&str> = (0..CREDENTIAL_NAMES).filter(|&i| values[i].len() > 1).map(|i| HEADER_NAMES[i]).collect();
    if !repeated.is_empty() || matches!(got, Err(CredentialError::Duplicate(_))) {
        match got {
            Err(CredentialError::Duplicate(n)) => assert!(repeated.contains(n), "{n} is not repeated"),
            other => panic!("{repeated:?} repeated, but the result is {other:?}"),
        }
        return;
    }
    let value = |i: usize| values[i].first().copied();
    let mut kinds: Vec<&str> =
        (0..CREDENTIAL_NAMES).filter(|&i| value(i).is_some()).map(|i| KIND_LABELS[kind_of(i)]).collect();
    kinds.dedup();
    let kind = match kinds.as_slice() {
        [] => {
            assert_eq!(*got, Err(CredentialError::Missing));
            return;
        }
        [k] => KIND_LABELS.iter().position(|l| l == k).unwrap_or(usize::MAX),
        _ => match got {
            Err(CredentialError::Conflict(a, b)) => {
                let (ia, ib) = (kinds.iter().position(|k| k == a), kinds.iter().position(|k| k == b));
                assert!(ia.is_some() && ib.is_some() && ia < ib, "conflict {a} / {b} among {kinds:?}");
                return;
            }
            other => panic!("kinds {kinds:?} sent together, but the result is {other:?}"),
        },
    };
    // One kind of credential: its own result, or an error about its headers.
    let ours: Vec<usize> = (0..CREDENTIAL_NAMES).filter(|&i| kind_of(i) == kind).collect();
    let names: Vec<&str> = ours.iter().map(|&i| HEADER_NAMES[i]).collect();
    let raw_of = |name: &str| ours.iter().find(|&&i| HEADER_NAMES[i] == name).and_then(|&i| value(i));
    match got {
        Err(CredentialError::TooLong(n)) => {
            assert!(raw_of(n).is_some_and(|v| v.len() > MAX_HEADER_VALUE), "{n} is not too long");
        }
        Err(CredentialError::BadCharacter(n)) => {
            let v = raw_of(n).unwrap_or_default();
            assert!(!v.iter().all(|&b| allowed(b)), "{n}: {:?} has no bad character", lossy(v));
        }
        Err(CredentialError::Empty(n)) => {
            let v = raw_of(n).unwrap_or_default();
            assert!(names.contains(n), "{n} is not one of {names:?}");
            if *n != "Authorization" {
                assert!(v.iter().all(|&b| is_blank(b)), "{n}: {:?} is not empty", lossy(v));
            }
        }
        Err(CredentialError::Scheme) => assert_eq!(kind, 1, "only Authorization has a scheme"),
        Err(CredentialError::IncompleteSigned(n)) => {
            assert!(kind == 3 && names.contains(n) && raw_of(n).is_none(), "{n} is not a missing signed header");
        }
        Err(other) => panic!("{other:?} for a single {}", KIND_LABELS[kind]),
        Ok(Credential::ApiKey(k)) if kind == 0 => assert!(is_trimmed_from(k, raw_of("X-API-Key").unwrap_or_default())),
        Ok(Credential::ApiKey(k)) if kind == 1 => {
            let raw = raw_of("Authorization").unwrap_or_default();
            let text = lossy(raw);
            let text = text.trim_matches([' ', '\t']);
            let scheme = text.get(..6).unwrap_or_default();
            assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme {scheme:?}");
            let rest = &text[6..];
            assert!(rest.starts_with([' ', '\t']) && rest.trim_start_matches([' ', '\t']) == k.as_str(), "{text:?}");
        }
        Ok(Credential::Session(s)) if kind == 2 => assert!(is_trimmed_from(s, raw_of("aptoken").unwrap_or_default())),
        Ok(Credential::Signed(s)) if kind == 3 => {
            for (name, v) in [
                ("APIKey", s.api_key.as_str()),
                ("Signature", &s.signature),
                ("UserId", &s.user_id),
                ("Nonce", &s.nonce),
            ] {
                assert!(raw_of(name).is_some_and(|raw| is_trimmed_from(v, raw)), "{name}: {v:?}");
            }
        }
        Ok(other) => panic!("{} from a single {}", other.kind(), KIND_LABELS[kind]),
    }
    // Completeness: values that need no cleaning are accepted as sent.
    let clean = |name: &str| raw_of(name).is_some_and(kept_as_sent);
    let text = |name: &str| lossy(raw_of(name).unwrap_or_default()).into_owned();
    match kind {
        0 if clean("X-API-Key") => assert_eq!(api_key(got), Some(text("X-API-Key"))),
        2 if clean("aptoken") => assert_eq!(session(got), Some(text("aptoken"))),
        3 if names.iter().all(|n| clean(n)) => {
            let want = names.iter().map(|n| text(n)).collect::<Vec<_>>();
            assert_eq!(signed(got), Some(want));
        }
        _ => {}
    }
}

fn api_key(c: &Result<Credential, CredentialError>) -> Option<String> {
    match c {
        Ok(Credential::ApiKey(k)) => Some(k.to_string()),
        _ => None,
    }
}

fn session(c: &Result<Credential, CredentialError>) -> Option<String> {
    match c {
        Ok(Credential::Session(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// `[APIKey, Signature, UserId, Nonce]`.
fn signed(c: &Result<Credential, CredentialError>) -> Option<Vec<String>> {
    match c {
        Ok(Credential::Signed(s)) => {
            Some(vec![s.api_key.to_string(), s.signature.clone(), s.user_id.clone(), s.nonce.clone()])
        }
        _ => None,
    }
}

/// A value's visible characters, sent in each credential form (padded with
/// blanks, among unrelated headers), come back exactly.
fn round_trips(value: &[u8]) {
    let tok: String = value.iter().filter(|b| b.is_ascii_graphic()).map(|&b| char::from(b)).take(1000).collect();
    if tok.is_empty() {
        return;
    }
    let padded = format!(" \t{tok} ");
    let bearer = format!("{} \t {tok}", flip_case("Bearer", value[0]));
    let noise: (&[u8], &[u8]) = (b"Host", b"api.example.com");
    let send = |list: &[(&str, &str)]| {
        let mut headers: Vec<(&[u8], &[u8])> = list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        headers.insert(usize::from(value[0]) % (headers.len() + 1), noise);
        credentials::parse(headers)
    };
    assert_eq!(api_key(&send(&[("x-api-key", &padded)])).as_deref(), Some(tok.as_str()));
    assert_eq!(api_key(&send(&[("AUTHORIZATION", &bearer)])).as_deref(), Some(tok.as_str()));
    assert_eq!(session(&send(&[("ApToken", &padded)])).as_deref(), Some(tok.as_str()));
    let got = send(&[("nonce", "n1"), ("apikey", &padded), ("Signature", "ab"), ("userid", &tok)]);
    assert_eq!(signed(&got), Some(vec![tok.clone(), "ab".into(), tok.clone(), "n1".into()]));
}
