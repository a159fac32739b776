//! The operator's path with real processes: `berth cluster init`, `join`,
//! `node start`, `status`, a SIGKILLed leader, a restart.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::procs::*;

#[test]
fn three_regions_through_the_cli_survive_a_killed_leader() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("n{i}"))).collect();
    let regions = ["eu-west", "us-east", "ap-south"];
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let addr = |i: usize| free_addr_pair(ips[i]);

    let pw = root.path().join("admin.pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    let (http0, peer0) = addr(0);
    let init = ok(&[
        "cluster",
        "init",
        "--data-dir",
        dirs[0].to_str().unwrap(),
        "--region",
        regions[0],
        "--http",
        &http0,
        "--peer",
        &peer0,
        "--admin-password-file",
        pw.to_str().unwrap(),
    ]);
    let token = init.lines().last().unwrap().to_string();
    assert!(token.starts_with("berth1."), "the join token stands alone on the last line: {init}");
    let mut procs = vec![Proc::start(&dirs[0])];
    wait_status(&dirs[0], "first node up", Duration::from_secs(20), |s| s["leader"] == 1);

    for i in 1..3 {
        let (http, peer) = addr(i);
        ok(&[
            "cluster",
            "join",
            "--data-dir",
            dirs[i].to_str().unwrap(),
            "--region",
            regions[i],
            "--http",
            &http,
            "--peer",
            &peer,
            "--seed",
            &peer0,
            "--token",
            &token,
        ]);
        procs.push(Proc::start(&dirs[i]));
    }
    wait_status(&dirs[0], "three voters", Duration::from_secs(30), |s| voters(s).len() == 3 && s["leader"].is_u64());
    let table = ok(&["cluster", "status", "--data-dir", dirs[2].to_str().unwrap()]);
    for r in regions {
        assert!(table.contains(r), "table shows every region: {table}");
    }
    assert!(table.contains('*'), "table marks the leader: {table}");
    // Every node measures its RTT to every other: the status shows the matrix.
    wait_status(&dirs[0], "rtt matrix", Duration::from_secs(20), |s| {
        let rows = s["rtt_ms"].as_array().unwrap();
        rows.len() == 3 && rows.iter().all(|r| r["to"].as_array().unwrap().len() == 2)
    });
    assert!(ok(&["cluster", "status", "--data-dir", dirs[0].to_str().unwrap()]).contains("RTT ms"));
    // Placement, set and read back through the CLI; nonsense refused.
    let d0 = dirs[0].to_str().unwrap();
    ok(&["placement", "set", "edge", "--regions", "eu-west,us-east", "--data-dir", d0]);
    assert_eq!(ok(&["placement", "get", "edge", "--data-dir", d0]).trim(), "edge: regions eu-west,us-east");
    let bad = berth(&["placement", "set", "edge", "--regions", "Not A Region", "--data-dir", d0]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("region"));
    assert_eq!(ok(&["placement", "get", "edge", "--data-dir", d0]).trim(), "edge: regions eu-west,us-east", "a refused change changes nothing");

    // From elsewhere: the endpoint and an admin login; a wrong password is refused.
    let endpoint = format!("http://{http0}");
    let remote = ok(&["cluster", "status", "--json", "--endpoint", &endpoint, "--password-file", pw.to_str().unwrap()]);
    assert!(remote.contains("\"cluster_id\""));
    let bad_pw = root.path().join("bad.pw");
    std::fs::write(&bad_pw, "wrong").unwrap();
    let refused = berth(&["cluster", "status", "--endpoint", &endpoint, "--password-file", bad_pw.to_str().unwrap()]);
    assert!(!refused.status.success());
    let line = String::from_utf8_lossy(&refused.stderr);
    assert!(line.contains("invalid credentials") && line.trim().lines().count() == 1, "{line}");

    // A failover drill through the CLI: leadership moves, reads never stop.
    let drill: serde_json::Value =
        serde_json::from_str(&ok(&["drill", "failover", "--json", "--endpoint", &endpoint, "--password-file", pw.to_str().unwrap()])).unwrap();
    assert_ne!(drill["previous_leader"], drill["new_leader"], "{drill:#}");
    assert_eq!(drill["reads_stopped"], false, "{drill:#}");
    assert_eq!(drill["reads"].as_array().unwrap().len(), 3, "reads probed on every node: {drill:#}");
    assert!(drill["reads"].as_array().unwrap().iter().all(|r| r["failed"] == 0), "{drill:#}");
    assert!(drill["writes_ok"].as_u64().unwrap() > 10, "{drill:#}");
    assert!(drill["write_unavailable_ms"].as_u64().unwrap() < 10_000, "{drill:#}");
    eprintln!("drill: {drill}");
    let s = wait_status(&dirs[0], "leader after the drill", Duration::from_secs(20), |s| s["leader"].is_u64());
    // The drill posted its report: every node lists it, with the figures
    // the CLI printed, as it printed them.
    let elsewhere = s["nodes"].as_array().unwrap().iter().map(|n| n["http_addr"].as_str().unwrap().to_string()).find(|a| *a != endpoint).unwrap();
    berth_node::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reports: serde_json::Value = rt.block_on(async {
        let url = format!("{}/api/v1/drill/reports", elsewhere.trim_end_matches('/'));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = reqwest::Client::new().get(&url).basic_auth("admin", Some("correct horse battery")).send().await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.status());
            let v: serde_json::Value = r.json().await.unwrap();
            if !v.as_array().unwrap().is_empty() || Instant::now() > deadline {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let listed = reports.as_array().unwrap();
    assert_eq!(listed.len(), 1, "one drill, one report: {reports:#}");
    assert_eq!(listed[0]["kind"], "failover");
    assert_eq!(listed[0]["by"], "admin");
    assert_eq!(listed[0]["target"], format!("leader {} -> {}", drill["previous_leader"], drill["new_leader"]));
    assert_eq!(listed[0]["figures"], drill, "the report keeps the CLI's figures");
    assert!(listed[0]["started_ms"].as_u64().unwrap() < listed[0]["ended_ms"].as_u64().unwrap(), "{reports:#}");

    // SIGKILL the leader: a survivor reports a new leader and takes writes.
    let leader = s["leader"].as_u64().unwrap();
    let li = (leader - 1) as usize;
    procs[li].kill9();
    let killed_at = Instant::now();
    let survivor = &dirs[(li + 1) % 3];
    let s2 = wait_status(survivor, "new leader", Duration::from_secs(20), |s| s["leader"].as_u64().is_some_and(|l| l != leader));
    let created = ok(&["cluster", "token", "create", "--ttl", "1h", "--data-dir", survivor.to_str().unwrap()]);
    assert!(created.lines().last().unwrap().starts_with("berth1."));
    eprintln!("new leader {} after {:?}", s2["leader"], killed_at.elapsed());

    // The killed node restarts from disk and rejoins as a follower.
    procs[li] = Proc::start(&dirs[li]);
    wait_status(&dirs[li], "old leader rejoined", Duration::from_secs(30), |s| {
        voters(s).len() == 3 && s["leader"].as_u64().is_some_and(|l| l != leader) && s["nodes"].as_array().unwrap().iter().all(|n| n["lag"] == 0)
    });

    // SIGTERM stops a node cleanly.
    for p in procs.iter_mut() {
        assert!(p.terminate().success(), "clean exit on SIGTERM for {}", p.dir.display());
    }
}

#[test]
fn cli_errors_are_one_line_and_non_zero() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path().join("n");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["cluster", "init", "--data-dir", d.to_str().unwrap(), "--region", "EU", "--http", "127.0.0.1:1", "--peer", "127.0.0.1:2"], "region"),
        (vec!["cluster", "init", "--data-dir", d.to_str().unwrap(), "--region", "eu", "--http", "nope", "--peer", "127.0.0.1:2"], "--http"),
        (
            vec![
                "cluster",
                "join",
                "--data-dir",
                d.to_str().unwrap(),
                "--region",
                "eu",
                "--http",
                "127.0.0.1:1",
                "--peer",
                "127.0.0.1:2",
                "--seed",
                "127.0.0.1:9",
                "--token",
                "x",
            ],
            "join token is malformed",
        ),
        (vec!["cluster", "status", "--data-dir", d.to_str().unwrap()], "cannot read"),
        (vec!["node", "start", "--data-dir", d.to_str().unwrap()], "cannot read"),
        (vec!["cluster", "status"], "--data-dir"),
    ];
    for (args, expect) in cases {
        let out = berth(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!d.join("berth.toml").exists(), "{args:?} left a node behind");
    }
}

/// `berth cluster status | head -1`: a printing command whose reader has
/// gone ends quietly (by SIGPIPE, as cat does), with no panic on stderr,
/// while the node it asked keeps running: a server never dies of a client
/// that hangs up.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly_and_not_the_node() {
    let mut c = ProcCluster::start(1);
    let dir = c.dirs[0].to_str().unwrap().to_string();
    for reader in ["head -1", "true"] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("'{BERTH}' cluster status --data-dir '{dir}' | {reader}; echo \"exit ${{PIPESTATUS[0]}}\" >&2"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "`| {reader}`: {stderr}");
        let code = stderr.lines().last().unwrap_or_default();
        assert!(code == "exit 0" || code == "exit 141", "`| {reader}` ended with {code}");
        if reader == "head -1" {
            assert!(String::from_utf8_lossy(&out.stdout).starts_with("cluster "), "head got the first line");
        }
    }
    assert!(c.procs[0].alive(), "the node is still running");
    assert!(status(&c.dirs[0]).is_some(), "and still answers");
}
