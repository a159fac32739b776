//! `berth node drain N`: gets a node ready to be removed without losing
//! anything. Leadership moves off it (a removal of the leader would cost an
//! election with writes waiting), and every blob that no other live node
//! holds is copied to one (with placement on demand, or `min_copies = 1`,
//! a blob may live on one node only). Running it again is safe: blobs that
//! already have another copy are skipped.

use std::collections::BTreeSet;

use berth_common::Digest;
use berth_gateway::{ApiError, DrainReport, ErrorCode};
use berth_raft::command::NodeRecord;
use berth_raft::state::{self, keys};
use berth_raft::{MetaNodeHandle, StateRead};
use berth_replication::Replicator;

use crate::errors::{meta_err, state_err};

/// Blobs asked for at once: each is one replication call to a peer.
const BATCH: usize = 8;

pub async fn drain(meta: &MetaNodeHandle, replicator: &Replicator, node: u64) -> Result<DrainReport, ApiError> {
    let nodes: Vec<NodeRecord> = meta.state().scan(keys::NODE_PREFIX).map_err(state_err)?;
    if !nodes.iter().any(|n| n.id == node && !n.removed) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no active node {node}")));
    }
    let live: BTreeSet<u64> = nodes.iter().filter(|n| !n.removed && n.id != node).map(|n| n.id).collect();
    if live.is_empty() {
        return Err(ApiError::new(ErrorCode::Conflict, format!("node {node} is the only node: there is nowhere to move its work")));
    }

    let leader = meta.wait_for_leader(std::time::Duration::from_secs(5)).await.map_err(meta_err)?;
    let leadership = if leader == node {
        let to = meta.transfer_leader(None).await.map_err(meta_err)?;
        tracing::info!(node, to, "drain: leadership handed over");
        Some(berth_gateway::TransferLeaderReply { previous: node, leader: to })
    } else {
        None
    };

    // This node may be a follower a few entries behind (the copies a run
    // just before this one recorded, say): read what the leader committed.
    meta.read_barrier().await.map_err(meta_err)?;
    let only_here: Vec<(Digest, u64)> = state::blobs(&meta.state())
        .map_err(state_err)?
        .into_iter()
        .filter(|(_, b)| b.holders.contains(&node) && b.holders.is_disjoint(&live))
        .map(|(d, b)| (d, b.size))
        .collect();
    let (mut blobs_copied, mut bytes_copied) = (0, 0);
    for batch in only_here.chunks(BATCH) {
        replicator.ensure_at_least(batch, 2).await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("drain of node {node} stopped after {blobs_copied} blobs: {e}; run it again to go on (copied blobs are skipped)"),
            )
        })?;
        blobs_copied += batch.len() as u64;
        bytes_copied += batch.iter().map(|(_, size)| size).sum::<u64>();
    }
    tracing::info!(node, blobs_copied, bytes_copied, "drain: every blob the node held alone has another copy");
    Ok(DrainReport { node, leadership, blobs_copied, bytes_copied })
}
