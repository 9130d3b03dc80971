//! Randomness for tokens and ids: the operating system's CSPRNG, directly.

use rand::rngs::SysRng;
use rand_core::UnwrapErr;

/// The OS CSPRNG. `getrandom` failing on a supported OS means the system is
/// unusable for cryptography; that is the one case where this panics.
pub(crate) fn os_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}
