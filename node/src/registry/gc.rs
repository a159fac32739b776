//! Online garbage collection of blobs: no read-only window, no global lock.
//!
//! Three steps, each safe on its own:
//! 0. On the leader: a manifest that nothing keeps any more (no live tag,
//!    no history row inside its namespace's time machine window, no index
//!    or subject holding it, not pushed recently) is forgotten with a
//!    `CollectManifests` command, which re-checks all of it when applied;
//!    its blobs lose a reference, and step 1 takes those left with none.
//! 1. On the leader: a blob that no manifest references and that no
//!    repository linked within the grace period is forgotten with one
//!    `SweepBlob` command. The state machine re-checks both conditions when
//!    it applies the command, so a push that raced the sweep wins (its
//!    manifest is refused and re-pushed, or the sweep is refused).
//! 2. On every node: a local file older than the grace period whose blob
//!    the metadata no longer knows is deleted. Uploads in progress live in
//!    the staging area and fresh copies are younger than the grace period,
//!    so neither is ever touched.
//!
//! Step 2 races with a new copy of the same digest (a re-push or a fetch)
//! renaming over the file it is about to delete; the node would then be
//! recorded as a holder with no copy. So the file's age and the metadata
//! are checked again under the digest's lock in the store
//! ([`BlobStore::delete_stale`]), which every commit holds shared (a
//! [`berth_replication::BlobPin`]) until its copy is recorded: the
//! sweeper sees either the old file and no record (and the new copy lands
//! after the unlink), or the new copy's record (and keeps it). Only that
//! one digest waits; a per-digest lock is not a global one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use berth_raft::command::{BlobRecord, MetaCommand, MetaResponse, RepositoryRecord, TagCommand};
use berth_raft::state::keys;
use berth_raft::state::tags::collectable_manifests;
use berth_raft::{MetaNodeHandle, StateRead};
use berth_replication::BlobStore;

/// What one collection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Manifests forgotten by the cluster (leader only).
    pub manifests: u64,
    /// Blobs forgotten by the cluster (leader only).
    pub swept: u64,
    /// Local files deleted.
    pub deleted: u64,
}

#[derive(Debug, Default)]
pub struct GcStats {
    pub runs: AtomicU64,
    pub swept: AtomicU64,
    pub deleted: AtomicU64,
}

/// How many manifests one `CollectManifests` command names at most.
const MANIFEST_BATCH: usize = 100;

/// Step 0: the manifests of every repository that nothing keeps.
async fn collect_manifests(meta: &MetaNodeHandle, now_ms: u64, min_age_ms: u64) -> u64 {
    let repos: Vec<RepositoryRecord> = match meta.state().scan(keys::REPO_PREFIX) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "gc: state unreadable");
            return 0;
        }
    };
    let mut collected = 0;
    for repo in repos {
        let digests = match collectable_manifests(&meta.state(), &repo.name, now_ms, min_age_ms) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(repo = %repo.name, error = %e, "gc: state unreadable");
                continue;
            }
        };
        for batch in digests.chunks(MANIFEST_BATCH) {
            let cmd = MetaCommand::Tag(TagCommand::CollectManifests { repo: repo.name.clone(), digests: batch.to_vec(), now_ms, min_age_ms });
            match meta.write(berth_raft::Actor::Node, cmd).await {
                Ok(MetaResponse::Done) => {
                    // Applied here (the leader) before the answer: what is gone now went with it.
                    let gone = batch.iter().filter(|d| meta.state().get_raw(&keys::manifest(&repo.name, d)).is_ok_and(|v| v.is_none())).count();
                    collected += gone as u64;
                    tracing::info!(repo = %repo.name, manifests = gone, "manifests outside the time machine collected");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "gc stopped: metadata unavailable");
                    return collected;
                }
            }
        }
    }
    collected
}

/// One collection on this node, now.
pub async fn collect_once(meta: &MetaNodeHandle, store: &BlobStore, grace: Duration, stats: &GcStats) -> GcReport {
    collect_at(meta, store, SystemTime::now(), grace, stats).await
}

/// One collection on this node as if the clock read `now`: what is older
/// than `now - grace` goes. The clock is a parameter so a test can run the
/// collection a grace period later without waiting one out.
pub async fn collect_at(meta: &MetaNodeHandle, store: &BlobStore, now: SystemTime, grace: Duration, stats: &GcStats) -> GcReport {
    let mut report = GcReport::default();
    let cutoff = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_ms = cutoff.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    if meta.is_leader() {
        let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        report.manifests = collect_manifests(meta, now_ms, grace.as_millis() as u64).await;
    }
    if meta.is_leader() {
        let records = meta.state().scan_raw(keys::BLOB_PREFIX).unwrap_or_default();
        for (k, v) in records {
            let Some(digest) = keys::blob_digest(&k) else { continue };
            let Ok(rec) = berth_common::decode_versioned::<BlobRecord>(berth_raft::state::RECORD_VERSION, &v) else { continue };
            if rec.refs > 0 || rec.repos.values().any(|t| *t >= cutoff_ms) {
                continue;
            }
            match meta.write(berth_raft::Actor::Node, MetaCommand::SweepBlob { digest: digest.clone(), cutoff_ms }).await {
                Ok(MetaResponse::Done) => {
                    report.swept += 1;
                    tracing::info!(%digest, "blob swept: no manifest references it");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "gc stopped: metadata unavailable");
                    break;
                }
            }
        }
    }
    // Local copies of forgotten blobs. Look at the freshest metadata first.
    if meta.read_barrier().await.is_ok() {
        for (digest, _, modified) in store.list().await.unwrap_or_default() {
            if modified > cutoff {
                continue;
            }
            // A state read error counts as "known": keep the file.
            let unknown = || meta.state().get_raw(&keys::blob(&digest)).is_ok_and(|v| v.is_none());
            if !unknown() {
                continue;
            }
            match store.delete_stale(&digest, cutoff, unknown).await {
                Ok(true) => {
                    report.deleted += 1;
                    tracing::info!(%digest, "local copy of a swept blob deleted");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%digest, error = %e, "local copy of a swept blob not deleted"),
            }
        }
    }
    stats.runs.fetch_add(1, Ordering::Relaxed);
    stats.swept.fetch_add(report.swept, Ordering::Relaxed);
    stats.deleted.fetch_add(report.deleted, Ordering::Relaxed);
    report
}
