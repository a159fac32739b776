//! `berth drill region`: one region cut off from the rest of the cluster
//! for a while, then healed; see the parent module for what it probes.
//!
//! Each node of the region is made an island through its admin API
//! (`POST /api/v1/drill/isolate`, keeping the other nodes of the region):
//! it neither sends to nor hears from the nodes outside. The node's own
//! deadline is a little later than the drill's end, so the command heals
//! the region itself (`DELETE`), and a node whose command died heals alone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_gateway::{ClusterStatus, IsolateRequest, Isolation, ISOLATION_MAX_MS, ISOLATION_MIN_MS};
use reqwest::Method;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::longest_gap;
use crate::client::{AdminClient, Answer};

const STATUS: &str = "/api/v1/cluster/status";
const PROBE_WRITE: &str = "/api/v1/drill/probe";
const ISOLATE: &str = "/api/v1/drill/isolate";

/// How often each region-drill probe asks (per node).
const REGION_PROBE_EVERY: Duration = Duration::from_millis(50);
/// Probing before the region is cut off: the baseline.
const REGION_BASELINE: Duration = Duration::from_millis(500);
/// Probing after the region has caught up.
const REGION_AFTER: Duration = Duration::from_secs(2);
/// The nodes' own deadline is this much after the drill's end: the command
/// stops probing inside and heals them itself first, and a node whose
/// command died heals on its own this much late.
const HEAL_GRACE: Duration = Duration::from_secs(2);
/// How long the region may take to catch up before the report says it did not.
const REJOIN_LIMIT: Duration = Duration::from_secs(60);
/// How long, from the heal, writes outside may take to come back.
const RECOVER_LIMIT: Duration = Duration::from_secs(30);
/// Longer than a node's default write timeout (10 s), so a slow refusal is
/// seen as one and not as a probe timeout.
const WRITE_PROBE_TIMEOUT: Duration = Duration::from_secs(15);
const READ_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped probe may finish its last request.
const PROBE_DRAIN: Duration = Duration::from_secs(2);

/// What `berth drill region` was asked.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    pub region: String,
    /// How long the region stays cut off.
    pub duration: Duration,
    /// Drill even when the rest of the cluster holds no majority of voters.
    pub force: bool,
}

/// Who a region drill cuts off and where it writes from outside, with
/// the refusals the console's drill shares.
pub use berth_gateway::RegionPlan;

/// Writes through a node outside the region.
#[derive(Debug, Clone, Serialize)]
pub struct OutsideWrites {
    pub via: u64,
    pub ok: u64,
    pub failed: u64,
    /// Longest time without a successful write, ms: what a pushing client saw.
    pub longest_unavailable_ms: u64,
    /// The last write of the drill succeeded.
    pub recovered: bool,
}

/// Writes through the cut-off nodes, while they were cut off.
#[derive(Debug, Clone, Serialize)]
pub struct InsideWrites {
    pub via: Vec<u64>,
    /// Writes that succeeded anyway (a finding: the region was not cut off).
    pub ok: u64,
    pub refused: u64,
    /// How they were refused: `503 UNAVAILABLE`, `timeout`, ... and how often.
    pub refusals: BTreeMap<String, u64>,
    /// The longest a client waited for its refusal, ms.
    pub slowest_refusal_ms: u64,
    /// One refusal's message, as a client read it.
    pub example: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionReads {
    pub node: u64,
    pub region: String,
    /// The node was cut off during the drill.
    pub isolated: bool,
    pub ok: u64,
    pub failed: u64,
    /// Longest time between two successful reads, ms.
    pub longest_gap_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    pub region: String,
    pub nodes: Vec<u64>,
    /// How long the region was asked to stay cut off, ms.
    pub duration_ms: u64,
    /// How long it was cut off, ms, from the first isolation to the heal.
    pub isolated_ms: u64,
    /// Drilled with --force although the rest held no majority.
    pub forced: bool,
    /// Ended early by Ctrl-C.
    pub interrupted: bool,
    pub leader_before: Option<u64>,
    pub leader_after: Option<u64>,
    /// What the reads probed on every node.
    pub read_path: String,
    pub writes_outside: OutsideWrites,
    pub writes_inside: InsideWrites,
    pub reads: Vec<RegionReads>,
    /// Every node of the region caught up with the rest after the heal.
    pub rejoined: bool,
    /// From the heal until the last node of the region caught up, ms.
    pub rejoin_ms: Option<u64>,
    /// Things that went wrong around the drill (e.g. a heal call failed;
    /// the node then healed at its own deadline).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One failed probe.
struct Failure {
    label: String,
    message: Option<String>,
    took: Duration,
}

/// What one probe loop saw; shared, so the drill can look while it runs
/// and keep what it saw if the loop has to be cut short.
#[derive(Default)]
struct Record {
    ok: Vec<Instant>,
    failures: Vec<Failure>,
    last_ok: Option<bool>,
}

type SharedRecord = Arc<Mutex<Record>>;

fn lock(r: &SharedRecord) -> std::sync::MutexGuard<'_, Record> {
    r.lock().expect("probe record lock")
}

/// A probe loop: `method path` on `client` every [`REGION_PROBE_EVERY`]
/// until `stop` says so.
struct Probe {
    record: SharedRecord,
    task: JoinHandle<()>,
}

impl Probe {
    fn spawn(client: AdminClient, method: Method, path: String, timeout: Duration, mut stop: watch::Receiver<bool>) -> Probe {
        let record = SharedRecord::default();
        let rec = record.clone();
        let task = tokio::spawn(async move {
            while !*stop.borrow() {
                let t = Instant::now();
                let answer = client.probe(method.clone(), &path, timeout).await;
                Self::note(&rec, &answer, t.elapsed());
                tokio::select! {
                    _ = tokio::time::sleep(REGION_PROBE_EVERY.saturating_sub(t.elapsed())) => {}
                    _ = stop.changed() => {}
                }
            }
        });
        Probe { record, task }
    }

    fn note(rec: &SharedRecord, answer: &Answer, took: Duration) {
        let mut r = lock(rec);
        r.last_ok = Some(answer.is_success());
        if answer.is_success() {
            r.ok.push(Instant::now());
        } else {
            r.failures.push(Failure { label: answer.label(), message: answer.message(), took });
        }
    }

    /// Waits for the loop to end after its stop signal; a request still
    /// hanging after [`PROBE_DRAIN`] is abandoned.
    async fn finish(self) -> SharedRecord {
        let mut task = self.task;
        if tokio::time::timeout(PROBE_DRAIN, &mut task).await.is_err() {
            task.abort();
        }
        self.record
    }
}

/// Ctrl-C during a drill ends the phase it lands in (the cut, the wait for
/// the rejoin, ...) instead of killing the command, which would leave the
/// region cut off until its own deadline: the region is healed at once and
/// the report shows what was seen. A phase that was not interrupted runs
/// as usual, so the report still says whether the region rejoined.
struct Interrupt {
    /// How many times Ctrl-C was pressed so far.
    count: watch::Receiver<u32>,
    task: JoinHandle<()>,
}

impl Interrupt {
    fn listen() -> Interrupt {
        let (tx, count) = watch::channel(0u32);
        let task = tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Interrupt { count, task }
    }

    fn happened(&self) -> bool {
        *self.count.borrow() > 0
    }

    /// Runs `f` unless Ctrl-C is pressed meanwhile: `None` then.
    async fn unless<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        let mut count = self.count.clone();
        let before = *count.borrow_and_update();
        tokio::select! {
            v = f => Some(v),
            _ = count.wait_for(|n| *n > before) => None,
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The probes that run from before the cut until after the rejoin: writes
/// through the outside node, reads on every member.
struct Background {
    stop: watch::Sender<bool>,
    outside: Probe,
    reads: Vec<(u64, Probe)>,
}

impl Background {
    fn start(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>, read_path: &str) -> Background {
        let (stop, rx) = watch::channel(false);
        let outside = Probe::spawn(clients[&plan.writer.id].clone(), Method::POST, PROBE_WRITE.into(), WRITE_PROBE_TIMEOUT, rx.clone());
        let reads =
            plan.members().map(|n| (n.id, Probe::spawn(clients[&n.id].clone(), Method::GET, read_path.into(), READ_PROBE_TIMEOUT, rx.clone()))).collect();
        Background { stop, outside, reads }
    }

    async fn finish(self) -> (SharedRecord, Vec<(u64, SharedRecord)>) {
        let _ = self.stop.send(true);
        let outside = self.outside.finish().await;
        let mut reads = Vec::new();
        for (id, p) in self.reads {
            reads.push((id, p.finish().await));
        }
        (outside, reads)
    }
}

/// Writes through each cut-off node, while it is cut off.
async fn probe_inside_until(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>, end: impl std::future::Future<Output = ()>) -> Vec<SharedRecord> {
    let (stop, rx) = watch::channel(false);
    let probes: Vec<Probe> =
        plan.inside.iter().map(|n| Probe::spawn(clients[&n.id].clone(), Method::POST, PROBE_WRITE.into(), WRITE_PROBE_TIMEOUT, rx.clone())).collect();
    end.await;
    let _ = stop.send(true);
    let mut records = Vec::new();
    for p in probes {
        records.push(p.finish().await);
    }
    records
}

/// Runs `berth drill region`: see the module documentation of [`super`].
pub async fn region(client: &AdminClient, opts: &RegionOptions) -> anyhow::Result<RegionReport> {
    let ms = opts.duration.as_millis() as u64;
    anyhow::ensure!((ISOLATION_MIN_MS..=ISOLATION_MAX_MS).contains(&ms), "--duration must be between 1s and 10m");
    let status: ClusterStatus = client.get(STATUS).await?;
    let plan = RegionPlan::new(&status, &opts.region, opts.force).map_err(anyhow::Error::msg)?;
    let clients = node_clients(client, &plan)?;
    let read_path = pick_read_path(&clients[&plan.writer.id]).await;
    warm_up(&plan, &clients, &read_path).await?;
    let interrupt = Interrupt::listen();

    let started = Instant::now();
    let background = Background::start(&plan, &clients, &read_path);
    if interrupt.unless(tokio::time::sleep(REGION_BASELINE)).await.is_none() {
        background.finish().await;
        anyhow::bail!("interrupted before region {} was cut off: nothing was changed", plan.region);
    }
    let isolated_at = Instant::now();
    let node_deadline = (opts.duration + HEAL_GRACE).min(Duration::from_millis(ISOLATION_MAX_MS));
    if let Err(e) = isolate_region(&plan, &clients, node_deadline).await {
        let unhealed = heal_region(&plan, &clients).await;
        background.finish().await;
        let healed = if unhealed.is_empty() { format!("region {} is healed", plan.region) } else { unhealed.join("; ") };
        return Err(e.context(format!("the drill did not start ({healed})")));
    }
    let inside = probe_inside_until(&plan, &clients, async {
        interrupt.unless(tokio::time::sleep(opts.duration)).await;
    })
    .await;
    let healed_at = Instant::now();
    let warnings = heal_region(&plan, &clients).await;
    let rejoin = interrupt.unless(wait_rejoined(&plan, &clients, healed_at)).await.flatten();
    interrupt.unless(tokio::time::sleep(REGION_AFTER)).await;
    interrupt.unless(wait_recovered(&background.outside.record, healed_at + RECOVER_LIMIT)).await;
    let (outside, reads) = background.finish().await;
    let ended = Instant::now();
    let leader_after = status_of(client).await.and_then(|s| s.leader);

    Ok(RegionReport {
        region: plan.region.clone(),
        nodes: plan.inside_ids(),
        duration_ms: ms,
        isolated_ms: healed_at.duration_since(isolated_at).as_millis() as u64,
        forced: plan.forced(),
        interrupted: interrupt.happened(),
        leader_before: status.leader,
        leader_after,
        read_path,
        writes_outside: outside_writes(plan.writer.id, &outside, started, ended),
        writes_inside: inside_writes(plan.inside_ids(), &inside),
        reads: region_reads(&plan, &reads, started, ended),
        rejoined: rejoin.is_some(),
        rejoin_ms: rejoin.map(|d| d.as_millis() as u64),
        warnings,
    })
}

/// The login against every member: the drill isolates each node of the
/// region and reads from all of them.
fn node_clients(client: &AdminClient, plan: &RegionPlan) -> anyhow::Result<BTreeMap<u64, AdminClient>> {
    plan.members()
        .map(|n| match client.for_node(&n.http_addr) {
            Some(c) => Ok((n.id, c)),
            None => anyhow::bail!(
                "a region drill calls every node, and a node's operator token (--data-dir) is valid on that node only: \
                 use --endpoint URL with an admin login, or `berth login`"
            ),
        })
        .collect()
}

/// What the read probes ask: a tagged manifest (a pull's first request)
/// when the registry has one, else the catalog.
async fn pick_read_path(client: &AdminClient) -> String {
    let first = |v: &serde_json::Value, key: &str| v[key].as_array().and_then(|a| a.first()).and_then(|x| x.as_str()).map(str::to_string);
    let Ok(catalog) = client.get::<serde_json::Value>("/v2/_catalog?n=1").await else { return "/v2/_catalog?n=1".into() };
    let Some(repo) = first(&catalog, "repositories") else { return "/v2/_catalog?n=1".into() };
    match client.get::<serde_json::Value>(&format!("/v2/{repo}/tags/list?n=1")).await.ok().and_then(|t| first(&t, "tags")) {
        Some(tag) => format!("/v2/{repo}/manifests/{tag}"),
        None => "/v2/_catalog?n=1".into(),
    }
}

/// Every node takes a write and answers the read before the drill (logins
/// are checked once, slowly, then remembered: the clock should measure the
/// drill, not the first request); a cluster that does not is not drilled.
async fn warm_up(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>, read_path: &str) -> anyhow::Result<()> {
    for n in plan.inside.iter().chain([&plan.writer]) {
        let answer = clients[&n.id].probe(Method::POST, PROBE_WRITE, WRITE_PROBE_TIMEOUT).await;
        anyhow::ensure!(answer.is_success(), "node {} does not take writes before the drill ({}); fix that first", n.id, answer.label());
    }
    for n in plan.members() {
        let answer = clients[&n.id].probe(Method::GET, read_path, READ_PROBE_TIMEOUT).await;
        anyhow::ensure!(answer.is_success(), "node {} does not answer reads before the drill ({}); fix that first", n.id, answer.label());
    }
    Ok(())
}

/// Cuts each node of the region off from every node outside it, until
/// `deadline` from now at the latest.
async fn isolate_region(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>, deadline: Duration) -> anyhow::Result<()> {
    let region: Vec<u64> = plan.inside_ids();
    for id in &region {
        let req = IsolateRequest { duration_ms: deadline.as_millis() as u64, keep: region.iter().copied().filter(|k| k != id).collect() };
        let _: Isolation = clients[id].post(ISOLATE, &req).await.map_err(|e| e.context(format!("cannot isolate node {id}")))?;
    }
    Ok(())
}

/// Heals every node of the region now; returns the calls that failed (such
/// a node heals at its own deadline).
async fn heal_region(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>) -> Vec<String> {
    let mut failed = Vec::new();
    for n in &plan.inside {
        if let Err(e) = clients[&n.id].delete(ISOLATE).await {
            failed.push(format!("node {} was not healed by the drill ({e:#}); it heals at its own deadline", n.id));
        }
    }
    failed
}

async fn status_of(client: &AdminClient) -> Option<ClusterStatus> {
    client.get::<ClusterStatus>(STATUS).await.ok()
}

/// Waits until every node of the region follows the outside's leader and
/// has applied everything the outside had applied at the heal. Returns how
/// long after the heal the last one got there; `None` past [`REJOIN_LIMIT`].
async fn wait_rejoined(plan: &RegionPlan, clients: &BTreeMap<u64, AdminClient>, healed_at: Instant) -> Option<Duration> {
    let outside = &clients[&plan.writer.id];
    let deadline = healed_at + REJOIN_LIMIT;
    let target = loop {
        if let Some(applied) = status_of(outside).await.and_then(|s| s.applied_index) {
            break applied;
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut pending: BTreeSet<u64> = plan.inside_ids().into_iter().collect();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return None;
        }
        let leader = status_of(outside).await.and_then(|s| s.leader);
        for id in pending.clone() {
            let caught_up = status_of(&clients[&id]).await.is_some_and(|s| leader.is_some() && s.leader == leader && s.applied_index >= Some(target));
            if caught_up {
                pending.remove(&id);
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Some(healed_at.elapsed())
}

/// Keeps probing until the writes outside succeed again, or `deadline`.
async fn wait_recovered(record: &SharedRecord, deadline: Instant) {
    while lock(record).last_ok != Some(true) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn outside_writes(via: u64, record: &SharedRecord, started: Instant, ended: Instant) -> OutsideWrites {
    let r = lock(record);
    OutsideWrites {
        via,
        ok: r.ok.len() as u64,
        failed: r.failures.len() as u64,
        longest_unavailable_ms: longest_gap(started, ended, &r.ok).as_millis() as u64,
        recovered: r.last_ok == Some(true),
    }
}

fn inside_writes(via: Vec<u64>, records: &[SharedRecord]) -> InsideWrites {
    let mut w = InsideWrites { via, ok: 0, refused: 0, refusals: BTreeMap::new(), slowest_refusal_ms: 0, example: None };
    for record in records {
        let r = lock(record);
        w.ok += r.ok.len() as u64;
        w.refused += r.failures.len() as u64;
        for f in &r.failures {
            *w.refusals.entry(f.label.clone()).or_default() += 1;
            w.slowest_refusal_ms = w.slowest_refusal_ms.max(f.took.as_millis() as u64);
            if w.example.is_none() {
                w.example = f.message.clone();
            }
        }
    }
    w
}

fn region_reads(plan: &RegionPlan, records: &[(u64, SharedRecord)], started: Instant, ended: Instant) -> Vec<RegionReads> {
    let mut reads: Vec<RegionReads> = records
        .iter()
        .filter_map(|(id, record)| {
            let node = plan.members().find(|n| n.id == *id)?;
            let r = lock(record);
            Some(RegionReads {
                node: *id,
                region: node.region.clone(),
                isolated: node.region == plan.region,
                ok: r.ok.len() as u64,
                failed: r.failures.len() as u64,
                longest_gap_ms: longest_gap(started, ended, &r.ok).as_millis() as u64,
            })
        })
        .collect();
    reads.sort_by_key(|r| r.node);
    reads
}

impl RegionReport {
    pub fn print(&self) {
        let nodes: Vec<String> = self.nodes.iter().map(u64::to_string).collect();
        println!(
            "region drill: {} (nodes {}) cut off for {} ms (asked {} ms){}{}",
            self.region,
            nodes.join(", "),
            self.isolated_ms,
            self.duration_ms,
            if self.forced { ", forced" } else { "" },
            if self.interrupted { ", interrupted" } else { "" }
        );
        let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "none".into());
        println!("leader before: {}, after: {}", opt(self.leader_before), opt(self.leader_after));
        let o = &self.writes_outside;
        println!(
            "writes outside (through node {}): {} ok, {} failed, longest without a write {} ms, {}",
            o.via,
            o.ok,
            o.failed,
            o.longest_unavailable_ms,
            if o.recovered { "recovered" } else { "NOT recovered" }
        );
        let i = &self.writes_inside;
        let how: Vec<String> = i.refusals.iter().map(|(label, n)| format!("{n} x {label}")).collect();
        let via: Vec<String> = i.via.iter().map(u64::to_string).collect();
        println!(
            "writes inside (through node {}): {} ok, {} refused ({}), slowest refusal {} ms",
            via.join(", "),
            i.ok,
            i.refused,
            if how.is_empty() { "-".into() } else { how.join(", ") },
            i.slowest_refusal_ms
        );
        if let Some(e) = &i.example {
            println!("  e.g. {e}");
        }
        println!("reads of {}:", self.read_path);
        println!("{:<6} {:<14} {:<8} {:>8} {:>8} {:>16}", "NODE", "REGION", "CUT OFF", "READS", "FAILED", "LONGEST GAP ms");
        for r in &self.reads {
            println!("{:<6} {:<14} {:<8} {:>8} {:>8} {:>16}", r.node, r.region, if r.isolated { "yes" } else { "no" }, r.ok, r.failed, r.longest_gap_ms);
        }
        match self.rejoin_ms {
            Some(ms) => println!("rejoined: every node of {} caught up {ms} ms after the heal", self.region),
            None if self.interrupted => println!("rejoin not awaited: interrupted (the region is healed)"),
            None => println!("NOT rejoined: some node of {} had not caught up {} s after the heal", self.region, REJOIN_LIMIT.as_secs()),
        }
        for w in &self.warnings {
            println!("warning: {w}");
        }
    }
}
