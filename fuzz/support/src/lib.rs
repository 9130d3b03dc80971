//! The code behind keyward's cargo-fuzz targets (`fuzz/fuzz_targets/`), kept
//! out of keyward-core so that none of it ships with the library: a
//! deterministic RNG ([`DetRng`]), case readers and seed writers, the
//! properties each target asserts, the reference model of the `limits`
//! target, and the seed corpus ([`seeds`]).
//!
//! Each target function takes the fuzzer's raw bytes, reads a structured case
//! out of them with [`Input`] (so every byte string is a complete case), runs
//! it against keyward-core's public API, and `assert!`s properties:
//! round-trips where a format is encoded and decoded, order and case
//! independence, redaction, and the promises of SPEC §3, §5 and §7. Nothing
//! here panics on any input except through those asserts. The functions are
//! plain Rust: the tests of this crate run them on stable, and a fixed crash
//! becomes a test by calling one on the minimised bytes.
//!
//! ```
//! // Any byte string is a complete case.
//! keyward_fuzz_support::limits(&[]);
//! keyward_fuzz_support::rfc3339(b"\0\0\0\0\0\0\0\0 2024-03-01T10:00:00Z");
//! for (target, run) in keyward_fuzz_support::TARGETS {
//!     run(target.as_bytes());
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod credentials;
mod input;
mod ip_rules;
mod limits;
mod permission_query;
mod rfc3339;
mod rng;
mod seeds;
mod signature;
mod snapshot;
mod token;

pub use credentials::credentials;
pub use input::{Input, Seed};
pub use ip_rules::ip_rules;
pub use limits::{LimitsCase, LimitsOp, OTHER_RATE_NAME, RATE_NAME, limits};
pub use permission_query::permission_query;
pub use rfc3339::rfc3339;
pub use rng::DetRng;
pub use seeds::seeds;
pub use signature::signature;
pub use snapshot::snapshot;
pub use token::token;

/// The snapshot key the `snapshot` target and its seeds use.
pub const FUZZ_SNAPSHOT_KEY: &[u8; 32] = b"keyward fuzz snapshot key, 32 B.";

/// A realistic "now" (2024-02-29T00:00:00Z) that cases count time from.
pub const FUZZ_EPOCH: u64 = 1_709_164_800_000;

/// A fuzz target: takes the fuzzer's bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` names its binaries.
pub const TARGETS: [(&str, Target); 8] = [
    ("credentials", credentials),
    ("signature", signature),
    ("token", token),
    ("ip_rules", ip_rules),
    ("snapshot", snapshot),
    ("limits", limits),
    ("permission_query", permission_query),
    ("rfc3339", rfc3339),
];
