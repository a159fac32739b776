//! What travels inside the peer service's `Payload` frames, besides
//! openraft's own request and response types.

use berth_common::{decode_versioned, encode_versioned, CodecError, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::command::MetaResponse;
use crate::types::{LogId, MetaNode};

/// Format version of every peer payload.
pub const WIRE_VERSION: u8 = 1;

pub fn to_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_versioned(WIRE_VERSION, value)
}

pub fn from_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_versioned(WIRE_VERSION, bytes)
}

/// The leader's answer to a forwarded write or read barrier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The write was committed and applied on the leader at `log_id`.
    Applied { log_id: LogId, response: MetaResponse },
    /// Reads applied up to `read_log_id` (or further) are linearizable.
    ReadIndex { read_log_id: Option<LogId> },
    /// The receiver is not the leader; here is who it thinks is.
    NotLeader { leader: Option<(NodeId, MetaNode)> },
    /// The leader could not do it (quorum lost, shutting down, ...).
    Failed(String),
}

/// The leader's view of the group, for status displays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderView {
    pub leader: NodeId,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    /// Highest log index known to be stored on each member.
    pub matched: Vec<(NodeId, Option<u64>)>,
}
