//! The client side of the peer service: openraft's `RaftNetwork` over tonic,
//! and calls for forwarding writes to the leader.
//!
//! Every connection is mutual TLS with the cluster CA: the server must
//! present a certificate from the CA for the cluster-internal name
//! [`PEER_TLS_NAME`], and we present ours. Channels are cached per address
//! and connect lazily, so an unreachable peer costs nothing until used.
//!
//! [`LinkFilter`] sits in front of every outgoing call: tests cut links with
//! it (in one direction or both) instead of sleeping or killing tasks, and a
//! region drill makes a node an island with it. The server side checks the
//! same filter for incoming calls ([`crate::server`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_common::{LinkFilter, NodeId, PeerTls, PEER_TLS_NAME};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use serde::{de::DeserializeOwned, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pb::peer_client::PeerClient;
use crate::pb::Payload;
use crate::types::*;
use crate::wire::{from_payload, to_payload};

/// tonic's client TLS for a node's identity: mutual TLS under the cluster CA.
fn client_config(tls: &PeerTls) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .domain_name(PEER_TLS_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("link from node {from} to node {to} is cut")]
    Cut { from: NodeId, to: NodeId },
    #[error("peer {addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("peer {addr} answered with an error: {status}")]
    Status { addr: String, status: String },
    #[error("peer {addr} sent an unreadable reply: {message}")]
    Codec { addr: String, message: String },
    #[error("call to peer {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, MetaNode, E> {
        match self {
            CallError::Cut { .. } | CallError::Unreachable { .. } | CallError::Timeout { .. } => RPCError::Unreachable(Unreachable::new(&self)),
            CallError::Status { .. } | CallError::Codec { .. } => RPCError::Network(NetworkError::new(&self)),
        }
    }
}

/// A pool of channels to peers, by address.
#[derive(Clone)]
pub struct PeerChannels {
    tls: ClientTlsConfig,
    /// Calls leave from this address (the node's peer listen address), so a
    /// peer, a firewall or a WAN emulator sees the node's own IP.
    local_ip: Option<std::net::IpAddr>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
    pub fn new(tls: &PeerTls, local_ip: Option<std::net::IpAddr>) -> PeerChannels {
        PeerChannels { tls: client_config(tls), local_ip: local_ip.filter(|ip| !ip.is_unspecified()), channels: Default::default() }
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, CallError> {
        let mut map = self.channels.lock().expect("channel pool lock");
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let unreachable = |e: &dyn std::fmt::Display| CallError::Unreachable { addr: addr.to_string(), message: e.to_string() };
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| unreachable(&e))?
            .tls_config(self.tls.clone())
            .map_err(|e| unreachable(&e))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .local_address(self.local_ip)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .initial_stream_window_size(crate::wire::STREAM_WINDOW)
            .initial_connection_window_size(crate::wire::CONNECTION_WINDOW)
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// The gRPC header in which a node names the optional formats it reads
/// (comma-separated); the peer service sets it on every AppendEntries
/// reply. Releases before grouped entries send none.
pub const FEATURES_HEADER: &str = "berth-features";
/// The feature a node names when it reads grouped entries
/// ([`crate::command::MetaRequest::Batch`]).
pub const FEATURE_GROUPED: &str = "grouped-entries";
/// The feature a node names when it reads blob records whose repositories
/// are in an index of their own ([`crate::command::MetaCommand::IndexBlobRepos`]).
pub const FEATURE_BLOB_REPO_INDEX: &str = "blob-repo-index";
/// What this release names in [`FEATURES_HEADER`].
pub const FEATURES: &str = "grouped-entries,blob-repo-index";

/// What each peer said it reads, as its last AppendEntries reply to this
/// node said (a restarted peer of another release says so in its first).
/// The leader groups writes into one entry only while every member reads
/// grouped entries, and changes a format only once every member reads it.
#[derive(Clone, Default)]
pub struct PeerFeatures(Arc<Mutex<HashMap<NodeId, Vec<String>>>>);

impl PeerFeatures {
    fn note(&self, node: NodeId, features: Vec<String>) {
        self.0.lock().expect("peer features lock").insert(node, features);
    }

    /// Whether `node` said, last time it answered, that it reads
    /// `feature`; false for a node that has not answered yet.
    pub fn reads(&self, node: NodeId, feature: &str) -> bool {
        self.0.lock().expect("peer features lock").get(&node).is_some_and(|f| f.iter().any(|n| n == feature))
    }
}

/// The features a reply's [`FEATURES_HEADER`] names.
fn named_features(meta: &tonic::metadata::MetadataMap) -> Vec<String> {
    let named = meta.get(FEATURES_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    named.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect()
}

/// Which peer-service method a call goes to.
#[derive(Debug, Clone, Copy)]
pub enum PeerRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    Elect,
    TransferLeader,
    Status,
    Join,
    Ca,
    PreVote,
}

/// Calls `Join` on the seed at `seed` as an outsider: no client
/// certificate, the seed's certificate checked against `ca_pem` (which the
/// joiner has pinned by fingerprint). The answer is the seed's reply bytes
/// or its one-line refusal.
pub async fn call_join(seed: &str, ca_pem: &str, request: &impl Serialize) -> Result<crate::wire::PeerResult<Vec<u8>>, CallError> {
    let unreachable = |message: String| CallError::Unreachable { addr: seed.to_string(), message };
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(PEER_TLS_NAME);
    let channel = Endpoint::from_shared(format!("https://{seed}"))
        .map_err(|e| unreachable(format!("not an address: {e}")))?
        .tls_config(tls)
        .map_err(|e| unreachable(format!("TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    call(channel, seed, PeerRpc::Join, request, Duration::from_secs(30)).await
}

/// Calls `rpc` on the peer at `addr` with a versioned payload.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(channel: Channel, addr: &str, rpc: PeerRpc, req: &Req, timeout: Duration) -> Result<Resp, CallError> {
    Ok(call_noting_features(channel, addr, rpc, req, timeout).await?.0)
}

/// [`call`], also telling which features the reply said the peer reads.
async fn call_noting_features<Req: Serialize, Resp: DeserializeOwned>(
    channel: Channel,
    addr: &str,
    rpc: PeerRpc,
    req: &Req,
    timeout: Duration,
) -> Result<(Resp, Vec<String>), CallError> {
    let data = to_payload(req).map_err(|e| CallError::Codec { addr: addr.to_string(), message: e.to_string() })?;
    let mut client =
        PeerClient::new(channel).max_decoding_message_size(crate::wire::MAX_MEMBER_MESSAGE).max_encoding_message_size(crate::wire::MAX_MEMBER_MESSAGE);
    let request = tonic::Request::new(Payload { data });
    let fut = async {
        match rpc {
            PeerRpc::AppendEntries => client.append_entries(request).await,
            PeerRpc::Vote => client.vote(request).await,
            PeerRpc::InstallSnapshot => client.install_snapshot(request).await,
            PeerRpc::Forward => client.forward(request).await,
            PeerRpc::ReadIndex => client.read_index(request).await,
            PeerRpc::Elect => client.elect(request).await,
            PeerRpc::TransferLeader => client.transfer_leader(request).await,
            PeerRpc::Status => client.status(request).await,
            PeerRpc::Join => client.join(request).await,
            PeerRpc::Ca => client.ca(request).await,
            PeerRpc::PreVote => client.pre_vote(request).await,
        }
    };
    let reply = match tokio::time::timeout(timeout, fut).await {
        Err(_) => return Err(CallError::Timeout { addr: addr.to_string(), after: timeout }),
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
            return Err(CallError::Unreachable { addr: addr.to_string(), message: status.message().to_string() })
        }
        Ok(Err(status)) => {
            if status.code() == tonic::Code::PermissionDenied && status.message().contains("was removed from the cluster") {
                warn_removed(addr, status.message());
            }
            return Err(CallError::Status { addr: addr.to_string(), status: format!("{:?}: {}", status.code(), status.message()) });
        }
        Ok(Ok(r)) => r,
    };
    let features = named_features(reply.metadata());
    let resp = from_payload(&reply.into_inner().data).map_err(|e| CallError::Codec { addr: addr.to_string(), message: e.to_string() })?;
    Ok((resp, features))
}

/// Says on a removed node, at most once a minute, why the cluster no
/// longer answers it: every call it makes is refused by name, and its
/// operator would otherwise see only failed writes.
fn warn_removed(addr: &str, message: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(peer = addr, "{message}: stop this node; to use the host again, empty its data directory and join it as a new node");
    }
}

/// openraft's network factory: one [`PeerNetwork`] per target.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    pub self_id: NodeId,
    pub channels: PeerChannels,
    pub filter: LinkFilter,
    pub features: PeerFeatures,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MetaNode) -> PeerNetwork {
        PeerNetwork {
            factory: self.clone(),
            target,
            addr: node.peer_addr.clone(),
            last_commit: None,
            notices_in_flight: Default::default(),
            unreachable: Default::default(),
        }
    }
}

pub struct PeerNetwork {
    factory: PeerNetworkFactory,
    target: NodeId,
    addr: String,
    /// The `leader_commit` of the last AppendEntries sent through this
    /// client; `None` until it has sent one.
    last_commit: Option<Option<LogId>>,
    /// Commit notices sent without waiting for their replies, still out.
    notices_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether the last call found the peer unreachable: a peer that is
    /// still starting or is down is said once, at INFO, not per retry.
    unreachable: Arc<std::sync::atomic::AtomicBool>,
}

/// Whether an AppendEntries is a commit notice whose reply need not be
/// awaited: no entries, a `leader_commit` beyond the one this client sent
/// last, and a client that has sent before.
///
/// openraft 0.9 sends each follower one AppendEntries at a time. Right after
/// every commit it sends an empty one that only carries the new commit
/// index, so a write arriving just after the previous one committed (a
/// `docker push` is a run of such writes) waits a whole round trip for the
/// notice's reply before its entries go out: two round trips per commit
/// across a WAN. The reply to an empty AppendEntries carries nothing the
/// leader needs for progress (matching stays where it was), so we send the
/// notice, answer "success" at once, and let the real reply land in a
/// background task. A higher term or a lost log on the follower is still
/// seen by the next entries or periodic heartbeat, which are awaited.
///
/// Never for a client's first call: openraft's leadership check (the read
/// index behind linearizable reads) sends its heartbeats through a fresh
/// client each time, so those are always awaited.
/// Past this many unanswered commit notices to one follower (a slow or dead
/// one: each gives up after a heartbeat interval) notices are awaited again.
const MAX_NOTICES_IN_FLIGHT: usize = 4;

fn is_commit_notice(last_commit: Option<&Option<LogId>>, rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
    match last_commit {
        Some(last) => rpc.entries.is_empty() && rpc.leader_commit > *last,
        None => false,
    }
}

impl PeerNetwork {
    async fn raft_call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        rpc: PeerRpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, MetaNode, RaftError<NodeId, E>>> {
        let from = self.factory.self_id;
        if !self.factory.filter.let_through(from, self.target) {
            return Err(CallError::Cut { from, to: self.target }.into_rpc());
        }
        let channel = self.factory.channels.channel(&self.addr).map_err(CallError::into_rpc)?;
        let answer = call_noting_features(channel, &self.addr, rpc, req, option.hard_ttl()).await;
        self.note_reachability(answer.as_ref().err());
        let answer = answer.map(|(resp, features)| {
            if matches!(rpc, PeerRpc::AppendEntries) {
                self.factory.features.note(self.target, features);
            }
            resp
        });
        let reply: Result<Resp, RaftError<NodeId, E>> = answer.map_err(CallError::into_rpc)?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Logs when the peer stops and starts answering. openraft's own lines
    /// about every failed retry are kept out of the default log filter
    /// (see `berth_node::DEFAULT_LOG_FILTER`): a peer that is starting or
    /// restarting is an expected state, not an error.
    fn note_reachability(&self, error: Option<&CallError>) {
        use std::sync::atomic::Ordering;
        match error {
            Some(e @ (CallError::Unreachable { .. } | CallError::Timeout { .. })) => {
                if !self.unreachable.swap(true, Ordering::AcqRel) {
                    tracing::info!(peer = self.target, addr = %self.addr, "peer not answering (starting, stopped or cut off); retrying: {e}");
                }
            }
            _ => {
                if self.unreachable.swap(false, Ordering::AcqRel) {
                    tracing::info!(peer = self.target, addr = %self.addr, "peer answering again");
                }
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MetaNode, RaftError<NodeId>>> {
        use std::sync::atomic::Ordering;
        let notice = is_commit_notice(self.last_commit.as_ref(), &rpc)
            && self.notices_in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_NOTICES_IN_FLIGHT).then_some(n + 1)).is_ok();
        self.last_commit = Some(rpc.leader_commit);
        if !notice {
            return self.raft_call(PeerRpc::AppendEntries, &rpc, &option).await;
        }
        let me = PeerNetwork {
            factory: self.factory.clone(),
            target: self.target,
            addr: self.addr.clone(),
            last_commit: None,
            notices_in_flight: self.notices_in_flight.clone(),
            unreachable: self.unreachable.clone(),
        };
        tokio::spawn(async move {
            let reply: Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MetaNode, RaftError<NodeId>>> =
                me.raft_call(PeerRpc::AppendEntries, &rpc, &option).await;
            me.notices_in_flight.fetch_sub(1, Ordering::AcqRel);
            match reply {
                Ok(AppendEntriesResponse::Success) => {}
                other => tracing::debug!(target = me.target, reply = ?other, "commit notice not accepted; the next awaited call will see why"),
            }
        });
        Ok(AppendEntriesResponse::Success)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, MetaNode, RaftError<NodeId, InstallSnapshotError>>> {
        self.raft_call(PeerRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MetaNode, RaftError<NodeId>>> {
        self.raft_call(PeerRpc::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(leader_commit: Option<u64>, entries: usize) -> AppendEntriesRequest<TypeConfig> {
        let id = |i: u64| LogId::new(openraft::CommittedLeaderId::new(1, 1), i);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(id(5)),
            leader_commit: leader_commit.map(id),
            entries: (0..entries as u64).map(|i| Entry { log_id: id(6 + i), payload: openraft::EntryPayload::Blank }).collect(),
        }
    }

    #[test]
    fn only_an_empty_call_that_moves_the_commit_on_a_used_client_goes_unawaited() {
        let c4 = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 4));
        // A fresh client (openraft's leadership check) is always awaited.
        assert!(!is_commit_notice(None, &append(Some(5), 0)));
        // The commit moved and nothing else is carried: a notice.
        assert!(is_commit_notice(Some(&c4), &append(Some(5), 0)));
        assert!(is_commit_notice(Some(&None), &append(Some(1), 0)));
        // A periodic heartbeat (commit unchanged) and anything with entries are awaited.
        assert!(!is_commit_notice(Some(&c4), &append(Some(4), 0)));
        assert!(!is_commit_notice(Some(&c4), &append(Some(5), 1)));
        assert!(!is_commit_notice(Some(&None), &append(None, 0)));
    }

    /// A peer reads what its last reply named, and nothing before it
    /// replied; a release before the header names nothing.
    #[test]
    fn a_peer_reads_the_features_its_last_reply_named() {
        let named = |v: Option<&'static str>| {
            let mut meta = tonic::metadata::MetadataMap::new();
            if let Some(v) = v {
                meta.insert(FEATURES_HEADER, tonic::metadata::MetadataValue::from_static(v));
            }
            named_features(&meta)
        };
        assert_eq!(named(Some(FEATURES)), [FEATURE_GROUPED, FEATURE_BLOB_REPO_INDEX]);
        assert_eq!(named(Some(" grouped-entries , ")), [FEATURE_GROUPED]);
        assert!(named(None).is_empty());
        let f = PeerFeatures::default();
        assert!(!f.reads(2, FEATURE_GROUPED), "not replied yet");
        f.note(2, named(Some(FEATURE_GROUPED)));
        assert!(f.reads(2, FEATURE_GROUPED) && !f.reads(2, FEATURE_BLOB_REPO_INDEX), "a release with grouped entries only");
        f.note(2, named(Some(FEATURES)));
        assert!(f.reads(2, FEATURE_BLOB_REPO_INDEX), "upgraded");
        f.note(2, named(None));
        assert!(!f.reads(2, FEATURE_GROUPED), "rolled back");
    }
}
