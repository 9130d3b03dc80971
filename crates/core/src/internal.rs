//! Entry points for fuzz targets and benchmarks. Not part of the stable API:
//! anything here may change without notice.
//!
//! Each `fuzz_*` function takes the fuzzer's raw bytes, reads a structured case
//! out of them with [`Input`] (so every byte string is a complete case), runs
//! it, and `assert!`s properties: round-trips where a format is encoded and
//! decoded, and the promises of SPEC §3, §5 and §7. Nothing here panics on any
//! input except through those asserts. [`seeds`] builds the committed seed
//! corpus (`fuzz/corpus/<target>/seed-<name>`) in the same byte formats.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{KeyInit, Mac};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::credentials::{self, Credential, CredentialError, MAX_HEADER_VALUE};
use crate::decide::{self, Request, ToolLookup, Usage};
use crate::id::{KeyId, WorkspaceId};
use crate::ip::{IpRule, IpRuleError, IpRules, parse_cidr};
use crate::limits::{
    Concurrency, Cost, Credits, Limits, RateLimit, Refill, RefillInterval, Scope, UsageState, charge, peek,
};
use crate::local::LocalVerifier;
use crate::permission::Permission;
use crate::policy::{KeyPolicy, ToolPolicy, WorkspacePolicy, decode_record, encode_record};
use crate::query::{MAX_QUERY_LEN, PermissionQuery, QueryError};
use crate::signature::{self, ApiSecret, NoncePolicy, NonceState, parse_decimal_nonce};
use crate::snapshot::{self, Snapshot};
use crate::time::{DAY_MS, UnixMillis};
use crate::token::{self, BODY_CHARS, KeyHash, MAX_PREFIX_LEN, Prefix, START_CHARS, Token, TokenError};
use crate::verdict::Code;

pub use crate::snapshot::decode_unauthenticated as decode_snapshot_unauthenticated;
pub use crate::snapshot::{FORMAT_VERSION as SNAPSHOT_FORMAT_VERSION, MAGIC as SNAPSHOT_MAGIC};

/// The snapshot key the `snapshot` target and its seeds use.
pub const FUZZ_SNAPSHOT_KEY: &[u8; 32] = b"keyward fuzz snapshot key, 32 B.";

/// A realistic "now" (2024-02-29T00:00:00Z) that cases count time from.
pub const FUZZ_EPOCH: u64 = 1_709_164_800_000;

// ---------------------------------------------------------------------------
// Reading cases from bytes, and writing seeds in the same format.

/// Reads a structured case from fuzzer bytes. Past the end, numbers read as 0
/// and byte strings as empty, so any input is a complete case.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Starts reading `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let got = self.bytes(N);
        out[..got.len()].copy_from_slice(got);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A byte string with a one-byte length.
    pub fn short(&mut self) -> &'a [u8] {
        let n = self.u8();
        self.bytes(n.into())
    }

    /// A byte string with a two-byte length.
    pub fn long(&mut self) -> &'a [u8] {
        let n = self.u16();
        self.bytes(n.into())
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }
}

/// Writes a seed in the format [`Input`] reads.
#[derive(Clone, Debug, Default)]
pub struct Seed(pub Vec<u8>);

impl Seed {
    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Bytes as they are.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A byte string with a one-byte length (cut at 255 bytes).
    pub fn short(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(usize::from(u8::MAX));
        self.u8(n as u8).raw(&bytes[..n])
    }

    /// A byte string with a two-byte length (cut at 65 535 bytes).
    pub fn long(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(usize::from(u16::MAX));
        self.u16(n as u16).raw(&bytes[..n])
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Swaps the ASCII case of the characters whose bit is set in `mask`
/// (bit `i % 8` for character `i`).
fn flip_case(text: &str, mask: u8) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 8) & 1 == 0 {
                c
            } else if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A deterministic RNG for generating tokens from fuzzer bytes.

/// SHA-256 in counter mode over a seed: deterministic, so a token generated
/// from fuzzer bytes is reproducible.
///
/// It claims [`TryCryptoRng`] only so [`Token::generate`] accepts it; its
/// output is exactly as secret as its seed, which here is public. Never use it
/// to issue real keys.
#[derive(Clone)]
pub struct DetRng {
    seed: [u8; 32],
    block: u64,
    buf: [u8; 32],
    used: usize,
}

impl DetRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: &[u8]) -> Self {
        let seed = Sha256::new().chain_update(b"keyward-fuzz-rng\0").chain_update(seed).finalize().into();
        Self { seed, block: 0, buf: [0; 32], used: 32 }
    }

    fn fill(&mut self, dst: &mut [u8]) {
        for b in dst {
            if self.used == self.buf.len() {
                self.buf =
                    Sha256::new().chain_update(self.seed).chain_update(self.block.to_le_bytes()).finalize().into();
                self.block = self.block.wrapping_add(1);
                self.used = 0;
            }
            *b = self.buf[self.used];
            self.used += 1;
        }
    }
}

impl core::fmt::Debug for DetRng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DetRng(..)")
    }
}

impl TryRng for DetRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl TryCryptoRng for DetRng {}

// ---------------------------------------------------------------------------
// credentials

/// Header names a case picks from by index; the first seven are the
/// credential headers, in the parser's slot order.
const HEADER_NAMES: [&str; 10] =
    ["X-API-Key", "Authorization", "aptoken", "APIKey", "Signature", "UserId", "Nonce", "Host", "Cookie", "Forwarded"];
const CREDENTIAL_NAMES: usize = 7;
/// A selector byte at or above this reads the header name as raw bytes.
const RAW_NAME: u8 = 0xF0;
const MAX_HEADERS: usize = 16;

/// One header list: `(selector [case mask | raw name], value)` pairs until the
/// input ends.
fn read_headers<'a>(input: &mut Input<'a>) -> Vec<(Vec<u8>, &'a [u8])> {
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
type SeedHeaders<'a> = &'a [(&'a str, &'a [u8])];

fn write_headers(seed: &mut Seed, headers: SeedHeaders<'_>) {
    for (name, value) in headers {
        match HEADER_NAMES.iter().position(|n| n == name) {
            Some(i) => seed.u8(i as u8).u8(0),
            None => seed.u8(RAW_NAME).short(name.as_bytes()),
        };
        seed.long(value);
    }
}

#[derive(Clone, Copy)]
enum BadValue {
    TooLong,
    BadCharacter,
    Empty,
}

impl BadValue {
    fn at(self, name: &'static str) -> CredentialError {
        match self {
            BadValue::TooLong => CredentialError::TooLong(name),
            BadValue::BadCharacter => CredentialError::BadCharacter(name),
            BadValue::Empty => CredentialError::Empty(name),
        }
    }
}

/// What a credential header value becomes: at most 1024 bytes of visible
/// ASCII, spaces and tabs, trimmed of spaces and tabs, non-empty.
fn clean_model(value: &[u8]) -> Result<&str, BadValue> {
    if value.len() > MAX_HEADER_VALUE {
        return Err(BadValue::TooLong);
    }
    if !value.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        return Err(BadValue::BadCharacter);
    }
    let text = core::str::from_utf8(value).map_err(|_| BadValue::BadCharacter)?;
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() { Err(BadValue::Empty) } else { Ok(text) }
}

/// The parse result SPEC §6 and the parser's docs call for, computed plainly.
fn expected_credential(headers: &[(Vec<u8>, &[u8])]) -> Result<Credential, CredentialError> {
    let mut found: [Option<&[u8]>; CREDENTIAL_NAMES] = [None; CREDENTIAL_NAMES];
    for (name, value) in headers {
        if let Some(i) = HEADER_NAMES[..CREDENTIAL_NAMES].iter().position(|n| n.as_bytes().eq_ignore_ascii_case(name)) {
            if found[i].is_some() {
                return Err(CredentialError::Duplicate(HEADER_NAMES[i]));
            }
            found[i] = Some(value);
        }
    }
    let kinds: Vec<&'static str> = [
        (found[0].is_some(), "X-API-Key"),
        (found[1].is_some(), "Authorization"),
        (found[2].is_some(), "aptoken"),
        (found[3..].iter().any(Option::is_some), "signed headers"),
    ]
    .into_iter()
    .filter_map(|(present, label)| present.then_some(label))
    .collect();
    match kinds.as_slice() {
        [] => return Err(CredentialError::Missing),
        [_] => {}
        [a, b, ..] => return Err(CredentialError::Conflict(a, b)),
    }
    let owned = |s: &str| Zeroizing::new(s.to_owned());
    if let Some(v) = found[0] {
        return clean_model(v).map(|t| Credential::ApiKey(owned(t))).map_err(|e| e.at("X-API-Key"));
    }
    if let Some(v) = found[1] {
        let text = clean_model(v).map_err(|e| e.at("Authorization"))?;
        let Some(space) = text.find([' ', '\t']) else { return Err(CredentialError::Scheme) };
        if !text[..space].eq_ignore_ascii_case("bearer") {
            return Err(CredentialError::Scheme);
        }
        let token = text[space + 1..].trim_matches([' ', '\t']);
        if token.is_empty() || token.contains([' ', '\t']) {
            return Err(CredentialError::Empty("Authorization"));
        }
        return Ok(Credential::ApiKey(owned(token)));
    }
    if let Some(v) = found[2] {
        return clean_model(v).map(|t| Credential::Session(owned(t))).map_err(|e| e.at("aptoken"));
    }
    let mut parts = [""; 4];
    for (k, part) in parts.iter_mut().enumerate() {
        let name = HEADER_NAMES[3 + k];
        let v = found[3 + k].ok_or(CredentialError::IncompleteSigned(name))?;
        *part = clean_model(v).map_err(|e| e.at(name))?;
    }
    Ok(Credential::Signed(credentials::SignedHeaders {
        api_key: owned(parts[0]),
        signature: parts[1].to_owned(),
        user_id: parts[2].to_owned(),
        nonce: parts[3].to_owned(),
    }))
}

/// A value the parser hands out: 1–1024 bytes of visible ASCII, with spaces
/// or tabs only inside (RFC 9110 field values allow them), none at the ends.
fn assert_clean_value(v: &str, inner_blanks: bool) {
    assert!(!v.is_empty() && v.len() <= MAX_HEADER_VALUE, "value length {}", v.len());
    assert!(v.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()), "control or non-ASCII byte: {v:?}");
    assert!(!v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t']), "untrimmed: {v:?}");
    if !inner_blanks {
        assert!(!v.contains([' ', '\t']), "blank inside: {v:?}");
    }
}

/// `credentials` target: header lists → [`credentials::parse`].
///
/// Checks the result against a plain model (duplicates, conflicts, missing,
/// per-kind cleaning), that every value handed out is clean, that the order
/// of headers does not matter, that `Debug` never shows a secret, and that
/// gateway paths yield valid tool names.
pub fn fuzz_credentials(data: &[u8]) {
    let mut input = Input::new(data);
    let headers = read_headers(&mut input);
    let got = credentials::parse(headers.iter().map(|(n, v)| (n.as_slice(), *v)));
    assert_eq!(got, expected_credential(&headers), "headers: {headers:?}");

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
        };
        assert_eq!(format!("{c:?}"), want);
    }
    // Header order is irrelevant unless a header is repeated.
    if !matches!(got, Err(CredentialError::Duplicate(_))) {
        let reversed = credentials::parse(headers.iter().rev().map(|(n, v)| (n.as_slice(), *v)));
        assert_eq!(reversed, got);
    }
    // Every value doubles as a gateway path.
    for (_, value) in &headers {
        let path = lossy(value);
        if let Ok(tool) = credentials::tool_from_path(&path) {
            assert!(path.starts_with("/api/v2/"));
            assert_eq!(credentials::check_tool_name(tool), Ok(()));
            assert!((1..=credentials::MAX_TOOL_LEN).contains(&tool.len()) && tool != "." && tool != "..");
        }
    }
}

// ---------------------------------------------------------------------------
// signature

/// Time steps and nonce choices after the header set, at most this many.
const MAX_NONCE_OPS: usize = 64;

/// `signature` target: signed header sets → parse + verify, and the replay
/// policies as a state machine.
///
/// Checks that [`signature::sign_hex`] output always verifies, in lower,
/// upper and mixed case, and that an altered one never does; that clean
/// header sets parse to exactly their values and verify; and that
/// `NonceState::check_and_accept` follows a plain model under `Monotonic` and
/// `Unique`, in particular that an accepted nonce is refused with
/// `NONCE_REUSED` within the window.
pub fn fuzz_signature(data: &[u8]) {
    let mut input = Input::new(data);
    let secret = ApiSecret::new(input.short());
    let (raw_key, raw_user, raw_nonce) = (input.short(), input.short(), input.short());
    let sig_mode = input.u8();
    let sig_arg = input.u8();
    let junk_sig = if sig_mode >= 4 { input.short() } else { &[] };
    let layout = input.u8();
    let window_ms = u64::from(input.u32());
    let capacity = u32::from(input.u8());
    let start = FUZZ_EPOCH + u64::from(input.u32());

    // 1. Whatever sign_hex produces verifies, in any letter case; nothing else does.
    let (key, user, nonce) = (lossy(raw_key), lossy(raw_user), lossy(raw_nonce));
    let sig = signature::sign_hex(&secret, &nonce, &user, &key);
    assert_eq!(sig, crate::hex::encode(&signature::sign(&secret, &nonce, &user, &key)));
    assert!(sig.len() == 64 && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{sig}");
    let upper = sig.to_ascii_uppercase();
    let mixed = flip_case(&sig, sig_arg);
    for s in [&sig, &upper, &mixed] {
        assert_eq!(signature::verify(&secret, &nonce, &user, &key, s), Ok(()), "{s}");
    }
    let mut altered = sig.clone().into_bytes();
    let at = usize::from(sig_arg) % altered.len();
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap_or_default();
    assert_eq!(signature::verify(&secret, &nonce, &user, &key, &altered), Err(Code::InvalidSignature));
    assert_eq!(signature::verify(&secret, &nonce, &user, &key, &sig[..63]), Err(Code::InvalidSignature));
    assert_eq!(signature::verify(&secret, &format!("{nonce}0"), &user, &key, &sig), Err(Code::InvalidSignature));

    // 2. The header set, as a client sends it.
    let sig_value: &[u8] = match sig_mode {
        0 => sig.as_bytes(),
        1 => upper.as_bytes(),
        2 => mixed.as_bytes(),
        3 => altered.as_bytes(),
        _ => junk_sig,
    };
    let pad = |v: &[u8]| if layout & 1 == 0 { v.to_vec() } else { [b" \t".as_slice(), v, b" "].concat() };
    let mut headers: Vec<(&str, Vec<u8>)> = vec![
        ("APIKey", pad(raw_key)),
        ("Signature", pad(sig_value)),
        ("UserId", pad(raw_user)),
        ("Nonce", pad(raw_nonce)),
    ];
    if layout & 2 != 0 {
        headers.insert(1, ("Host", b"api.example.com".to_vec()));
    }
    if layout & 4 != 0 {
        headers.reverse();
    }
    let parsed = credentials::parse(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())));
    // Values that survive header cleaning unchanged are what the client signed.
    let clean = [raw_key, raw_user, raw_nonce].iter().all(|v| clean_model(v).is_ok_and(|t| t.len() == v.len()));
    let header_nonce = match parsed {
        Ok(Credential::Signed(s)) => {
            let verdict = signature::verify(&secret, &s.nonce, &s.user_id, &s.api_key, &s.signature);
            if clean {
                assert_eq!((s.api_key.as_str(), s.user_id.as_str(), s.nonce.as_str()), (&*key, &*user, &*nonce));
                match sig_mode {
                    0..=2 => assert_eq!(verdict, Ok(())),
                    3 => assert_eq!(verdict, Err(Code::InvalidSignature)),
                    _ => {}
                }
            }
            s.nonce
        }
        Ok(other) => panic!("signed headers parsed as {}", other.kind()),
        Err(e) => {
            assert!(!clean || sig_mode >= 4, "clean signed headers refused: {e}");
            nonce.into_owned()
        }
    };

    // 3. Replay protection over a sequence of nonces.
    let unique = NoncePolicy::Unique { window_ms, capacity };
    let mut mono = NonceState::default();
    let mut uniq = NonceState::default();
    let mut high_water: Option<u64> = None;
    let mut accepted: Vec<(String, u64)> = Vec::new();
    let mut tried: Vec<String> = vec![header_nonce.clone()];
    let mut now = start;
    for _ in 0..MAX_NONCE_OPS {
        if input.is_empty() {
            break;
        }
        let sel = input.u8();
        now = now.saturating_add(u64::from(input.u16()) << (8 * ((sel >> 2) % 4)));
        let n: String = match sel % 4 {
            0 => header_nonce.clone(),
            1 => tried[usize::from(input.u8()) % tried.len()].clone(),
            2 => input.u64().to_string(),
            _ => lossy(input.short()).into_owned(),
        };
        tried.push(n.clone());
        step_monotonic(&mut mono, &mut high_water, &n, UnixMillis(now));
        step_unique(&mut uniq, &mut accepted, unique, &n, now);
    }
}

/// Decimal u64 without sign or leading zero, the plain way.
fn decimal_model(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let mut v: u128 = 0;
    for &d in b {
        v = v * 10 + u128::from(d - b'0');
        if v > u128::from(u64::MAX) {
            return None;
        }
    }
    u64::try_from(v).ok()
}

fn step_monotonic(state: &mut NonceState, high_water: &mut Option<u64>, n: &str, now: UnixMillis) {
    let p = NoncePolicy::Monotonic;
    let value = decimal_model(n);
    assert_eq!(parse_decimal_nonce(n).ok(), value, "{n:?}");
    let expect = match value {
        None => Err(Code::Malformed),
        Some(v) if high_water.is_some_and(|h| v <= h) => Err(Code::NonceReused),
        Some(_) => Ok(()),
    };
    let before = state.clone();
    assert_eq!(state.check(p, n, now), expect);
    assert_eq!(state.check_and_accept(p, n, now), expect, "{n:?} after {high_water:?}");
    if expect.is_ok() {
        *high_water = value;
        assert_eq!(state.high_water, value);
        assert_eq!(state.check_and_accept(p, n, now.plus(1)), Err(Code::NonceReused));
    } else {
        assert_eq!(*state, before, "a refused nonce changed the state");
    }
}

fn step_unique(state: &mut NonceState, accepted: &mut Vec<(String, u64)>, p: NoncePolicy, n: &str, now: u64) {
    let NoncePolicy::Unique { window_ms, capacity } = p else { return };
    let well_formed = (1..=signature::MAX_NONCE_LEN).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_graphic());
    let last = accepted.iter().rposition(|(m, _)| m == n);
    let live = last.filter(|&j| now < accepted[j].1.saturating_add(window_ms));
    let before = state.clone();
    let got = state.check_and_accept(p, n, UnixMillis(now));
    match (well_formed, live) {
        (false, _) => assert_eq!(got, Err(Code::Malformed), "{n:?}"),
        (true, None) => assert_eq!(got, Ok(()), "{n:?} was not accepted within the window"),
        // Up to `capacity - 1` later nonces cannot push it out of the cache.
        (true, Some(j)) if accepted.len() - 1 - j < capacity.max(1) as usize => {
            assert_eq!(got, Err(Code::NonceReused), "{n:?} replayed within the window");
        }
        (true, Some(_)) => assert!(matches!(got, Ok(()) | Err(Code::NonceReused))),
    }
    if got.is_ok() {
        accepted.push((n.to_owned(), now));
        assert!(state.seen.len() <= capacity.max(1) as usize);
        let at = UnixMillis(now);
        if window_ms > 0 {
            assert_eq!(state.check(p, n, at), Err(Code::NonceReused));
            assert_eq!(state.check(p, n, at.plus(window_ms - 1)), Err(Code::NonceReused));
        }
        assert_eq!(state.check(p, n, at.plus(window_ms)), Ok(()), "window over");
    } else {
        assert_eq!(*state, before, "a refused nonce changed the state");
    }
}

// ---------------------------------------------------------------------------
// token

/// `token` target: token generation, parsing and checking.
///
/// Input: a prefix, a 32-byte RNG seed, a position and a byte, then arbitrary
/// text. A token generated from the seed always checks and parses, hashes
/// alike, shows its start, and is refused after any single-byte change,
/// truncation or extension. The arbitrary text goes through `check`,
/// `Token::parse`, `Token::parse_foreign` and `start_of`, which must agree.
pub fn fuzz_token(data: &[u8]) {
    let mut input = Input::new(data);
    let prefix_text = lossy(input.short()).into_owned();
    let prefix = match Prefix::parse(&prefix_text) {
        Ok(p) => {
            assert!(p.as_str().len() <= MAX_PREFIX_LEN);
            p
        }
        Err(e) => {
            assert_eq!(e, TokenError::BadPrefix);
            Prefix::default_live()
        }
    };
    let seed = input.bytes(32);
    let pos = usize::from(input.u16());
    let byte = input.u8();
    let raw = lossy(input.rest()).into_owned();

    // A generated token.
    let t = Token::generate(&prefix, &mut DetRng::new(seed));
    assert_eq!(t.expose(), Token::generate(&prefix, &mut DetRng::new(seed)).expose(), "not deterministic");
    let text = t.expose();
    let p = prefix.as_str().len();
    assert_eq!(text.len(), p + 1 + BODY_CHARS);
    assert!(text.starts_with(prefix.as_str()) && text.as_bytes()[p] == b'_');
    assert_eq!(token::check(text), Ok(()));
    assert_eq!(token::check_foreign(text), Ok(()));
    let parsed = Token::parse(text);
    assert_eq!(parsed.as_ref().map(Token::hash), Ok(t.hash()));
    assert_eq!(t.hash(), KeyHash::of(text));
    assert_eq!(KeyHash::from_hex(&t.hash().to_hex()), Some(t.hash()));
    assert_eq!(KeyHash::from_hex(&t.hash().to_hex().to_ascii_uppercase()), Some(t.hash()));
    assert_eq!(t.start(), token::start_of(text));
    assert_eq!(t.start(), text[..p + 1 + START_CHARS]);
    assert_eq!(format!("{t:?} {t}"), "Token(<redacted>) <redacted>");

    // Any single-byte change is refused (CRC32 catches every burst up to 32 bits).
    let i = pos % text.len();
    let orig = text.as_bytes()[i];
    let replacement = if byte.is_ascii() {
        let b = 0x20 + byte % 0x5f;
        let b = if b == orig { 0x20 + (b - 0x1f) % 0x5f } else { b };
        char::from(b)
    } else {
        char::from(byte) // non-ASCII: becomes two UTF-8 bytes
    };
    let mut changed = String::with_capacity(text.len() + 1);
    changed.push_str(&text[..i]);
    changed.push(replacement);
    changed.push_str(&text[i + 1..]);
    assert_ne!(changed, text);
    assert!(token::check(&changed).is_err(), "a changed token passed: {changed}");
    assert!(token::check(&text[..text.len() - 1]).is_err(), "a truncated token passed");
    assert!(token::check(&format!("{text}{replacement}")).is_err(), "an extended token passed");

    // Arbitrary text: the checks agree with each other and never panic.
    let native = token::check(&raw);
    assert_eq!(Token::parse(&raw).map(|t| t.hash()), native.clone().map(|()| KeyHash::of(&raw)));
    let foreign = token::check_foreign(&raw);
    assert_eq!(Token::parse_foreign(&raw).map(|t| t.hash()), foreign.clone().map(|()| KeyHash::of(&raw)));
    if native.is_ok() {
        assert!(raw.len() <= MAX_PREFIX_LEN + 1 + BODY_CHARS);
        assert_eq!(foreign, Ok(()), "a native token is a valid foreign one");
    }
    assert!(raw.starts_with(&token::start_of(&raw)));
}

// ---------------------------------------------------------------------------
// ip_rules

const MAX_RULES: u8 = 8;
const MAX_ADDRS: usize = 8;

/// A CIDR text, and the network it must parse to when it is built well-formed.
fn read_cidr(input: &mut Input<'_>) -> (String, Option<IpNet>) {
    let sel = input.u8();
    match sel % 8 {
        // IPv4 network, host bits cleared.
        0 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let len = input.u8() % 33;
            let net = Ipv4Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            (format!("{}/{}", net.addr(), len), Some(IpNet::V4(net)))
        }
        // IPv6 network, host bits cleared.
        1 => {
            let addr = Ipv6Addr::from(input.array::<16>());
            let len = input.u8() % 129;
            let net = Ipv6Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            let canonical = match net.addr().to_ipv4_mapped() {
                Some(v4) if len >= 96 => IpNet::V4(Ipv4Net::new(v4, len - 96).unwrap_or_default()),
                _ => IpNet::V6(net),
            };
            (format!("{}/{}", net.addr(), len), Some(canonical))
        }
        // IPv4-mapped IPv6 network: must become its IPv4 form.
        2 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let len = input.u8() % 33;
            let net = Ipv4Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            (format!("::ffff:{}/{}", net.addr(), 96 + len), Some(IpNet::V4(net)))
        }
        // A bare address: one host.
        3 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let net = Ipv4Net::new(addr, 32).unwrap_or_default();
            (addr.to_string(), Some(IpNet::V4(net)))
        }
        4 => {
            let addr = Ipv6Addr::from(input.array::<16>());
            let net = match addr.to_ipv4_mapped() {
                Some(v4) => IpNet::V4(Ipv4Net::new(v4, 32).unwrap_or_default()),
                None => IpNet::V6(Ipv6Net::new(addr, 128).unwrap_or_default()),
            };
            (addr.to_string(), Some(net))
        }
        // Possibly with host bits set.
        5 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            (format!("{}/{}", addr, input.u8() % 40), None)
        }
        _ => (lossy(input.short()).into_owned(), None),
    }
}

fn read_addr(input: &mut Input<'_>) -> IpAddr {
    match input.u8() % 4 {
        0 => IpAddr::V4(Ipv4Addr::from(input.array::<4>())),
        1 => IpAddr::V6(Ipv6Addr::from(input.array::<16>())),
        2 => IpAddr::V6(Ipv4Addr::from(input.array::<4>()).to_ipv6_mapped()),
        // IPv4-compatible (deprecated) form: not mapped, stays IPv6.
        _ => IpAddr::V6(Ipv4Addr::from(input.array::<4>()).to_ipv6_compatible()),
    }
}

/// IPv4-mapped addresses decide as IPv4.
fn canonical_model(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `net` covers `ip`, by masking, without ipnet.
fn covers_model(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix_len())).unwrap_or(0);
            u32::from(a) & mask == u32::from(n.addr()) & mask
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(0);
            u128::from(a) & mask == u128::from(n.addr()) & mask
        }
        _ => false,
    }
}

fn check_cidr(text: &str, parsed: &Result<IpNet, IpRuleError>) {
    match parsed {
        Ok(net) => {
            assert_eq!(net.trunc(), *net, "host bits in {text:?}");
            assert_eq!(parse_cidr(&net.to_string()).as_ref(), Ok(net), "Display of {net} does not re-parse");
            if let IpNet::V6(v6) = net {
                assert!(v6.addr().to_ipv4_mapped().is_none() || v6.prefix_len() < 96, "not canonical: {net}");
            }
        }
        Err(IpRuleError::HostBits(_, suggestion)) => {
            assert!(parse_cidr(suggestion).is_ok(), "suggested {suggestion:?} for {text:?} does not parse");
        }
        Err(_) => {}
    }
}

/// `ip_rules` target: CIDR and rule parsing, and `IpRules::permits`.
///
/// Checks that parsed networks are canonical and survive `Display`, that
/// well-formed CIDRs parse to the expected network, and, against masking
/// arithmetic, that deny overrides allow, a non-empty allow list refuses what
/// it does not cover, IPv4-mapped IPv6 decides as IPv4, and rule order does not
/// matter.
pub fn fuzz_ip_rules(data: &[u8]) {
    let mut input = Input::new(data);
    let mut rules = Vec::new();
    for _ in 0..input.u8() % (MAX_RULES + 1) {
        let action: Cow<'_, str> = match input.u8() {
            0 => "allow".into(),
            1 => "deny".into(),
            2 => "ALLOW".into(),
            3 => "Deny".into(),
            _ => lossy(input.short()),
        };
        let (cidr, want) = read_cidr(&mut input);
        let parsed = parse_cidr(&cidr);
        check_cidr(&cidr, &parsed);
        if let Some(want) = want {
            assert_eq!(parsed, Ok(want), "{cidr:?}");
        }
        let rule = IpRule::parse(&action, &cidr);
        let expected = parsed.and_then(|net| {
            if action.eq_ignore_ascii_case("allow") {
                Ok(IpRule::Allow(net))
            } else if action.eq_ignore_ascii_case("deny") {
                Ok(IpRule::Deny(net))
            } else {
                Err(IpRuleError::Action(action.chars().take(16).collect()))
            }
        });
        assert_eq!(rule, expected);
        if let Ok(r) = rule {
            let shown = r.to_string();
            let (a, c) = shown.split_once(' ').unwrap_or_default();
            assert_eq!(IpRule::parse(a, c), Ok(r), "{shown:?} does not re-parse");
            rules.push(r);
        }
    }
    let rules = IpRules(rules);
    let reversed = IpRules(rules.0.iter().rev().copied().collect());
    assert_eq!(rules.permits(None), rules.is_empty(), "an unknown address passes only an empty rule set");
    for _ in 0..MAX_ADDRS {
        if input.is_empty() {
            break;
        }
        let ip = read_addr(&mut input);
        let got = rules.permits(Some(ip));
        let c = canonical_model(ip);
        let denied = rules.0.iter().any(|r| matches!(r, IpRule::Deny(n) if covers_model(n, c)));
        let allows: Vec<&IpNet> =
            rules.0.iter().filter_map(|r| if let IpRule::Allow(n) = r { Some(n) } else { None }).collect();
        let allowed = allows.is_empty() || allows.iter().any(|n| covers_model(n, c));
        if denied {
            assert!(!got, "deny must override allow: {ip} under {rules:?}");
        }
        if !allowed {
            assert!(!got, "{ip} is outside every allow rule of {rules:?}");
        }
        assert_eq!(got, allowed && !denied, "{ip} under {rules:?}");
        assert_eq!(reversed.permits(Some(ip)), got, "rule order changed the decision");
        match ip {
            IpAddr::V4(v4) => assert_eq!(rules.permits(Some(IpAddr::V6(v4.to_ipv6_mapped()))), got),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    assert_eq!(rules.permits(Some(IpAddr::V4(v4))), got, "{ip} decides as {v4}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// snapshot and records

/// Keys, tools and limits exercised per decoded snapshot, at most.
const MAX_EXERCISED: usize = 8;

fn seal(frame_without_tag: &[u8]) -> Vec<u8> {
    // Invariant: HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(FUZZ_SNAPSHOT_KEY).expect("HMAC takes any key length");
    m.update(frame_without_tag);
    let mut out = frame_without_tag.to_vec();
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// A snapshot whose body is `body`, framed and authenticated correctly.
fn frame_body(body: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(16 + body.len());
    head.extend_from_slice(snapshot::MAGIC);
    head.extend_from_slice(&snapshot::FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(body);
    seal(&head)
}

/// Charges a fresh counter state a few times: decoded limits must be usable.
fn exercise_limits(limits: &Limits, now: UnixMillis) {
    let _ = limits.validate();
    let mut state = UsageState::default();
    for cost in [Cost { credits: 0, rates: &[] }, Cost::default(), Cost::default()] {
        let _ = peek(limits, &state, now, &cost);
        let _ = charge(&mut [Scope { limits, state: &mut state }], now, &cost);
    }
}

fn exercise_key(key: &KeyPolicy, ws: &WorkspacePolicy, tool: Option<&ToolPolicy>, now: UnixMillis) {
    let _ = key.status(now);
    let req = Request {
        ip: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        tool: tool.map(|t| t.name.as_str()),
        permissions: &["keys:read"],
        now,
        ..Request::default()
    };
    let lookup = tool.map_or(ToolLookup::NotRequested, ToolLookup::Found);
    let (mut k, mut t, mut kt) = (UsageState::default(), UsageState::default(), UsageState::default());
    for _ in 0..2 {
        let usage = Usage { key: &mut k, tool: Some(&mut t), key_tool: Some(&mut kt) };
        let v = decide::decide(key, ws, lookup, &req, usage);
        assert_eq!(v.key_id, Some(key.id));
    }
}

/// Decisions over decoded data must not panic: SPEC §7 wants a clear error,
/// never a crash, for a corrupted or foreign file.
fn exercise_snapshot(s: &Snapshot) {
    let verifier = LocalVerifier::new(s.clone());
    assert_eq!(verifier.key_count(), s.keys.len());
    for key in s.keys.iter().take(MAX_EXERCISED) {
        exercise_limits(&key.limits, s.created_at);
        if let Some(ws) = s.workspaces.iter().find(|w| w.id == key.workspace) {
            let tool = s.tools.iter().find(|t| t.workspace == key.workspace);
            exercise_key(key, ws, tool, s.created_at);
        }
    }
    for ws in s.workspaces.iter().take(MAX_EXERCISED) {
        exercise_limits(&ws.default_limits, s.created_at);
    }
    for tool in s.tools.iter().take(MAX_EXERCISED) {
        exercise_limits(&tool.limits, s.created_at);
    }
}

fn check_snapshot_round_trip(s: &Snapshot) {
    let encoded = s.encode(FUZZ_SNAPSHOT_KEY);
    let Ok(encoded) = encoded else { panic!("a decoded snapshot does not encode: {encoded:?}") };
    assert_eq!(Snapshot::decode(&encoded, FUZZ_SNAPSHOT_KEY).as_ref(), Ok(s));
    assert_eq!(decode_snapshot_unauthenticated(&encoded).as_ref(), Ok(s));
}

fn check_record<T>(bytes: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let value = decode_record::<T>(bytes).ok()?;
    assert_eq!(decode_record::<T>(&encode_record(&value)).as_ref(), Ok(&value));
    Some(value)
}

/// `snapshot` target: the snapshot frame and body decoders, and stored records.
///
/// The input is tried as a whole snapshot (authenticated with
/// [`FUZZ_SNAPSHOT_KEY`], and unauthenticated), and its body (or the whole
/// input, if it is not a frame) is re-framed with a correct MAC so mutations
/// reach the body decoder. Authenticated and unauthenticated decoding of a
/// correctly sealed frame agree; every decoded snapshot re-encodes to itself;
/// every decoded record `encode_record`s back to itself. Decoded policies are
/// then run through `decide` and `charge`, which must not panic.
pub fn fuzz_snapshot(data: &[u8]) {
    if let Ok(s) = Snapshot::decode(data, FUZZ_SNAPSHOT_KEY) {
        assert_eq!(decode_snapshot_unauthenticated(data).as_ref(), Ok(&s));
        check_snapshot_round_trip(&s);
        exercise_snapshot(&s);
    }
    if let Ok(s) = decode_snapshot_unauthenticated(data) {
        check_snapshot_round_trip(&s);
    }
    // The frame with its tag recomputed: both decoders must agree.
    if data.len() >= 32 {
        let resealed = seal(&data[..data.len() - 32]);
        assert_eq!(Snapshot::decode(&resealed, FUZZ_SNAPSHOT_KEY), decode_snapshot_unauthenticated(&resealed));
    }
    // The body, re-framed.
    let body = if data.len() >= 48 && data.starts_with(snapshot::MAGIC) { &data[16..data.len() - 32] } else { data };
    let framed = frame_body(body);
    let decoded = Snapshot::decode(&framed, FUZZ_SNAPSHOT_KEY);
    assert_eq!(decoded, decode_snapshot_unauthenticated(&framed));
    if let Ok(s) = decoded {
        check_snapshot_round_trip(&s);
        exercise_snapshot(&s);
    }

    // Stored records.
    let now = UnixMillis(FUZZ_EPOCH);
    let workspace = check_record::<WorkspacePolicy>(data);
    let tool = check_record::<ToolPolicy>(data);
    if let Some(key) = check_record::<KeyPolicy>(data) {
        exercise_limits(&key.limits, now);
        let ws = workspace.unwrap_or_else(|| sample_workspace(key.workspace));
        exercise_key(&key, &ws, tool.as_ref().filter(|t| t.workspace == key.workspace), now);
    } else {
        if let Some(ws) = &workspace {
            exercise_limits(&ws.default_limits, now);
        }
        if let Some(t) = &tool {
            exercise_limits(&t.limits, now);
        }
    }
    let _ = check_record::<Limits>(data);
    let _ = check_record::<UsageState>(data);
    let _ = check_record::<NonceState>(data);
}

// ---------------------------------------------------------------------------
// permission_query

/// Permissions a `permission_query` case may hold, picked by the bits of its
/// first byte.
const QUERY_HELD: [&str; 8] = ["a", "b:read", "b:*", "c.x", "*", "docs.read", "docs.write", "admin"];

/// `permission_query` target: the permission query parser and evaluator.
///
/// Input: a byte whose bits pick the held permissions from a fixed set, then
/// the query text. Checks that parsing never panics; that a parsed query's
/// canonical form stays within the bound and re-parses to the same query;
/// that errors point inside the input; and that `allows` agrees with a plain
/// shunting-yard evaluation of the canonical form, holds when every named
/// permission is held, and fails when none is.
pub fn fuzz_permission_query(data: &[u8]) {
    let mut input = Input::new(data);
    let pick = input.u8();
    let text = lossy(input.rest()).into_owned();
    let held: Vec<Permission> = QUERY_HELD
        .iter()
        .enumerate()
        .filter(|(i, _)| pick >> i & 1 == 1)
        .map(|(_, p)| must(Permission::parse(p)))
        .collect();
    match PermissionQuery::parse(&text) {
        Ok(q) => {
            let shown = q.to_string();
            assert!(shown.len() <= MAX_QUERY_LEN, "{shown:?}");
            assert_eq!(PermissionQuery::parse(&shown).as_ref(), Ok(&q), "{text:?} shows as {shown:?}");
            assert_eq!(Some(q.allows(&held)), query_model(&shown, &held), "{shown:?} holding {held:?}");
            let named: Vec<Permission> = q.permissions().into_iter().cloned().collect();
            assert!(q.allows(&named), "holding every permission {shown:?} names satisfies it");
            assert!(!q.allows(&[]), "{shown:?} needs some permission");
        }
        Err(e) => {
            assert!(e.position().is_none_or(|at| at <= text.len()), "{e:?} points outside {text:?}");
            if text.len() > MAX_QUERY_LEN {
                assert_eq!(e, QueryError::TooLong);
            }
        }
    }
}

/// Evaluates a query in canonical form (single spaces, `AND`/`OR`,
/// parentheses hugging their terms) with a shunting-yard: `AND` before `OR`.
/// `None` if the text is not such a query.
fn query_model(canonical: &str, held: &[Permission]) -> Option<bool> {
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in canonical.chars() {
        if matches!(c, '(' | ')' | ' ') {
            if !word.is_empty() {
                tokens.push(core::mem::take(&mut word));
            }
            if c != ' ' {
                tokens.push(c.to_string());
            }
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    fn apply(values: &mut Vec<bool>, op: &str) -> Option<()> {
        let (b, a) = (values.pop()?, values.pop()?);
        values.push(if op == "AND" { a && b } else { a || b });
        Some(())
    }
    let precedence = |op: &str| match op {
        "AND" => 2,
        "OR" => 1,
        _ => 0,
    };
    let mut values: Vec<bool> = Vec::new();
    let mut ops: Vec<&'static str> = Vec::new();
    for t in &tokens {
        match t.as_str() {
            "(" => ops.push("("),
            ")" => loop {
                match ops.pop()? {
                    "(" => break,
                    op => apply(&mut values, op)?,
                }
            },
            op @ ("AND" | "OR") => {
                while let Some(&top) = ops.last() {
                    if top == "(" || precedence(top) < precedence(op) {
                        break;
                    }
                    ops.pop();
                    apply(&mut values, top)?;
                }
                ops.push(if op == "AND" { "AND" } else { "OR" });
            }
            term => {
                let p = Permission::parse(term).ok()?;
                values.push(held.iter().any(|h| h.covers(&p)));
            }
        }
    }
    while let Some(op) = ops.pop() {
        apply(&mut values, op)?;
    }
    if values.len() == 1 { values.pop() } else { None }
}

// ---------------------------------------------------------------------------
// limits (the model lives in the target, fuzz/fuzz_targets/limits.rs)

/// Name of the one rate limit a [`LimitsCase`] configures.
pub const RATE_NAME: &str = "default";
/// A rate-limit name no [`LimitsCase`] configures (a call may still name it).
pub const OTHER_RATE_NAME: &str = "other";

/// A case for the `limits` differential target: one scope's limits, a start
/// time, and a sequence of operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsCase {
    /// The limits, valid by construction.
    pub limits: Limits,
    /// When the first call happens (before its own `dt_ms`).
    pub start: UnixMillis,
    /// What happens, in order.
    pub ops: Vec<LimitsOp>,
    /// Whether numbers were read at full width (u64) rather than small.
    pub wide: bool,
}

/// One step of a [`LimitsCase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsOp {
    /// Advance the clock by `dt_ms`, then charge a call.
    Call {
        /// Milliseconds since the previous operation.
        dt_ms: u64,
        /// Credits the call costs (0 only checks).
        credits: u64,
        /// A rate limit the call names: `(true, cost)` names [`RATE_NAME`],
        /// `(false, cost)` names [`OTHER_RATE_NAME`].
        named: Option<(bool, u64)>,
    },
    /// Release the `nth` lease granted so far (modulo their number).
    Release {
        /// Which lease.
        nth: u8,
    },
}

const MAX_LIMITS_OPS: usize = 256;

mod flag {
    pub const RATE: u8 = 1;
    pub const COOLDOWN: u8 = 2;
    pub const DAILY: u8 = 4;
    pub const CONCURRENCY: u8 = 8;
    pub const CREDITS: u8 = 16;
    pub const REFILL: u8 = 32;
    pub const AUTO_APPLY: u8 = 64;
    pub const WIDE: u8 = 128;
}

impl LimitsCase {
    /// Reads a case. Format: a flag byte (rate, cooldown, daily, concurrency,
    /// credits, daily refill, auto-apply, wide), each configured limit's
    /// numbers (u64 when wide, small otherwise), the start, then operations
    /// until the input ends.
    pub fn read(data: &[u8]) -> Self {
        let mut input = Input::new(data);
        let flags = input.u8();
        let wide = flags & flag::WIDE != 0;
        let num = |input: &mut Input<'_>, small: fn(&mut Input<'_>) -> u64| {
            if wide { input.u64() } else { small(input) }
        };
        let mut limits = Limits::default();
        if flags & flag::RATE != 0 {
            // Clamped to what `Limits::validate` accepts.
            let limit = num(&mut input, |i| u64::from(i.u8())).clamp(1, crate::limits::MAX_RATE_LIMIT);
            let window_ms = num(&mut input, |i| u64::from(i.u16())).clamp(1, crate::limits::MAX_WINDOW_MS);
            let auto_apply = flags & flag::AUTO_APPLY != 0;
            limits.rates.push(RateLimit { name: RATE_NAME.into(), limit, window_ms, auto_apply });
        }
        if flags & flag::COOLDOWN != 0 {
            limits.cooldown_ms = Some(num(&mut input, |i| u64::from(i.u16())));
        }
        if flags & flag::DAILY != 0 {
            limits.daily = Some(num(&mut input, |i| u64::from(i.u8())));
        }
        if flags & flag::CONCURRENCY != 0 {
            let max = u32::try_from(num(&mut input, |i| u64::from(i.u8() % 8))).unwrap_or(u32::MAX).max(1);
            let lease_ms = num(&mut input, |i| u64::from(i.u16()));
            limits.concurrency = Some(Concurrency { max, lease_ms });
        }
        if flags & flag::CREDITS != 0 {
            let initial = num(&mut input, |i| u64::from(i.u8()));
            let refill = (flags & flag::REFILL != 0)
                .then(|| Refill { interval: RefillInterval::Daily, amount: num(&mut input, |i| u64::from(i.u8())) });
            limits.credits = Some(Credits { initial, refill });
        }
        let start = UnixMillis(num(&mut input, |i| FUZZ_EPOCH + u64::from(i.u32())));
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < MAX_LIMITS_OPS {
            let sel = input.u8();
            if sel & 7 == 7 {
                ops.push(LimitsOp::Release { nth: input.u8() });
                continue;
            }
            let dt_ms = match (sel >> 3) & 3 {
                0 => 0,
                1 => u64::from(input.u8()),
                2 => u64::from(input.u16()),
                _ => num(&mut input, |i| u64::from(i.u32())),
            };
            let credits = read_cost(&mut input, wide);
            let named = (sel & 32 != 0).then(|| (sel & 64 == 0, read_cost(&mut input, wide)));
            ops.push(LimitsOp::Call { dt_ms, credits, named });
        }
        Self { limits, start, ops, wide }
    }

    /// Writes the case in the format [`LimitsCase::read`] reads. Values that
    /// the format cannot hold (a small case with big numbers) are cut.
    pub fn write(&self) -> Vec<u8> {
        let mut s = Seed::default();
        let l = &self.limits;
        let mut flags = 0;
        let rate = l.rates.first();
        for (on, f) in [
            (rate.is_some(), flag::RATE),
            (l.cooldown_ms.is_some(), flag::COOLDOWN),
            (l.daily.is_some(), flag::DAILY),
            (l.concurrency.is_some(), flag::CONCURRENCY),
            (l.credits.is_some(), flag::CREDITS),
            (l.credits.is_some_and(|c| c.refill.is_some()), flag::REFILL),
            (rate.is_some_and(|r| r.auto_apply), flag::AUTO_APPLY),
            (self.wide, flag::WIDE),
        ] {
            if on {
                flags |= f;
            }
        }
        s.u8(flags);
        let wide = self.wide;
        let num = |s: &mut Seed, v: u64, small: fn(&mut Seed, u64)| {
            if wide {
                s.u64(v);
            } else {
                small(s, v);
            }
        };
        let u8_ = |s: &mut Seed, v: u64| {
            s.u8(v.min(255) as u8);
        };
        let u16_ = |s: &mut Seed, v: u64| {
            s.u16(v.min(65_535) as u16);
        };
        if let Some(r) = rate {
            num(&mut s, r.limit, u8_);
            num(&mut s, r.window_ms, u16_);
        }
        if let Some(c) = l.cooldown_ms {
            num(&mut s, c, u16_);
        }
        if let Some(d) = l.daily {
            num(&mut s, d, u8_);
        }
        if let Some(c) = l.concurrency {
            num(&mut s, u64::from(c.max), |s, v| {
                s.u8((v % 8) as u8);
            });
            num(&mut s, c.lease_ms, u16_);
        }
        if let Some(c) = l.credits {
            num(&mut s, c.initial, u8_);
            if let Some(r) = c.refill {
                num(&mut s, r.amount, u8_);
            }
        }
        num(&mut s, self.start.get(), |s, v| {
            s.u32(u32::try_from(v.saturating_sub(FUZZ_EPOCH)).unwrap_or(u32::MAX));
        });
        for op in &self.ops {
            match *op {
                LimitsOp::Release { nth } => {
                    s.u8(7).u8(nth);
                }
                LimitsOp::Call { dt_ms, credits, named } => {
                    let dt_kind: u8 = match dt_ms {
                        0 => 0,
                        1..=255 => 1,
                        256..=65_535 => 2,
                        _ => 3,
                    };
                    let mut sel = dt_kind << 3;
                    if let Some((ours, _)) = named {
                        sel |= 32 | if ours { 0 } else { 64 };
                    }
                    s.u8(sel);
                    match dt_kind {
                        0 => {}
                        1 => {
                            s.u8(dt_ms as u8);
                        }
                        2 => {
                            s.u16(dt_ms as u16);
                        }
                        _ => num(&mut s, dt_ms, |s, v| {
                            s.u32(u32::try_from(v).unwrap_or(u32::MAX));
                        }),
                    }
                    write_cost(&mut s, credits, wide);
                    if let Some((_, c)) = named {
                        write_cost(&mut s, c, wide);
                    }
                }
            }
        }
        s.into_bytes()
    }
}

/// A cost byte: mostly 1, often 0 (check only), sometimes 2–32 or any number.
fn read_cost(input: &mut Input<'_>, wide: bool) -> u64 {
    match input.u8() {
        0..=31 => 0,
        32..=223 => 1,
        b @ 224..=254 => u64::from(b - 222),
        255 if wide => input.u64(),
        255 => u64::from(input.u16()),
    }
}

fn write_cost(s: &mut Seed, cost: u64, wide: bool) {
    match cost {
        0 => s.u8(0),
        1 => s.u8(32),
        2..=32 => s.u8(cost as u8 + 222),
        _ if wide => s.u8(255).u64(cost),
        _ => s.u8(255).u16(u16::try_from(cost).unwrap_or(u16::MAX)),
    };
}

// ---------------------------------------------------------------------------
// Seeds

fn sample_workspace(id: WorkspaceId) -> WorkspacePolicy {
    WorkspacePolicy {
        id,
        name: "acme".into(),
        api_access: true,
        prefix: Prefix::default_live(),
        ip_rules: IpRules::none(),
        default_limits: Limits::default(),
    }
}

/// Parses constants the seeds are built from.
fn must<T, E: core::fmt::Debug>(r: Result<T, E>) -> T {
    // Invariant: only called on literals that are valid by construction.
    #[allow(clippy::expect_used)]
    r.expect("seed literal is valid")
}

fn sample_snapshot(rng: &mut DetRng) -> (Snapshot, Token) {
    let prefix = must(Prefix::parse("sk_live"));
    let ws = WorkspacePolicy {
        id: WorkspaceId::generate(rng),
        name: "acme".into(),
        api_access: true,
        prefix: prefix.clone(),
        ip_rules: IpRules(vec![must(IpRule::parse("allow", "10.0.0.0/8")), must(IpRule::parse("deny", "10.9.0.0/16"))]),
        default_limits: Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 100, window_ms: 60_000, auto_apply: true }],
            ..Limits::default()
        },
    };
    let tool = ToolPolicy {
        workspace: ws.id,
        name: "gl_ping".into(),
        enabled: true,
        permission: Some(must(Permission::parse("tools:gl_ping"))),
        limits: Limits { cooldown_ms: Some(10_000), daily: Some(50), ..Limits::default() },
    };
    let token = Token::generate(&prefix, rng);
    let key = KeyPolicy {
        id: KeyId::generate(rng),
        workspace: ws.id,
        hash: token.hash(),
        name: "ci".into(),
        revoked_at: None,
        expires_at: Some(UnixMillis(FUZZ_EPOCH + 30 * DAY_MS)),
        disabled: false,
        permissions: vec![must(Permission::parse("keys:read")), must(Permission::parse("tools:*"))],
        ip_rules: IpRules(vec![
            must(IpRule::parse("allow", "10.1.0.0/16")),
            must(IpRule::parse("allow", "2001:db8::/32")),
        ]),
        limits: Limits {
            rates: vec![
                RateLimit { name: "default".into(), limit: 10, window_ms: 1_000, auto_apply: true },
                RateLimit { name: "tokens".into(), limit: 10_000, window_ms: 60_000, auto_apply: false },
            ],
            cooldown_ms: None,
            daily: Some(1_000),
            concurrency: Some(Concurrency { max: 4, lease_ms: 30_000 }),
            credits: Some(Credits {
                initial: 500,
                refill: Some(Refill { interval: RefillInterval::Monthly { day: 31 }, amount: 1_000 }),
            }),
        },
        tool_limits: vec![("gl_ping".into(), Limits { daily: Some(5), ..Limits::default() })],
        tools: vec!["gl_ping".into()],
        meta: r#"{"team":"infra"}"#.into(),
        imported: false,
    };
    let revoked = KeyPolicy {
        id: KeyId::generate(rng),
        hash: KeyHash::of("legacy-key-123"),
        name: "old import".into(),
        revoked_at: Some(UnixMillis(FUZZ_EPOCH - DAY_MS)),
        expires_at: None,
        permissions: vec![],
        ip_rules: IpRules::none(),
        limits: Limits::default(),
        tool_limits: vec![],
        tools: vec![],
        meta: String::new(),
        imported: true,
        ..key.clone()
    };
    let snap = Snapshot {
        created_at: UnixMillis(FUZZ_EPOCH),
        workspaces: vec![ws],
        tools: vec![tool],
        keys: vec![key, revoked],
    };
    (snap, token)
}

fn limits_seed(limits: Limits, start_ms: u64, ops: &[LimitsOp]) -> Vec<u8> {
    LimitsCase { limits, start: UnixMillis(FUZZ_EPOCH + start_ms), ops: ops.to_vec(), wide: false }.write()
}

fn call(dt_ms: u64, credits: u64) -> LimitsOp {
    LimitsOp::Call { dt_ms, credits, named: None }
}

/// The committed seed corpus: `(target, name, bytes)`, written to
/// `fuzz/corpus/<target>/seed-<name>`. Each is a small, meaningful case: a
/// real token, a real signed header set, a real encoded snapshot.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rng = DetRng::new(b"seeds");
    let (snap, token) = sample_snapshot(&mut rng);
    let tok = token.expose().as_bytes();

    // credentials
    let bearer = [b"Bearer ".as_slice(), tok].concat();
    let secret = ApiSecret::new(b"engine-test-secret".to_vec());
    let (api_key, user, nonce) = ("28c68ac3fcfafc3d4e8d653fe57e5baf", "96", "2247733562");
    let sig = signature::sign_hex(&secret, nonce, user, api_key);
    let signed: [(&str, &[u8]); 5] = [
        ("Host", b"api.example.com"),
        ("APIKey", api_key.as_bytes()),
        ("Signature", sig.as_bytes()),
        ("UserId", user.as_bytes()),
        ("Nonce", nonce.as_bytes()),
    ];
    let header_seeds: [(&str, SeedHeaders<'_>); 5] = [
        ("x-api-key", &[("Host", b"api.example.com"), ("X-API-Key", tok)]),
        ("bearer", &[("Authorization", &bearer)]),
        ("aptoken", &[("aptoken", b"sess_2Yb5kQ9mZ1pXw8rT4uV7cD3eF6gH0jK")]),
        ("signed", &signed),
        ("conflict", &[("X-API-Key", tok), ("Authorization", &bearer), ("X-Forwarded-For", b"203.0.113.9")]),
    ];
    for (name, headers) in header_seeds {
        let mut s = Seed::default();
        write_headers(&mut s, headers);
        out.push(("credentials", name, s.into_bytes()));
    }

    // signature: the engine's test vector, then nonce sequences.
    let mut s = Seed::default();
    s.short(secret.expose()).short(api_key.as_bytes()).short(user.as_bytes()).short(nonce.as_bytes());
    s.u8(0).u8(0).u8(0).u32(600_000).u8(255).u32(0);
    s.u8(0).u16(10); // header nonce: accepted by both policies
    s.u8(0).u16(10); // header nonce again: reused
    s.u8(2).u16(10).u64(2_247_733_563); // the next decimal
    s.u8(3).u16(10).short(b"r4nd0m-n0nce"); // a random one: only `unique` takes it
    s.u8(1).u16(10).u8(4); // replay the random one
    out.push(("signature", "engine-vector", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"another secret").short(b"key_3hX9").short(b"1").short(b"a1");
    s.u8(1).u8(0x55).u8(0).u32(1_000).u8(2).u32(5);
    s.u8(0).u16(0); // a1 at t
    s.u8(3).u16(999).short(b"a1"); // still within the window
    s.u8(3).u16(1).short(b"a1"); // window over
    s.u8(3).u16(1).short(b"b2");
    s.u8(3).u16(1).short(b"c3"); // capacity 2: a1 falls out
    s.u8(3).u16(1).short(b"a1");
    out.push(("signature", "unique-window", s.into_bytes()));

    // token
    let seed = [7u8; 32];
    let generated = Token::generate(&Prefix::default_live(), &mut DetRng::new(&seed));
    let mut s = Seed::default();
    s.short(b"kw_live").raw(&seed).u16(12).u8(b'a').raw(generated.expose().as_bytes());
    out.push(("token", "kw_live", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"sk_test").raw(&[1; 32]).u16(3).u8(b'_').raw(b"legacy-key-123");
    out.push(("token", "foreign", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"sk_live").raw(&[9; 32]).u16(40).u8(0xe9).raw(tok);
    out.push(("token", "snapshot-token", s.into_bytes()));

    // ip_rules
    let mut s = Seed::default();
    s.u8(3);
    s.u8(0).u8(0).raw(&[10, 0, 0, 0]).u8(8); // allow 10.0.0.0/8
    s.u8(1).u8(0).raw(&[10, 1, 0, 0]).u8(16); // deny 10.1.0.0/16
    s.u8(2).u8(1).raw(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).octets()).u8(32); // ALLOW 2001:db8::/32
    s.u8(0).raw(&[10, 1, 2, 3]).u8(0).raw(&[10, 2, 0, 1]).u8(2).raw(&[10, 0, 0, 1]);
    s.u8(1).raw(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5).octets()).u8(0).raw(&[192, 0, 2, 1]);
    out.push(("ip_rules", "allow-deny", s.into_bytes()));
    let mut s = Seed::default();
    s.u8(4);
    s.u8(0).u8(2).raw(&[10, 0, 0, 0]).u8(8); // allow ::ffff:10.0.0.0/104
    s.u8(1).u8(4).raw(&Ipv6Addr::LOCALHOST.octets()); // deny ::1
    s.u8(4).short(b"permit").u8(6).short(b"10.0.0.0/8"); // bad action
    s.u8(0).u8(5).raw(&[10, 0, 0, 1]).u8(8); // host bits: 10.0.0.1/8
    s.u8(2).raw(&[10, 9, 9, 9]).u8(3).raw(&[0, 0, 0, 1]).u8(1).raw(&Ipv6Addr::LOCALHOST.octets());
    out.push(("ip_rules", "mapped", s.into_bytes()));

    // snapshot and records
    out.push(("snapshot", "full", must(snap.encode(FUZZ_SNAPSHOT_KEY))));
    out.push(("snapshot", "empty", must(Snapshot::default().encode(FUZZ_SNAPSHOT_KEY))));
    out.push(("snapshot", "record-key", encode_record(&snap.keys[0])));
    out.push(("snapshot", "record-workspace", encode_record(&snap.workspaces[0])));
    out.push(("snapshot", "record-tool", encode_record(&snap.tools[0])));

    // limits
    let rate3 = Limits {
        rates: vec![RateLimit { name: RATE_NAME.into(), limit: 3, window_ms: 1_000, auto_apply: true }],
        ..Limits::default()
    };
    let gcra = [call(0, 1), call(0, 1), call(0, 1), call(0, 1), call(333, 1), call(1, 1), call(332, 1), call(1, 1)];
    out.push(("limits", "gcra-3-per-second", limits_seed(rate3, 0, &gcra)));
    let daily = Limits { daily: Some(2), ..Limits::default() };
    let ops = [call(10, 1), call(10, 1), call(0, 0), call(DAY_MS - 21, 1), call(1, 1)];
    out.push(("limits", "daily-midnight", limits_seed(daily, 0, &ops)));
    let credits = Limits {
        credits: Some(Credits { initial: 3, refill: Some(Refill { interval: RefillInterval::Daily, amount: 5 }) }),
        ..Limits::default()
    };
    let ops = [call(1_000, 2), call(0, 2), call(0, 0), call(0, 1), call(0, 1), call(0, 0), call(DAY_MS, 1)];
    out.push(("limits", "credits-refill", limits_seed(credits, 0, &ops)));
    let conc = Limits { concurrency: Some(Concurrency { max: 2, lease_ms: 10_000 }), ..Limits::default() };
    let ops = [call(0, 1), call(100, 1), call(100, 1), LimitsOp::Release { nth: 0 }, call(100, 1), call(10_000, 1)];
    out.push(("limits", "concurrency", limits_seed(conc, 0, &ops)));
    let cooldown = Limits { cooldown_ms: Some(5_000), ..Limits::default() };
    let ops = [call(1_000, 1), call(1, 1), call(4_998, 0), call(1, 1)];
    out.push(("limits", "cooldown", limits_seed(cooldown, 0, &ops)));
    let all = Limits {
        rates: vec![RateLimit { name: RATE_NAME.into(), limit: 5, window_ms: 2_000, auto_apply: false }],
        cooldown_ms: Some(100),
        daily: Some(20),
        concurrency: Some(Concurrency { max: 3, lease_ms: 60_000 }),
        credits: Some(Credits { initial: 10, refill: Some(Refill { interval: RefillInterval::Daily, amount: 8 }) }),
    };
    let named = |dt_ms, ours, cost| LimitsOp::Call { dt_ms, credits: 1, named: Some((ours, cost)) };
    let ops = [
        named(0, true, 2),
        named(100, true, 3),
        named(100, true, 1),
        named(100, false, 1),
        call(50, 1),
        LimitsOp::Release { nth: 1 },
        call(60_000, 4),
        call(DAY_MS, 5),
    ];
    out.push(("limits", "everything", limits_seed(all, DAY_MS - 500, &ops)));

    // permission_query: a held-permissions byte, then the query.
    for (name, pick, query) in [
        ("precedence", 0b0000_0011, "a AND (b:read OR c.x) OR docs.read and admin"),
        ("wildcards", 0b0000_0100, "b:read AND b:* AND (c.x OR *)"),
        ("unclosed", 0xFF, "((a AND) OR"),
        ("too-deep", 0b0000_0001, "(((((((((((((((((a)))))))))))))))))"),
    ] {
        let mut s = Seed::default();
        s.u8(pick).raw(query.as_bytes());
        out.push(("permission_query", name, s.into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, bytes: &[u8]) {
        match target {
            "credentials" => fuzz_credentials(bytes),
            "signature" => fuzz_signature(bytes),
            "token" => fuzz_token(bytes),
            "ip_rules" => fuzz_ip_rules(bytes),
            "snapshot" => fuzz_snapshot(bytes),
            "permission_query" => fuzz_permission_query(bytes),
            "limits" => {
                let case = LimitsCase::read(bytes);
                assert_eq!(case.write(), bytes, "limits seed does not round-trip");
                assert_eq!(case.limits.validate(), Ok(()));
            }
            other => panic!("unknown target {other}"),
        }
    }

    #[test]
    fn seeds_run_clean() {
        for (target, name, bytes) in seeds() {
            eprintln!("{target}/{name}");
            run(target, &bytes);
        }
    }

    /// The committed corpus is what `seeds()` builds; regenerate it with
    /// `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.
    #[test]
    fn committed_seeds_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, bytes) in seeds() {
            let path = root.join(target).join(format!("seed-{name}"));
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(on_disk == bytes, "{} is missing or stale", path.display());
        }
    }

    #[test]
    fn arbitrary_bytes_run_clean() {
        let mut rng = DetRng::new(b"unit");
        for len in 0..300usize {
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            for target in ["credentials", "signature", "token", "ip_rules", "snapshot", "permission_query"] {
                run(target, &data);
            }
            let _ = LimitsCase::read(&data);
        }
    }

    #[test]
    fn input_reads_zeros_past_the_end() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0201);
        assert_eq!(i.u32(), 3);
        assert_eq!(i.short(), b"");
        assert!(i.is_empty());
    }

    #[test]
    fn det_rng_is_deterministic() {
        let p = Prefix::default_live();
        let a = Token::generate(&p, &mut DetRng::new(b"x"));
        let b = Token::generate(&p, &mut DetRng::new(b"x"));
        let c = Token::generate(&p, &mut DetRng::new(b"y"));
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }
}
