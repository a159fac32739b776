//! berth benchmarks. Each figure is a ratio against a reference measured in
//! the same run on the same machine; absolute numbers alone mean little on
//! a shared 2-core box.
//!
//! `berth-bench replication`: a blob copied between two nodes by berth's
//! blob transport (QUIC), against a plain TCP stream of the same bytes over
//! the same path, on loopback and across an emulated WAN link.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_chaos::wan::{LinkSpec, WanProxy};
use berth_common::Digest;
use berth_node::runtime::{init_cluster, join_cluster, start_node, Listeners, NodeAddrs, RunningNode};
use berth_raft::{LinkFilter, MetaConfig};
use clap::{Parser, Subcommand};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(name = "berth-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// One blob between two nodes, against plain TCP over the same path.
    Replication {
        /// Blob size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Round trip of the emulated WAN link, ms.
        #[arg(long, default_value_t = 100)]
        rtt_ms: u64,
        /// Where the JSON results go.
        #[arg(long, default_value = "bench-results/replication.json")]
        out: std::path::PathBuf,
    },
}

const BLOCK: usize = 1 << 20;

/// Block `i` of the benchmark blob: incompressible, reproducible.
fn block(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; BLOCK];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

fn blob_digest(blocks: u64) -> Digest {
    let mut h = sha2::Sha256::new();
    for i in 0..blocks {
        h.update(block(i));
    }
    format!("sha256:{}", hex::encode(h.finalize())).parse().expect("a sha256 digest")
}

struct Node {
    running: RunningNode,
    _proxy: Option<WanProxy>,
}

/// A node whose peer address (Raft and blobs) is behind a WAN proxy.
async fn node(dir: &std::path::Path, region: &str, link: Option<LinkSpec>, seed: Option<(&str, &str)>) -> anyhow::Result<Node> {
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let peer = TcpListener::bind("127.0.0.1:0").await?;
    let peer_addr = peer.local_addr()?;
    let proxy = match link {
        Some(spec) => Some(WanProxy::start("127.0.0.1:0".parse()?, peer_addr, spec).await?),
        None => None,
    };
    let addrs = NodeAddrs {
        region: region.into(),
        http_listen: http.local_addr()?.to_string(),
        peer_listen: peer_addr.to_string(),
        http_advertise: None,
        peer_advertise: proxy.as_ref().map(|p| p.addr.to_string()),
    };
    let raft = MetaConfig { heartbeat_ms: 100, election_min_ms: 1000, election_max_ms: 2000, ..MetaConfig::default() };
    match seed {
        None => {
            init_cluster(dir, &addrs, Some("bench-password".into()), raft).await?;
        }
        Some((seed, token)) => {
            join_cluster(dir, &addrs, seed, token, false, raft).await?;
        }
    }
    let running = start_node(dir, Some(Listeners { http, peer }), LinkFilter::default()).await?;
    Ok(Node { running, _proxy: proxy })
}

/// MB/s of berth copying a `blocks` MiB blob from node 1 to node 2.
async fn berth_copy(blocks: u64, digest: &Digest, link: Option<LinkSpec>) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let n1 = node(&dir.path().join("n1"), "bench-a", link, None).await?;
    let token = {
        let cluster: berth_raft::ClusterRecord =
            berth_raft::StateRead::get(&n1.running.meta.state(), berth_raft::state::keys::CLUSTER)?.context("cluster record")?;
        let t = berth_node::join::JoinToken::generate(&berth_node::pki::fingerprint(&cluster.ca_cert_pem)?);
        n1.running.meta.write(berth_node::runtime::token_record(&t, Duration::from_secs(600), None)).await?;
        t.to_string()
    };
    let seed = n1.running.peer_addr.to_string();
    let n2 = node(&dir.path().join("n2"), "bench-b", link, Some((&seed, &token))).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n1.running.meta.metrics().membership_config.membership().get_node(&n2.running.config.node_id).is_none() {
        anyhow::ensure!(Instant::now() < deadline, "node 2 never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the copy being measured: no background replication of this namespace.
    n1.running.meta.write(berth_raft::MetaCommand::SetPlacement { namespace: "bench".into(), placement: berth_raft::command::Placement::OnDemand }).await?;

    // Push the blob to node 1, streamed.
    let body = futures::stream::iter((0..blocks).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(block(i)))));
    let url = format!("http://{}/v2/bench/blob/blobs/uploads/?digest={digest}", n1.running.http_addr);
    let resp = reqwest::Client::new().post(url).basic_auth("admin", Some("bench-password")).body(reqwest::Body::wrap_stream(body)).send().await?;
    anyhow::ensure!(resp.status().as_u16() == 201, "upload answered {}", resp.status());
    while berth_raft::StateRead::get::<berth_raft::command::BlobRecord>(&n2.running.meta.state(), &berth_raft::state::keys::blob(digest))?.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let size = blocks * BLOCK as u64;
    let started = Instant::now();
    n2.running.replicator.fetch(digest, size, Some(n1.running.config.node_id)).wait().await.map_err(anyhow::Error::msg)?;
    let secs = started.elapsed().as_secs_f64();
    n2.running.shutdown().await;
    n1.running.shutdown().await;
    Ok(size as f64 / secs / 1e6)
}

/// MB/s of one plain TCP stream of the same bytes over the same path.
async fn tcp_copy(blocks: u64, link: Option<LinkSpec>) -> anyhow::Result<f64> {
    let server = TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = server.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut s, _)) = server.accept().await {
            for i in 0..blocks {
                if s.write_all(&block(i)).await.is_err() {
                    return;
                }
            }
            let _ = s.shutdown().await;
        }
    });
    let proxy = match link {
        Some(spec) => Some(WanProxy::start("127.0.0.1:0".parse()?, server_addr, spec).await?),
        None => None,
    };
    let target: SocketAddr = proxy.as_ref().map(|p| p.addr).unwrap_or(server_addr);
    let started = Instant::now();
    let mut c = TcpStream::connect(target).await?;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(total == blocks * BLOCK as u64, "tcp reference moved {total} bytes");
    Ok(total as f64 / secs / 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "error".into())).try_init();
    berth_node::install_crypto_provider();
    match Cli::parse().command {
        Bench::Replication { size_mib, rtt_ms, out } => {
            eprintln!("hashing a {size_mib} MiB blob…");
            let digest = blob_digest(size_mib);
            let mut rows = Vec::new();
            for rtt in [0, rtt_ms] {
                let link = (rtt > 0).then(|| LinkSpec::rtt(Duration::from_millis(rtt)));
                eprintln!("rtt {rtt} ms: berth…");
                let berth = berth_copy(size_mib, &digest, link).await?;
                eprintln!("rtt {rtt} ms: tcp…");
                let tcp = tcp_copy(size_mib, link).await?;
                rows.push(serde_json::json!({"rtt_ms": rtt, "berth_mb_s": berth, "tcp_mb_s": tcp, "ratio": berth / tcp}));
            }
            println!("replication of a {size_mib} MiB blob between two nodes (loopback; WAN emulated in userspace)");
            println!("{:>8} {:>14} {:>14} {:>8}", "RTT ms", "berth MB/s", "TCP MB/s", "ratio");
            for r in &rows {
                println!(
                    "{:>8} {:>14.1} {:>14.1} {:>8.2}",
                    r["rtt_ms"],
                    r["berth_mb_s"].as_f64().unwrap_or(0.0),
                    r["tcp_mb_s"].as_f64().unwrap_or(0.0),
                    r["ratio"].as_f64().unwrap_or(0.0)
                );
            }
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let doc = serde_json::json!({"bench": "replication", "size_mib": size_mib, "tcp_window": berth_chaos::wan::kernel_tcp_window(), "rows": rows});
            std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}
