//! `berth-bench scale` (issue 25, item 1): berth with many repositories,
//! tags and blob records, on 3 real `berth` processes on this machine.
//!
//! The cluster is filled through the registry API, as clients would fill
//! it, by `--clients` concurrent HTTP clients (keep-alive, basic auth as
//! the admin) spread over the 3 nodes:
//!
//! 1. repositories: each gets `--blobs-per-repo` small blobs of its own
//!    (a config and layers, unique bytes, so blob records grow with the
//!    repositories) and one manifest referencing them, tagged `t0000000`.
//!    With `--shared-layers S`, layers 1..=S are the same bytes in every
//!    repository, as base image layers are: each repository links them,
//!    and the new-repository rate of the last 5 s window against the first
//!    shows whether a link's cost grows with the repositories sharing it;
//! 2. tags: the rest of `--tags`, each one manifest PUT of the repository's
//!    manifest bytes under a new tag name. Repository 0 takes
//!    `--big-repo-share` of them (the repository whose tag list is paged),
//!    the others share the remainder evenly. Tags are interleaved, so the
//!    writers touch many repositories at once.
//!
//! The manifests are artifacts (their config is not an image config), so
//! the scanner marks each one `unsupported` without reading its layers;
//! real images would also be indexed and get an SBOM referrer each.
//!
//! Then, with the writes done and every blob on every node: p50/p99 of a
//! tag-list page, a catalog page and a manifest GET by tag (one client,
//! nodes in turn), `/metrics` scrape time, the reconciler's idle pass (only
//! if the node exports a timing for it), each node's RSS and data size, and
//! last the time a 4th node takes from `berth cluster join` until it has
//! applied everything the leader had applied when it joined (a snapshot,
//! with the defaults: the log is compacted every 10,000 entries).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_common::Digest;

use crate::registry::percentile;
use crate::{verdict, write_json};

const PASSWORD: &str = "bench-password";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Not an image configuration: the scanner skips the layers (see the module doc).
const CONFIG_TYPE: &str = "application/vnd.berth.bench.config.v1+json";
/// Tag names are zero-padded so their byte order is their number order.
fn tag_name(n: u64) -> String {
    format!("t{n:07}")
}
fn repo_name(r: u64) -> String {
    format!("scale/r{r:06}")
}

pub struct Opts {
    pub repos: u64,
    pub tags: u64,
    pub blobs_per_repo: u64,
    /// Layers (after the config) every repository shares.
    pub shared_layers: u64,
    pub clients: usize,
    pub big_repo_share: f64,
    pub samples: usize,
    /// Settle between the repositories and the tags.
    pub settle_before_tags: bool,
    pub dir: Option<PathBuf>,
    pub out: PathBuf,
}

/// One `berth node start` process.
struct Proc {
    name: String,
    dir: PathBuf,
    http: String,
    peer: String,
    child: Option<Child>,
}

impl Proc {
    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// VmRSS and VmHWM (peak), MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = self.pid().and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok()).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `du -sk` of the data directory, MiB.
    fn data_mib(&self) -> f64 {
        let out = Command::new("du").arg("-sk").arg(&self.dir).output();
        out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log"))?;
        let child = Command::new(bin)
            .args(["node", "start", "--data-dir"])
            .arg(&self.dir)
            .env("BERTH_LOG", std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn,berth_raft::store=info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {} node start", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first (a clean RocksDB close), SIGKILL after 10 s.
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run_cli(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin).args(args).env("BERTH_LOG", "warn").output().with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!("berth {}: {}", args[..2.min(args.len())].join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Registers node `i` (1-based) with `cluster init` or `cluster join`, as
/// `berth dev` lays nodes out (its regions), without starting it.
fn register(bin: &Path, root: &Path, i: usize, seed: Option<(&str, &str)>) -> anyhow::Result<(Proc, Option<String>)> {
    let dir = root.join(format!("node{i}"));
    let (http, peer) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
    let region = berth_node::dev::DEV_REGIONS[(i - 1) % berth_node::dev::DEV_REGIONS.len()];
    let d = dir.to_str().context("utf-8 path")?.to_string();
    let mut args = vec!["cluster", if seed.is_none() { "init" } else { "join" }, "--data-dir", &d, "--region", region, "--http", &http, "--peer", &peer];
    let pw = root.join("admin-password");
    let pw_s = pw.to_str().context("utf-8 path")?.to_string();
    match seed {
        None => {
            std::fs::write(&pw, PASSWORD)?;
            args.extend(["--admin-password-file", &pw_s]);
        }
        Some((seed, token)) => args.extend(["--seed", seed, "--token", token]),
    }
    let out = run_cli(bin, &args)?;
    // `cluster init` prints the join token alone on its last line.
    let token = seed.is_none().then(|| out.lines().last().unwrap_or("").trim().to_string());
    Ok((Proc { name: format!("node{i}"), dir, http, peer, child: None }, token))
}

async fn wait_ready(http: &reqwest::Client, p: &Proc, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{}/health/ready", p.base())).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{} not ready within {within:?}; see {}", p.name, p.dir.with_extension("log").display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/api/v1/cluster/status` as node `base` answers it.
async fn status(http: &reqwest::Client, base: &str) -> anyhow::Result<serde_json::Value> {
    let r = http.get(format!("{base}/api/v1/cluster/status")).basic_auth("admin", Some(PASSWORD)).timeout(Duration::from_secs(10)).send().await?;
    anyhow::ensure!(r.status().is_success(), "cluster status answered {}", r.status());
    Ok(r.json().await?)
}

/// One sample of a metric (the first line named exactly `name`) in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.split([' ', '{']).next() == Some(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn scrape(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    Ok(http.get(format!("{base}/metrics")).timeout(Duration::from_secs(60)).send().await?.error_for_status()?.text().await?)
}

/// The highest log index node `base` has applied (from `/metrics`: the
/// cluster status API also tallies storage and asks every peer).
async fn applied_index(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    metric(&scrape(http, base).await?, "berth_raft_applied_index").map(|v| v as u64).context("no berth_raft_applied_index")
}

/// The content of blob `k` of repository `r`: small and unique.
fn blob_bytes(r: u64, k: u64, shared: u64) -> Vec<u8> {
    if k == 0 {
        format!("{{\"bench\":\"scale\",\"repo\":{r}}}").into_bytes()
    } else if k <= shared {
        format!("berth-bench scale shared layer {k}\n").into_bytes()
    } else {
        format!("berth-bench scale layer {k} of repository {r}\n").into_bytes()
    }
}

/// Repository `r`'s manifest: its config (blob 0) and layers (the rest,
/// the first `shared` of them the same in every repository).
fn manifest_bytes(r: u64, blobs: u64, shared: u64) -> Vec<u8> {
    let desc = |k: u64, media: &str| {
        let b = blob_bytes(r, k, shared);
        serde_json::json!({"mediaType": media, "digest": Digest::sha256_of(&b).to_string(), "size": b.len()})
    };
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": "application/vnd.berth.bench.scale",
        "config": desc(0, CONFIG_TYPE),
        "layers": (1..blobs).map(|k| desc(k, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    }))
    .expect("encode manifest")
}

/// Where tag write `j` (0-based, after every repository's first tag) goes.
///
/// Of `extra` such writes, `big` go to repository 0, spread evenly through
/// the sequence (Bresenham: write `j` is one of them when
/// floor((j+1)·big/extra) > floor(j·big/extra), and floor(j·big/extra) of
/// them come before it); the others go round the remaining repositories.
struct TagPlan {
    repos: u64,
    extra: u64,
    big: u64,
}

impl TagPlan {
    fn new(repos: u64, tags: u64, share: f64) -> TagPlan {
        let extra = tags.saturating_sub(repos);
        let big = if repos > 1 { ((tags as f64 * share) as u64).min(extra) } else { extra };
        TagPlan { repos, extra, big }
    }

    fn big_before(&self, j: u64) -> u64 {
        (j as u128 * self.big as u128 / self.extra.max(1) as u128) as u64
    }

    /// (repository, tag number) of write `j`.
    fn write(&self, j: u64) -> (u64, u64) {
        let before = self.big_before(j);
        if self.big_before(j + 1) > before {
            return (0, before + 1);
        }
        let other = j - before;
        let rest = self.repos - 1;
        (1 + other % rest, 1 + other / rest)
    }

    /// How many tags repository `r` ends with.
    fn tags_of(&self, r: u64) -> u64 {
        if r == 0 {
            return 1 + self.big;
        }
        let others = self.extra - self.big;
        let rest = self.repos - 1;
        1 + others / rest + u64::from(r - 1 < others % rest)
    }
}

/// Counts of one write phase, shared by its clients.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
}

/// Sends `req` until it answers `want` (up to 6 tries); whether it did.
async fn send(progress: &Progress, mut make: impl FnMut() -> reqwest::RequestBuilder, want: u16) -> bool {
    for attempt in 0..6u64 {
        if attempt > 0 {
            progress.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        match make().send().await {
            Ok(r) if r.status().as_u16() == want => return true,
            Ok(r) if attempt == 5 => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                eprintln!("  gave up: {status} {}", body.chars().take(300).collect::<String>());
            }
            Err(e) if attempt == 5 => eprintln!("  gave up: {e}"),
            _ => {}
        }
    }
    progress.failed.fetch_add(1, Ordering::Relaxed);
    false
}

/// The most entries each of `bases` has held in its log but not applied,
/// sampled every half second until the task is aborted. A follower whose
/// state machine falls behind its log holds the entries in between in
/// memory, queued for applying.
fn lag_watch(http: reqwest::Client, bases: Vec<String>) -> (tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<f64>>>) {
    let most = Arc::new(std::sync::Mutex::new(vec![0.0_f64; bases.len()]));
    let out = most.clone();
    let task = tokio::spawn(async move {
        loop {
            for (i, base) in bases.iter().enumerate() {
                if let Some(lag) = scrape(&http, base).await.ok().and_then(|t| metric(&t, "berth_raft_apply_lag_entries")) {
                    let mut most = most.lock().expect("lag");
                    most[i] = most[i].max(lag);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (task, out)
}

/// Writes done per second over each `window` of a phase, from a sampler task.
fn sampler(progress: Arc<Progress>, what: &'static str, total: u64) -> (tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<f64>>>) {
    let rates = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = rates.clone();
    let task = tokio::spawn(async move {
        let window = Duration::from_secs(5);
        let (mut last, mut at) = (0u64, Instant::now());
        loop {
            tokio::time::sleep(window).await;
            let now = progress.done.load(Ordering::Relaxed);
            let rate = (now - last) as f64 / at.elapsed().as_secs_f64();
            rates.lock().expect("rates").push(rate);
            eprintln!(
                "  {what}: {now}/{total}, {rate:.0}/s, {} retries, {} failed",
                progress.retries.load(Ordering::Relaxed),
                progress.failed.load(Ordering::Relaxed)
            );
            (last, at) = (now, Instant::now());
        }
    });
    (task, out)
}

/// Phase 1: every repository's blobs and first tag. Seconds taken and the
/// 5 s window rates.
async fn write_repos(http: &reqwest::Client, bases: &[String], o: &Opts, progress: Arc<Progress>) -> anyhow::Result<(f64, Vec<f64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let (sampler, rates) = sampler(progress.clone(), "repositories", o.repos);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let (http, base, next, progress) = (http.clone(), bases[c % bases.len()].clone(), next.clone(), progress.clone());
        let (repos, blobs, shared) = (o.repos, o.blobs_per_repo, o.shared_layers);
        tasks.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, Ordering::Relaxed);
                if r >= repos {
                    return;
                }
                let repo = repo_name(r);
                let mut ok = true;
                for k in 0..blobs {
                    let bytes = bytes::Bytes::from(blob_bytes(r, k, shared));
                    let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={}", Digest::sha256_of(&bytes));
                    ok &= send(&progress, || http.post(&url).basic_auth("admin", Some(PASSWORD)).body(bytes.clone()), 201).await;
                }
                if ok {
                    let manifest = bytes::Bytes::from(manifest_bytes(r, blobs, shared));
                    let url = format!("{base}/v2/{repo}/manifests/{}", tag_name(0));
                    let put = || http.put(&url).basic_auth("admin", Some(PASSWORD)).header("content-type", MANIFEST_TYPE).body(manifest.clone());
                    if send(&progress, put, 201).await {
                        progress.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    sampler.abort();
    let rates = rates.lock().expect("rates").clone();
    Ok((started.elapsed().as_secs_f64(), rates))
}

/// Phase 2: the other tags. Seconds taken and the 5 s window rates.
async fn write_tags(http: &reqwest::Client, bases: &[String], o: &Opts, plan: Arc<TagPlan>, progress: Arc<Progress>) -> anyhow::Result<(f64, Vec<f64>)> {
    let next = Arc::new(AtomicU64::new(0));
    let (sampler, rates) = sampler(progress.clone(), "tags", plan.extra);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let (http, base, next, progress, plan) = (http.clone(), bases[c % bases.len()].clone(), next.clone(), progress.clone(), plan.clone());
        let (blobs, shared) = (o.blobs_per_repo, o.shared_layers);
        tasks.push(tokio::spawn(async move {
            // The last repository's manifest, kept: the big repository comes up often.
            let mut cached: Option<(u64, bytes::Bytes)> = None;
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= plan.extra {
                    return;
                }
                let (r, t) = plan.write(j);
                let manifest = match &cached {
                    Some((cr, m)) if *cr == r => m.clone(),
                    _ => {
                        let m = bytes::Bytes::from(manifest_bytes(r, blobs, shared));
                        cached = Some((r, m.clone()));
                        m
                    }
                };
                let url = format!("{base}/v2/{}/manifests/{}", repo_name(r), tag_name(t));
                let put = || http.put(&url).basic_auth("admin", Some(PASSWORD)).header("content-type", MANIFEST_TYPE).body(manifest.clone());
                if send(&progress, put, 201).await {
                    progress.done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    sampler.abort();
    let rates = rates.lock().expect("rates").clone();
    Ok((secs, rates))
}

/// A small reproducible generator for the read samples.
struct XorShift(u64);
impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Latencies (ms) of up to `samples` GETs made by `next_url`, one at a time,
/// stopping after `budget`. Every answer must be 200.
async fn sample_gets(
    http: &reqwest::Client,
    samples: usize,
    budget: Duration,
    mut next_url: impl FnMut(Option<&serde_json::Value>) -> String,
    json: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::with_capacity(samples);
    let stop = Instant::now() + budget;
    let mut last: Option<serde_json::Value> = None;
    while lat.len() < samples && Instant::now() < stop {
        let url = next_url(last.as_ref());
        let t = Instant::now();
        let r = http.get(&url).basic_auth("admin", Some(PASSWORD)).header("accept", MANIFEST_TYPE).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.as_u16() == 200, "GET {url} answered {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        last = if json { Some(serde_json::from_slice(&body)?) } else { None };
    }
    Ok(lat)
}

/// p50 and p99 of `v` (ms), and how many samples.
fn pcts(v: &mut [f64]) -> serde_json::Value {
    serde_json::json!({"p50_ms": percentile(v, 50.0), "p99_ms": percentile(v, 99.0), "max_ms": percentile(v, 100.0), "samples": v.len()})
}

/// Waits until every node has applied every write made before the previous
/// look (the highest index any node had applied then) and none misses a
/// blob. Not "the same index everywhere": the scanner keeps writing in the
/// background (a lease and a result per new manifest), so the indexes move.
async fn settle(http: &reqwest::Client, nodes: &[Proc], within: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let deadline = started + within;
    let mut before: Option<u64> = None;
    loop {
        let mut applied = Vec::new();
        let mut backlog = 0.0;
        for n in nodes {
            let text = scrape(http, &n.base()).await?;
            applied.push(metric(&text, "berth_raft_applied_index").unwrap_or(0.0) as u64);
            backlog += metric(&text, "berth_replication_backlog_blobs").unwrap_or(0.0);
        }
        if backlog == 0.0 && before.is_some_and(|b| applied.iter().all(|a| *a >= b)) {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(Instant::now() < deadline, "not settled within {within:?}: applied {applied:?}, {backlog} blobs missing");
        eprintln!("  settling: applied {applied:?}, {backlog} blobs missing");
        before = applied.iter().max().copied();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The reconciler's pass time when nothing is missing, ms, if the node
/// exports one (`berth_reconcile_pass_seconds`, a histogram or a gauge):
/// the mean of the passes during an idle `window`, or the gauge after it.
async fn reconcile_pass_ms(http: &reqwest::Client, base: &str, window: Duration) -> anyhow::Result<Option<f64>> {
    let name = "berth_reconcile_pass_seconds";
    let before = scrape(http, base).await?;
    if !before.lines().any(|l| l.starts_with(name)) {
        return Ok(None);
    }
    tokio::time::sleep(window).await;
    let after = scrape(http, base).await?;
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    match (metric(&before, &sum), metric(&before, &count), metric(&after, &sum), metric(&after, &count)) {
        (Some(s0), Some(c0), Some(s1), Some(c1)) if c1 > c0 => Ok(Some((s1 - s0) / (c1 - c0) * 1000.0)),
        (Some(_), Some(_), _, _) => Ok(None),
        _ => Ok(metric(&after, name).map(|s| s * 1000.0)),
    }
}

/// Blob records the bench writes: each repository's own, and the shared layers once.
fn blob_records(o: &Opts) -> u64 {
    o.repos * (o.blobs_per_repo - o.shared_layers) + o.shared_layers
}

/// The median 5 s window rate of the first quarter of `windows` and of the
/// last (a quarter is at least one window); none with fewer than two.
fn quarter_medians(windows: &[f64]) -> Option<(f64, f64)> {
    if windows.len() < 2 {
        return None;
    }
    let q = (windows.len() / 4).max(1);
    let (mut first, mut last) = (windows[..q].to_vec(), windows[windows.len() - q..].to_vec());
    Some((percentile(&mut first, 50.0), percentile(&mut last, 50.0)))
}

pub async fn run(o: Opts) -> anyhow::Result<()> {
    anyhow::ensure!(o.repos >= 2 && o.tags >= o.repos, "need at least 2 repositories and a tag for each");
    anyhow::ensure!(o.blobs_per_repo >= 1 && o.clients >= 1, "need a blob per repository and a client");
    anyhow::ensure!(o.shared_layers < o.blobs_per_repo, "the shared layers are among a repository's blobs, after its config");
    let bin = berth_chaos::cluster::berth_bin();
    let tmp;
    let root = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("berth-scale-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.clients).timeout(Duration::from_secs(60)).build()?;

    eprintln!("3 nodes in {} ({})…", root.display(), bin.display());
    let (mut n1, token) = register(&bin, &root, 1, None)?;
    let token = token.context("cluster init printed no join token")?;
    n1.start(&bin)?;
    wait_ready(&http, &n1, Duration::from_secs(30)).await?;
    let seed = n1.peer.clone();
    let mut nodes = vec![n1];
    for i in 2..=3 {
        let (mut n, _) = register(&bin, &root, i, Some((&seed, &token)))?;
        n.start(&bin)?;
        wait_ready(&http, &n, Duration::from_secs(60)).await?;
        nodes.push(n);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&http, &nodes[0].base()).await.unwrap_or_default();
        let voters = s["nodes"].as_array().map(|a| a.iter().filter(|n| n["role"] == "voter").count()).unwrap_or(0);
        if voters == 3 && s["leader"].is_u64() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the 3 nodes did not form: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base()).collect();

    // Phase 1: repositories.
    eprintln!("{} repositories, {} blobs each, {} clients…", o.repos, o.blobs_per_repo, o.clients);
    let (lags, write_lag) = lag_watch(http.clone(), bases.clone());
    let repo_progress = Arc::new(Progress::default());
    let (repo_secs, repo_windows) = write_repos(&http, &bases, &o, repo_progress.clone()).await?;
    let repos_done = repo_progress.done.load(Ordering::Relaxed);
    anyhow::ensure!(repos_done == o.repos, "{} of {} repositories were written", repos_done, o.repos);
    let repos_per_s = o.repos as f64 / repo_secs;
    let blob_pushes_per_s = (o.repos * o.blobs_per_repo) as f64 / repo_secs;
    eprintln!("  {repos_per_s:.0} repositories/s ({blob_pushes_per_s:.0} blob pushes/s) in {repo_secs:.1} s");
    let repo_trend = quarter_medians(&repo_windows);
    let settle_before_tags_s = match o.settle_before_tags {
        true => {
            eprintln!("waiting for every node to hold every blob before the tags…");
            let s = settle(&http, &nodes, Duration::from_secs(1800)).await?;
            eprintln!("  settled in {s:.1} s");
            Some(s)
        }
        false => None,
    };

    // Phase 2: tags.
    let plan = Arc::new(TagPlan::new(o.repos, o.tags, o.big_repo_share));
    eprintln!("{} more tags ({} in {}), {} clients…", plan.extra, plan.big, repo_name(0), o.clients);
    let tag_progress = Arc::new(Progress::default());
    let (tag_secs, mut windows) = write_tags(&http, &bases, &o, plan.clone(), tag_progress.clone()).await?;
    let tags_done = tag_progress.done.load(Ordering::Relaxed);
    let tags_per_s = tags_done as f64 / tag_secs;
    let window_rates = if windows.is_empty() {
        serde_json::json!(null)
    } else {
        let first = windows[0];
        let last = *windows.last().expect("a window");
        serde_json::json!({"first": first, "last": last, "min": percentile(&mut windows, 0.0), "median": percentile(&mut windows, 50.0)})
    };
    let windows_text = match window_rates.as_object() {
        Some(w) => ["first", "median", "min", "last"].iter().map(|k| format!("{k} {:.0}", w[*k].as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(", "),
        None => "-".into(),
    };
    eprintln!("  {tags_per_s:.0} tags/s over {tag_secs:.1} s; 5 s windows: {windows_text}");
    let failed = repo_progress.failed.load(Ordering::Relaxed) + tag_progress.failed.load(Ordering::Relaxed);
    let retries = repo_progress.retries.load(Ordering::Relaxed) + tag_progress.retries.load(Ordering::Relaxed);

    eprintln!("waiting for every node to apply every write and hold every blob…");
    let settle_s = settle(&http, &nodes, Duration::from_secs(1800)).await?;
    let rss_after_writes: Vec<(f64, f64)> = nodes.iter().map(|n| n.rss_mib()).collect();
    lags.abort();
    let write_lag = write_lag.lock().expect("lag").clone();
    // The scanner still works through the new manifests' queue in the background while the reads run.
    let scans_queued = metric(&scrape(&http, &bases[0]).await?, "berth_scans_queued").unwrap_or(0.0);

    // Reads: one client, the nodes in turn.
    let budget = Duration::from_secs(90);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut turn = 0usize;
    let mut node_base = || {
        turn += 1;
        bases[turn % bases.len()].clone()
    };
    eprintln!("tag-list pages of {}…", repo_name(0));
    let big = repo_name(0);
    let mut tag_list = sample_gets(
        &http,
        o.samples,
        budget,
        |prev| {
            // The next page after the previous one, from the first after the end.
            let last = prev.and_then(|p| p["tags"].as_array().filter(|t| t.len() == 1000).and_then(|t| t.last()?.as_str().map(String::from)));
            match last {
                Some(l) => format!("{}/v2/{big}/tags/list?n=1000&last={l}", node_base()),
                None => format!("{}/v2/{big}/tags/list?n=1000", node_base()),
            }
        },
        true,
    )
    .await?;
    eprintln!("catalog pages…");
    let mut catalog = sample_gets(
        &http,
        o.samples,
        budget,
        |_| {
            let r = rng.below(o.repos);
            format!("{}/v2/_catalog?n=1000&last={}", node_base(), repo_name(r))
        },
        true,
    )
    .await?;
    eprintln!("manifest GETs by tag…");
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut manifest_get = sample_gets(
        &http,
        o.samples,
        budget,
        |_| {
            let r = rng.below(o.repos);
            let t = rng.below(plan.tags_of(r));
            format!("{}/v2/{}/manifests/{}", node_base(), repo_name(r), tag_name(t))
        },
        false,
    )
    .await?;
    eprintln!("/metrics scrapes…");
    let mut scrapes = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        scrape(&http, &bases[i % bases.len()]).await?;
        scrapes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // `cluster status` counts every node's blobs held and its backlog. A
    // node reuses its count for a few seconds (the console polls every
    // second), so each sample waits that out first: these are fresh counts.
    eprintln!("cluster status with a fresh storage count…");
    let mut statuses = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        for base in &bases {
            let t = Instant::now();
            let s = status(&http, base).await?;
            statuses.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(s["nodes"].as_array().is_some_and(|a| !a.is_empty()), "round {round}: a status without nodes from {base}");
        }
    }
    eprintln!("reconciler pass…");
    let reconcile = reconcile_pass_ms(&http, &bases[0], Duration::from_secs(10)).await?;
    let backlog: f64 = {
        let mut b = 0.0;
        for base in &bases {
            b += metric(&scrape(&http, base).await?, "berth_replication_backlog_blobs").unwrap_or(0.0);
        }
        b
    };
    let per_node: Vec<(f64, f64, f64)> = nodes.iter().map(|n| (n.rss_mib().0, n.rss_mib().1, n.data_mib())).collect();

    // Catch-up of a 4th node.
    let leader_base = {
        let s = status(&http, &bases[0]).await?;
        let leader = s["leader"].as_u64().context("no leader")?;
        let http_of =
            s["nodes"].as_array().and_then(|a| a.iter().find(|n| n["id"].as_u64() == Some(leader))).and_then(|n| n["http_addr"].as_str().map(String::from));
        http_of.context("the leader's http address")?
    };
    let target = applied_index(&http, &leader_base).await?;
    eprintln!("a 4th node joins; the leader ({leader_base}) has applied {target}…");
    let started = Instant::now();
    let (mut n4, _) = register(&bin, &root, 4, Some((&seed, &token)))?;
    let joined_s = started.elapsed().as_secs_f64();
    n4.start(&bin)?;
    let deadline = started + Duration::from_secs(900);
    let (mut seen, mut n4_lag) = (0, 0.0_f64);
    // Polled every 250 ms: a scrape reads the node's whole blob table (the backlog gauge).
    loop {
        if let Ok(text) = scrape(&http, &n4.base()).await {
            n4_lag = n4_lag.max(metric(&text, "berth_raft_apply_lag_entries").unwrap_or(0.0));
            seen = metric(&text, "berth_raft_applied_index").map_or(seen, |v| v as u64);
            if seen >= target {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "node 4 applied only {seen} of {target} in 15 minutes; see {}", n4.dir.with_extension("log").display());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let catch_up_s = started.elapsed().as_secs_f64();
    let via_snapshot = n4.log().contains("installed metadata snapshot");
    // The leader logs the size of each snapshot it builds.
    let snapshot_bytes = nodes
        .iter()
        .flat_map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("built metadata snapshot"))
                .filter_map(|l| l.split("bytes=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max();
    let n4_rss = n4.rss_mib();
    eprintln!("  node 4 caught up in {catch_up_s:.1} s (join {joined_s:.1} s), via a snapshot: {via_snapshot}");
    // The snapshot makes node 4's reconciler read every blob record, all
    // of them missing there: the full pass at its most expensive.
    let full_read = {
        let (mut found, deadline) = (None, Instant::now() + Duration::from_secs(30));
        while found.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(text) = scrape(&http, &n4.base()).await {
                if metric(&text, "berth_replication_backlog_blobs").unwrap_or(0.0) > 0.0 {
                    found = metric(&text, "berth_reconcile_full_read_seconds")
                        .map(|s| (s * 1000.0, metric(&text, "berth_replication_backlog_blobs").unwrap_or(0.0)));
                }
            }
        }
        found
    };
    let peaks: Vec<f64> = nodes.iter().map(|n| n.rss_mib().1).collect();

    // The report.
    let (tl, cat, mg, sc, st) = (pcts(&mut tag_list), pcts(&mut catalog), pcts(&mut manifest_get), pcts(&mut scrapes), pcts(&mut statuses));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "berth scale: 3 nodes on this machine; {} repositories, {} tags ({} in {big}), {} blob records ({} per repository), {} clients",
        o.repos,
        o.repos + tags_done,
        plan.big + 1,
        blob_records(&o),
        o.blobs_per_repo,
        o.clients
    );
    if let Some((first, last)) = repo_trend {
        println!(
            "new repositories/s, median 5 s window of the first and last quarter: {first:.0} and {last:.0}, last/first {:.2} ({} layers shared by every repository)",
            last / first,
            o.shared_layers
        );
    }
    println!("writes: {repos_per_s:.0} new repositories/s ({blob_pushes_per_s:.0} blob pushes/s) for {repo_secs:.0} s; {tags_per_s:.0} tags/s for {tag_secs:.0} s (5 s windows: {windows_text}); {retries} retries, {failed} failed; settled {settle_s:.1} s later, {scans_queued} scans still queued");
    if let Some(s) = settle_before_tags_s {
        println!("the repositories' blobs settled on every node in {s:.1} s before the tags began");
    }
    println!("{:<36} {:>10} {:>10} {:>10} {:>9}", "read (one client, ms)", "p50", "p99", "max", "samples");
    for (name, v) in [
        ("tag-list page (n=1000)", &tl),
        ("catalog page (n=1000)", &cat),
        ("manifest GET by tag", &mg),
        ("/metrics scrape", &sc),
        ("cluster status, fresh count", &st),
    ] {
        println!("{name:<36} {:>10.2} {:>10.2} {:>10.2} {:>9}", f(v, "p50_ms"), f(v, "p99_ms"), f(v, "max_ms"), v["samples"]);
    }
    println!("{:<10} {:>14} {:>14} {:>14} {:>14} {:>14}", "node", "RSS MiB", "peak RSS MiB", "RSS at writes", "data MiB", "most unapplied");
    for (i, n) in nodes.iter().enumerate() {
        let (rss, _, data) = per_node[i];
        println!("{:<10} {rss:>14.0} {:>14.0} {:>14.0} {data:>14.0} {:>14.0}", n.name, peaks[i], rss_after_writes[i].0, write_lag[i]);
    }
    let n4_data = n4.data_mib();
    println!("{:<10} {:>14.0} {:>14.0} {:>14} {n4_data:>14.0} {n4_lag:>14.0}", "node4", n4_rss.0, n4_rss.1, "-");
    println!(
        "4th node: caught up {catch_up_s:.1} s after `cluster join` (join itself {joined_s:.1} s) to applied index {target}; through a snapshot: {via_snapshot}{}",
        snapshot_bytes.map(|b| format!(" (largest snapshot built: {:.1} MiB)", b as f64 / 1048576.0)).unwrap_or_default()
    );
    match reconcile {
        Some(ms) => println!("reconciler pass with nothing missing ({backlog} blobs in the backlog): {ms:.2} ms"),
        None => println!("reconciler pass: not measurable from outside (no berth_reconcile_pass_seconds in /metrics); backlog {backlog} blobs"),
    }
    match full_read {
        Some((ms, missing)) => println!("node 4's full read of every blob record after the snapshot ({missing} missing there): {ms:.0} ms"),
        None => println!("node 4's full read: not seen within 30 s of its catch-up"),
    }
    println!();
    println!("{:<52} {:>8} {:>10} {:>6}", "FIGURE", "value", "target", "");
    let mut verdicts = vec![
        verdict("sustained tag writes/s (manifest PUTs)", tags_per_s, 2000.0, true),
        verdict("tag-list page p99 ms", f(&tl, "p99_ms"), 10.0, false),
        verdict("catalog page p99 ms", f(&cat, "p99_ms"), 10.0, false),
        verdict("manifest GET by tag p99 ms", f(&mg, "p99_ms"), 10.0, false),
        verdict("max RSS of a node MiB", per_node.iter().map(|p| p.0).fold(0.0, f64::max), 512.0, false),
        verdict("max peak RSS of a node MiB", peaks.iter().copied().fold(n4_rss.1, f64::max), 512.0, false),
        verdict("4th node catch-up s", catch_up_s, 60.0, false),
        verdict("/metrics scrape p99 ms", f(&sc, "p99_ms"), 5.0, false),
    ];
    if let Some(ms) = reconcile {
        verdicts.push(verdict("idle reconciler pass ms", ms, 5.0, false));
    }
    let node_rows: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({"node": n.name, "rss_mib": per_node[i].0, "peak_rss_mib": peaks[i], "rss_after_writes_mib": rss_after_writes[i].0, "data_mib": per_node[i].2, "most_unapplied_entries": write_lag[i]})
        })
        .chain(std::iter::once(serde_json::json!({"node": "node4", "rss_mib": n4_rss.0, "peak_rss_mib": n4_rss.1, "data_mib": n4_data, "most_unapplied_entries": n4_lag})))
        .collect();
    let doc = serde_json::json!({
        "bench": "scale", "repos": o.repos, "tags": o.repos + tags_done, "big_repo_tags": plan.big + 1, "blob_records": blob_records(&o), "shared_layers": o.shared_layers,
        "blobs_per_repo": o.blobs_per_repo, "clients": o.clients,
        "writes": {"repos_per_s": repos_per_s, "repo_quarter_medians_per_s": repo_trend, "blob_pushes_per_s": blob_pushes_per_s, "repo_phase_s": repo_secs, "tags_per_s": tags_per_s, "tag_phase_s": tag_secs,
                   "tag_windows_per_s": window_rates, "retries": retries, "failed": failed, "settle_s": settle_s, "settle_before_tags_s": settle_before_tags_s, "scans_queued_at_reads": scans_queued},
        "reads": {"tag_list": tl, "catalog": cat, "manifest_get": mg, "metrics_scrape": sc, "cluster_status_fresh": st},
        "reconcile_pass_ms": reconcile, "backlog_blobs": backlog, "node4_full_read": full_read.map(|(ms, missing)| serde_json::json!({"ms": ms, "missing": missing})),
        "catch_up": {"seconds": catch_up_s, "join_s": joined_s, "target_index": target, "via_snapshot": via_snapshot, "snapshot_bytes": snapshot_bytes},
        "nodes": node_rows, "verdicts": verdicts,
    });
    drop(n4);
    drop(nodes);
    write_json(&o.out, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_plan_gives_every_tag_once_and_the_counts_it_promises() {
        for (repos, tags, share) in [(10, 100, 0.1), (7, 50, 0.3), (3, 3, 0.1), (5, 1000, 0.0)] {
            let plan = TagPlan::new(repos, tags, share);
            let mut seen: Vec<std::collections::BTreeSet<u64>> = vec![[0].into(); repos as usize];
            for j in 0..plan.extra {
                let (r, t) = plan.write(j);
                assert!(seen[r as usize].insert(t), "tag {t} of repository {r} twice");
            }
            for (r, s) in seen.iter().enumerate() {
                assert_eq!(s.len() as u64, plan.tags_of(r as u64), "repository {r} of {repos}/{tags}/{share}");
                assert_eq!(*s.iter().last().unwrap(), s.len() as u64 - 1, "tags of {r} are 0..n");
            }
            assert_eq!(seen.iter().map(|s| s.len() as u64).sum::<u64>(), tags);
        }
    }
}
