//! The OCI distribution API's rules over the metadata and the blob store.
//!
//! - [`api`]: the gateway's `Registry`: authorization, blobs, manifests,
//!   tags, referrers, catalog;
//! - [`uploads`]: upload sessions, owned by the node that took the `POST`;
//! - [`manifest`]: what a manifest says (media types, the blobs and
//!   manifests it names, its subject);
//! - [`gc`]: online garbage collection of blobs no manifest references;
//! - [`mirror`]: repository mirroring (configuration rules, sealing, sync);
//! - [`proxycache`]: proxy-cache organizations' fill from the upstream;
//! - [`lifecycle`]: the leader's pass that closes expired tag rows.

pub mod api;
pub mod gc;
pub mod lifecycle;
pub mod manifest;
pub mod mirror;
pub mod proxycache;
pub mod uploads;
