//! Upload sessions: blobs pushed in pieces (`POST`, `PATCH`…, `PUT`).
//!
//! A session lives on the node that received its `POST`; its id starts with
//! that node's id (`<node>-<random>`) so any other node can forward the
//! session's requests to the owner. The staging file and the running hash
//! stay here between requests; a session idle for longer than the upload
//! timeout is dropped and its staging file removed.
//!
//! Sessions are cheap to open and last an hour, so they are capped per
//! account and per node ([`UploadCaps`]); a session that ends by any road
//! (finished, cancelled, broken, expired) gives its slot back. Between
//! requests a session's staging file is parked: closed, no write buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_common::{Digest, NodeId};
use berth_gateway::{ApiError, ByteStream, ErrorCode, UploadState};
use berth_replication::pipeline::{Pipeline, Sealing};
use berth_replication::{BlobError, BlobPin, BlobStore, Replicator, StagingBlob};
use futures::StreamExt;

struct Session {
    repo: String,
    staging: StagingBlob,
    /// The upload's other copies, streamed to peers as it arrives.
    pipeline: Option<Pipeline>,
    last_used: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// How many upload sessions may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct UploadCaps {
    pub per_account: usize,
    pub per_node: usize,
}

/// The open sessions and who opened them, under one lock so a count
/// never disagrees with the map.
#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, (String, Slot)>,
    per_account: HashMap<String, usize>,
}

pub struct UploadManager {
    node_id: NodeId,
    store: BlobStore,
    /// Streams each upload's other copies; none in unit tests.
    replicator: Option<Replicator>,
    ttl: Duration,
    caps: UploadCaps,
    sessions: Mutex<Sessions>,
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(ErrorCode::BlobUploadUnknown, format!("upload {id} is unknown (finished, cancelled or expired)"))
}

/// Linux's "disk quota exceeded", which std has no stable kind for yet.
const EDQUOT: i32 = 122;

pub fn blob_err(e: BlobError) -> ApiError {
    match e {
        BlobError::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestInvalid, e.to_string()),
        BlobError::RangeInvalid { .. } => ApiError::new(ErrorCode::RangeInvalid, e.to_string()),
        // A full disk is this node's problem, not the request's: 503 tells
        // the client (and a load balancer) that another node may take it.
        BlobError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(EDQUOT) => {
            tracing::error!(error = %e, "blob store is out of space");
            ApiError::new(ErrorCode::Unavailable, "this node has no space left for blobs; try another node")
        }
        BlobError::Io { .. } => {
            tracing::error!(error = %e, "blob store I/O failed");
            ApiError::new(ErrorCode::Internal, "blob store I/O failed")
        }
    }
}

/// Streams `body` into `staging`, and to the peers of `pipeline` at the
/// same time (the slower sets the pace). A broken client stream is the
/// client's problem (BLOB_UPLOAD_INVALID); what arrived before the break stays.
pub async fn write_body(staging: &mut StagingBlob, mut pipeline: Option<&mut Pipeline>, mut body: ByteStream) -> Result<u64, ApiError> {
    let mut written = 0;
    let outcome = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::BlobUploadInvalid, format!("reading the request body: {e}")))?;
            let n = chunk.len() as u64;
            let stored = match pipeline.as_deref_mut() {
                Some(p) => tokio::join!(staging.write(chunk.clone()), p.push(chunk)).0,
                None => staging.write(chunk).await,
            };
            stored.map_err(blob_err)?;
            written += n;
        }
        Ok(())
    }
    .await;
    if let Some(p) = pipeline {
        p.flush().await;
    }
    outcome.map(|()| written)
}

/// A blob stored on this node, its pipelined copies being sealed.
pub struct Committed {
    pub size: u64,
    /// Held until the copy is recorded (the sweeper must not delete it in between).
    pub pin: BlobPin,
    /// Wait for it before answering; have its copies recorded once the
    /// blob is recorded.
    pub sealing: Option<Sealing>,
}

/// Verifies and stores `staging` as `digest`, while the pipeline's peers
/// verify and store theirs.
pub async fn commit(store: &BlobStore, staging: StagingBlob, pipeline: Option<Pipeline>, digest: &Digest) -> Result<Committed, ApiError> {
    // Pinned after the body is in, so a slow client holds up nothing.
    let pin = store.pin(digest).await;
    // A failed local commit drops the sealing, which abandons the copies.
    let sealing = pipeline.map(|p| p.seal(digest, staging.len()));
    let size = staging.commit(store, digest).await.map_err(blob_err)?;
    Ok(Committed { size, pin, sealing })
}

/// The node that owns upload `id`, if the id is well formed.
pub fn owner_of(id: &str) -> Option<NodeId> {
    let (node, rest) = id.split_once('-')?;
    (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    node.parse().ok()
}

impl UploadManager {
    pub fn new(node_id: NodeId, store: BlobStore, ttl: Duration, caps: UploadCaps) -> UploadManager {
        UploadManager { node_id, store, replicator: None, ttl, caps, sessions: Mutex::new(Sessions::default()) }
    }

    /// Streams every upload's other copies to peers as it arrives.
    pub fn pipelined(self, replicator: Replicator) -> UploadManager {
        UploadManager { replicator: Some(replicator), ..self }
    }

    /// A pipeline for a new upload into `repo` (none without a replicator).
    pub fn pipeline(&self, repo: &str) -> Option<Pipeline> {
        self.replicator.as_ref().map(|r| r.pipeline(repo))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    pub fn in_progress(&self) -> usize {
        self.sessions.lock().expect("sessions lock").by_id.len()
    }

    /// Opens a session for `account` (the principal's name, which app
    /// tokens share with their owner), if the caps leave room.
    pub async fn start(&self, account: &str, repo: &str) -> Result<UploadState, ApiError> {
        let id = format!("{}-{}", self.node_id, crate::util::random_hex(16));
        let slot: Slot = Arc::new(tokio::sync::Mutex::new(None));
        {
            // The slot is taken before the staging file exists, so a burst
            // of POSTs cannot all pass the check and then all create files.
            let mut sessions = self.sessions.lock().expect("sessions lock");
            let held = sessions.per_account.get(account).copied().unwrap_or(0);
            if held >= self.caps.per_account {
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("{account} has {held} uploads in progress on this node, the most allowed; finish or cancel one first"),
                )
                .with_detail(serde_json::json!({ "limit": "uploads_per_account", "max": self.caps.per_account })));
            }
            if sessions.by_id.len() >= self.caps.per_node {
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("this node has {} uploads in progress, the most it takes; retry later or push through another node", sessions.by_id.len()),
                )
                .with_detail(serde_json::json!({ "limit": "uploads_per_node", "max": self.caps.per_node })));
            }
            *sessions.per_account.entry(account.to_string()).or_default() += 1;
            sessions.by_id.insert(id.clone(), (account.to_string(), slot.clone()));
        }
        // Nobody else knows the id yet: the lock is free.
        let mut guard = slot.lock().await;
        match self.store.create_staging().await {
            Ok(staging) => {
                *guard = Some(Session { repo: repo.to_string(), staging, pipeline: self.pipeline(repo), last_used: Instant::now() });
                Ok(UploadState { id, offset: 0 })
            }
            Err(e) => {
                self.forget(&id);
                Err(blob_err(e))
            }
        }
    }

    fn slot(&self, id: &str) -> Result<Slot, ApiError> {
        self.sessions.lock().expect("sessions lock").by_id.get(id).map(|(_, slot)| slot.clone()).ok_or_else(|| unknown(id))
    }

    /// Ends a session's bookkeeping and gives its slot back.
    fn forget(&self, id: &str) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if let Some((account, _)) = sessions.by_id.remove(id) {
            if let Some(n) = sessions.per_account.get_mut(&account) {
                *n -= 1;
                if *n == 0 {
                    sessions.per_account.remove(&account);
                }
            }
        }
    }

    pub async fn patch(&self, repo: &str, id: &str, range: Option<(u64, u64)>, body: ByteStream) -> Result<UploadState, ApiError> {
        let slot = self.slot(id)?;
        let mut guard = slot.lock().await;
        let s = guard.as_mut().filter(|s| s.repo == repo).ok_or_else(|| unknown(id))?;
        let offset = s.staging.len();
        // The length the chunk announces, checked before any byte is
        // written: `0-18446744073709551615` is one byte more than a u64 holds.
        let announced = match range {
            None => None,
            Some((start, _)) if start != offset => {
                return Err(ApiError::new(
                    ErrorCode::RangeInvalid,
                    format!("chunk starts at {start}, but the upload has {offset} bytes: send the chunk that starts at {offset}"),
                ));
            }
            Some((start, end)) => Some(
                end.checked_sub(start)
                    .and_then(|n| n.checked_add(1))
                    .ok_or_else(|| ApiError::new(ErrorCode::RangeInvalid, format!("Content-Range {start}-{end} is not a length a chunk can have")))?,
            ),
        };
        let written = write_body(&mut s.staging, s.pipeline.as_mut(), body).await;
        // Idle until the next request: no descriptor, no buffer.
        let parked = s.staging.park().await.map_err(blob_err);
        s.last_used = Instant::now();
        if s.staging.is_broken() {
            // The hash may cover bytes the file lacks: the session cannot go on.
            *guard = None;
            self.forget(id);
            return Err(written.and(parked).err().unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "staging write failed")));
        }
        let written = written?;
        if let (Some((start, end)), Some(announced)) = (range, announced) {
            if written != announced {
                // The bytes are in the hash now: the session cannot go on.
                *guard = None;
                self.forget(id);
                return Err(ApiError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("Content-Range {start}-{end} announced {announced} bytes, the body had {written}; upload cancelled"),
                ));
            }
        }
        Ok(UploadState { id: id.to_string(), offset: s.staging.len() })
    }

    pub async fn status(&self, repo: &str, id: &str) -> Result<UploadState, ApiError> {
        let slot = self.slot(id)?;
        let guard = slot.lock().await;
        let s = guard.as_ref().filter(|s| s.repo == repo).ok_or_else(|| unknown(id))?;
        Ok(UploadState { id: id.to_string(), offset: s.staging.len() })
    }

    /// Takes the last bytes, verifies the digest, stores the blob here and
    /// on the pipeline's peers. The session ends either way.
    pub async fn finish(&self, repo: &str, id: &str, digest: &Digest, body: ByteStream) -> Result<Committed, ApiError> {
        let slot = self.slot(id)?;
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|s| s.repo != repo) {
            return Err(unknown(id));
        }
        let mut s = guard.take().expect("checked above");
        self.forget(id);
        write_body(&mut s.staging, s.pipeline.as_mut(), body).await?;
        commit(&self.store, s.staging, s.pipeline, digest).await
    }

    pub async fn cancel(&self, repo: &str, id: &str) -> Result<(), ApiError> {
        let slot = self.slot(id)?;
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(|s| s.repo != repo) {
            return Err(unknown(id));
        }
        *guard = None;
        self.forget(id);
        Ok(())
    }

    /// Drops sessions idle for longer than the timeout; returns how many.
    pub async fn expire(&self) -> usize {
        let slots: Vec<(String, Slot)> = self.sessions.lock().expect("sessions lock").by_id.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect();
        let mut dropped = 0;
        for (id, slot) in slots {
            // A session in use is not idle.
            let Ok(mut guard) = slot.try_lock() else { continue };
            if guard.as_ref().is_some_and(|s| s.last_used.elapsed() > self.ttl) {
                *guard = None;
                self.forget(&id);
                dropped += 1;
                tracing::info!(upload = %id, "upload session expired");
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_sessions_expire_and_their_staging_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let uploads = UploadManager::new(1, store, Duration::from_millis(50), UploadCaps { per_account: 10, per_node: 10 });
        let idle = uploads.start("alice", "r").await.unwrap();
        let body: ByteStream = Box::pin(futures::stream::once(async { Ok(bytes::Bytes::from_static(b"half a layer")) }));
        uploads.patch("r", &idle.id, None, body).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 1);
        assert_eq!(uploads.expire().await, 0, "not idle long enough yet");
        // Idle time is what is under test and the manager reads the real
        // clock: waiting past the 50 ms limit is how the session idles.
        tokio::time::sleep(Duration::from_millis(80)).await;
        let fresh = uploads.start("alice", "r").await.unwrap();
        assert_eq!(uploads.expire().await, 1);
        assert_eq!(uploads.in_progress(), 1);
        assert_eq!(uploads.status("r", &idle.id).await.unwrap_err().code, ErrorCode::BlobUploadUnknown);
        assert_eq!(uploads.status("r", &fresh.id).await.unwrap().offset, 0, "a fresh session stays");
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 1, "the idle session's staging file is gone");
    }

    #[tokio::test]
    async fn a_content_range_up_to_u64_max_is_refused_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let uploads = UploadManager::new(1, store, Duration::from_secs(60), UploadCaps { per_account: 10, per_node: 10 });
        let s = uploads.start("alice", "r").await.unwrap();
        let body: ByteStream = Box::pin(futures::stream::once(async { Ok(bytes::Bytes::from_static(b"chunk")) }));
        let err = uploads.patch("r", &s.id, Some((0, u64::MAX)), body).await.unwrap_err();
        // Refused before a byte is written: the session goes on as it was.
        assert_eq!(err.code, ErrorCode::RangeInvalid, "{}", err.message);
        assert_eq!(uploads.status("r", &s.id).await.unwrap().offset, 0);
    }

    #[test]
    fn upload_ids_name_their_owner() {
        assert_eq!(owner_of(&format!("7-{}", "a".repeat(32))), Some(7));
        assert_eq!(owner_of("7-short"), None);
        assert_eq!(owner_of("x-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(owner_of("nodash"), None);
    }
}
