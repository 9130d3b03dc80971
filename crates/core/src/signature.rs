//! The signed-request scheme (SPEC §5).
//!
//! `Signature = hex(HMAC-SHA256(key = api_secret, message = nonce ‖ user_id ‖ api_key))`.

use core::fmt;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::code::Code;
use crate::hex;
use crate::time::UnixMillis;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Longest accepted nonce (the `unique` policy takes any printable string).
pub const MAX_NONCE_LEN: usize = 64;

/// An API secret: the HMAC key of a signing identity.
///
/// `Debug`/`Display` are redacted; the bytes are zeroized on drop.
#[derive(Clone)]
pub struct ApiSecret(Zeroizing<Vec<u8>>);

impl ApiSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The secret bytes; hand them only to their owner.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiSecret(<redacted>)")
    }
}

impl fmt::Display for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn mac(secret: &[u8], nonce: &str, user_id: &str, api_key: &str) -> HmacSha256 {
    // Invariant: HMAC accepts keys of every length (longer ones are hashed),
    // so `new_from_slice` never fails for `Hmac<Sha256>`.
    #[allow(clippy::expect_used)]
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(nonce.as_bytes());
    m.update(user_id.as_bytes());
    m.update(api_key.as_bytes());
    m
}

/// Computes the signature bytes.
pub fn sign(secret: &ApiSecret, nonce: &str, user_id: &str, api_key: &str) -> [u8; 32] {
    mac(secret.expose(), nonce, user_id, api_key).finalize().into_bytes().into()
}

/// Computes the signature as lowercase hex.
pub fn sign_hex(secret: &ApiSecret, nonce: &str, user_id: &str, api_key: &str) -> String {
    hex::encode(&sign(secret, nonce, user_id, api_key))
}

/// Verifies a hex signature (either case) in constant time.
pub fn verify(secret: &ApiSecret, nonce: &str, user_id: &str, api_key: &str, signature_hex: &str) -> Result<(), Code> {
    let Some(given) = hex::decode32(signature_hex) else {
        return Err(Code::InvalidSignature);
    };
    mac(secret.expose(), nonce, user_id, api_key).verify_slice(&given).map_err(|_| Code::InvalidSignature)
}

/// Why a nonce is unacceptable before any policy is consulted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// Not a decimal u64 without sign or leading zeros.
    #[error("nonce must be a decimal integer from 0 to 18446744073709551615 without leading zeros")]
    NotDecimal,
    /// Empty, too long, or with characters outside visible ASCII.
    #[error("nonce must be 1 to {MAX_NONCE_LEN} visible ASCII characters")]
    Format,
}

/// Parses a decimal u64 nonce strictly: digits only, no sign, no leading zero
/// (except `0` itself), no overflow.
pub fn parse_decimal_nonce(text: &str) -> Result<u64, NonceError> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b.starts_with(b"0")) {
        return Err(NonceError::NotDecimal);
    }
    text.parse::<u64>().map_err(|_| NonceError::NotDecimal)
}

/// A key's replay-protection policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoncePolicy {
    /// Accept a decimal u64 nonce only if it is greater than the last accepted one.
    Monotonic,
    /// Accept any nonce not seen for this key within `window_ms`, remembering at
    /// most `capacity` nonces. For clients that send random nonces.
    Unique {
        /// How long a nonce is remembered.
        window_ms: u64,
        /// Most nonces remembered; the oldest is forgotten first. Keep it above
        /// the session mint rate × window so no nonce is forgotten early.
        capacity: u32,
    },
}

impl NoncePolicy {
    /// The `unique` policy with its defaults: 10 minutes, 4096 nonces.
    pub const UNIQUE_DEFAULT: Self = Self::Unique { window_ms: 600_000, capacity: 4096 };
}

/// Replay-protection state of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceState {
    /// Highest accepted decimal nonce (`monotonic`).
    pub high_water: Option<u64>,
    /// Recently accepted nonces with their time, oldest first (`unique`).
    pub seen: Vec<(String, UnixMillis)>,
}

impl NonceState {
    /// Checks `nonce` against the policy without recording it.
    pub fn check(&self, policy: NoncePolicy, nonce: &str, now: UnixMillis) -> Result<(), Code> {
        match policy {
            NoncePolicy::Monotonic => {
                let n = parse_decimal_nonce(nonce).map_err(|_| Code::Malformed)?;
                match self.high_water {
                    Some(h) if n <= h => Err(Code::NonceReused),
                    _ => Ok(()),
                }
            }
            NoncePolicy::Unique { window_ms, .. } => {
                if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b))
                {
                    return Err(Code::Malformed);
                }
                let seen = self.seen.iter().any(|(n, at)| n == nonce && now.until(at.plus(window_ms)) > 0);
                if seen { Err(Code::NonceReused) } else { Ok(()) }
            }
        }
    }

    /// Records an accepted nonce (call after [`NonceState::check`] passed).
    pub fn accept(&mut self, policy: NoncePolicy, nonce: &str, now: UnixMillis) {
        match policy {
            NoncePolicy::Monotonic => {
                if let Ok(n) = parse_decimal_nonce(nonce) {
                    self.high_water = Some(self.high_water.map_or(n, |h| h.max(n)));
                }
            }
            NoncePolicy::Unique { window_ms, capacity } => {
                self.seen.retain(|(_, at)| now.until(at.plus(window_ms)) > 0);
                while self.seen.len() >= capacity.max(1) as usize {
                    self.seen.remove(0);
                }
                self.seen.push((nonce.to_owned(), now));
            }
        }
    }

    /// Checks and records in one step.
    pub fn check_and_accept(&mut self, policy: NoncePolicy, nonce: &str, now: UnixMillis) -> Result<(), Code> {
        self.check(policy, nonce, now)?;
        self.accept(policy, nonce, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "1796148fe957facdc5495abf6dddf5f8c635a071f8438f5aeccb1552d98b4743";

    #[test]
    fn engine_vector() {
        let secret = ApiSecret::new(b"engine-test-secret".to_vec());
        let sig = sign_hex(&secret, "2247733562", "96", "28c68ac3fcfafc3d4e8d653fe57e5baf");
        assert_eq!(sig, VECTOR);
        assert_eq!(verify(&secret, "2247733562", "96", "28c68ac3fcfafc3d4e8d653fe57e5baf", VECTOR), Ok(()));
        let upper = VECTOR.to_uppercase();
        assert_eq!(verify(&secret, "2247733562", "96", "28c68ac3fcfafc3d4e8d653fe57e5baf", &upper), Ok(()));
        assert_eq!(
            verify(&secret, "2247733563", "96", "28c68ac3fcfafc3d4e8d653fe57e5baf", VECTOR),
            Err(Code::InvalidSignature)
        );
        assert_eq!(verify(&secret, "2247733562", "96", "x", &VECTOR[..63]), Err(Code::InvalidSignature));
        assert_eq!(verify(&secret, "2247733562", "96", "x", "zz"), Err(Code::InvalidSignature));
    }

    /// RFC 4231 test cases 1–3: the HMAC under the scheme is the standard one.
    #[test]
    fn rfc4231_cases_1_to_3() {
        fn hmac_hex(key: &[u8], data: &[u8]) -> String {
            let mut m = HmacSha256::new_from_slice(key).unwrap();
            m.update(data);
            hex::encode(&m.finalize().into_bytes())
        }
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_hex(&[0xaa; 20], &[0xdd; 50]),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        );
        // The same through the scheme: nonce ‖ user ‖ key concatenated.
        let s = ApiSecret::new(b"Jefe".to_vec());
        assert_eq!(
            sign_hex(&s, "what do ya ", "want for ", "nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn decimal_nonces() {
        assert_eq!(parse_decimal_nonce("0"), Ok(0));
        assert_eq!(parse_decimal_nonce("18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "01", "+1", "-1", "1.0", " 1", "18446744073709551616", "99999999999999999999", "1a"] {
            assert_eq!(parse_decimal_nonce(bad), Err(NonceError::NotDecimal), "{bad:?}");
        }
    }

    #[test]
    fn monotonic_policy() {
        let mut s = NonceState::default();
        let p = NoncePolicy::Monotonic;
        let t = UnixMillis(0);
        assert_eq!(s.check_and_accept(p, "5", t), Ok(()));
        assert_eq!(s.check_and_accept(p, "5", t), Err(Code::NonceReused));
        assert_eq!(s.check_and_accept(p, "4", t), Err(Code::NonceReused));
        assert_eq!(s.check_and_accept(p, "6", t), Ok(()));
        assert_eq!(s.check_and_accept(p, "abc", t), Err(Code::Malformed));
        assert_eq!(s.high_water, Some(6));
    }

    #[test]
    fn unique_policy_window_and_capacity() {
        let p = NoncePolicy::Unique { window_ms: 1_000, capacity: 2 };
        let mut s = NonceState::default();
        assert_eq!(s.check_and_accept(p, "a1", UnixMillis(0)), Ok(()));
        assert_eq!(s.check_and_accept(p, "a1", UnixMillis(999)), Err(Code::NonceReused));
        assert_eq!(s.check_and_accept(p, "a1", UnixMillis(1_000)), Ok(()), "window passed");
        assert_eq!(s.check_and_accept(p, "b2", UnixMillis(1_001)), Ok(()));
        assert_eq!(s.check_and_accept(p, "c3", UnixMillis(1_002)), Ok(()));
        assert_eq!(s.seen.len(), 2, "bounded");
        assert_eq!(s.check_and_accept(p, "b2", UnixMillis(1_003)), Err(Code::NonceReused));
        assert_eq!(s.check_and_accept(p, "with space", UnixMillis(1_003)), Err(Code::Malformed));
    }

    #[test]
    fn secret_redacted() {
        let s = ApiSecret::new(b"x".to_vec());
        assert_eq!(format!("{s:?} {s}"), "ApiSecret(<redacted>) <redacted>");
    }
}
