//! The sync worker: every node runs one. It looks for mirrors due a sync
//! in its local state, takes the mirror's lease through Raft (one node
//! wins), renews it while it works, and writes the outcome through Raft so
//! every node shows the same status. A node that dies mid-sync stops
//! renewing; another takes the lease once it lapses and runs the sync
//! again.
//!
//! A sync lists the upstream's tags, keeps those matching the mirror's
//! globs, and copies each: blobs first (through the node's own blob
//! ingest, digest-checked), then the manifests bottom-up by digest, then
//! the tag. Everything goes through the registry's normal push path as the
//! mirror's robot, so replication and `min_copies` apply, and a repository
//! in MIRROR state takes the writes. Steps already done are skipped (a
//! blob held, a manifest stored, a tag already pointing there), so a sync
//! run again — after a crash or a takeover — resumes. Local tags no longer
//! matched upstream are deleted (into tag history).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_common::{Digest, RepoName};
use berth_gateway::{Access, Principal, Reference, Registry};
use berth_raft::command::BlobRecord;
use berth_raft::mirror::{MirrorCommand, MirrorRecord, RepoState, SyncOutcome, SyncStatus};
use berth_raft::state::{keys, mirror as rules, tags, StateError};
use berth_raft::{Actor, MetaCommand, MetaNodeHandle, MetaResponse, StateRead};
use bytes::Bytes;
use tokio::sync::watch;

use super::upstream::{Upstream, UpstreamError, UpstreamSpec};
use crate::config::MirrorSyncConfig;
use crate::identity::audit::AuditLog;
use crate::mirror_config::{open, SealError};
use crate::registry::manifest::{self, Kind};
use crate::util::now_ms;

/// A manifest copied (its digest, bytes and media type), boxed: an index
/// copies its children by recursion.
type CopyFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Digest, Bytes, String), SyncError>> + Send + 'a>>;

/// Why a sync, or one tag of it, failed. Its words are the mirror's status
/// message and the usage log's.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("mirror CA bundle {}: {source}", path.display())]
    CaBundle { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("repository name: {0}")]
    Name(#[from] berth_common::NameError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("robot {robot} may not write to {repo}: grant it write")]
    NoWriteGrant { robot: String, repo: String },
    /// Each failed tag as `tag: why`, of the `wanted` ones.
    #[error("{} of {wanted} tags failed: {}", failed.len(), failed.join("; "))]
    Tags { failed: Vec<String>, wanted: usize },
    #[error("the sync was cancelled or its lease taken over")]
    Stopped,
    #[error("the mirror configuration was removed")]
    Removed,
    #[error("the repository is no longer in MIRROR state")]
    NotMirror,
    /// The registry refused to point the tag; its message.
    #[error("{0}")]
    Tag(String),
    /// The registry refused to store `what` (a manifest or blob digest).
    #[error("storing {what}: {message}")]
    Storing { what: String, message: String },
    /// The upstream manifest at `reference` cannot be copied.
    #[error("{reference}: {why}")]
    Manifest { reference: String, why: String },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// How deep an index may nest indexes.
const MAX_DEPTH: usize = 4;

pub struct MirrorWorker {
    meta: MetaNodeHandle,
    registry: Arc<dyn Registry>,
    audit: AuditLog,
    cfg: MirrorSyncConfig,
    /// This node's region: a mirror preferring another waits before taking a due sync.
    region: String,
    /// Mirrors this node is syncing now.
    running: Mutex<HashSet<String>>,
}

/// One sync in progress: what it copies, and whether it must stop.
struct Run {
    repo: String,
    name: RepoName,
    rec: MirrorRecord,
    access: Access,
    upstream: Upstream,
    /// Set when the lease was lost (renewal refused) or the sync cancelled.
    stop: Arc<AtomicBool>,
    copied_blobs: usize,
    copied_manifests: usize,
}

impl MirrorWorker {
    pub fn new(meta: MetaNodeHandle, registry: Arc<dyn Registry>, audit: AuditLog, cfg: MirrorSyncConfig, region: String) -> Arc<MirrorWorker> {
        Arc::new(MirrorWorker { meta, registry, audit, cfg, region, running: Mutex::new(HashSet::new()) })
    }

    /// How long a due sync is left to the nodes of its preferred region
    /// before any node takes it: three of their polls.
    fn region_grace_ms(&self) -> u64 {
        3 * self.cfg.poll_interval_ms
    }

    /// Polls for due mirrors until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.cfg.poll_interval_ms == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms)) => self.poll_once().await,
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn poll_once(self: &Arc<Self>) {
        let state = self.meta.state();
        let now = now_ms();
        let mirrors = match rules::mirrors(&state) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "mirror records unreadable");
                return;
            }
        };
        for (repo, rec) in mirrors {
            if !rules::due(&rec, now) || rules::repo_state(&state, &repo).ok() != Some(RepoState::Mirror) {
                continue;
            }
            if self.running.lock().expect("running lock").contains(&repo) {
                continue;
            }
            // Due since the scheduled (or asked-for) start, or since the
            // lapse of a dead node's lease.
            let due_since = match (&rec.status.sync_status, &rec.lease) {
                (SyncStatus::Syncing, Some(l)) => l.until_ms,
                _ => rec.status.next_start_ms,
            };
            if rec.config.preferred_region.as_ref().is_some_and(|r| *r != self.region) && now < due_since + self.region_grace_ms() {
                continue;
            }
            let node = self.meta.id();
            let until_ms = now + self.cfg.lease_secs * 1000;
            match self.meta.write(Actor::Node, MetaCommand::Mirror(MirrorCommand::AcquireLease { repo: repo.clone(), node, now_ms: now, until_ms })).await {
                Ok(MetaResponse::Done) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(repo = %repo, error = %e, "mirror lease not taken");
                    continue;
                }
            }
            self.running.lock().expect("running lock").insert(repo.clone());
            let me = self.clone();
            tokio::spawn(async move {
                me.sync(&repo).await;
                me.running.lock().expect("running lock").remove(&repo);
            });
        }
    }

    fn log(&self, kind: &str, robot: &str, repo: &str, metadata: Vec<(&str, String)>) {
        let who = Principal::Robot { name: robot.to_string() };
        let ns = repo.split_once('/').map(|(n, _)| n);
        self.audit.record(kind, &who, None, ns, Some(repo), metadata);
    }

    /// Runs one sync of `repo`, whose lease this node holds, and records
    /// its outcome.
    async fn sync(self: &Arc<Self>, repo: &str) {
        let Ok(Some(rec)) = rules::mirror(&self.meta.state(), repo) else { return };
        let robot = rec.config.robot.clone();
        let node = self.meta.id();
        tracing::info!(repo = %repo, node, upstream = %rec.config.external_reference, "mirror sync started");
        self.log("repo_mirror_sync_started", &robot, repo, vec![("upstream", rec.config.external_reference.clone())]);
        let stop = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(self.clone().renew(repo.to_string(), stop.clone()));
        let timeout = Duration::from_secs(rec.config.timeout_s.max(1));
        let outcome = match tokio::time::timeout(timeout, self.sync_inner(repo, rec, stop.clone())).await {
            Ok(Ok(summary)) => SyncOutcome::Success(summary),
            Ok(Err(why)) => SyncOutcome::Fail(why.to_string()),
            Err(_) => SyncOutcome::Fail(format!("sync timed out after {} s", timeout.as_secs())),
        };
        renewer.abort();
        let lost = stop.load(Ordering::SeqCst);
        match &outcome {
            SyncOutcome::Success(m) => {
                tracing::info!(repo = %repo, summary = %m, "mirror sync succeeded");
                self.log("repo_mirror_sync_success", &robot, repo, vec![("message", m.clone())]);
            }
            SyncOutcome::Fail(m) => {
                tracing::warn!(repo = %repo, error = %m, "mirror sync failed");
                self.log("repo_mirror_sync_failed", &robot, repo, vec![("message", m.clone())]);
            }
        }
        if lost {
            // Cancelled, or another node holds the lease: its outcome is not ours to write.
            self.audit.flush().await;
            return;
        }
        let cmd = MirrorCommand::FinishSync { repo: repo.to_string(), node, outcome, now_ms: now_ms() };
        if let Err(e) = self.meta.write(Actor::Node, MetaCommand::Mirror(cmd)).await {
            tracing::warn!(repo = %repo, error = %e, "mirror sync outcome not recorded; the lease will lapse and the sync run again");
        }
        self.audit.flush().await;
    }

    /// Renews the lease every third of its length; a refusal (another node
    /// holds it, or the sync was cancelled) stops the sync.
    async fn renew(self: Arc<Self>, repo: String, stop: Arc<AtomicBool>) {
        let every = Duration::from_millis(self.cfg.lease_secs * 1000 / 3).max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(every).await;
            let now = now_ms();
            let cmd = MirrorCommand::RenewLease { repo: repo.clone(), node: self.meta.id(), now_ms: now, until_ms: now + self.cfg.lease_secs * 1000 };
            match self.meta.write(Actor::Node, MetaCommand::Mirror(cmd)).await {
                Ok(MetaResponse::Done) => {}
                Ok(other) => {
                    tracing::info!(repo = %repo, outcome = ?other, "mirror lease lost; stopping the sync");
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                // No quorum now: the lease may lapse; the next renewal says.
                Err(e) => tracing::debug!(repo = %repo, error = %e, "mirror lease not renewed"),
            }
        }
    }

    async fn sync_inner(&self, repo: &str, rec: MirrorRecord, stop: Arc<AtomicBool>) -> Result<String, SyncError> {
        let c = &rec.config;
        let password = match &c.sealed_password {
            Some(sealed) => Some(open(&self.meta.state(), repo, sealed)?),
            None => None,
        };
        let ca_pem = match &self.cfg.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|source| SyncError::CaBundle { path: p.clone(), source })?),
            None => None,
        };
        let upstream = Upstream::new(UpstreamSpec {
            reference: c.external_reference.clone(),
            username: c.username.clone(),
            password,
            verify_tls: c.verify_tls,
            http_proxy: c.http_proxy.clone(),
            https_proxy: c.https_proxy.clone(),
            no_proxy: c.no_proxy.clone(),
            ca_pem,
            timeout: Duration::from_secs(c.timeout_s.max(1)),
        })?;
        let name: RepoName = repo.parse()?;
        let access = Access { principal: Principal::Robot { name: c.robot.clone() }, ip: None };
        // The sync writes as the robot, with the robot's rights: one whose
        // write grant was taken away syncs nothing.
        let state = self.meta.state();
        let repo_rec = state.get::<berth_raft::command::RepositoryRecord>(&keys::repo(repo))?;
        let role = crate::identity::policy::repo_role(&state, &access.principal, repo, repo_rec.as_ref())?;
        if role < Some(berth_raft::command::Role::Write) {
            return Err(SyncError::NoWriteGrant { robot: c.robot.clone(), repo: repo.to_string() });
        }
        let mut run = Run { repo: repo.to_string(), name, rec: rec.clone(), access, upstream, stop, copied_blobs: 0, copied_manifests: 0 };

        let upstream_tags = run.upstream.tags().await?;
        let wanted: BTreeSet<String> = upstream_tags.into_iter().filter(|t| crate::mirror_config::tag_wanted(&c.tag_globs, t)).collect();
        let mut failed = Vec::new();
        for tag in &wanted {
            self.check(&run)?;
            match self.sync_tag(&mut run, tag).await {
                Ok(digest) => self.log("repo_mirror_sync_tag_success", &c.robot, repo, vec![("tag", tag.clone()), ("digest", digest.to_string())]),
                Err(why) => {
                    tracing::warn!(repo = %repo, tag = %tag, error = %why, "mirror tag not synced");
                    self.log("repo_mirror_sync_tag_failed", &c.robot, repo, vec![("tag", tag.clone()), ("message", why.to_string())]);
                    failed.push(format!("{tag}: {why}"));
                }
            }
        }
        // Tags no longer matched upstream go, into history.
        self.check(&run)?;
        let local = tags::visible_tag_names(&self.meta.state(), repo, now_ms())?;
        let mut deleted = 0;
        for tag in local.into_iter().filter(|t| !wanted.contains(t)) {
            self.check(&run)?;
            match self.registry.manifest_delete(&run.access, &run.name, &Reference::Tag(tag.clone())).await {
                Ok(()) => deleted += 1,
                Err(e) if e.code == berth_gateway::ErrorCode::ManifestUnknown => {}
                Err(e) => failed.push(format!("delete {tag}: {}", e.message)),
            }
        }
        if !failed.is_empty() {
            return Err(SyncError::Tags { failed, wanted: wanted.len() });
        }
        Ok(format!(
            "synced {} tags ({} manifests and {} blobs copied), deleted {deleted} tags no longer upstream",
            wanted.len(),
            run.copied_manifests,
            run.copied_blobs
        ))
    }

    /// Whether the sync may go on: the lease is still this node's, the
    /// repository still a mirror.
    fn check(&self, run: &Run) -> Result<(), SyncError> {
        if run.stop.load(Ordering::SeqCst) {
            return Err(SyncError::Stopped);
        }
        let state = self.meta.state();
        let rec = rules::mirror(&state, &run.repo)?.ok_or(SyncError::Removed)?;
        if rec.status.sync_status == SyncStatus::Cancel || rec.lease.as_ref().map(|l| l.node) != Some(self.meta.id()) {
            run.stop.store(true, Ordering::SeqCst);
            return Err(SyncError::Stopped);
        }
        // The lease is still ours: this sync's failure is ours to record.
        if rules::repo_state(&state, &run.repo)? != RepoState::Mirror {
            return Err(SyncError::NotMirror);
        }
        Ok(())
    }

    /// Copies `tag`'s manifest with everything it references, then points
    /// the tag at it.
    async fn sync_tag(&self, run: &mut Run, tag: &str) -> Result<Digest, SyncError> {
        let (digest, bytes, media_type) = self.copy_manifest(run, tag, 0).await?;
        let current = tags::visible_tag(&self.meta.state(), &run.repo, tag, now_ms())?;
        if current.is_some_and(|t| t.digest == digest) {
            return Ok(digest);
        }
        self.registry
            .manifest_put(&run.access, &run.name, &Reference::Tag(tag.to_string()), Some(&media_type), bytes)
            .await
            .map_err(|e| SyncError::Tag(e.message))?;
        Ok(digest)
    }

    /// Copies the manifest at `reference` (and, for an index, its kept
    /// children) and stores it by digest; returns what was stored.
    fn copy_manifest<'a>(&'a self, run: &'a mut Run, reference: &'a str, depth: usize) -> CopyFuture<'a> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(manifest_error(reference, format!("indexes nested deeper than {MAX_DEPTH}")));
            }
            let fetched = run.upstream.manifest(reference).await?;
            let parsed = manifest::parse(&fetched.bytes, fetched.media_type.as_deref()).map_err(|e| manifest_error(reference, e.message))?;
            let mut bytes = fetched.bytes.clone();
            if parsed.kind == Kind::Index {
                let mut doc: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
                let children = doc.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
                let filter = run.rec.config.architecture_filter.clone();
                let keep = |d: &serde_json::Value| match &filter {
                    None => true,
                    Some(archs) => d.pointer("/platform/architecture").and_then(|a| a.as_str()).is_some_and(|a| archs.iter().any(|x| x == a)),
                };
                let kept: Vec<serde_json::Value> = children.iter().filter(|d| keep(d)).cloned().collect();
                if kept.is_empty() {
                    return Err(manifest_error(reference, "no child matches the architecture filter"));
                }
                for child in &kept {
                    let d = child.get("digest").and_then(|d| d.as_str()).ok_or_else(|| manifest_error(reference, "a child without digest"))?;
                    self.copy_manifest(run, d, depth + 1).await?;
                }
                // A filtered index names only the children kept: berth never
                // stores an index whose children it does not hold.
                if kept.len() != children.len() {
                    doc["manifests"] = serde_json::Value::Array(kept);
                    bytes = Bytes::from(serde_json::to_vec(&doc)?);
                }
            }
            for blob in &parsed.blobs {
                self.copy_blob(run, blob).await?;
            }
            let digest = Digest::sha256_of(&bytes);
            let media_type = parsed.media_type.clone();
            let held = self.meta.state().get_raw(&keys::manifest(&run.repo, &digest))?.is_some();
            if !held {
                self.registry
                    .manifest_put(&run.access, &run.name, &Reference::Digest(digest.clone()), Some(&media_type), bytes.clone())
                    .await
                    .map_err(|e| SyncError::Storing { what: format!("manifest {digest}"), message: e.message })?;
                run.copied_manifests += 1;
            }
            Ok((digest, bytes, media_type))
        })
    }

    /// Copies one blob unless the repository holds it with a copy on this
    /// node. A copy only elsewhere is fetched again from the upstream: its
    /// holder may be the node that died mid-sync, and the manifest's
    /// `min_copies` wait needs a copy that can be replicated.
    async fn copy_blob(&self, run: &mut Run, digest: &Digest) -> Result<(), SyncError> {
        let state = self.meta.state();
        let linked = state.get_raw(&keys::link(&run.repo, digest))?.is_some();
        let here = state.get::<BlobRecord>(&keys::blob(digest))?.is_some_and(|b| b.holders.contains(&self.meta.id()));
        if linked && here {
            return Ok(());
        }
        let stream = run.upstream.blob(digest).await?;
        self.registry
            .blob_put(&run.access, &run.name, digest, Box::pin(stream))
            .await
            .map_err(|e| SyncError::Storing { what: format!("blob {digest}"), message: e.message })?;
        run.copied_blobs += 1;
        Ok(())
    }
}

fn manifest_error(reference: &str, why: impl Into<String>) -> SyncError {
    SyncError::Manifest { reference: reference.to_string(), why: why.into() }
}
