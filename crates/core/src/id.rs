//! Public identifiers: `key_…` ([`KeyId`]) and `ws_…` ([`WorkspaceId`]).

use core::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::base62;
use crate::time::UnixMillis;

/// The latest time an id's 48-bit clock holds (the year 10889).
const MAX_ID_MS: u64 = (1 << 48) - 1;

/// Base62 characters of a 128-bit id.
const ID_CHARS: usize = 22;

/// Why an id string is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id does not start with the expected prefix.
    #[error("id must start with `{0}`")]
    WrongPrefix(&'static str),
    /// The part after the prefix is not 22 base62 characters.
    #[error("id body must be {ID_CHARS} base62 characters")]
    BadBody,
}

macro_rules! public_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// Text that starts every id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// A fresh id that sorts after the ids made before `now`: its
            /// first 6 bytes are `now` in Unix milliseconds (big-endian), the
            /// other 10 random (80 bits, as in a UUIDv7). A store's b-tree
            /// then takes new ids at its end instead of all over it, and
            /// listing by id lists in order of creation. The time is no
            /// secret: ids are public and so is when a key was created.
            pub fn generate_at<R: CryptoRng + ?Sized>(now: UnixMillis, rng: &mut R) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                let ms = now.get().min(MAX_ID_MS).to_be_bytes();
                if let (Some(head), Some(time)) = (bytes.get_mut(..6), ms.get(2..)) {
                    head.copy_from_slice(time);
                }
                Self(bytes)
            }

            /// Parses the text form, e.g. `key_3hX9…`.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                let body = text.strip_prefix($prefix).ok_or(IdError::WrongPrefix($prefix))?;
                if body.len() != ID_CHARS {
                    return Err(IdError::BadBody);
                }
                let value = base62::decode(body.as_bytes()).ok_or(IdError::BadBody)?;
                Ok(Self(value.to_be_bytes()))
            }

            /// The raw 16 bytes (the redb key).
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; ID_CHARS];
                base62::encode_into(u128::from_be_bytes(self.0), &mut buf);
                f.write_str($prefix)?;
                // The alphabet is ASCII, so every byte is a char.
                for b in buf {
                    fmt::Write::write_char(f, char::from(b))?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

public_id!(
    /// Public id of a key (`key_` + 22 base62 characters).
    KeyId,
    "key_"
);
public_id!(
    /// Public id of a workspace (`ws_` + 22 base62 characters).
    WorkspaceId,
    "ws_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        for bytes in [[0u8; 16], [255u8; 16], *b"0123456789abcdef"] {
            let id = KeyId(bytes);
            let text = id.to_string();
            assert_eq!(text.len(), 4 + 22);
            assert_eq!(KeyId::parse(&text), Ok(id));
        }
        assert_eq!(KeyId(u128::MAX.to_be_bytes()).to_string(), "key_7n42DGM5Tflk9n8mt7Fhc7");
        assert_eq!(KeyId::parse("ws_0000000000000000000000"), Err(IdError::WrongPrefix("key_")));
        assert_eq!(KeyId::parse("key_000"), Err(IdError::BadBody));
        assert_eq!(KeyId::parse("key_zzzzzzzzzzzzzzzzzzzzzz"), Err(IdError::BadBody));
        assert!(WorkspaceId::parse("ws_0000000000000000000001").is_ok());
    }

    #[test]
    fn ids_made_at_a_time_start_with_it_and_sort_by_it() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = KeyId::generate_at(UnixMillis(0x0102_0304_0506), &mut rng);
        assert_eq!(id.0[..6], [1, 2, 3, 4, 5, 6]);
        // The other 80 bits are the generator's.
        let mut again = rand::rngs::StdRng::seed_from_u64(7);
        let plain = KeyId::generate(&mut again);
        assert_eq!(id.0[6..], plain.0[6..]);
        // Later ids sort after earlier ones, whatever their random part.
        let mut ids: Vec<KeyId> = (0..100).map(|i| KeyId::generate_at(UnixMillis(1_000 + i), &mut rng)).collect();
        let made = ids.clone();
        ids.sort();
        assert_eq!(ids, made);
        // Past the 48-bit clock, the clock stays at its end.
        let last = KeyId::generate_at(UnixMillis(u64::MAX), &mut rng);
        assert_eq!(last.0[..6], [0xff; 6]);
    }
}
