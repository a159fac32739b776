//! `gc-pulls` (issue 25, item 6): pull latency while garbage collection
//! sweeps many unreferenced blobs, against the same pulls with no
//! collection running.
//!
//! Three in-process nodes (one per region, as `push-durable` starts them)
//! take one small image, which the pulls read, and `--blobs` small blobs
//! uploaded on their own (monolithic `POST ?digest=`), which no manifest
//! references: garbage once the grace period is over. Placement is as
//! shipped (everywhere), so every node holds a copy of each before the
//! collection starts.
//!
//! `--clients` pullers, each bound to one node in turn, loop over a
//! manifest GET and a layer GET for the whole run. Their requests are
//! sorted by when each started into windows: without GC (`--secs` before
//! the collection and `--secs` after it, pooled, so a drift of the shared
//! machine's load hits both sides alike) and during GC (from the
//! collection's start to its end). The collection is what each node's GC
//! loop does, run with its clock a grace period ahead
//! ([`berth_node::registry::gc::collect_at`]): the leader's (forget the
//! blobs, delete its copies), then the two others' at once (delete theirs).

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use berth_common::Digest;
use berth_node::registry::gc::{collect_at, GcReport, GcStats};
use sha2::Digest as _;

use crate::durable::{three_nodes, Running};
use crate::{registry, verdict, write_json};

/// The grace period the collection is run with; its clock is put this far
/// (and a second) ahead, so every blob uploaded here is old enough.
const GRACE: Duration = Duration::from_secs(3600);

/// Which window a request started in.
const WARMUP: u8 = 0;
const BEFORE: u8 = 1;
const DURING: u8 = 2;
const AFTER: u8 = 3;
const DONE: u8 = 4;

const REPO: &str = "bench/app";
const GARBAGE_REPO: &str = "bench/garbage";
const LAYERS: usize = 4;
const LAYER_BYTES: usize = 64 << 10;
const GARBAGE_BYTES: usize = 1 << 10;

/// One pull request: its window, whether it was a manifest, its latency.
type Sample = (u8, bool, f64);

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: String) -> Http {
        Http { client: reqwest::Client::new(), base }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).basic_auth("admin", Some("bench-password"))
    }

    /// One monolithic upload: `POST ?digest=` with the bytes.
    async fn upload(&self, repo: &str, bytes: Vec<u8>) -> anyhow::Result<Digest> {
        let digest = Digest::sha256_of(&bytes);
        let r = self.req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}")).body(bytes).send().await?;
        anyhow::ensure!(r.status().as_u16() == 201, "upload answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        Ok(digest)
    }

    /// GETs `path` and reads the whole body; the bytes read.
    async fn get(&self, path: &str) -> anyhow::Result<usize> {
        let r = self.req(reqwest::Method::GET, path).header("accept", "application/vnd.oci.image.manifest.v1+json").send().await?;
        anyhow::ensure!(r.status().is_success(), "GET {path} answered {}", r.status());
        Ok(r.bytes().await?.len())
    }
}

/// Bytes of `n` made from `seed`, different for each seed.
fn bytes_of(seed: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = sha2::Sha256::digest(seed.as_bytes()).to_vec();
    while out.len() < n {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(&block).to_vec();
    }
    out.truncate(n);
    out
}

/// Pushes the image the pulls read: a config, `LAYERS` layers, a manifest
/// tagged `v1`. Returns the layers' digests.
async fn push_image(http: &Http) -> anyhow::Result<Vec<Digest>> {
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}))?;
    let config_digest = http.upload(REPO, config.clone()).await?;
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        layers.push(http.upload(REPO, bytes_of(&format!("layer {i}"), LAYER_BYTES)).await?);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": LAYER_BYTES})).collect::<Vec<_>>(),
    }))?;
    let r = http
        .req(reqwest::Method::PUT, &format!("/v2/{REPO}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "PUT manifest answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    Ok(layers)
}

/// Uploads `n` blobs that nothing references, `par` at a time.
async fn push_garbage(http: Arc<Http>, n: usize, par: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..par {
        let (http, next) = (http.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                http.upload(GARBAGE_REPO, bytes_of(&format!("garbage {i}"), GARBAGE_BYTES)).await.with_context(|| format!("garbage blob {i}"))?;
                if (i + 1) % 1000 == 0 {
                    eprintln!("  {} garbage blobs uploaded", i + 1);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until every node holds `want` files (or their count stops
/// growing for 10 s: then the shortfall is reported and the run goes on).
async fn settle(nodes: &[&crate::Node], want: usize) -> anyhow::Result<Vec<usize>> {
    let deadline = Instant::now() + Duration::from_secs(900);
    let (mut last, mut since) = (Vec::new(), Instant::now());
    loop {
        let mut counts = Vec::new();
        for n in nodes {
            counts.push(n.running.replicator.store().list().await?.len());
        }
        if counts.iter().all(|c| *c >= want) {
            return Ok(counts);
        }
        if counts != last {
            eprintln!("  local copies per node: {counts:?} of {want}");
            (last, since) = (counts, Instant::now());
        } else if since.elapsed() > Duration::from_secs(10) || Instant::now() > deadline {
            eprintln!("  copies stopped at {counts:?} of {want}; going on");
            return Ok(counts);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A puller: node `base`, a manifest then a layer, until the phase is DONE.
async fn puller(http: Http, layers: Vec<Digest>, phase: Arc<AtomicU8>, first: usize) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut i = first;
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == DONE {
            return Ok(samples);
        }
        let manifest = i.is_multiple_of(2);
        let path = if manifest { format!("/v2/{REPO}/manifests/v1") } else { format!("/v2/{REPO}/blobs/{}", layers[(i / 2) % layers.len()]) };
        let t = Instant::now();
        http.get(&path).await?;
        samples.push((p, manifest, t.elapsed().as_secs_f64() * 1000.0));
        i += 1;
    }
}

/// p50 and p99 (ms) of the samples of `windows` that `keep` keeps, and how many.
fn figures(samples: &[Sample], windows: &[u8], keep: impl Fn(bool) -> bool) -> (usize, f64, f64) {
    let mut v: Vec<f64> = samples.iter().filter(|(w, m, _)| windows.contains(w) && keep(*m)).map(|s| s.2).collect();
    (v.len(), registry::percentile(&mut v, 50.0), registry::percentile(&mut v, 99.0))
}

pub async fn run(blobs: usize, clients: usize, secs: u64, out: &Path) -> anyhow::Result<()> {
    eprintln!("3 nodes…");
    let running = three_nodes(None).await?;
    let Running::Berth { nodes, .. } = &running else { unreachable!("three_nodes starts berth") };
    let bases: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.running.http_addr)).collect();
    let http = Arc::new(Http::new(bases[0].clone()));
    eprintln!("the image pulls read…");
    let layers = push_image(&http).await?;
    eprintln!("{blobs} unreferenced blobs…");
    let t = Instant::now();
    push_garbage(http.clone(), blobs, 16).await?;
    eprintln!("  uploaded in {:.1} s; waiting for every node's copies…", t.elapsed().as_secs_f64());
    let all: Vec<&crate::Node> = nodes.iter().collect();
    let copies_before = settle(&all, blobs + LAYERS + 1).await?;

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = Http::new(bases[c % bases.len()].clone());
        tasks.push(tokio::spawn(puller(http, layers.clone(), phase.clone(), c)));
    }
    eprintln!("pulls: warm-up, then {secs} s without GC…");
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(BEFORE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;

    eprintln!("pulls during GC…");
    let leader = nodes.iter().position(|n| n.running.meta.is_leader()).context("no leader")?;
    let now = SystemTime::now() + GRACE + Duration::from_secs(1);
    let stats = GcStats::default();
    phase.store(DURING, Ordering::Relaxed);
    let started = Instant::now();
    let lead = &nodes[leader].running;
    let on_leader = collect_at(&lead.meta, lead.replicator.store(), now, GRACE, &stats).await;
    let leader_s = started.elapsed().as_secs_f64();
    let others: Vec<GcReport> = futures::future::join_all(
        nodes.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, n)| collect_at(&n.running.meta, n.running.replicator.store(), now, GRACE, &stats)),
    )
    .await;
    let total_s = started.elapsed().as_secs_f64();
    phase.store(AFTER, Ordering::Relaxed);
    eprintln!("  swept {} blobs in {leader_s:.1} s on the leader, {total_s:.1} s in all; {secs} s without GC again…", on_leader.swept);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    phase.store(DONE, Ordering::Relaxed);
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let copies_after = settle(&all, 0).await?;
    running.stop().await;

    let deleted_others: u64 = others.iter().map(|r| r.deleted).sum();
    let without = [BEFORE, AFTER];
    let rows = [("all pulls", None), ("manifest GETs", Some(true)), ("layer GETs (64 KiB)", Some(false))];
    println!(
        "gc-pulls: 3 in-process nodes, {clients} clients (manifest and layer GETs in turn, spread over the nodes); GC of {blobs} unreferenced {} KiB blobs",
        GARBAGE_BYTES >> 10
    );
    println!("{:<22} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10}", "", "without: n", "p50 ms", "p99 ms", "during: n", "p50 ms", "p99 ms");
    let mut json_rows = Vec::new();
    for (name, kind) in rows {
        let keep = |m: bool| kind.is_none_or(|k| k == m);
        let (n0, p50_0, p99_0) = figures(&samples, &without, keep);
        let (n1, p50_1, p99_1) = figures(&samples, &[DURING], keep);
        println!("{name:<22} {n0:>14} {p50_0:>10.2} {p99_0:>10.2} {n1:>14} {p50_1:>10.2} {p99_1:>10.2}");
        json_rows.push(
            serde_json::json!({"pulls": name, "without": {"n": n0, "p50_ms": p50_0, "p99_ms": p99_0}, "during": {"n": n1, "p50_ms": p50_1, "p99_ms": p99_1}}),
        );
    }
    println!(
        "sweep: {:.2} s on the leader ({} blobs swept, {} local copies deleted), {total_s:.2} s with the other two nodes' deletes ({deleted_others} copies)",
        leader_s, on_leader.swept, on_leader.deleted
    );
    println!("local copies per node: {copies_before:?} before, {copies_after:?} after");
    println!();
    println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
    let (_, _, p99_without) = figures(&samples, &without, |_| true);
    let (_, _, p99_during) = figures(&samples, &[DURING], |_| true);
    let verdicts = vec![verdict("pull p99 during GC / without GC", p99_during / p99_without, 1.1, false)];
    let doc = serde_json::json!({
        "bench": "gc-pulls", "nodes": 3, "blobs": blobs, "clients": clients, "secs": secs,
        "sweep": {"leader_s": leader_s, "total_s": total_s, "swept": on_leader.swept, "deleted_leader": on_leader.deleted, "deleted_others": deleted_others},
        "copies_before": copies_before, "copies_after": copies_after,
        "rows": json_rows, "ratios": verdicts,
    });
    write_json(out, &doc)
}
