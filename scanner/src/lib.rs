//! berth's vulnerability scanner: everything that needs no cluster.
//!
//! - [`index`] reads one layer's tar stream (plain, gzip or zstd) under
//!   [`index::Limits`] and finds the distribution and the installed
//!   packages (dpkg, apk, rpm's sqlite database read by [`rpmdb`], Python
//!   dist-info/egg-info, Go binaries' module build info, read by [`gobin`]); [`index::merge`]
//!   folds the layers of an image (whiteouts honoured) into one view in
//!   which each package names the layer that added it.
//! - [`feed`] parses advisory feeds in their native formats (the Debian
//!   security tracker's JSON, Alpine's secdb, OSV records) into [`feed::Advisory`] rows.
//! - [`version`] holds each ecosystem's own version ordering.
//! - [`matcher`] joins an image's packages with the advisories, and
//!   [`quay`] renders the result in Quay's security API shape;
//!   [`sbom`] writes an image's packages as a CycloneDX document.
//!
//! Invariants: nothing here touches the network, Raft or the blob store;
//! every input is untrusted and bounded (entry count, bytes, time), and a
//! bad layer is an [`Error`], never a panic.

pub mod feed;
pub mod gobin;
pub mod index;
pub mod matcher;
pub mod quay;
pub mod rpmdb;
pub mod sbom;
pub mod version;

/// Bumped whenever the index of a layer would come out differently, so a
/// stored index from an older indexer can be recomputed.
pub const INDEXER_VERSION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("layer is not a readable tar stream: {0}")]
    Corrupt(String),
    #[error("layer refused: {0}")]
    Refused(String),
    #[error("feed could not be read: {0}")]
    Feed(String),
}

pub type Result<T> = std::result::Result<T, Error>;
