//! The berth node: wires the metadata plane (`berth-raft`) and the HTTP edge
//! (`berth-gateway`), owns the cluster's certificates and join protocol, and
//! provides the `berth` command.
//!
//! Layout:
//! - [`config`]: `berth.toml` and the data directory layout;
//! - [`pki`]: the cluster CA, node certificates, pinned first contact;
//! - [`join`]: join tokens and the join handshake (both sides);
//! - [`runtime`]: `cluster init`, `cluster join`, running a node;
//! - [`auth`]: who is asking (users in the metadata, the operator token);
//! - [`backend`]: the gateway backend (admin API) over the metadata;
//! - [`registry`], [`manifest`], [`uploads`]: the OCI distribution API's rules;
//! - [`client`]: the CLI's admin API client;
//! - [`gc`]: online garbage collection of blobs;
//! - [`dev`]: `berth dev`, a whole local cluster in one process;
//! - [`drill`]: `berth drill`, rehearsing failures on a live cluster.

pub mod audit;
pub mod auth;
pub mod backend;
pub mod ca;
pub mod client;
pub mod cluster_view;
pub mod config;
pub mod dev;
pub mod drill;
pub mod gc;
pub mod identity;
pub mod join;
pub mod jwt;
pub mod manifest;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod tls;
pub mod uploads;
pub mod write_gate;

/// Installs the one TLS crypto provider (ring) for the process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
