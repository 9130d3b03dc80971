//! The `token` target: generating, parsing and checking tokens.

use keyward_core::token::{self, START_CHARS, TokenError, check_foreign, start_of};
use keyward_core::{KeyHash, Prefix, Token};

use crate::input::{Input, lossy};
use crate::rng::DetRng;

/// Characters after `<prefix>_`: 30 random base62 characters and a 6-character
/// checksum, as `TokenError::BadBody` and the README's "Tokens" state.
pub(crate) const BODY_CHARS: usize = 36;
/// Longest prefix, as `Prefix::parse` documents.
pub(crate) const MAX_PREFIX_LEN: usize = 16;

/// `token` target: token generation, parsing and checking.
///
/// Input: a prefix, a 32-byte RNG seed, a position and a byte, then arbitrary
/// text. A token generated from the seed always checks and parses, hashes
/// alike, shows its start, and is refused after any single-byte change,
/// truncation or extension. The arbitrary text goes through `check`,
/// `Token::parse`, `Token::parse_foreign` and `start_of`, which must agree.
pub fn token(data: &[u8]) {
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
    assert_eq!(check_foreign(text), Ok(()));
    let parsed = Token::parse(text);
    assert_eq!(parsed.as_ref().map(Token::hash), Ok(t.hash()));
    assert_eq!(t.hash(), KeyHash::of(text));
    assert_eq!(KeyHash::from_hex(&t.hash().to_hex()), Some(t.hash()));
    assert_eq!(KeyHash::from_hex(&t.hash().to_hex().to_ascii_uppercase()), Some(t.hash()));
    assert_eq!(t.start(), start_of(text));
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
    let foreign = check_foreign(&raw);
    assert_eq!(Token::parse_foreign(&raw).map(|t| t.hash()), foreign.clone().map(|()| KeyHash::of(&raw)));
    if native.is_ok() {
        assert!(raw.len() <= MAX_PREFIX_LEN + 1 + BODY_CHARS);
        assert_eq!(foreign, Ok(()), "a native token is a valid foreign one");
    }
    assert!(raw.starts_with(&start_of(&raw)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers the target asserts are the ones keyward-core enforces.
    #[test]
    fn documented_lengths() {
        assert!(Prefix::parse(&"a".repeat(MAX_PREFIX_LEN)).is_ok());
        assert_eq!(Prefix::parse(&"a".repeat(MAX_PREFIX_LEN + 1)), Err(TokenError::BadPrefix));
        let t = Token::generate(&Prefix::default_live(), &mut DetRng::new(b"len"));
        assert_eq!(t.expose().len(), "kw_live_".len() + BODY_CHARS);
    }
}
