//! Three regions 150 ms apart with the default Raft timing: the nodes must
//! become voters and commit. openraft 0.9 gives an AppendEntries call one
//! heartbeat interval; with the earlier 100 ms default every call across
//! such a link timed out and the followers never caught up.

use std::time::{Duration, Instant};

use berth_chaos::wan::{LinkSpec, WanProxy};
use berth_node::runtime::{init_cluster, join_cluster, start_node, Listeners, NodeAddrs, RunningNode};
use berth_raft::command::MetaCommand;
use berth_raft::{LinkFilter, MetaConfig};
use tokio::net::TcpListener;

const RTT: Duration = Duration::from_millis(150);

async fn node(dir: &std::path::Path, region: &str, seed: Option<(&str, &str)>) -> (RunningNode, WanProxy, Option<String>) {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = WanProxy::start("127.0.0.1:0".parse().unwrap(), peer.local_addr().unwrap(), LinkSpec::rtt(RTT)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_150ms_apart_with_default_timing_elect_replicate_and_commit() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    berth_node::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (n1, _p1, token) = node(&dir.path().join("n1"), "eu", None).await;
    let token = token.unwrap();
    let seed = n1.peer_addr.to_string();
    let (n2, _p2, _) = node(&dir.path().join("n2"), "us", Some((&seed, &token))).await;
    let (n3, _p3, _) = node(&dir.path().join("n3"), "ap", Some((&seed, &token))).await;
    let started = Instant::now();
    while n1.meta.metrics().membership_config.membership().voter_ids().count() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "no 3 voters across 150 ms links: {:?}", n1.meta.metrics().membership_config);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        n1.meta.write(MetaCommand::Probe { at_ms: i }).await.unwrap();
        worst = worst.max(t.elapsed());
    }
    // A commit needs one round trip to a follower; it should not need many.
    assert!(worst >= RTT && worst < RTT * 4, "worst commit {worst:?} at {RTT:?} RTT");
    for n in [n3, n2, n1] {
        n.shutdown().await;
    }
}
