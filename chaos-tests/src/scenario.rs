//! The scenarios: each starts a cluster, runs the workload through every
//! node, injects its fault, heals, and hands the history to the checker.
//! A run is fully described by its name, seed and length, all printed, so
//! `BERTH_CHAOS_ONLY=<name> BERTH_CHAOS_SEED=<seed>` replays it.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::check::{check_converged, check_history, Bounds, Verdict};
use crate::cluster::{Cluster, Topology};
use crate::workload::{Kind, Op, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The metadata leader SIGKILLed during pushes, restarted later.
    LeaderKill,
    /// One region cut off from the others both ways, then healed.
    RegionCut,
    /// Links between two nodes cut and healed every second or two, one way or both.
    FlappingLinks,
    /// The leader SIGSTOPped (sockets open, no answers), then SIGCONTed.
    HungNode,
    /// A node SIGKILLed while 1 MiB layers are being copied to and from it.
    KillDuringTransfer,
    /// A node far enough behind to need a snapshot, killed while installing it.
    KillDuringSnapshot,
    /// One node's disk fills up, then space comes back.
    DiskFull,
    /// Every node in turn stopped cleanly and restarted, under load.
    RollingRestart,
    /// A node removed and a new one joined, under load.
    RemoveAndJoin,
    /// Three regions 30 / 80 / 150 ms apart, the leader killed once.
    ThreeRegionsWan,
}

pub const ALL: [Scenario; 10] = [
    Scenario::LeaderKill,
    Scenario::RegionCut,
    Scenario::FlappingLinks,
    Scenario::HungNode,
    Scenario::KillDuringTransfer,
    Scenario::KillDuringSnapshot,
    Scenario::DiskFull,
    Scenario::RollingRestart,
    Scenario::RemoveAndJoin,
    Scenario::ThreeRegionsWan,
];

/// What CI runs: the three faults every release must survive, a few
/// minutes in all.
pub const CI: [Scenario; 3] = [Scenario::LeaderKill, Scenario::RegionCut, Scenario::HungNode];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKill => "leader-kill",
            Scenario::RegionCut => "region-cut",
            Scenario::FlappingLinks => "flapping-links",
            Scenario::HungNode => "hung-node",
            Scenario::KillDuringTransfer => "kill-during-transfer",
            Scenario::KillDuringSnapshot => "kill-during-snapshot",
            Scenario::DiskFull => "disk-full",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::RemoveAndJoin => "remove-and-join",
            Scenario::ThreeRegionsWan => "three-regions-30-80-150ms",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        ALL.into_iter().find(|s| s.name() == name)
    }

    fn topology(self) -> Topology {
        let mut t = Topology::regions(&["eu", "us", "ap"], Duration::from_millis(20));
        if self == Scenario::ThreeRegionsWan {
            let ms = Duration::from_millis;
            t.rtt = vec![(("eu".into(), "us".into()), ms(30)), (("us".into(), "ap".into()), ms(80)), (("eu".into(), "ap".into()), ms(150))];
        }
        t
    }

    fn layer_size(self) -> usize {
        match self {
            Scenario::KillDuringTransfer => 1 << 20,
            _ => 4 << 10,
        }
    }

    /// What a run of `secs` seconds must show. The write gaps allow the
    /// fault's own cost (an election after a kill or a hang: about 2.4 s
    /// to detect plus up to 1.2 s to campaign, see the README) with room
    /// for a loaded 2-core CI machine, and fail a regression that doubles
    /// it; the writes asked for are a small fraction of a healthy run's, so
    /// only a run that mostly failed falls short.
    pub fn bounds(self, secs: u64) -> Bounds {
        let secs = secs as usize;
        let s = Duration::from_secs;
        let (per_sec, gap, pulls) = match self {
            // The unaffected majority keeps its leader. The clients are not
            // bound to it: each wanders into the cut node now and then, and
            // a push there waits until that node finds, by a pre-vote round,
            // that it reaches no majority (two leases, 4.8 s, after its last
            // heartbeat), then is refused. The heal
            // costs nothing: the cut node never raised its term.
            Scenario::RegionCut => (1, s(8), Some(0)),
            Scenario::LeaderKill | Scenario::HungNode | Scenario::KillDuringTransfer | Scenario::KillDuringSnapshot => (1, s(8), Some(5)),
            Scenario::ThreeRegionsWan => (1, s(10), Some(5)),
            Scenario::FlappingLinks | Scenario::DiskFull | Scenario::RemoveAndJoin => (1, s(10), Some(5)),
            // Every node is restarted in turn: the cluster as a whole must
            // keep taking writes; there is no unaffected node to pull from.
            Scenario::RollingRestart => (1, s(10), None),
        };
        Bounds { min_acked_writes: per_sec * secs, max_write_gap: gap, max_pull_errors_unaffected: pulls }
    }

    fn raft_overrides(self) -> Vec<(String, String)> {
        match self {
            // Snapshots every 20 entries and a short log behind them, so a
            // node that misses a few seconds must install one.
            Scenario::KillDuringSnapshot => vec![("snapshot_after_entries".into(), "20".into()), ("keep_entries_after_snapshot".into(), "5".into())],
            _ => Vec::new(),
        }
    }
}

/// What the fault touched, for the checker.
struct Faulted {
    /// Nodes a fault touched; the rest are the "unaffected" ones.
    affected: Vec<usize>,
    /// When the scenario's main fault was in force.
    window: Option<(Instant, Instant)>,
    notes: Vec<String>,
    /// Log lines the fault must have caused (node, text), checked after
    /// healing: a scenario that did not exercise its fault fails.
    must_see: Vec<(usize, &'static str)>,
}

/// The outcome of one run.
pub struct RunReport {
    pub scenario: Scenario,
    pub seed: u64,
    pub verdict: Verdict,
    pub unaffected_exists: bool,
}

fn targets(c: &Cluster) -> Vec<(usize, String)> {
    c.nodes.iter().filter(|n| !n.removed).map(|n| (n.index, n.base())).collect()
}

/// Sleeps until `at` (a point in the run).
async fn until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// Runs `scenario` once for `secs` seconds of workload.
pub async fn run(scenario: Scenario, seed: u64, secs: u64) -> RunReport {
    eprintln!("== {} (seed {seed}, {secs} s; replay: BERTH_CHAOS_ONLY={} BERTH_CHAOS_SEED={seed})", scenario.name(), scenario.name());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = Cluster::start_with(scenario.topology(), scenario.raft_overrides()).await;
    let wl = Workload::start(4, targets(&c), seed, scenario.layer_size());
    let t0 = Instant::now();
    let len = Duration::from_secs(secs);
    let faulted = inject(scenario, &mut c, &wl, &mut rng, t0, len).await;
    let end = t0 + len;
    until(end).await;
    let ops = wl.stop().await;
    heal(&mut c).await;

    if let Ok(dir) = std::env::var("BERTH_CHAOS_HISTORY") {
        write_history(Path::new(&dir), scenario, seed, t0, &ops);
    }
    let unaffected: Vec<usize> = c.nodes.iter().map(|n| n.index).filter(|i| !faulted.affected.contains(i)).collect();
    let mut verdict = check_history(&ops, &unaffected, t0, end);
    verdict.check_bounds(&scenario.bounds(secs));
    match (scenario, faulted.window) {
        (Scenario::RegionCut, Some(window)) => check_cut_region(&ops, &faulted.affected, window, &mut verdict),
        (Scenario::DiskFull, Some(window)) => check_disk_full(&ops, &faulted.affected, window, &mut verdict),
        _ => {}
    }
    check_converged(&c, &ops, Duration::from_secs(90), &mut verdict).await;
    for (node, line) in &faulted.must_see {
        if !c.node_log(*node).contains(line) {
            verdict.violations.push(format!("the scenario did not do what it claims: node {node}'s log has no \"{line}\""));
        }
    }
    if !verdict.passed() {
        for i in 0..c.nodes.len() {
            eprintln!("-- log of node {i} (last 3000 bytes) --\n{}", tail(&c.node_log(i), 3000));
        }
    }
    eprintln!(
        "   {} ops ({} acked lifecycle: expiring pushes, locks, refused overwrites, restores), {} acked writes, {} lost, longest write gap {:.2} s, {} pull errors on unaffected nodes, {} failed linearizable reads, converged in {:.1} s{}",
        verdict.ops,
        verdict.lifecycle_ops,
        verdict.acked_writes,
        verdict.acked_lost,
        verdict.longest_write_gap.as_secs_f64(),
        verdict.pull_errors_unaffected,
        verdict.linearizable_read_failures,
        verdict.converged_in.as_secs_f64(),
        faulted.notes.iter().map(|n| format!("; {n}")).collect::<String>()
    );
    for problem in &verdict.violations {
        eprintln!("   VIOLATION: {problem}");
    }
    RunReport { scenario, seed, verdict, unaffected_exists: !unaffected.is_empty() }
}

/// One line per operation, times in ms from the start of the run: for
/// reading a failed run.
fn write_history(dir: &Path, scenario: Scenario, seed: u64, t0: Instant, ops: &[Op]) {
    let ms = |t: Instant| t.saturating_duration_since(t0).as_millis();
    let mut text = String::new();
    for o in ops {
        text.push_str(&format!("{:>6} {:>6} client {} node {} {:?} {:?}\n", ms(o.start), ms(o.end), o.client, o.node, o.kind, o.outcome));
    }
    let path = dir.join(format!("{}-{seed}.history", scenario.name()));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text)) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Undoes every fault: links healed, hung nodes resumed, dead ones restarted.
async fn heal(c: &mut Cluster) {
    c.heal();
    for i in 0..c.nodes.len() {
        if c.nodes[i].removed {
            continue;
        }
        c.resume(i);
        if !c.nodes[i].is_running() {
            c.restart(i);
        }
    }
    for i in 0..c.nodes.len() {
        if !c.nodes[i].removed {
            c.wait_ready(i, Duration::from_secs(60)).await;
        }
    }
}

/// While a region is cut off, writes through it must be refused with a
/// clear 503 (not hang, not a 500), and it must keep serving pulls of
/// content it held before the cut.
fn check_cut_region(ops: &[Op], cut: &[usize], (from, to): (Instant, Instant), v: &mut Verdict) {
    // Give the cut node an election timeout to notice it lost the leader.
    let settled = from + Duration::from_secs(3);
    let acked_before: std::collections::HashMap<_, Instant> = ops
        .iter()
        .filter(|o| o.ok())
        .filter_map(|o| match &o.kind {
            Kind::Push { digest, .. } => Some((digest.clone(), o.end)),
            _ => None,
        })
        .collect();
    for op in ops.iter().filter(|o| cut.contains(&o.node) && o.start > settled && o.end < to) {
        match (&op.kind, &op.outcome) {
            (Kind::Push { .. } | Kind::Move { .. }, crate::workload::Outcome::Ok) => {
                v.violations.push(format!("node {} acknowledged a write while cut off from the majority: {:?}", op.node, op.kind))
            }
            (Kind::Push { .. } | Kind::Move { .. }, crate::workload::Outcome::Failed(e)) if !e.contains("503") => {
                v.violations.push(format!("a write through cut-off node {} failed without a 503: {e}", op.node))
            }
            (Kind::Pull { digest, .. }, crate::workload::Outcome::Failed(e)) => {
                // Content acknowledged well before the cut had been copied there.
                if acked_before.get(digest).is_some_and(|t| *t + Duration::from_secs(5) < from) {
                    v.violations.push(format!("cut-off node {} failed a pull of {digest}, acknowledged before the cut: {e}", op.node));
                }
            }
            _ => {}
        }
    }
}

/// With its disk full, a node must refuse writes (so the fault bit) with
/// an HTTP error, not crash or hang; summarised in the verdict's notes.
fn check_disk_full(ops: &[Op], victims: &[usize], (from, to): (Instant, Instant), v: &mut Verdict) {
    let during: Vec<&Op> = ops.iter().filter(|o| victims.contains(&o.node) && o.is_write() && o.start > from && o.end < to).collect();
    let refused: Vec<&str> = during
        .iter()
        .filter_map(|o| match &o.outcome {
            crate::workload::Outcome::Failed(e) => Some(e.as_str()),
            crate::workload::Outcome::Ok => None,
        })
        .collect();
    if !during.is_empty() && refused.is_empty() {
        v.violations.push(format!("the scenario did not do what it claims: all {} writes through the full node succeeded", during.len()));
    }
    if let Some(e) = refused.iter().find(|e| !e.contains("answered")) {
        v.violations.push(format!("a write through the node with a full disk failed without an HTTP answer (crash or hang?): {e}"));
    }
}

async fn inject(s: Scenario, c: &mut Cluster, wl: &Workload, rng: &mut rand::rngs::StdRng, t0: Instant, len: Duration) -> Faulted {
    let third = len / 3;
    let mut f = Faulted { affected: Vec::new(), window: None, notes: Vec::new(), must_see: Vec::new() };
    match s {
        Scenario::LeaderKill | Scenario::ThreeRegionsWan => {
            until(t0 + third).await;
            let leader = c.leader().expect("a leader before the fault");
            c.kill9(leader);
            f.notes.push(format!("killed leader node {leader} at {:.1} s", t0.elapsed().as_secs_f64()));
            f.affected.push(leader);
            until(t0 + 2 * third).await;
            c.restart(leader);
        }
        Scenario::RegionCut => {
            // A region without the leader, so the cut is the minority's
            // view: the leader as of the cut, not as of the start.
            until(t0 + len / 4).await;
            let leader = c.leader().expect("a leader before the fault");
            let region = c.nodes.iter().find(|n| n.index != leader).expect("a follower").region.clone();
            c.cut_off(&region);
            let from = Instant::now();
            f.affected = c.in_region(&region);
            f.notes.push(format!("cut off region {region} (nodes {:?}) for {:.0} s", f.affected, (len / 2).as_secs_f64()));
            until(t0 + 3 * len / 4).await;
            c.heal();
            f.window = Some((from, Instant::now()));
        }
        Scenario::FlappingLinks => {
            let n = c.nodes.len();
            let a = rng.random_range(0..n);
            let b = (a + 1 + rng.random_range(0..n - 1)) % n;
            f.affected = vec![a, b];
            let mut flaps = 0;
            while t0.elapsed() + Duration::from_secs(2) < len {
                if rng.random_bool(0.5) {
                    c.wan.partition(&[a], &[b]);
                } else {
                    c.wan.cut(a, b);
                }
                flaps += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
                c.heal();
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
            }
            f.notes.push(format!("link {a}<->{b} flapped {flaps} times"));
        }
        Scenario::HungNode => {
            until(t0 + third).await;
            let leader = c.leader().expect("a leader before the fault");
            c.hang(leader);
            f.affected.push(leader);
            f.notes.push(format!("SIGSTOPped leader node {leader}"));
            until(t0 + 2 * third).await;
            c.resume(leader);
        }
        Scenario::KillDuringTransfer => {
            // Layers are 1 MiB, so copies are nearly always in flight.
            until(t0 + third).await;
            let victim = rng.random_range(0..c.nodes.len());
            c.kill9(victim);
            f.affected.push(victim);
            f.notes.push(format!("killed node {victim} mid-transfer"));
            until(t0 + 2 * third).await;
            c.restart(victim);
        }
        Scenario::KillDuringSnapshot => {
            let leader = c.leader().expect("a leader");
            let victim = (leader + 1) % c.nodes.len();
            f.affected.push(victim);
            until(t0 + len / 5).await;
            c.kill9(victim);
            // Let the others write and compact well past what it holds.
            until(t0 + 3 * len / 5).await;
            c.restart(victim);
            let delay = rng.random_range(100..800);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            c.kill9(victim);
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.restart(victim);
            f.notes.push(format!("killed node {victim} {delay} ms into its catch-up"));
            f.must_see.push((victim, "installed metadata snapshot"));
        }
        Scenario::DiskFull => {
            let leader = c.leader().expect("a leader");
            let victim = (leader + 1) % c.nodes.len();
            f.affected.push(victim);
            if !c.shrink_disk(victim, 512) {
                f.notes.push("not root: disk-full needs a tmpfs; ran without the fault".into());
                return f;
            }
            until(t0 + third).await;
            let filler = c.fill_disk(victim, 0);
            f.notes.push(format!("filled node {victim}'s disk"));
            f.window = Some((Instant::now(), t0 + 2 * third));
            until(t0 + 2 * third).await;
            let _ = std::fs::remove_file(filler);
            if !c.nodes[victim].is_running() {
                f.notes.push(format!("node {victim} had exited with the disk full"));
            }
        }
        Scenario::RollingRestart => {
            f.affected = (0..c.nodes.len()).collect();
            for i in 0..c.nodes.len() {
                until(t0 + len * (i as u32 + 1) / (c.nodes.len() as u32 + 1)).await;
                c.restart_clean(i).await;
            }
            f.notes.push("restarted every node once".into());
        }
        Scenario::RemoveAndJoin => {
            let leader = c.leader().expect("a leader");
            let victim = (leader + 1) % c.nodes.len();
            let region = c.nodes[victim].region.clone();
            until(t0 + third).await;
            wl.set_targets(targets(c).into_iter().filter(|(i, _)| *i != victim).collect());
            c.remove(victim);
            let new = c.add_node(&region).await;
            c.wait_ready(new, Duration::from_secs(30)).await;
            wl.set_targets(targets(c));
            f.affected = vec![victim, new];
            f.notes.push(format!("removed node {victim}, joined node {new} in {region}"));
        }
    }
    f
}
