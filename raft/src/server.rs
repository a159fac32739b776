//! The peer service every node runs: Raft RPCs, forwarded writes, read
//! barriers, election requests, and joins.
//!
//! TLS is tonic's: the server presents its node certificate and asks for the
//! client's. A client certificate not signed by the cluster CA fails the
//! handshake. A client without one gets through the handshake (a joining
//! node has no certificate yet) but every call except `Join` refuses it.
//!
//! A partitioned node neither sends nor hears: when the node's link filter
//! cuts anything, each call is first checked against it, the caller known
//! by the node id in its certificate (which the handshake verified against
//! the cluster CA, so nothing the caller says about itself is trusted).
//! A refused call gets `UNAVAILABLE`, which the caller treats like an
//! unreachable peer.
//!
//! A forwarded write is a [`ForwardedWrite`]: the command and whom it is
//! for. The leader judges it with the node's rules before proposing it
//! ([`crate::forward`] has the trust model); a refusal answers
//! [`ForwardReply::Refused`] and changes nothing.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use openraft::error::RaftError;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::command::MetaRequest;
use crate::forward::{ForwardedWrite, Origin};
use crate::meta::MetaNodeHandle;
use crate::pb::peer_server::{Peer, PeerServer};
use crate::pb::Payload;
use crate::types::*;
use crate::wire::{from_payload, to_payload, ForwardReply, PeerResult, CONNECTION_WINDOW, MAX_MEMBER_MESSAGE, MAX_UNAUTHENTICATED_BODY, STREAM_WINDOW};
use berth_common::{node_id_of_cert, NodeId, PeerTls};

/// Handles the calls about the cluster's certificates, `Join` and `Ca`:
/// the node crate owns the CA, its key and the join tokens; this crate
/// only frames the bytes and says who is calling.
#[async_trait]
pub trait CaHandler: Send + Sync + 'static {
    /// Takes the joiner's request bytes and its address (what rate limits
    /// see), returns the reply bytes or a one-line refusal.
    async fn join(&self, from: Option<std::net::IpAddr>, request: Vec<u8>) -> PeerResult<Vec<u8>>;

    /// A `Ca` call from member `caller` (its certificate checked against
    /// the CA and its id against the removed nodes).
    async fn member_call(&self, caller: NodeId, request: Vec<u8>) -> PeerResult<Vec<u8>>;
}

pub struct PeerService {
    meta: MetaNodeHandle,
    ca: Arc<dyn CaHandler>,
}

fn require_cluster_cert<T>(req: &Request<T>) -> Result<(), Status> {
    match req.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(()),
        _ => Err(Status::unauthenticated("a certificate from the cluster CA is required")),
    }
}

/// The node a call comes from, by its certificate; `None` without one.
fn caller_id<T>(req: &Request<T>) -> Option<NodeId> {
    let certs = req.peer_certs()?;
    node_id_of_cert(certs.first()?.as_ref())
}

fn decode<T: DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    from_payload(&req.into_inner().data).map_err(|e| Status::invalid_argument(format!("unreadable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    to_payload(value).map(|data| Response::new(Payload { data })).map_err(|e| Status::internal(format!("encode reply: {e}")))
}

impl PeerService {
    /// Refuses a call from a node this node may not hear now (a cut link or
    /// a drill's island). Identifying the caller costs a certificate parse,
    /// so it is skipped while nothing is cut.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.meta.filter().is_clear() {
            return Ok(());
        }
        self.admit_from(caller_id(req))
    }

    /// [`PeerService::admit`] for a caller already identified.
    fn admit_from(&self, caller: Option<NodeId>) -> Result<(), Status> {
        let filter = self.meta.filter();
        if filter.is_clear() || filter.admits(caller, self.meta.id()) {
            return Ok(());
        }
        let who = caller.map(|c| format!("node {c}")).unwrap_or_else(|| "an unidentified caller".into());
        Err(Status::unavailable(format!("node {} does not hear {who} now: the link is cut", self.meta.id())))
    }

    /// The checks every call between members passes first: a certificate
    /// from the cluster CA naming a node that has not been removed, and a
    /// link that is not cut.
    ///
    /// A removed node keeps a certificate the CA signed, so the CA alone
    /// does not make a member: its id is looked up in this node's records.
    /// Only a record that says "removed" refuses; an id this node has no
    /// record of yet (a node that joined a moment ago, or this node is far
    /// behind) is heard, since refusing it could keep a lagging follower
    /// from ever hearing a leader that joined after it went away. Ids are
    /// never reused, so the up-to-date majority refuses a removed node for
    /// good.
    fn check_member<T>(&self, req: &Request<T>) -> Result<NodeId, Status> {
        require_cluster_cert(req)?;
        let caller = caller_id(req).ok_or_else(|| Status::unauthenticated("the client certificate names no node"))?;
        if self.meta.node_removed(caller) {
            tracing::warn!(node_id = caller, "refused a call from a removed node");
            return Err(Status::permission_denied(format!("node {caller} was removed from the cluster and may not take part in it")));
        }
        self.admit_from(Some(caller))?;
        Ok(caller)
    }

    /// The leader this node knows of, for a caller that asked the wrong node.
    fn leader_hint(&self) -> Option<(NodeId, MetaNode)> {
        let m = self.meta.metrics();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| (leader, n.clone()))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let bytes = req.get_ref().data.len();
        let mut rpc: openraft::raft::AppendEntriesRequest<crate::types::TypeConfig> = decode(req)?;
        let sent = rpc.entries.len();
        let room = self.meta.room_to_apply(&rpc, bytes).await;
        rpc.entries.truncate(room);
        let kept = (room < sent).then(|| rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id));
        let mut res = self.meta.raft().append_entries(rpc).await;
        if let (Some(matching), Ok(openraft::raft::AppendEntriesResponse::Success)) = (kept, &res) {
            // Only a prefix was taken: the leader sends the rest when asked
            // again, by when this node has applied more.
            res = Ok(openraft::raft::AppendEntriesResponse::PartialSuccess(matching));
        }
        if matches!(res, Ok(ref r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.meta.heard_leader();
        }
        let mut out = reply(&res)?;
        out.metadata_mut().insert(crate::network::FEATURES_HEADER, tonic::metadata::MetadataValue::from_static(crate::network::FEATURES));
        Ok(out)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let rpc = decode(req)?;
        reply(&self.meta.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let rpc = decode(req)?;
        let res = self.meta.raft().install_snapshot(rpc).await;
        if res.is_ok() {
            self.meta.heard_leader();
        }
        reply(&res)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.check_member(&req)?;
        let ForwardedWrite::V1 { actor, request } = decode(req)?;
        if self.meta.handing_over() {
            // Not proposed: the caller retries at the next leader.
            return reply(&ForwardReply::NotLeader { leader: None });
        }
        if !self.meta.is_leader() {
            // Judged by the leader's state only: a follower's may lag.
            return reply(&ForwardReply::NotLeader { leader: self.leader_hint() });
        }
        let MetaRequest::V1(cmd) = request else {
            // Only the leader groups writes; a member forwards them one by one.
            return reply(&ForwardReply::Refused("a group of writes is not forwarded; send each write on its own".into()));
        };
        if let Err(why) = self.meta.judge(Origin { node: caller, forwarded: true, voter: self.meta.voters().contains(&caller) }, &actor, &cmd) {
            return reply(&ForwardReply::Refused(why));
        }
        reply(&self.meta.propose(cmd).await)
    }

    async fn read_index(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let out = match self.meta.raft().ensure_linearizable().await {
            Ok(read_log_id) => ForwardReply::ReadIndex { read_log_id },
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                ForwardReply::NotLeader { leader: f.leader_id.zip(f.leader_node) }
            }
            Err(e) => ForwardReply::Failed(e.to_string()),
        };
        reply(&out)
    }

    async fn pre_vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let ask: crate::wire::PreVoteRequest = decode(req)?;
        reply(&self.meta.answer_pre_vote(&ask).await)
    }

    async fn elect(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let out: PeerResult<()> = self.meta.raft().trigger().elect().await.map_err(|e| e.to_string());
        reply(&out)
    }

    async fn transfer_leader(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let to: Option<u64> = decode(req)?;
        let out: PeerResult<u64> = self.meta.hand_over_leadership(to).await.map_err(|e| e.to_string());
        reply(&out)
    }

    async fn status(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.check_member(&req)?;
        let out: PeerResult<crate::wire::LeaderView> =
            if self.meta.is_leader() { self.meta.leader_view().await.map_err(|e| e.to_string()) } else { Err("not the leader".into()) };
        reply(&out)
    }

    async fn join(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.admit(&req)?;
        let from = req.remote_addr().map(|a| a.ip());
        let out = self.ca.join(from, req.into_inner().data).await;
        reply(&out)
    }

    async fn ca(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.check_member(&req)?;
        let out = self.ca.member_call(caller, req.into_inner().data).await;
        reply(&out)
    }
}

/// Caps the body of a call that came without a client certificate.
fn limit_unauthenticated(req: tonic::codegen::http::Request<tonic::body::Body>) -> tonic::codegen::http::Request<tonic::body::Body> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let member = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.peer_certs()).is_some_and(|c| !c.is_empty());
    if member {
        req
    } else {
        req.map(|body| tonic::body::Body::new(http_body_util::Limited::new(body, MAX_UNAUTHENTICATED_BODY)))
    }
}

/// Serves the peer service on `listener` until `shutdown` resolves.
pub async fn serve(
    meta: MetaNodeHandle,
    ca: Arc<dyn CaHandler>,
    tls: &PeerTls,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .client_auth_optional(true);
    let service = PeerServer::new(PeerService { meta, ca }).max_decoding_message_size(MAX_MEMBER_MESSAGE).max_encoding_message_size(MAX_MEMBER_MESSAGE);
    Server::builder()
        .tls_config(tls_config)?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_max_header_list_size(16 << 10)
        .max_concurrent_streams(256)
        .layer(tower::ServiceBuilder::new().map_request(limit_unauthenticated))
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
