//! `berth drill`: rehearsing failures on a live cluster, safely.
//!
//! `failover` moves leadership away from the current leader while probing
//! the cluster the way clients use it: metadata writes through the node the
//! operator named, registry reads on every node the login reaches. It
//! reports how long writes were unavailable and whether reads ever stopped.
//!
//! `region` cuts every node of one region off from the rest of the cluster
//! for a while (each node is told through its admin API,
//! `/api/v1/drill/isolate`, and stops sending to and hearing from the other
//! side), then heals it. Meanwhile it probes: metadata writes through a
//! node outside the region (they go on, after at most an election), writes
//! through the cut-off nodes (refused, and how), reads on every node (served
//! from local state, so they should never stop); after the heal, how long
//! the region's nodes take to catch up. Safe by default: it refuses a drill
//! that would stop every write (the nodes outside the region hold no
//! majority of the voters) unless forced, and each node heals by itself
//! shortly after the drill's end even if this command dies.
//!
//! Both post their report at the end (`POST /api/v1/drill/reports`), so
//! the console's cluster page lists it on every node; a report that cannot
//! be posted is a warning, never the drill's failure.

use std::time::{Duration, Instant};

use berth_gateway::{ClusterStatus, DrillReportRequest, TransferLeaderReply, TransferLeaderRequest};
use serde::Serialize;

use crate::client::AdminClient;

pub mod region;

pub use region::{region, RegionOptions};

/// Probing before and after the transfer.
const BASELINE: Duration = Duration::from_millis(800);
const AFTER: Duration = Duration::from_millis(2_000);
const PROBE_EVERY: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Serialize)]
pub struct NodeReads {
    pub node: u64,
    pub ok: u64,
    pub failed: u64,
    /// Longest time between two successful reads, ms.
    pub longest_gap_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub previous_leader: u64,
    pub new_leader: u64,
    /// Time the transfer call took, ms.
    pub transfer_ms: u64,
    pub writes_ok: u64,
    pub writes_failed: u64,
    /// Longest time without a successful write, ms: what a pushing client saw.
    pub write_unavailable_ms: u64,
    pub reads: Vec<NodeReads>,
    /// True when some node answered no read for longer than a second.
    pub reads_stopped: bool,
}

/// Wall-clock time, ms since the epoch: when a drill started and ended.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Posts a drill's report through `client`, its figures the report as
/// `--json` prints it. A failure is one warning line on stderr: the drill
/// ran, and its outcome does not depend on the record of it.
pub async fn post_report(client: &AdminClient, kind: &str, started_ms: u64, target: String, nodes: Vec<u64>, figures: &impl Serialize) {
    let posted = async {
        let report = DrillReportRequest { kind: kind.into(), started_ms, ended_ms: wall_ms(), target, nodes, figures: serde_json::to_value(figures)? };
        client.post_only("/api/v1/drill/reports", &report).await
    };
    if let Err(e) = posted.await {
        eprintln!("warning: the drill's report was not recorded in the cluster: {e:#}");
    }
}

impl FailoverReport {
    /// What the report is of: the leader change.
    pub fn target(&self) -> String {
        format!("leader {} -> {}", self.previous_leader, self.new_leader)
    }
}

/// Longest gap between successes, from the probe's start to its end.
pub(crate) fn longest_gap(start: Instant, end: Instant, successes: &[Instant]) -> Duration {
    let mut last = start;
    let mut longest = Duration::ZERO;
    for t in successes.iter().chain(std::iter::once(&end)) {
        longest = longest.max(t.saturating_duration_since(last));
        last = *t;
    }
    longest
}

pub async fn failover(client: &AdminClient, to: Option<u64>) -> anyhow::Result<FailoverReport> {
    let status: ClusterStatus = client.get("/api/v1/cluster/status").await?;
    let previous = status.leader.ok_or_else(|| anyhow::anyhow!("the cluster has no leader now; fix that before drilling"))?;
    anyhow::ensure!(status.nodes.iter().filter(|n| n.role == "voter").count() >= 2, "a failover drill needs at least two voters");
    let readers: Vec<(u64, AdminClient)> =
        status.nodes.iter().filter(|n| n.role != "removed").filter_map(|n| client.for_node(&n.http_addr).map(|c| (n.id, c))).collect();
    // Warm up (logins are checked once, slowly, then remembered) so the
    // clock below measures the failover, not the first request.
    client.post_empty("/api/v1/drill/probe").await?;
    for (id, c) in &readers {
        let s = c.status_of("/v2/_catalog?n=1").await?;
        anyhow::ensure!(s.is_success(), "node {id} does not answer reads ({s}) before the drill; fix that first");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();

    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match client.post_empty("/api/v1/drill/probe").await {
                    Ok(()) => ok.push(Instant::now()),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(PROBE_EVERY.saturating_sub(t.elapsed())).await;
            }
            (ok, failed)
        })
    };
    let mut read_tasks = Vec::new();
    for (id, c) in readers {
        let stop = stop.clone();
        read_tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match c.status_of("/v2/_catalog?n=1").await {
                    Ok(s) if s.is_success() => ok.push(Instant::now()),
                    _ => failed += 1,
                }
                tokio::time::sleep(PROBE_EVERY.saturating_sub(t.elapsed())).await;
            }
            (id, ok, failed)
        }));
    }

    tokio::time::sleep(BASELINE).await;
    let t = Instant::now();
    let moved: TransferLeaderReply = client.post("/api/v1/cluster/transfer-leader", &TransferLeaderRequest { to }).await?;
    let transfer_ms = t.elapsed().as_millis() as u64;
    tokio::time::sleep(AFTER).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ended = Instant::now();

    let (writes, writes_failed) = writer.await?;
    let mut reads = Vec::new();
    for task in read_tasks {
        let (node, ok, failed) = task.await?;
        reads.push(NodeReads { node, ok: ok.len() as u64, failed, longest_gap_ms: longest_gap(started, ended, &ok).as_millis() as u64 });
    }
    reads.sort_by_key(|r| r.node);
    Ok(FailoverReport {
        previous_leader: previous,
        new_leader: moved.leader,
        transfer_ms,
        writes_ok: writes.len() as u64,
        writes_failed,
        write_unavailable_ms: longest_gap(started, ended, &writes).as_millis() as u64,
        reads_stopped: reads.iter().any(|r| r.longest_gap_ms > 1_000),
        reads,
    })
}

impl FailoverReport {
    pub fn print(&self) {
        println!("failover drill: leader {} -> {} (transfer took {} ms)", self.previous_leader, self.new_leader, self.transfer_ms);
        println!("writes: {} ok, {} failed, longest without a write {} ms", self.writes_ok, self.writes_failed, self.write_unavailable_ms);
        println!("{:<6} {:>8} {:>8} {:>16}", "NODE", "READS", "FAILED", "LONGEST GAP ms");
        for r in &self.reads {
            println!("{:<6} {:>8} {:>8} {:>16}", r.node, r.ok, r.failed, r.longest_gap_ms);
        }
        println!("{}", if self.reads_stopped { "reads STOPPED on some node for over a second" } else { "reads never stopped" });
    }
}
