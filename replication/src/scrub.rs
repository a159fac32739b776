//! Scrub: every stored blob is re-hashed now and then, at a bounded rate.
//! A copy that no longer matches its digest (a flipped bit on disk) is
//! quarantined, its placement record dropped, and the reconciler fetches a
//! good copy from a peer.

use std::time::Duration;

use crate::{bump, Replicator};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScrubReport {
    pub checked: u64,
    pub corrupt: u64,
}

impl Replicator {
    pub(crate) async fn scrub_loop(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let secs = self.inner.config.scrub_interval_secs;
        if secs == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = shutdown.changed() => return,
            }
            let report = self.scrub_once(self.inner.config.scrub_bytes_per_sec).await;
            tracing::info!(checked = report.checked, corrupt = report.corrupt, "scrub finished");
        }
    }

    /// Re-hashes every stored blob once, at most `bytes_per_sec`.
    pub async fn scrub_once(&self, bytes_per_sec: u64) -> ScrubReport {
        bump(&self.inner.stats.scrub_runs, 1);
        let mut report = ScrubReport::default();
        let blobs = match self.inner.store.list().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "scrub cannot list the blob store");
                return report;
            }
        };
        for (digest, size, _) in blobs {
            let started = tokio::time::Instant::now();
            match self.inner.store.verify(&digest).await {
                Ok(true) => {}
                Ok(false) => {
                    report.corrupt += 1;
                    bump(&self.inner.stats.scrub_corrupt, 1);
                    match self.inner.store.quarantine(&digest).await {
                        Ok(path) => tracing::warn!(%digest, quarantined = %path.display(), "stored copy does not match its digest"),
                        Err(e) => tracing::error!(%digest, error = %e, "cannot quarantine a bad copy"),
                    }
                    if let Err(e) = self.inner.view.drop_holder(&digest).await {
                        tracing::error!(%digest, error = %e, "cannot drop the placement of a bad copy");
                    }
                    self.wake();
                }
                // Deleted meanwhile (GC): nothing to check.
                Err(_) => continue,
            }
            report.checked += 1;
            bump(&self.inner.stats.scrub_checked, 1);
            if bytes_per_sec > 0 && bytes_per_sec != u64::MAX {
                let budget = Duration::from_secs_f64(size as f64 / bytes_per_sec as f64);
                tokio::time::sleep_until(started + budget).await;
            }
        }
        report
    }
}
