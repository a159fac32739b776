//! Three regions 150 ms apart with the default Raft timing: the nodes must
//! become voters and commit. openraft 0.9 gives an AppendEntries call one
//! heartbeat interval; with the earlier 100 ms default every call across
//! such a link timed out and the followers never caught up.

use std::time::{Duration, Instant};

use berth_chaos::wan::{LinkSpec, WanProxy};
use berth_node::runtime::{init_cluster, join_cluster, start_node, Listeners, NodeAddrs, RunningNode};
use berth_raft::command::{IdentityCommand, OrgRecord};
use berth_raft::command::{ManifestRecord, MetaCommand, MetaResponse, RepositoryRecord};
use berth_raft::{LinkFilter, MetaConfig};
use tokio::net::TcpListener;

const RTT: Duration = Duration::from_millis(150);

async fn node(dir: &std::path::Path, region: &str, seed: Option<(&str, &str)>) -> (RunningNode, WanProxy, Option<String>) {
    node_on(dir, region, seed, LinkSpec::rtt(RTT)).await
}

async fn node_on(dir: &std::path::Path, region: &str, seed: Option<(&str, &str)>, link: LinkSpec) -> (RunningNode, WanProxy, Option<String>) {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = WanProxy::start("127.0.0.1:0".parse().unwrap(), peer.local_addr().unwrap(), link).await.unwrap();
    let addrs = NodeAddrs {
        region: region.into(),
        http_listen: http.local_addr().unwrap().to_string(),
        peer_listen: peer.local_addr().unwrap().to_string(),
        http_advertise: None,
        peer_advertise: Some(proxy.addr.to_string()),
    };
    let token = match seed {
        None => Some(init_cluster(dir, &addrs, Some("wan-password".into()), MetaConfig::default()).await.unwrap().token.to_string()),
        Some((seed, token)) => {
            join_cluster(dir, &addrs, seed, token, false, MetaConfig::default()).await.unwrap();
            None
        }
    };
    (start_node(dir, Some(Listeners { http, peer }), LinkFilter::default()).await.unwrap(), proxy, token)
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_150ms_apart_with_default_timing_elect_replicate_and_commit() {
    init_logs();
    berth_node::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (n1, _p1, token) = node(&dir.path().join("n1"), "eu", None).await;
    let token = token.unwrap();
    let seed = n1.peer_addr.to_string();
    let (n2, _p2, _) = node(&dir.path().join("n2"), "us", Some((&seed, &token))).await;
    let (n3, _p3, _) = node(&dir.path().join("n3"), "ap", Some((&seed, &token))).await;
    let started = Instant::now();
    while n1.meta.view().voters.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no 3 voters across 150 ms links: {:?}", n1.meta.view());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut took = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        n1.meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Probe { at_ms: i }).await.unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    // A commit needs one round trip to a follower; it should not need two.
    // The median says so; one slow fsync on a busy machine may not.
    let (fastest, median) = (took[0], took[took.len() / 2]);
    assert!(fastest >= RTT && median < RTT * 2, "commits took {took:?} at {RTT:?} RTT");
    for n in [n3, n2, n1] {
        n.shutdown().await;
    }
}

/// A 4 MiB manifest (the largest the registry takes) as one log entry.
fn big_manifest(i: u64) -> MetaCommand {
    let bytes = vec![b'a' + (i % 26) as u8; 4 << 20];
    let digest = berth_common::Digest::sha256_of(&bytes);
    let record = ManifestRecord {
        repo: "big/entries".into(),
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes,
        blobs: vec![],
        children: vec![],
        subject: None,
        pushed_at_ms: i,
    };
    MetaCommand::PutManifest { record, tag: Some(format!("t{i}")) }
}

/// Waits until every node has applied what the first one has.
async fn all_caught_up(nodes: &[&RunningNode], within: Duration) {
    let target = nodes[0].meta.view().applied_index;
    let started = Instant::now();
    for n in nodes {
        while n.meta.view().applied_index < target {
            assert!(started.elapsed() < within, "node {} stuck at {:?}, want {target:?}", n.meta.id(), n.meta.view().applied_index);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The largest entries the registry writes must never wedge replication:
/// openraft allows an AppendEntries one heartbeat interval, and a batch of
/// many 4 MiB entries (or one through a narrow HTTP/2 window) across a
/// 150 ms, 50 MB/s link took longer, was timed out, and was sent again,
/// forever. Batches are capped by bytes and windows fit a batch, so the
/// cluster keeps committing, also after all nodes restart at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_mib_entries_across_150ms_50mbs_links_keep_committing_and_survive_a_full_restart() {
    init_logs();
    berth_node::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let link = LinkSpec::rtt(RTT).with_rate(50_000_000);
    let (n1, _p1, token) = node_on(&dir.path().join("n1"), "eu", None, link).await;
    let token = token.unwrap();
    let seed = n1.peer_addr.to_string();
    let (n2, _p2, _) = node_on(&dir.path().join("n2"), "us", Some((&seed, &token)), link).await;
    let (n3, _p3, _) = node_on(&dir.path().join("n3"), "ap", Some((&seed, &token)), link).await;
    let started = Instant::now();
    while n1.meta.view().voters.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no 3 voters: {:?}", n1.meta.view());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A namespace and a repository first: manifests are only stored there.
    let org = OrgRecord { name: "big".into(), email: None, created_at_ms: 0 };
    n1.meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None })).await.unwrap();
    n1.meta
        .write(berth_raft::Actor::OPERATOR, MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("big/entries", 0))))
        .await
        .unwrap();
    // Big entries written back to back pile up in the log faster than the
    // links carry them: followers must take them in batches that fit.
    let writes: Vec<_> = (0..8).map(|i| n1.meta.write(berth_raft::Actor::OPERATOR, big_manifest(i))).collect();
    for r in futures::future::join_all(writes).await {
        assert_eq!(r.expect("a 4 MiB entry commits"), MetaResponse::Done);
    }
    for i in 0..5 {
        n1.meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Probe { at_ms: i }).await.expect("small writes still commit");
    }
    all_caught_up(&[&n1, &n2, &n3], Duration::from_secs(60)).await;

    // A full restart replays and resends the same entries.
    let dirs: Vec<_> = ["n1", "n2", "n3"].iter().map(|n| dir.path().join(n)).collect();
    for n in [n3, n2, n1] {
        n.shutdown().await;
    }
    let mut nodes = Vec::new();
    for d in &dirs {
        // In one process, a stopped node's last blocking RocksDB task may
        // still hold the database for a moment.
        let started = Instant::now();
        let node = loop {
            match start_node(d, None, LinkFilter::default()).await {
                Ok(n) => break n,
                Err(e) if started.elapsed() < Duration::from_secs(10) => tracing::warn!("restart: {e:#}"),
                Err(e) => panic!("restart: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        nodes.push(node);
    }
    let started = Instant::now();
    let mut i = 100;
    loop {
        let leader = nodes.iter().find(|n| n.meta.is_leader());
        if let Some(l) = leader {
            if l.meta.write(berth_raft::Actor::OPERATOR, big_manifest(i)).await.is_ok() {
                break;
            }
            i += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no commit within 60 s of a full restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = nodes.iter().position(|n| n.meta.is_leader()).expect("a leader");
    nodes.swap(0, leader);
    for j in 0..3 {
        nodes[0].meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Probe { at_ms: 1000 + j }).await.expect("commits after the restart");
    }
    all_caught_up(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(60)).await;
    for n in nodes {
        n.shutdown().await;
    }
}
