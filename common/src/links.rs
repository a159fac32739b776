//! Fault injection at the transport: which directed links between nodes are
//! cut. Both network layers (Raft's gRPC and the blob transport) consult the
//! same filter before every outgoing call, and again when a call arrives, so
//! a test partitions a node with one line instead of killing tasks or
//! sleeping.
//!
//! Two kinds of cut:
//! - single directed links (`cut_one_way`, `isolate`), for tests that share
//!   one filter between the nodes of an in-process cluster;
//! - an [`Island`]: a node cut off from every node but a `keep` set, both
//!   ways, until a deadline. This is what `berth drill region` sets on a
//!   real node through the admin API. The deadline is checked on every
//!   call, so an island heals by itself even if whoever set it is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::NodeId;

/// A node's side of a drill partition: it talks to `keep` and nobody else
/// until `until`. Meant to be set on every member of `keep` too, with the
/// same side, so the island is a real partition (each node only knows its
/// own filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Island {
    /// Nodes the islander may still exchange messages with (never itself).
    pub keep: BTreeSet<NodeId>,
    /// When the island heals by itself.
    pub until: Instant,
}

impl Island {
    fn live(&self, now: Instant) -> bool {
        now < self.until
    }

    /// Time left before it heals.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

#[derive(Default)]
struct Links {
    cut: BTreeSet<(NodeId, NodeId)>,
    islands: BTreeMap<NodeId, Island>,
    /// Calls [`LinkFilter::let_through`] refused, per directed link: a
    /// test waits for one to know the call that would have crossed a cut
    /// was made (and dropped), instead of sleeping and hoping it was.
    refused: BTreeMap<(NodeId, NodeId), u64>,
}

impl Links {
    /// Whether the island of `node`, if live, shuts `other` out.
    fn shuts_out(&self, node: NodeId, other: NodeId, now: Instant) -> bool {
        node != other && self.islands.get(&node).is_some_and(|i| i.live(now) && !i.keep.contains(&other))
    }
}

/// Which directed links are cut. Shared by every node of an in-process
/// cluster in tests; a real node's filter is empty unless a drill has made
/// the node an island.
#[derive(Clone, Default)]
pub struct LinkFilter {
    links: Arc<Mutex<Links>>,
}

impl LinkFilter {
    fn lock(&self) -> MutexGuard<'_, Links> {
        self.links.lock().expect("link filter lock")
    }

    pub fn allows(&self, from: NodeId, to: NodeId) -> bool {
        Self::open(&self.lock(), from, to)
    }

    fn open(links: &Links, from: NodeId, to: NodeId) -> bool {
        let now = Instant::now();
        !links.cut.contains(&(from, to)) && !links.shuts_out(from, to, now) && !links.shuts_out(to, from, now)
    }

    /// [`LinkFilter::allows`], for a call about to be made: a refusal is
    /// counted (see [`LinkFilter::refused`]).
    pub fn let_through(&self, from: NodeId, to: NodeId) -> bool {
        let mut links = self.lock();
        let open = Self::open(&links, from, to);
        if !open {
            *links.refused.entry((from, to)).or_default() += 1;
        }
        open
    }

    /// How many calls `from → to` [`LinkFilter::let_through`] has refused.
    pub fn refused(&self, from: NodeId, to: NodeId) -> u64 {
        self.lock().refused.get(&(from, to)).copied().unwrap_or(0)
    }

    /// Whether `me` may hear a call from `caller`; `None`: a caller whose
    /// node id is not known (no node certificate), heard unless `me` is an
    /// island.
    pub fn admits(&self, caller: Option<NodeId>, me: NodeId) -> bool {
        match caller {
            Some(c) => self.allows(c, me),
            None => self.island(me).is_none(),
        }
    }

    /// True when nothing is cut: callers may skip identifying the peer.
    pub fn is_clear(&self) -> bool {
        let links = self.lock();
        let now = Instant::now();
        links.cut.is_empty() && !links.islands.values().any(|i| i.live(now))
    }

    /// Cuts `from → to` only.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Restores `from → to`.
    pub fn restore(&self, from: NodeId, to: NodeId) {
        self.lock().cut.remove(&(from, to));
    }

    /// Cuts every link between `node` and `others`, both ways.
    pub fn isolate(&self, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
        let mut links = self.lock();
        for o in others {
            links.cut.insert((node, o));
            links.cut.insert((o, node));
        }
    }

    /// Makes `node` an island: from now until `until` it exchanges nothing
    /// with any node outside `keep`. Replaces an island it already was.
    pub fn set_island(&self, node: NodeId, keep: BTreeSet<NodeId>, until: Instant) {
        let keep = keep.into_iter().filter(|k| *k != node).collect();
        self.lock().islands.insert(node, Island { keep, until });
    }

    /// The island `node` is now, if any (an expired one is none).
    pub fn island(&self, node: NodeId) -> Option<Island> {
        self.lock().islands.get(&node).filter(|i| i.live(Instant::now())).cloned()
    }

    /// Ends `node`'s island now; returns whether it was still in force.
    pub fn end_island(&self, node: NodeId) -> bool {
        self.lock().islands.remove(&node).is_some_and(|i| i.live(Instant::now()))
    }

    /// Forgets `node`'s island if its deadline has passed; returns whether
    /// it did (so the caller can say so once).
    pub fn forget_expired_island(&self, node: NodeId) -> bool {
        let mut links = self.lock();
        let expired = links.islands.get(&node).is_some_and(|i| !i.live(Instant::now()));
        if expired {
            links.islands.remove(&node);
        }
        expired
    }

    /// Restores every link and ends every island.
    pub fn heal(&self) {
        let mut links = self.lock();
        links.cut.clear();
        links.islands.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_island_is_cut_both_ways_except_from_keep_and_heals_at_its_deadline() {
        let f = LinkFilter::default();
        assert!(f.is_clear());
        f.set_island(2, BTreeSet::from([3]), Instant::now() + Duration::from_secs(3600));
        assert!(!f.is_clear());
        assert!(!f.allows(2, 1) && !f.allows(1, 2), "cut both ways");
        assert!(f.allows(2, 3) && f.allows(3, 2), "keep is reachable");
        assert!(f.allows(1, 3), "links between others are untouched");
        assert!(!f.admits(Some(1), 2) && f.admits(Some(3), 2));
        assert!(!f.admits(None, 2), "an unidentified caller is not heard by an island");
        assert!(f.admits(None, 1));
        assert!(!f.let_through(2, 1) && f.let_through(2, 3));
        assert_eq!((f.refused(2, 1), f.refused(2, 3), f.refused(1, 2)), (1, 0, 0), "refused calls are counted per link");
        // The same island with a deadline that has passed: no time has to go by.
        f.set_island(2, BTreeSet::from([3]), Instant::now());
        assert!(f.allows(2, 1) && f.allows(1, 2), "healed by the deadline alone");
        assert!(f.island(2).is_none() && f.is_clear());
        assert!(f.forget_expired_island(2));
        assert!(!f.forget_expired_island(2));
    }

    #[test]
    fn ending_an_island_early_and_cut_links_are_independent() {
        let f = LinkFilter::default();
        f.cut_one_way(1, 3);
        f.set_island(2, BTreeSet::from([2]), Instant::now() + Duration::from_secs(60));
        assert_eq!(f.island(2).map(|i| i.keep), Some(BTreeSet::new()), "a node never keeps itself");
        assert!(f.end_island(2));
        assert!(!f.end_island(2), "already ended");
        assert!(f.allows(2, 1));
        assert!(!f.allows(1, 3) && f.allows(3, 1));
        f.heal();
        assert!(f.is_clear());
    }
}
