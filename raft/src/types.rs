//! The openraft type configuration of the metadata plane.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{MetaRequest, MetaResponse};

openraft::declare_raft_types!(
    /// Type configuration of berth's single metadata Raft group.
    pub TypeConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = u64,
        Node = MetaNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What a Raft member needs to know of another: where to reach it and where
/// it is. The full record (HTTP address, desired role) is `NodeRecord` in the
/// state machine; this is what travels inside membership configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNode {
    /// `host:port` of the node's peer (gRPC over mutual TLS) listener.
    pub peer_addr: String,
    pub region: String,
}

impl fmt::Display for MetaNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.peer_addr, self.region)
    }
}

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::Membership<u64, MetaNode>;
pub type StoredMembership = openraft::StoredMembership<u64, MetaNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, MetaNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<u64>;
pub(crate) type RaftMetrics = openraft::RaftMetrics<u64, MetaNode>;
