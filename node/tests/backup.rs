//! Backup and restore with real processes: a backup taken while twenty
//! pushes run, restored into a new three-node cluster that holds every
//! manifest acknowledged before the backup began, with all its blobs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_gateway::testing::client::Reg;
use common::daemons::run;
use common::procs::*;
use reqwest::{Method, StatusCode};

const MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";

fn buildah(root: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root").arg(root.join("storage")).arg("--runroot").arg(root.join("run")).arg("--storage-driver=vfs");
    cmd
}

#[test]
fn a_backup_taken_during_pushes_restores_into_a_new_cluster_with_every_blob() {
    berth_node::install_crypto_provider();
    let mut c = ProcCluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let creds = format!("admin:{}", c.password);

    // A real image, built by buildah and pushed before anything else.
    let bah = work.join("buildah");
    let ctr = run(buildah(&bah).args(["from", "scratch"])).trim().to_string();
    std::fs::write(work.join("hello.txt"), "backed up").unwrap();
    run(buildah(&bah).arg("copy").arg(&ctr).arg(work.join("hello.txt")).arg("/hello.txt"));
    run(buildah(&bah).args(["commit", &ctr, "b/app:v1"]));
    run(buildah(&bah).args(["push", "--tls-verify=false", "--creds", &creds, "b/app:v1", &format!("docker://{}/team/real:v1", c.http[0])]));

    // Twenty pushes through the three nodes, four at a time, while a backup
    // with blobs is taken half way.
    let out = c.root.path().join("backup");
    let regs: Vec<Reg> = (0..3).map(|i| Reg::at(format!("http://{}", c.http[i]), "admin", &c.password)).collect();
    let pushes = rt.spawn({
        let regs = regs.clone();
        async move {
            let mut acked = Vec::new();
            for round in 0..5 {
                let batch = (0..4).map(|j| {
                    let i = round * 4 + j;
                    let r = regs[i % 3].clone();
                    async move {
                        let m = r.image("team/app", &format!("p{i}")).await;
                        let (s, h, _) = r.put_manifest("team/app", &format!("p{i}"), MEDIA, &m).await;
                        assert_eq!(s, StatusCode::CREATED, "push p{i}");
                        (format!("p{i}"), h["docker-content-digest"].to_str().unwrap().to_string(), Instant::now())
                    }
                });
                acked.extend(futures::future::join_all(batch).await);
            }
            acked
        }
    });
    while !pushes.is_finished() && rt.block_on(async { regs[0].status_of(Method::GET, "/v2/team/app/manifests/p8").await }) != StatusCode::OK {
        std::thread::sleep(Duration::from_millis(20));
    }
    let backup_began = Instant::now();
    let d1 = c.dirs[0].to_str().unwrap().to_string();
    let said = ok(&["cluster", "backup", "--out", out.to_str().unwrap(), "--with-blobs", "--data-dir", &d1]);
    assert!(said.contains("metadata of cluster") && said.contains("copied"), "{said}");
    let acked = rt.block_on(pushes).unwrap();
    let before: Vec<&(String, String, Instant)> = acked.iter().filter(|(_, _, at)| *at < backup_began).collect();
    assert!(before.len() >= 8 && before.len() < 20, "the backup ran during the pushes: {} acknowledged before it", before.len());

    // Run again: the blobs already copied are skipped. The restore below
    // uses the first run's metadata, put back afterwards.
    let first = std::fs::read(out.join("metadata.berth")).unwrap();
    let again = ok(&["cluster", "backup", "--out", out.to_str().unwrap(), "--with-blobs", "--data-dir", &d1]);
    assert!(again.contains("already in") && !again.contains(", 0 already in"), "{again}");
    std::fs::write(out.join("metadata.berth"), first).unwrap();

    for p in c.procs.iter_mut() {
        assert!(p.terminate().success());
    }

    // A new cluster from the backup, on new addresses, three nodes.
    let fresh = c.root.path().join("restored");
    let ip = "127.0.0.6";
    let (http, peer) = free_addr_pair(ip);
    let f1 = fresh.join("n1");
    let restored = ok(&[
        "cluster",
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--data-dir",
        f1.to_str().unwrap(),
        "--region",
        "eu-west",
        "--http",
        &http,
        "--peer",
        &peer,
    ]);
    assert!(restored.contains("each digest verified") && !restored.contains("warning"), "{restored}");
    let token = restored.lines().last().unwrap().to_string();
    let mut procs = vec![Proc::start(&f1)];
    wait_status(&f1, "restored node leads", Duration::from_secs(30), |s| s["leader"] == 1);
    let mut https = vec![http];
    for (i, region) in [(7, "us-east"), (8, "ap-south")] {
        let ip = format!("127.0.0.{i}");
        let (h, p) = free_addr_pair(&ip);
        let dir = fresh.join(format!("n{i}"));
        ok(&["cluster", "join", "--data-dir", dir.to_str().unwrap(), "--region", region, "--http", &h, "--peer", &p, "--seed", &peer, "--token", &token]);
        procs.push(Proc::start(&dir));
        https.push(h);
    }
    wait_status(&f1, "three voters", Duration::from_secs(60), |s| voters(s).len() == 3 && s["nodes"].as_array().unwrap().iter().all(|n| n["lag"] == 0));

    // Every manifest acknowledged before the backup began is there, through
    // a node that joined after the restore, with every blob, verified.
    let joined = Reg::at(format!("http://{}", https[2]), "admin", &c.password);
    rt.block_on(async {
        for (tag, digest, _) in &before {
            let (s, h, body) = joined.send(joined.req(Method::GET, &format!("/v2/team/app/manifests/{tag}")).header("accept", MEDIA)).await;
            assert_eq!(s, StatusCode::OK, "{tag}");
            assert_eq!(h["docker-content-digest"].to_str().unwrap(), digest);
            let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for b in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
                let b = b.as_str().unwrap();
                let (s, _, bytes) = joined.send(joined.req(Method::GET, &format!("/v2/team/app/blobs/{b}"))).await;
                assert_eq!(s, StatusCode::OK, "{tag}: {b}");
                assert_eq!(berth_common::Digest::sha256_of(&bytes).to_string(), b);
            }
        }
    });
    // A real client pulls the real image from the restored cluster.
    let pulled = work.join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds", &creds, &format!("docker://{}/team/real:v1", https[1])])
        .arg(format!("oci:{}", pulled.display())));
    let layout: serde_json::Value = serde_json::from_slice(&std::fs::read(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(layout["manifests"].as_array().unwrap().len(), 1);

    // Nonsense is refused and leaves nothing behind.
    let bad = berth(&[
        "cluster",
        "restore",
        "--from",
        work.to_str().unwrap(),
        "--data-dir",
        fresh.join("x").to_str().unwrap(),
        "--region",
        "eu-west",
        "--http",
        "127.0.0.9:1",
        "--peer",
        "127.0.0.9:2",
    ]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("metadata.berth"));
    assert!(!fresh.join("x").exists(), "a refused restore makes no node");
    for p in procs.iter_mut() {
        assert!(p.terminate().success());
    }
}
