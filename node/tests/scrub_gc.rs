//! Scrub repairs a bad copy; garbage collection removes what no manifest
//! references, on every node, while pulls go on.

mod common;

use std::time::Duration;

use berth_common::Digest;
use berth_node::registry::gc::{collect_at, collect_once, GcStats};
use berth_replication::ReplicationConfig;
use common::http::*;
use common::*;
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(30);

fn repl() -> Option<ReplicationConfig> {
    Some(ReplicationConfig { reconcile_interval_ms: 300, ..ReplicationConfig::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_a_flipped_byte_and_repairs_it_from_a_peer() {
    let c = Cluster::with_replication(3, fast_config(), repl()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let blob: Vec<u8> = (0..500_000u32).map(|i| (i % 253) as u8).collect();
    let d = reg(c.node(1)).blob("scrub/app", &blob).await;
    let store3 = c.node(3).replicator.store().clone();
    eventually(T, "node 3 gets a copy", || {
        let s = store3.clone();
        let d = d.clone();
        async move { s.stat(&d).await.unwrap().is_some() }
    })
    .await;
    // A bit rots on node 3's disk.
    let path = store3.path_of(&d);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1234] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let report = c.node(3).replicator.scrub_once(u64::MAX).await;
    assert_eq!((report.checked, report.corrupt), (1, 1));
    eventually(T, "node 3 fetched a good copy again", || {
        let s = store3.clone();
        let d = d.clone();
        async move { s.stat(&d).await.unwrap().is_some() && s.verify(&d).await.unwrap() }
    })
    .await;
    let report = c.node(3).replicator.scrub_once(u64::MAX).await;
    assert_eq!(report.corrupt, 0, "the repaired copy is clean");
    let (s, _, body) = reg(c.node(3)).send(reg(c.node(3)).req(Method::GET, &format!("/v2/scrub/app/blobs/{d}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_removes_unreferenced_blobs_on_every_node_keeps_shared_ones_and_pulls_go_on() {
    let c = Cluster::with_replication(3, fast_config(), repl()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let r = reg(c.node(1));
    // x:v1 and y:v1 share a layer; an abandoned upload references nothing.
    let shared = r.blob("gc/x", b"shared layer").await;
    r.send(r.req(Method::POST, &format!("/v2/gc/y/blobs/uploads/?mount={shared}&from=gc/x"))).await;
    let cx = r.blob("gc/x", b"{\"config\":\"x\"}").await;
    let cy = r.blob("gc/y", b"{\"config\":\"y\"}").await;
    let abandoned = r.blob("gc/x", b"never referenced").await;
    let mx = manifest_json(&cx, 14, &[(shared.clone(), 12)], None, None);
    let my = manifest_json(&cy, 14, &[(shared.clone(), 12)], None, None);
    assert_eq!(r.put_manifest("gc/x", "v1", OCI_MANIFEST, &mx).await.0, StatusCode::CREATED);
    assert_eq!(r.put_manifest("gc/y", "v1", OCI_MANIFEST, &my).await.0, StatusCode::CREATED);
    let all = [shared.clone(), cx.clone(), cy.clone(), abandoned.clone()];
    for id in [1, 2, 3] {
        for d in &all {
            let s = c.node(id).replicator.store().clone();
            let d = d.clone();
            eventually(T, "every node holds every blob", || {
                let s = s.clone();
                let d = d.clone();
                async move { s.stat(&d).await.unwrap().is_some() }
            })
            .await;
        }
    }
    // x:v1 goes away.
    assert_eq!(r.status_of(Method::DELETE, &format!("/v2/gc/x/manifests/{}", Digest::sha256_of(&mx))).await, StatusCode::ACCEPTED);

    // Pulls of y run all through the collection.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let puller = tokio::spawn({
        let reg = reg(c.node(2));
        let stop = stop.clone();
        let (shared, cy) = (shared.clone(), cy.clone());
        async move {
            let mut pulls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/v2/gc/y/manifests/v1".to_string(), format!("/v2/gc/y/blobs/{shared}"), format!("/v2/gc/y/blobs/{cy}")] {
                    let (s, _, _) = reg.send(reg.req(Method::GET, &path)).await;
                    assert_eq!(s, StatusCode::OK, "{path} during gc");
                    pulls += 1;
                }
            }
            pulls
        }
    });
    // Within the grace period nothing goes.
    let stats = GcStats::default();
    let leader = c.wait_leader(T).await;
    let grace = Duration::from_secs(3600);
    let report = collect_once(&c.node(leader).meta, c.node(leader).replicator.store(), grace, &stats).await;
    assert_eq!(report.swept, 0, "a fresh upload is never swept");
    // After it (the collector's clock moved on, not the test's), the leader
    // sweeps and every node deletes its copies.
    let later = std::time::SystemTime::now() + grace + Duration::from_secs(1);
    let report = collect_at(&c.node(leader).meta, c.node(leader).replicator.store(), later, grace, &stats).await;
    assert_eq!(report.swept, 2, "the config of x and the abandoned upload");
    for id in [1, 2, 3] {
        collect_at(&c.node(id).meta, c.node(id).replicator.store(), later, grace, &stats).await;
        let store = c.node(id).replicator.store();
        assert!(store.stat(&cx).await.unwrap().is_none(), "node {id} deleted x's config");
        assert!(store.stat(&abandoned).await.unwrap().is_none(), "node {id} deleted the abandoned blob");
        assert!(store.stat(&shared).await.unwrap().is_some(), "node {id} kept the shared layer");
        assert!(store.stat(&cy).await.unwrap().is_some(), "node {id} kept y's config");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(puller.await.unwrap() > 0);
    let (s, _, _) = r.send(r.req(Method::GET, &format!("/v2/gc/x/blobs/{abandoned}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The shared layer can be pushed into x again (it is still linked to y).
    let (s, _, _) = r.send(r.req(Method::POST, &format!("/v2/gc/x/blobs/uploads/?mount={shared}&from=gc/y"))).await;
    assert_eq!(s, StatusCode::CREATED);
}

/// How many times the GC race below is run: CI-sized by default,
/// `BERTH_GC_RACE_ITERS=N` for a long run.
fn gc_race_iters() -> usize {
    std::env::var("BERTH_GC_RACE_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_never_deletes_a_copy_that_a_concurrent_push_of_the_swept_digest_recorded() {
    use berth_raft::command::{BlobRecord, MetaCommand, MetaResponse};
    use berth_raft::state::keys;
    use berth_raft::StateRead;

    let c = Cluster::with_replication(1, fast_config(), repl()).await;
    c.wait_leader(T).await;
    let node = c.any();
    let store = node.replicator.store().clone();
    let r = reg(node);
    let bytes = b"a layer swept, then pushed again".to_vec();
    let digest = Digest::sha256_of(&bytes);
    let stats = GcStats::default();
    let iters = gc_race_iters();
    let mut deleted = 0;
    for i in 0..iters {
        // The cluster forgets the blob; this node still has its old copy,
        // which the sweeper is entitled to delete (grace 0 below).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        match node.meta.write(berth_raft::Actor::Node, MetaCommand::SweepBlob { digest: digest.clone(), cutoff_ms: now + 1 }).await.unwrap() {
            MetaResponse::Done | MetaResponse::NotFound => {}
            other => panic!("iteration {i}: sweep answered {other:?}"),
        }
        if store.stat(&digest).await.unwrap().is_none() {
            let mut s = store.create_staging().await.unwrap();
            s.write(bytes::Bytes::copy_from_slice(&bytes)).await.unwrap();
            s.commit(&store, &digest).await.unwrap();
        }
        // A client pushes the same bytes again while the sweeper runs; the
        // sweeper starts at a different point of the push each time.
        let delay = Duration::from_micros((i as u64 * 7 % 40) * 250);
        let push = r.blob("gc/race", &bytes);
        let gc = async {
            tokio::time::sleep(delay).await;
            collect_once(&node.meta, &store, Duration::ZERO, &stats).await
        };
        let (_, report) = tokio::join!(push, gc);
        deleted += report.deleted;
        // Recorded as a holder means holding a copy.
        let rec: Option<BlobRecord> = node.meta.state().get(&keys::blob(&digest)).unwrap();
        if rec.is_some_and(|r| r.holders.contains(&node.meta.id())) {
            assert!(
                store.stat(&digest).await.unwrap().is_some(),
                "iteration {i} (gc {delay:?} after the push began): the node is recorded as a holder but its copy was deleted"
            );
        }
    }
    eprintln!("{iters} races, {deleted} stale copies deleted by gc");
    assert!(deleted > 0, "the sweeper never got to delete anything: the race was not exercised");
}
