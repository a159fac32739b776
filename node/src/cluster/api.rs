//! The node's implementation of the gateway's [`Backend`]: admin API calls
//! become metadata reads and writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_gateway::*;
use berth_raft::command::{DrillKind, DrillReportRecord, JoinTokenRecord, MetaCommand, MetaResponse, NodeRecord, NodeRole, Placement};
use berth_raft::state::keys;
use berth_raft::{MetaNodeHandle, StateRead};
use berth_replication::Replicator;

use crate::cluster::ca::{Authority, Trust};
use crate::cluster::join::{token_record, JoinToken, DEFAULT_TOKEN_TTL};
use crate::config::NodeConfig;
use crate::errors::{meta_err, state_err};
use crate::identity::auth::{actor_of, Authenticator};
use crate::registry::gc::GcStats;
use crate::registry::uploads::UploadManager;

/// A follower within this many entries of the leader counts as caught up.
const READY_LAG: u64 = 64;

/// How long one tally of every node's blobs serves status requests: the
/// console asks every second from every open tab, and a tally reads every
/// blob record.
const STORAGE_TALLY_TTL: Duration = Duration::from_secs(3);

type StorageTally = std::collections::HashMap<u64, NodeStorage>;

pub struct NodeBackend {
    meta: MetaNodeHandle,
    config: NodeConfig,
    auth: Arc<Authenticator>,
    replicator: Replicator,
    uploads: Arc<UploadManager>,
    gc: Arc<GcStats>,
    authority: Arc<Authority>,
    /// The last tally and when it was made; the lock makes concurrent
    /// status requests share one tally.
    storage: tokio::sync::Mutex<Option<(std::time::Instant, StorageTally)>>,
}

impl NodeBackend {
    /// Each live node's blobs held and backlog, at most
    /// [`STORAGE_TALLY_TTL`] old. The tally reads every blob record, off
    /// the async workers.
    async fn storage_by_node(&self, nodes: &[NodeRecord]) -> Result<StorageTally, ApiError> {
        let mut last = self.storage.lock().await;
        if let Some((at, tally)) = last.as_ref().filter(|(at, _)| at.elapsed() < STORAGE_TALLY_TTL) {
            tracing::trace!(age_ms = at.elapsed().as_millis() as u64, "storage tally reused");
            return Ok(tally.clone());
        }
        let (state, nodes) = (self.meta.state(), nodes.to_vec());
        let tally = tokio::task::spawn_blocking(move || tally_storage(&state, &nodes))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("storage tally: {e}")))??;
        *last = Some((std::time::Instant::now(), tally.clone()));
        Ok(tally)
    }

    pub fn new(
        meta: MetaNodeHandle,
        config: NodeConfig,
        auth: Arc<Authenticator>,
        replicator: Replicator,
        uploads: Arc<UploadManager>,
        gc: Arc<GcStats>,
        authority: Arc<Authority>,
    ) -> NodeBackend {
        NodeBackend { meta, config, auth, replicator, uploads, gc, authority, storage: tokio::sync::Mutex::new(None) }
    }

    fn trust(&self) -> Result<Trust, ApiError> {
        self.authority.trust().map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))
    }
}

/// Each live node's blobs held and backlog, in one pass over the blob
/// records (placement read once per namespace).
fn tally_storage(state: &berth_raft::MetaState, nodes: &[NodeRecord]) -> Result<StorageTally, ApiError> {
    let mut out: std::collections::HashMap<u64, NodeStorage> = std::collections::HashMap::new();
    let mut placements: std::collections::HashMap<String, Placement> = std::collections::HashMap::new();
    for (digest, rec) in berth_raft::state::blobs(state).map_err(state_err)? {
        for n in nodes.iter().filter(|n| !n.removed) {
            let s = out.entry(n.id).or_default();
            if rec.holders.contains(&n.id) {
                s.blobs_held += 1;
                s.bytes_held += rec.size;
                continue;
            }
            if rec.refs == 0 {
                continue;
            }
            let mut unreadable = None;
            let wanted = berth_raft::state::any_blob_repo(state, &digest, &rec, |repo| {
                let ns = repo.split('/').next().unwrap_or(repo);
                if !placements.contains_key(ns) {
                    match state.get::<Placement>(&keys::placement(ns)) {
                        Ok(p) => {
                            placements.insert(ns.to_string(), p.unwrap_or_default());
                        }
                        Err(e) => {
                            unreadable = Some(e);
                            return true;
                        }
                    }
                }
                placements[ns].wants(&n.region)
            })
            .map_err(state_err)?;
            if let Some(e) = unreadable {
                return Err(state_err(e));
            }
            if wanted {
                s.backlog_blobs += 1;
                s.backlog_bytes += rec.size;
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Backend for NodeBackend {
    async fn ready(&self) -> Result<(), berth_gateway::api::NotReady> {
        use berth_gateway::api::NotReady;
        let group = self.meta.view();
        if !group.members.contains(&self.meta.id()) {
            return Err(NotReady::NotAMember);
        }
        let view = self.meta.leader_view().await.map_err(|e| NotReady::NoLeader(e.to_string()))?;
        let applied = group.applied_index.unwrap_or(0);
        let committed = view.committed.unwrap_or(0);
        if applied + READY_LAG < committed {
            return Err(NotReady::Behind { applied, committed });
        }
        Ok(())
    }

    async fn authorize_admin(&self, caller: &Caller) -> Result<Principal, ApiError> {
        self.auth.require_admin(caller).await
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        let nodes: Vec<NodeRecord> = self.meta.state().scan(keys::NODE_PREFIX).map_err(state_err)?;
        let mut storage = self.storage_by_node(&nodes).await?;
        // Each node's disk and RTTs, asked of the nodes themselves at once
        // (a dead node costs half a second, not two).
        let (disks, rtts) = tokio::join!(self.replicator.disk_by_node(), self.replicator.rtt_matrix());
        let disks: std::collections::HashMap<u64, NodeDisk> = disks
            .into_iter()
            .map(|(id, d)| (id, NodeDisk { total_bytes: d.total_bytes, used_bytes: d.used_bytes, available_bytes: d.available_bytes }))
            .collect();
        let group = self.meta.view();
        let view = self.meta.leader_view().await.ok();
        let leader = view.as_ref().map(|v| v.leader).or(group.leader);
        let nodes = nodes
            .into_iter()
            .map(|n| {
                let role = if n.removed {
                    "removed"
                } else if group.voters.contains(&n.id) {
                    "voter"
                } else if group.members.contains(&n.id) {
                    "learner"
                } else {
                    "joining"
                };
                let matched = view.as_ref().and_then(|v| v.matched.iter().find(|(id, _)| *id == n.id).and_then(|(_, m)| *m));
                let lag = view.as_ref().and_then(|v| v.last_log_index.zip(matched).map(|(last, m)| last.saturating_sub(m)));
                NodeStatus {
                    id: n.id,
                    region: n.region,
                    role: role.into(),
                    desired_role: n.role.to_string(),
                    leader: leader == Some(n.id),
                    peer_addr: n.peer_addr,
                    http_addr: n.http_addr,
                    matched_index: matched,
                    lag,
                    storage: Some(storage.remove(&n.id).unwrap_or_default()),
                    disk: disks.get(&n.id).copied(),
                }
            })
            .collect();
        let rtt_ms = rtts.into_iter().map(|(from, row)| RttRow { from, to: row.into_iter().map(|(to, d)| (to, d.as_secs_f64() * 1000.0)).collect() }).collect();
        Ok(ClusterStatus {
            cluster_id: self.config.cluster_id.clone(),
            answered_by: self.meta.id(),
            leader,
            term: view.map(|v| v.term).unwrap_or(group.term),
            nodes,
            rtt_ms,
            applied_index: group.applied_index,
        })
    }

    async fn create_join_token(&self, who: &Principal, req: TokenCreateRequest) -> Result<CreatedToken, ApiError> {
        let ttl = req.ttl_secs.map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl.is_zero() || ttl > Duration::from_secs(365 * 24 * 3600) {
            return Err(ApiError::new(ErrorCode::BadRequest, "ttl must be between 1 second and 365 days"));
        }
        if req.max_uses == Some(0) {
            return Err(ApiError::new(ErrorCode::BadRequest, "max_uses must be at least 1"));
        }
        let token = JoinToken::generate(&self.trust()?.pin().fingerprint);
        let cmd = token_record(&token, ttl, req.max_uses);
        let expires_at_ms = match &cmd {
            MetaCommand::CreateJoinToken(r) => r.expires_at_ms,
            _ => unreachable!("token_record makes a token"),
        };
        match self.meta.write(actor_of(who), cmd).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(CreatedToken { id: token.id.clone(), token: token.to_string(), expires_at_ms }),
            other => Err(ApiError::new(ErrorCode::Internal, format!("token not created: {other:?}"))),
        }
    }

    async fn list_join_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        let tokens: Vec<JoinTokenRecord> = self.meta.state().scan(keys::TOKEN_PREFIX).map_err(state_err)?;
        Ok(tokens
            .into_iter()
            .map(|t| TokenInfo {
                id: t.id,
                created_at_ms: t.created_at_ms,
                expires_at_ms: t.expires_at_ms,
                revoked: t.revoked,
                uses: t.uses,
                max_uses: t.max_uses,
            })
            .collect())
    }

    async fn revoke_join_token(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        match self.meta.write(actor_of(who), MetaCommand::RevokeJoinToken { id: id.to_string() }).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(ApiError::new(ErrorCode::NotFound, format!("no join token {id}"))),
            other => Err(ApiError::new(ErrorCode::Internal, format!("token not revoked: {other:?}"))),
        }
    }

    async fn set_node(&self, who: &Principal, node: u64, change: NodeChange) -> Result<(), ApiError> {
        let cmd = match change {
            NodeChange::Promote => MetaCommand::SetNodeRole { node, role: NodeRole::Voter },
            NodeChange::Demote => MetaCommand::SetNodeRole { node, role: NodeRole::Learner },
            NodeChange::Remove => MetaCommand::RemoveNode { node },
        };
        match self.meta.write(actor_of(who), cmd).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(ApiError::new(ErrorCode::NotFound, format!("no active node {node}"))),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::Conflict, why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("node not changed: {other:?}"))),
        }
    }

    async fn probe_write(&self, who: &Principal) -> Result<(), ApiError> {
        match self.meta.write(actor_of(who), MetaCommand::Probe { at_ms: crate::util::now_ms() }).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            other => Err(ApiError::new(ErrorCode::Internal, format!("probe: {other:?}"))),
        }
    }

    async fn ca_pem(&self) -> Result<String, ApiError> {
        Ok(self.trust()?.bundle())
    }

    async fn ca_status(&self) -> Result<CaStatus, ApiError> {
        let trust = self.trust()?;
        let state = self.meta.state();
        let mut nodes = Vec::new();
        for n in state.scan::<NodeRecord>(keys::NODE_PREFIX).map_err(state_err)?.into_iter().filter(|n| !n.removed) {
            nodes.push(NodeCa { id: n.id, running: berth_raft::state::ca::node_ca(&state, n.id).map_err(state_err)? });
        }
        Ok(CaStatus { signing: trust.signing.fingerprint.clone(), previous: trust.previous.map(|(p, _)| p.fingerprint), nodes })
    }

    async fn rotate_ca(&self, who: &Principal, step: CaStep) -> Result<CaStatus, ApiError> {
        match step {
            CaStep::Start => self.authority.start_rotation(actor_of(who)).await?,
            CaStep::Finish => self.authority.finish_rotation(actor_of(who)).await?,
        }
        self.ca_status().await
    }

    async fn metrics_text(&self) -> String {
        crate::metrics::render(&crate::metrics::Sources { meta: &self.meta, uploads: &self.uploads, replicator: &self.replicator, gc: &self.gc })
    }

    async fn get_placement(&self, namespace: &str) -> Result<PlacementDoc, ApiError> {
        let p: Placement = self.meta.state().get(&keys::placement(namespace)).map_err(state_err)?.unwrap_or_default();
        Ok(match p {
            Placement::Everywhere => PlacementDoc { policy: "everywhere".into(), regions: vec![] },
            Placement::Regions(regions) => PlacementDoc { policy: "regions".into(), regions },
            Placement::OnDemand => PlacementDoc { policy: "on-demand".into(), regions: vec![] },
        })
    }

    async fn set_placement(&self, who: &Principal, namespace: &str, doc: PlacementDoc) -> Result<(), ApiError> {
        let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
        if namespace.parse::<berth_common::RepoName>().is_err() || namespace.contains('/') {
            return Err(bad(format!("{namespace:?} is not a namespace name")));
        }
        let placement = match (doc.policy.as_str(), doc.regions.is_empty()) {
            ("everywhere", true) => Placement::Everywhere,
            ("on-demand", true) => Placement::OnDemand,
            ("regions", false) => {
                for r in &doc.regions {
                    r.parse::<berth_common::Region>().map_err(|e| bad(e.to_string()))?;
                }
                Placement::Regions(doc.regions)
            }
            ("regions", true) => return Err(bad("policy regions needs at least one region".into())),
            (p, _) => return Err(bad(format!("policy {p:?} is not everywhere, regions (with regions) or on-demand"))),
        };
        match self.meta.write(actor_of(who), MetaCommand::SetPlacement { namespace: namespace.to_string(), placement }).await.map_err(meta_err)? {
            MetaResponse::Done => {
                self.replicator.wake();
                Ok(())
            }
            other => Err(ApiError::new(ErrorCode::Internal, format!("placement not set: {other:?}"))),
        }
    }

    async fn isolate(&self, req: IsolateRequest) -> Result<Isolation, ApiError> {
        let me = self.meta.id();
        let nodes: Vec<NodeRecord> = self.meta.state().scan(keys::NODE_PREFIX).map_err(state_err)?;
        if let Some(unknown) = req.keep.iter().find(|k| !nodes.iter().any(|n| n.id == **k && !n.removed)) {
            return Err(ApiError::new(ErrorCode::BadRequest, format!("node {unknown} in keep is not an active node of the cluster")));
        }
        let keep: BTreeSet<u64> = req.keep.iter().copied().filter(|k| *k != me).collect();
        let duration = Duration::from_millis(req.duration_ms);
        let filter = self.meta.filter().clone();
        filter.set_island(me, keep.clone(), std::time::Instant::now() + duration);
        tracing::warn!(node_id = me, keep = ?keep, duration_ms = req.duration_ms, "drill: this node is cut off from every peer outside keep");
        tokio::spawn(announce_heal(filter, me, duration));
        Ok(Isolation { node: me, keep: keep.into_iter().collect(), heals_at_ms: crate::util::now_ms() + req.duration_ms, heals_in_ms: req.duration_ms })
    }

    async fn end_isolation(&self) -> Result<(), ApiError> {
        let me = self.meta.id();
        if self.meta.filter().end_island(me) {
            tracing::warn!(node_id = me, "drill: isolation ended early; talking to every peer again");
        }
        Ok(())
    }

    async fn record_drill(&self, who: &Principal, report: DrillReportRequest) -> Result<(), ApiError> {
        let kind = match report.kind.as_str() {
            "failover" => DrillKind::Failover,
            "region" => DrillKind::Region,
            other => return Err(ApiError::new(ErrorCode::BadRequest, format!("no drill of kind {other:?}"))),
        };
        let rec = DrillReportRecord {
            kind,
            by: who.performer(),
            started_ms: report.started_ms,
            ended_ms: report.ended_ms,
            target: report.target,
            nodes: report.nodes,
            figures_json: report.figures.to_string(),
        };
        match self.meta.write(actor_of(who), MetaCommand::RecordDrill(rec)).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::BadRequest, why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("drill report not kept: {other:?}"))),
        }
    }

    async fn drill_reports(&self) -> Result<Vec<DrillReport>, ApiError> {
        let kept = berth_raft::state::drills::reports(&self.meta.state()).map_err(state_err)?;
        Ok(kept
            .into_iter()
            .map(|r| DrillReport {
                kind: r.kind.as_str().to_string(),
                by: r.by,
                started_ms: r.started_ms,
                ended_ms: r.ended_ms,
                target: r.target,
                nodes: r.nodes,
                // Validated as JSON when posted; an unreadable one shows empty.
                figures: serde_json::from_str(&r.figures_json).unwrap_or_default(),
            })
            .collect())
    }

    async fn backup(&self, _who: &Principal) -> Result<Vec<u8>, ApiError> {
        crate::cluster::backup::take(&self.meta).await
    }

    async fn drain_node(&self, _who: &Principal, node: u64) -> Result<DrainReport, ApiError> {
        crate::cluster::drain::drain(&self.meta, &self.replicator, node).await
    }

    async fn transfer_leader(&self, to: Option<u64>) -> Result<TransferLeaderReply, ApiError> {
        let previous = self.meta.wait_for_leader(Duration::from_secs(5)).await.map_err(meta_err)?;
        let leader = self.meta.transfer_leader(to).await.map_err(meta_err)?;
        Ok(TransferLeaderReply { previous, leader })
    }
}

/// Logs the end of an isolation at its deadline. The filter itself stops
/// cutting at the deadline whether or not this runs (it checks the time on
/// every call); this only tells the operator, and forgets the island.
async fn announce_heal(filter: berth_raft::LinkFilter, me: u64, after: Duration) {
    tokio::time::sleep(after).await;
    if filter.forget_expired_island(me) {
        tracing::warn!(node_id = me, "drill: isolation over; talking to every peer again");
    }
}
