//! The region drill's plan, shared with `berth drill region`, and the
//! region drill the console starts: `POST /api/v1/drill/region` and
//! `DELETE /api/v1/drill/region/{region}`.
//!
//! The console speaks only to the node that served it, and isolation is
//! per node (`POST /api/v1/drill/isolate` cuts off the node that answers),
//! so the answering node does what the CLI does from outside: it reads the
//! cluster status, refuses what [`RegionPlan::new`] refuses, checks that
//! every node of the region and one outside take a write, then isolates
//! each node of the region through that node's own isolate call, with the
//! caller's credentials (its `Authorization`, or its session cookie and
//! CSRF token: every node honours them). Unlike the CLI it neither probes
//! nor waits: the nodes heal by themselves at their deadline, the `DELETE`
//! heals them sooner, and the console's cluster page shows the cluster
//! meanwhile. Neither call is in the OpenAPI document (see
//! `handle_isolate`).
//!
//! Drill reports: `POST /api/v1/drill/reports` keeps one (the CLI posts
//! what it measured at the end of a drill), `GET` lists the recent ones,
//! newest first, the same on every node (they are kept in the metadata).
//! The node that ran a console drill records its report when the drill is
//! healed from that node, or at its deadline; a heal through another node
//! leaves the report to the deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::access::{Caller, Principal, CSRF_HEADER};
use crate::api::{Backend, ClusterStatus, DrillReport, DrillReportRequest, IsolateRequest, Isolation, NodeStatus};
use crate::error::{ApiError, ErrorCode};

/// Who a region drill cuts off, and where it writes from outside.
#[derive(Debug, Clone)]
pub struct RegionPlan {
    pub region: String,
    /// The region's nodes (voters and learners): cut off during the drill.
    pub inside: Vec<NodeStatus>,
    /// Every other member: they keep the cluster going.
    pub outside: Vec<NodeStatus>,
    /// The node the writes outside go through: the leader when it is
    /// outside, else an outside voter (which may have to elect one).
    pub writer: NodeStatus,
    pub voters: usize,
    pub voters_outside: usize,
}

/// Why a region drill is refused: one line, for the CLI and the console
/// alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    #[error("region {region:?} has no nodes (the cluster's regions: {})", .regions.join(", "))]
    NoSuchRegion { region: String, regions: Vec<String> },
    #[error("region {region} holds every node of the cluster: nothing would be left to keep it going")]
    WholeCluster { region: String },
    #[error(
        "the nodes outside {region} hold {voters_outside} of the {voters} voters, no majority: the drill would stop every write for its duration (force it to drill anyway: --force)"
    )]
    NoMajority { region: String, voters_outside: usize, voters: usize },
}

/// Why a call to another node during a drill failed.
#[derive(Debug, thiserror::Error)]
enum PeerCallError {
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{status}: {message}")]
    Refused { status: reqwest::StatusCode, message: String },
    #[error("{url}: unreadable answer: {source}")]
    Unreadable { url: String, source: serde_json::Error },
    #[error("an empty answer")]
    Empty,
    /// This node's own backend refused (its API error's words).
    #[error("{0}")]
    Local(String),
}

impl RegionPlan {
    /// Splits the cluster at `region`; refuses a region without nodes, the
    /// whole cluster, and (unless `force`) a drill after which the nodes
    /// outside would hold no majority of the voters: no write could commit.
    /// The refusal is one line, for the CLI and the console alike.
    pub fn new(status: &ClusterStatus, region: &str, force: bool) -> Result<RegionPlan, PlanRefusal> {
        let members: Vec<&NodeStatus> = status.nodes.iter().filter(|n| n.role == "voter" || n.role == "learner").collect();
        let (inside, outside): (Vec<NodeStatus>, Vec<NodeStatus>) = members.into_iter().cloned().partition(|n| n.region == region);
        if inside.is_empty() {
            let regions: BTreeSet<String> = outside.iter().map(|n| n.region.clone()).collect();
            return Err(PlanRefusal::NoSuchRegion { region: region.to_string(), regions: regions.into_iter().collect() });
        }
        if outside.is_empty() {
            return Err(PlanRefusal::WholeCluster { region: region.to_string() });
        }
        let voters = inside.iter().chain(&outside).filter(|n| n.role == "voter").count();
        let voters_outside = outside.iter().filter(|n| n.role == "voter").count();
        if voters_outside * 2 <= voters && !force {
            return Err(PlanRefusal::NoMajority { region: region.to_string(), voters_outside, voters });
        }
        let writer = outside.iter().find(|n| Some(n.id) == status.leader).or_else(|| outside.iter().find(|n| n.role == "voter")).unwrap_or(&outside[0]).clone();
        Ok(RegionPlan { region: region.to_string(), inside, outside, writer, voters, voters_outside })
    }

    pub fn inside_ids(&self) -> Vec<u64> {
        self.inside.iter().map(|n| n.id).collect()
    }

    pub fn members(&self) -> impl Iterator<Item = &NodeStatus> {
        self.inside.iter().chain(&self.outside)
    }

    /// Drilled although the rest holds no majority of the voters.
    pub fn forced(&self) -> bool {
        self.voters_outside * 2 <= self.voters
    }
}

/// `POST /api/v1/drill/region`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDrillRequest {
    pub region: String,
    /// How long the region stays cut off unless healed sooner, ms (1 s to
    /// 10 min, as an isolation).
    pub duration_ms: u64,
    /// Drill even when the rest of the cluster holds no majority of voters.
    #[serde(default)]
    pub force: bool,
}

/// The answer: the region's nodes, each cut off until its deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionDrill {
    pub region: String,
    pub isolated: Vec<Isolation>,
    pub voters: usize,
    pub voters_outside: usize,
    pub forced: bool,
}

/// The answer to a heal: the nodes told to talk to everyone again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionHealed {
    pub region: String,
    pub healed: Vec<u64>,
}

/// Longer than a node's default write timeout (10 s), so a slow refusal
/// comes back as the node's answer and not as a timeout here.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);

const ISOLATE: &str = "/api/v1/drill/isolate";
const PROBE: &str = "/api/v1/drill/probe";

#[derive(Clone)]
pub(crate) struct DrillState {
    pub backend: std::sync::Arc<dyn Backend>,
    /// Calls the other nodes (it trusts their certificates).
    pub http: reqwest::Client,
    /// The console drills this node started and has not reported yet, by
    /// region: whichever of the heal and the deadline comes first reports.
    pub running: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, RunningDrill>>>,
}

impl DrillState {
    pub(crate) fn new(backend: std::sync::Arc<dyn Backend>, http: reqwest::Client) -> DrillState {
        DrillState { backend, http, running: Default::default() }
    }
}

/// A console drill under way, as its report will need it.
#[derive(Debug, Clone)]
pub(crate) struct RunningDrill {
    /// Who started it: the report is theirs, and recorded for them.
    who: Principal,
    started_ms: u64,
    nodes: Vec<u64>,
    duration_ms: u64,
    voters: usize,
    voters_outside: usize,
    forced: bool,
}

pub(crate) fn routes(state: DrillState) -> Router {
    Router::new()
        .route("/api/v1/drill/region", post(handle_region_drill))
        .route("/api/v1/drill/region/{region}", delete(handle_region_heal))
        .route("/api/v1/drill/reports", post(handle_report_record).get(handle_report_list))
        .with_state(state)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Keeps a drill's report, validated first: a bad one is a 400 and
/// nothing is kept.
async fn handle_report_record(
    State(state): State<DrillState>,
    caller: Caller,
    body: Result<Json<DrillReportRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::http::StatusCode, ApiError> {
    let who = state.backend.authorize_admin(&caller).await?;
    let Json(req) = body?;
    req.validate().map_err(|m| ApiError::new(ErrorCode::BadRequest, m.to_string()))?;
    state.backend.record_drill(&who, req).await?;
    Ok(axum::http::StatusCode::CREATED)
}

/// The recent drills' reports, newest first.
async fn handle_report_list(State(state): State<DrillState>, caller: Caller) -> Result<Json<Vec<DrillReport>>, ApiError> {
    state.backend.authorize_admin(&caller).await?;
    Ok(Json(state.backend.drill_reports().await?))
}

/// Records the report of the console drill of `region`, if this node runs
/// one: ended at `ended_ms`, `how` (`healed` or `deadline`). A write that
/// fails (the cluster electing after the heal) is tried again for a while.
async fn report_console_drill(state: DrillState, region: String, ended_ms: u64, how: &'static str) {
    let Some(d) = state.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&region) else { return };
    let req = DrillReportRequest {
        kind: "region".into(),
        started_ms: d.started_ms,
        ended_ms: ended_ms.max(d.started_ms),
        target: region.clone(),
        nodes: d.nodes.clone(),
        figures: serde_json::json!({
            "source": "console",
            "duration_ms": d.duration_ms,
            "isolated_ms": ended_ms.saturating_sub(d.started_ms),
            "ended_by": how,
            "voters": d.voters,
            "voters_outside": d.voters_outside,
            "forced": d.forced,
        }),
    };
    let mut last = String::new();
    for _ in 0..6 {
        match state.backend.record_drill(&d.who, req.clone()).await {
            Ok(()) => return,
            Err(e) => last = e.message,
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::warn!(region = %region, error = %last, "drill: the console drill's report was not recorded");
}

/// A call on one node: the answering node itself through the backend,
/// another over HTTP with the caller's credentials.
struct Peers<'a> {
    state: &'a DrillState,
    me: u64,
    /// The caller's credential headers, sent on to the other nodes.
    creds: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl Peers<'_> {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        node: &NodeStatus,
        method: Method,
        path: &str,
        body: Option<&IsolateRequest>,
    ) -> Result<Option<T>, PeerCallError> {
        let url = format!("{}{path}", node.http_addr.trim_end_matches('/'));
        let mut req = self.state.http.request(method, &url).timeout(PEER_TIMEOUT);
        for (k, v) in &self.creds {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| PeerCallError::Http { url: url.clone(), source })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|source| PeerCallError::Http { url: url.clone(), source })?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = v["errors"][0]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(PeerCallError::Refused { status, message });
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|source| PeerCallError::Unreadable { url, source })
    }

    async fn probe(&self, node: &NodeStatus, who: &crate::access::Principal) -> Result<(), PeerCallError> {
        if node.id == self.me {
            return self.state.backend.probe_write(who).await.map_err(|e| PeerCallError::Local(e.message));
        }
        self.call::<serde_json::Value>(node, Method::POST, PROBE, None).await.map(|_| ())
    }

    async fn isolate(&self, node: &NodeStatus, req: IsolateRequest) -> Result<Isolation, PeerCallError> {
        if node.id == self.me {
            return self.state.backend.isolate(req).await.map_err(|e| PeerCallError::Local(e.message));
        }
        self.call(node, Method::POST, ISOLATE, Some(&req)).await?.ok_or(PeerCallError::Empty)
    }

    async fn heal(&self, node: &NodeStatus) -> Result<(), PeerCallError> {
        if node.id == self.me {
            return self.state.backend.end_isolation().await.map_err(|e| PeerCallError::Local(e.message));
        }
        self.call::<serde_json::Value>(node, Method::DELETE, ISOLATE, None).await.map(|_| ())
    }

    /// Heals `nodes`; the failures, one line each.
    async fn heal_all(&self, nodes: &[&NodeStatus]) -> Vec<String> {
        let mut failed = Vec::new();
        for n in nodes {
            if let Err(e) = self.heal(n).await {
                failed.push(format!("node {} was not healed ({e}); it heals at its own deadline", n.id));
            }
        }
        failed
    }
}

fn credentials(headers: &HeaderMap) -> Vec<(axum::http::HeaderName, axum::http::HeaderValue)> {
    [axum::http::header::AUTHORIZATION, axum::http::header::COOKIE, axum::http::HeaderName::from_static(CSRF_HEADER)]
        .into_iter()
        .filter_map(|k| headers.get(&k).map(|v| (k, v.clone())))
        .collect()
}

/// Cuts a region off, after the CLI's checks.
async fn handle_region_drill(
    State(state): State<DrillState>,
    headers: HeaderMap,
    caller: Caller,
    body: Result<Json<RegionDrillRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RegionDrill>, ApiError> {
    let who = state.backend.authorize_admin(&caller).await?;
    let Json(req) = body?;
    IsolateRequest { duration_ms: req.duration_ms, keep: vec![] }.validate().map_err(|m| ApiError::new(ErrorCode::BadRequest, m.to_string()))?;
    let status = state.backend.cluster_status().await?;
    let plan = RegionPlan::new(&status, &req.region, req.force).map_err(|m| ApiError::new(ErrorCode::Conflict, m.to_string()))?;
    let peers = Peers { state: &state, me: status.answered_by, creds: credentials(&headers) };
    // A cluster that does not take writes now is not drilled: what the
    // drill shows would be the fault already there.
    for n in plan.inside.iter().chain([&plan.writer]) {
        if let Err(e) = peers.probe(n, &who).await {
            return Err(ApiError::new(ErrorCode::Conflict, format!("node {} does not take writes before the drill ({e}); fix that first", n.id)));
        }
    }
    // The answering node last: it may be in the region, and its HTTP
    // calls to the others go on while it is cut off from their peers.
    let ids = plan.inside_ids();
    let mut order: Vec<&NodeStatus> = plan.inside.iter().filter(|n| n.id != status.answered_by).collect();
    order.extend(plan.inside.iter().filter(|n| n.id == status.answered_by));
    let mut isolated = Vec::new();
    let mut done: Vec<&NodeStatus> = Vec::new();
    for n in order {
        let one = IsolateRequest { duration_ms: req.duration_ms, keep: ids.iter().copied().filter(|k| *k != n.id).collect() };
        match peers.isolate(n, one).await {
            Ok(i) => {
                isolated.push(i);
                done.push(n);
            }
            Err(e) => {
                let unhealed = peers.heal_all(&done).await;
                let healed = if unhealed.is_empty() { format!("region {} is healed", plan.region) } else { unhealed.join("; ") };
                return Err(ApiError::new(ErrorCode::Unavailable, format!("the drill did not start: node {} was not isolated ({e}); {healed}", n.id)));
            }
        }
    }
    isolated.sort_by_key(|i| i.node);
    tracing::warn!(region = %plan.region, nodes = ?ids, duration_ms = req.duration_ms, forced = plan.forced(), "drill: region cut off from the console");
    // Reported at the heal, or at the deadline if nobody heals it here.
    let started_ms = now_ms();
    let running = RunningDrill {
        who,
        started_ms,
        nodes: ids,
        duration_ms: req.duration_ms,
        voters: plan.voters,
        voters_outside: plan.voters_outside,
        forced: plan.forced(),
    };
    state.running.lock().unwrap_or_else(|e| e.into_inner()).insert(plan.region.clone(), running);
    let (later, region) = (state.clone(), plan.region.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(req.duration_ms)).await;
        // Only the drill started above: a heal and a new drill replace it.
        let ours = later.running.lock().unwrap_or_else(|e| e.into_inner()).get(&region).is_some_and(|d| d.started_ms == started_ms);
        if ours {
            report_console_drill(later, region, started_ms + req.duration_ms, "deadline").await;
        }
    });
    Ok(Json(RegionDrill { region: plan.region.clone(), isolated, voters: plan.voters, voters_outside: plan.voters_outside, forced: plan.forced() }))
}

/// Heals every node of a region now.
async fn handle_region_heal(
    State(state): State<DrillState>,
    headers: HeaderMap,
    caller: Caller,
    Path(region): Path<String>,
) -> Result<Json<RegionHealed>, ApiError> {
    state.backend.authorize_admin(&caller).await?;
    let status = state.backend.cluster_status().await?;
    let inside: Vec<&NodeStatus> = status.nodes.iter().filter(|n| n.region == region && (n.role == "voter" || n.role == "learner")).collect();
    if inside.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, format!("region {region:?} has no nodes")));
    }
    let peers = Peers { state: &state, me: status.answered_by, creds: credentials(&headers) };
    let failed = peers.heal_all(&inside).await;
    if !failed.is_empty() {
        return Err(ApiError::new(ErrorCode::Unavailable, failed.join("; ")));
    }
    tracing::warn!(region = %region, "drill: region healed from the console");
    tokio::spawn(report_console_drill(state.clone(), region.clone(), now_ms(), "healed"));
    Ok(Json(RegionHealed { region, healed: inside.iter().map(|n| n.id).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, region: &str, role: &str) -> NodeStatus {
        NodeStatus {
            id,
            region: region.into(),
            role: role.into(),
            desired_role: "auto".into(),
            leader: false,
            peer_addr: format!("10.0.0.{id}:7000"),
            http_addr: format!("http://10.0.0.{id}:5000"),
            matched_index: None,
            lag: None,
            storage: None,
            disk: None,
        }
    }

    fn cluster(leader: u64, nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus { cluster_id: "c".into(), answered_by: 1, leader: Some(leader), term: 1, nodes, rtt_ms: vec![], applied_index: None }
    }

    #[test]
    fn a_region_plan_splits_members_and_writes_through_the_leader_when_it_is_outside() {
        let s = cluster(1, vec![node(1, "eu", "voter"), node(2, "us", "voter"), node(3, "ap", "voter"), node(4, "us", "learner"), node(5, "us", "removed")]);
        let p = RegionPlan::new(&s, "us", false).unwrap();
        assert_eq!(p.inside_ids(), vec![2, 4], "removed nodes are not drilled");
        assert_eq!(p.writer.id, 1);
        assert_eq!((p.voters, p.voters_outside), (3, 2));
        assert!(!p.forced());
        // The leader inside: writes go through an outside voter.
        let p = RegionPlan::new(&cluster(2, s.nodes.clone()), "us", false).unwrap();
        assert!(p.writer.id == 1 || p.writer.id == 3);
    }

    #[test]
    fn a_region_plan_refuses_what_is_not_safe_or_makes_no_sense() {
        let s = cluster(1, vec![node(1, "eu", "voter"), node(2, "eu", "voter"), node(3, "us", "voter"), node(4, "ap", "learner")]);
        let e = RegionPlan::new(&s, "mars", false).unwrap_err().to_string();
        assert!(e.contains("\"mars\" has no nodes") && e.contains("ap, eu, us"), "{e}");
        let e = RegionPlan::new(&s, "eu", false).unwrap_err().to_string();
        assert!(e.contains("hold 1 of the 3 voters") && e.contains("--force"), "{e}");
        assert!(RegionPlan::new(&s, "eu", true).unwrap().forced(), "--force drills anyway");
        assert!(RegionPlan::new(&s, "us", false).is_ok());
        let one = cluster(1, vec![node(1, "eu", "voter"), node(2, "eu", "learner")]);
        let e = RegionPlan::new(&one, "eu", true).unwrap_err().to_string();
        assert!(e.contains("holds every node"), "{e}");
        assert!(!e.contains('\n') && !RegionPlan::new(&s, "eu", false).unwrap_err().to_string().contains('\n'), "one line");
    }
}
