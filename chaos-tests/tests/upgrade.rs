//! A rolling upgrade from the previous release (deploy/PREVIOUS_RELEASE)
//! with writes going on: three nodes in three regions written by the old
//! binary are stopped cleanly and started with this tree's binary one at a
//! time, a leader handing over first, while four clients push, move tags
//! and pull through every node. Nothing acknowledged is lost, the clients'
//! history holds (the chaos checker's rules), and the nodes converge.
//! The leader then turns on the state format the old release could not
//! read. Then a fourth node of the new release joins the upgraded cluster.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_chaos::check::{check_converged, check_history, Bounds};
use berth_chaos::cluster::{Cluster, Topology};
use berth_chaos::workload::Workload;

/// The previous release's binary, built once by scripts/previous-release.sh
/// (`./x test` builds it before the tests; this builds it when missing).
fn previous_release() -> PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("scripts/previous-release.sh");
    let out = std::process::Command::new(&script).output().expect("run scripts/previous-release.sh");
    assert!(out.status.success(), "building the previous release failed: {}", String::from_utf8_lossy(&out.stderr));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().expect("the script prints the binary's path").trim());
    assert!(path.exists(), "{} is missing", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_the_previous_release_loses_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let old = previous_release();
    let new = berth_chaos::cluster::berth_bin();
    let old_version = String::from_utf8_lossy(&std::process::Command::new(&old).arg("--version").output().unwrap().stdout).trim().to_string();
    let new_version = String::from_utf8_lossy(&std::process::Command::new(&new).arg("--version").output().unwrap().stdout).trim().to_string();
    eprintln!("upgrading from {old_version} ({}) to {new_version}", old.display());

    let mut c = Cluster::start_using(Topology::regions(&["eu", "us", "ap"], Duration::from_millis(2)), Vec::new(), old.clone()).await;
    let targets: Vec<(usize, String)> = c.nodes.iter().map(|n| (n.index, n.base())).collect();
    let wl = Workload::start(4, targets, rand::random(), 4096);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Followers first, the leader last, as UPGRADING.md says.
    let leader = c.leader().expect("a leader before the upgrade");
    let mut order: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != leader).collect();
    order.push(leader);
    for i in order {
        c.upgrade(i, &new).await;
        eprintln!("node {i} runs {new_version} at {:.1} s", t0.elapsed().as_secs_f64());
        // Let it catch up and serve under load before the next one stops.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ops = wl.stop().await;
    let end = Instant::now();

    // Every node was restarted in turn: none is "unaffected".
    let mut verdict = check_history(&ops, &[], t0, end);
    verdict.check_bounds(&Bounds { min_acked_writes: 20, max_write_gap: Duration::from_secs(10), max_pull_errors_unaffected: None });
    check_converged(&c, &ops, Duration::from_secs(60), &mut verdict).await;
    eprintln!(
        "   {} ops, {} acked writes, {} lost, longest write gap {:.2} s, converged in {:.1} s",
        verdict.ops,
        verdict.acked_writes,
        verdict.acked_lost,
        verdict.longest_write_gap.as_secs_f64(),
        verdict.converged_in.as_secs_f64()
    );
    if !verdict.passed() {
        for i in 0..c.nodes.len() {
            eprintln!("-- log of node {i} --\n{}", c.node_log(i));
        }
    }
    assert!(verdict.passed(), "the upgrade broke the history: {:?}", verdict.violations);

    // With every node upgraded, the leader turns on the state format the
    // old release could not read (blob records' repositories in an index);
    // the pushes above went on across the switch.
    let switched = |c: &Cluster| (0..c.nodes.len()).filter(|i| c.node_log(*i).contains("every member reads the blob repository index")).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while switched(&c) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if switched(&c) == 0 {
        for i in 0..c.nodes.len() {
            eprintln!("-- log of node {i} --\n{}", c.node_log(i));
        }
    }
    assert!(switched(&c) >= 1, "no leader turned the blob repository index on");

    // The upgraded cluster takes a new node of the new release.
    c.set_binary(&new);
    let added = c.add_node("eu").await;
    c.wait_ready(added, Duration::from_secs(60)).await;
}
