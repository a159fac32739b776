//! The membership reconciler: the leader makes the Raft membership follow
//! the node records in the state machine.
//!
//! Operators and joining nodes only write records (`RegisterNode`,
//! `SetNodeRole`, `RemoveNode`); this loop, on whichever node leads, turns
//! them into membership changes: registered nodes become learners, caught-up
//! learners become voters, removed nodes leave. Because the desired state is
//! in the replicated records, a leader change in the middle of a change
//! loses nothing: the next leader picks up where the last stopped.
//!
//! Voter choice. The rule: the number of voters is odd and at most
//! [`MAX_VOTERS`] (an even count tolerates no more failures than one
//! fewer, and every voter slows every commit). Within it:
//! - promoted nodes (role `Voter`) vote once caught up, current voters
//!   among them first, then the lowest id. The state machine refuses a
//!   promote beyond [`MAX_VOTERS`] promoted nodes, so they always fit;
//! - `Auto` nodes fill the remaining seats, spread across regions (the
//!   region with the fewest voters so far goes first, then current
//!   voters, then the lowest id);
//! - if the count comes out even, the last pick waits as a learner: an
//!   `Auto` one if any was picked, else the last promoted one (until
//!   another node can vote);
//! - `Learner` nodes never vote.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_common::NodeId;
use openraft::ChangeMembers;

use crate::command::{NodeRecord, NodeRole};
use crate::meta::MetaNodeHandle;
use crate::state::{keys, StateError, StateRead};
use crate::types::MetaNode;

/// More voters make every commit wait for more acknowledgements; five
/// survive two failures, which is what a multi-region registry needs.
pub use crate::command::MAX_VOTERS;

/// A learner within this many entries of the leader's log may vote.
const CAUGHT_UP_ENTRIES: u64 = 64;

/// Chooses the voter set. `caught_up` are the nodes allowed to vote now.
pub fn choose_voters(nodes: &[NodeRecord], current_voters: &BTreeSet<NodeId>, caught_up: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    let active: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.removed && caught_up.contains(&n.id)).collect();
    let mut chosen: Vec<&NodeRecord> = active.iter().copied().filter(|n| n.role == NodeRole::Voter).collect();
    chosen.sort_by_key(|n| (!current_voters.contains(&n.id), n.id));
    // Records written before promotes were capped may name more.
    chosen.truncate(MAX_VOTERS);
    let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &chosen {
        *per_region.entry(n.region.as_str()).or_default() += 1;
    }
    let mut auto: Vec<&NodeRecord> = active.iter().copied().filter(|n| n.role == NodeRole::Auto).collect();
    while chosen.len() < MAX_VOTERS && !auto.is_empty() {
        let (i, _) = auto
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| (per_region.get(n.region.as_str()).copied().unwrap_or(0), !current_voters.contains(&n.id), n.id))
            .expect("auto is not empty");
        let n = auto.remove(i);
        *per_region.entry(n.region.as_str()).or_default() += 1;
        chosen.push(n);
    }
    // Auto picks come last, then promoted nodes from the least preferred:
    // the last pick is the one that waits.
    if chosen.len().is_multiple_of(2) {
        chosen.pop();
    }
    chosen.into_iter().map(|n| n.id).collect()
}

/// Why a reconciliation step failed; the next step tries again.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    /// openraft refused or failed the membership change.
    #[error(transparent)]
    Raft(#[from] openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, MetaNode>>),
}

/// One reconciliation step, on the leader. Returns whether it changed
/// anything.
pub async fn reconcile_once(meta: &MetaNodeHandle) -> Result<bool, ReconcileError> {
    if !meta.is_leader() || meta.handing_over() {
        return Ok(false);
    }
    let nodes: Vec<NodeRecord> = meta.state().scan(keys::NODE_PREFIX)?;
    let m = meta.metrics();
    let membership = m.membership_config.membership().clone();
    let members: BTreeMap<NodeId, MetaNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let raft = meta.raft();

    // A membership change is in flight (joint config): let it finish first.
    if membership.get_joint_config().len() > 1 {
        return Ok(false);
    }

    // New nodes join as learners, one per step.
    if let Some(n) = nodes.iter().find(|n| !n.removed && !members.contains_key(&n.id)) {
        tracing::info!(node_id = n.id, region = %n.region, addr = %n.peer_addr, "adding learner");
        raft.add_learner(n.id, MetaNode { peer_addr: n.peer_addr.clone(), region: n.region.clone() }, false).await?;
        return Ok(true);
    }

    let last = m.last_log_index.unwrap_or(0);
    let matched = |id: NodeId| m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
    let caught_up: BTreeSet<NodeId> =
        members.keys().copied().filter(|id| *id == meta.id() || voters.contains(id) || matched(*id).is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last)).collect();
    let mut want = choose_voters(&nodes, &voters, &caught_up);
    // Nodes unknown to the records (never the case after bootstrap) keep
    // their vote rather than being dropped by accident.
    for v in &voters {
        if !nodes.iter().any(|n| n.id == *v) {
            want.insert(*v);
        }
    }
    if want.is_empty() {
        return Ok(false);
    }
    if want != voters {
        tracing::info!(from = ?voters, to = ?want, "changing voters");
        raft.change_membership(ChangeMembers::ReplaceAllVoters(want), true).await?;
        return Ok(true);
    }

    // Removed nodes that are still learners leave the membership.
    let gone: BTreeSet<NodeId> = nodes.iter().filter(|n| n.removed && members.contains_key(&n.id) && !voters.contains(&n.id)).map(|n| n.id).collect();
    if !gone.is_empty() {
        tracing::info!(nodes = ?gone, "removing nodes from the membership");
        raft.change_membership(ChangeMembers::RemoveNodes(gone), true).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Runs the reconciler until `shutdown` fires.
pub async fn run(meta: MetaNodeHandle, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_millis(meta.config().heartbeat_ms.max(100) * 2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        match reconcile_once(&meta).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "membership reconciliation failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, region: &str, role: NodeRole) -> NodeRecord {
        NodeRecord { id, region: region.into(), peer_addr: String::new(), http_addr: String::new(), role, removed: false, joined_at_ms: 0 }
    }

    fn ids(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    #[test]
    fn odd_and_spread() {
        let nodes = vec![node(1, "a", NodeRole::Auto), node(2, "a", NodeRole::Auto), node(3, "b", NodeRole::Auto), node(4, "c", NodeRole::Auto)];
        let all = ids(&[1, 2, 3, 4]);
        // Four candidates: three voters, one per region.
        assert_eq!(choose_voters(&nodes, &ids(&[1, 2, 3]), &all), ids(&[1, 3, 4]));
        // Two: one voter (never an even count of auto voters).
        assert_eq!(choose_voters(&nodes[..2], &ids(&[1]), &ids(&[1, 2])), ids(&[1]));
        // Not caught up: not a voter yet.
        assert_eq!(choose_voters(&nodes, &ids(&[1]), &ids(&[1, 2, 3])), ids(&[1, 2, 3]));
    }

    #[test]
    fn roles_and_removal() {
        let mut nodes = vec![node(1, "a", NodeRole::Auto), node(2, "b", NodeRole::Learner), node(3, "c", NodeRole::Auto), node(4, "d", NodeRole::Auto)];
        let all = ids(&[1, 2, 3, 4]);
        assert_eq!(choose_voters(&nodes, &ids(&[1]), &all), ids(&[1, 3, 4]), "a learner never votes");
        nodes[2].removed = true;
        assert_eq!(choose_voters(&nodes, &ids(&[1, 3, 4]), &all), ids(&[1]), "removed: gone, count kept odd");
        nodes[1].role = NodeRole::Voter;
        assert_eq!(choose_voters(&nodes, &ids(&[1]), &all), ids(&[1, 2, 4]));
        let many: Vec<_> = (1..=9).map(|i| node(i, ["a", "b", "c"][(i % 3) as usize], NodeRole::Auto)).collect();
        assert_eq!(choose_voters(&many, &BTreeSet::new(), &(1..=9).collect()).len(), MAX_VOTERS);
    }

    #[test]
    fn promoted_nodes_never_make_the_voter_count_even_or_above_five() {
        let promoted = |n: NodeId| (1..=n).map(|i| node(i, ["a", "b", "c"][(i % 3) as usize], NodeRole::Voter)).collect::<Vec<_>>();
        let all = (1..=9).collect::<BTreeSet<_>>();
        // Two promoted, nothing else: one votes, the current voter.
        assert_eq!(choose_voters(&promoted(2), &ids(&[2]), &all), ids(&[2]));
        assert_eq!(choose_voters(&promoted(4), &ids(&[1, 2, 3]), &all), ids(&[1, 2, 3]), "the fourth waits for a fifth");
        assert_eq!(choose_voters(&promoted(5), &ids(&[1, 2, 3]), &all), ids(&[1, 2, 3, 4, 5]));
        // More than five promoted (records from before the cap): five vote.
        assert_eq!(choose_voters(&promoted(7), &ids(&[3, 4, 5, 6, 7]), &all), ids(&[3, 4, 5, 6, 7]));
        // Two promoted and an auto node: all three.
        let mut mixed = promoted(2);
        mixed.push(node(3, "c", NodeRole::Auto));
        assert_eq!(choose_voters(&mixed, &ids(&[1]), &all), ids(&[1, 2, 3]));
        // Every mix of roles and catch-up gives an odd count of at most five.
        for mask in 0u32..(1 << 14) {
            let roles = [NodeRole::Auto, NodeRole::Voter];
            let nodes: Vec<_> = (0..7).map(|i| node(i + 1, ["a", "b", "c"][(i % 3) as usize], roles[((mask >> i) & 1) as usize])).collect();
            let caught_up: BTreeSet<NodeId> = (0..7).filter(|i| (mask >> (7 + i)) & 1 == 1).map(|i| i + 1).collect();
            let v = choose_voters(&nodes, &ids(&[1]), &caught_up);
            assert!(v.len() <= MAX_VOTERS && (v.is_empty() || v.len() % 2 == 1), "mask {mask:#x}: {v:?}");
        }
    }
}
