//! Hex: lowercase encoding, strict decoding of either case. The one hex
//! codec of keyward (token hashes, signatures, secret keys).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
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
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    let t: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let (pairs, _) = t.as_chunks::<2>();
    for (slot, &[hi, lo]) in out.iter_mut().zip(pairs) {
        *slot = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

/// Decodes hex of either case (an even number of digits, nothing else).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let (pairs, rest) = text.as_bytes().as_chunks::<2>();
    if !rest.is_empty() {
        return None;
    }
    pairs.iter().map(|&[hi, lo]| Some((nibble(hi)? << 4) | nibble(lo)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = encode(&bytes);
        assert_eq!(&text[..8], "00010203");
        assert_eq!(&text[text.len() - 4..], "feff");
        assert_eq!(decode(&text), Some(bytes.clone()));
        assert_eq!(decode(&text.to_uppercase()), Some(bytes));
        assert_eq!(decode(""), Some(Vec::new()));
        for bad in ["0", "abc", "0g", " 00", "00 ", "+1", "é0"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        assert_eq!(decode32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode32(&"ab".repeat(31)), None);
    }
}
