//! The data plane of berth: blobs on local disk and between nodes.
//!
//! Layout:
//! - [`store`]: the local content-addressed blob store;
//! - [`transport`]: QUIC (quinn) with mutual TLS under the cluster CA;
//! - [`protocol`]: the versioned peer protocol (HAVE, GET, REPLICATE, ANNOUNCE);
//! - [`service`]: answering peers;
//! - [`fetch`]: fetching from the nearest holders, shared by every reader;
//! - [`pipeline`]: an upload's other copies, streamed to peers as it arrives;
//! - [`reconcile`]: the pull-based background replication;
//! - [`scrub`]: re-hashing stored blobs and repairing bad copies;
//! - [`error`]: the crate's one error type, [`ReplicationError`].
//!
//! Invariants:
//! - A file under `sha256/ab/<hex>` always holds exactly the bytes whose
//!   digest is its name (staging, hash while streaming, fsync, verify,
//!   rename; a crash leaves at most a staging file, removed at start).
//! - Bytes from a peer are trusted only after the digest checks out; a
//!   client never receives a complete blob that did not.
//! - This crate never sees Raft: what the cluster knows (who holds what,
//!   where peers are) comes through [`ClusterView`], which the node
//!   implements over the metadata.

pub mod error;
pub mod fetch;
pub mod pipeline;
pub mod protocol;
pub mod reconcile;
pub mod scrub;
pub mod service;
pub mod store;
pub mod transport;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_common::{Digest, LinkFilter, NodeId};
use serde::{Deserialize, Serialize};

pub use error::{MetadataError, ReplicationError, Result};
pub use fetch::{Fetch, Progress};
pub use store::{BlobError, BlobPin, BlobRange, BlobReader, BlobStore, StagingBlob};
pub use transport::TransportConfig;

use crate::protocol::{read_frame, write_frame, Reply, Request};
use crate::transport::Transport;

/// How long a push waits on the nodes asked for a copy of a blob before it
/// asks one more (see [`Replicator::ensure_copies`]): 2 s, plus the time
/// the copy itself takes at a modest 50 MB/s, so big blobs are not copied
/// twice just for being big.
fn hedge_after(size: u64) -> Duration {
    Duration::from_secs(2) + Duration::from_secs_f64(size as f64 / 50e6)
}

/// Another node, as the metadata knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: NodeId,
    pub region: String,
    /// `host:port` of the node's peer listener (UDP for blobs, TCP for Raft).
    pub addr: String,
}

/// Where the metadata says a blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    pub holders: BTreeSet<NodeId>,
    /// Placement asks this node to keep a copy in the background.
    pub wanted_here: bool,
}

/// What replication needs to know of the cluster, and the one thing it
/// tells it: that this node now holds a blob.
#[async_trait]
pub trait ClusterView: Send + Sync + 'static {
    fn self_id(&self) -> NodeId;
    fn self_region(&self) -> String;
    /// The other active nodes.
    fn peers(&self) -> Vec<PeerInfo>;
    fn blob(&self, digest: &Digest) -> Option<BlobInfo>;
    /// The nodes holding `digest`: [`ClusterView::blob`]'s holders, which a
    /// view may read without working out the placement (a push asks this
    /// for every blob of a manifest).
    fn holders(&self, digest: &Digest) -> BTreeSet<NodeId> {
        self.blob(digest).map(|b| b.holders).unwrap_or_default()
    }
    /// [`ClusterView::holders`] of each of `digests`, in their order, which
    /// a view may read in one batch (a push asks for every blob of a
    /// manifest at once).
    fn holders_of(&self, digests: &[&Digest]) -> Vec<BTreeSet<NodeId>> {
        digests.iter().map(|d| self.holders(d)).collect()
    }
    /// Whether placement asks nodes of `region` to keep `digest`.
    fn wanted_in_region(&self, digest: &Digest, region: &str) -> bool;
    /// Whether placement asks nodes of `region` to keep what `repo` holds.
    fn repo_wanted_in_region(&self, repo: &str, region: &str) -> bool;
    /// Every blob placement wants on this node that this node does not
    /// hold and some node does, read from every blob record: the
    /// reconciler's full pass. A million records should be read a page at
    /// a time, and placement worked out only for those not held here.
    fn missing_blobs(&self) -> Vec<(Digest, BlobInfo)>;
    /// The blobs whose records or placement changed since the last call,
    /// or `None` when that is not known and every blob must be read again
    /// (the first call, a new snapshot, or a change of placement). The
    /// reconciler reads only these on a pass, so an idle pass costs the
    /// same with ten blobs or a million. A view that tracks nothing
    /// answers `None`, always.
    fn changed_blobs(&self) -> Option<Vec<Digest>> {
        None
    }
    /// Records (through the metadata) that this node holds `digest`:
    /// [`ReplicationError::Forgotten`] when the cluster no longer knows the
    /// blob, [`ReplicationError::Metadata`] when the record failed.
    async fn record_holder(&self, digest: &Digest, size: u64) -> Result<()>;
    /// Records that this node no longer holds `digest` (a bad copy).
    async fn drop_holder(&self, digest: &Digest) -> Result<()>;
    /// Whether `node` is recorded as removed from the cluster: its
    /// certificate still checks out against the CA, but it is refused.
    fn removed(&self, node: NodeId) -> bool;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    #[serde(flatten)]
    pub transport: TransportConfig,
    /// How often the background reconciler looks for missing blobs, ms.
    pub reconcile_interval_ms: u64,
    /// Blobs over 1 MiB fetched at once by the reconciler; of smaller ones
    /// it fetches eight times as many.
    pub fetch_concurrency: usize,
    /// Copies (on distinct nodes, other regions first) every blob of a
    /// manifest must have before the manifest PUT is acknowledged. Unset:
    /// 2 when the cluster has 2 or more nodes, else 1.
    pub min_copies: Option<usize>,
    /// How long a manifest PUT may wait for `min_copies`, ms.
    pub min_copies_timeout_ms: u64,
    /// Blobs at least this large are fetched in ranges from several
    /// holders at once.
    pub parallel_fetch_min_bytes: u64,
    /// A fetch whose source sends nothing for this long (a dead or hung
    /// node, a stalled relay) goes on from another holder at the byte
    /// reached, s. Without it a silently dead peer costs QUIC's 30 s idle
    /// timeout.
    pub fetch_stall_secs: u64,
    /// Scrub: how often every stored blob is re-hashed, s (0: never).
    pub scrub_interval_secs: u64,
    /// Scrub: bytes re-hashed per second at most, so it never starves pulls.
    pub scrub_bytes_per_sec: u64,
    /// A pull of a blob this node lacks keeps a copy only if the disk
    /// would still have this much free after it; otherwise the bytes are
    /// relayed from a holder to the client and stored nowhere.
    pub min_free_bytes: u64,
    /// A peer receiving a pipelined copy of an upload that reports no
    /// progress for this long is dropped (the copy is then made after the
    /// upload, on another node), ms. As long as a copy asked after the
    /// upload waits before asking another node (see `hedge_after`): a
    /// peer restarting or dying must not hold a push longer than it did
    /// before copies were pipelined.
    pub pipeline_stall_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            transport: TransportConfig::default(),
            reconcile_interval_ms: 2_000,
            fetch_concurrency: 4,
            min_copies: None,
            min_copies_timeout_ms: 30_000,
            parallel_fetch_min_bytes: 64 << 20,
            fetch_stall_secs: 20,
            scrub_interval_secs: 24 * 3600,
            scrub_bytes_per_sec: 64 << 20,
            min_free_bytes: 64 << 20,
            pipeline_stall_ms: 2_000,
        }
    }
}

/// Counters, for tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// GET requests this node answered for peers.
    pub requests_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub requests_sent: AtomicU64,
    pub bytes_fetched: AtomicU64,
    /// Blobs fetched and committed.
    pub fetched: AtomicU64,
    /// Fetched copies discarded because their digest did not match.
    pub corrupt: AtomicU64,
    pub scrub_runs: AtomicU64,
    /// Blobs re-hashed by scrub, and how many of them were bad.
    pub scrub_checked: AtomicU64,
    pub scrub_corrupt: AtomicU64,
    /// Pipelined copies this node stored and recorded for uploads other
    /// nodes took, and the bytes it received for them.
    pub mirrored: AtomicU64,
    pub mirrored_bytes: AtomicU64,
}

/// Faults a test can switch on in a node's blob service.
#[derive(Debug, Default)]
pub struct Faults {
    /// Flip one byte of every blob served to peers.
    pub corrupt_served: AtomicBool,
    /// Pause this long after every chunk served (a slow or dying holder), µs.
    pub serve_delay_us: AtomicU64,
    /// Refuse every peer connection and request (the blob service is
    /// unreachable while Raft still works).
    pub refuse_peers: AtomicBool,
    /// Flip one byte of every pipelined copy this node receives.
    pub corrupt_mirrored: AtomicBool,
}

pub(crate) struct Inner {
    store: BlobStore,
    view: Arc<dyn ClusterView>,
    transport: Transport,
    config: ReplicationConfig,
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    stats: Stats,
    faults: Faults,
    wake: tokio::sync::Notify,
    /// Blobs whose pipelined copy failed on some nodes, lately.
    lost_copies: Mutex<pipeline::Recent<Digest, BTreeSet<NodeId>>>,
    /// Records of pipelined copies, under way or lately done.
    recording: Mutex<pipeline::Recent<Digest, pipeline::Recording>>,
    /// Blobs placement wants here that this node lacks, kept up to date
    /// from the changed records (see [`reconcile`]).
    missing: Mutex<reconcile::Missing>,
    /// Held while `missing` is brought up to date, one refresh at a time.
    refreshing: Mutex<()>,
}

/// The data plane of one node.
#[derive(Clone)]
pub struct Replicator {
    pub(crate) inner: Arc<Inner>,
}

impl Replicator {
    /// Binds the blob transport on `addr` (UDP) and starts serving peers and
    /// reconciling until `shutdown` fires.
    pub fn start(
        store: BlobStore,
        view: Arc<dyn ClusterView>,
        addr: SocketAddr,
        tls: &berth_common::PeerTls,
        filter: LinkFilter,
        config: ReplicationConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Replicator, Vec<tokio::task::JoinHandle<()>>), transport::TransportError> {
        let transport = Transport::bind(view.self_id(), addr, tls, &config.transport, filter)?;
        let inner = Inner {
            store,
            view,
            transport,
            config,
            fetches: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            faults: Faults::default(),
            wake: tokio::sync::Notify::new(),
            lost_copies: Mutex::new(pipeline::Recent::new(pipeline::LOST_MEMORY)),
            recording: Mutex::new(pipeline::Recent::new(pipeline::RECORDED_MEMORY)),
            missing: Mutex::new(reconcile::Missing::default()),
            refreshing: Mutex::new(()),
        };
        let r = Replicator { inner: Arc::new(inner) };
        let tasks = vec![
            tokio::spawn(r.clone().serve(shutdown.clone())),
            tokio::spawn(r.clone().reconcile_loop(shutdown.clone())),
            tokio::spawn(r.clone().scrub_loop(shutdown)),
        ];
        Ok((r, tasks))
    }

    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.transport.local_addr()
    }

    /// Measured RTT to each peer this node has talked to.
    pub fn rtts(&self) -> HashMap<NodeId, Duration> {
        self.inner.transport.rtts()
    }

    /// Asks the reconciler to look now rather than at its next tick.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Closes every connection and stops accepting new ones.
    pub fn close(&self) {
        self.inner.transport.close();
    }

    /// Waits until the closed connections have been cleanly shut down.
    pub async fn wait_idle(&self) {
        self.inner.transport.endpoint().wait_idle().await;
    }

    /// How many copies a manifest's blobs need before it is acknowledged.
    pub fn min_copies(&self) -> usize {
        let nodes = self.inner.view.peers().len() + 1;
        self.inner.config.min_copies.unwrap_or(if nodes >= 2 { 2 } else { 1 }).clamp(1, nodes)
    }

    /// Makes sure each blob is on at least `min_copies()` nodes, asking
    /// peers (other regions first) to fetch it now. Errors when that cannot
    /// be done within the configured timeout.
    pub async fn ensure_copies(&self, blobs: &[(Digest, u64)]) -> Result<()> {
        self.ensure_at_least(blobs, self.min_copies()).await
    }

    /// [`Replicator::ensure_copies`] with `need` copies (at most one per
    /// node), whatever `min_copies` says: a drain asks for a second copy of
    /// what only the drained node holds.
    pub async fn ensure_at_least(&self, blobs: &[(Digest, u64)], need: usize) -> Result<()> {
        let need = need.clamp(1, self.inner.view.peers().len() + 1);
        let timeout = Duration::from_millis(self.inner.config.min_copies_timeout_ms);
        let holders = self.inner.view.holders_of(&blobs.iter().map(|(d, _)| d).collect::<Vec<_>>());
        let work = blobs.iter().zip(holders).map(|((d, size), holders)| self.ensure_one(d, *size, need, holders));
        match tokio::time::timeout(timeout, futures::future::try_join_all(work)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ReplicationError::CopiesTimedOut { need, timeout }),
        }
    }

    /// Makes `need` copies of `digest`, which the metadata says `holders` hold.
    async fn ensure_one(&self, digest: &Digest, size: u64, need: usize, mut holders: BTreeSet<NodeId>) -> Result<()> {
        let me = self.inner.view.self_id();
        // Pipelined copies recorded through the leader, which this node's
        // metadata may not have applied yet.
        holders.extend(self.pipelined_holders(digest).await);
        let mut have = holders.len();
        if have >= need {
            return Ok(());
        }
        let candidates = self.copy_candidates(&holders, &self.lost_on(digest), |region| self.inner.view.wanted_in_region(digest, region));
        let source = if holders.contains(&me) { me } else { holders.iter().next().copied().unwrap_or(me) };
        let mut last_error = ReplicationError::NoPeer;
        // Ask as many nodes as are missing at once. A peer that died or was
        // cut off a moment ago still looks connected until QUIC's idle
        // timeout, and would hold the push that long: so while answers are
        // outstanding, every [`hedge_after`] one more node is asked too. An
        // extra copy costs little; a stalled push is what users notice.
        let mut candidates = candidates.into_iter();
        let mut asking = futures::stream::FuturesUnordered::new();
        let ask = |peer: PeerInfo| async move { (peer.id, self.ask_replicate(&peer, digest, size, source).await) };
        for peer in candidates.by_ref().take(need - have) {
            asking.push(ask(peer));
        }
        loop {
            let hedge = tokio::time::sleep(hedge_after(size));
            tokio::select! {
                answer = futures::StreamExt::next(&mut asking) => match answer {
                    Some((_, Ok(()))) => {
                        have += 1;
                        if have >= need {
                            return Ok(());
                        }
                    }
                    Some((_, Err(e))) => {
                        last_error = e;
                        if let Some(peer) = candidates.next() {
                            asking.push(ask(peer));
                        }
                    }
                    None => break,
                },
                _ = hedge, if !asking.is_empty() => {
                    if let Some(peer) = candidates.next() {
                        asking.push(ask(peer));
                    }
                }
            }
        }
        Err(ReplicationError::TooFewCopies { digest: digest.clone(), have, need, last: Box::new(last_error) })
    }

    /// Peers to ask for a copy, best first: in a region placement wants
    /// (`wanted`), in another region than this node's, then by measured
    /// RTT; `skip` left out, `last` (where a copy failed lately) near the
    /// end, and silent peers (see [`transport::Transport::silent`]) last.
    pub(crate) fn copy_candidates(&self, skip: &BTreeSet<NodeId>, last: &BTreeSet<NodeId>, wanted: impl Fn(&str) -> bool) -> Vec<PeerInfo> {
        let my_region = self.inner.view.self_region();
        let rtts = self.inner.transport.rtts();
        let silent = self.inner.transport.silent();
        let mut candidates: Vec<PeerInfo> = self.inner.view.peers().into_iter().filter(|p| !skip.contains(&p.id)).collect();
        candidates.sort_by_cached_key(|p| {
            (
                silent.contains(&p.id),
                last.contains(&p.id),
                !wanted(&p.region),
                p.region == my_region,
                rtts.get(&p.id).copied().unwrap_or(Duration::from_secs(3600)),
                p.id,
            )
        });
        candidates
    }

    async fn ask_replicate(&self, peer: &PeerInfo, digest: &Digest, size: u64, from: NodeId) -> Result<()> {
        let node = peer.id;
        let conn = self.inner.transport.connect(node, &peer.addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(ReplicationError::peer(node))?;
        write_frame(&mut send, &Request::Replicate { digest: digest.clone(), size, from }).await.map_err(ReplicationError::peer(node))?;
        send.finish().map_err(ReplicationError::peer(node))?;
        match read_frame::<Reply>(&mut recv).await.map_err(ReplicationError::peer(node))? {
            Reply::Replicated => Ok(()),
            Reply::Failed(reason) => Err(ReplicationError::Refused { node, reason }),
            other => Err(ReplicationError::Protocol { node, what: format!("unexpected reply {other:?}") }),
        }
    }

    /// The filesystem of this node's blob store; None when it cannot be read.
    pub async fn local_disk(&self) -> Option<protocol::DiskUse> {
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.disk_use()).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the blob store's filesystem size");
                None
            }
            Err(_) => None,
        }
    }

    /// Every node's disk, as each reports it: `cluster status` shows it per
    /// node. Nodes that do not answer within half a second are left out.
    pub async fn disk_by_node(&self) -> Vec<(NodeId, protocol::DiskUse)> {
        let me = self.inner.view.self_id();
        let asks = self.inner.view.peers().into_iter().map(|peer| async move {
            let ask = async {
                let conn = self.inner.transport.connect(peer.id, &peer.addr).await.ok()?;
                let (mut send, mut recv) = conn.open_bi().await.ok()?;
                write_frame(&mut send, &Request::Disk).await.ok()?;
                send.finish().ok()?;
                match read_frame::<Reply>(&mut recv).await {
                    Ok(Reply::Disk(Some(d))) => Some((peer.id, d)),
                    _ => None,
                }
            };
            tokio::time::timeout(Duration::from_millis(500), ask).await.ok().flatten()
        });
        let (mine, theirs) = futures::future::join(self.local_disk(), futures::future::join_all(asks)).await;
        let mut rows: Vec<(NodeId, protocol::DiskUse)> = mine.map(|d| (me, d)).into_iter().chain(theirs.into_iter().flatten()).collect();
        rows.sort_by_key(|(id, _)| *id);
        rows
    }

    /// Every node's RTT to every other, as each measures it: the matrix
    /// `berth cluster status` shows. Nodes that do not answer are left out.
    pub async fn rtt_matrix(&self) -> Vec<(NodeId, Vec<(NodeId, Duration)>)> {
        let me = self.inner.view.self_id();
        let mut rows = vec![(me, self.rtts().into_iter().collect::<Vec<_>>())];
        let asks = self.inner.view.peers().into_iter().map(|peer| async move {
            // A dead peer must not hold up `cluster status`: half a second at most
            // (connections are kept open, so a live peer answers in one round trip).
            let ask = async {
                let conn = self.inner.transport.connect(peer.id, &peer.addr).await.ok()?;
                let (mut send, mut recv) = conn.open_bi().await.ok()?;
                write_frame(&mut send, &Request::Rtts).await.ok()?;
                send.finish().ok()?;
                match read_frame::<Reply>(&mut recv).await {
                    Ok(Reply::Rtts(r)) => Some((peer.id, r.into_iter().map(|(id, us)| (id, Duration::from_micros(us))).collect())),
                    _ => None,
                }
            };
            tokio::time::timeout(Duration::from_millis(500), ask).await.ok().flatten()
        });
        rows.extend(futures::future::join_all(asks).await.into_iter().flatten());
        for (_, row) in rows.iter_mut() {
            row.sort_by_key(|(id, _)| *id);
        }
        rows.sort_by_key(|(id, _)| *id);
        rows
    }

    /// Keeps a connection (and so a live RTT estimate) to every peer.
    pub(crate) async fn probe_peers(&self) {
        for peer in self.inner.view.peers() {
            let _ = self.inner.transport.connect(peer.id, &peer.addr).await;
        }
    }

    /// Tells peers that this node stored `digest`, so they fetch it soon.
    pub async fn announce(&self, digest: &Digest, size: u64) {
        for peer in self.inner.view.peers() {
            let me = self.clone();
            let d = digest.clone();
            tokio::spawn(async move {
                let Ok(conn) = me.inner.transport.connect(peer.id, &peer.addr).await else { return };
                let Ok((mut send, mut recv)) = conn.open_bi().await else { return };
                if write_frame(&mut send, &Request::Announce { digest: d, size }).await.is_ok() && send.finish().is_ok() {
                    let _ = read_frame::<Reply>(&mut recv).await;
                }
            });
        }
    }

    /// Opens `digest` for reading: the local copy, or a fetch in progress
    /// from the nearest holder that this read follows. `None`: no node
    /// holds it.
    pub async fn open(&self, digest: &Digest, range: Option<BlobRange>) -> Result<Option<BlobBody>, BlobError> {
        if let Some(r) = self.inner.store.open_read(digest, range).await? {
            metrics::counter!("berth_blob_reads_total", "source" => "local").increment(1);
            // Served from the page cache through mapped windows: one copy
            // (into the socket) instead of two.
            let file = r.file.into_inner().into_std().await;
            let stream = store::mapped_stream(file, r.start, r.len);
            return Ok(Some(BlobBody { size: r.size, start: r.start, len: r.len, local: true, stream: Box::pin(stream) }));
        }
        let Some(info) = self.inner.view.blob(digest).filter(|b| !b.holders.is_empty()) else { return Ok(None) };
        metrics::counter!("berth_blob_reads_total", "source" => "peer").increment(1);
        if !self.room_for(info.size).await {
            // A full disk cannot keep a copy: the bytes go from a holder to
            // the client, stored nowhere, rather than failing mid-stream.
            let (start, len) = fetch::span(range, info.size)?;
            let relayed = self.relay(digest, info.size, start, len).await;
            let stream = relayed.map_err(|e| BlobError::Io { path: self.inner.store.path_of(digest), source: std::io::Error::other(format!("relay: {e}")) })?;
            return Ok(Some(BlobBody { size: info.size, start, len, local: false, stream: Box::pin(stream) }));
        }
        let fetch = self.fetch(digest, info.size, None);
        let (start, len, stream) = self.follow(fetch, range)?;
        Ok(Some(BlobBody { size: info.size, start, len, local: false, stream: Box::pin(stream) }))
    }
}

impl Replicator {
    /// Whether this node's disk can take a blob of `size` bytes and still
    /// keep `[replication] min_free_bytes` free. Unknown (the statvfs
    /// failed) counts as room: the fetch then fails as it would have.
    async fn room_for(&self, size: u64) -> bool {
        let store = self.inner.store.clone();
        let reserve = self.inner.config.min_free_bytes;
        match tokio::task::spawn_blocking(move || store.disk_use()).await {
            Ok(Ok(d)) => d.available_bytes >= size.saturating_add(reserve),
            _ => true,
        }
    }
}

/// A blob being read, from disk or from a fetch.
pub struct BlobBody {
    pub size: u64,
    pub start: u64,
    pub len: u64,
    /// Served from this node's disk (false: streamed from a peer).
    pub local: bool,
    pub stream: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
