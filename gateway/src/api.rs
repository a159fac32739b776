//! The backend trait the node implements, and the admin API's documents.
//! The CLI reads the same types, so both sides agree on the shapes.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::access::{Caller, Principal};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Promote,
    Demote,
    Remove,
}

/// Why a node does not take traffic yet (`/ready`'s 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("this node is not (yet) a member of the metadata group")]
    NotAMember,
    #[error("{0}")]
    NoLeader(String),
    #[error("applied index {applied} is behind the leader's {committed}")]
    Behind { applied: u64, committed: u64 },
}

/// A request that breaks a documented bound: the words are the 400's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error("kind must be one of {kinds}, not {0:?}", kinds = DRILL_KINDS.join(", "))]
    Kind(String),
    #[error("target must be 1 to {DRILL_REPORT_TARGET_MAX} bytes without control characters")]
    Target,
    #[error("a report names at most {DRILL_REPORT_NODES_MAX} nodes")]
    Nodes,
    #[error("ended_ms is before started_ms")]
    EndsBeforeStart,
    #[error("figures must be a JSON object")]
    FiguresNotAnObject,
    #[error("figures must be at most {DRILL_REPORT_FIGURES_MAX} bytes of JSON")]
    FiguresTooLarge,
    #[error("duration_ms must be between {ISOLATION_MIN_MS} (1 s) and {ISOLATION_MAX_MS} (10 min), not {0}")]
    Duration(u64),
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Ok when the node has joined and caught up with the leader.
    async fn ready(&self) -> Result<(), NotReady>;
    /// The caller, when it is a cluster administrator. The writes below
    /// are made for it: the leader checks it again before committing.
    async fn authorize_admin(&self, caller: &Caller) -> Result<Principal, ApiError>;
    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError>;
    async fn create_join_token(&self, who: &Principal, req: TokenCreateRequest) -> Result<CreatedToken, ApiError>;
    async fn list_join_tokens(&self) -> Result<Vec<TokenInfo>, ApiError>;
    async fn revoke_join_token(&self, who: &Principal, id: &str) -> Result<(), ApiError>;
    async fn set_node(&self, who: &Principal, node: u64, change: NodeChange) -> Result<(), ApiError>;
    async fn transfer_leader(&self, to: Option<u64>) -> Result<TransferLeaderReply, ApiError>;
    /// Gets node `node` ready to be removed: leadership moves off it, and
    /// every blob only it holds gets a copy on another node.
    async fn drain_node(&self, who: &Principal, node: u64) -> Result<DrainReport, ApiError>;
    /// A consistent copy of the cluster's metadata, as of a point no older
    /// than the last write acknowledged before the call (`berth cluster
    /// backup`); opaque bytes that `berth cluster restore` reads.
    async fn backup(&self, who: &Principal) -> Result<Vec<u8>, ApiError>;
    async fn get_placement(&self, namespace: &str) -> Result<PlacementDoc, ApiError>;
    /// One metadata write that changes nothing (drills measure with it).
    async fn probe_write(&self, who: &Principal) -> Result<(), ApiError>;
    /// The cluster CA certificate, PEM.
    async fn ca_pem(&self) -> Result<String, ApiError>;
    async fn ca_status(&self) -> Result<CaStatus, ApiError>;
    async fn rotate_ca(&self, who: &Principal, step: CaStep) -> Result<CaStatus, ApiError>;
    /// The node's metrics in the Prometheus text format.
    async fn metrics_text(&self) -> String;
    async fn set_placement(&self, who: &Principal, namespace: &str, doc: PlacementDoc) -> Result<(), ApiError>;
    /// Cuts this node off from every peer but `req.keep`, both ways, until
    /// `req.duration_ms` from now (a region drill). `req` is validated.
    async fn isolate(&self, req: IsolateRequest) -> Result<Isolation, ApiError>;
    /// Ends this node's isolation now; nothing to do when there is none.
    async fn end_isolation(&self) -> Result<(), ApiError>;
    /// Keeps a drill's report, made by `who`, for every node to list.
    /// `report` is validated ([`DrillReportRequest::validate`]).
    async fn record_drill(&self, who: &Principal, report: DrillReportRequest) -> Result<(), ApiError>;
    /// The recent drills' reports, newest first.
    async fn drill_reports(&self) -> Result<Vec<DrillReport>, ApiError>;
}

/// The drills a report may be of.
pub const DRILL_KINDS: [&str; 2] = ["failover", "region"];
/// The longest target a report may name, bytes (the state holds it to the same).
pub const DRILL_REPORT_TARGET_MAX: usize = 128;
/// The most nodes a report may name.
pub const DRILL_REPORT_NODES_MAX: usize = 64;
/// The largest a report's figures may be, bytes of JSON.
pub const DRILL_REPORT_FIGURES_MAX: usize = 16 * 1024;

/// `POST /api/v1/drill/reports`: what a drill measured, as its runner
/// (the CLI, or the node that ran the console's drill) saw it. Who ran it
/// is the caller, never the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillReportRequest {
    /// `failover` or `region`.
    pub kind: String,
    /// Wall-clock start and end, ms since the epoch.
    pub started_ms: u64,
    pub ended_ms: u64,
    /// What was drilled: the region, or the leader change (`1 -> 2`).
    pub target: String,
    /// The nodes the drill acted on.
    #[serde(default)]
    pub nodes: Vec<u64>,
    /// The measurements, a JSON object: the CLI's report as it printed it.
    #[serde(default = "empty_object")]
    pub figures: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl DrillReportRequest {
    /// Checks the kind and every bound; the message is the whole error.
    pub fn validate(&self) -> Result<(), BoundError> {
        if !DRILL_KINDS.contains(&self.kind.as_str()) {
            return Err(BoundError::Kind(self.kind.clone()));
        }
        if self.target.is_empty() || self.target.len() > DRILL_REPORT_TARGET_MAX || self.target.chars().any(char::is_control) {
            return Err(BoundError::Target);
        }
        if self.nodes.len() > DRILL_REPORT_NODES_MAX {
            return Err(BoundError::Nodes);
        }
        if self.ended_ms < self.started_ms {
            return Err(BoundError::EndsBeforeStart);
        }
        if !self.figures.is_object() {
            return Err(BoundError::FiguresNotAnObject);
        }
        if self.figures.to_string().len() > DRILL_REPORT_FIGURES_MAX {
            return Err(BoundError::FiguresTooLarge);
        }
        Ok(())
    }
}

/// One report as `GET /api/v1/drill/reports` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub kind: String,
    /// Who ran the drill.
    pub by: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub target: String,
    pub nodes: Vec<u64>,
    pub figures: serde_json::Value,
}

/// The shortest and longest isolation a drill may ask for. The upper bound
/// keeps a forgotten drill from cutting a node off for long: the node heals
/// by itself at the deadline.
pub const ISOLATION_MIN_MS: u64 = 1_000;
pub const ISOLATION_MAX_MS: u64 = 600_000;

/// `POST /api/v1/drill/isolate`: what to cut this node off from, how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolateRequest {
    /// How long the node stays cut off, ms (1 s to 10 min).
    pub duration_ms: u64,
    /// Nodes it may still talk to: the other nodes of its side of the
    /// partition (a drill's region).
    #[serde(default)]
    pub keep: Vec<u64>,
}

impl IsolateRequest {
    /// Checks the bounds; the message is the whole error.
    pub fn validate(&self) -> Result<(), BoundError> {
        if !(ISOLATION_MIN_MS..=ISOLATION_MAX_MS).contains(&self.duration_ms) {
            return Err(BoundError::Duration(self.duration_ms));
        }
        Ok(())
    }
}

/// The answer to an isolation: who is cut off, and when it heals by itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Isolation {
    pub node: u64,
    pub keep: Vec<u64>,
    /// Wall-clock time of the node when it heals, ms since the epoch.
    pub heals_at_ms: u64,
    /// The same, relative: ms from the answer.
    pub heals_in_ms: u64,
}

/// Where a namespace's blobs are kept in the background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementDoc {
    /// `everywhere`, `regions` or `on-demand`.
    pub policy: String,
    /// With `regions`: which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// The node that answered.
    pub answered_by: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub nodes: Vec<NodeStatus>,
    /// RTT from each node (row) to each peer, ms, as the blob transport measures it.
    #[serde(default)]
    pub rtt_ms: Vec<RttRow>,
    /// Highest log index the answering node has applied: how a drill tells
    /// that a node has caught up after rejoining. None from older nodes.
    #[serde(default)]
    pub applied_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RttRow {
    pub from: u64,
    pub to: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub region: String,
    /// voter, learner, joining (registered, not yet in the membership) or removed.
    pub role: String,
    /// What the operator asked for: auto, voter or learner.
    pub desired_role: String,
    pub leader: bool,
    pub peer_addr: String,
    pub http_addr: String,
    /// Highest log index the leader knows this node stores.
    pub matched_index: Option<u64>,
    /// Entries behind the leader's log; None when unknown.
    pub lag: Option<u64>,
    /// What the node holds and still has to fetch, from the replicated
    /// blob records of the answering node. None from older nodes.
    #[serde(default)]
    pub storage: Option<NodeStorage>,
    /// The filesystem of the node's blob store, as the node itself reports
    /// it over the blob transport. None when the node did not answer (down,
    /// cut off, or older).
    #[serde(default)]
    pub disk: Option<NodeDisk>,
}

/// A node's disk: the filesystem its blob store is on (which may hold
/// other things too: `used_bytes` is the filesystem's, not berth's; what
/// berth's blobs take is [`NodeStorage::bytes_held`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDisk {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged writer may still use.
    pub available_bytes: u64,
}

/// A node's blobs as the metadata records them (every node has the same
/// records, so any node can answer for all).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStorage {
    /// Blobs the node has a verified copy of.
    pub blobs_held: u64,
    pub bytes_held: u64,
    /// Referenced blobs placement wants in the node's region that it does
    /// not hold yet: its replication backlog.
    pub backlog_blobs: u64,
    pub backlog_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// Lifetime in seconds; default 24 h.
    pub ttl_secs: Option<u64>,
    /// How many nodes may join with it; default unlimited until expiry.
    pub max_uses: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    /// The whole token to pass to `berth cluster join --token`; shown once.
    pub token: String,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub revoked: bool,
    pub uses: u32,
    pub max_uses: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferLeaderRequest {
    pub to: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferLeaderReply {
    pub previous: u64,
    pub leader: u64,
}

/// What `berth node drain` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainReport {
    pub node: u64,
    /// The leadership handed over, when the node led.
    pub leadership: Option<TransferLeaderReply>,
    /// Blobs only the node held, each now copied to another node too.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
}

/// A step of `berth cluster ca rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStep {
    /// A new CA signs; the current one stays trusted.
    Start,
    /// The previous CA is trusted no more.
    Finish,
}

/// The cluster CA as `berth cluster ca status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaStatus {
    /// Fingerprint (hex SHA-256) of the CA that signs now.
    pub signing: String,
    /// During a rotation, the CA before, still trusted.
    pub previous: Option<String>,
    /// Which CA each node (not removed) runs on, as it last reported.
    pub nodes: Vec<NodeCa>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeCa {
    pub id: u64,
    pub running: Option<String>,
}
