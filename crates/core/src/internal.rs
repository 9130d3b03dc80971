//! Entry points for fuzz targets and benchmarks. Not part of the stable API:
//! anything here may change without notice.

pub use crate::snapshot::decode_unauthenticated as decode_snapshot_unauthenticated;
pub use crate::snapshot::{FORMAT_VERSION as SNAPSHOT_FORMAT_VERSION, MAGIC as SNAPSHOT_MAGIC};
