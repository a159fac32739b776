//! `push-durable` (issue 24, "durable pushes at the speed of one copy").
//!
//! berth acknowledges a push only once every blob is on `min_copies` nodes
//! (2 on a multi-node cluster): the manifest PUT waits for the second copy.
//! This bench prices that wait. The same layers, salted the same way, are
//! pushed in one run to:
//!
//! - a 1-node berth (no copy to wait for: the floor of the 3-node push),
//! - a 3-node berth in 3 regions, `min_copies` 2 and placement as shipped,
//! - the CNCF distribution registry (one copy on one disk),
//! - the 3-node berth again with every peer link behind an emulated WAN link,
//!   held against one plain TCP stream of the layer over that same link.
//!
//! A push is what a client does: POST an upload, PATCH the whole layer
//! streamed (chunked), PUT `?digest=`, the same for a small config blob, then
//! PUT an OCI manifest; it is timed from the layer's POST to the manifest's
//! 201. Every round pushes a layer never seen before (a new salt), and on a
//! cluster the next round starts only once the previous layer is on all
//! three nodes, so background copies never overlap the push measured.
//!
//! Layers: a gzip tarball of a Debian bookworm minbase rootfs (made with
//! debootstrap and cached in `~/.cache/berth-debian`), and an incompressible
//! layer of `--random-mib`.
//!
//! Disk: a registry keeps every round's layers until it is stopped, so a
//! 3-node cluster holds 3 × rounds × (both layers) at once in the temporary
//! directory, about 10 GB at the defaults.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_chaos::wan::LinkSpec;
use berth_common::Digest;
use bytes::Bytes;
use futures::stream::BoxStream;
use sha2::Digest as _;

use crate::{join_token, node, registry, tcp_copy, verdict, write_json, Node, BLOCK};

/// What a push round sends as its layer.
enum Source {
    /// A gzip file on disk, streamed from it.
    Gzip(PathBuf),
    /// Incompressible bytes made in memory, so the client costs no CPU.
    Random(Arc<registry::Data>),
}

struct Layer {
    name: &'static str,
    media_type: &'static str,
    size: u64,
    source: Source,
}

/// Bytes 4..8 of a gzip member are its MTIME, which no decoder checks: a
/// salt written there gives a new digest and keeps the layer a valid gzip
/// of the same tarball, so nothing a registry does with layers (scanning
/// included) sees a broken one.
fn salt_gzip(first: &mut [u8], salt: u64) {
    first[4..8].copy_from_slice(&(salt as u32).to_le_bytes());
}

impl Layer {
    /// The layer of round `salt`, as a stream of 1 MiB pieces.
    fn stream(&self, salt: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
        match &self.source {
            // The random layer is salted like every other bench blob: its first 8 bytes.
            Source::Random(data) => Box::pin(data.stream(self.size, salt)),
            Source::Gzip(path) => {
                let path = path.clone();
                // State: the file (opened on the first poll), whether this is the first piece (the salted one), and whether the stream has ended.
                let start = (None::<tokio::fs::File>, true, false);
                Box::pin(futures::stream::unfold(start, move |(file, first, done)| {
                    let path = path.clone();
                    async move {
                        if done {
                            return None;
                        }
                        let mut file = match file {
                            Some(f) => f,
                            None => match tokio::fs::File::open(&path).await {
                                Ok(f) => f,
                                Err(e) => return Some((Err(e), (None, first, true))),
                            },
                        };
                        let mut piece = vec![0u8; BLOCK];
                        let mut n = 0;
                        while n < piece.len() {
                            match tokio::io::AsyncReadExt::read(&mut file, &mut piece[n..]).await {
                                Ok(0) => break,
                                Ok(k) => n += k,
                                Err(e) => return Some((Err(e), (None, first, true))),
                            }
                        }
                        if n == 0 {
                            return None;
                        }
                        piece.truncate(n);
                        if first {
                            salt_gzip(&mut piece, salt);
                        }
                        Some((Ok(Bytes::from(piece)), (Some(file), false, false)))
                    }
                }))
            }
        }
    }

    /// The digest of round `salt`'s layer (hashes the whole layer: blocking).
    fn digest(&self, salt: u64) -> anyhow::Result<String> {
        match &self.source {
            Source::Random(data) => Ok(data.digest(self.size, salt)),
            Source::Gzip(path) => {
                let mut f = std::fs::File::open(path)?;
                let mut h = sha2::Sha256::new();
                let mut buf = vec![0u8; BLOCK];
                let mut first = true;
                loop {
                    let mut n = 0;
                    while n < buf.len() {
                        match f.read(&mut buf[n..])? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    if n == 0 {
                        break;
                    }
                    if first {
                        salt_gzip(&mut buf[..n], salt);
                        first = false;
                    }
                    h.update(&buf[..n]);
                }
                Ok(format!("sha256:{}", hex::encode(h.finalize())))
            }
        }
    }
}

/// The rootfs tarball as `debian_root` in the node tests makes it, gzipped
/// once (level 6) beside it; both cached across runs.
fn rootfs_gzip() -> anyhow::Result<PathBuf> {
    let cache = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/berth-debian");
    let tarball = cache.join("bookworm-minbase.tar");
    let gz = cache.join("bookworm-minbase.tar.gz");
    if gz.exists() {
        return Ok(gz);
    }
    std::fs::create_dir_all(&cache)?;
    if !tarball.exists() {
        eprintln!("debootstrap of bookworm minbase (once)…");
        let fresh = cache.join(format!("bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fresh);
        let run = |c: &mut std::process::Command| -> anyhow::Result<()> {
            let status = c.status().with_context(|| format!("{c:?}"))?;
            anyhow::ensure!(status.success(), "{c:?}: {status}");
            Ok(())
        };
        run(std::process::Command::new("debootstrap").args(["--variant=minbase", "bookworm"]).arg(&fresh).arg("http://deb.debian.org/debian"))?;
        let part = cache.join(format!("bookworm-minbase.tar.{}", std::process::id()));
        run(std::process::Command::new("tar").arg("-C").arg(&fresh).arg("--numeric-owner").arg("-cf").arg(&part).arg("."))?;
        std::fs::rename(&part, &tarball)?;
        let _ = std::fs::remove_dir_all(&fresh);
    }
    eprintln!("gzip of {} (once)…", tarball.display());
    let part = cache.join(format!("bookworm-minbase.tar.gz.{}", std::process::id()));
    let mut enc = flate2::write::GzEncoder::new(std::io::BufWriter::new(std::fs::File::create(&part)?), flate2::Compression::new(6));
    std::io::copy(&mut std::fs::File::open(&tarball)?, &mut enc)?;
    let mut out = enc.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&part, &gz)?;
    Ok(gz)
}

/// Where pushes go, and as whom.
struct Registry {
    base: String,
    auth: Option<(String, String)>,
}

/// A registry under test, kept alive while it is measured.
pub(crate) enum Running {
    /// In-process berth nodes; node 1 (index 0) takes the pushes.
    Berth {
        nodes: Vec<Node>,
        _dir: tempfile::TempDir,
    },
    Distribution(registry::Server),
}

impl Running {
    fn registry(&self) -> Registry {
        match self {
            Running::Berth { nodes, .. } => {
                Registry { base: format!("http://{}", nodes[0].running.http_addr), auth: Some(("admin".into(), "bench-password".into())) }
            }
            Running::Distribution(s) => Registry { base: s.base.clone(), auth: s.auth.clone() },
        }
    }

    /// Stops every node at once: one at a time, the survivors spend the
    /// wait calling the stopped ones (and logging each failure).
    pub(crate) async fn stop(self) {
        if let Running::Berth { nodes, .. } = self {
            // The proxies outlive the shutdown, or the nodes would lose each other mid-way.
            let (running, proxies): (Vec<_>, Vec<_>) = nodes.into_iter().map(|n| (n.running, n._proxy)).unzip();
            futures::future::join_all(running.into_iter().map(|r| r.shutdown())).await;
            drop(proxies);
        }
    }

    /// How many nodes hold `digest` as node 1 sees it.
    fn holders(&self, digest: &Digest) -> anyhow::Result<usize> {
        let Running::Berth { nodes, .. } = self else { return Ok(1) };
        let record: Option<berth_raft::command::BlobRecord> =
            berth_raft::StateRead::get(&nodes[0].running.meta.state(), &berth_raft::state::keys::blob(digest))?;
        Ok(record.map(|r| r.holders.len()).unwrap_or(0))
    }

    /// Waits until every node holds each of `digests`, so what a round
    /// leaves to the background is done before the next one starts.
    async fn settle(&self, digests: &[Digest]) -> anyhow::Result<()> {
        let Running::Berth { nodes, .. } = self else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(900);
        for d in digests {
            loop {
                let holders = self.holders(d)?;
                if holders >= nodes.len() {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "blob {d} is on {holders} of {} nodes after 15 minutes", nodes.len());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// A 3-node berth, one node per region; with `link`, every node's peer
/// port (Raft and blobs) is behind its own emulated WAN link.
///
/// Node 1's link is emulated too: a node fetches a copy by dialling the
/// holder's advertised address (the blob transport reuses only the
/// connections it dialled itself), so with node 1 on plain loopback the
/// second copy would never cross the WAN, only the request for it would.
pub(crate) async fn three_nodes(link: Option<LinkSpec>) -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let n1 = node(&dir.path().join("n1"), "bench-a", link, None).await?;
    let token = join_token(&n1).await?;
    let seed = n1.running.peer_addr.to_string();
    let mut nodes = vec![n1];
    for (i, region) in [(2, "bench-b"), (3, "bench-c")] {
        nodes.push(node(&dir.path().join(format!("n{i}")), region, link, Some((&seed, &token))).await?);
    }
    // Every node must know all three before a push, or node 1 would count
    // fewer peers and settle for fewer copies.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let formed = nodes.iter().all(|n| n.running.meta.view().members.len() == 3) && nodes[0].running.meta.view().voters.len() == 3;
        if formed && nodes[0].running.replicator.min_copies() == 2 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the three nodes never formed a cluster: {:?}", nodes[0].running.meta.view());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Running::Berth { nodes, _dir: dir })
}

async fn one_node() -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let n1 = node(&dir.path().join("n1"), "bench-a", None, None).await?;
    Ok(Running::Berth { nodes: vec![n1], _dir: dir })
}

/// One client's view of a registry: the OCI distribution calls of a push.
struct Pusher {
    http: reqwest::Client,
    reg: Registry,
}

impl Pusher {
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        // Upload locations may be absolute (distribution) or a path (berth).
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", self.reg.base) };
        let rb = self.http.request(method, url);
        match &self.reg.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// POST an upload, PATCH `body` (chunked when it is a stream), PUT the digest.
    async fn upload(&self, repo: &str, body: reqwest::Body, digest: &str) -> anyhow::Result<()> {
        let location = |r: &reqwest::Response| -> anyhow::Result<String> {
            Ok(r.headers().get("location").context("an upload answer without Location")?.to_str()?.to_string())
        };
        let r = self.req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await?;
        anyhow::ensure!(r.status().as_u16() == 202, "POST upload answered {}", r.status());
        let loc = location(&r)?;
        let r = self.req(reqwest::Method::PATCH, &loc).header("content-type", "application/octet-stream").body(body).send().await?;
        anyhow::ensure!(r.status().as_u16() == 202, "PATCH upload answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        let loc = location(&r)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self.req(reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}")).send().await?;
        anyhow::ensure!(r.status().as_u16() == 201, "PUT upload answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        Ok(())
    }

    /// Seconds from the layer's POST to the manifest PUT's 201, and the
    /// seconds of its three steps (layer, config, manifest).
    async fn push(&self, repo: &str, layer: &Layer, salt: u64, digest: &str) -> anyhow::Result<(f64, [f64; 3])> {
        // A config of its own per round, so it too is new and has to be copied.
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"comment": format!("berth-bench push-durable round {salt}")}],
        }))?;
        let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config)));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer.media_type, "digest": digest, "size": layer.size}],
        }))?;
        let started = Instant::now();
        self.upload(repo, reqwest::Body::wrap_stream(layer.stream(salt)), digest).await.context("layer")?;
        let layer_done = started.elapsed().as_secs_f64();
        self.upload(repo, reqwest::Body::from(config), &config_digest).await.context("config")?;
        let config_done = started.elapsed().as_secs_f64();
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/round-{salt}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "PUT manifest answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        let total = started.elapsed().as_secs_f64();
        Ok((total, [layer_done, config_done - layer_done, total - config_done]))
    }
}

/// The registries under test, in the order they run.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    One,
    Three,
    Distribution,
    ThreeWan,
}

impl Target {
    const ALL: [Target; 4] = [Target::One, Target::Three, Target::Distribution, Target::ThreeWan];

    fn key(self) -> &'static str {
        match self {
            Target::One => "berth_1_node",
            Target::Three => "berth_3_nodes",
            Target::Distribution => "distribution",
            Target::ThreeWan => "berth_3_nodes_wan",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Target::One => "berth, 1 node",
            Target::Three => "berth, 3 nodes / 3 regions",
            Target::Distribution => "distribution",
            Target::ThreeWan => "berth, 3 nodes, WAN links",
        }
    }
}

/// CPU seconds this process has used (user and system), from
/// `/proc/self/stat` in clock ticks of 10 ms (Linux's USER_HZ on x86).
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: the fields that follow it are counted from its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Seconds of each round's push of `layer` to a running registry; stops at
/// the first failed push (its error is the result).
async fn rounds_of(running: &Running, layer: &Layer, digests: &[String]) -> Result<Vec<f64>, String> {
    let pusher = Pusher { http: reqwest::Client::new(), reg: running.registry() };
    let repo = format!("bench/{}", layer.name);
    let mut times = Vec::with_capacity(digests.len());
    for (i, digest) in digests.iter().enumerate() {
        let salt = i as u64 + 1;
        let cpu = process_cpu_s();
        let (secs, [l, c, m]) = pusher.push(&repo, layer, salt, digest).await.map_err(|e| format!("round {salt}: {e:#}"))?;
        // The client and, for berth, every node run in this process: with
        // 2 cores, 2.0 cores busy means the push was bound by the CPU.
        let cpu = process_cpu_s() - cpu;
        let parsed: Digest = digest.parse().map_err(|e| format!("{e:?}"))?;
        // What the acknowledgement promised, read right after it: min_copies or more.
        let at_ack = running.holders(&parsed).map_err(|e| format!("{e:#}"))?;
        eprintln!(
            "  {}: round {salt} {secs:.2} s (layer {l:.2}, config {c:.2}, manifest {m:.2}), {cpu:.2} CPU s in this process ({:.2} cores), layer on {at_ack} node(s) at the ack",
            layer.name,
            cpu / secs
        );
        times.push(secs);
        running.settle(&[parsed]).await.map_err(|e| format!("{e:#}"))?;
    }
    Ok(times)
}

/// Seconds one plain TCP stream takes to carry `size` bytes over `link`.
async fn tcp_seconds(size: u64, link: LinkSpec) -> anyhow::Result<f64> {
    let blocks = size.div_ceil(BLOCK as u64);
    let mb_s = tcp_copy(blocks, Some(link)).await?;
    Ok(size as f64 / (mb_s * 1e6))
}

/// The middle value; of an even count, the mean of the two middle ones.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub async fn run(random_mib: u64, rounds: usize, rtt_ms: u64, rate_mb: u64, out: &Path) -> anyhow::Result<()> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let link = LinkSpec::rtt(Duration::from_millis(rtt_ms)).with_rate(rate_mb * 1_000_000);
    let gz = tokio::task::spawn_blocking(rootfs_gzip).await??;
    let layers = vec![
        Layer { name: "rootfs", media_type: "application/vnd.oci.image.layer.v1.tar+gzip", size: std::fs::metadata(&gz)?.len(), source: Source::Gzip(gz) },
        Layer {
            name: "random",
            media_type: "application/vnd.oci.image.layer.v1.tar",
            size: random_mib << 20,
            source: Source::Random(Arc::new(registry::Data::new())),
        },
    ];
    let layers = Arc::new(layers);
    eprintln!("hashing {rounds} salted copies of each layer…");
    let digests: Vec<Vec<String>> = {
        let layers = layers.clone();
        tokio::task::spawn_blocking(move || {
            layers.iter().map(|l| (1..=rounds as u64).map(|s| l.digest(s)).collect::<anyhow::Result<Vec<_>>>()).collect::<anyhow::Result<Vec<_>>>()
        })
        .await??
    };

    // results[layer][target]: each round's seconds, or why the pushes stopped.
    let mut results: Vec<Vec<Result<Vec<f64>, String>>> = layers.iter().map(|_| Vec::new()).collect();
    for target in Target::ALL {
        if std::env::var("BERTH_BENCH_ONLY").is_ok_and(|only| only != target.key()) {
            // For profiling one target: the others are reported as skipped.
            for r in results.iter_mut() {
                r.push(Err("skipped (BERTH_BENCH_ONLY)".into()));
            }
            continue;
        }
        eprintln!("{}…", target.label());
        let running = match target {
            Target::One => one_node().await?,
            Target::Three => three_nodes(None).await?,
            Target::Distribution => Running::Distribution(registry::start_distribution().await?),
            Target::ThreeWan => three_nodes(Some(link)).await?,
        };
        for (i, layer) in layers.iter().enumerate() {
            let r = rounds_of(&running, layer, &digests[i]).await;
            if let Err(e) = &r {
                eprintln!("  {}: {e}", layer.name);
            }
            results[i].push(r);
        }
        running.stop().await;
    }
    eprintln!("one TCP copy over the emulated link…");
    let mut tcp = Vec::new();
    for layer in layers.iter() {
        let mut t = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            t.push(tcp_seconds(layer.size, link).await?);
        }
        tcp.push(t);
    }

    println!(
        "one push (layer POST to manifest 201) of a fresh layer, median of {rounds}; min_copies as shipped (2 on 3 nodes); WAN: {rtt_ms} ms RTT, {rate_mb} MB/s per node"
    );
    println!("{:<8} {:>10}  {:<30} {:>10} {:>12}", "layer", "MB", "target", "median s", "/ 1 node");
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut checks = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let med = |t: Target| results[i][Target::ALL.iter().position(|x| *x == t).expect("a target")].as_ref().map(|v| median(v)).unwrap_or(f64::NAN);
        let one = med(Target::One);
        let tcp_med = median(&tcp[i]);
        let mb = layer.size as f64 / 1e6;
        let mut layer_rows = serde_json::Map::new();
        for (t, r) in Target::ALL.iter().zip(&results[i]) {
            let m = med(*t);
            let shown = if m.is_nan() { "failed".to_string() } else { format!("{m:.2}") };
            println!("{:<8} {mb:>10.1}  {:<30} {shown:>10} {:>12.2}", layer.name, t.label(), m / one);
            let row = match r {
                Ok(times) => serde_json::json!({"times_s": times, "median_s": m}),
                Err(e) => serde_json::json!({"error": e}),
            };
            layer_rows.insert(t.key().into(), row);
        }
        println!("{:<8} {mb:>10.1}  {:<30} {tcp_med:>10.2} {:>12.2}", layer.name, "one TCP copy over the WAN link", tcp_med / one);
        layer_rows.insert("tcp_copy_wan".into(), serde_json::json!({"times_s": tcp[i], "median_s": tcp_med}));
        rows.push(serde_json::json!({"layer": layer.name, "bytes": layer.size, "targets": layer_rows}));
        checks.push((format!("{}: 3-node push / 1-node push", layer.name), med(Target::Three) / one, 1.15, false));
        checks.push((format!("{}: distribution time / 3-node berth time", layer.name), med(Target::Distribution) / med(Target::Three), 1.0, true));
        checks.push((format!("{}: WAN 3-node push / one TCP copy on the link", layer.name), med(Target::ThreeWan) / tcp_med, 1.1, false));
    }
    println!();
    println!("{:<52} {:>8} {:>10} {:>6}", "RATIO", "value", "target", "");
    for (name, value, target, higher) in checks {
        verdicts.push(verdict(&name, value, target, higher));
    }
    let doc = serde_json::json!({
        "bench": "push-durable", "random_mib": random_mib, "rounds": rounds, "rtt_ms": rtt_ms, "rate_mb_s": rate_mb,
        "tcp_window": berth_chaos::wan::kernel_tcp_window(), "layers": rows, "ratios": verdicts,
    });
    write_json(out, &doc)
}
