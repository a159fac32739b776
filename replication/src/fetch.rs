//! Fetching blobs from peers: one fetch per blob however many ask, readers
//! that follow the fetch as it lands, failover between holders at the byte
//! reached, and no unverified blob ever served whole.
//!
//! A fetch writes into a staging file and publishes how many bytes are in
//! it. Readers (clients pulling through this node while it fetches) read
//! the staging file up to that mark, except the blob's last byte, which
//! they get only once the digest checked out and the blob was committed:
//! a client can never receive a complete blob with wrong content.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_common::{Digest, NodeId};
use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use crate::error::{ReplicationError, Result};
use crate::protocol::{read_frame, write_frame, GetReply, Request};
use crate::store::{BlobError, BlobRange, StagingBlob};
use crate::{PeerInfo, Replicator};

/// Publish progress to readers at least every this many bytes.
const PUBLISH_EVERY: u64 = 1 << 20;
const READ_CHUNK: usize = 256 << 10;
/// How often a fetch asks its relay again while the relay does not know
/// the blob yet, 200 ms apart: two seconds for the relay's metadata to
/// catch up (a heartbeat, or a few on a loaded node) before the asker
/// gives up on the chain and loads a holder's uplink with another copy.
const RELAY_WAITS: u32 = 10;

#[derive(Debug, Clone)]
pub enum Progress {
    /// `written` bytes of attempt `attempt` are in `path`.
    Running { attempt: u32, path: PathBuf, written: u64 },
    /// Attempt `attempt` was verified and committed to the store.
    Done { attempt: u32 },
    /// Shared by every caller of the fetch.
    Failed(Arc<ReplicationError>),
}

pub struct Fetch {
    pub digest: Digest,
    pub size: u64,
    pub progress: watch::Receiver<Progress>,
}

impl Fetch {
    /// Waits until the fetch ends.
    pub async fn wait(&self) -> Result<()> {
        let mut rx = self.progress.clone();
        loop {
            match &*rx.borrow_and_update() {
                Progress::Done { .. } => return Ok(()),
                Progress::Failed(e) => return Err(ReplicationError::Fetch { digest: self.digest.clone(), cause: e.clone() }),
                Progress::Running { .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err(ReplicationError::FetchLost { digest: self.digest.clone() });
            }
        }
    }
}

impl Replicator {
    /// Starts fetching `digest` (or joins the fetch in flight).
    pub fn fetch(&self, digest: &Digest, size: u64, prefer: Option<NodeId>) -> Arc<Fetch> {
        let mut map = self.inner.fetches.lock().expect("fetch map lock");
        if let Some(f) = map.get(digest) {
            return f.clone();
        }
        let (tx, rx) = watch::channel(Progress::Running { attempt: 0, path: PathBuf::new(), written: 0 });
        let fetch = Arc::new(Fetch { digest: digest.clone(), size, progress: rx });
        map.insert(digest.clone(), fetch.clone());
        drop(map);
        let me = self.clone();
        let d = digest.clone();
        tokio::spawn(async move {
            let outcome = me.run_fetch(&d, size, prefer, &tx).await;
            me.inner.fetches.lock().expect("fetch map lock").remove(&d);
            match outcome {
                Ok(attempt) => {
                    me.inner.stats.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = tx.send(Progress::Done { attempt });
                }
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "blob fetch failed");
                    let _ = tx.send(Progress::Failed(Arc::new(e)));
                }
            }
        });
        fetch
    }

    fn fetch_stall(&self) -> Duration {
        Duration::from_secs(self.inner.config.fetch_stall_secs.max(1))
    }

    /// Holders to fetch from, best first: `prefer`, then this region, then
    /// by measured RTT, silent holders last. Holders that served bad bytes
    /// for this blob are out.
    fn sources(&self, digest: &Digest, prefer: Option<NodeId>, exclude: &HashSet<NodeId>) -> Vec<PeerInfo> {
        let holders = self.inner.view.holders(digest);
        let rtts = self.inner.transport.rtts();
        let my_region = self.inner.view.self_region();
        let mut peers: Vec<PeerInfo> =
            self.inner.view.peers().into_iter().filter(|p| (holders.contains(&p.id) || Some(p.id) == prefer) && !exclude.contains(&p.id)).collect();
        let silent = self.inner.transport.silent();
        peers.sort_by_key(|p| {
            (silent.contains(&p.id), Some(p.id) != prefer, p.region != my_region, rtts.get(&p.id).copied().unwrap_or(Duration::from_secs(3600)), p.id)
        });
        peers
    }

    /// Fetches and commits the blob; returns the attempt that succeeded.
    async fn run_fetch(&self, digest: &Digest, size: u64, prefer: Option<NodeId>, tx: &watch::Sender<Progress>) -> Result<u32> {
        // Holders that sent bytes of a copy that failed verification.
        let mut bad: HashSet<NodeId> = HashSet::new();
        let mut last_error = ReplicationError::NoHolder;
        for attempt in 1..=3u32 {
            let mut staging = self.inner.store.create_staging().await?;
            let path = staging.path().to_path_buf();
            let _ = tx.send(Progress::Running { attempt, path: path.clone(), written: 0 });
            let mut contributors = HashSet::new();
            // Sources are looked up again after every failure: the metadata
            // may have learnt of new holders since the fetch began.
            let mut tried: HashSet<NodeId> = HashSet::new();
            let mut idle_rounds = 0;
            // Large blobs: ranges from several holders at once; whatever is
            // left when that stops is fetched one holder at a time below.
            let sources = self.sources(digest, prefer, &bad);
            // Copying from a relay (a node still receiving the blob itself)
            // keeps to the relay: ranges from the holders would load the
            // uplinks the relay chains spare.
            let holders = self.inner.view.holders(digest);
            let relay = prefer.filter(|p| !holders.contains(p) && !bad.contains(p));
            let mut relay_waits = 0;
            // Nor from a holder that heads another node's chain: that
            // node's copy goes over its uplink. (Worked out, with the
            // placement, only for a blob large enough to be fetched in ranges.)
            let ranged = relay.is_none() && size >= self.inner.config.parallel_fetch_min_bytes && sources.len() >= 2;
            let spare: Vec<PeerInfo> = match ranged.then(|| self.inner.view.blob(digest)).flatten() {
                Some(b) => {
                    let busy = self.holders_feeding_others(digest, &b);
                    sources.into_iter().filter(|p| !busy.contains(&p.id)).collect()
                }
                None => Vec::new(),
            };
            if spare.len() >= 2 {
                contributors.extend(spare.iter().map(|p| p.id));
                if let Err(e) = self.fetch_parallel(digest, size, &spare, &mut staging, tx, attempt).await {
                    tracing::info!(digest = %digest, error = %e, at = staging.len(), "parallel fetch stopped; going on one holder at a time");
                    last_error = e;
                }
            }
            while staging.len() < size {
                let skip: HashSet<NodeId> = bad.union(&tried).copied().collect();
                let Some(peer) = self.sources(digest, prefer, &skip).into_iter().next() else {
                    if idle_rounds >= 5 {
                        break;
                    }
                    // Every holder failed: give them (not the liars) another chance.
                    idle_rounds += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tried.clear();
                    continue;
                };
                tried.insert(peer.id);
                contributors.insert(peer.id);
                let outcome = self.fetch_from(&peer, digest, &mut staging, size, size, tx, attempt).await;
                metrics::counter!("berth_peer_fetches_total", "peer" => peer.id.to_string(), "outcome" => if outcome.is_ok() { "ok" } else { "error" })
                    .increment(1);
                match outcome {
                    Ok(()) => {}
                    Err(e @ ReplicationError::Store(_)) => return Err(e),
                    // A relay that has not yet learnt of the blob (its
                    // metadata is a moment behind): ask it again shortly.
                    Err(ReplicationError::NotHeld { .. }) if Some(peer.id) == relay && relay_waits < RELAY_WAITS => {
                        relay_waits += 1;
                        tried.remove(&peer.id);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        tracing::info!(digest = %digest, node_id = peer.id, error = %e, at = staging.len(), "holder failed; trying the next one from the byte reached");
                        last_error = e;
                    }
                }
            }
            if staging.len() != size {
                return Err(ReplicationError::Incomplete { digest: digest.clone(), fetched: staging.len(), size, last: Box::new(last_error) });
            }
            // The sweeper must not delete the copy between the rename and its record.
            let pin = self.inner.store.pin(digest).await;
            match staging.commit(&self.inner.store, digest).await {
                Ok(_) => {
                    self.inner
                        .view
                        .record_holder(digest, size)
                        .await
                        .map_err(|e| ReplicationError::NotRecorded { digest: digest.clone(), source: Box::new(e) })?;
                    drop(pin);
                    return Ok(attempt);
                }
                Err(BlobError::DigestMismatch { computed, .. }) => {
                    self.inner.stats.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(digest = %digest, %computed, holders = ?contributors, "peer bytes do not match the digest; discarded, fetching elsewhere");
                    bad.extend(contributors);
                    let mut nodes: Vec<NodeId> = bad.iter().copied().collect();
                    nodes.sort_unstable();
                    last_error = ReplicationError::Corrupt { nodes };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error)
    }

    /// Fetches `size` bytes in up to four ranges from different holders at
    /// once: the first range straight into `staging` (readers follow it),
    /// the others into part files appended in order as they complete.
    async fn fetch_parallel(
        &self,
        digest: &Digest,
        size: u64,
        sources: &[PeerInfo],
        staging: &mut StagingBlob,
        tx: &watch::Sender<Progress>,
        attempt: u32,
    ) -> Result<()> {
        let parts = sources.len().min(4) as u64;
        let start0 = staging.len();
        let span = (size - start0).div_ceil(parts);
        let bounds: Vec<(u64, u64)> = (0..parts).map(|i| (start0 + i * span, (start0 + (i + 1) * span).min(size))).filter(|(a, b)| a < b).collect();
        let mut tasks = Vec::new();
        for (i, (a, b)) in bounds.iter().copied().enumerate().skip(1) {
            let me = self.clone();
            let digest = digest.clone();
            // Each part starts with its own holder and falls back to the others.
            let mut order: Vec<PeerInfo> = sources.to_vec();
            order.rotate_left(i % sources.len());
            tasks.push(tokio::spawn(async move { me.fetch_part(&digest, a, b, &order).await }));
        }
        let (_, end0) = bounds[0];
        let mut result = Ok(());
        let mut first_ok = false;
        for peer in sources {
            match self.fetch_from(peer, digest, staging, end0, size, tx, attempt).await {
                Ok(()) => {
                    first_ok = true;
                    break;
                }
                Err(e @ ReplicationError::Store(_)) => return Err(e),
                Err(e) => result = Err(e),
            }
        }
        let path = staging.path().to_path_buf();
        for task in tasks {
            let part = task.await.map_err(ReplicationError::from).and_then(|r| r);
            match part {
                Ok(file) if first_ok && result.is_ok() => {
                    let appended = append_file(staging, &file).await;
                    let _ = tokio::fs::remove_file(&file).await;
                    appended?;
                    let written = staging.flush().await?;
                    let _ = tx.send(Progress::Running { attempt, path: path.clone(), written });
                }
                Ok(file) => {
                    let _ = tokio::fs::remove_file(&file).await;
                }
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        if !first_ok && result.is_ok() {
            result = Err(ReplicationError::NoHolder);
        }
        result
    }

    /// Fetches `[start, end)` into a part file in the staging area.
    async fn fetch_part(&self, digest: &Digest, start: u64, end: u64, order: &[PeerInfo]) -> Result<std::path::PathBuf> {
        let path = self.inner.store.staging_dir().join(format!("part-{}-{start}-{:x}", digest.hex(), rand::random::<u64>()));
        let io = |source| BlobError::Io { path: path.clone(), source };
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut at = start;
        let mut last = ReplicationError::NoHolder;
        for peer in order {
            match self.read_range(peer, digest, at, end, &mut file, &path).await {
                Ok(n) => at += n,
                Err((n, e)) => {
                    at += n;
                    last = e;
                }
            }
            if at == end {
                tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(io)?;
                return Ok(path);
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
        Err(last)
    }

    /// Copies `[start, end)` from `peer` into `out`; returns the bytes copied
    /// (and on failure, how many arrived before it).
    async fn read_range(
        &self,
        peer: &PeerInfo,
        digest: &Digest,
        start: u64,
        end: u64,
        out: &mut tokio::fs::File,
        part: &std::path::Path,
    ) -> Result<u64, (u64, ReplicationError)> {
        let node = peer.id;
        let at = |n: u64| move |e: ReplicationError| (n, e);
        let conn = self.inner.transport.connect(node, &peer.addr).await.map_err(|e| (0, e.into()))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ReplicationError::peer(node)).map_err(at(0))?;
        self.inner.stats.requests_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        write_frame(&mut send, &Request::Get { digest: digest.clone(), start, len: Some(end - start) })
            .await
            .map_err(ReplicationError::peer(node))
            .map_err(at(0))?;
        send.finish().map_err(ReplicationError::peer(node)).map_err(at(0))?;
        let stall = self.fetch_stall();
        let stalled = || ReplicationError::Stalled { node, after: stall };
        let reply = tokio::time::timeout(stall, read_frame::<GetReply>(&mut recv)).await.map_err(|_| stalled()).map_err(at(0))?;
        match reply.map_err(ReplicationError::peer(node)).map_err(at(0))? {
            GetReply::Ok { len, .. } if len == end - start => {}
            other => return Err((0, ReplicationError::Protocol { node, what: format!("asked for {start}-{end}, answered {other:?}") })),
        }
        let mut n = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        let fetched_total = metrics::counter!("berth_peer_fetched_bytes_total", "peer" => peer.id.to_string());
        while n < end - start {
            let read = tokio::time::timeout(stall, recv.read(&mut buf)).await.map_err(|_| stalled()).map_err(at(n))?;
            let got = match read.map_err(ReplicationError::peer(node)).map_err(at(n))? {
                None | Some(0) => break,
                Some(got) => got.min((end - start - n) as usize),
            };
            tokio::io::AsyncWriteExt::write_all(out, &buf[..got])
                .await
                .map_err(|source| ReplicationError::from(BlobError::Io { path: part.to_path_buf(), source }))
                .map_err(at(n))?;
            n += got as u64;
            self.inner.stats.bytes_fetched.fetch_add(got as u64, std::sync::atomic::Ordering::Relaxed);
            fetched_total.increment(got as u64);
        }
        if n < end - start {
            return Err((n, ReplicationError::Protocol { node, what: format!("stream ended at byte {} of {end}", start + n) }));
        }
        Ok(n)
    }

    /// Appends the rest of the blob (up to `end`) from one holder.
    async fn fetch_from(
        &self,
        peer: &PeerInfo,
        digest: &Digest,
        staging: &mut StagingBlob,
        end: u64,
        size: u64,
        tx: &watch::Sender<Progress>,
        attempt: u32,
    ) -> Result<()> {
        let path = staging.path().to_path_buf();
        let node = peer.id;
        let start = staging.len();
        let mut recv = self.open_get(peer, digest, size, start, end - start).await?;
        let stall = self.fetch_stall();
        let stalled = || ReplicationError::Stalled { node, after: stall };
        let mut published = staging.len();
        let fetched_total = metrics::counter!("berth_peer_fetched_bytes_total", "peer" => peer.id.to_string());
        loop {
            // quinn's own buffers, not a copy of them.
            let chunk =
                match tokio::time::timeout(stall, recv.read_chunk(READ_CHUNK, true)).await.map_err(|_| stalled())?.map_err(ReplicationError::peer(node))? {
                    None => break,
                    Some(c) => c.bytes,
                };
            let n = chunk.len();
            let room = (end - staging.len()) as usize;
            if n > room {
                return Err(ReplicationError::Protocol { node, what: "holder sent more bytes than asked for".into() });
            }
            staging.write(chunk).await?;
            self.inner.stats.bytes_fetched.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            fetched_total.increment(n as u64);
            if staging.len() - published >= PUBLISH_EVERY || staging.len() == end {
                published = staging.flush().await?;
                let _ = tx.send(Progress::Running { attempt, path: path.clone(), written: published });
            }
        }
        let written = staging.flush().await?;
        let _ = tx.send(Progress::Running { attempt, path, written });
        if written < end {
            return Err(ReplicationError::Protocol { node, what: format!("stream ended at byte {written} of {end}") });
        }
        Ok(())
    }

    /// `[start, start + len)` of a blob streamed from a holder straight to
    /// the caller, stored nowhere: for a node whose disk cannot take the
    /// blob. Holders are tried in [`Self::sources`] order until one
    /// answers; a whole blob is hashed on the way and a wrong digest ends
    /// the stream with an error (the client sees a failed download, never
    /// a wrong one accepted as complete).
    pub async fn relay(&self, digest: &Digest, size: u64, start: u64, len: u64) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
        let mut last = None;
        for peer in self.sources(digest, None, &HashSet::new()) {
            match self.open_get(&peer, digest, size, start, len).await {
                Ok(recv) => {
                    metrics::counter!("berth_blob_relays_total").increment(1);
                    let whole = start == 0 && len == size;
                    return Ok(relay_stream(recv, digest.clone(), len, whole, self.fetch_stall()));
                }
                Err(e) => {
                    tracing::info!(digest = %digest, node_id = peer.id, error = %e, "relay: holder did not answer; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ReplicationError::NoHolder))
    }

    /// Asks `peer` for `[start, start + len)` of a blob of `size` bytes;
    /// answers the stream the bytes come on, once the holder said yes.
    async fn open_get(&self, peer: &PeerInfo, digest: &Digest, size: u64, start: u64, len: u64) -> Result<quinn::RecvStream> {
        let node = peer.id;
        let conn = self.inner.transport.connect(node, &peer.addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ReplicationError::peer(node))?;
        self.inner.stats.requests_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        write_frame(&mut send, &Request::Get { digest: digest.clone(), start, len: Some(len) }).await.map_err(ReplicationError::peer(node))?;
        send.finish().map_err(ReplicationError::peer(node))?;
        let stall = self.fetch_stall();
        match tokio::time::timeout(stall, read_frame::<GetReply>(&mut recv))
            .await
            .map_err(|_| ReplicationError::Stalled { node, after: stall })?
            .map_err(ReplicationError::peer(node))?
        {
            GetReply::Ok { size: theirs, .. } if theirs != size => {
                Err(ReplicationError::Protocol { node, what: format!("holder has {theirs} bytes, metadata says {size}") })
            }
            GetReply::Ok { .. } => Ok(recv),
            GetReply::NotFound => Err(ReplicationError::NotHeld { node }),
            GetReply::RangeInvalid => Err(ReplicationError::Protocol { node, what: format!("holder refused range {start}-") }),
        }
    }

    /// A stream of `range` of a blob being fetched, following the fetch.
    pub fn follow(
        &self,
        fetch: Arc<Fetch>,
        range: Option<BlobRange>,
    ) -> Result<(u64, u64, impl Stream<Item = std::io::Result<Bytes>> + Send + 'static), BlobError> {
        let size = fetch.size;
        let (start, len) = span(range, size)?;
        let store = self.inner.store.clone();
        let digest = fetch.digest.clone();
        let stream = async_stream_follow(store, digest, fetch, start, start + len);
        Ok((start, len, stream))
    }
}

/// The first byte and length `range` asks of a blob of `size` bytes.
pub(crate) fn span(range: Option<BlobRange>, size: u64) -> std::result::Result<(u64, u64), BlobError> {
    match range {
        None => Ok((0, size)),
        Some(r) => {
            if r.start >= size || r.end.is_some_and(|e| e < r.start) {
                return Err(BlobError::RangeInvalid { start: r.start, end: r.end, size });
            }
            let end = r.end.unwrap_or(size - 1).min(size - 1);
            Ok((r.start, end - r.start + 1))
        }
    }
}

/// The bytes of a relayed blob as they come from the holder, checked
/// against the length asked for and, for a whole blob, its digest.
fn relay_stream(
    recv: quinn::RecvStream,
    digest: Digest,
    len: u64,
    whole: bool,
    stall: Duration,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use sha2::Digest as _;
    struct Relay {
        recv: quinn::RecvStream,
        got: u64,
        hash: Option<sha2::Sha256>,
    }
    let fail = |m: String| Some((Err(std::io::Error::other(m)), None));
    // sha512 blobs are rare; their relay is checked by the client only.
    let sha256 = digest.algorithm() == berth_common::DigestAlgorithm::Sha256;
    let init = Relay { recv, got: 0, hash: (whole && sha256).then(sha2::Sha256::new) };
    futures::stream::unfold(Some(init), move |st| {
        let digest = digest.clone();
        async move {
            let mut r = st?;
            if r.got == len {
                return None;
            }
            let chunk = match tokio::time::timeout(stall, r.recv.read_chunk(READ_CHUNK, true)).await {
                Err(_) => return fail(format!("relay of {digest}: the holder stalled")),
                Ok(Err(e)) => return fail(format!("relay of {digest}: {e}")),
                Ok(Ok(None)) => return fail(format!("relay of {digest}: the holder ended at byte {} of {len}", r.got)),
                Ok(Ok(Some(c))) => c.bytes,
            };
            r.got += chunk.len() as u64;
            if r.got > len {
                return fail(format!("relay of {digest}: the holder sent more than asked"));
            }
            if let Some(h) = &mut r.hash {
                h.update(&chunk);
                if r.got == len && hex::encode(h.clone().finalize()) != digest.hex() {
                    return fail(format!("relay of {digest}: the holder's bytes do not have that digest"));
                }
            }
            Some((Ok(chunk), Some(r)))
        }
    })
}

/// Appends a part file to the staging blob (hashing it on the way).
async fn append_file(staging: &mut StagingBlob, file: &std::path::Path) -> Result<(), BlobError> {
    let io = |source| BlobError::Io { path: file.to_path_buf(), source };
    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(1 << 20);
        if f.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Ok(());
        }
        staging.write(buf.split().freeze()).await?;
    }
}

/// Reads `[start, end)` of a blob being fetched, waiting for bytes to land.
/// A reader is bound to the attempt whose file it opened: if the fetch
/// starts over (bad bytes from a peer), the reader fails rather than mix
/// bytes of two attempts.
fn async_stream_follow(
    store: crate::BlobStore,
    digest: Digest,
    fetch: Arc<Fetch>,
    start: u64,
    end: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct Reader {
        rx: watch::Receiver<Progress>,
        file: Option<(u32, tokio::fs::File)>,
        pos: u64,
    }
    let size = fetch.size;
    let init = Reader { rx: fetch.progress.clone(), file: None, pos: start };
    let fail = |m: String| Some((Err(std::io::Error::other(m)), None));
    futures::stream::unfold(Some(init), move |st| {
        let store = store.clone();
        let digest = digest.clone();
        async move {
            let mut r = st?;
            if r.pos >= end {
                return None;
            }
            loop {
                let progress = r.rx.borrow_and_update().clone();
                // Readable up to: everything once verified, else all but the last byte.
                let (attempt, avail) = match &progress {
                    Progress::Done { attempt } => (*attempt, size),
                    Progress::Running { attempt, written, .. } => (*attempt, (*written).min(size.saturating_sub(1))),
                    Progress::Failed(e) => return fail(ReplicationError::Fetch { digest: digest.clone(), cause: e.clone() }.to_string()),
                };
                if let Some((opened, _)) = &r.file {
                    if *opened != attempt {
                        return fail(format!("fetch of {digest} started over after bad bytes from a peer"));
                    }
                }
                if r.pos < avail.min(end) {
                    if r.file.is_none() {
                        let path = match &progress {
                            Progress::Running { path, .. } => path.clone(),
                            _ => store.path_of(&digest),
                        };
                        let opened = match tokio::fs::File::open(&path).await {
                            Ok(f) => Ok(f),
                            // Renamed into place just now: it is the committed blob.
                            Err(_) => tokio::fs::File::open(store.path_of(&digest)).await,
                        };
                        let mut f = match opened {
                            Ok(f) => f,
                            Err(e) => return Some((Err(e), None)),
                        };
                        if let Err(e) = f.seek(std::io::SeekFrom::Start(r.pos)).await {
                            return Some((Err(e), None));
                        }
                        r.file = Some((attempt, f));
                    }
                    let want = ((avail.min(end) - r.pos) as usize).min(READ_CHUNK);
                    let mut buf = vec![0u8; want];
                    let (_, f) = r.file.as_mut().expect("opened above");
                    match f.read(&mut buf).await {
                        Ok(0) => return fail(format!("fetch of {digest}: file ended before the published length")),
                        Ok(n) => {
                            buf.truncate(n);
                            r.pos += n as u64;
                            return Some((Ok(Bytes::from(buf)), Some(r)));
                        }
                        Err(e) => return Some((Err(e), None)),
                    }
                }
                if r.rx.changed().await.is_err() && !matches!(*r.rx.borrow(), Progress::Done { .. }) {
                    return fail("fetch ended".into());
                }
            }
        }
    })
}
