//! Proxy-cache organizations: the records the state machine keeps for
//! them and the commands that change them (their rules are
//! [`crate::state::proxycache`]'s).
//!
//! An organization with a [`ProxyCacheConfig`] is a pull-through cache of
//! an upstream registry: a pull of `org/library/alpine:3` that misses is
//! filled from `upstream/library/alpine:3` by one node, under a fetch
//! lease per (repository, reference) recorded here, so concurrent misses
//! on every node make one upstream fetch. The fill's content writes are
//! wrapped in `ProxyCacheCommand::Fill` (in [`crate::command`], beside
//! the command it wraps); every other content write into
//! the organization is refused by the state machine.

use berth_common::NodeId;
use serde::{Deserialize, Serialize};

/// Quay's default `expiration_s`: a day.
pub const DEFAULT_EXPIRATION_S: u64 = 86_400;

/// What an organization caches, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyCacheConfig {
    /// `host[:port]` with an optional path prefix (`quay.io/org`): a pull
    /// of `org/a/b` fetches `upstream_registry/a/b`.
    pub upstream_registry: String,
    pub username: Option<String>,
    /// The upstream password, sealed with the cluster key (bound to the
    /// organization); never shown.
    pub sealed_password: Option<Vec<u8>>,
    /// How long a cached tag is served before the upstream is asked again.
    pub expiration_s: u64,
    /// TLS verification off (and plain HTTP allowed) toward the upstream.
    pub insecure: bool,
    pub created_at_ms: u64,
}

/// The node fetching a (repository, reference) from the upstream now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchLease {
    pub node: NodeId,
    pub until_ms: u64,
}

/// What the cluster knows of one cached (repository, reference).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRecord {
    pub lease: Option<FetchLease>,
    /// When the upstream last confirmed (or gave) what is cached: a tag is
    /// served without asking again until `checked_ms + expiration_s`.
    pub checked_ms: Option<u64>,
    /// The last failed fetch: when, and why (waiting pulls report it).
    pub failed: Option<(u64, String)>,
}
