//! The chaos matrix against real `berth` processes.
//!
//! By default (CI) the scenarios in [`scenario::CI`] run once each for
//! `BERTH_CHAOS_SECS` (15) seconds. `BERTH_CHAOS_FULL=1` runs every
//! scenario `BERTH_CHAOS_RUNS` (1) times; `BERTH_CHAOS_ONLY=a,b` picks
//! scenarios by name; `BERTH_CHAOS_SEED` replays. The summary table is
//! printed at the end (run with `--nocapture` to see it) and written to
//! `BERTH_CHAOS_TABLE` when that is set.

use berth_chaos::check::{table, Row};
use berth_chaos::scenario::{self, Scenario};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_matrix_loses_no_acknowledged_write_and_converges() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = env("BERTH_CHAOS_SECS").unwrap_or(15);
    let runs: usize = env("BERTH_CHAOS_RUNS").unwrap_or(1);
    let full = std::env::var("BERTH_CHAOS_FULL").is_ok_and(|v| v == "1");
    let scenarios: Vec<Scenario> = match std::env::var("BERTH_CHAOS_ONLY") {
        Ok(names) => names
            .split(',')
            .map(|n| Scenario::parse(n.trim()).unwrap_or_else(|| panic!("unknown scenario {n}; known: {:?}", scenario::ALL.map(|s| s.name()))))
            .collect(),
        Err(_) if full => scenario::ALL.to_vec(),
        Err(_) => scenario::CI.to_vec(),
    };
    let base_seed: u64 = env("BERTH_CHAOS_SEED").unwrap_or_else(rand::random);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for s in scenarios {
        let mut row = Row::new(s.name());
        for r in 0..runs {
            let seed = base_seed.wrapping_add(r as u64);
            let report = scenario::run(s, seed, secs).await;
            row.add(&report.verdict, report.unaffected_exists);
            if !report.verdict.passed() {
                failures.push(format!("{} seed {}: {:?}", s.name(), report.seed, report.verdict.violations));
            }
        }
        rows.push(row);
    }
    let t = table(&rows);
    eprintln!("\n{t}");
    if let Ok(path) = std::env::var("BERTH_CHAOS_TABLE") {
        std::fs::write(path, &t).expect("write the table");
    }
    assert!(failures.is_empty(), "chaos failures:\n{}", failures.join("\n"));
}
