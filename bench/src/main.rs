//! berth benchmarks. Each figure is a ratio against a reference measured in
//! the same run on the same machine; absolute numbers alone mean little on
//! a shared 2-core box.
//!
//! `berth-bench single`: push and pull of one large layer and of an image
//! of many small layers on one berth node and on the CNCF distribution
//! registry, beside the machine's SHA-256, loopback TCP and disk rates.
//!
//! `berth-bench pulls`: many clients pulling the same blob at once, on both
//! registries: throughput, per-client latency, the server's peak RSS.
//!
//! `berth-bench replication`: a blob copied between two nodes by berth's
//! blob transport (QUIC), against a plain TCP stream of the same bytes over
//! the same path, on loopback and across an emulated WAN link (optionally
//! rate-limited, then also as a fraction of the link rate).
//!
//! `berth-bench push-durable`: the time a push takes to be acknowledged
//! durably (every blob on `min_copies` nodes) on 3 nodes, against 1 node,
//! the distribution registry and one TCP copy over an emulated WAN link;
//! see [`durable`].
//!
//! `berth-bench gc-pulls`: pull latency on 3 nodes while garbage
//! collection sweeps many unreferenced blobs, against the same pulls with
//! no collection running; see [`gc`].
//!
//! `berth-bench failover` and `berth-bench fanout`: on real processes, see
//! [`cluster`].
//!
//! `berth-bench scale`: 3 real nodes filled with many repositories, tags
//! and blob records through the API; write rate, read latencies, RSS, data
//! size, a 4th node's catch-up; see [`scale`].

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

mod cluster;
mod durable;
mod gc;
mod registry;
mod scale;
mod scan;

#[derive(Parser)]
#[command(name = "berth-bench")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Registry-token verification per /v2 request: ES256 every time against the node's cache of verified tokens.
    Tokens {
        /// Verifications measured in each mode.
        #[arg(long, default_value_t = 20000)]
        n: u32,
    },
    /// Layer indexing vs one-core gzip decompression, and re-matching 1,000 manifests.
    Scan {
        #[arg(long, default_value_t = 1000)]
        manifests: usize,
        #[arg(long, default_value = "bench-results/scan.json")]
        out: std::path::PathBuf,
    },
    /// One node: push and pull against the distribution registry and the machine's limits.
    Single {
        /// Size of the large layer, MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Layers of the small image.
        #[arg(long, default_value_t = 100)]
        layers: u64,
        /// Size of each small layer, KiB.
        #[arg(long, default_value_t = 256)]
        layer_kib: u64,
        #[arg(long, default_value = "bench-results/single.json")]
        out: std::path::PathBuf,
    },
    /// Manifest commit latency on 3 nodes at 0 and an emulated RTT, and sustained tag writes.
    Metadata {
        #[arg(long, default_value_t = 100)]
        rtt_ms: u64,
        /// Sequential commits measured per RTT.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        #[arg(long, default_value = "bench-results/metadata.json")]
        out: std::path::PathBuf,
    },
    /// Concurrent pulls of one blob against the distribution registry.
    Pulls {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Blob size, MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        #[arg(long, default_value = "bench-results/pulls.json")]
        out: std::path::PathBuf,
    },
    /// One blob between two nodes, against plain TCP over the same path.
    Replication {
        /// Blob size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Round trip of the emulated WAN link, ms.
        #[arg(long, default_value_t = 100)]
        rtt_ms: u64,
        /// Bandwidth of the emulated WAN link, MB/s (0: unlimited).
        #[arg(long, default_value_t = 50)]
        rate_mb: u64,
        /// Where the JSON results go.
        #[arg(long, default_value = "bench-results/replication.json")]
        out: std::path::PathBuf,
    },
    /// Durable push (min_copies) on 3 nodes against 1 node, distribution and one copy over a WAN link.
    PushDurable {
        /// Size of the incompressible layer, MiB.
        #[arg(long, default_value_t = 1024)]
        random_mib: u64,
        /// Pushes per layer and registry; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Round trip of the emulated WAN link, ms.
        #[arg(long, default_value_t = 100)]
        rtt_ms: u64,
        /// Bandwidth of the emulated WAN link, MB/s.
        #[arg(long, default_value_t = 50)]
        rate_mb: u64,
        #[arg(long, default_value = "bench-results/push-durable.json")]
        out: std::path::PathBuf,
    },
    /// Pull p50/p99 on 3 nodes while GC sweeps unreferenced blobs, against the same pulls without GC.
    GcPulls {
        /// Unreferenced blobs (1 KiB each) the collection sweeps.
        #[arg(long, default_value_t = 10000)]
        blobs: usize,
        /// Concurrent pulling clients, spread over the nodes.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seconds of pulls without GC before the collection, and again after it.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value = "bench-results/gc-pulls.json")]
        out: std::path::PathBuf,
    },
    /// Write unavailability after the leader is SIGKILLed (real processes).
    Failover {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// RTT between the three regions, ms.
        #[arg(long, default_value_t = 20)]
        rtt_ms: u64,
        #[arg(long, default_value = "bench-results/failover.json")]
        out: std::path::PathBuf,
    },
    /// One blob to 6 nodes in 3 regions against one copy (real processes).
    Fanout {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        #[arg(long, default_value_t = 100)]
        rtt_ms: u64,
        /// Every link's and every node's uplink bandwidth, MB/s.
        #[arg(long, default_value_t = 50)]
        rate_mb: u64,
        #[arg(long, default_value = "bench-results/fanout.json")]
        out: std::path::PathBuf,
    },
    /// 3 real nodes filled with repositories, tags and blob records by many clients: write rate, read p99, RSS, catch-up.
    Scale {
        /// Repositories (each gets its own blobs and a first tag).
        #[arg(long, default_value_t = 2000)]
        repos: u64,
        /// Tags in all, the repositories' first tags included.
        #[arg(long, default_value_t = 50000)]
        tags: u64,
        /// Blobs of each repository (a config and layers): blob records = repos x this.
        #[arg(long, default_value_t = 2)]
        blobs_per_repo: u64,
        /// Of those, layers that every repository shares (base image layers).
        #[arg(long, default_value_t = 0)]
        shared_layers: u64,
        /// Concurrent HTTP clients, spread over the 3 nodes.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Share of the tags that go to repository 0, whose tag list is paged.
        #[arg(long, default_value_t = 0.1)]
        big_repo_share: f64,
        /// Samples of each read figure (each also stops after 90 s).
        #[arg(long, default_value_t = 2000)]
        samples: usize,
        /// Wait until every node holds every blob before the tags, so the
        /// tag rate is measured without the third copies streaming beside it.
        #[arg(long)]
        settle_before_tags: bool,
        /// Where the nodes' data goes, kept (default: a temporary directory, removed).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[arg(long, default_value = "bench-results/scale.json")]
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
    let raft = MetaConfig::default();
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

/// A join token of `n1`'s cluster.
async fn join_token(n1: &Node) -> anyhow::Result<String> {
    let cluster: berth_raft::ClusterRecord =
        berth_raft::StateRead::get(&n1.running.meta.state(), berth_raft::state::keys::CLUSTER)?.context("cluster record")?;
    let t = berth_node::cluster::join::JoinToken::generate(&berth_node::cluster::pki::fingerprint(&cluster.ca_cert_pem)?);
    n1.running.meta.write(berth_raft::Actor::OPERATOR, berth_node::cluster::join::token_record(&t, Duration::from_secs(600), None)).await?;
    Ok(t.to_string())
}

/// Commit latency (ms, each write alone) and sustained tag writes per
/// second, on 3 nodes whose peer links all have `link`.
async fn metadata_figures(link: Option<LinkSpec>, writes: usize) -> anyhow::Result<(Vec<f64>, f64)> {
    use berth_raft::command::{ManifestRecord, MetaCommand};
    let dir = tempfile::tempdir()?;
    let n1 = node(&dir.path().join("n1"), "bench-a", link, None).await?;
    let token = join_token(&n1).await?;
    let seed = n1.running.peer_addr.to_string();
    let mut others = Vec::new();
    for (i, region) in [(2, "bench-b"), (3, "bench-c")] {
        others.push(node(&dir.path().join(format!("n{i}")), region, link, Some((&seed, &token))).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while n1.running.meta.view().voters.len() < 3 {
        anyhow::ensure!(Instant::now() < deadline, "the three nodes never became voters: {:?}", n1.running.meta.view());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = n1.running.meta.clone();
    // Manifests are stored only in a repository of a namespace that exists.
    let org = berth_raft::command::OrgRecord { name: "bench".into(), email: None, created_at_ms: 0 };
    meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Identity(berth_raft::command::IdentityCommand::CreateOrg { org, owner: None })).await?;
    let repo = berth_raft::command::RepositoryRecord::new("bench/meta", 0);
    meta.write(berth_raft::Actor::OPERATOR, MetaCommand::Identity(berth_raft::command::IdentityCommand::CreateRepository(repo))).await?;
    let manifest = |i: usize| {
        let bytes = format!("{{\"schemaVersion\":2,\"bench\":{i}}}").into_bytes();
        ManifestRecord {
            repo: "bench/meta".into(),
            digest: Digest::sha256_of(&bytes),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes,
            blobs: vec![],
            children: vec![],
            subject: None,
            pushed_at_ms: i as u64,
        }
    };
    let mut lat = Vec::with_capacity(writes);
    for i in 0..writes {
        let t = Instant::now();
        let done = meta.write(berth_raft::Actor::OPERATOR, MetaCommand::PutManifest { record: manifest(i), tag: Some(format!("t{i}")) }).await?;
        anyhow::ensure!(done == berth_raft::command::MetaResponse::Done, "manifest {i} not stored: {done:?}");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Sustained: 64 writers moving tags for 5 s.
    let target = manifest(0).digest;
    let stop = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (meta, target) = (meta.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let cmd = MetaCommand::SetTag { repo: "bench/meta".into(), tag: format!("w{w}"), digest: target.clone(), pushed_at_ms: n, if_current: None };
                if meta.write(berth_raft::Actor::OPERATOR, cmd).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    for n in others {
        n.running.shutdown().await;
    }
    n1.running.shutdown().await;
    Ok((lat, total as f64 / 5.0))
}

/// MB/s of berth copying a `blocks` MiB blob from node 1 to node 2.
async fn berth_copy(blocks: u64, digest: &Digest, link: Option<LinkSpec>) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let n1 = node(&dir.path().join("n1"), "bench-a", link, None).await?;
    let token = join_token(&n1).await?;
    let seed = n1.running.peer_addr.to_string();
    let n2 = node(&dir.path().join("n2"), "bench-b", link, Some((&seed, &token))).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !n1.running.meta.view().members.contains(&n2.running.config.node_id) {
        anyhow::ensure!(Instant::now() < deadline, "node 2 never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the copy being measured: no background replication of this namespace.
    n1.running
        .meta
        .write(
            berth_raft::Actor::OPERATOR,
            berth_raft::MetaCommand::SetPlacement { namespace: "bench".into(), placement: berth_raft::command::Placement::OnDemand },
        )
        .await?;

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

/// MB/s of the same bytes on one QUIC stream between two of berth's
/// transports (the nodes' TLS, windows and datagram ceiling), memory to
/// memory over the same path: what the QUIC engine carries here by itself,
/// with no blob store (no disk, no SHA-256) on either end.
async fn quic_copy(blocks: u64, link: Option<LinkSpec>) -> anyhow::Result<f64> {
    use berth_node::cluster::pki;
    use berth_replication::transport::Transport;
    let ca = pki::new_ca("bench-quic")?;
    let bind = |id: u64| -> anyhow::Result<Transport> {
        Ok(Transport::bind(id, "127.0.0.1:0".parse()?, &pki::new_node_tls(&ca, id)?, &Default::default(), Default::default())?)
    };
    let (sender, receiver) = (bind(1)?, bind(2)?);
    let proxy = match link {
        Some(spec) => Some(WanProxy::start("127.0.0.1:0".parse()?, receiver.local_addr()?, spec).await?),
        None => None,
    };
    let target = proxy.as_ref().map(|p| p.addr).unwrap_or(receiver.local_addr()?);
    let endpoint = receiver.endpoint().clone();
    let reading = tokio::spawn(async move {
        let conn = endpoint.accept().await.context("no connection arrived")?.await?;
        let mut recv = conn.accept_uni().await?;
        let mut total = 0u64;
        while let Some(chunk) = recv.read_chunk(256 << 10, true).await? {
            total += chunk.bytes.len() as u64;
        }
        anyhow::Ok(total)
    });
    let started = Instant::now();
    let conn = sender.connect(2, &target.to_string()).await?;
    let mut send = conn.open_uni().await?;
    for i in 0..blocks {
        send.write_chunk(bytes::Bytes::from(block(i))).await?;
    }
    send.finish()?;
    let total = reading.await??;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(total == blocks * BLOCK as u64, "QUIC reference moved {total} bytes");
    sender.close();
    receiver.close();
    Ok(total as f64 / secs / 1e6)
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
    // Logs go to stderr with the progress lines, so stdout is the result tables alone.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "error".into()))
        .try_init();
    berth_node::install_crypto_provider();
    match Cli::parse().command {
        Bench::Scan { manifests, out } => tokio::task::block_in_place(|| scan::run(manifests, &out))?,
        Bench::Single { size_mib, layers, layer_kib, out } => single(size_mib, layers, layer_kib, &out).await?,
        Bench::Pulls { clients, size_mib, out } => pulls(clients, size_mib, &out).await?,
        Bench::Metadata { rtt_ms, writes, out } => {
            let mut rows = Vec::new();
            println!("manifest commits on 3 voters from the leader; every peer link at the given RTT (userspace proxy)");
            println!("{:>8} {:>10} {:>10} {:>14} {:>18}", "RTT ms", "p50 ms", "p99 ms", "tag writes/s", "p99 / (1.5 RTT+5)");
            for rtt in [0, rtt_ms] {
                eprintln!("rtt {rtt} ms…");
                let link = (rtt > 0).then(|| LinkSpec::rtt(Duration::from_millis(rtt)));
                let (mut lat, rate) = metadata_figures(link, writes).await?;
                let (p50, p99) = (registry::percentile(&mut lat, 50.0), registry::percentile(&mut lat, 99.0));
                let budget = 1.5 * rtt as f64 + 5.0;
                println!("{rtt:>8} {p50:>10.1} {p99:>10.1} {rate:>14.0} {:>18.2}", p99 / budget);
                rows.push(serde_json::json!({"rtt_ms": rtt, "p50_ms": p50, "p99_ms": p99, "tag_writes_per_s": rate, "p99_over_budget": p99 / budget, "met": p99 <= budget}));
            }
            println!("target: commit latency <= 1.5 x quorum RTT + 5 ms");
            write_json(&out, &serde_json::json!({"bench": "metadata", "writes": writes, "rows": rows}))?;
        }
        Bench::PushDurable { random_mib, rounds, rtt_ms, rate_mb, out } => durable::run(random_mib, rounds, rtt_ms, rate_mb, &out).await?,
        Bench::GcPulls { blobs, clients, secs, out } => gc::run(blobs, clients, secs, &out).await?,
        Bench::Failover { runs, rtt_ms, out } => cluster::failover(runs, rtt_ms, &out).await?,
        Bench::Fanout { size_mib, rtt_ms, rate_mb, out } => cluster::fanout(size_mib, rtt_ms, rate_mb, &out).await?,
        Bench::Tokens { n } => tokens(n)?,
        Bench::Scale { repos, tags, blobs_per_repo, shared_layers, clients, big_repo_share, samples, settle_before_tags, dir, out } => {
            scale::run(scale::Opts { repos, tags, blobs_per_repo, shared_layers, clients, big_repo_share, samples, settle_before_tags, dir, out }).await?
        }
        Bench::Replication { size_mib, rtt_ms, rate_mb, out } => {
            eprintln!("hashing a {size_mib} MiB blob…");
            let digest = blob_digest(size_mib);
            let mut rows = Vec::new();
            for rtt in [0, rtt_ms] {
                let rate = (rtt > 0 && rate_mb > 0).then_some(rate_mb * 1_000_000);
                let link = (rtt > 0).then(|| {
                    let l = LinkSpec::rtt(Duration::from_millis(rtt));
                    rate.map(|r| l.with_rate(r)).unwrap_or(l)
                });
                eprintln!("rtt {rtt} ms: berth…");
                let berth = berth_copy(size_mib, &digest, link).await?;
                eprintln!("rtt {rtt} ms: quic alone…");
                let quic = quic_copy(size_mib, link).await?;
                eprintln!("rtt {rtt} ms: tcp…");
                let tcp = tcp_copy(size_mib, link).await?;
                let of_link = rate.map(|r| berth * 1e6 / r as f64);
                rows.push(serde_json::json!({
                    "rtt_ms": rtt, "link_mb_s": rate.map(|r| r / 1_000_000), "berth_mb_s": berth, "quic_mb_s": quic, "tcp_mb_s": tcp,
                    "ratio": berth / tcp, "quic_ratio": quic / tcp, "of_link_rate": of_link,
                }));
            }
            println!("replication of a {size_mib} MiB blob between two nodes (loopback; WAN emulated in userspace)");
            println!(
                "{:>8} {:>10} {:>12} {:>12} {:>10} {:>10} {:>10} {:>11}",
                "RTT ms", "link MB/s", "berth MB/s", "QUIC MB/s", "TCP MB/s", "berth/TCP", "QUIC/TCP", "berth/link"
            );
            for r in &rows {
                let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
                let link = r["link_mb_s"].as_u64().map(|l| l.to_string()).unwrap_or_else(|| "-".into());
                let of_link = r["of_link_rate"].as_f64().map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
                println!(
                    "{:>8} {link:>10} {:>12.1} {:>12.1} {:>10.1} {:>10.2} {:>10.2} {of_link:>11}",
                    r["rtt_ms"],
                    f("berth_mb_s"),
                    f("quic_mb_s"),
                    f("tcp_mb_s"),
                    f("ratio"),
                    f("quic_ratio")
                );
            }
            if let Some(v) = rows.last().and_then(|r| r["of_link_rate"].as_f64()) {
                println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
                verdict("replication / emulated link rate", v, 0.8, true);
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

fn write_json(out: &std::path::Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(doc)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// One row of a result table: a ratio, the target it is held to, met or short.
fn verdict(name: &str, ratio: f64, target: f64, higher_is_better: bool) -> serde_json::Value {
    let met = if higher_is_better { ratio >= target } else { ratio <= target };
    println!("{name:<52} {ratio:>8.2} {:>10} {:>6}", format!("{}{target}", if higher_is_better { ">= " } else { "<= " }), if met { "met" } else { "short" });
    serde_json::json!({"figure": name, "value": ratio, "target": target, "met": met})
}

/// The registry figures of one server: MB/s for the large push and warm
/// pull, seconds for the small image's push and pull.
async fn registry_figures(s: &registry::Server, data: &registry::Data, size: u64, layers: u64, layer: u64) -> anyhow::Result<serde_json::Value> {
    let c = registry::Client::new();
    let digest = data.digest(size, 1);
    eprintln!("{}: push {} MiB…", s.name, size >> 20);
    let t = Instant::now();
    c.push_blob(s, "bench/big", data, size, 1, &digest).await?;
    let push = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    c.pull_blob(s, "bench/big", &digest).await?;
    let t = Instant::now();
    let n = c.pull_blob(s, "bench/big", &digest).await?;
    anyhow::ensure!(n == size, "{} served {n} of {size} bytes", s.name);
    let pull = size as f64 / t.elapsed().as_secs_f64() / 1e6;

    eprintln!("{}: an image of {layers} layers…", s.name);
    let digests: Vec<String> = (0..=layers).map(|i| data.digest(layer, 100 + i)).collect();
    let t = Instant::now();
    for (i, d) in digests.iter().enumerate() {
        c.push_blob(s, "bench/small", data, layer, 100 + i as u64, d).await?;
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0], "size": layer},
        "layers": digests[1..].iter().map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer})).collect::<Vec<_>>(),
    }))?;
    c.put_manifest(s, "bench/small", "v1", manifest).await?;
    let small_push = t.elapsed().as_secs_f64();
    let t = Instant::now();
    c.get_manifest(s, "bench/small", "v1").await?;
    for d in &digests {
        c.pull_blob(s, "bench/small", d).await?;
    }
    let small_pull = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({"push_mb_s": push, "pull_mb_s": pull, "small_push_s": small_push, "small_pull_s": small_pull}))
}

async fn single(size_mib: u64, layers: u64, layer_kib: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let size = (size_mib << 20).max(registry::CHUNK);
    let data = registry::Data::new();
    eprintln!("machine limits…");
    let sha = registry::sha256_rate(&data, size);
    let tcp = registry::tcp_rate(&data, size).await?;
    let scratch = tempfile::tempdir()?;
    let (disk_write, disk_read) = registry::disk_rates(scratch.path(), &data, size)?;
    let b = {
        let s = registry::start_berth().await?;
        registry_figures(&s, &data, size, layers, layer_kib << 10).await?
    };
    let d = {
        let s = registry::start_distribution().await?;
        registry_figures(&s, &data, size, layers, layer_kib << 10).await?
    };
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!("one node, one streaming client; {size_mib} MiB layer; image of {layers} x {layer_kib} KiB layers");
    println!("machine: SHA-256 one core {sha:.0} MB/s, loopback TCP {tcp:.0} MB/s, disk write+fsync {disk_write:.0} MB/s, read {disk_read:.0} MB/s");
    println!("{:<28} {:>12} {:>14}", "", "berth", "distribution");
    println!("{:<28} {:>12.0} {:>14.0}", "push MB/s", f(&b, "push_mb_s"), f(&d, "push_mb_s"));
    println!("{:<28} {:>12.0} {:>14.0}", "warm pull MB/s", f(&b, "pull_mb_s"), f(&d, "pull_mb_s"));
    println!("{:<28} {:>12.2} {:>14.2}", "small image push s", f(&b, "small_push_s"), f(&d, "small_push_s"));
    println!("{:<28} {:>12.2} {:>14.2}", "small image pull s", f(&b, "small_pull_s"), f(&d, "small_pull_s"));
    println!();
    println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
    let verdicts = vec![
        verdict("push / distribution push", f(&b, "push_mb_s") / f(&d, "push_mb_s"), 3.0, true),
        verdict("push / one-core SHA-256", f(&b, "push_mb_s") / sha, 0.6, true),
        // Every pushed byte is hashed and written durably: the slower of the two bounds a push.
        verdict("push / disk write+fsync", f(&b, "push_mb_s") / disk_write, 0.8, true),
        verdict("warm pull / distribution warm pull", f(&b, "pull_mb_s") / f(&d, "pull_mb_s"), 1.0, true),
        verdict("warm pull / loopback TCP", f(&b, "pull_mb_s") / tcp, 0.7, true),
        verdict("small image push: distribution time / berth time", f(&d, "small_push_s") / f(&b, "small_push_s"), 1.0, true),
        verdict("small image pull: distribution time / berth time", f(&d, "small_pull_s") / f(&b, "small_pull_s"), 1.0, true),
    ];
    let doc = serde_json::json!({
        "bench": "single", "size_mib": size_mib, "layers": layers, "layer_kib": layer_kib,
        "machine": {"sha256_mb_s": sha, "tcp_mb_s": tcp, "disk_write_fsync_mb_s": disk_write, "disk_read_mb_s": disk_read},
        "berth": b, "distribution": d, "ratios": verdicts,
    });
    write_json(out, &doc)
}

async fn pulls(clients: usize, size_mib: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let size = size_mib << 20;
    let data = registry::Data::new();
    let mut results = serde_json::Map::new();
    for which in ["berth", "distribution"] {
        let s = std::sync::Arc::new(if which == "berth" { registry::start_berth().await? } else { registry::start_distribution().await? });
        let c = std::sync::Arc::new(registry::Client::new());
        let digest = data.digest(size, 7);
        c.push_blob(&s, "bench/many", &data, size, 7, &digest).await?;
        c.pull_blob(&s, "bench/many", &digest).await?;
        eprintln!("{which}: {clients} clients pulling {size_mib} MiB…");
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (s, c, digest) = (s.clone(), c.clone(), digest.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let n = c.pull_blob(&s, "bench/many", &digest).await?;
                anyhow::ensure!(n == size, "short pull: {n} bytes");
                Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64())
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await??);
        }
        let wall = t.elapsed().as_secs_f64();
        let rss = s.peak_rss_mib();
        let (p50, p99) = (registry::percentile(&mut times, 50.0), registry::percentile(&mut times, 99.0));
        results.insert(which.into(), serde_json::json!({"mb_s": (clients as u64 * size) as f64 / wall / 1e6, "p50_s": p50, "p99_s": p99, "peak_rss_mib": rss}));
    }
    let f = |w: &str, k: &str| results[w][k].as_f64().unwrap_or(0.0);
    println!("{clients} clients pulling the same {size_mib} MiB blob at once");
    println!("{:<22} {:>10} {:>10} {:>10} {:>14}", "", "MB/s", "p50 s", "p99 s", "peak RSS MiB");
    for w in ["berth", "distribution"] {
        println!("{w:<22} {:>10.0} {:>10.2} {:>10.2} {:>14.0}", f(w, "mb_s"), f(w, "p50_s"), f(w, "p99_s"), f(w, "peak_rss_mib"));
    }
    println!();
    let verdicts = vec![
        verdict("berth peak RSS MiB", f("berth", "peak_rss_mib"), 256.0, false),
        verdict("throughput / distribution throughput", f("berth", "mb_s") / f("distribution", "mb_s"), 1.0, true),
    ];
    write_json(out, &serde_json::json!({"bench": "pulls", "clients": clients, "size_mib": size_mib, "results": results, "ratios": verdicts}))
}

/// One registry token verified `n` times as every /v2 request of a pull
/// would: ES256 each time (before), and through the node's cache of
/// verified tokens (the claims still checked on each use).
fn tokens(n: u32) -> anyhow::Result<()> {
    use berth_node::identity::jwt;
    let key = jwt::SigningKey::from_pem("bench", &jwt::new_signing_key_pem()?).map_err(|e| anyhow::anyhow!(e))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims = jwt::Claims {
        iss: jwt::ISSUER.into(),
        sub: "bench".into(),
        aud: "cluster".into(),
        exp: now + 300,
        nbf: now,
        iat: now,
        jti: "bench".into(),
        access: vec![jwt::Grant { kind: "repository".into(), name: "team/app".into(), actions: vec!["pull".into()] }],
        berth_kind: "user".into(),
        berth_app: None,
        berth_gen: 0,
    };
    let token = key.sign(&claims);
    let t = Instant::now();
    for _ in 0..n {
        jwt::verify(&token, key.public_key(), "cluster", now).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let every = t.elapsed().as_secs_f64() / n as f64;
    let cache = jwt::VerifiedTokens::new();
    let t = Instant::now();
    for _ in 0..n {
        cache.verify(&token, key.public_key(), "cluster", now).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let cached = t.elapsed().as_secs_f64() / n as f64;
    println!("token verification, {n} each, one core:");
    println!("  ES256 every request: {:>8.1} µs", every * 1e6);
    println!("  cached (hit):        {:>8.1} µs", cached * 1e6);
    println!("  ratio:               {:>8.1}x", every / cached);
    println!("  a 10-layer pull (12 requests): {:.0} µs before, {:.0} µs with the cache", 12.0 * every * 1e6, (every + 11.0 * cached) * 1e6);
    Ok(())
}
