//! Daemons and commands the real-client tests drive: a dockerd and a
//! containerd of the test's own, stopped when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see scripts/setup-debian.sh)"));
    assert!(out.status.success(), "{cmd:?} failed:\nstdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A daemon this test started; stopped (and waited for) when dropped.
pub struct Daemon {
    name: &'static str,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_socket(sock: &Path, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "{what} did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn start_dockerd(root: &Path) -> (Daemon, String) {
    let d = root.join("docker");
    for sub in ["data", "exec", "run"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let sock = d.join("run/docker.sock");
    let log = d.join("dockerd.log");
    let child = Command::new("dockerd")
        .args(["--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs"])
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("run/docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start dockerd (apt-get install docker.io)");
    let daemon = Daemon { name: "dockerd", child };
    wait_for_socket(&sock, "dockerd", &log);
    let host = format!("unix://{}", sock.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("docker").env("DOCKER_HOST", &host).arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        assert!(Instant::now() < deadline, "dockerd never answered: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(200));
    }
    (daemon, host)
}

pub fn start_containerd(root: &Path) -> (Daemon, PathBuf) {
    let d = root.join("containerd");
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("containerd.sock");
    let log = d.join("containerd.log");
    let child = Command::new("containerd")
        .arg("--root")
        .arg(d.join("root"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start containerd (apt-get install containerd)");
    let daemon = Daemon { name: "containerd", child };
    wait_for_socket(&sock, "containerd", &log);
    (daemon, sock)
}

/// podman with its storage under `root` (vfs: works without overlay here).
pub fn podman_in(root: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root").arg(root.join("storage")).arg("--runroot").arg(root.join("run")).arg("--storage-driver=vfs");
    cmd
}

/// The first `sha256:` digest in a tool's output.
pub fn digest_in(text: &str) -> String {
    let i = text.find("sha256:").unwrap_or_else(|| panic!("no digest in {text:?}"));
    text[i..i + 71].to_string()
}

/// `docker` talking to the daemon at `host`, with its config in `config`.
pub fn docker_in(host: &str, config: &Path) -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", host).env("DOCKER_CONFIG", config);
    cmd
}

/// `docker login` with the secret on standard input, as scripts should.
pub fn docker_login(mut docker: Command, registry: &str, user: &str, secret: &str) -> std::process::Output {
    let mut child =
        docker.args(["login", "-u", user, "--password-stdin", registry]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), secret.as_bytes()).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// A fresh Debian 12 root filesystem (`debootstrap --variant=minbase
/// bookworm` from the Debian mirror) unpacked into `dir`. The first call on
/// a machine makes it (about 90 s) and keeps a tarball in
/// ~/.cache/berth-debian; later calls unpack that.
pub fn debian_root(dir: &Path) {
    let cache = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/berth-debian");
    let tarball = cache.join("bookworm-minbase.tar");
    if !tarball.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let fresh = cache.join(format!("bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&fresh);
        run(Command::new("debootstrap").args(["--variant=minbase", "bookworm"]).arg(&fresh).arg("http://deb.debian.org/debian"));
        let part = cache.join(format!("bookworm-minbase.tar.{}", std::process::id()));
        run(Command::new("tar").arg("-C").arg(&fresh).arg("--numeric-owner").arg("-cf").arg(&part).arg("."));
        std::fs::rename(&part, &tarball).unwrap();
        let _ = std::fs::remove_dir_all(&fresh);
    }
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("tar").arg("-C").arg(dir).arg("--numeric-owner").arg("-xf").arg(&tarball));
}
