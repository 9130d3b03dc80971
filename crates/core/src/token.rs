//! API key tokens (SPEC §3): generation, parsing, hashing.
//!
//! A token is `<prefix>_<body>`. The body is 30 base62 characters drawn
//! uniformly from the caller's CSPRNG (30 × log2(62) ≈ 178.6 bits) followed by
//! six base62 characters of the CRC32 of everything before them, so a typo or
//! a truncated paste is refused before any lookup.

use core::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::base62;
use crate::hex;

/// Random base62 characters in a token body.
pub const RANDOM_CHARS: usize = 30;
/// Base62 characters of the CRC32 checksum.
pub const CHECKSUM_CHARS: usize = 6;
/// Characters in a token body (random part + checksum).
pub const BODY_CHARS: usize = RANDOM_CHARS + CHECKSUM_CHARS;
/// Longest accepted prefix.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest accepted token of any kind, native or foreign.
pub const MAX_TOKEN_LEN: usize = 512;
/// Characters of the body shown in [`Token::start`].
pub const START_CHARS: usize = 4;

/// Why a string is not a token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The string is empty.
    #[error("token is empty")]
    Empty,
    /// The string is longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// No `_` separates a prefix from the body.
    #[error("token has no prefix separator")]
    MissingSeparator,
    /// The prefix is not `[a-z0-9]+(_[a-z0-9]+)*` of at most 16 characters.
    #[error("token prefix is invalid")]
    BadPrefix,
    /// The body is not exactly 36 base62 characters.
    #[error("token body must be {BODY_CHARS} base62 characters")]
    BadBody,
    /// The checksum does not match.
    #[error("token checksum does not match")]
    BadChecksum,
    /// A foreign token holds a byte outside visible ASCII.
    #[error("token contains a character outside visible ASCII")]
    BadCharacter,
}

/// A validated key prefix such as `kw_live` or `sk_test`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix(String);

impl Prefix {
    /// The default prefix, `kw_live`.
    pub fn default_live() -> Self {
        Self("kw_live".into())
    }

    /// Parses a prefix: `[a-z0-9]+(_[a-z0-9]+)*`, at most 16 characters.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if valid_prefix(text.as_bytes()) { Ok(Self(text.to_owned())) } else { Err(TokenError::BadPrefix) }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Prefix {
    type Error = TokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Prefix> for String {
    fn from(value: Prefix) -> Self {
        value.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_prefix(p: &[u8]) -> bool {
    if p.is_empty() || p.len() > MAX_PREFIX_LEN {
        return false;
    }
    let mut prev_underscore = true; // forbids a leading `_`
    for &b in p {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_underscore = false,
            b'_' if !prev_underscore => prev_underscore = true,
            _ => return false,
        }
    }
    !prev_underscore
}

fn checksum(head: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut out = [0u8; CHECKSUM_CHARS];
    base62::encode_into(u128::from(crc32fast::hash(head)), &mut out);
    out
}

/// Base62 digit values by byte; 0xFF for every other byte.
const DIGIT: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 256 {
        if let Some(d) = base62::digit(i as u8) {
            // In bounds: `i < 256` is the loop condition (and this runs at
            // compile time, so a bad index would fail the build, not a call).
            #[allow(clippy::indexing_slicing)]
            let slot = &mut t[i];
            *slot = d;
        }
        i += 1;
    }
    t
};

/// Every byte of `body` is a base62 digit, tested eight bytes at a time
/// (the last word overlaps the one before).
fn all_base62(body: &[u8; BODY_CHARS]) -> bool {
    // The whole words cover all but `BODY_CHARS % 8` bytes; the last eight
    // bytes cover the rest.
    const { assert!(BODY_CHARS >= 8) };
    let (words, _) = body.as_chunks::<8>();
    words.iter().chain(body.last_chunk::<8>()).all(|&w| word_is_base62(u64::from_le_bytes(w)))
}

/// Whether all eight bytes of `w` are in `0-9A-Za-z`.
///
/// Per byte, `b + (0x80 - lo)` has its high bit set exactly when `b >= lo`,
/// and `b + (0x7F - hi)` exactly when `b > hi`; with every byte below 0x80
/// (checked first) no sum carries into the next byte.
const fn word_is_base62(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const fn in_range(w: u64, lo: u8, hi: u8) -> u64 {
        let at_least_lo = w + ONES * (0x80 - lo as u64);
        let above_hi = w + ONES * (0x7F - hi as u64);
        at_least_lo & !above_hi & HIGH
    }
    w & HIGH == 0 && (in_range(w, b'0', b'9') | in_range(w, b'A', b'Z') | in_range(w, b'a', b'z')) == HIGH
}

/// Checks that `raw` is a well-formed native token (prefix, body, checksum)
/// without copying it. This is the whole `MALFORMED` test of the hot path.
#[inline]
pub fn check(raw: &str) -> Result<(), TokenError> {
    let b = raw.as_bytes();
    // Fast path for the one shape a token can have: `_` exactly 37 bytes from
    // the end, a valid prefix before it, 36 base62 digits after it.
    if b.len() > BODY_CHARS + 1
        && b.len() <= MAX_PREFIX_LEN + 1 + BODY_CHARS
        && let Some((head, body)) = b.split_last_chunk::<BODY_CHARS>()
        && let Some((&b'_', prefix)) = head.split_last()
        && valid_prefix(prefix)
        && all_base62(body)
        && let Some((summed, sum)) = b.split_last_chunk::<CHECKSUM_CHARS>()
    {
        let mut given = 0u64;
        for &c in sum {
            // In bounds: a `u8` indexes a 256-entry table.
            #[allow(clippy::indexing_slicing)]
            let d = DIGIT[usize::from(c)];
            given = given * 62 + u64::from(d);
        }
        // Comparing as numbers is fine here: the checksum is not secret
        // (its failure is reported as MALFORMED anyway).
        return if given == u64::from(crc32fast::hash(summed)) { Ok(()) } else { Err(TokenError::BadChecksum) };
    }
    check_slow(raw)
}

/// The general check, naming exactly what is wrong.
fn check_slow(raw: &str) -> Result<(), TokenError> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Err(TokenError::Empty);
    }
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut halves = bytes.rsplitn(2, |&b| b == b'_');
    let (Some(body), Some(prefix)) = (halves.next(), halves.next()) else {
        return Err(TokenError::MissingSeparator);
    };
    if !valid_prefix(prefix) {
        return Err(TokenError::BadPrefix);
    }
    if body.len() != BODY_CHARS || !body.iter().all(|&b| base62::digit(b).is_some()) {
        return Err(TokenError::BadBody);
    }
    // The body is whole, so the checksum's characters are there to split off.
    let (summed, given) = bytes.split_last_chunk::<CHECKSUM_CHARS>().ok_or(TokenError::BadBody)?;
    if bool::from(checksum(summed).ct_eq(given)) { Ok(()) } else { Err(TokenError::BadChecksum) }
}

/// Checks a foreign token (one issued elsewhere and imported by its hash):
/// 1–512 bytes of visible ASCII. No checksum is involved.
pub fn check_foreign(raw: &str) -> Result<(), TokenError> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Err(TokenError::Empty);
    }
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    if bytes.iter().all(|b| (0x21..=0x7e).contains(b)) { Ok(()) } else { Err(TokenError::BadCharacter) }
}

/// The secret a client presents. Shown once, never stored.
///
/// `Debug` and `Display` print `Token(<redacted>)`; the text is zeroized
/// when the value is dropped. [`Token::expose`] is the one way to read it.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Generates a fresh token under `prefix` from the caller's CSPRNG.
    pub fn generate<R: CryptoRng + ?Sized>(prefix: &Prefix, rng: &mut R) -> Self {
        let p = prefix.as_str();
        let mut text = Zeroizing::new(String::with_capacity(p.len() + 1 + BODY_CHARS));
        text.push_str(p);
        text.push('_');
        let mut filled = 0;
        let mut pool = Zeroizing::new([0u8; 64]);
        while filled < RANDOM_CHARS {
            rng.fill_bytes(pool.as_mut());
            for &b in pool.iter() {
                // Rejection sampling keeps every character uniform: 62 of the
                // 64 six-bit values are used, the other two are redrawn.
                // `get` refuses exactly those two (62 and 63).
                if let Some(&c) = base62::ALPHABET.get(usize::from(b & 63))
                    && filled < RANDOM_CHARS
                {
                    text.push(char::from(c));
                    filled += 1;
                }
            }
        }
        let sum = checksum(text.as_bytes());
        for b in sum {
            text.push(char::from(b));
        }
        Self(text)
    }

    /// Parses a native token, refusing bad prefix, charset, length or checksum.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        check(raw)?;
        Ok(Self(Zeroizing::new(raw.to_owned())))
    }

    /// Wraps a foreign token (see [`check_foreign`]) for hashing.
    pub fn parse_foreign(raw: &str) -> Result<Self, TokenError> {
        check_foreign(raw)?;
        Ok(Self(Zeroizing::new(raw.to_owned())))
    }

    /// The secret text. Call only to hand it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the whole token string.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The displayable start: prefix, `_` and the first four body characters.
    pub fn start(&self) -> String {
        start_of(&self.0)
    }
}

/// The displayable start of a token text (prefix + first four body characters).
pub fn start_of(raw: &str) -> String {
    match raw.rfind('_') {
        Some(sep) => raw.chars().take(sep + 1 + START_CHARS).collect(),
        None => raw.chars().take(START_CHARS).collect(),
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// SHA-256 of a token: what the database keeps. Public, but still compared in
/// constant time.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a token text (native or foreign).
    #[inline]
    pub fn of(raw: &str) -> Self {
        Self(Sha256::digest(raw.as_bytes()).into())
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode32(text).map(Self)
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyHash {}

impl core::hash::Hash for KeyHash {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn generated_tokens_parse() {
        let prefix = Prefix::parse("sk_live").unwrap();
        let mut rng = rng();
        for _ in 0..200 {
            let t = Token::generate(&prefix, &mut rng);
            let s = t.expose();
            assert_eq!(s.len(), "sk_live_".len() + BODY_CHARS);
            assert!(s.starts_with("sk_live_"));
            assert_eq!(check(s), Ok(()));
            assert_eq!(t.start(), s[..12].to_string());
        }
    }

    #[test]
    fn checksum_is_crc32_of_head() {
        let head = "kw_live_000000000000000000000000000000";
        let mut token = head.to_string();
        let mut sum = [0u8; 6];
        base62::encode_into(u128::from(crc32fast::hash(head.as_bytes())), &mut sum);
        token.push_str(core::str::from_utf8(&sum).unwrap());
        assert_eq!(check(&token), Ok(()));
    }

    #[test]
    fn rejects_each_defect() {
        let t = Token::generate(&Prefix::default_live(), &mut rng());
        let good = t.expose().to_string();
        assert_eq!(check(""), Err(TokenError::Empty));
        assert_eq!(check(&"a".repeat(600)), Err(TokenError::TooLong));
        assert_eq!(check("nounderscore"), Err(TokenError::MissingSeparator));
        assert_eq!(check(&good.replacen("kw", "KW", 1)), Err(TokenError::BadPrefix));
        assert_eq!(check(&format!("_{}", &good[8..])), Err(TokenError::BadPrefix));
        assert_eq!(check(&format!("kw__live_{}", &good[8..])), Err(TokenError::BadPrefix));
        assert_eq!(check(&good[..good.len() - 1]), Err(TokenError::BadBody));
        let mut bad_char = good.clone();
        bad_char.replace_range(10..11, "-");
        assert_eq!(check(&bad_char), Err(TokenError::BadBody));
        // Flip one random character to another base62 digit.
        let mut flipped = good.clone().into_bytes();
        flipped[12] = if flipped[12] == b'a' { b'b' } else { b'a' };
        assert_eq!(check(core::str::from_utf8(&flipped).unwrap()), Err(TokenError::BadChecksum));
        assert_eq!(Token::parse(&good).unwrap().hash(), t.hash());
    }

    /// The word test agrees with the digit table for every byte value in
    /// every position, including the values around each range's ends.
    #[test]
    fn word_test_matches_digit_table() {
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut w = *b"aZ09zA9a";
                w[pos] = b;
                assert_eq!(word_is_base62(u64::from_le_bytes(w)), base62::digit(b).is_some(), "byte {b:#04x} at {pos}");
            }
        }
        let mut body = *b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        assert!(all_base62(&body));
        for i in 0..body.len() {
            let keep = body[i];
            body[i] = b'-';
            assert!(!all_base62(&body), "defect at {i}");
            body[i] = keep;
        }
    }

    /// The fast path and the general check agree on every input.
    #[test]
    fn fast_path_matches_general_check() {
        let mut rng = rng();
        for p in ["kw_live", "a", "abcdefghijklmnop", "sk_test_x1"] {
            let t = Token::generate(&Prefix::parse(p).unwrap(), &mut rng);
            let good = t.expose().as_bytes().to_vec();
            for i in 0..good.len() {
                for c in [b'0', b'z', b'_', b'-', b'A', 0xC3] {
                    let mut m = good.clone();
                    m[i] = c;
                    if let Ok(s) = core::str::from_utf8(&m) {
                        assert_eq!(check(s), check_slow(s), "{s:?}");
                    }
                }
            }
            let s = t.expose();
            assert_eq!(check(s), Ok(()));
            for cut in 0..s.len() {
                assert_eq!(check(&s[..cut]), check_slow(&s[..cut]));
                assert_eq!(check(&s[cut..]), check_slow(&s[cut..]));
            }
        }
    }

    #[test]
    fn prefix_rules() {
        for ok in ["kw_live", "sk", "a1_b2_c3", "abcdefghijklmnop"] {
            assert!(Prefix::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_a", "a_", "a__b", "A", "abcdefghijklmnopq", "a-b", "é"] {
            assert_eq!(Prefix::parse(bad), Err(TokenError::BadPrefix), "{bad}");
        }
    }

    #[test]
    fn foreign_tokens() {
        assert_eq!(check_foreign("sk_live_51H8abc"), Ok(()));
        assert_eq!(check_foreign("has space"), Err(TokenError::BadCharacter));
        assert_eq!(check_foreign("tab\there"), Err(TokenError::BadCharacter));
        assert_eq!(check_foreign(""), Err(TokenError::Empty));
        let f = Token::parse_foreign("legacy-key-123").unwrap();
        assert_eq!(f.hash(), KeyHash::of("legacy-key-123"));
    }

    #[test]
    fn secrets_are_redacted() {
        let t = Token::generate(&Prefix::default_live(), &mut rng());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(format!("{t}"), "<redacted>");
    }

    #[test]
    fn fips_180_2_vectors() {
        assert_eq!(KeyHash::of("abc").to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(KeyHash::of("").to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let h = KeyHash::of("abc");
        assert_eq!(KeyHash::from_hex(&h.to_hex().to_uppercase()), Some(h));
    }
}
