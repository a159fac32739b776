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

/// The answer of a peer call that may fail on the callee. The failure
/// travels as its words: the caller shows or wraps them, and cannot hold
/// the callee's error types (nor those of an older or newer release).
pub type PeerResult<T> = Result<T, String>;

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
    /// The leader's rules refuse the write for its actor
    /// ([`crate::forward::WriteGate`]); nothing was proposed.
    Refused(String),
}

/// A voter's question before it campaigns: would you vote for a candidate
/// whose log ends at `last_log_id`? Answering changes nothing on the
/// receiver (no term is raised, no vote is cast).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log_id: Option<LogId>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreVoteReply {
    Granted,
    /// Why not: a leader is still heard, or the candidate's log is behind.
    Refused(String),
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

// Limits of the peer service's calls, which both of its sides apply.

/// The most a caller without a cluster certificate (a joining node) may
/// send in one call. A join request is a few hundred bytes; the limit is
/// applied to the body as it streams in, so such a caller never makes the
/// node buffer more than this, whatever the gRPC frame header claims.
pub const MAX_UNAUTHENTICATED_BODY: usize = 64 << 10;

/// The most a member may send in one call: entry batches are capped far
/// below it (see `RocksStore`'s log reader), snapshots go in chunks.
pub const MAX_MEMBER_MESSAGE: usize = 64 << 20;

/// HTTP/2 flow-control windows of peer connections, both ways. hyper's
/// defaults (1 MiB on a server) would let a follower 150 ms away take a
/// 4 MiB entry only one window per round trip, beyond the heartbeat
/// interval openraft allows an AppendEntries; these let the largest batch
/// go in one round trip. Windows are credit, not buffers: nothing is
/// allocated until data arrives.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MetaRequest;
    use crate::types::{TypeConfig, Vote};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use proptest::prelude::*;

    /// Every payload type a peer call decodes, fed the same bytes.
    fn decode_all(bytes: &[u8]) {
        let _ = from_payload::<AppendEntriesRequest<TypeConfig>>(bytes);
        let _ = from_payload::<VoteRequest<NodeId>>(bytes);
        let _ = from_payload::<InstallSnapshotRequest<TypeConfig>>(bytes);
        let _ = from_payload::<MetaRequest>(bytes);
        let _ = from_payload::<crate::forward::ForwardedWrite>(bytes);
        let _ = from_payload::<Option<u64>>(bytes);
        let _ = from_payload::<ForwardReply>(bytes);
        let _ = from_payload::<LeaderView>(bytes);
    }

    proptest! {
        /// Random bytes behind the right version, valid payloads cut
        /// short, and a huge length claim spliced in anywhere: errors, no
        /// panic, no allocation beyond the codec's bound.
        #[test]
        fn hostile_payloads_never_panic(noise in proptest::collection::vec(any::<u8>(), 0..512), term in any::<u64>(), cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
            decode_all(&noise);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend(&noise);
            decode_all(&versioned);
            let good = to_payload(&VoteRequest::<NodeId> { vote: Vote::new(term, 1), last_log_id: None }).unwrap();
            prop_assert!(from_payload::<VoteRequest<NodeId>>(&good).is_ok());
            decode_all(&good[..cut.index(good.len())]);
            let mut huge = good.clone();
            let i = 1 + at.index(huge.len() - 1);
            huge.splice(i..i, [0xfd, 0, 0, 0, 0, 0, 1, 0, 0]);
            decode_all(&huge);
        }
    }
}
