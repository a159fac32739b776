//! The data plane of berth.
//!
//! Today: the local content-addressed blob store ([`store`]). Peer-to-peer
//! replication over QUIC builds on it (the replication issue).
//!
//! Invariant: a file under `sha256/ab/<hex>` always holds exactly the bytes
//! whose digest is its name. Writes go to a staging file, are hashed while
//! streaming, fsynced, verified and only then renamed into place; a crash
//! or a failed check leaves at most a staging file, removed on restart.

pub mod store;

pub use store::{BlobError, BlobRange, BlobReader, BlobStore, StagingBlob};
