//! Registry benchmarks: a berth node and the CNCF distribution registry
//! (Debian's `docker-registry`, filesystem storage), each a process of its
//! own started here, driven by the same streaming HTTP client; and the
//! machine's own limits measured in the same run, so every figure is a ratio.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A 64 MiB buffer of incompressible bytes; larger blobs repeat it, so the
/// client spends no CPU making data while it is measured.
pub struct Data {
    chunk: Bytes,
}

pub const CHUNK: u64 = 64 << 20;

impl Data {
    pub fn new() -> Data {
        let mut buf = vec![0u8; CHUNK as usize];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        Data { chunk: Bytes::from(buf) }
    }

    /// `size` bytes (a multiple of 1 MiB) with a `salt` so blobs differ, as a stream of 1 MiB pieces.
    pub fn stream(&self, size: u64, salt: u64) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let chunk = self.chunk.clone();
        let pieces = size.div_ceil(1 << 20);
        futures::stream::iter((0..pieces).map(move |i| {
            let off = ((i << 20) % CHUNK) as usize;
            let len = (size - (i << 20)).min(1 << 20) as usize;
            let mut piece = chunk.slice(off..off + len);
            if i == 0 && salt != 0 {
                let mut first = piece.to_vec();
                first[..8].copy_from_slice(&salt.to_le_bytes());
                piece = Bytes::from(first);
            }
            Ok(piece)
        }))
    }

    pub fn digest(&self, size: u64, salt: u64) -> String {
        let mut h = sha2::Sha256::new();
        let pieces = size.div_ceil(1 << 20);
        for i in 0..pieces {
            let off = ((i << 20) % CHUNK) as usize;
            let len = (size - (i << 20)).min(1 << 20) as usize;
            if i == 0 && salt != 0 {
                let mut first = self.chunk[off..off + len].to_vec();
                first[..8].copy_from_slice(&salt.to_le_bytes());
                h.update(&first);
            } else {
                h.update(&self.chunk[off..off + len]);
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// A registry process under test.
pub struct Server {
    pub name: &'static str,
    pub base: String,
    pub auth: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Peak resident memory of the process so far, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_up(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/v2/")).await {
            if r.status().as_u16() == 200 || r.status().as_u16() == 401 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{base} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `berth` binary built beside this one.
fn berth_binary() -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("berth");
    if !p.exists() {
        bail!("no berth binary at {}: build it too (cargo build --release -p berth-node -p berth-bench)", p.display());
    }
    Ok(p)
}

/// One berth node, started as an operator would.
pub async fn start_berth() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let bin = berth_binary()?;
    let (http, peer) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "bench-password")?;
    let data = dir.path().join("node");
    let out = Command::new(&bin)
        .args(["cluster", "init", "--region", "bench", "--http", &http, "--peer", &peer, "--admin-password-file"])
        .arg(&pw)
        .arg("--data-dir")
        .arg(&data)
        .env("BERTH_LOG", "error")
        .output()?;
    if !out.status.success() {
        bail!("berth cluster init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let child = Command::new(&bin).args(["node", "start", "--data-dir"]).arg(&data).env("BERTH_LOG", "error").stdout(Stdio::null()).spawn()?;
    let base = format!("http://{http}");
    wait_up(&base).await?;
    Ok(Server { name: "berth", base, auth: Some(("admin".into(), "bench-password".into())), child, _dir: dir })
}

/// The CNCF distribution registry from Debian, filesystem storage.
pub async fn start_distribution() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("config.yml");
    let mut f = std::fs::File::create(&config)?;
    write!(
        f,
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.path().join("data").display()
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry (apt install docker-registry)")?;
    let base = format!("http://127.0.0.1:{port}");
    wait_up(&base).await?;
    Ok(Server { name: "distribution", base, auth: None, child, _dir: dir })
}

pub struct Client {
    http: reqwest::Client,
}

impl Client {
    pub fn new() -> Client {
        Client { http: reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("http client") }
    }

    fn req(&self, s: &Server, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", s.base) };
        let rb = self.http.request(method, url);
        match &s.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// Pushes a blob: POST for a session, one streamed PUT with the digest.
    pub async fn push_blob(&self, s: &Server, repo: &str, data: &Data, size: u64, salt: u64, digest: &str) -> anyhow::Result<()> {
        let r = self.req(s, reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await?;
        if r.status().as_u16() != 202 {
            bail!("{} POST upload: {}", s.name, r.status());
        }
        let loc = r.headers().get("location").context("no Location")?.to_str()?.to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let body = reqwest::Body::wrap_stream(data.stream(size, salt));
        let r = self.req(s, reqwest::Method::PUT, &format!("{loc}{sep}digest={digest}")).header("content-length", size).body(body).send().await?;
        if r.status().as_u16() != 201 {
            bail!("{} PUT upload: {} {}", s.name, r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Pulls a blob and drops its bytes; returns how many.
    pub async fn pull_blob(&self, s: &Server, repo: &str, digest: &str) -> anyhow::Result<u64> {
        let mut r = self.req(s, reqwest::Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await?;
        if !r.status().is_success() {
            bail!("{} GET blob: {}", s.name, r.status());
        }
        let mut n = 0u64;
        while let Some(c) = r.chunk().await? {
            n += c.len() as u64;
        }
        Ok(n)
    }

    pub async fn put_manifest(&self, s: &Server, repo: &str, tag: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self
            .req(s, reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("{} PUT manifest: {} {}", s.name, r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    pub async fn get_manifest(&self, s: &Server, repo: &str, tag: &str) -> anyhow::Result<Vec<u8>> {
        let r = self
            .req(s, reqwest::Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("{} GET manifest: {}", s.name, r.status());
        }
        Ok(r.bytes().await?.to_vec())
    }
}

/// MB/s of one core hashing with SHA-256.
pub fn sha256_rate(data: &Data, size: u64) -> f64 {
    let started = Instant::now();
    let mut h = sha2::Sha256::new();
    let mut done = 0;
    while done < size {
        h.update(&data.chunk);
        done += CHUNK;
    }
    std::hint::black_box(h.finalize());
    done as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// MB/s of one loopback TCP stream.
pub async fn tcp_rate(data: &Data, size: u64) -> anyhow::Result<f64> {
    let server = TcpListener::bind("127.0.0.1:0").await?;
    let addr = server.local_addr()?;
    let chunk = data.chunk.clone();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = server.accept().await {
            let mut sent = 0;
            while sent < size {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += CHUNK;
            }
        }
    });
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    while total < size {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// MB/s writing `size` bytes to a file with one fsync at the end, then reading them back.
pub fn disk_rates(dir: &Path, data: &Data, size: u64) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("disk-probe");
    let started = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    let mut done = 0;
    while done < size {
        f.write_all(&data.chunk)?;
        done += CHUNK;
    }
    f.sync_all()?;
    let write = done as f64 / started.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let started = Instant::now();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let read_rate = read as f64 / started.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(&path)?;
    Ok((write, read_rate))
}

/// p-th percentile (0..=100) of `v`, which gets sorted.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}
