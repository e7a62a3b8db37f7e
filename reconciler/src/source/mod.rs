//! The source stage (issue 3): fetch a GitRepository with gix, turn the fetched tree into a
//! deterministic, content-addressed tar.gz artifact, keep the last few in storage and serve them
//! over HTTP.
//!
//! - [`artifact`]: the artifact format, its writer and [`artifact::unpack_verified`] for consumers;
//! - [`storage`]: content-addressed files on disk, GC.

pub mod artifact;
pub mod storage;
