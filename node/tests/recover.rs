//! Disaster recovery with real processes: two of three nodes destroyed for
//! good, `berth cluster recover --force-new-cluster` on the third, every
//! committed tag and blob still there, and new nodes join.

mod common;

use std::time::Duration;

use berth_gateway::testing::client::Reg;
use common::procs::*;
use reqwest::{Method, StatusCode};

const MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_survivor_of_a_lost_majority_recovers_every_committed_tag_and_new_nodes_join() {
    berth_node::install_crypto_provider();
    let mut c = ProcCluster::start(3);
    let rt = rt();
    let reg = |i: usize| Reg::at(format!("http://{}", c.http[i]), "admin", &c.password);

    // Ten images pushed through node 1, each fully replicated to node 3.
    let mut pushed = Vec::new();
    for i in 0..10 {
        let r = reg(0);
        let (status, headers, _) = rt.block_on(async {
            let m = r.image("team/app", &format!("v{i}")).await;
            r.put_manifest("team/app", &format!("v{i}"), MEDIA, &m).await
        });
        assert_eq!(status, StatusCode::CREATED);
        pushed.push((format!("v{i}"), headers["docker-content-digest"].to_str().unwrap().to_string()));
    }
    wait_status(&c.dirs[2], "node 3 caught up", Duration::from_secs(30), |s| s["nodes"].as_array().unwrap().iter().all(|n| n["lag"] == 0));
    let survivor = reg(2);
    let blobs: Vec<String> = rt.block_on(async {
        let mut blobs = Vec::new();
        for (tag, _) in &pushed {
            let (s, _, body) = survivor.send(survivor.req(Method::GET, &format!("/v2/team/app/manifests/{tag}")).header("accept", MEDIA)).await;
            assert_eq!(s, StatusCode::OK);
            let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            blobs.push(m["config"]["digest"].as_str().unwrap().to_string());
            blobs.push(m["layers"][0]["digest"].as_str().unwrap().to_string());
        }
        blobs
    });
    // Node 3 holds every blob on its own disk before the others go.
    let d3 = c.dirs[2].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !blobs.iter().all(|b| blob_file(&d3, b).exists()) {
        assert!(std::time::Instant::now() < deadline, "node 3 holds every blob on its disk within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Nodes 1 and 2 are lost for good.
    for i in 0..2 {
        c.procs[i].kill9();
        std::fs::remove_dir_all(&c.dirs[i]).unwrap();
    }
    assert!(c.procs[2].terminate().success());

    // Without --force nothing changes, and the plan is printed.
    let d = d3.to_str().unwrap();
    let dry = berth(&["cluster", "recover", "--data-dir", d, "--force-new-cluster"]);
    assert!(!dry.status.success());
    let (out, err) = (String::from_utf8_lossy(&dry.stdout), String::from_utf8_lossy(&dry.stderr));
    assert!(out.contains("removed for good: nodes 1, 2") && out.contains("may be lost"), "{out}");
    assert!(err.contains("nothing changed") && err.trim().lines().count() == 1, "{err}");
    let refused = berth(&["cluster", "recover", "--data-dir", d, "--force"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--force-new-cluster"));

    let done = ok(&["cluster", "recover", "--data-dir", d, "--force-new-cluster", "--force"]);
    assert!(done.contains("node 3 becomes the only voter"), "{done}");
    c.procs[2] = Proc::start(&d3);
    wait_status(&d3, "node 3 leads alone", Duration::from_secs(30), |s| s["leader"] == 3 && voters(s) == vec![3]);

    // Every committed tag is there, every blob reads back with its digest.
    rt.block_on(async {
        for (tag, digest) in &pushed {
            let (s, h, _) = survivor.send(survivor.req(Method::GET, &format!("/v2/team/app/manifests/{tag}")).header("accept", MEDIA)).await;
            assert_eq!(s, StatusCode::OK, "{tag}");
            assert_eq!(h["docker-content-digest"].to_str().unwrap(), digest);
        }
        for b in &blobs {
            let (s, _, body) = survivor.send(survivor.req(Method::GET, &format!("/v2/team/app/blobs/{b}"))).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(berth_common::Digest::sha256_of(&body).to_string(), *b);
        }
    });

    // Two new nodes join the recovered cluster, and pushes work through them.
    let token = ok(&["cluster", "token", "create", "--ttl", "1h", "--data-dir", d]).lines().last().unwrap().to_string();
    let mut fresh = Vec::new();
    for i in 4..=5 {
        let ip = format!("127.0.0.{i}");
        let (http, peer) = free_addr_pair(&ip);
        let dir = c.root.path().join(format!("n{i}"));
        let region = REGIONS[i % REGIONS.len()];
        ok(&[
            "cluster",
            "join",
            "--data-dir",
            dir.to_str().unwrap(),
            "--region",
            region,
            "--http",
            &http,
            "--peer",
            &peer,
            "--seed",
            &c.peer[2],
            "--token",
            &token,
        ]);
        c.procs.push(Proc::start(&dir));
        fresh.push(http);
    }
    wait_status(&d3, "three voters again", Duration::from_secs(60), |s| voters(s).len() == 3 && s["leader"].is_u64());
    let newcomer = Reg::at(format!("http://{}", fresh[0]), "admin", &c.password);
    rt.block_on(async {
        let m = newcomer.image("team/app", "after").await;
        let (s, _, _) = newcomer.put_manifest("team/app", "after", MEDIA, &m).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(survivor.status_of(Method::GET, "/v2/team/app/manifests/after").await, StatusCode::OK);
    });
    for p in c.procs.iter_mut().skip(2) {
        assert!(p.terminate().success());
    }
}

/// Where node `dir` keeps blob `digest` (`blobs/sha256/ab/<hex>`).
fn blob_file(dir: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = &digest["sha256:".len()..];
    dir.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}
