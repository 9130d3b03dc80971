//! Lowercase hex encoding and strict decoding.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        // In bounds: both nibbles are below 16, `DIGITS.len()`.
        #[allow(clippy::indexing_slicing)]
        let (hi, lo) = (DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]);
        out.push(char::from(hi));
        out.push(char::from(lo));
    }
    out
}

#[inline]
const fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly 64 hex characters (either case) into 32 bytes.
pub(crate) fn decode32(text: &str) -> Option<[u8; 32]> {
    let t: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let (pairs, _) = t.as_chunks::<2>();
    for (slot, &[hi, lo]) in out.iter_mut().zip(pairs) {
        *slot = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}
