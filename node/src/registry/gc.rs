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
//!    manifest is refused and re-pushed, or the sweep is refused). Up to
//!    [`SWEEPS_IN_FLIGHT`] commands are in flight at once. More would share
//!    log writes and sweep faster, but the pulls beside the sweep feel the
//!    burst (`berth-bench gc-pulls`, 10,000 blobs on an idle machine: 64 in
//!    flight took 8 s and raised pull p99 1.70×, 4 took 34 s and 1.21×, one
//!    at a time 70 s and 1.07×). Sweeps go through the leader's group
//!    commit like every write (`berth_raft::group`), so other writes that
//!    arrive meanwhile share their entries.
//!    The scan that picks them is RocksDB work and runs off the async
//!    threads, like step 2's look-ups.
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

use berth_common::Digest;
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

/// How many `SweepBlob` commands the leader has in flight at once; more
/// makes the sweep faster and the pulls beside it slower (`berth-bench
/// gc-pulls`).
const SWEEPS_IN_FLIGHT: usize = 1;

/// How many manifests one `CollectManifests` command names at most.
const MANIFEST_BATCH: usize = 100;

/// Runs a scan of the state on a blocking thread; `None` (logged) when the
/// state could not be read or the scan failed.
async fn scan_off_thread<T: Send + 'static>(what: &str, scan: impl FnOnce() -> Result<T, berth_raft::state::StateError> + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(scan).await {
        Ok(Ok(found)) => Some(found),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "gc: state unreadable");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, scan = what, "gc: a scan failed");
            None
        }
    }
}

/// Step 0: the manifests of every repository that nothing keeps.
async fn collect_manifests(meta: &MetaNodeHandle, now_ms: u64, min_age_ms: u64) -> u64 {
    let state = meta.state();
    // Every repository's manifests, tags and history are read: off the
    // async threads, like the blob scan of step 1.
    let Some(found) = scan_off_thread("manifests", move || collectable(&state, now_ms, min_age_ms)).await else { return 0 };
    let mut collected = 0;
    for (repo, digests) in found {
        for batch in digests.chunks(MANIFEST_BATCH) {
            let cmd = MetaCommand::Tag(TagCommand::CollectManifests { repo: repo.clone(), digests: batch.to_vec(), now_ms, min_age_ms });
            match meta.write(berth_raft::Actor::Node, cmd).await {
                Ok(MetaResponse::Done) => {
                    // Applied here (the leader) before the answer: what is gone now went with it.
                    let gone = batch.iter().filter(|d| meta.state().get_raw(&keys::manifest(&repo, d)).is_ok_and(|v| v.is_none())).count();
                    collected += gone as u64;
                    tracing::info!(repo = %repo, manifests = gone, "manifests outside the time machine collected");
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

/// Each repository with the manifests that nothing keeps in it (step 0's
/// candidates; `CollectManifests` checks them again when applied). A
/// repository whose state cannot be read is skipped.
fn collectable(state: &berth_raft::MetaState, now_ms: u64, min_age_ms: u64) -> Result<Vec<(String, Vec<Digest>)>, berth_raft::state::StateError> {
    let repos: Vec<RepositoryRecord> = state.scan(keys::REPO_PREFIX)?;
    let mut out = Vec::new();
    for repo in repos {
        match collectable_manifests(state, &repo.name, now_ms, min_age_ms) {
            Ok(d) if d.is_empty() => {}
            Ok(d) => out.push((repo.name, d)),
            Err(e) => tracing::warn!(repo = %repo.name, error = %e, "gc: state unreadable"),
        }
    }
    Ok(out)
}

/// Step 1: forgets every blob no manifest references and no repository
/// linked after `cutoff_ms`, [`SWEEPS_IN_FLIGHT`] commands at a time; how
/// many went.
async fn sweep_blobs(meta: &MetaNodeHandle, cutoff_ms: u64) -> u64 {
    let state = meta.state();
    // Reading and decoding every blob record is RocksDB work, as long as
    // the registry is large: off the async threads, which serve pulls.
    let Some(candidates) = scan_off_thread("blob records", move || sweep_candidates(&state, cutoff_ms)).await else { return 0 };
    use futures::StreamExt;
    let mut swept = 0;
    let mut sweeps = futures::stream::iter(candidates)
        .map(|digest| async move { (meta.write(berth_raft::Actor::Node, MetaCommand::SweepBlob { digest: digest.clone(), cutoff_ms }).await, digest) })
        .buffer_unordered(SWEEPS_IN_FLIGHT);
    while let Some((outcome, digest)) = sweeps.next().await {
        match outcome {
            Ok(MetaResponse::Done) => {
                tracing::debug!(%digest, "blob swept: no manifest references it");
                swept += 1;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "gc stopped: metadata unavailable");
                break;
            }
        }
    }
    if swept > 0 {
        tracing::info!(blobs = swept, "blobs swept: no manifest references them");
    }
    swept
}

/// The blobs step 1 may sweep, as the leader's state has them now (the
/// command checks each again when applied).
fn sweep_candidates(state: &impl StateRead, cutoff_ms: u64) -> Result<Vec<Digest>, berth_raft::state::StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(keys::BLOB_PREFIX)? {
        let Some(digest) = keys::blob_digest(&k) else { continue };
        let Ok(rec) = berth_common::decode_versioned::<BlobRecord>(berth_raft::state::RECORD_VERSION, &v) else { continue };
        if rec.refs > 0 || berth_raft::state::blob_repos(state, &digest, &rec)?.iter().any(|(_, t)| *t >= cutoff_ms) {
            continue;
        }
        out.push(digest);
    }
    Ok(out)
}

/// Step 2: deletes the local files older than `cutoff` whose blob the
/// metadata no longer knows; how many went.
async fn delete_local_copies(meta: &MetaNodeHandle, store: &BlobStore, cutoff: SystemTime) -> u64 {
    let old: Vec<Digest> = store.list().await.unwrap_or_default().into_iter().filter(|(_, _, modified)| *modified <= cutoff).map(|(d, _, _)| d).collect();
    // One RocksDB read per file, as many as there are files: off the
    // async threads too. A state read error counts as "known": keep the file.
    let state = meta.state();
    let unknown = |state: &berth_raft::MetaState, digest: &Digest| state.get_raw(&keys::blob(digest)).is_ok_and(|v| v.is_none());
    let stale = tokio::task::spawn_blocking(move || old.into_iter().filter(|d| unknown(&state, d)).collect::<Vec<_>>()).await.unwrap_or_default();
    let mut deleted = 0;
    for digest in stale {
        // Asked again under the digest's lock: a copy may have been
        // pushed and recorded since the look above.
        let state = meta.state();
        match store.delete_stale(&digest, cutoff, || unknown(&state, &digest)).await {
            Ok(true) => {
                deleted += 1;
                tracing::debug!(%digest, "local copy of a swept blob deleted");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%digest, error = %e, "local copy of a swept blob not deleted"),
        }
    }
    if deleted > 0 {
        tracing::info!(files = deleted, "local copies of swept blobs deleted");
    }
    deleted
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
        report.swept = sweep_blobs(meta, cutoff_ms).await;
    }
    // Local copies of forgotten blobs. Look at the freshest metadata first.
    if meta.read_barrier().await.is_ok() {
        report.deleted = delete_local_copies(meta, store, cutoff).await;
    }
    stats.runs.fetch_add(1, Ordering::Relaxed);
    stats.swept.fetch_add(report.swept, Ordering::Relaxed);
    stats.deleted.fetch_add(report.deleted, Ordering::Relaxed);
    report
}
