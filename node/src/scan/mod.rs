//! Vulnerability scanning as cluster work (issue 17).
//!
//! - Every stored image manifest is queued in the Raft command that stores
//!   it (`berth_raft::state::scan`). Each node's [`Scanner::run`] looks for
//!   queued scans; a node that holds every layer takes one at once, the
//!   others after `[scan] local_preference_ms`, each under a lease renewed
//!   while it works. A killed node's lease lapses and another node takes
//!   the scan over; after `SCAN_ATTEMPTS_MAX` leases the scan is `failed`.
//! - A layer is indexed once (any node, on a blocking thread, under the
//!   `[scan]` bounds) and its index kept in the metadata for every image
//!   that shares it; the merged image index is kept with the scan.
//! - Feeds are imported as blobs (every node reads the same bytes) and
//!   referenced from the metadata; each node builds its advisory database
//!   from them when the feeds' generation changes.
//! - The security API matches on the fly against the node's database, so
//!   every node answers the same once it has the same feeds. The leader
//!   re-matches scanned manifests after each import (no layer is read) and
//!   emits `vulnerability_found` for what a manifest did not have before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_common::{Digest, RepoName};
use berth_gateway::Registry;
use berth_gateway::{Access, Principal, Reference};
use berth_raft::command::{
    FeedSourceRecord, LayerIndexRecord, ManifestRecord, MetaCommand, MetaResponse, NotificationCommand, NotificationEvent, NotificationScope, ScanCommand,
    ScanRecord, ScanStatus,
};
use berth_raft::state::{keys, notifications, scan as rules, tags, StateRead};
use berth_raft::{Actor, MetaNodeHandle, MetaState};
use berth_replication::Replicator;
use berth_scanner::feed::Severity;
use berth_scanner::index::{ImageIndex, LayerIndex, Limits};
use berth_scanner::matcher::{match_image, AdvisoryDb, Report};
use futures::StreamExt;
use tokio::sync::{watch, Mutex};

use crate::config::ScanConfig;
use crate::util::now_ms;

/// The largest feed snapshot a node reads into memory.
pub const FEED_MAX_BYTES: u64 = 1 << 30;

/// Why a scan or an import did not happen, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Feed(String),
    #[error("metadata unavailable: {0}")]
    Meta(String),
    #[error("blob store: {0}")]
    Blob(String),
}

/// Why a scheduled fetch got no feed; the words are the source's
/// recorded outcome.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: reqwest::StatusCode },
    #[error("{url} is larger than {FEED_MAX_BYTES} bytes")]
    TooLarge { url: String },
}

/// Why an image's SBOM was not attached as a referrer (logged; the scan
/// goes on).
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("metadata: {0}")]
    State(#[from] berth_raft::state::StateError),
    #[error("the document: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("repository name: {0}")]
    Name(#[from] berth_common::NameError),
    /// The registry refused a write (its API error's words).
    #[error("{what}: {message}")]
    Registry { what: String, message: String },
}

/// What a feed source's URL answered.
enum Fetched {
    NotModified,
    Body { bytes: Vec<u8>, etag: Option<String>, last_modified: Option<String> },
}

/// Why an image's layers could not be indexed; the words are the scan's
/// recorded reason.
#[derive(Debug, thiserror::Error)]
enum IndexError {
    #[error(transparent)]
    Blob(#[from] berth_replication::BlobError),
    #[error("no node holds the layer")]
    NotHeld,
    #[error("indexer stopped: {0}")]
    Stopped(tokio::task::JoinError),
    #[error(transparent)]
    Index(#[from] berth_scanner::Error),
    #[error("layer {layer}: {source}")]
    Layer { layer: Digest, source: Box<IndexError> },
}

pub struct Scanner {
    meta: MetaNodeHandle,
    replicator: Replicator,
    /// Where the SBOM referrer is stored, through the registry's own push
    /// path (copies, holders and the referrers index as for any push).
    registry: Arc<dyn Registry>,
    cfg: ScanConfig,
    /// The advisory database and the feed generation it was built from.
    db: Mutex<(u64, Arc<AdvisoryDb>)>,
    /// Feed sources this node is fetching now.
    fetching: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When this node last read every scan record for queued ones.
    last_sweep: std::sync::Mutex<Option<Instant>>,
    /// The generation of this node's last complete re-match pass, and when.
    rematched: std::sync::Mutex<Option<(u64, Instant)>>,
}

/// How often a node reads every scan record (see [`Scanner::pass`]).
const FULL_SWEEP: Duration = Duration::from_secs(60);

/// Media types of image configurations: anything else is an artifact,
/// reported `unsupported`.
const IMAGE_CONFIGS: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

fn severity_of_level(level: &str) -> Severity {
    match level {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        "negligible" => Severity::Negligible,
        _ => Severity::Unknown,
    }
}

impl Scanner {
    pub fn new(meta: MetaNodeHandle, replicator: Replicator, registry: Arc<dyn Registry>, cfg: ScanConfig) -> Arc<Scanner> {
        Arc::new(Scanner {
            meta,
            replicator,
            registry,
            cfg,
            db: Mutex::new((0, Arc::new(AdvisoryDb::default()))),
            fetching: Default::default(),
            last_sweep: Default::default(),
            rematched: Default::default(),
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_entries: self.cfg.max_layer_entries,
            max_total_bytes: self.cfg.max_layer_bytes,
            max_time: Duration::from_secs(self.cfg.max_layer_secs),
            ..Limits::default()
        }
    }

    async fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ScanError> {
        let body = self.replicator.open(digest, None).await.map_err(|e| ScanError::Blob(e.to_string()))?;
        let Some(body) = body else { return Err(ScanError::Blob(format!("no node holds {digest}"))) };
        if body.size > max {
            return Err(ScanError::Blob(format!("{digest} is {} bytes, more than {max}", body.size)));
        }
        let mut out = Vec::with_capacity(body.size as usize);
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| ScanError::Blob(e.to_string()))?);
        }
        Ok(out)
    }

    /// The advisory database of the feeds' current generation, rebuilt
    /// from the feed blobs when it changed.
    pub async fn advisories(&self) -> Result<(u64, Arc<AdvisoryDb>), ScanError> {
        let state = self.meta.state();
        let generation = rules::generation(&state).map_err(|e| ScanError::Meta(e.to_string()))?;
        let mut db = self.db.lock().await;
        if db.0 == generation {
            return Ok(db.clone());
        }
        let feeds = rules::feeds(&state).map_err(|e| ScanError::Meta(e.to_string()))?;
        let mut all = Vec::new();
        for f in &feeds {
            let bytes = self.read_blob(&f.digest, FEED_MAX_BYTES).await?;
            let parsed = tokio::task::spawn_blocking(move || berth_scanner::feed::parse(&bytes))
                .await
                .map_err(|e| ScanError::Feed(e.to_string()))?
                .map_err(|e| ScanError::Feed(format!("feed {}: {e}", f.name)))?;
            all.extend(parsed.1);
        }
        *db = (generation, Arc::new(AdvisoryDb::new(all)));
        metrics::gauge!("berth_scan_advisories").set(db.1.len() as f64);
        Ok(db.clone())
    }

    /// Imports a feed snapshot: parsed first (a bad file changes nothing),
    /// stored as a blob on this node, then recorded through Raft by
    /// `actor` (a superuser).
    pub async fn import_feed(&self, actor: Actor, name: &str, bytes: Vec<u8>) -> Result<berth_raft::command::FeedRecord, ScanError> {
        let feed = self.store_feed(name, bytes).await?;
        match self.meta.write(actor, MetaCommand::Scan(ScanCommand::ImportFeed { feed: feed.clone(), node: self.meta.id() })).await {
            Ok(MetaResponse::Done) => {}
            Ok(other) => return Err(ScanError::Meta(format!("import refused: {other:?}"))),
            Err(e) => return Err(ScanError::Meta(e.to_string())),
        }
        let state = self.meta.state();
        Ok(rules::feeds(&state).ok().and_then(|f| f.into_iter().find(|f| f.name == name)).unwrap_or(feed))
    }

    /// Parses a feed snapshot (a bad file is an error and stores nothing)
    /// and stores it as a blob on this node; answers the record to write.
    async fn store_feed(&self, name: &str, bytes: Vec<u8>) -> Result<berth_raft::command::FeedRecord, ScanError> {
        if name.is_empty() || name.len() > 256 {
            return Err(ScanError::Feed("a feed's name is 1 to 256 characters".into()));
        }
        let digest = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        let (bytes, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = berth_scanner::feed::parse(&bytes);
            (bytes, parsed)
        })
        .await
        .map_err(|e| ScanError::Feed(e.to_string()))?;
        let (kind, advisories) = parsed.map_err(|e| ScanError::Feed(e.to_string()))?;
        let store = self.replicator.store();
        let _pin = store.pin(&digest).await;
        let mut staging = store.create_staging().await.map_err(|e| ScanError::Blob(e.to_string()))?;
        staging.write(bytes.into()).await.map_err(|e| ScanError::Blob(e.to_string()))?;
        staging.commit(store, &digest).await.map_err(|e| ScanError::Blob(e.to_string()))?;
        Ok(berth_raft::command::FeedRecord {
            name: name.to_string(),
            kind: kind.name().to_string(),
            digest,
            size,
            advisories: advisories.len() as u64,
            imported_at_ms: now_ms(),
            generation: 0,
        })
    }

    /// A manifest's scan status and, once scanned, its report against
    /// this node's advisories.
    pub async fn report(&self, digest: &Digest) -> Result<Option<(ScanRecord, Option<Report>)>, ScanError> {
        let state = self.meta.state();
        let Some(rec) = rules::scan(&state, digest).map_err(|e| ScanError::Meta(e.to_string()))? else { return Ok(None) };
        if rec.status != ScanStatus::Scanned {
            return Ok(Some((rec, None)));
        }
        let index: ImageIndex = serde_json::from_slice(&rec.index_json).map_err(|e| ScanError::Meta(format!("stored index unreadable: {e}")))?;
        let (_, db) = self.advisories().await?;
        let report = match_image(&db, &index);
        Ok(Some((rec, Some(report))))
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.cfg.poll_interval_ms == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms)) => {}
            }
            if let Err(e) = self.pass().await {
                tracing::debug!(error = %e, "scan pass stopped");
            }
        }
    }

    async fn holds_all(&self, layers: &[Digest]) -> bool {
        for l in layers {
            if !matches!(self.replicator.store().stat(l).await, Ok(Some(_))) {
                return false;
            }
        }
        true
    }

    /// The queued scans: from the queue index, and every
    /// [`FULL_SWEEP`] (and on a node's first pass) from every scan record,
    /// which also finds scans queued before the index existed. The sweep
    /// decodes every record, so it runs on a blocking thread.
    async fn queued_scans(&self, state: &MetaState) -> Result<Vec<(Digest, ScanRecord)>, ScanError> {
        let sweep = {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= FULL_SWEEP);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        let state = state.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<(Digest, ScanRecord)>, berth_raft::state::StateError> {
            if sweep {
                return Ok(rules::scans(&state)?.into_iter().filter(|(_, r)| r.status == ScanStatus::Queued).collect());
            }
            let mut out = Vec::new();
            for d in rules::queued(&state)? {
                if let Some(r) = rules::scan(&state, &d)?.filter(|r| r.status == ScanStatus::Queued) {
                    out.push((d, r));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| ScanError::Meta(e.to_string()))?
        .map_err(|e| ScanError::Meta(e.to_string()))
    }

    /// One look at the queue (and, on the leader, at re-matches due).
    pub async fn pass(self: &Arc<Self>) -> Result<(), ScanError> {
        let state = self.meta.state();
        let scans = self.queued_scans(&state).await?;
        let now = now_ms();
        metrics::gauge!("berth_scans_queued").set(scans.len() as f64);
        if let Some(oldest) = rules::feeds(&state).ok().and_then(|f| f.iter().map(|f| f.imported_at_ms).min()) {
            metrics::gauge!("berth_scan_feed_age_seconds").set(now.saturating_sub(oldest) as f64 / 1000.0);
        }
        for (digest, rec) in scans {
            if !rules::takeable(&rec, now_ms()) {
                continue;
            }
            let Some(manifest) = manifest_of(&state, &digest, &rec) else { continue };
            let layers = layers_of(&manifest).map(|l| l.into_iter().map(|(d, _)| d).collect::<Vec<_>>()).unwrap_or_default();
            let waited = now.saturating_sub(rec.queued_at_ms) >= self.cfg.local_preference_ms;
            if rec.attempts == 0 && !waited && !self.holds_all(&layers).await {
                continue;
            }
            self.scan_one(&digest, &manifest).await;
        }
        self.source_pass(&state);
        if self.meta.is_leader() {
            self.rematch_pass().await?;
        }
        Ok(())
    }

    /// Starts the fetch of every feed source that is due and not being
    /// fetched by another node (each in its own task, so a slow URL does
    /// not hold up scans).
    fn source_pass(self: &Arc<Self>, state: &MetaState) {
        let Ok(sources) = rules::sources(state) else { return };
        let now = now_ms();
        let me = self.meta.id();
        for src in sources {
            if !rules::source_takeable(&src, me, now) || !self.fetching.lock().unwrap_or_else(|e| e.into_inner()).insert(src.name.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let name = src.name.clone();
                this.fetch_source(src).await;
                this.fetching.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            });
        }
    }

    /// One scheduled fetch under the source's lease: a conditional GET,
    /// and on a new snapshot its import, recorded with the validators in
    /// one command. A failure is retried after at most a minute.
    async fn fetch_source(&self, src: FeedSourceRecord) {
        let node = self.meta.id();
        let lease_ms = self.cfg.lease_secs * 1000;
        let name = src.name.clone();
        let acquire = move |now: u64| ScanCommand::AcquireSource { name: name.clone(), node, now_ms: now, until_ms: now + lease_ms };
        if !matches!(self.meta.write(Actor::Node, MetaCommand::Scan(acquire(now_ms()))).await, Ok(MetaResponse::Done)) {
            return;
        }
        tracing::info!(source = %src.name, url = %src.url, node, "feed fetch started");
        let renew = {
            let (meta, cmd) = (self.meta.clone(), acquire.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis((lease_ms / 3).max(100))).await;
                    if !matches!(meta.write(Actor::Node, MetaCommand::Scan(cmd(now_ms()))).await, Ok(MetaResponse::Done)) {
                        return;
                    }
                }
            })
        };
        let fetched = self.conditional_get(&src).await;
        let interval_ms = src.interval_secs.saturating_mul(1000);
        let (outcome, etag, last_modified, feed, due_at_ms) = match fetched {
            Ok(Fetched::NotModified) => ("not modified".to_string(), src.etag.clone(), src.last_modified.clone(), None, now_ms() + interval_ms),
            Ok(Fetched::Body { bytes, etag, last_modified }) => {
                let current = rules::feeds(&self.meta.state()).ok().and_then(|f| f.into_iter().find(|f| f.name == src.name)).map(|f| f.digest);
                if current.as_ref() == Some(&Digest::sha256_of(&bytes)) {
                    ("unchanged".to_string(), etag, last_modified, None, now_ms() + interval_ms)
                } else {
                    match self.store_feed(&src.name, bytes).await {
                        Ok(feed) => (format!("imported {}", feed.digest), etag, last_modified, Some(feed), now_ms() + interval_ms),
                        Err(e) => (format!("error: {e}"), src.etag.clone(), src.last_modified.clone(), None, now_ms() + interval_ms.min(60_000)),
                    }
                }
            }
            Err(e) => (format!("error: {e}"), src.etag.clone(), src.last_modified.clone(), None, now_ms() + interval_ms.min(60_000)),
        };
        renew.abort();
        let label = outcome.split_whitespace().next().unwrap_or("").trim_end_matches(':').to_string();
        metrics::counter!("berth_scan_feed_fetches_total", "outcome" => label).increment(1);
        let cmd = ScanCommand::SourceFetched { name: src.name.clone(), node, now_ms: now_ms(), due_at_ms, etag, last_modified, outcome: outcome.clone(), feed };
        let written = self.meta.write(Actor::Node, MetaCommand::Scan(cmd)).await;
        tracing::info!(source = %src.name, outcome = %outcome, written = ?written.as_ref().ok(), "feed fetch finished");
    }

    /// `GET url` with `If-None-Match` / `If-Modified-Since` from the last
    /// answer; the body bounded by [`FEED_MAX_BYTES`].
    async fn conditional_get(&self, src: &FeedSourceRecord) -> Result<Fetched, FetchError> {
        let url = || src.url.clone();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.cfg.feed_fetch_timeout_secs))
            .build()
            .map_err(|source| FetchError::Http { url: url(), source })?;
        let mut req = client.get(&src.url);
        if let Some(e) = &src.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, e);
        }
        if let Some(m) = &src.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
        }
        let resp = req.send().await.map_err(|source| FetchError::Http { url: url(), source })?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !resp.status().is_success() {
            return Err(FetchError::Status { url: url(), status: resp.status() });
        }
        let header = |n: reqwest::header::HeaderName| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (etag, last_modified) = (header(reqwest::header::ETAG), header(reqwest::header::LAST_MODIFIED));
        if resp.content_length().is_some_and(|n| n > FEED_MAX_BYTES) {
            return Err(FetchError::TooLarge { url: url() });
        }
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|source| FetchError::Http { url: url(), source })?);
            if bytes.len() as u64 > FEED_MAX_BYTES {
                return Err(FetchError::TooLarge { url: url() });
            }
        }
        Ok(Fetched::Body { bytes, etag, last_modified })
    }

    async fn scan_one(&self, digest: &Digest, manifest: &ManifestRecord) {
        let node = self.meta.id();
        let lease_ms = self.cfg.lease_secs * 1000;
        let now = now_ms();
        let acquire = ScanCommand::Acquire { digest: digest.clone(), node, now_ms: now, until_ms: now + lease_ms };
        if !matches!(self.meta.write(Actor::Node, MetaCommand::Scan(acquire)).await, Ok(MetaResponse::Done)) {
            return;
        }
        tracing::info!(digest = %digest, node, "scan started");
        let started = Instant::now();
        let renew = {
            let meta = self.meta.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis((lease_ms / 3).max(100))).await;
                    let cmd = ScanCommand::Renew { digest: digest.clone(), node, until_ms: now_ms() + lease_ms };
                    if !matches!(meta.write(Actor::Node, MetaCommand::Scan(cmd)).await, Ok(MetaResponse::Done)) {
                        return;
                    }
                }
            })
        };
        // A drill's pause (`BERTH_SCAN_PAUSE_MS`): holds the lease without
        // working, so a test can kill the node mid-scan.
        if let Some(ms) = std::env::var("BERTH_SCAN_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let outcome = self.index_manifest(manifest).await;
        if let Ok(Some(index)) = &outcome {
            // Under the lease, before the scan is recorded: a node killed
            // here leaves the scan to another, which attaches the same bytes.
            let repos = rules::scan(&self.meta.state(), digest).ok().flatten().map(|r| r.repos).unwrap_or_default();
            for repo in repos {
                if let Err(e) = self.attach_sbom(&repo, digest, index).await {
                    tracing::warn!(repo = %repo, digest = %digest, error = %e, "SBOM not attached as a referrer");
                }
            }
        }
        let (status, reason, index_json, findings, generation) = match outcome {
            Ok(Some(index)) => {
                let json = serde_json::to_vec(&index).unwrap_or_default();
                match self.advisories().await {
                    Ok((generation, db)) => (ScanStatus::Scanned, None, json, match_image(&db, &index).keys(), generation),
                    Err(e) => (ScanStatus::Scanned, Some(format!("not matched yet: {e}")), json, vec![], 0),
                }
            }
            Ok(None) => (ScanStatus::Unsupported, Some("not a container image".to_string()), vec![], vec![], 0),
            Err(why) => (ScanStatus::Failed, Some(why.to_string()), vec![], vec![], 0),
        };
        renew.abort();
        let cmd = ScanCommand::Finish { digest: digest.clone(), node, status, reason: reason.clone(), index_json, findings, generation, now_ms: now_ms() };
        let written = self.meta.write(Actor::Node, MetaCommand::Scan(cmd)).await;
        metrics::counter!("berth_scans_total", "status" => status.as_str()).increment(1);
        metrics::histogram!("berth_scan_seconds").record(started.elapsed().as_secs_f64());
        tracing::info!(digest = %digest, status = status.as_str(), reason = reason.as_deref().unwrap_or(""), written = ?written.as_ref().ok(), "scan finished");
    }

    /// Stores the image's SBOM in `repo` as an OCI artifact whose
    /// `subject` is the image, so the referrers API (`oras discover`)
    /// lists it. The same index gives the same bytes, so a second attach
    /// (a scan taken over, a rescan) finds the manifest there and stops.
    async fn attach_sbom(&self, repo: &str, subject: &Digest, index: &ImageIndex) -> Result<(), AttachError> {
        let state = self.meta.state();
        let Some(image) = state.get::<ManifestRecord>(&keys::manifest(repo, subject))? else {
            return Ok(());
        };
        let doc = serde_json::to_vec(&sbom_document(repo, subject, index))?;
        let (artifact, doc_digest) = sbom_artifact(&image, &doc);
        let artifact_digest = Digest::sha256_of(&artifact);
        if state.get_raw(&keys::manifest(repo, &artifact_digest))?.is_some() {
            return Ok(());
        }
        let name: RepoName = repo.parse()?;
        // The node acts as the operator: no user pushed this, and a
        // repository that is read-only or a mirror refuses it like any push.
        let access = Access { principal: Principal::Operator, ip: None };
        for (digest, bytes) in [(&doc_digest, doc), (&Digest::sha256_of(EMPTY_CONFIG), EMPTY_CONFIG.to_vec())] {
            let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)) });
            let stored = self.registry.blob_put(&access, &name, digest, Box::pin(body)).await;
            stored.map_err(|e| AttachError::Registry { what: format!("blob {digest}"), message: e.message })?;
        }
        self.registry
            .manifest_put(&access, &name, &Reference::Digest(artifact_digest), Some(OCI_MANIFEST), bytes::Bytes::from(artifact))
            .await
            .map_err(|e| AttachError::Registry { what: "manifest".into(), message: e.message })?;
        Ok(())
    }

    /// The merged index of an image, `None` for an artifact, `Err` with
    /// the reason when a layer cannot be indexed.
    async fn index_manifest(&self, manifest: &ManifestRecord) -> Result<Option<ImageIndex>, IndexError> {
        let Some(layers) = layers_of(manifest) else { return Ok(None) };
        let mut indexed = Vec::new();
        for (layer, media_type) in layers {
            if !media_type.contains("tar") {
                return Ok(None);
            }
            let state = self.meta.state();
            let cached = rules::layer_index(&state, &layer).ok().flatten().filter(|r| r.indexer_version == berth_scanner::INDEXER_VERSION);
            let index = match cached.and_then(|r| serde_json::from_slice::<LayerIndex>(&r.json).ok()) {
                Some(i) => i,
                None => {
                    let i = self.index_layer(&layer).await.map_err(|e| IndexError::Layer { layer: layer.clone(), source: Box::new(e) })?;
                    let record = LayerIndexRecord { indexer_version: berth_scanner::INDEXER_VERSION, json: serde_json::to_vec(&i).unwrap_or_default() };
                    let _ = self.meta.write(Actor::Node, MetaCommand::Scan(ScanCommand::PutLayerIndex { layer: layer.clone(), record })).await;
                    i
                }
            };
            indexed.push((layer.to_string(), index));
        }
        Ok(Some(berth_scanner::index::merge(&indexed)))
    }

    async fn index_layer(&self, layer: &Digest) -> Result<LayerIndex, IndexError> {
        let body = self.replicator.open(layer, None).await?.ok_or(IndexError::NotHeld)?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body.stream));
        let limits = self.limits();
        tokio::task::spawn_blocking(move || berth_scanner::index::index_layer(reader, &limits)).await.map_err(IndexError::Stopped)?.map_err(IndexError::from)
    }

    /// The leader's: matches every scanned manifest of an older generation
    /// again, and emits `vulnerability_found` for new findings.
    ///
    /// It reads every scan record, so it runs when the generation changed
    /// since the last complete pass, and every [`FULL_SWEEP`] for scans
    /// that finished against an older generation (a feed imported while
    /// they ran), on a blocking thread.
    async fn rematch_pass(&self) -> Result<(), ScanError> {
        let (generation, db) = self.advisories().await?;
        if generation == 0 {
            return Ok(());
        }
        {
            let done = self.rematched.lock().unwrap_or_else(|e| e.into_inner());
            if done.is_some_and(|(g, at)| g == generation && at.elapsed() < FULL_SWEEP) {
                return Ok(());
            }
        }
        let state = self.meta.state();
        let records = {
            let state = state.clone();
            tokio::task::spawn_blocking(move || rules::scans(&state))
                .await
                .map_err(|e| ScanError::Meta(e.to_string()))?
                .map_err(|e| ScanError::Meta(e.to_string()))?
        };
        for (digest, rec) in records {
            if rec.status != ScanStatus::Scanned || rec.matched_generation >= generation {
                continue;
            }
            let Ok(index) = serde_json::from_slice::<ImageIndex>(&rec.index_json) else { continue };
            let report = match_image(&db, &index);
            let keys = report.keys();
            // A first match (generation 0) sets the baseline silently.
            if rec.matched_generation > 0 {
                self.emit_new(&state, &digest, &rec, &report).await;
            }
            let cmd = ScanCommand::Rematched { digest: digest.clone(), generation, findings: keys };
            if let Err(e) = self.meta.write(Actor::Node, MetaCommand::Scan(cmd)).await {
                return Err(ScanError::Meta(e.to_string()));
            }
        }
        *self.rematched.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, Instant::now()));
        Ok(())
    }

    async fn emit_new(&self, state: &MetaState, digest: &Digest, rec: &ScanRecord, report: &Report) {
        let now = now_ms();
        let Ok(all) = notifications::all(state) else { return };
        for repo in &rec.repos {
            let tags: Vec<String> = tags::visible_tag_names(state, repo, now)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| tags::visible_tag(state, repo, t, now).ok().flatten().is_some_and(|r| r.digest == *digest))
                .collect();
            let ns = repo.split('/').next().unwrap_or("");
            for n in all.iter().filter(|n| n.event == "vulnerability_found" && !n.skipped()) {
                let covers = match &n.scope {
                    NotificationScope::Repository(r) => r == repo,
                    NotificationScope::Namespace(x) => x == ns,
                };
                if !covers {
                    continue;
                }
                let level = serde_json::from_str::<serde_json::Value>(&n.event_config_json)
                    .ok()
                    .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(severity_of_level))
                    .unwrap_or(Severity::Unknown);
                for (p, fs) in report.index.packages.iter().zip(&report.findings) {
                    for f in fs {
                        if rec.findings.iter().any(|(id, pkg)| *id == f.id && *pkg == p.package.name) || f.severity < level {
                            continue;
                        }
                        let event = NotificationEvent::VulnerabilityFound {
                            repo: repo.clone(),
                            digest: digest.clone(),
                            tags: tags.clone(),
                            id: f.id.clone(),
                            level: f.severity.as_str().to_lowercase(),
                            description: f.description.clone(),
                        };
                        let once = format!("vuln:{digest}:{}:{}", f.id, p.package.name);
                        let cmd = MetaCommand::Notification(NotificationCommand::Emit { uuid: n.uuid.clone(), event, once: Some(once), now_ms: now });
                        let _ = self.meta.write(Actor::Node, cmd).await;
                    }
                }
            }
        }
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI empty descriptor's content: an artifact's config.
const EMPTY_CONFIG: &[u8] = b"{}";

/// The CycloneDX document of an image in `repo` from its merged index.
pub fn sbom_document(repo: &str, digest: &Digest, index: &ImageIndex) -> serde_json::Value {
    berth_scanner::sbom::cyclonedx(index, repo, &digest.to_string(), env!("CARGO_PKG_VERSION"))
}

/// The artifact manifest carrying `doc` with `image` as its subject (OCI
/// image spec 1.1, "artifact usage"), and the document's digest.
fn sbom_artifact(image: &ManifestRecord, doc: &[u8]) -> (Vec<u8>, Digest) {
    let doc_digest = Digest::sha256_of(doc);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": berth_scanner::sbom::MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::sha256_of(EMPTY_CONFIG).to_string(), "size": EMPTY_CONFIG.len(), "data": "e30="},
        "layers": [{"mediaType": berth_scanner::sbom::MEDIA_TYPE, "digest": doc_digest.to_string(), "size": doc.len()}],
        "subject": {"mediaType": image.media_type, "digest": image.digest.to_string(), "size": image.bytes.len()},
        "annotations": {"org.opencontainers.image.description": "CycloneDX 1.5 SBOM made by berth's scanner"},
    });
    (serde_json::to_vec(&manifest).unwrap_or_default(), doc_digest)
}

fn manifest_of(state: &impl StateRead, digest: &Digest, rec: &ScanRecord) -> Option<ManifestRecord> {
    rec.repos.iter().find_map(|repo| state.get::<ManifestRecord>(&keys::manifest(repo, digest)).ok().flatten())
}

/// The layers of an image manifest with their media types, bottom first;
/// `None` when it is not an image (an index, an artifact).
pub fn layers_of(m: &ManifestRecord) -> Option<Vec<(Digest, String)>> {
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
    let config_type = v.get("config")?.get("mediaType")?.as_str()?;
    if !IMAGE_CONFIGS.contains(&config_type) {
        return None;
    }
    let mut out = Vec::new();
    for l in v.get("layers")?.as_array()? {
        let d: Digest = l.get("digest")?.as_str()?.parse().ok()?;
        let t = l.get("mediaType").and_then(|t| t.as_str()).unwrap_or("").to_string();
        out.push((d, t));
    }
    Some(out)
}
