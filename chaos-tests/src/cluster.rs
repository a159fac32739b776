//! A cluster of real `berth` processes, started through the CLI the way an
//! operator would (`cluster init`, `cluster join`, `node start`), placed in
//! pretend regions behind a [`Wan`], with the faults the scenarios inject:
//! SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart, partitions, slow links,
//! a full disk, removing a node and joining a new one.
//!
//! Node `i` lives on its own loopback address `127.0.1.(i+1)` (HTTP, peer
//! port and its WAN proxy), so the proxies tell nodes apart by source IP.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wan::{LinkSpec, Wan, WanProxy};

/// The admin password every harness cluster gets.
pub const PASSWORD: &str = "chaos password";

/// The `berth` binary: `BERTH_BIN`, else the one cargo built beside the
/// running test or bench (`target/<profile>/berth`).
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("berth");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo test --workspace builds it)", bin.display());
    bin
}

/// Runs the CLI to completion.
pub fn berth(args: &[&str]) -> std::process::Output {
    berth_of(&berth_bin(), args)
}

/// Runs the CLI of the binary `bin` (another release's) to completion.
pub fn berth_of(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).env("BERTH_LOG", "warn").output().expect("run berth")
}

/// A node's HTTP and peer ports on `ip`, held until the caller lets them go
/// (after binding its own WAN proxy there, which must take neither): both
/// free on TCP, and the peer port on UDP too, for QUIC.
fn hold_ports(ip: IpAddr) -> (std::net::TcpListener, std::net::TcpListener, std::net::UdpSocket) {
    loop {
        let http = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
        let peer = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
        let port = peer.local_addr().expect("local addr").port();
        if let Ok(quic) = std::net::UdpSocket::bind((ip, port)) {
            return (http, peer, quic);
        }
    }
}

/// Round-trip times between regions; a region to itself is `local`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub regions: Vec<(String, usize)>,
    pub rtt: Vec<((String, String), Duration)>,
    pub local: Duration,
    /// Bandwidth of every link between regions, bytes per second.
    pub rate: Option<u64>,
    /// Each node's uplink, shared by all its links, bytes per second.
    pub egress: Option<u64>,
}

impl Topology {
    /// One node per region, every pair of regions `rtt` apart.
    pub fn regions(names: &[&str], rtt: Duration) -> Topology {
        let mut pairs = Vec::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                pairs.push(((a.to_string(), b.to_string()), rtt));
            }
        }
        Topology { regions: names.iter().map(|n| (n.to_string(), 1)).collect(), rtt: pairs, local: Duration::from_micros(200), rate: None, egress: None }
    }

    pub fn rtt_between(&self, a: &str, b: &str) -> Duration {
        if a == b {
            return self.local;
        }
        self.rtt.iter().find(|((x, y), _)| (x == a && y == b) || (x == b && y == a)).map(|(_, d)| *d).unwrap_or(self.local)
    }

    pub fn link(&self, a: &str, b: &str) -> LinkSpec {
        let spec = LinkSpec::rtt(self.rtt_between(a, b));
        match self.rate {
            Some(r) if a != b => spec.with_rate(r),
            _ => spec,
        }
    }
}

pub struct Node {
    pub index: usize,
    pub region: String,
    pub ip: IpAddr,
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub peer: SocketAddr,
    pub proxy: WanProxy,
    child: Option<Child>,
    stopped: bool,
    /// The `berth` binary this node runs (another release's in an upgrade).
    pub bin: PathBuf,
    /// Raft id, from `cluster status` once the node is a member.
    pub id: Option<u64>,
    pub removed: bool,
}

impl Node {
    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        self.child.as_ref().map(|c| nix::unistd::Pid::from_raw(c.id() as i32))
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.index);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.with_extension("log")).expect("open node log");
        let child = Command::new(&self.bin)
            .args(["node", "start", "--data-dir", self.dir.to_str().expect("utf-8 path")])
            .env("BERTH_LOG", std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn,berth_raft::store=info,berth_raft::format=info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth node start");
        self.child = Some(child);
        self.stopped = false;
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }

    fn kill9(&mut self) {
        if self.stopped {
            self.signal(nix::sys::signal::Signal::SIGCONT);
        }
        self.signal(nix::sys::signal::Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after `grace`).
    fn terminate(&mut self, grace: Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            if Instant::now() > deadline {
                self.kill9();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new("umount").arg("-l").arg(&self.dir).stderr(Stdio::null()).status();
    }
}

pub struct Cluster {
    pub topology: Topology,
    pub wan: Wan,
    pub nodes: Vec<Node>,
    pub root: tempfile::TempDir,
    join_token: String,
    seed_peer: String,
    password_file: PathBuf,
    /// Extra lines for each node's `berth.toml` `[raft]` section.
    raft_overrides: Vec<(String, String)>,
    /// The binary new nodes are registered and run with.
    bin: PathBuf,
}

impl Cluster {
    /// Starts one node per slot of `topology` and waits until they form a
    /// cluster with a leader and `min(nodes, 5)` voters (odd).
    pub async fn start(topology: Topology) -> Cluster {
        Cluster::start_with(topology, Vec::new()).await
    }

    /// [`Cluster::start`] with `[raft]` settings changed in every node's
    /// configuration (`("snapshot_after_entries", "200")`).
    pub async fn start_with(topology: Topology, raft_overrides: Vec<(String, String)>) -> Cluster {
        Cluster::start_using(topology, raft_overrides, berth_bin()).await
    }

    /// [`Cluster::start_with`], every node registered and run by the
    /// `berth` binary `bin` (a previous release, for an upgrade).
    pub async fn start_using(topology: Topology, raft_overrides: Vec<(String, String)>, bin: PathBuf) -> Cluster {
        let mut root = tempfile::Builder::new().prefix("berth-chaos-").tempdir().expect("temp dir");
        // BERTH_CHAOS_KEEP=1 keeps the nodes' data and logs for reading a failure.
        if std::env::var("BERTH_CHAOS_KEEP").is_ok_and(|v| v == "1") {
            root.disable_cleanup(true);
            eprintln!("keeping {}", root.path().display());
        }
        let password_file = root.path().join("admin-password");
        std::fs::write(&password_file, PASSWORD).expect("write password");
        let wan = Wan::new(LinkSpec::rtt(topology.local));
        let mut c = Cluster {
            topology: topology.clone(),
            wan,
            nodes: Vec::new(),
            root,
            join_token: String::new(),
            seed_peer: String::new(),
            password_file,
            raft_overrides,
            bin,
        };
        for (region, count) in &topology.regions {
            for _ in 0..*count {
                c.add_node(region).await;
            }
        }
        let voters = match c.nodes.len().min(5) {
            n if n % 2 == 0 => n - 1,
            n => n,
        };
        c.wait_formed(voters, Duration::from_secs(60)).await;
        c
    }

    /// Registers a new node in `region` (`cluster init` for the first,
    /// `cluster join` after) and starts it. Returns its index.
    pub async fn add_node(&mut self, region: &str) -> usize {
        let index = self.nodes.len();
        assert!(index < 250, "at most 250 nodes");
        let ip: IpAddr = format!("127.0.1.{}", index + 1).parse().expect("loopback address");
        let held = hold_ports(ip);
        let http = held.0.local_addr().expect("local addr");
        let peer = held.1.local_addr().expect("local addr");
        let proxy = self.wan.proxy(SocketAddr::new(ip, 0), peer, index).await.expect("start the node's WAN proxy");
        drop(held);
        self.wan.add_host(index, ip);
        if let Some(e) = self.topology.egress {
            self.wan.set_egress(index, e);
        }
        for other in &self.nodes {
            self.wan.set_path(index, other.index, self.topology.link(region, &other.region));
        }
        let dir = self.root.path().join(format!("n{}", index + 1));
        let d = dir.to_str().expect("utf-8 path").to_string();
        let (http_s, peer_s, adv) = (http.to_string(), peer.to_string(), proxy.addr.to_string());
        let pw = self.password_file.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["cluster", if index == 0 { "init" } else { "join" }];
        args.extend(["--data-dir", &d, "--region", region, "--http", &http_s, "--peer", &peer_s, "--advertise-peer", &adv]);
        if index == 0 {
            args.extend(["--admin-password-file", &pw]);
        } else {
            args.extend(["--seed", &self.seed_peer, "--token", &self.join_token]);
        }
        let out = berth_of(&self.bin, &args);
        assert!(out.status.success(), "node {index} failed to register: {}", String::from_utf8_lossy(&out.stderr));
        if index == 0 {
            self.join_token = String::from_utf8_lossy(&out.stdout).lines().last().expect("init prints the join token").trim().to_string();
            self.seed_peer = adv.clone();
        }
        self.apply_raft_overrides(&dir);
        let mut node = Node {
            index,
            region: region.to_string(),
            ip,
            dir,
            http,
            peer,
            proxy,
            child: None,
            stopped: false,
            bin: self.bin.clone(),
            id: None,
            removed: false,
        };
        node.start();
        self.nodes.push(node);
        if index == 0 {
            self.wait_ready(0, Duration::from_secs(20)).await;
        }
        index
    }

    fn apply_raft_overrides(&self, dir: &Path) {
        if self.raft_overrides.is_empty() {
            return;
        }
        let path = dir.join("berth.toml");
        let text = std::fs::read_to_string(&path).expect("read berth.toml");
        let mut out = String::new();
        let mut in_raft = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                in_raft = t == "[raft]";
            }
            let key = t.split('=').next().unwrap_or("").trim();
            match self.raft_overrides.iter().find(|(k, _)| in_raft && k == key) {
                Some((k, v)) => out.push_str(&format!("{k} = {v}\n")),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        std::fs::write(&path, out).expect("write berth.toml");
    }

    /// Waits until node `i` answers `/health/ready`.
    pub async fn wait_ready(&self, i: usize, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = http.get(format!("{}/health/ready", self.nodes[i].base())).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node {i} not ready within {within:?}; see {}", self.nodes[i].dir.with_extension("log").display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `berth cluster status --json` through node `i`'s data dir.
    pub fn status(&self, i: usize) -> Option<Value> {
        let out = berth(&["cluster", "status", "--json", "--data-dir", self.nodes[i].dir.to_str()?]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// The status as any running node reports it.
    pub fn any_status(&self) -> Option<Value> {
        self.nodes.iter().filter(|n| n.is_running() && !n.stopped && !n.removed).find_map(|n| self.status(n.index))
    }

    /// Waits for a leader and `voters` voters, and learns every node's id.
    pub async fn wait_formed(&mut self, voters: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.any_status() {
                let members = s["nodes"].as_array().cloned().unwrap_or_default();
                let n_voters = members.iter().filter(|n| n["role"] == "voter").count();
                for n in &mut self.nodes {
                    let adv = n.proxy.addr.to_string();
                    if let Some(m) = members.iter().find(|m| m["peer_addr"].as_str() == Some(adv.as_str())) {
                        n.id = m["id"].as_u64();
                    }
                }
                if s["leader"].is_u64() && n_voters == voters && self.nodes.iter().all(|n| n.removed || n.id.is_some()) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cluster did not form {voters} voters within {within:?}: {:?}", self.any_status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Index of the current leader, as a running node sees it.
    pub fn leader(&self) -> Option<usize> {
        let id = self.any_status()?["leader"].as_u64()?;
        self.nodes.iter().position(|n| n.id == Some(id))
    }

    /// Waits (up to `within`) until a running node reports a leader; its index.
    pub async fn wait_leader(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start();
    }

    /// SIGSTOP: the process stays, its sockets stay open, it answers nothing.
    pub fn hang(&mut self, i: usize) {
        self.nodes[i].signal(nix::sys::signal::Signal::SIGSTOP);
        self.nodes[i].stopped = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(nix::sys::signal::Signal::SIGCONT);
        self.nodes[i].stopped = false;
    }

    /// A clean stop (SIGTERM), then start again and wait until ready.
    pub async fn restart_clean(&mut self, i: usize) {
        self.nodes[i].terminate(Duration::from_secs(15));
        self.nodes[i].start();
        self.wait_ready(i, Duration::from_secs(30)).await;
    }

    /// The binary nodes added from now on are registered and run with.
    pub fn set_binary(&mut self, bin: &Path) {
        self.bin = bin.to_path_buf();
    }

    /// Node `i` stopped cleanly and started again with the binary `bin`,
    /// as an operator upgrades a node: a leader first hands leadership
    /// over (`berth node stepdown`), so writes wait for no election.
    pub async fn upgrade(&mut self, i: usize, bin: &Path) {
        if self.leader() == Some(i) {
            let out = berth(&["node", "stepdown", "--data-dir", self.nodes[i].dir.to_str().expect("utf-8 path")]);
            assert!(out.status.success(), "stepdown of node {i}: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.nodes[i].terminate(Duration::from_secs(15));
        self.nodes[i].bin = bin.to_path_buf();
        self.nodes[i].start();
        self.wait_ready(i, Duration::from_secs(60)).await;
    }

    /// Indices of the nodes in `region`.
    pub fn in_region(&self, region: &str) -> Vec<usize> {
        self.nodes.iter().filter(|n| n.region == region && !n.removed).map(|n| n.index).collect()
    }

    /// Cuts `region` off from every other region, both ways.
    pub fn cut_off(&self, region: &str) {
        let inside = self.in_region(region);
        let outside: Vec<usize> = self.nodes.iter().filter(|n| n.region != region).map(|n| n.index).collect();
        self.wan.partition(&inside, &outside);
    }

    pub fn heal(&self) {
        self.wan.heal();
    }

    /// `berth cluster remove` for node `i` (through another node), then
    /// stops its process.
    pub fn remove(&mut self, i: usize) {
        let id = self.nodes[i].id.expect("a member has an id").to_string();
        let via = self.nodes.iter().find(|n| n.index != i && n.is_running() && !n.removed).expect("another running node").dir.clone();
        let out = berth(&["cluster", "remove", &id, "--data-dir", via.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "cluster remove {id}: {}", String::from_utf8_lossy(&out.stderr));
        self.nodes[i].terminate(Duration::from_secs(10));
        self.nodes[i].removed = true;
    }

    /// Mounts a `size_mib` tmpfs over node `i`'s data directory while it is
    /// stopped, copying its contents, so the node runs on a small disk.
    /// Needs root; returns false (and changes nothing) without it.
    pub fn shrink_disk(&mut self, i: usize, size_mib: u64) -> bool {
        if !nix::unistd::Uid::effective().is_root() {
            return false;
        }
        let dir = self.nodes[i].dir.clone();
        let was_running = self.nodes[i].is_running();
        self.nodes[i].terminate(Duration::from_secs(15));
        let saved = dir.with_extension("saved");
        let ok = std::fs::rename(&dir, &saved).is_ok()
            && std::fs::create_dir(&dir).is_ok()
            && Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"]).arg(&dir).status().is_ok_and(|s| s.success())
            && Command::new("cp").arg("-a").arg(format!("{}/.", saved.display())).arg(&dir).status().is_ok_and(|s| s.success());
        if was_running {
            self.nodes[i].start();
        }
        ok
    }

    /// Fills node `i`'s filesystem, leaving about `leave_kib` free.
    pub fn fill_disk(&self, i: usize, leave_kib: u64) -> PathBuf {
        let stat = nix::sys::statvfs::statvfs(&self.nodes[i].dir).expect("statvfs");
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        let filler = self.nodes[i].dir.join("filler");
        let f = std::fs::File::create(&filler).expect("create filler");
        let _ = f.set_len(0);
        let mut left = free.saturating_sub(leave_kib * 1024);
        let chunk = vec![0xa5u8; 1 << 20];
        let mut f = std::io::BufWriter::new(f);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = std::io::Write::flush(&mut f);
        filler
    }

    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.with_extension("log")).unwrap_or_default()
    }
}
