//! Peer-to-peer blob replication with real nodes in one process: QUIC with
//! mutual TLS on loopback, faults injected in the blob service.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_common::Digest;
use berth_raft::state::StateRead;
use berth_replication::ReplicationConfig;
use common::http::*;
use common::*;
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(30);

fn repl(min_copies: Option<usize>) -> ReplicationConfig {
    ReplicationConfig { reconcile_interval_ms: 300, min_copies, min_copies_timeout_ms: 5_000, ..ReplicationConfig::default() }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn holds(c: &Cluster, id: u64, d: &Digest) -> bool {
    c.node(id).replicator.store().stat(d).await.unwrap().is_some()
}

async fn wait_held(c: &Cluster, ids: &[u64], d: &Digest) {
    for id in ids {
        eventually(T, &format!("node {id} holds {d}"), || holds(c, *id, d)).await;
    }
}

fn served(c: &Cluster, id: u64) -> u64 {
    c.node(id).replicator.stats().requests_served.load(Ordering::Relaxed)
}

fn fetched_bytes(c: &Cluster, id: u64) -> u64 {
    c.node(id).replicator.stats().bytes_fetched.load(Ordering::Relaxed)
}

async fn get(reg: &Reg, path: &str) -> (StatusCode, Vec<u8>) {
    let (s, _, b) = reg.send(reg.req(Method::GET, path)).await;
    (s, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_push_every_node_holds_the_blob_and_pulls_stay_local() {
    // Regions: 1 and 4 in region-1, 2 and 5 in region-2, 3 in region-3.
    let c = Cluster::with_replication(5, fast_config(), Some(repl(None))).await;
    c.wait_voters(&[1, 2, 3, 4, 5], T).await;
    let r1 = reg(c.node(1));
    let blob = data(3 << 20, 1);
    let d = r1.blob("geo/app", &blob).await;
    wait_held(&c, &[1, 2, 3, 4, 5], &d).await;
    // A region pays for one copy over the WAN: the relay chain is
    // 1 → 4 → 2 → 5 → 3, and the push itself asks one node for a copy.
    assert!(served(&c, 1) <= 3, "node 1 served {} copies: its neighbour, maybe the push's copy, at most one more", served(&c, 1));

    // A pull in region 3 after replication sends no request to anyone.
    let before: Vec<u64> = (1..=5).map(|i| served(&c, i)).collect();
    let r3 = reg(c.node(3));
    let (s, body) = get(&r3, &format!("/v2/geo/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob);
    let after: Vec<u64> = (1..=5).map(|i| served(&c, i)).collect();
    assert_eq!(before, after, "a pull of replicated content is served from local disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_right_after_the_push_streams_through_and_twenty_pulls_make_one_fetch() {
    let c = Cluster::with_replication(3, fast_config(), Some(repl(Some(1)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    // A slow holder, so the pulls below find the fetch in flight.
    c.node(1).replicator.faults().serve_delay_us.store(20_000, Ordering::Relaxed);
    c.node(2).replicator.faults().refuse_peers.store(true, Ordering::Relaxed);
    let blob = data(6 << 20, 2);
    let d = reg(c.node(1)).blob("flight/app", &blob).await;
    let fetched_before = fetched_bytes(&c, 3);
    let r3 = reg(c.node(3));
    let pulls = (0..20).map(|_| {
        let r3 = r3.clone();
        let path = format!("/v2/flight/app/blobs/{d}");
        async move { get(&r3, &path).await }
    });
    for (s, body) in futures::future::join_all(pulls).await {
        assert_eq!(s, StatusCode::OK);
        assert!(body == blob, "every pull got the whole blob, streamed through node 3");
    }
    // Node 3 may first ask node 2 (its relay, which refuses), but the
    // bytes come across once.
    assert_eq!(fetched_bytes(&c, 3) - fetched_before, blob.len() as u64, "20 concurrent pulls, one peer fetch");
    assert!(holds(&c, 3, &d).await, "node 3 kept the copy it streamed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_killed_mid_transfer_and_the_fetch_goes_on_from_another() {
    let mut c = Cluster::with_replication(3, fast_config(), Some(repl(Some(2)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    // Node 3 is cut off for now: it gets no pipelined copy and cannot fetch.
    c.filter.isolate(3, [1, 2]);
    let blob = data(12 << 20, 3);
    let d = reg(c.node(1)).blob("kill/app", &blob).await;
    wait_held(&c, &[1, 2], &d).await;
    assert!(!holds(&c, 3, &d).await);
    // Both holders are slow (the 10 MiB left take 4 s, however loaded the
    // machine); node 3 starts from one of them ...
    for id in [1, 2] {
        c.node(id).replicator.faults().serve_delay_us.store(100_000, Ordering::Relaxed);
    }
    let served = |id: u64| c.node(id).replicator.stats().bytes_served.load(Ordering::Relaxed);
    c.filter.heal();
    let mut fetch = c.node(3).replicator.fetch(&d, blob.len() as u64, None);
    let deadline = Instant::now() + T;
    loop {
        let state = fetch.progress.borrow().clone();
        match state {
            berth_replication::Progress::Running { written, .. } if written >= 2 << 20 => break,
            // A fetch begun while the links were cut may have given up: start another.
            berth_replication::Progress::Failed(_) => fetch = c.node(3).replicator.fetch(&d, blob.len() as u64, None),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the fetch never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... which dies mid-transfer: the holder serving now (a fetch begun
    // and given up right after the heal may have had bytes from the other).
    let at = [served(1), served(2)];
    eventually(T, "a holder is serving node 3", || async { served(1) > at[0] || served(2) > at[1] }).await;
    let by = [served(1) - at[0], served(2) - at[1]];
    let (source, other) = if by[0] >= by[1] { (1, 2) } else { (2, 1) };
    c.stop(source).await;
    c.node(other).replicator.faults().serve_delay_us.store(0, Ordering::Relaxed);
    fetch.wait().await.expect("the fetch completes from node 2");
    let st = c.node(3).replicator.stats();
    assert_eq!(st.bytes_fetched.load(Ordering::Relaxed), blob.len() as u64, "continued at the byte reached, nothing fetched twice");
    assert_eq!(
        st.requests_sent.load(Ordering::Relaxed),
        2,
        "one request to each holder; served just before the stop by node 1: {}, node 2: {}; node {source} stopped",
        by[0],
        by[1]
    );
    assert!(c.node(3).replicator.stats().corrupt.load(Ordering::Relaxed) == 0);
    let (s, body) = get(&reg(c.node(3)), &format!("/v2/kill/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_serving_corrupted_bytes_is_never_trusted() {
    let c = Cluster::with_replication(3, fast_config(), Some(repl(Some(2)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    // The liar leads, so the node it alone reaches can still apply the
    // blob's record and pass a read barrier.
    let liar = c.wait_leader(T).await;
    let mut others = c.nodes.keys().copied().filter(|id| *id != liar);
    let (honest, pulling) = (others.next().unwrap(), others.next().unwrap());
    // The pulling node is cut off: it gets no pipelined copy and cannot fetch.
    c.filter.isolate(pulling, [liar, honest]);
    let blob = data(2 << 20, 4);
    let d = reg(c.node(liar)).blob("bad/app", &blob).await;
    wait_held(&c, &[liar, honest], &d).await;
    c.node(liar).replicator.faults().corrupt_served.store(true, Ordering::Relaxed);
    // Only the liar is reachable at first.
    c.filter.restore(pulling, liar);
    c.filter.restore(liar, pulling);
    let puller = reg(c.node(pulling));
    let path = format!("/v2/bad/app/blobs/{d}");
    // The first pull follows the liar's bytes: it must not end as a complete body.
    let first = tokio::spawn({
        let puller = puller.clone();
        let path = path.clone();
        async move {
            let resp = puller.req(Method::GET, &path).send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            resp.bytes().await.map(|b| (status, b.to_vec())).map_err(|e| e.to_string())
        }
    });
    eventually(T, "the bad copy is detected", || async { c.node(pulling).replicator.stats().corrupt.load(Ordering::Relaxed) > 0 }).await;
    assert!(!holds(&c, pulling, &d).await, "the bad copy was not stored");
    c.filter.heal();
    match first.await.unwrap() {
        Ok((s, body)) if s == StatusCode::OK && body.len() == blob.len() => assert!(body == blob, "a complete body is always the right one"),
        Ok((s, body)) => assert!(s != StatusCode::OK || body.len() < blob.len()),
        Err(e) => eprintln!("first pull cut short, as it must be: {e}"),
    }
    wait_held(&c, &[pulling], &d).await;
    let (s, body) = get(&puller, &format!("/v2/bad/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob, "fetched again from the honest holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_copies_holds_back_the_push_until_a_second_node_has_every_blob() {
    let mut c = Cluster::with_replication(3, fast_config(), Some(repl(None))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let r1 = reg(c.node(1));
    // Every peer's blob service unreachable (Raft still works).
    for id in [2, 3] {
        c.node(id).replicator.faults().refuse_peers.store(true, Ordering::Relaxed);
    }
    let m = r1.image("dur/app", "one").await;
    let (s, _, body) = r1.put_manifest("dur/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("UNAVAILABLE"));
    assert_eq!(r1.status_of(Method::GET, "/v2/dur/app/manifests/v1").await, StatusCode::NOT_FOUND, "nothing committed");

    // One peer back: the push is acknowledged, with a second copy in place.
    c.node(2).replicator.faults().refuse_peers.store(false, Ordering::Relaxed);
    let (s, _, _) = r1.put_manifest("dur/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(s, StatusCode::CREATED);

    // The node that took the push dies: the image is still pullable.
    c.node(3).replicator.faults().refuse_peers.store(false, Ordering::Relaxed);
    c.stop(1).await;
    c.wait_leader(T).await;
    let r3 = reg(c.node(3));
    let (s, man) = get(&r3, "/v2/dur/app/manifests/v1").await;
    assert_eq!(s, StatusCode::OK);
    let man: serde_json::Value = serde_json::from_slice(&man).unwrap();
    let mut digests = vec![man["config"]["digest"].as_str().unwrap().to_string()];
    digests.extend(man["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for d in digests {
        let (s, body) = get(&r3, &format!("/v2/dur/app/blobs/{d}")).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        assert_eq!(Digest::sha256_of(&body).to_string(), d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_keeps_copies_only_where_asked_and_any_node_still_serves() {
    let c = Cluster::with_replication(3, fast_config(), Some(repl(Some(1)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let set = |ns: &str, p: berth_raft::command::Placement| berth_raft::MetaCommand::SetPlacement { namespace: ns.into(), placement: p };
    c.node(leader)
        .meta
        .write(berth_raft::Actor::OPERATOR, set("edge", berth_raft::command::Placement::Regions(vec!["region-1".into(), "region-2".into()])))
        .await
        .unwrap();
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, set("lazy", berth_raft::command::Placement::OnDemand)).await.unwrap();
    let r1 = reg(c.node(1));
    let edge = r1.blob("edge/app", &data(100_000, 7)).await;
    let lazy = r1.blob("lazy/app", &data(100_000, 8)).await;
    let every = r1.blob("plain/app", &data(100_000, 9)).await;
    wait_held(&c, &[1, 2, 3], &every).await;
    wait_held(&c, &[2], &edge).await;
    // Once every node has applied the placements and the blobs' records,
    // one full reconciler pass on each is all it takes to copy what they
    // should not: run it, and wait for it to end (a background pass that
    // began the copy meanwhile is joined, not started twice).
    c.sync_all().await;
    for id in [2, 3] {
        c.node(id).replicator.reconcile_once().await;
    }
    assert!(!holds(&c, 3, &edge).await, "region-3 is not in edge's placement");
    assert!(!holds(&c, 2, &lazy).await && !holds(&c, 3, &lazy).await, "on-demand blobs stay where they were pushed");
    // Any node serves any blob all the same.
    let r3 = reg(c.node(3));
    for (repo, d, seed) in [("edge/app", &edge, 7), ("lazy/app", &lazy, 8)] {
        let (s, body) = get(&r3, &format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body == data(100_000, seed));
    }

    // A pass reads only the records changed since the one before; a new
    // placement changes what is wanted of blobs whose records did not
    // change, and the passes after it see that too. Node 2 holds no lazy
    // blob (node 3 holds the one it served above, as a cache); its holders
    // refuse to serve until the list is checked, so no pass copies it first.
    c.node(2).replicator.reconcile_once().await;
    assert_eq!(c.node(2).replicator.backlog(), (0, 0), "an idle pass finds nothing missing");
    for id in [1, 3] {
        c.node(id).replicator.faults().refuse_peers.store(true, Ordering::Relaxed);
    }
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, set("lazy", berth_raft::command::Placement::Everywhere)).await.unwrap();
    c.sync_all().await;
    c.node(2).replicator.refresh_missing().await;
    let missing: Vec<Digest> = c.node(2).replicator.missing().into_iter().map(|(d, _)| d).collect();
    assert_eq!(missing, vec![lazy.clone()], "the widened placement makes the lazy blob missing on node 2");
    assert_eq!(c.node(2).replicator.backlog(), (1, 100_000));
    for id in [1, 3] {
        c.node(id).replicator.faults().refuse_peers.store(false, Ordering::Relaxed);
    }
    wait_held(&c, &[2], &lazy).await;
    eventually(T, "node 2's holder record takes the lazy blob off its list", || async {
        c.node(2).replicator.refresh_missing().await;
        c.node(2).replicator.backlog() == (0, 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_blob_is_fetched_in_ranges_from_several_holders() {
    let c = Cluster::with_replication(3, fast_config(), Some(repl(Some(2)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    // Node 3's region keeps no copy in the background: its pull below is the fetch.
    let regions = berth_raft::command::Placement::Regions(vec!["region-1".into(), "region-2".into()]);
    c.node(c.wait_leader(T).await)
        .meta
        .write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::SetPlacement { namespace: "big".into(), placement: regions })
        .await
        .unwrap();
    let blob = data(72 << 20, 5);
    let d = reg(c.node(1)).blob("big/app", &blob).await;
    wait_held(&c, &[1, 2], &d).await;
    let before = (served(&c, 1), served(&c, 2));
    let (s, body) = get(&reg(c.node(3)), &format!("/v2/big/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob, "72 MiB arrived intact");
    assert!(served(&c, 1) > before.0 && served(&c, 2) > before.1, "both holders served a range");
    assert_eq!(c.node(3).replicator.stats().bytes_fetched.load(Ordering::Relaxed), blob.len() as u64, "each byte fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_blob_spreads_along_a_relay_chain_and_no_node_serves_more_than_one_copy() {
    let c = Cluster::with_replication(6, fast_config(), Some(repl(Some(1)))).await;
    // Five voters and a learner: every node is in the metadata.
    c.wait_voters(&[1, 2, 3, 4, 5], T).await;
    // A slow holder: the copies are still landing when the next nodes ask.
    c.node(1).replicator.faults().serve_delay_us.store(30_000, Ordering::Relaxed);
    let blob = data(8 << 20, 7);
    let d = reg(c.node(1)).blob("relay/app", &blob).await;
    wait_held(&c, &[1, 2, 3, 4, 5, 6], &d).await;
    let copies = |id: u64| c.node(id).replicator.stats().bytes_served.load(Ordering::Relaxed) as f64 / blob.len() as f64;
    let served: Vec<f64> = (1..=6).map(copies).collect();
    // Regions 1 = {1, 4}, 2 = {2, 5}, 3 = {3, 6}: the chain is
    // 1 → 4 → 2 → 5 → 3 → 6, every node relaying what it has so far.
    for (i, s) in served.iter().enumerate() {
        assert!(*s <= 1.05, "node {} served {s:.2} copies: {served:?}", i + 1);
    }
    assert!(served[1] >= 0.95, "node 2 relayed the blob on while it landed: {served:?}");
    let total: f64 = served.iter().sum();
    assert!((4.9..=5.5).contains(&total), "five copies crossed the network: {served:?}");
    for id in 1..=6 {
        let (s, body) = get(&reg(c.node(id)), &format!("/v2/relay/app/blobs/{d}")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body == blob, "node {id} holds the right bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_that_goes_silent_is_left_after_the_stall_timeout() {
    let config = ReplicationConfig { fetch_stall_secs: 1, ..repl(Some(2)) };
    let c = Cluster::with_replication(3, fast_config(), Some(config)).await;
    c.wait_voters(&[1, 2, 3], T).await;
    // Node 3 fetches nothing on its own for now.
    c.filter.cut_one_way(3, 1);
    c.filter.cut_one_way(3, 2);
    let blob = data(4 << 20, 9);
    let d = reg(c.node(1)).blob("stall/app", &blob).await;
    wait_held(&c, &[1, 2], &d).await;
    // Node 1 sends one chunk, then nothing for a minute: hung, not dead.
    // Node 2 turns node 3 away at first, so node 3 starts on node 1.
    let served_by_1 = || c.node(1).replicator.stats().bytes_served.load(Ordering::Relaxed);
    let before = served_by_1();
    c.node(1).replicator.faults().serve_delay_us.store(60_000_000, Ordering::Relaxed);
    c.node(2).replicator.faults().refuse_peers.store(true, Ordering::Relaxed);
    c.filter.heal();
    let started = Instant::now();
    let fetch = c.node(3).replicator.fetch(&d, blob.len() as u64, None);
    eventually(T, "node 3 starts on node 1", || async { served_by_1() > before }).await;
    c.node(2).replicator.faults().refuse_peers.store(false, Ordering::Relaxed);
    fetch.wait().await.expect("the fetch completes from node 2");
    assert!(started.elapsed() < Duration::from_secs(20), "left the silent holder after about a second, took {:?}", started.elapsed());
    assert!(served_by_1() - before < blob.len() as u64 / 2, "node 1 sent a chunk or so before it went silent");
    let st = c.node(3).replicator.stats();
    assert_eq!(st.bytes_fetched.load(Ordering::Relaxed), blob.len() as u64, "went on at the byte reached");
    let (s, body) = get(&reg(c.node(3)), &format!("/v2/stall/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob);
}

/// `berth node drain`: the leader, holding the only copy of an on-demand
/// blob, is drained through the CLI; when the command returns, leadership
/// has moved and another node holds the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_moves_leadership_and_copies_what_only_the_node_held() {
    let c = Cluster::with_replication(3, fast_config(), Some(repl(Some(1)))).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let lazy = berth_raft::command::Placement::OnDemand;
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::SetPlacement { namespace: "lazy".into(), placement: lazy }).await.unwrap();
    let d = reg(c.node(leader)).blob("lazy/app", &data(300_000, 3)).await;
    let others: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    for id in &others {
        assert!(!holds(&c, *id, &d).await, "an on-demand blob stays on the node it was pushed to");
    }

    let dir = c.dirs[&leader].to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || procs::berth(&["node", "drain", &leader.to_string(), "--json", "--data-dir", &dir])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["leadership"]["previous"], leader, "{report}");
    assert_ne!(report["leadership"]["leader"], leader, "{report}");
    assert_eq!(report["blobs_copied"], 1, "{report}");
    let mut copies = 0;
    for id in &others {
        copies += holds(&c, *id, &d).await as usize;
    }
    // One, or two if the copy was slow enough for drain to ask another
    // node as well (a hedge after 2 s).
    assert!(copies >= 1, "another node holds the blob when drain returns");
    assert_ne!(c.wait_leader(T).await, leader);

    // Again: nothing left to copy; an unknown node is refused.
    let dir = c.dirs[&leader].to_str().unwrap().to_string();
    let again = tokio::task::spawn_blocking(move || procs::berth(&["node", "drain", &leader.to_string(), "--json", "--data-dir", &dir])).await.unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["blobs_copied"], 0, "{report}");
    let dir = c.dirs[&leader].to_str().unwrap().to_string();
    let unknown = tokio::task::spawn_blocking(move || procs::berth(&["node", "drain", "42", "--data-dir", &dir])).await.unwrap();
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no active node 42"));
}

/// A node whose disk cannot keep a copy (here: `min_free_bytes` above
/// what any disk has) serves a pull of a blob it lacks by relaying the
/// holder's bytes, whole and in ranges, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_room_relays_a_pull_and_keeps_nothing() {
    let full = ReplicationConfig { min_free_bytes: u64::MAX / 2, ..repl(Some(1)) };
    let c = Cluster::with_replication(3, fast_config(), Some(full)).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let on_demand = berth_raft::MetaCommand::SetPlacement { namespace: "lazy".into(), placement: berth_raft::command::Placement::OnDemand };
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, on_demand).await.unwrap();
    let blob = data(5 << 20, 11);
    let d = reg(c.node(1)).blob("lazy/app", &blob).await;
    c.sync_all().await;
    assert!(!holds(&c, 3, &d).await);
    let r3 = reg(c.node(3));
    let (s, body) = get(&r3, &format!("/v2/lazy/app/blobs/{d}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob, "the relayed bytes are the blob's");
    let (s, h, part) = r3.send(r3.req(Method::GET, &format!("/v2/lazy/app/blobs/{d}")).header("range", "bytes=1000-1999")).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{h:?}");
    assert!(part == blob[1000..2000]);
    // Nothing was kept: the relay starts no fetch (nothing runs on after
    // the answers), writes no blob file and records no copy.
    assert!(!holds(&c, 3, &d).await, "a full disk keeps no copy");
    assert_eq!(fetched_bytes(&c, 3), 0, "relayed, not fetched");
    let rec = c.node(3).meta.state().get::<berth_raft::command::BlobRecord>(&berth_raft::state::keys::blob(&d)).unwrap().unwrap();
    assert!(!rec.holders.contains(&3), "{rec:?}");
}

/// Sizes of the staging files on node `id` (uploads and copies in progress).
fn staged(c: &Cluster, id: u64) -> Vec<u64> {
    let dir = c.node(id).replicator.store().staging_dir();
    let mut sizes: Vec<u64> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect();
    sizes.sort();
    sizes
}

/// A 3-node cluster whose namespace `pipe` keeps copies only where pushed
/// and where `min_copies` asks: any copy found was made for the push.
async fn on_demand_cluster() -> Cluster {
    let c = Cluster::with_replication(3, fast_config(), Some(ReplicationConfig { pipeline_stall_ms: 2_000, ..repl(None) })).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let placement = berth_raft::MetaCommand::SetPlacement { namespace: "pipe".into(), placement: berth_raft::command::Placement::OnDemand };
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, placement).await.unwrap();
    c.sync_all().await;
    c
}

/// Opens an upload on `r`; returns its location.
async fn open_upload(r: &Reg, repo: &str) -> String {
    let (s, h, _) = r.send(r.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    h["location"].to_str().unwrap().to_string()
}

/// The upload's location with `digest=` added, for the closing PUT.
fn digest_url(loc: &str, digest: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

async fn patch(r: &Reg, loc: &str, bytes: &[u8]) {
    let (s, _, body) = r.send(r.req(Method::PATCH, loc).body(bytes.to_vec())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
}

/// The peer (of 2 and 3) holding `len` bytes of a pipelined copy in staging.
async fn streaming_peer(c: &Cluster, len: u64) -> u64 {
    eventually(T, &format!("a peer has the first {len} bytes of the upload in staging"), || async { [2, 3].into_iter().find(|id| staged(c, *id) == vec![len]) })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_streams_its_second_copy_to_a_peer_while_it_arrives() {
    let c = on_demand_cluster().await;
    let r1 = reg(c.node(1));
    let blob = data(6 << 20, 3);
    let digest = Digest::sha256_of(&blob);
    let loc = open_upload(&r1, "pipe/app").await;
    patch(&r1, &loc, &blob[..4 << 20]).await;
    // The client is still uploading, and one peer already has what it sent.
    let peer = streaming_peer(&c, 4 << 20).await;
    let other = 5 - peer;
    assert!(staged(&c, other).is_empty(), "one copy streams, to one peer");
    patch(&r1, &loc, &blob[4 << 20..]).await;
    let (s, _, body) = r1.send(r1.req(Method::PUT, &digest_url(&loc, &digest))).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    // At the acknowledgement two disks hold verified copies.
    for id in [1, peer] {
        assert!(c.node(id).replicator.store().verify(&digest).await.unwrap(), "node {id} holds a verified copy at the ack");
        assert!(staged(&c, id).is_empty());
    }
    assert!(!holds(&c, other, &digest).await);

    // The manifest is acknowledged on those two copies, both recorded by
    // then: nothing is fetched after the upload, and no third copy is made.
    let config = r1.blob("pipe/app", b"{}").await;
    let man = manifest_json(&config, 2, &[(digest.clone(), blob.len() as u64)], None, None);
    let (s, _, body) = r1.put_manifest("pipe/app", "v1", OCI_MANIFEST, &man).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let mirrored: u64 = [2, 3].iter().map(|id| c.node(*id).replicator.stats().mirrored.load(Ordering::Relaxed)).sum();
    assert_eq!(mirrored, 2, "the layer's and the config's copies were pipelined");
    let leader = c.wait_leader(T).await;
    let rec: berth_raft::command::BlobRecord = c.node(leader).meta.state().get(&berth_raft::state::keys::blob(&digest)).unwrap().unwrap();
    assert_eq!(rec.holders, [1, peer].into_iter().collect(), "both copies recorded by the time the manifest is acknowledged");
    for id in 1..=3 {
        assert_eq!(served(&c, id), 0, "node {id} served no blob to a peer: every copy was pipelined");
    }
    assert!(!holds(&c, other, &digest).await);

    // A digest that does not match at the end: every copy is discarded.
    let loc = open_upload(&r1, "pipe/app").await;
    let wrong = data(3 << 20, 4);
    patch(&r1, &loc, &wrong).await;
    streaming_peer(&c, 3 << 20).await;
    let (s, _, body) = r1.send(r1.req(Method::PUT, &digest_url(&loc, &digest))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    eventually(T, "no staging file left on any node", || async { (1..=3).all(|id| staged(&c, id).is_empty()) }).await;
    let bad = Digest::sha256_of(&wrong);
    for id in 1..=3 {
        assert!(!holds(&c, id, &bad).await, "node {id} keeps nothing of the mismatched upload");
    }

    // Cancelled half-way: nothing is left on any node.
    let loc = open_upload(&r1, "pipe/app").await;
    patch(&r1, &loc, &blob[..2 << 20]).await;
    streaming_peer(&c, 2 << 20).await;
    assert_eq!(r1.status_of(Method::DELETE, &loc).await, StatusCode::NO_CONTENT);
    eventually(T, "no staging file left after the cancel", || async { (1..=3).all(|id| staged(&c, id).is_empty()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipelined_copy_that_does_not_check_out_is_discarded_and_made_on_another_node() {
    let c = on_demand_cluster().await;
    for id in [2, 3] {
        c.node(id).replicator.faults().corrupt_mirrored.store(true, Ordering::Relaxed);
    }
    let r1 = reg(c.node(1));
    let blob = data(3 << 20, 5);
    let digest = r1.blob("pipe/app", &blob).await;
    let config = r1.blob("pipe/app", b"{\"corrupt\":1}").await;
    let man = manifest_json(&config, 13, &[(digest.clone(), blob.len() as u64)], None, None);
    let (s, _, body) = r1.put_manifest("pipe/app", "v1", OCI_MANIFEST, &man).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    // The peer that received the stream found the digest wrong and kept
    // nothing; the copy was then fetched, verified, by the other one.
    let lost: Vec<u64> = c.node(1).replicator.lost_on(&digest).into_iter().collect();
    assert_eq!(lost.len(), 1, "one pipelined copy of the layer was lost: {lost:?}");
    let (bad, good) = (lost[0], 5 - lost[0]);
    assert!(c.node(bad).replicator.stats().corrupt.load(Ordering::Relaxed) >= 1, "node {bad} caught the corruption");
    // Discarded; a copy there now is one fetched afterwards, by a hedged
    // request, and must check out.
    assert!(!holds(&c, bad, &digest).await || c.node(bad).replicator.store().verify(&digest).await.unwrap(), "the corrupted copy is discarded");
    for id in [1, good] {
        assert!(c.node(id).replicator.store().verify(&digest).await.unwrap(), "node {id} holds a verified copy");
    }
    assert!(staged(&c, bad).is_empty());
}

/// A UDP relay that forwards between one client and `to`, and can drop
/// everything both ways: a path that goes dark, as in a partition, where
/// nothing is refused and nothing arrives.
struct DarkableRelay {
    addr: std::net::SocketAddr,
    dark: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DarkableRelay {
    async fn start(to: std::net::SocketAddr) -> DarkableRelay {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let dark = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dropping = dark.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            let mut client = None;
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
                if dropping.load(Ordering::Relaxed) {
                    continue;
                }
                let dest = if from == to {
                    client
                } else {
                    client = Some(from);
                    Some(to)
                };
                if let Some(dest) = dest {
                    let _ = sock.send_to(&buf[..n], dest).await;
                }
            }
        });
        DarkableRelay { addr, dark }
    }
}

/// A peer whose path drops everything (no refused connection, no error:
/// QUIC alone would notice at its 30 s idle timeout) is known silent
/// within a few keep-alives, so copies and fetches ask it last and its
/// stale RTT is not offered; once packets flow again it is not silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_path_goes_dark_is_known_silent() {
    use berth_node::cluster::pki;
    use berth_replication::transport::{Transport, SILENT_AFTER};
    berth_node::install_crypto_provider();
    let ca = pki::new_ca("silence").unwrap();
    let bind =
        |id: u64| Transport::bind(id, "127.0.0.1:0".parse().unwrap(), &pki::new_node_tls(&ca, id).unwrap(), &Default::default(), Default::default()).unwrap();
    let (a, b) = (bind(1), bind(2));
    // B answers connections, as a node's blob service does.
    let server = b.endpoint().clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(c) = incoming.await {
                    c.closed().await;
                }
            });
        }
    });
    let relay = DarkableRelay::start(b.local_addr().unwrap()).await;
    a.connect(2, &relay.addr.to_string()).await.unwrap();

    // Idle but alive: keep-alives are answered.
    tokio::time::sleep(SILENT_AFTER * 2).await;
    assert!(a.silent().is_empty(), "an idle live peer is not silent");
    assert!(a.rtts().contains_key(&2));

    relay.dark.store(true, Ordering::Relaxed);
    let dark = Instant::now();
    eventually(SILENT_AFTER * 4, "the dark peer known silent", || async { a.silent().contains(&2) }).await;
    assert!(dark.elapsed() < SILENT_AFTER + Duration::from_secs(2), "silent only after {:?}", dark.elapsed());
    assert!(!a.rtts().contains_key(&2), "no RTT offered for a silent peer");

    relay.dark.store(false, Ordering::Relaxed);
    eventually(SILENT_AFTER * 4, "the peer heard again", || async { a.silent().is_empty() }).await;
}
