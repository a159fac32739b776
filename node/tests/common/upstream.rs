//! A real upstream registry for mirroring and proxy-cache tests: Debian's
//! `docker-registry` (CNCF distribution) with htpasswd basic auth, images
//! made as OCI layouts, and the admin API called with curl.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_common::Digest;
use serde_json::{json, Value};

use super::daemons::run;
use super::procs::free_port;

/// One admin API call through `http` as `user:password`: status and JSON body.
pub fn api(http: &str, creds: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-u", creds]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
    }
    let out = run(cmd.arg(format!("http://{http}{path}")));
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Waits until `cond` holds, polling.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A layer: a tar holding one file that says `content`.
pub fn layer_tar(content: impl AsRef<[u8]>) -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("hello.txt"), content.as_ref()).unwrap();
    let out = Command::new("tar").args(["--mtime=@0", "--owner=0", "--group=0", "-C"]).arg(src.path()).args(["-cf", "-", "hello.txt"]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// An OCI layout at `dir` holding one small image tagged `tag`, its layer
/// saying `content`; returns the manifest's digest.
pub fn image_layout(dir: &Path, tag: &str, content: impl AsRef<[u8]>) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let (ld, ls) = put(&layer_tar(content.as_ref()));
    let (cd, cs) = put(format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ld}"]}}}}"#).as_bytes());
    let m = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    });
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    md
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The CNCF registry (Debian's `docker-registry`) on loopback, with
/// htpasswd basic auth and its storage in a temporary directory; stopped
/// when dropped.
pub struct UpstreamRegistry {
    pub child: std::process::Child,
    pub addr: String,
    pub creds: String,
}

impl Drop for UpstreamRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const UP_USER: &str = "puller";
pub const UP_PASS: &str = "upstream-pass-31";
pub const UP_REPO: &str = "upstream/app";

pub fn start_upstream(dir: &Path) -> UpstreamRegistry {
    start_upstream_with(dir, None)
}

/// [`start_upstream`], serving HTTPS with `tls` (certificate, key) when given.
pub fn start_upstream_with(dir: &Path, tls: Option<(&Path, &Path)>) -> UpstreamRegistry {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let htpasswd = run(Command::new("htpasswd").args(["-Bbn", UP_USER, UP_PASS]));
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let tls_yaml = match tls {
        None => String::new(),
        Some((cert, key)) => format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()),
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls_yaml}auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
        dir.join("data").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry (scripts/setup-debian.sh installs it)");
    let up = UpstreamRegistry { child, addr, creds: format!("{UP_USER}:{UP_PASS}") };
    let scheme = if tls.is_some() { "https" } else { "http" };
    eventually("the upstream registry", Duration::from_secs(20), || {
        let out = Command::new("curl").args(["-k", "-s", "-o", "/dev/null", "-w", "%{http_code}"]).arg(format!("{scheme}://{}/v2/", up.addr)).output().unwrap();
        String::from_utf8_lossy(&out.stdout) == "401"
    });
    up
}
