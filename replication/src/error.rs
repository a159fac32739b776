//! The one error type of the data plane: what a fetch, a copy asked of a
//! peer or a record through the [`crate::ClusterView`] ran into.
//!
//! The store's [`BlobError`] and the transport's [`TransportError`] stay
//! the errors of those modules (the node maps `BlobError` to HTTP codes);
//! here they come in through `#[from]`. A peer's own failure crosses the
//! wire as text ([`crate::protocol::Reply::Failed`]), so it arrives as
//! [`ReplicationError::Refused`], never parsed back.

use std::sync::Arc;
use std::time::Duration;

use berth_common::{Digest, NodeId};

use crate::store::BlobError;
use crate::transport::TransportError;

/// An error the cluster's metadata returned, opaque to this crate (it
/// never sees Raft).
pub type MetadataError = Box<dyn std::error::Error + Send + Sync>;

pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This node's blob store failed (I/O, disk full, a digest mismatch).
    #[error(transparent)]
    Store(#[from] BlobError),
    /// No connection to a peer: cut, unreachable, bad TLS material.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A call to a peer broke off: a stream error or an unreadable frame.
    #[error("node {node}: {source}")]
    Peer {
        node: NodeId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A peer sent nothing for the stall timeout (hung or silently dead).
    #[error("node {node} sent no bytes for {after:?}")]
    Stalled { node: NodeId, after: Duration },
    /// A peer answered what the protocol does not allow here.
    #[error("node {node} broke the protocol: {what}")]
    Protocol { node: NodeId, what: String },
    /// The node asked for a blob neither holds nor receives it.
    #[error("node {node} neither holds nor receives this blob")]
    NotHeld { node: NodeId },
    /// A peer asked to keep a copy could not make one; its reason as it
    /// sent it.
    #[error("node {node} could not copy the blob: {reason}")]
    Refused { node: NodeId, reason: String },
    /// The bytes these nodes sent did not match the digest.
    #[error("bytes from nodes {nodes:?} did not match the digest")]
    Corrupt { nodes: Vec<NodeId> },
    /// No node (left) to fetch the blob from.
    #[error("no node holds this blob")]
    NoHolder,
    /// No node left to ask for a copy.
    #[error("no other node to copy to")]
    NoPeer,
    /// Every holder failed before the blob was complete.
    #[error("blob {digest}: fetched {fetched} of {size} bytes; {last}")]
    Incomplete { digest: Digest, fetched: u64, size: u64, last: Box<ReplicationError> },
    /// The blob is stored here, but the metadata did not take the record.
    #[error("blob {digest} stored but not recorded: {source}")]
    NotRecorded {
        digest: Digest,
        #[source]
        source: Box<ReplicationError>,
    },
    /// The metadata refused or could not take a record.
    #[error("metadata: {0}")]
    Metadata(#[source] MetadataError),
    /// The cluster no longer knows the blob (garbage-collected meanwhile).
    #[error("the cluster no longer knows blob {digest} (garbage-collected)")]
    Forgotten { digest: Digest },
    /// A blob is on fewer nodes than a push needs, and no more can be asked.
    #[error("blob {digest} is on {have} of the {need} nodes it needs ({last})")]
    TooFewCopies { digest: Digest, have: usize, need: usize, last: Box<ReplicationError> },
    /// The blobs of a push did not reach their copies in time.
    #[error("blobs did not reach {need} copies within {timeout:?}")]
    CopiesTimedOut { need: usize, timeout: Duration },
    /// The fetch this call waited for or followed failed (shared by every
    /// caller of that fetch, hence the `Arc`).
    #[error("fetch of {digest} failed: {cause}")]
    Fetch { digest: Digest, cause: Arc<ReplicationError> },
    /// The fetch's task went away without an outcome (shutdown, a panic).
    #[error("fetch of {digest} ended without an outcome")]
    FetchLost { digest: Digest },
    /// Answering a peer's request failed: the stream broke, a bad frame.
    #[error("answering a peer: {0}")]
    Answer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A blob relayed while it lands here made no progress for this long.
    #[error("relay made no progress for {0:?}")]
    RelayStalled(Duration),
    /// This node refuses every peer (a fault a test switched on).
    #[error("refusing peers (fault injected)")]
    RefusingPeers,
    /// A task fetching part of a blob panicked or was cancelled.
    #[error("a fetch task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ReplicationError {
    /// For `map_err`: a call to `node` failed with `e`, kept as the source.
    pub(crate) fn peer<E: Into<Box<dyn std::error::Error + Send + Sync>>>(node: NodeId) -> impl FnOnce(E) -> ReplicationError {
        move |e| ReplicationError::Peer { node, source: e.into() }
    }

    /// For `map_err`: answering a peer failed with `e`.
    pub(crate) fn answer(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ReplicationError {
        ReplicationError::Answer(e.into())
    }
}
