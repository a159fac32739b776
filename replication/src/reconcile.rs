//! Background replication, pull-based: each node compares what placement
//! says it should hold (by default every blob of every repository, on every
//! node; per namespace a list of regions or on-demand only) with what it has, and fetches the difference from the nearest
//! holders with bounded concurrency. Being driven by the metadata, it picks
//! up after a restart where it stopped.
//!
//! A region pays for one WAN copy: while no node of this region holds a
//! blob, only the region's lowest-id node that lacks it fetches it from
//! afar; the others wait and then copy from their neighbour.

use std::time::Duration;

use berth_common::Digest;
use futures::StreamExt;

use crate::{BlobInfo, Replicator};

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

    /// Blobs this node should fetch now.
    pub fn missing(&self) -> Vec<(Digest, BlobInfo)> {
        let view = &self.inner.view;
        let me = view.self_id();
        let my_region = view.self_region();
        let peers = view.peers();
        let region_of = |id: u64| peers.iter().find(|p| p.id == id).map(|p| p.region.clone());
        view.blobs()
            .into_iter()
            .filter(|(_, b)| b.wanted_here && !b.holders.contains(&me) && !b.holders.is_empty())
            .filter(|(_, b)| {
                let in_region = b.holders.iter().any(|h| region_of(*h).as_deref() == Some(my_region.as_str()));
                if in_region {
                    return true;
                }
                // Nobody here has it yet: the lowest-id node of the region fetches.
                !peers.iter().any(|p| p.region == my_region && p.id < me && !b.holders.contains(&p.id))
            })
            .collect()
    }

    /// One pass; returns how many blobs were fetched.
    pub async fn reconcile_once(&self) -> usize {
        let missing = self.missing();
        let concurrency = self.inner.config.fetch_concurrency.max(1);
        let results = futures::stream::iter(missing)
            .map(|(digest, info)| async move {
                // Already on disk but not recorded (e.g. a crash between the two).
                if let Ok(Some(_)) = self.inner.store.stat(&digest).await {
                    return self.inner.view.record_holder(&digest, info.size).await.is_ok();
                }
                self.fetch(&digest, info.size, None).wait().await.is_ok()
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<bool>>()
            .await;
        results.into_iter().filter(|ok| *ok).count()
    }
}
