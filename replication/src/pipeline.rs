//! Pipelined copies: the nodes that will hold an upload's other copies
//! receive its bytes while the client is still sending them, as GFS and
//! HDFS write chains do, instead of fetching the blob after the upload.
//!
//! The node taking an upload opens one [`Request::Mirror`] stream per
//! extra copy at the first byte ([`Replicator::pipeline`]) and forwards
//! every chunk as it arrives. Each receiver writes and hashes as it goes
//! and reports how much it has ([`MirrorReply::Received`]); the sender
//! keeps at most [`WINDOW`] bytes unreported per copy, so the slower of the
//! local disk and a peer link sets the pace and nothing piles up. At the
//! end the sender asks each receiver to verify and make its copy durable
//! (`Seal`, while it commits its own), and once the blob is recorded, to
//! record its copy too (`Record`): a node records only its own copies.
//!
//! A receiver that fails, corrupts, or stalls for the stall timeout is
//! dropped without failing the client's upload; the push then gets its
//! copy after the fact ([`Replicator::ensure_copies`]), from another node
//! first. A stream that ends before `Seal` (a cancelled, expired or broken
//! upload, a dead sender) leaves nothing on the receiver.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use berth_common::{Digest, NodeId};
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::watch;

use crate::error::{ReplicationError, Result};
use crate::protocol::{read_frame, write_frame, MirrorFrame, MirrorReply, Request};
use crate::store::BlobError;
use crate::{bump, PeerInfo, Replicator};

/// Bytes a copy may have in flight (sent, not yet reported written):
/// enough for 100 MB/s at 250 ms, and the most an upload buffers per copy.
pub const WINDOW: u64 = 32 << 20;
/// Chunks are gathered into frames of about this size.
const FRAME: usize = 256 << 10;
/// A receiver reports what it holds at least this often.
const REPORT_EVERY: u64 = 1 << 20;
/// A receiver with no frame for this long closes its staging file until
/// the next one (an upload session waiting for its client's next chunk).
const PARK_AFTER: Duration = Duration::from_secs(1);
/// Stream error code: the sender gave the copy up.
const ABANDONED: u32 = 3;
/// How long a node remembers that a copy of a blob failed on a peer.
pub(crate) const LOST_MEMORY: Duration = Duration::from_secs(600);
/// How long a node counts pipelined copies it saw recorded as holders, in
/// case its own metadata has not applied those records yet.
pub(crate) const RECORDED_MEMORY: Duration = Duration::from_secs(60);

/// A map that forgets each entry `memory` after it was last set. Entries
/// expire in the order they were set, so they are dropped from the front
/// of a queue: setting one costs the same however many the map holds
/// (a sweep of the whole map on every push cost 9% of the machine's CPU
/// at 430 pushes/s).
pub(crate) struct Recent<K, V> {
    memory: Duration,
    map: HashMap<K, (Instant, V)>,
    /// Every set, oldest first; one whose key was set again since is
    /// skipped when it expires.
    order: VecDeque<(Instant, K)>,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    pub(crate) fn new(memory: Duration) -> Recent<K, V> {
        Recent { memory, map: HashMap::new(), order: VecDeque::new() }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.get_at(key, Instant::now())
    }

    pub(crate) fn set(&mut self, key: K, value: V) {
        self.set_at(key, value, Instant::now())
    }

    fn get_at(&self, key: &K, now: Instant) -> Option<&V> {
        self.map.get(key).filter(|(at, _)| now.saturating_duration_since(*at) < self.memory).map(|(_, v)| v)
    }

    fn set_at(&mut self, key: K, value: V, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.memory {
                break;
            }
            let (at, old) = self.order.pop_front().expect("looked at the front");
            if self.map.get(&old).is_some_and(|(set, _)| *set == at) {
                self.map.remove(&old);
            }
        }
        self.order.push_back((now, key.clone()));
        self.map.insert(key, (now, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A receiver's state, as its replies tell it.
#[derive(Debug, Clone, Default)]
struct Heard {
    received: u64,
    stored: bool,
    recorded: bool,
    /// The receiver failed (its reason), or the stream broke.
    failed: Option<String>,
}

/// One copy being streamed to a peer.
struct Copy {
    node: NodeId,
    send: quinn::SendStream,
    heard: watch::Receiver<Heard>,
    sent: u64,
    listener: tokio::task::JoinHandle<()>,
    /// The exchange ended as it should (the copy is recorded).
    done: bool,
}

impl Drop for Copy {
    fn drop(&mut self) {
        if !self.done {
            // Unfinished: the receiver throws its staging file away.
            let _ = self.send.reset(ABANDONED.into());
        }
        self.listener.abort();
    }
}

/// The copies of one upload streamed to peers as it arrives. Dropping it
/// abandons every copy not yet stored.
pub struct Pipeline {
    replicator: Replicator,
    repo: String,
    opened: bool,
    copies: Vec<Copy>,
    pending: Vec<Bytes>,
    pending_len: usize,
    lost: Vec<(NodeId, String)>,
}

/// The seal of an upload's copies, under way ([`Pipeline::seal`]); it
/// ends in the pipeline with the copies that are stored. Dropping it
/// abandons them.
pub type Sealing = tokio_util::task::AbortOnDropHandle<Pipeline>;

/// The records of an upload's pipelined copies, under way or done: the
/// nodes whose record went through.
pub(crate) type Recording = futures::future::Shared<futures::future::BoxFuture<'static, BTreeSet<NodeId>>>;

impl Replicator {
    /// A pipeline for a new upload into `repo` on this node: it opens its
    /// streams at the first byte, to `min_copies - 1` peers (regions the
    /// repository's placement wants, then other regions, as
    /// [`Replicator::ensure_copies`] picks them).
    pub fn pipeline(&self, repo: &str) -> Pipeline {
        Pipeline { replicator: self.clone(), repo: repo.to_string(), opened: false, copies: Vec::new(), pending: Vec::new(), pending_len: 0, lost: Vec::new() }
    }

    fn pipeline_stall(&self) -> Duration {
        Duration::from_millis(self.inner.config.pipeline_stall_ms.max(100))
    }

    /// Remembers that copies of `digest` failed on `nodes`: the copy after
    /// the fact asks other nodes first.
    fn remember_lost(&self, digest: &Digest, nodes: impl IntoIterator<Item = NodeId>) {
        let mut lost = self.inner.lost_copies.lock().expect("lost copies lock");
        let mut known = lost.get(digest).cloned().unwrap_or_default();
        known.extend(nodes);
        lost.set(digest.clone(), known);
    }

    /// Nodes whose pipelined copy of `digest` failed lately (the copy
    /// after the fact asks them last).
    pub fn lost_on(&self, digest: &Digest) -> BTreeSet<NodeId> {
        let lost = self.inner.lost_copies.lock().expect("lost copies lock");
        lost.get(digest).cloned().unwrap_or_default()
    }

    /// Nodes whose pipelined copy of `digest` was recorded lately, once the
    /// records under way are done.
    pub(crate) async fn pipelined_holders(&self, digest: &Digest) -> BTreeSet<NodeId> {
        let records = self.inner.recording.lock().expect("recording lock").get(digest).cloned();
        match records {
            Some(r) => r.await,
            None => BTreeSet::new(),
        }
    }

    /// Opens a copy on `peer`: the stream, and a task that listens to its replies.
    async fn open_copy(&self, peer: &PeerInfo) -> Result<Copy> {
        let node = peer.id;
        let conn = self.inner.transport.connect(node, &peer.addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ReplicationError::peer(node))?;
        write_frame(&mut send, &Request::Mirror { from: self.inner.view.self_id() }).await.map_err(ReplicationError::peer(node))?;
        let (tx, heard) = watch::channel(Heard::default());
        let listener = tokio::spawn(async move {
            loop {
                let reply = read_frame::<MirrorReply>(&mut recv).await;
                tx.send_if_modified(|h| match reply {
                    Ok(MirrorReply::Received(n)) => std::mem::replace(&mut h.received, n) != n,
                    Ok(MirrorReply::Stored) => !std::mem::replace(&mut h.stored, true),
                    Ok(MirrorReply::Recorded) => !std::mem::replace(&mut h.recorded, true),
                    Ok(MirrorReply::Failed(why)) => {
                        h.failed = Some(why);
                        true
                    }
                    Err(ref e) => {
                        h.failed.get_or_insert_with(|| format!("stream broke: {e}"));
                        true
                    }
                });
                if tx.borrow().failed.is_some() || tx.borrow().recorded {
                    return;
                }
            }
        });
        Ok(Copy { node, send, heard, sent: 0, listener, done: false })
    }
}

impl Pipeline {
    /// Forwards a chunk of the upload (gathered into frames).
    pub async fn push(&mut self, chunk: Bytes) {
        if !self.opened {
            self.open().await;
        }
        if self.copies.is_empty() || chunk.is_empty() {
            return;
        }
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= FRAME {
            self.flush().await;
        }
    }

    /// Sends what is gathered; called at the end of each request's body.
    pub async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut self.pending);
        let len = std::mem::take(&mut self.pending_len);
        let stall = self.replicator.pipeline_stall();
        let sends = self.copies.iter_mut().map(|c| {
            // Each copy sends its own handles on the same buffers.
            let mut chunks = chunks.clone();
            async move { c.send_frame(&mut chunks, len, stall).await }
        });
        let results = futures::future::join_all(sends).await;
        self.keep_live(results);
    }

    /// Starts verifying and making every copy durable, now, while the
    /// local copy is committed; copies that fail are dropped.
    pub fn seal(mut self, digest: &Digest, size: u64) -> Sealing {
        let d = digest.clone();
        Sealing::new(tokio::spawn(async move {
            self.seal_copies(&d, size).await;
            self
        }))
    }

    async fn seal_copies(&mut self, digest: &Digest, size: u64) {
        self.flush().await;
        // A receiver says nothing while it syncs the copy: what is still in
        // flight and the sync may take that long at 50 MB/s.
        let in_flight = self.copies.iter().map(|c| c.sent.saturating_sub(c.heard.borrow().received)).max().unwrap_or(0);
        let stall = self.replicator.pipeline_stall() + Duration::from_secs_f64((in_flight + size) as f64 / 50e6);
        let seals = self.copies.iter_mut().map(|c| async move {
            write_frame(&mut c.send, &MirrorFrame::Seal { digest: digest.clone(), size }).await.map_err(|e| format!("sending the seal: {e}"))?;
            c.until(stall, |h| h.stored).await
        });
        let results = futures::future::join_all(seals).await;
        self.keep_live(results);
        let lost: Vec<NodeId> = self.lost.iter().map(|(n, _)| *n).collect();
        if !lost.is_empty() {
            self.replicator.remember_lost(digest, lost);
        }
    }

    /// Once the blob is recorded: asks every stored copy to record itself
    /// too, and returns without waiting. The push's manifest waits for
    /// those records ([`Replicator::pipelined_holders`]), so the client's
    /// next uploads overlap them.
    pub fn record(mut self, digest: &Digest) {
        let r = self.replicator.clone();
        let d = digest.clone();
        let records = async move {
            let stall = self.replicator.pipeline_stall();
            let records = self.copies.iter_mut().map(|c| async move {
                write_frame(&mut c.send, &MirrorFrame::Record).await.map_err(|e| format!("sending the record: {e}"))?;
                c.send.finish().map_err(|e| format!("finishing the stream: {e}"))?;
                c.until(stall, |h| h.recorded).await
            });
            let results = futures::future::join_all(records).await;
            self.keep_live(results);
            if !self.lost.is_empty() {
                self.replicator.remember_lost(&d, self.lost.iter().map(|(n, _)| *n));
            }
            let mut copies = std::mem::take(&mut self.copies);
            for c in &mut copies {
                c.done = true;
                metrics::counter!("berth_pipelined_copies_total", "outcome" => "recorded").increment(1);
                tracing::debug!(digest = %d, node = c.node, "pipelined copy recorded");
            }
            copies.iter().map(|c| c.node).collect::<BTreeSet<NodeId>>()
        }
        .boxed()
        .shared();
        r.inner.recording.lock().expect("recording lock").set(digest.clone(), records.clone());
        tokio::spawn(records);
    }

    /// Opens the copies: `min_copies - 1` peers in the order copies are
    /// asked for, the next one when a peer cannot be reached.
    async fn open(&mut self) {
        self.opened = true;
        let r = self.replicator.clone();
        let mut want = r.min_copies().saturating_sub(1);
        let view = r.inner.view.clone();
        for peer in r.copy_candidates(&BTreeSet::new(), &BTreeSet::new(), |region| view.repo_wanted_in_region(&self.repo, region)) {
            if want == 0 {
                break;
            }
            match tokio::time::timeout(r.pipeline_stall(), r.open_copy(&peer)).await {
                Ok(Ok(copy)) => {
                    self.copies.push(copy);
                    want -= 1;
                }
                Ok(Err(e)) => self.lose(peer.id, e.to_string()),
                Err(_) => self.lose(peer.id, "opening the stream timed out".into()),
            }
        }
    }

    fn keep_live(&mut self, results: Vec<Result<(), String>>) {
        let copies = std::mem::take(&mut self.copies);
        for (copy, result) in copies.into_iter().zip(results) {
            match result {
                Ok(()) => self.copies.push(copy),
                Err(why) => self.lose(copy.node, why),
            }
        }
    }

    fn lose(&mut self, node: NodeId, why: String) {
        tracing::info!(node, reason = %why, "a pipelined copy was given up; the copy is made after the upload instead");
        metrics::counter!("berth_pipelined_copies_total", "outcome" => "lost").increment(1);
        self.lost.push((node, why));
    }
}

impl Copy {
    /// Sends one frame of `len` bytes once the window has room for it.
    async fn send_frame(&mut self, chunks: &mut [Bytes], len: usize, stall: Duration) -> Result<(), String> {
        let sent = self.sent;
        self.until(stall, |h| sent < h.received + WINDOW).await?;
        let write = async {
            write_frame(&mut self.send, &MirrorFrame::Data { len: len as u32 }).await.map_err(|e| e.to_string())?;
            self.send.write_all_chunks(chunks).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(stall, write).await {
            Ok(Ok(())) => {
                self.sent += len as u64;
                Ok(())
            }
            Ok(Err(e)) => Err(self.failure().unwrap_or(e)),
            Err(_) => Err(format!("no room on the stream for {stall:?}")),
        }
    }

    /// Waits until `done` holds for what the receiver said; fails when it
    /// failed, or when it said nothing new for `stall`.
    async fn until(&mut self, stall: Duration, done: impl Fn(&Heard) -> bool) -> Result<(), String> {
        loop {
            {
                let h = self.heard.borrow_and_update();
                if let Some(why) = &h.failed {
                    return Err(why.clone());
                }
                if done(&h) {
                    return Ok(());
                }
            }
            match tokio::time::timeout(stall, self.heard.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.failure().unwrap_or_else(|| "the reply stream ended".into())),
                Err(_) => return Err(format!("no word for {stall:?}")),
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.heard.borrow().failed.clone()
    }
}

/// Sends a receiver's reply.
async fn reply(send: &mut quinn::SendStream, r: &MirrorReply) -> Result<()> {
    write_frame(send, r).await.map_err(ReplicationError::answer)
}

/// Answers that no copy is kept here, and why, and ends the exchange.
async fn refuse(send: &mut quinn::SendStream, why: String) -> Result<()> {
    reply(send, &MirrorReply::Failed(why)).await?;
    let _ = send.finish();
    Ok(())
}

impl Replicator {
    /// Keeps a copy of an upload another node is taking: answers
    /// [`Request::Mirror`]. Any error, and the stream ending before the
    /// seal, drops the staging file.
    pub(crate) async fn receive_mirror(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream, from: NodeId) -> Result<()> {
        if !self.room_for(0).await {
            return refuse(&mut send, "this node's disk is at its reserve".into()).await;
        }
        let store = self.inner.store.clone();
        let mut staging = store.create_staging().await?;
        let mut reported = 0u64;
        loop {
            let frame = match tokio::time::timeout(PARK_AFTER, read_frame::<MirrorFrame>(&mut recv)).await {
                Ok(f) => f,
                Err(_) => {
                    // The sender's client is between requests.
                    staging.park().await?;
                    if staging.len() > reported {
                        reported = staging.len();
                        reply(&mut send, &MirrorReply::Received(reported)).await?;
                    }
                    read_frame::<MirrorFrame>(&mut recv).await
                }
            };
            // Ended or broken before the seal: the upload was abandoned.
            let Ok(frame) = frame else { return Ok(()) };
            match frame {
                MirrorFrame::Data { len } => {
                    let mut left = len as usize;
                    while left > 0 {
                        let Ok(Some(chunk)) = recv.read_chunk(left, true).await else { return Ok(()) };
                        left -= chunk.bytes.len();
                        let written = if staging.is_empty() && self.inner.faults.corrupt_mirrored.load(std::sync::atomic::Ordering::Relaxed) {
                            let mut bad = chunk.bytes.to_vec();
                            bad[0] ^= 0xff;
                            staging.write(Bytes::from(bad)).await
                        } else {
                            staging.write(chunk.bytes).await
                        };
                        if let Err(e) = written {
                            let _ = recv.stop(ABANDONED.into());
                            refuse(&mut send, e.to_string()).await?;
                            return Err(e.into());
                        }
                    }
                    bump(&self.inner.stats.mirrored_bytes, u64::from(len));
                    if staging.len() - reported >= REPORT_EVERY {
                        reported = staging.len();
                        reply(&mut send, &MirrorReply::Received(reported)).await?;
                    }
                }
                MirrorFrame::Seal { digest, size } => return self.seal_mirror(send, recv, staging, &digest, size, from).await,
                MirrorFrame::Record => return refuse(&mut send, "record before seal".into()).await,
            }
        }
    }

    /// The end of a mirrored copy: verify and commit, then record it when asked.
    async fn seal_mirror(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        staging: crate::StagingBlob,
        digest: &Digest,
        size: u64,
        from: NodeId,
    ) -> Result<()> {
        if staging.len() != size {
            return refuse(&mut send, format!("received {} bytes, the upload has {size}", staging.len())).await;
        }
        // Kept from the sweeper between the rename and the record.
        let _pin = self.inner.store.pin(digest).await;
        match staging.commit(&self.inner.store, digest).await {
            Ok(_) => reply(&mut send, &MirrorReply::Stored).await?,
            Err(e) => {
                if matches!(e, BlobError::DigestMismatch { .. }) {
                    bump(&self.inner.stats.corrupt, 1);
                    tracing::warn!(%digest, from, error = %e, "a pipelined copy did not match its digest; discarded");
                }
                return refuse(&mut send, e.to_string()).await;
            }
        }
        // A sender that does not ask for the record (its own commit or
        // record failed) leaves an unrecorded copy, which gc removes.
        let Ok(MirrorFrame::Record) = read_frame::<MirrorFrame>(&mut recv).await else { return Ok(()) };
        let outcome = match self.inner.view.record_holder(digest, size).await {
            Ok(()) => {
                bump(&self.inner.stats.mirrored, 1);
                MirrorReply::Recorded
            }
            Err(e) => MirrorReply::Failed(e.to_string()),
        };
        reply(&mut send, &outcome).await?;
        send.finish().map_err(ReplicationError::answer)?;
        let _ = send.stopped().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_map_forgets_each_entry_its_memory_after_it_was_last_set() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut r: Recent<u32, &str> = Recent::new(ms(100));
        r.set_at(1, "a", t0);
        r.set_at(2, "b", t0 + ms(60));
        // Set again: its first set expires from the queue but not the entry.
        r.set_at(1, "a2", t0 + ms(60));
        r.set_at(3, "c", t0 + ms(120));
        assert_eq!(r.len(), 3);
        assert_eq!(r.get_at(&1, t0 + ms(120)), Some(&"a2"));
        assert_eq!(r.get_at(&2, t0 + ms(159)), Some(&"b"));
        // Expired entries are not answered even before a set drops them.
        assert_eq!(r.get_at(&2, t0 + ms(160)), None);
        r.set_at(4, "d", t0 + ms(230));
        assert_eq!(r.len(), 1, "everything set 100 ms before the last set is gone");
        assert_eq!(r.get_at(&4, t0 + ms(230)), Some(&"d"));
        assert_eq!(r.get_at(&1, t0 + ms(230)), None);
    }
}
