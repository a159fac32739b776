//! The history checker. From what the clients saw, and from every node
//! once faults have healed, it asserts:
//! - no acknowledged manifest is lost (by tag unless the tag was deleted,
//!   and by digest, on every node);
//! - a linearizable tag read never returns a write older than one that was
//!   acknowledged before the read began, nor a write that had not begun;
//! - every pulled byte matches its digest;
//! - after healing, all nodes converge: the same tags with the same
//!   digests, and no copy the placement policy asks for is missing;
//! - the tag lifecycle holds on every node: no node serves a tag after
//!   its label's expiration (reads that began after it, and every node
//!   once healed), no push over a locked tag is acknowledged and a
//!   locked tag keeps its digest, and a restored tag is back.
//!
//! It also measures what users would feel: the longest time no write was
//! acknowledged through the unaffected nodes, and the pull errors there,
//! and holds them to the scenario's [`Bounds`]. A run must also show
//! enough acknowledged writes: one in which every write failed loses
//! nothing and proves nothing, so it fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use berth_common::Digest;

use crate::cluster::{Cluster, PASSWORD};
use crate::workload::{read_tag, Kind, Op, EXPIRES_AFTER, REPO};

/// What one run of a scenario came to.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub ops: usize,
    pub acked_writes: usize,
    pub acked_lost: usize,
    pub longest_write_gap: Duration,
    /// Failed local reads and pulls through nodes no fault touched.
    pub pull_errors_unaffected: usize,
    /// Failed linearizable reads (expected while there is no leader).
    pub linearizable_read_failures: usize,
    pub violations: Vec<String>,
    /// How long convergence took after healing.
    pub converged_in: Duration,
    /// Acknowledged tag lifecycle operations: expiring pushes, locks,
    /// refused overwrites, restores.
    pub lifecycle_ops: usize,
}

impl Verdict {
    /// No violation, nothing lost, and at least one acknowledged write
    /// (whatever the bounds; a run without one checked nothing).
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.acked_lost == 0 && self.acked_writes > 0
    }

    /// Holds the run to `bounds`, adding a violation per bound exceeded.
    pub fn check_bounds(&mut self, bounds: &Bounds) {
        if self.acked_writes < bounds.min_acked_writes {
            self.violations.push(format!(
                "only {} writes were acknowledged, fewer than the {} this scenario needs to prove anything",
                self.acked_writes, bounds.min_acked_writes
            ));
        }
        if self.longest_write_gap > bounds.max_write_gap {
            self.violations.push(format!(
                "no write was acknowledged for {:.2} s, longer than the {:.2} s this scenario allows",
                self.longest_write_gap.as_secs_f64(),
                bounds.max_write_gap.as_secs_f64()
            ));
        }
        if let Some(max) = bounds.max_pull_errors_unaffected {
            if self.pull_errors_unaffected > max {
                self.violations
                    .push(format!("{} reads or pulls failed through nodes no fault touched, more than the {max} allowed", self.pull_errors_unaffected));
            }
        }
    }
}

/// What a scenario must show, for its verdict to mean something and for a
/// regression in availability to fail CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Acknowledged writes over the whole run, at least.
    pub min_acked_writes: usize,
    /// The longest time without an acknowledged write through the
    /// unaffected nodes (see [`check_history`]), at most.
    pub max_write_gap: Duration,
    /// Failed local reads and pulls through unaffected nodes, at most;
    /// `None` where every node is faulted in turn.
    pub max_pull_errors_unaffected: Option<usize>,
}

/// Checks the clients' history alone: byte integrity, linearizable reads,
/// unavailability and errors through `unaffected` nodes over `[from, to]`.
pub fn check_history(ops: &[Op], unaffected: &[usize], from: Instant, to: Instant) -> Verdict {
    let mut v = Verdict { ops: ops.len(), ..Verdict::default() };
    let writes: Vec<&Op> = ops.iter().filter(|o| o.is_write()).collect();
    v.acked_writes = writes.iter().filter(|o| o.ok()).count();
    let by_digest: HashMap<&Digest, &Op> = writes
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Push { digest, .. } | Kind::Move { digest, .. } | Kind::PushExpiring { digest, .. } => Some((digest, *o)),
            _ => None,
        })
        .collect();
    // When each acknowledged expiring tag is gone at the latest.
    let expired_by: HashMap<&str, Instant> = ops
        .iter()
        .filter(|o| o.ok())
        .filter_map(|o| if let Kind::PushExpiring { tag, .. } = &o.kind { Some((tag.as_str(), o.end + EXPIRES_AFTER)) } else { None })
        .collect();

    v.lifecycle_ops = ops
        .iter()
        .filter(|o| o.ok() && matches!(o.kind, Kind::PushExpiring { .. } | Kind::Lock { .. } | Kind::Overwrite { refused: true, .. } | Kind::Restore { .. }))
        .count();
    for op in ops {
        match &op.kind {
            Kind::Read { tag, got: Some(d), .. } if op.ok() && expired_by.get(tag.as_str()).is_some_and(|t| op.start > *t) => {
                v.violations.push(format!("node {} served {tag} ({d}) after it expired", op.node));
            }
            Kind::Overwrite { tag, refused: false } if op.ok() => {
                v.violations.push(format!("a push over the immutable tag {tag} through node {} was acknowledged", op.node));
            }
            _ => {}
        }
    }

    for op in ops {
        match &op.kind {
            Kind::Pull { digest, bytes_ok: false } => v.violations.push(format!("pull of {digest} through node {} returned bytes that do not match", op.node)),
            Kind::Read { tag, linearizable: true, got } if op.ok() => {
                if let Some(problem) = stale_read(tag, got.as_ref(), op, &writes, &by_digest) {
                    v.violations.push(problem);
                }
            }
            Kind::Read { linearizable: true, .. } => v.linearizable_read_failures += 1,
            Kind::Read { linearizable: false, .. } | Kind::Pull { .. } if !op.ok() && unaffected.contains(&op.node) => v.pull_errors_unaffected += 1,
            _ => {}
        }
    }

    // With every node faulted in turn (a rolling restart) the cluster as a whole is what must keep taking writes.
    let counts = |node: usize| unaffected.is_empty() || unaffected.contains(&node);
    let mut acks: Vec<Instant> = writes.iter().filter(|o| o.ok() && counts(o.node)).map(|o| o.end).collect();
    acks.sort();
    let mut last = from;
    for t in acks.iter().chain(std::iter::once(&to)) {
        v.longest_write_gap = v.longest_write_gap.max(t.saturating_duration_since(last));
        last = last.max(*t);
    }
    v
}

/// Why a linearizable read of `tag` that returned `got` is wrong, if it is.
fn stale_read(tag: &str, got: Option<&Digest>, read: &Op, writes: &[&Op], by_digest: &HashMap<&Digest, &Op>) -> Option<String> {
    let to_tag = |w: &&&Op| matches!(&w.kind, Kind::Move { tag: t, .. } if t == tag);
    let superseded_before_read = |older_end: Option<Instant>| {
        writes.iter().filter(to_tag).find(|w| w.ok() && w.end < read.start && older_end.is_none_or(|e| e < w.start)).map(|w| w.kind.clone())
    };
    match got {
        None => superseded_before_read(None).map(|w| format!("linearizable read of {tag} on node {} found nothing after {w:?} was acknowledged", read.node)),
        Some(d) => {
            let Some(source) = by_digest.get(d) else {
                return Some(format!("linearizable read of {tag} on node {} returned {d}, which no client wrote", read.node));
            };
            if source.start > read.end {
                return Some(format!("linearizable read of {tag} on node {} returned {d}, written only after the read ended", read.node));
            }
            // Only an acknowledged source has a known end: an unacknowledged
            // write may take effect any time after it began.
            if !source.ok() {
                return None;
            }
            superseded_before_read(Some(source.end))
                .map(|w| format!("linearizable read of {tag} on node {} returned {d}, older than {w:?} acknowledged before the read", read.node))
        }
    }
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http.get(format!("{base}/metrics")).timeout(Duration::from_secs(3)).send().await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn tags(http: &reqwest::Client, base: &str) -> Option<BTreeSet<String>> {
    let r = http.get(format!("{base}/v2/{REPO}/tags/list")).basic_auth("admin", Some(PASSWORD)).timeout(Duration::from_secs(5)).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some(v["tags"].as_array()?.iter().filter_map(|t| Some(t.as_str()?.to_string())).collect())
}

/// What one node holds now: tags with the digests they resolve to.
async fn node_state(http: &reqwest::Client, base: &str) -> Option<BTreeMap<String, Option<Digest>>> {
    let mut out = BTreeMap::new();
    for t in tags(http, base).await? {
        let d = read_tag(http, base, &t, false).await.ok()?;
        out.insert(t, d);
    }
    Some(out)
}

/// After faults have healed: waits (up to `within`) until every member
/// node holds the same tags and no wanted copy is missing, then checks
/// that no acknowledged write is lost on any of them.
pub async fn check_converged(cluster: &Cluster, ops: &[Op], within: Duration, v: &mut Verdict) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let members: Vec<usize> = cluster.nodes.iter().filter(|n| !n.removed && n.is_running()).map(|n| n.index).collect();
    let started = Instant::now();
    let deadline = started + within;
    let mut last_problem;
    loop {
        last_problem = None;
        let mut states = Vec::new();
        for &i in &members {
            let base = cluster.nodes[i].base();
            match metric(&http, &base, "berth_replication_backlog_blobs").await {
                Some(b) if b == 0.0 => {}
                other => last_problem = Some(format!("node {i} still misses {other:?} wanted blobs")),
            }
            match node_state(&http, &base).await {
                Some(s) => states.push((i, s)),
                None => last_problem = Some(format!("node {i} did not list its tags")),
            }
        }
        if last_problem.is_none() {
            if let Some((first, s0)) = states.first() {
                if let Some((i, _)) = states.iter().find(|(_, s)| s != s0) {
                    last_problem = Some(format!("node {i} and node {first} hold different tags"));
                }
            }
        }
        if last_problem.is_none() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    v.converged_in = started.elapsed();
    if let Some(p) = last_problem {
        v.violations.push(format!("no convergence within {within:?}: {p}"));
    }

    let mut lost = BTreeSet::new();
    for &i in &members {
        let base = cluster.nodes[i].base();
        for op in ops.iter().filter(|o| o.ok()) {
            let (tag, digest) = match &op.kind {
                Kind::Push { tag, digest } => (Some(tag), digest),
                Kind::Move { digest, .. } | Kind::PushExpiring { digest, .. } => (None, digest),
                _ => continue,
            };
            let by_tag_ok = match tag.filter(|t| expected_present(t, ops) == Some(true)) {
                Some(t) => read_tag(&http, &base, t, false).await.ok().flatten().as_ref() == Some(digest),
                None => true,
            };
            let r = http.head(format!("{base}/v2/{REPO}/manifests/{digest}")).basic_auth("admin", Some(PASSWORD)).send().await;
            let by_digest_ok = r.is_ok_and(|r| r.status().as_u16() == 200);
            if !by_tag_ok || !by_digest_ok {
                lost.insert(digest.clone());
                v.violations.push(format!("node {i} lost acknowledged {:?} (by tag ok: {by_tag_ok}, by digest ok: {by_digest_ok})", op.kind));
            }
        }
        for op in ops.iter().filter(|o| o.ok()) {
            match &op.kind {
                Kind::PushExpiring { tag, .. } if Instant::now() > op.end + EXPIRES_AFTER => {
                    if let Ok(Some(d)) = read_tag(&http, &base, tag, false).await {
                        v.violations.push(format!("node {i} still serves the expired tag {tag} ({d})"));
                    }
                }
                Kind::Lock { tag, digest } => {
                    let got = read_tag(&http, &base, tag, false).await.ok().flatten();
                    if got.as_ref() != Some(digest) {
                        v.violations.push(format!("node {i} has the immutable tag {tag} at {got:?}, not {digest}"));
                    }
                }
                _ => {}
            }
        }
    }
    v.acked_lost = lost.len();
}

/// Whether a client's own `tag` must exist at the end: after its last
/// delete or restore (both acknowledged), or with neither; `None` when
/// one of them has an unknown outcome.
fn expected_present(tag: &str, ops: &[Op]) -> Option<bool> {
    let mut events: Vec<&Op> = ops.iter().filter(|o| matches!(&o.kind, Kind::Delete { tag: t } | Kind::Restore { tag: t, .. } if t == tag)).collect();
    if events.iter().any(|o| !o.ok()) {
        return None;
    }
    events.sort_by_key(|o| o.start);
    Some(events.last().is_none_or(|o| matches!(o.kind, Kind::Restore { .. })))
}

/// One line per scenario, for the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub runs: usize,
    pub ops: usize,
    pub acked_writes: usize,
    pub acked_lost: usize,
    pub longest_write_gap: Duration,
    pub pull_errors_unaffected: Option<usize>,
    pub failed_runs: usize,
}

impl Row {
    pub fn new(scenario: &str) -> Row {
        Row {
            scenario: scenario.into(),
            runs: 0,
            ops: 0,
            acked_writes: 0,
            acked_lost: 0,
            longest_write_gap: Duration::ZERO,
            pull_errors_unaffected: Some(0),
            failed_runs: 0,
        }
    }

    pub fn add(&mut self, v: &Verdict, unaffected_exists: bool) {
        self.runs += 1;
        self.ops += v.ops;
        self.acked_writes += v.acked_writes;
        self.acked_lost += v.acked_lost;
        self.longest_write_gap = self.longest_write_gap.max(v.longest_write_gap);
        self.pull_errors_unaffected = match (self.pull_errors_unaffected, unaffected_exists) {
            (Some(p), true) => Some(p + v.pull_errors_unaffected),
            _ => None,
        };
        self.failed_runs += usize::from(!v.passed());
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| scenario | runs | operations | acked writes | acked pushes lost | longest write unavailability | pull errors, unaffected nodes | failed runs |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let pulls = r.pull_errors_unaffected.map(|p| p.to_string()).unwrap_or_else(|| "n/a (every node faulted)".into());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} s | {} | {} |\n",
            r.scenario,
            r.runs,
            r.ops,
            r.acked_writes,
            r.acked_lost,
            r.longest_write_gap.as_secs_f64(),
            pulls,
            r.failed_runs
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Outcome;

    const BOUNDS: Bounds = Bounds { min_acked_writes: 3, max_write_gap: Duration::from_secs(5), max_pull_errors_unaffected: Some(0) };

    fn op(node: usize, kind: Kind, start: Instant, ms: (u64, u64), ok: bool) -> Op {
        Op {
            client: 0,
            node,
            kind,
            start: start + Duration::from_millis(ms.0),
            end: start + Duration::from_millis(ms.1),
            outcome: if ok { Outcome::Ok } else { Outcome::Failed("manifest put answered 503 Service Unavailable".into()) },
        }
    }

    fn push(n: u64) -> Kind {
        Kind::Push { tag: format!("c0-{n}"), digest: Digest::sha256_of(&n.to_le_bytes()) }
    }

    /// One write every `every_ms` over 10 s through node 0, acknowledged or not.
    fn history(t0: Instant, every_ms: u64, ok: bool) -> Vec<Op> {
        (0..10_000 / every_ms).map(|i| op(0, push(i), t0, (i * every_ms, i * every_ms + 50), ok)).collect()
    }

    fn verdict(ops: &[Op], t0: Instant) -> Verdict {
        let mut v = check_history(ops, &[0, 1], t0, t0 + Duration::from_secs(10));
        v.check_bounds(&BOUNDS);
        v
    }

    #[test]
    fn a_history_with_no_acknowledged_write_fails() {
        let t0 = Instant::now();
        let v = verdict(&history(t0, 100, false), t0);
        assert_eq!(v.acked_writes, 0);
        assert!(!v.passed(), "{v:?}");
        assert!(v.violations.iter().any(|p| p.contains("only 0 writes were acknowledged")), "{:?}", v.violations);
        // Even with no bounds at all: nothing acknowledged, nothing proved.
        assert!(!check_history(&history(t0, 100, false), &[0], t0, t0 + Duration::from_secs(10)).passed());
        // An empty history too.
        assert!(!verdict(&[], t0).passed());
    }

    #[test]
    fn a_healthy_history_passes() {
        let t0 = Instant::now();
        let mut ops = history(t0, 100, true);
        ops.push(op(1, Kind::Pull { digest: Digest::sha256_of(&0u64.to_le_bytes()), bytes_ok: true }, t0, (200, 220), true));
        let v = verdict(&ops, t0);
        assert!(v.passed(), "{:?}", v.violations);
        assert_eq!(v.acked_writes, 100);
    }

    #[test]
    fn too_few_writes_a_long_gap_or_failed_pulls_fail() {
        let t0 = Instant::now();
        // Two acknowledged writes in the first second of 10: too few, and a 9 s gap.
        let v = verdict(&history(t0, 500, true)[..2], t0);
        assert!(!v.passed());
        assert!(v.violations.iter().any(|p| p.contains("only 2 writes")), "{:?}", v.violations);
        assert!(v.violations.iter().any(|p| p.contains("no write was acknowledged for")), "{:?}", v.violations);
        // Plenty of writes, but a pull failed through an unaffected node.
        let mut ops = history(t0, 100, true);
        ops.push(op(1, Kind::Pull { digest: Digest::sha256_of(b"x"), bytes_ok: true }, t0, (300, 400), false));
        let v = verdict(&ops, t0);
        assert!(v.violations.iter().any(|p| p.contains("1 reads or pulls failed")), "{:?}", v.violations);
        // Through a faulted node (2), it does not count.
        let mut ops = history(t0, 100, true);
        ops.push(op(2, Kind::Pull { digest: Digest::sha256_of(b"x"), bytes_ok: true }, t0, (300, 400), false));
        assert!(verdict(&ops, t0).passed());
    }

    #[test]
    fn expired_reads_and_overwrites_of_locked_tags_are_violations() {
        let t0 = Instant::now();
        let exp = EXPIRES_AFTER.as_millis() as u64;
        let d = Digest::sha256_of(b"e");
        let read = |got: Option<Digest>, at: u64| op(1, Kind::Read { tag: "c0-exp-1".into(), linearizable: false, got }, t0, (at, at + 10), true);
        let mut ops = history(t0, 100, true);
        ops.push(op(0, Kind::PushExpiring { tag: "c0-exp-1".into(), digest: d.clone() }, t0, (100, 200), true));
        ops.push(read(Some(d.clone()), 150 + exp));
        ops.push(read(None, 300 + exp));
        ops.push(op(1, Kind::Overwrite { tag: "c0-1".into(), refused: true }, t0, (400, 500), true));
        ops.push(op(1, Kind::Overwrite { tag: "c0-1".into(), refused: false }, t0, (400, 500), false));
        assert!(verdict(&ops, t0).passed(), "a read before the moment, absent after; refused or failed overwrites");
        ops.push(read(Some(d), 300 + exp));
        ops.push(op(2, Kind::Overwrite { tag: "c0-2".into(), refused: false }, t0, (400, 500), true));
        let v = verdict(&ops, t0);
        assert!(v.violations.iter().any(|p| p.contains("served c0-exp-1") && p.contains("after it expired")), "{:?}", v.violations);
        assert!(v.violations.iter().any(|p| p.contains("push over the immutable tag c0-2")), "{:?}", v.violations);
    }

    #[test]
    fn a_tag_is_expected_after_its_last_acknowledged_restore() {
        let t0 = Instant::now();
        let del = |ms, ok| op(0, Kind::Delete { tag: "t".into() }, t0, ms, ok);
        let res = |ms, ok| op(0, Kind::Restore { tag: "t".into(), digest: Digest::sha256_of(b"t") }, t0, ms, ok);
        assert_eq!(expected_present("t", &[]), Some(true));
        assert_eq!(expected_present("t", &[del((0, 10), true)]), Some(false));
        assert_eq!(expected_present("t", &[res((20, 30), true), del((0, 10), true)]), Some(true));
        assert_eq!(expected_present("t", &[del((0, 10), true), res((20, 30), true), del((40, 50), true)]), Some(false));
        assert_eq!(expected_present("t", &[del((0, 10), true), res((20, 30), false)]), None, "unknown outcome");
    }
}
