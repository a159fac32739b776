//! Benchmarks on a cluster of real `berth` processes (the release binary
//! beside this one) behind the chaos crate's WAN emulator.
//!
//! - `failover`: write unavailability after a leader SIGKILL, as a multiple
//!   of the election timeout.
//! - `fanout`: one large blob pushed to one node of a 6-node, 3-region
//!   cluster until every node holds it, against the time one copy takes
//!   over the same links on a 2-node cluster.

use std::time::{Duration, Instant};

use berth_chaos::cluster::{Cluster, Node, Topology, PASSWORD};
use berth_common::Digest;
use berth_raft::MetaConfig;

use crate::{blob_digest, block, verdict, write_json, BLOCK};

/// Tag moves through `base` until `stop`; the instants of the acknowledged ones.
async fn write_loop(base: String, digest: Digest, stop: Instant) -> Vec<Instant> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let manifest = manifest_bytes(&digest);
    let mut acks = Vec::new();
    let mut n = 0u64;
    while Instant::now() < stop {
        n += 1;
        let r = http
            .put(format!("{base}/v2/bench/failover/manifests/t{}", n % 8))
            .basic_auth("admin", Some(PASSWORD))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 201 => acks.push(Instant::now()),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    acks
}

/// A manifest with one (config) blob, `digest`, already pushed.
fn manifest_bytes(config: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [],
    }))
    .expect("encode manifest")
}

async fn push_small_blob(base: &str, repo: &str, bytes: &[u8]) -> anyhow::Result<Digest> {
    let d = Digest::sha256_of(bytes);
    let r = reqwest::Client::new()
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .basic_auth("admin", Some(PASSWORD))
        .body(bytes.to_vec())
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "blob upload answered {}", r.status());
    Ok(d)
}

/// Longest time without an acknowledged write in `[from, to]`.
fn longest_gap(from: Instant, to: Instant, acks: &mut [Instant]) -> Duration {
    acks.sort();
    let mut last = from;
    let mut longest = Duration::ZERO;
    for t in acks.iter().copied().chain(std::iter::once(to)) {
        longest = longest.max(t.saturating_duration_since(last));
        last = last.max(t);
    }
    longest
}

pub async fn failover(runs: usize, rtt_ms: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let raft = MetaConfig::default();
    let election = Duration::from_millis(raft.election_max_ms);
    let mut c = Cluster::start(Topology::regions(&["eu", "us", "ap"], Duration::from_millis(rtt_ms))).await;
    let config = push_small_blob(&c.nodes[0].base(), "bench/failover", b"{}").await?;
    let mut gaps = Vec::new();
    for run in 0..runs {
        let leader = c.wait_leader(Duration::from_secs(30)).await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
        // Writers on the surviving nodes only: what the cluster offers, not the dead node.
        let survivors: Vec<String> = c.nodes.iter().filter(|n| n.index != leader).map(|n| n.base()).collect();
        let start = Instant::now();
        let stop = start + Duration::from_secs(4) + 4 * election;
        let writers: Vec<_> =
            survivors.iter().flat_map(|b| (0..2).map(move |_| b.clone())).map(|b| tokio::spawn(write_loop(b, config.clone(), stop))).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = Instant::now();
        c.kill9(leader);
        let mut acks = Vec::new();
        for w in writers {
            acks.extend(w.await?);
        }
        let before = acks.iter().filter(|t| **t < killed).count();
        let gap = longest_gap(start, stop, &mut acks);
        eprintln!("run {}: killed leader node {leader}; {before} writes before, longest gap {:.2} s", run + 1, gap.as_secs_f64());
        gaps.push(gap.as_secs_f64());
        c.restart(leader);
        c.wait_ready(leader, Duration::from_secs(30)).await;
        c.wait_formed(3, Duration::from_secs(60)).await;
    }
    let worst = gaps.iter().copied().fold(0.0, f64::max);
    let mut sorted = gaps.clone();
    let median = crate::registry::percentile(&mut sorted, 50.0);
    println!("write unavailability after SIGKILL of the leader; 3 voters in 3 regions {rtt_ms} ms apart; election timeout {} ms (max)", raft.election_max_ms);
    println!("runs: {}", gaps.iter().map(|g| format!("{g:.2} s")).collect::<Vec<_>>().join(", "));
    println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
    let v = vec![
        verdict("median unavailability / election timeout", median / election.as_secs_f64(), 2.0, false),
        verdict("worst unavailability / election timeout", worst / election.as_secs_f64(), 2.0, false),
    ];
    write_json(out, &serde_json::json!({"bench": "failover", "rtt_ms": rtt_ms, "election_max_ms": raft.election_max_ms, "gaps_s": gaps, "ratios": v}))
}

/// Seconds from the start of a streamed push of `blocks` MiB to `nodes[0]`
/// until the push was acknowledged, and until every node in the cluster
/// holds a copy. A node holds it once the committed file is in its blob
/// directory (a copy is renamed there only after it was hashed and
/// synced), however it got there: the push's own pipelined second copy,
/// which the acknowledgement already waits for, or a fetch along a chain.
async fn spread(c: &Cluster, blocks: u64, digest: &Digest) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let body = futures::stream::iter((0..blocks).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(block(i)))));
    let r = reqwest::Client::new()
        .post(format!("{}/v2/bench/fanout/blobs/uploads/?digest={digest}", c.nodes[0].base()))
        .basic_auth("admin", Some(PASSWORD))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "upload answered {}", r.status());
    let pushed = started.elapsed().as_secs_f64();
    eprintln!("  pushed to node 0 in {pushed:.1} s");
    let size = blocks * BLOCK as u64;
    let holds = |n: &Node| std::fs::metadata(berth_replication::store::blob_path(&n.dir.join("blobs"), digest)).is_ok_and(|m| m.len() == size);
    let mut pending: Vec<usize> = (0..c.nodes.len()).collect();
    let deadline = started + Duration::from_secs(1800);
    while !pending.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "nodes {pending:?} never got the blob");
        pending.retain(|&i| {
            let held = holds(&c.nodes[i]);
            if held {
                eprintln!("  node {i} ({}) has it at {:.1} s", c.nodes[i].region, started.elapsed().as_secs_f64());
            }
            !held
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let done = started.elapsed().as_secs_f64();
    // Who copied from whom: the relay chains as they ran.
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        let text = http.get(format!("{}/metrics", n.base())).send().await?.text().await?;
        let from: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("berth_peer_fetched_bytes_total{"))
            .filter_map(|l| {
                let peer = l.split("peer=\"").nth(1)?.split('"').next()?;
                let bytes: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some(format!("node {peer}: {:.0} MiB", bytes / BLOCK as f64))
            })
            .collect();
        eprintln!("  node {i} (id {}) fetched from {}", n.id.unwrap_or(0), from.join(", "));
    }
    Ok((pushed, done))
}

pub async fn fanout(size_mib: u64, rtt_ms: u64, rate_mb: u64, out: &std::path::Path) -> anyhow::Result<()> {
    eprintln!("hashing a {size_mib} MiB blob…");
    let digest = blob_digest(size_mib);
    let rate = rate_mb * 1_000_000;
    let topology = |regions: &[&str], per_region: usize| {
        let mut t = Topology::regions(regions, Duration::from_millis(rtt_ms));
        t.regions.iter_mut().for_each(|r| r.1 = per_region);
        t.rate = Some(rate);
        t.egress = Some(rate);
        t
    };
    eprintln!("one copy: 2 nodes in 2 regions…");
    let one = {
        let c = Cluster::start(topology(&["eu", "us"], 1)).await;
        spread(&c, size_mib, &digest).await?
    };
    eprintln!("fan-out: 6 nodes in 3 regions…");
    let six = {
        let c = Cluster::start(topology(&["eu", "us", "ap"], 2)).await;
        spread(&c, size_mib, &digest).await?
    };
    let size = size_mib as f64 * BLOCK as f64;
    // Pushes are durable: the push to the 2-node cluster makes the one copy
    // while the client sends (its acknowledgement waits for that copy), so
    // one copy's time is that push's. The fan-out to the other nodes starts
    // at its push's acknowledgement, when the blob's record commits and the
    // other nodes learn of it; end to end it adds to that push.
    let one_copy = one.1;
    let after_ack = six.1 - six.0;
    println!("a {size_mib} MiB blob pushed to one node until every node holds it; {rtt_ms} ms RTT between regions, every node's uplink and every link {rate_mb} MB/s");
    println!("{:<28} {:>10} {:>14} {:>14} {:>12}", "", "push s", "after ack s", "all copies s", "copy MB/s");
    println!("{:<28} {:>10.1} {:>14.1} {:>14.1} {:>12.1}", "one copy (2 nodes)", one.0, one.1 - one.0, one.1, size / one_copy / 1e6);
    println!("{:<28} {:>10.1} {:>14.1} {:>14.1} {:>12.1}", "fan-out (6 nodes, 3 regions)", six.0, after_ack, six.1, size / after_ack / 1e6);
    println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
    let v = vec![
        verdict("fan-out after the ack / one copy", after_ack / one_copy, 2.0, false),
        verdict("whole fan-out push / one-copy push (end to end)", six.1 / one.1, 2.0, false),
        verdict("one copy / link rate", size / one_copy / rate as f64, 0.8, true),
    ];
    write_json(
        out,
        &serde_json::json!({"bench": "fanout", "size_mib": size_mib, "rtt_ms": rtt_ms, "rate_mb_s": rate_mb, "one_copy": {"push_s": one.0, "done_s": one.1}, "fanout": {"push_s": six.0, "done_s": six.1}, "ratios": v}),
    )
}
