//! Chaos: the metadata leader is SIGKILLed (and restarted) while clients
//! push images through every node. Every operation is recorded; afterwards
//! the checker asserts that no acknowledged push was lost, every pull's
//! bytes match their digest, and all nodes converge.
//!
//! Real `berth` processes, started through the CLI. Runs for
//! `BERTH_CHAOS_SECS` seconds (default 15, CI-sized); the seed is printed
//! and `BERTH_CHAOS_SEED` replays it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_common::Digest;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The `berth` binary cargo built beside this test.
fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("berth");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", bin.display());
    bin
}

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(berth_bin()).args(args).env("BERTH_LOG", "warn").output().unwrap()
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

struct Node {
    dir: PathBuf,
    http: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log")).unwrap();
        self.child = Some(
            Command::new(berth_bin()).args(["node", "start", "--data-dir", self.dir.to_str().unwrap()]).stdout(Stdio::null()).stderr(log).spawn().unwrap(),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn status(dir: &Path) -> Option<Value> {
    let out = berth(&["cluster", "status", "--json", "--data-dir", dir.to_str().unwrap()]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// One push as a client saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)] // node and started are for reading a failing history
struct Op {
    node: usize,
    tag: String,
    digest: Digest,
    started: Instant,
    ended: Instant,
    acked: bool,
}

const PASSWORD: &str = "chaos password";

async fn push(http: &reqwest::Client, base: &str, repo: &str, tag: &str, seed: u64) -> Result<Digest, String> {
    let layer = format!("layer {seed} {tag}").into_bytes();
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    for blob in [&layer, &config] {
        let d = Digest::sha256_of(blob);
        let r = http
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .basic_auth("admin", Some(PASSWORD))
            .body(blob.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().as_u16() != 201 {
            return Err(format!("blob upload answered {}", r.status()));
        }
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .basic_auth("admin", Some(PASSWORD))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 201 {
        return Err(format!("manifest put answered {}", r.status()));
    }
    Ok(Digest::sha256_of(&manifest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_during_pushes_loses_no_acknowledged_push() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("BERTH_CHAOS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let seed: u64 = std::env::var("BERTH_CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| rand::random());
    eprintln!("chaos seed {seed} (replay with BERTH_CHAOS_SEED={seed}), {secs} s");

    let root = tempfile::tempdir().unwrap();
    let pw = root.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    let mut token = String::new();
    let mut seed_peer = String::new();
    for (i, region) in ["eu", "us", "ap"].iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 1);
        let (http, peer) = (format!("{ip}:{}", free_port(&ip)), format!("{ip}:{}", free_port(&ip)));
        let dir = root.path().join(format!("n{}", i + 1));
        let d = dir.to_str().unwrap();
        let out = if i == 0 {
            berth(&["cluster", "init", "--data-dir", d, "--region", region, "--http", &http, "--peer", &peer, "--admin-password-file", pw.to_str().unwrap()])
        } else {
            berth(&["cluster", "join", "--data-dir", d, "--region", region, "--http", &http, "--peer", &peer, "--seed", &seed_peer, "--token", &token])
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if i == 0 {
            token = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
            seed_peer = peer.clone();
        }
        let mut n = Node { dir, http, child: None };
        n.start();
        nodes.push(n);
        std::thread::sleep(Duration::from_millis(if i == 0 { 1500 } else { 200 }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = status(&nodes[0].dir) {
            if s["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "voter").count() == 3 && s["leader"].is_u64() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "cluster never formed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The workload: 4 clients pushing unique tags through random nodes.
    let bases: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.http)).collect();
    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (bases, history, stop) = (bases.clone(), history.clone(), stop.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (c + 1));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let node = rng.random_range(0..bases.len());
                let tag = format!("c{c}-{i}");
                let started = Instant::now();
                let result = push(&http, &bases[node], "chaos/app", &tag, c * 1_000_000 + i).await;
                let ended = Instant::now();
                let (acked, digest) = match result {
                    Ok(d) => (true, d),
                    Err(_) => (false, Digest::sha256_of(b"unacknowledged")),
                };
                history.lock().unwrap().push(Op { node, tag, digest, started, ended, acked });
                i += 1;
            }
        }));
    }

    // The fault: SIGKILL the leader a third of the way in, restart it later.
    let run_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    let leader = status(&nodes[1].dir).and_then(|s| s["leader"].as_u64()).unwrap_or(1) as usize - 1;
    eprintln!("killing node {} (the leader)", leader + 1);
    nodes[leader].kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    nodes[leader].start();
    tokio::time::sleep(Duration::from_secs(secs - 2 * (secs / 3))).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    // Converge: every node answers every acknowledged tag with its digest.
    let ops = history.lock().unwrap().clone();
    let acked: Vec<&Op> = ops.iter().filter(|o| o.acked).collect();
    let http = reqwest::Client::new();
    let mut lost = Vec::new();
    let converge_deadline = Instant::now() + Duration::from_secs(60);
    for (i, base) in bases.iter().enumerate() {
        for op in &acked {
            loop {
                let r = http.get(format!("{base}/v2/chaos/app/manifests/{}", op.tag)).basic_auth("admin", Some(PASSWORD)).send().await;
                let ok = match r {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let body = r.bytes().await.unwrap();
                        Digest::sha256_of(&body) == op.digest
                    }
                    _ => false,
                };
                if ok {
                    break;
                }
                if Instant::now() > converge_deadline {
                    lost.push((i + 1, op.tag.clone()));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Every blob of a sample of acknowledged pushes is pullable from every node, bytes intact.
    let mut bad_pulls = 0;
    for op in acked.iter().step_by((acked.len() / 10).max(1)) {
        for base in &bases {
            let m: Value =
                http.get(format!("{base}/v2/chaos/app/manifests/{}", op.tag)).basic_auth("admin", Some(PASSWORD)).send().await.unwrap().json().await.unwrap();
            for d in [m["config"]["digest"].as_str().unwrap(), m["layers"][0]["digest"].as_str().unwrap()] {
                let body = http.get(format!("{base}/v2/chaos/app/blobs/{d}")).basic_auth("admin", Some(PASSWORD)).send().await.unwrap().bytes().await.unwrap();
                if Digest::sha256_of(&body).to_string() != d {
                    bad_pulls += 1;
                }
            }
        }
    }
    // Longest time no push was acknowledged, across the kill.
    let mut acks: Vec<Instant> = acked.iter().map(|o| o.ended).collect();
    acks.sort();
    let mut longest = Duration::ZERO;
    let mut last = run_started;
    for t in &acks {
        longest = longest.max(t.saturating_duration_since(last));
        last = *t;
    }
    let unacked = ops.len() - acked.len();
    eprintln!("scenario | ops | acknowledged | failed | acknowledged pushes lost | longest write unavailability | bad pulls");
    eprintln!("leader-sigkill | {} | {} | {} | {} | {:?} | {}", ops.len(), acked.len(), unacked, lost.len(), longest, bad_pulls);
    eprintln!("(leader killed {:?} into the run)", killed_at - run_started);
    assert!(acked.len() >= 10, "the workload made progress: {} acknowledged", acked.len());
    assert!(lost.is_empty(), "acknowledged pushes lost (node, tag): {lost:?}");
    assert_eq!(bad_pulls, 0, "every pull's bytes match their digest");
}
