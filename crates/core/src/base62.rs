//! Base62 with the alphabet `0-9A-Za-z`, fixed-width, big-endian.

pub(crate) const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Value of one base62 digit, or `None` for any other byte.
#[inline]
pub(crate) const fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'a'..=b'z' => Some(b - b'a' + 36),
        _ => None,
    }
}

/// Writes `value` as exactly `out.len()` digits. Higher digits that do not fit
/// are dropped, so callers size `out` for the largest value they encode.
pub(crate) fn encode_into(mut value: u128, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        // In bounds: `value % 62` is below `ALPHABET.len()`.
        #[allow(clippy::indexing_slicing)]
        let c = ALPHABET[(value % 62) as usize];
        *slot = c;
        value /= 62;
    }
}

/// Reads a fixed-width number; `None` on a non-digit or overflow.
pub(crate) fn decode(text: &[u8]) -> Option<u128> {
    let mut value: u128 = 0;
    for &b in text {
        value = value.checked_mul(62)?.checked_add(u128::from(digit(b)?))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_round_trip() {
        let mut buf = [0u8; 6];
        encode_into(0xCBF4_3926, &mut buf);
        assert_eq!(&buf, b"3jZRME");
        assert_eq!(decode(&buf), Some(0xCBF4_3926));
        encode_into(0, &mut buf);
        assert_eq!(&buf, b"000000");
        encode_into(u128::from(u32::MAX), &mut buf);
        assert_eq!(&buf, b"4gfFC3");
    }

    #[test]
    fn rejects_non_digits() {
        assert_eq!(decode(b"ab_c"), None);
        assert_eq!(decode(&[b'z'; 30]), None, "overflows u128");
    }
}
