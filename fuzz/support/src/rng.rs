//! A deterministic RNG for generating tokens from fuzzer bytes.
//!
//! It lives here, not in keyward-core, so that no build of the library offers
//! a `CryptoRng` whose output anyone can predict.

use std::convert::Infallible;

use keyward_core::rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};

/// SHA-256 in counter mode over a seed: deterministic, so a token generated
/// from fuzzer bytes is reproducible.
///
/// It claims [`TryCryptoRng`] only so [`keyward_core::Token::generate`] accepts it; its
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

    /// Fills `dst` with the next bytes of output.
    pub fn fill(&mut self, dst: &mut [u8]) {
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

#[cfg(test)]
mod tests {
    use keyward_core::{Prefix, Token};

    use super::*;

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
