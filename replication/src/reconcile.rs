//! Background replication, pull-based: each node compares what placement
//! says it should hold (by default every blob of every repository, on every
//! node; per namespace a list of regions or on-demand only) with what it has, and fetches the difference from the nearest
//! holders with bounded concurrency. Being driven by the metadata, it picks
//! up after a restart where it stopped.
//!
//! A new blob reaches every node that wants it along a relay chain
//! ([`relay_parent`]): each node copies from the node before it while that
//! node is itself still receiving the blob, so every node's uplink carries
//! one copy, however many nodes want it, and a region pays for one WAN copy.
//!
//! What a node misses is kept between passes ([`Missing`]): a pass reads
//! only the blob records the metadata changed since the last one
//! ([`crate::ClusterView::changed_blobs`]), so with nothing new it reads
//! nothing, however many blobs the cluster holds. Every blob is read again
//! when the view cannot name the changes, and every ten minutes as a
//! backstop.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use berth_common::{Digest, NodeId};
use futures::StreamExt;

use crate::{BlobInfo, Replicator};

/// The node `me` copies a blob from while it spreads, or `None` to fetch
/// from the nearest holder.
///
/// `nodes` are the nodes that want the blob or hold it (with `me`), by
/// region. They form one chain: region by region, starting at the region
/// of the lowest-id holder and going on in name order (wrapping), and
/// within a region holders first, then by id. Each node copies from the
/// one before it, and serves the bytes it has while it still receives
/// them. As GFS pushes its writes, the data goes linearly along a chain
/// rather than down a tree: every uplink sends one copy at its full rate,
/// so the whole fan-out takes about one copy's time plus a little per hop,
/// where fetching every copy from the one holder splits its uplink as many
/// ways as there are nodes (and a tree splits each inner node's).
///
/// Every node computes the chain from the same metadata, so they agree; a
/// parent always comes earlier in one fixed order, so there are no cycles.
/// A node whose parent fails or stalls falls back to the holders.
pub fn relay_parent(me: NodeId, nodes: &[(NodeId, String)], holders: &BTreeSet<NodeId>) -> Option<NodeId> {
    if holders.contains(&me) {
        return None;
    }
    let chain = relay_chain(nodes, holders);
    // The chain starts with a holder, and `me` is none.
    let at = chain.iter().position(|id| *id == me)?;
    chain.get(at.checked_sub(1)?).copied()
}

/// The holders whose uplinks the chain gives to a node other than `me`:
/// each is the parent of a node that lacks the blob. Ranges fetched from
/// them would take from that node's copy (see [`relay_parent`]).
pub fn feeding_others(me: NodeId, nodes: &[(NodeId, String)], holders: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    relay_chain(nodes, holders).windows(2).filter(|w| holders.contains(&w[0]) && !holders.contains(&w[1]) && w[1] != me).map(|w| w[0]).collect()
}

/// Every node of `nodes` in chain order (see [`relay_parent`]); empty when
/// nobody holds the blob.
fn relay_chain(nodes: &[(NodeId, String)], holders: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let Some(first_holder) = nodes.iter().filter(|(id, _)| holders.contains(id)).min_by_key(|(id, _)| *id) else {
        return Vec::new();
    };
    let mut regions: Vec<&str> = nodes.iter().map(|(_, r)| r.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let start = regions.iter().position(|r| *r == first_holder.1).expect("the holder's region is listed");
    regions.rotate_left(start);
    regions
        .iter()
        .flat_map(|region| {
            let mut ids: Vec<NodeId> = nodes.iter().filter(|(_, r)| r == region).map(|(id, _)| *id).collect();
            ids.sort_by_key(|id| (!holders.contains(id), *id));
            ids
        })
        .collect()
}

/// How often a pass reads every blob record even though the changes are
/// named: a backstop that bounds how long a missed change could go unseen.
const FULL_READ_EVERY: Duration = Duration::from_secs(600);

/// Blobs up to this size are small: their fetch waits on round trips, a
/// sync and the record of the copy, not on bandwidth, so the reconciler
/// runs [`SMALL_FETCHES_PER_FETCH`] of them for each large one it may run.
const SMALL_BLOB_BYTES: u64 = 1 << 20;
/// With four at once, 30,000 blobs of a few hundred bytes took 62 s to
/// reach a third node, with a fifth of the machine's CPU idle.
const SMALL_FETCHES_PER_FETCH: usize = 8;

/// The blobs this node misses, as of the last refresh.
#[derive(Default)]
pub(crate) struct Missing {
    blobs: HashMap<Digest, BlobInfo>,
    /// When every blob record was last read.
    read_all_at: Option<Instant>,
}

impl Replicator {
    pub(crate) async fn reconcile_loop(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let period = Duration::from_millis(self.inner.config.reconcile_interval_ms.max(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            self.probe_peers().await;
            let fetched = self.reconcile_once().await;
            if fetched > 0 {
                tracing::info!(blobs = fetched, "replicated blobs from peers");
            }
        }
    }

    /// Blobs this node should fetch, as of the last pass.
    pub fn missing(&self) -> Vec<(Digest, BlobInfo)> {
        let m = self.inner.missing.lock().unwrap_or_else(|e| e.into_inner());
        m.blobs.iter().map(|(d, b)| (d.clone(), b.clone())).collect()
    }

    /// How many blobs this node misses and their bytes, as of the last pass.
    pub fn backlog(&self) -> (usize, u64) {
        let m = self.inner.missing.lock().unwrap_or_else(|e| e.into_inner());
        (m.blobs.len(), m.blobs.values().map(|b| b.size).sum())
    }

    /// Brings [`Self::missing`] up to date from the metadata, on a blocking
    /// thread (it reads RocksDB).
    pub async fn refresh_missing(&self) {
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || me.refresh_missing_blocking()).await {
            tracing::error!(error = %e, "reading what this node misses failed");
        }
    }

    fn refresh_missing_blocking(&self) {
        let _one = self.inner.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let view = &self.inner.view;
        let me = view.self_id();
        let misses = |b: &BlobInfo| b.wanted_here && !b.holders.contains(&me) && !b.holders.is_empty();
        // Taken before reading: a change applied while we read is named
        // again on the next pass.
        let changed = view.changed_blobs();
        let due = self.inner.missing.lock().unwrap_or_else(|e| e.into_inner()).read_all_at.is_none_or(|t| t.elapsed() >= FULL_READ_EVERY);
        match changed {
            Some(digests) if !due => {
                let now: Vec<(Digest, Option<BlobInfo>)> = digests.into_iter().map(|d| (d.clone(), view.blob(&d).filter(misses))).collect();
                let mut m = self.inner.missing.lock().unwrap_or_else(|e| e.into_inner());
                for (d, info) in now {
                    match info {
                        Some(info) => m.blobs.insert(d, info),
                        None => m.blobs.remove(&d),
                    };
                }
            }
            _ => {
                let started = Instant::now();
                let blobs: HashMap<Digest, BlobInfo> = view.missing_blobs().into_iter().filter(|(_, b)| misses(b)).collect();
                metrics::gauge!("berth_reconcile_full_read_seconds").set(started.elapsed().as_secs_f64());
                let mut m = self.inner.missing.lock().unwrap_or_else(|e| e.into_inner());
                m.blobs = blobs;
                m.read_all_at = Some(Instant::now());
            }
        }
    }

    /// This node's parent in `digest`'s relay chains (see [`relay_parent`]).
    pub fn upstream(&self, digest: &Digest, info: &BlobInfo) -> Option<NodeId> {
        relay_parent(self.inner.view.self_id(), &self.chain_members(digest, info), &info.holders)
    }

    /// The holders of `digest` that head another node's relay chain (see
    /// [`feeding_others`]).
    pub(crate) fn holders_feeding_others(&self, digest: &Digest, info: &BlobInfo) -> BTreeSet<NodeId> {
        feeding_others(self.inner.view.self_id(), &self.chain_members(digest, info), &info.holders)
    }

    /// This node and every peer that wants `digest` or holds it, with their regions.
    fn chain_members(&self, digest: &Digest, info: &BlobInfo) -> Vec<(NodeId, String)> {
        let view = &self.inner.view;
        let mut nodes: Vec<(NodeId, String)> = vec![(view.self_id(), view.self_region())];
        // This node's region wants it as much as `info` says this node does.
        let mut wanted: std::collections::HashMap<String, bool> = [(view.self_region(), info.wanted_here)].into();
        for p in view.peers() {
            let wants = *wanted.entry(p.region.clone()).or_insert_with(|| view.wanted_in_region(digest, &p.region));
            if wants || info.holders.contains(&p.id) {
                nodes.push((p.id, p.region));
            }
        }
        nodes
    }

    /// One pass; returns how many blobs were fetched.
    pub async fn reconcile_once(&self) -> usize {
        let started = Instant::now();
        self.refresh_missing().await;
        let missing = self.missing();
        metrics::gauge!("berth_reconcile_pass_seconds").set(started.elapsed().as_secs_f64());
        let concurrency = self.inner.config.fetch_concurrency.max(1);
        let (small, large): (Vec<_>, Vec<_>) = missing.into_iter().partition(|(_, info)| info.size <= SMALL_BLOB_BYTES);
        let fetch_all = |blobs: Vec<(Digest, BlobInfo)>, at_once: usize| {
            futures::stream::iter(blobs)
                .map(|(digest, info)| async move {
                    // Already on disk but not recorded (e.g. a crash between the two).
                    if let Ok(Some(_)) = self.inner.store.stat(&digest).await {
                        return self.inner.view.record_holder(&digest, info.size).await.is_ok();
                    }
                    self.fetch(&digest, info.size, self.upstream(&digest, &info)).wait().await.is_ok()
                })
                .buffer_unordered(at_once)
                .collect::<Vec<bool>>()
        };
        let (small, large) = futures::join!(fetch_all(small, concurrency * SMALL_FETCHES_PER_FETCH), fetch_all(large, concurrency));
        small.into_iter().chain(large).filter(|ok| *ok).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(NodeId, &str)]) -> Vec<(NodeId, String)> {
        spec.iter().map(|(id, r)| (*id, r.to_string())).collect()
    }

    #[test]
    fn six_nodes_in_three_regions_form_one_chain_with_one_wan_hop_per_region() {
        // Node 1 in eu holds it; eu = {1, 2}, us = {3, 4}, ap = {5, 6}.
        let n = nodes(&[(1, "eu"), (2, "eu"), (3, "us"), (4, "us"), (5, "ap"), (6, "ap")]);
        let h: BTreeSet<NodeId> = [1].into();
        let parents: Vec<Option<NodeId>> = (1..=6).map(|me| relay_parent(me, &n, &h)).collect();
        // eu first (the holder's region), then us, then ap (name order, wrapping).
        assert_eq!(parents, vec![None, Some(1), Some(2), Some(3), Some(4), Some(5)]);
        // A holder in the middle of the order starts the chain in its region.
        let h: BTreeSet<NodeId> = [4].into();
        let parents: Vec<Option<NodeId>> = (1..=6).map(|me| relay_parent(me, &n, &h)).collect();
        assert_eq!(parents, vec![Some(6), Some(1), Some(4), None, Some(3), Some(5)]);
    }

    #[test]
    fn chains_start_at_holders_and_never_loop() {
        let n = nodes(&[(1, "eu"), (2, "eu"), (3, "us"), (4, "us"), (5, "ap"), (6, "ap"), (7, "us")]);
        for holders in [vec![4], vec![6, 2], vec![7], vec![1, 3, 5]] {
            let h: BTreeSet<NodeId> = holders.iter().copied().collect();
            for me in 1..=7u64 {
                // Following parents from any node ends at a holder within 7 steps.
                let mut at = me;
                let mut steps = 0;
                while let Some(p) = relay_parent(at, &n, &h) {
                    at = p;
                    steps += 1;
                    assert!(steps <= 7, "a loop from {me} with holders {holders:?}");
                }
                assert!(h.contains(&at), "chain from {me} ends at {at}, not a holder ({holders:?})");
            }
        }
        // Within a region that holds it, the others follow the holder.
        let h: BTreeSet<NodeId> = [4].into();
        assert_eq!(relay_parent(3, &n, &h), Some(4));
        assert_eq!(relay_parent(7, &n, &h), Some(3));
        // Nobody holds it: no chain.
        assert_eq!(relay_parent(1, &n, &BTreeSet::new()), None);
    }

    #[test]
    fn a_holder_heading_another_chain_is_not_asked_for_ranges() {
        // The fan-out after a durable push: 1 (eu) took the push, 3 (us)
        // its pipelined copy. 2 copies from 1; 3 heads 4 -> 5 -> 6.
        let n = nodes(&[(1, "eu"), (2, "eu"), (3, "us"), (4, "us"), (5, "ap"), (6, "ap")]);
        let h: BTreeSet<NodeId> = [1, 3].into();
        assert_eq!(relay_parent(2, &n, &h), Some(1));
        assert_eq!(relay_parent(4, &n, &h), Some(3));
        // 2 may not take ranges from 3: 4's copy goes over 3's uplink.
        assert_eq!(feeding_others(2, &n, &h), BTreeSet::from([3]));
        // 4 sees 1 feeding 2, and its own parent is not counted against it.
        assert_eq!(feeding_others(4, &n, &h), BTreeSet::from([1]));
        // Once 2 and 4 hold it, 1 and 3 feed nobody; 5 still has 4 before it.
        let h: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        assert_eq!(feeding_others(6, &n, &h), BTreeSet::from([4]));
        assert_eq!(feeding_others(5, &n, &h), BTreeSet::new());
        // A node alone in lacking it may use every holder.
        let h: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        assert_eq!(feeding_others(6, &n, &h), BTreeSet::new());
    }
}
