//! Real `berth` processes, started through the CLI as an operator would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

pub fn berth(args: &[&str]) -> Output {
    Command::new(BERTH).args(args).env("BERTH_LOG", "warn").output().expect("run berth")
}

pub fn ok(args: &[&str]) -> String {
    let out = berth(args);
    assert!(out.status.success(), "berth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A free port on `ip`, found by binding and releasing it.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A node's HTTP and peer addresses on `ip`, on two different free ports:
/// both are held until both are picked, since two calls of [`free_port`]
/// in a row may be given the same port.
pub fn free_addr_pair(ip: &str) -> (String, String) {
    let a = std::net::TcpListener::bind((ip, 0)).unwrap();
    let b = std::net::TcpListener::bind((ip, 0)).unwrap();
    (format!("{ip}:{}", a.local_addr().unwrap().port()), format!("{ip}:{}", b.local_addr().unwrap().port()))
}

/// A `berth node start` process, SIGKILLed when dropped.
pub struct Proc {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn start(dir: &Path) -> Proc {
        Proc::start_with(dir, &[])
    }

    /// `berth node start` with extra flags (e.g. `--tls-cluster`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Proc {
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let child = Command::new(BERTH)
            .args(["node", "start", "--data-dir", dir.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        Proc { dir: dir.to_path_buf(), child: Some(child) }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory in bytes (from `/proc`), while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        Some(status_kib(&self.pid()?.to_string(), "VmRSS")? * 1024)
    }

    /// Whether the process is still running (not exited or killed).
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            c.wait().unwrap();
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        c.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn status(dir: &Path) -> Option<Value> {
    let out = berth(&["cluster", "status", "--json", "--data-dir", dir.to_str().unwrap()]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Polls `status` on `dir` until `pred` holds.
pub fn wait_status(dir: &Path, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = status(dir) {
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("{what}: last status {s:#}");
            }
        } else if Instant::now() > deadline {
            panic!("{what}: status never answered");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn voters(s: &Value) -> Vec<u64> {
    s["nodes"].as_array().unwrap().iter().filter(|n| n["role"] == "voter").map(|n| n["id"].as_u64().unwrap()).collect()
}

/// A cluster of real processes: node i on 127.0.0.i, region per node.
pub struct ProcCluster {
    pub root: tempfile::TempDir,
    pub dirs: Vec<PathBuf>,
    pub procs: Vec<Proc>,
    /// Each node's registry address (`127.0.0.i:port`).
    pub http: Vec<String>,
    pub peer: Vec<String>,
    pub token: String,
    pub password_file: PathBuf,
    pub password: String,
}

pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

impl ProcCluster {
    pub fn start(n: usize) -> ProcCluster {
        ProcCluster::start_with(n, &[])
    }

    /// Nodes started with `start_flags`; with `--tls-cluster` they advertise https.
    pub fn start_with(n: usize, start_flags: &[&str]) -> ProcCluster {
        ProcCluster::start_configured(n, start_flags, |_| {})
    }

    /// [`ProcCluster::start_with`], each node's `berth.toml` changed by
    /// `configure` between `init`/`join` and its first start.
    pub fn start_configured(n: usize, start_flags: &[&str], configure: impl Fn(&mut toml::Table)) -> ProcCluster {
        let https = start_flags.contains(&"--tls-cluster");
        let root = tempfile::tempdir().unwrap();
        let password = "correct horse battery".to_string();
        let password_file = root.path().join("admin.pw");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let mut c = ProcCluster { root, dirs: vec![], procs: vec![], http: vec![], peer: vec![], token: String::new(), password_file, password };
        for i in 0..n {
            let ip = format!("127.0.0.{}", i + 1);
            let (http, peer) = free_addr_pair(&ip);
            let dir = c.root.path().join(format!("n{}", i + 1));
            let d = dir.to_str().unwrap().to_string();
            let region = REGIONS[i % REGIONS.len()];
            let scheme = if https { "https" } else { "http" };
            let advertise = format!("{scheme}://{http}");
            let pw = c.password_file.to_str().unwrap().to_string();
            if i == 0 {
                let out = ok(&[
                    "cluster",
                    "init",
                    "--data-dir",
                    &d,
                    "--region",
                    region,
                    "--http",
                    &http,
                    "--peer",
                    &peer,
                    "--advertise-http",
                    &advertise,
                    "--admin-password-file",
                    &pw,
                ]);
                c.token = out.lines().last().unwrap().to_string();
            } else {
                let seed = c.peer[0].clone();
                ok(&[
                    "cluster",
                    "join",
                    "--data-dir",
                    &d,
                    "--region",
                    region,
                    "--http",
                    &http,
                    "--peer",
                    &peer,
                    "--advertise-http",
                    &advertise,
                    "--seed",
                    &seed,
                    "--token",
                    &c.token,
                ]);
            }
            let file = dir.join("berth.toml");
            let mut config: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
            configure(&mut config);
            std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
            c.procs.push(Proc::start_with(&dir, start_flags));
            if i == 0 {
                wait_status(&dir, "first node up", Duration::from_secs(20), |s| s["leader"] == 1);
            }
            c.dirs.push(dir);
            c.http.push(http);
            c.peer.push(peer);
        }
        let want = if n % 2 == 1 { n.min(5) } else { (n - 1).min(5) };
        wait_status(&c.dirs[0], "voters", Duration::from_secs(30), |s| voters(s).len() == want && s["leader"].is_u64());
        c
    }
}

/// A memory figure in KiB from `/proc/<pid>/status` (`pid` may be "self"),
/// such as `VmRSS` or `VmHWM` (the peak).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?.trim().trim_end_matches("kB").trim().parse().ok()
}
