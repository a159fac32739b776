//! The berth node: the composition root that wires the metadata plane
//! (`berth-raft`), the blob plane (`berth-replication`) and the HTTP edge
//! (`berth-gateway`) into one running node, and the node's own services.
//!
//! The folders are the map (no module cycle: `tests/structure.rs`):
//! - [`util`], [`errors`], [`config`]: small shared functions, the one
//!   mapping of metadata errors to API errors, `berth.toml` and the data
//!   directory's layout;
//! - [`identity`]: who is asking and what they may do (authentication,
//!   registry tokens, policy, the usage log) and the identity API;
//! - [`registry`]: the OCI distribution API's rules (uploads, manifests,
//!   garbage collection) over the metadata and the blob store;
//! - [`cluster`]: being a member (join tokens and joins, the cluster CA and
//!   its custody, peer and HTTPS certificates, the leader's rules for
//!   writes, the admin API);
//! - [`notify`]: repository notifications, delivered from the replicated
//!   outbox; [`scan`]: the scan worker over the `berth-scanner` crate;
//! - [`metrics`], the counters and gauges of `/metrics`;
//! - [`mirror_config`]: what a repository mirror's configuration may say
//!   (the sync itself is `registry::mirror`);
//! - [`runtime`]: `cluster init`, `cluster join` and running a node, which
//!   puts all of the above together; [`dev`]: `berth dev`.
//!
//! The `berth` command line (`src/cli/`) is a separate binary over this
//! library's public API and the admin HTTP API.

pub mod cluster;
pub mod config;
pub mod dev;
pub mod errors;
pub mod identity;
pub mod metrics;
pub mod mirror_config;
pub mod notify;
pub mod registry;
pub mod runtime;
pub mod scan;
pub mod util;

/// The log filter when `BERTH_LOG` is not set. openraft reports every
/// failed retry to a peer that is starting, restarting or cut off at WARN
/// and ERROR; berth says it once at INFO (`berth_raft::network`), so those
/// two openraft modules only speak of real errors.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=error";

/// Installs the one TLS crypto provider (ring) for the process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
