//! Real clients against a 3-node cluster of `berth` processes: docker
//! (through a dockerd this test starts), podman, skopeo, buildah,
//! containerd's ctr and oras. Each compares digests end to end.
//!
//! These tools are installed by `scripts/setup-debian.sh`
//! (which `.ci/run` runs); a missing tool fails the test rather than
//! skipping it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_common::Digest;
use common::daemons::*;
use common::procs::*;

/// The manifest digest a node answers for `repo:reference`.
fn head_digest(http: &str, repo: &str, reference: &str, password: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-I", "-w", "%{http_code} %header{docker-content-digest}", "-u", &format!("admin:{password}")])
        .args(["-H", "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"])
        .arg(format!("http://{http}/v2/{repo}/manifests/{reference}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, digest) = text.split_once(' ')?;
    (code == "200").then(|| digest.trim().to_string())
}

/// A root filesystem tarball with one file in it.
fn rootfs_tar(dir: &Path, content: &str) -> PathBuf {
    let src = dir.join(format!("rootfs-{content}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), content).unwrap();
    let tar = dir.join(format!("rootfs-{content}.tar"));
    run(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tar).arg("."));
    tar
}

/// Writes an OCI layout holding a two-platform index tagged `multi`;
/// returns the index's digest.
fn multi_arch_layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let mut manifests = vec![];
    for arch in ["amd64", "arm64"] {
        let (cd, cs) = put(format!(r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#).as_bytes());
        let (ld, ls) = put(format!("layer for {arch}").as_bytes());
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
        });
        let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
        manifests.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let (id, is) = put(&serde_json::to_vec(&index).unwrap());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is, "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    id
}

#[test]
fn real_clients_push_and_pull_through_any_node() {
    let c = ProcCluster::start(3);
    let pw = c.password.clone();
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());

    // docker: login, push through node 1, pull back, known through node 3.
    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let out = docker_login(docker(), &n1, "admin", &pw);
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    let image = format!("{n1}/team/docker-app:v1");
    run(docker().arg("import").arg(rootfs_tar(&work, "docker")).arg(&image));
    let pushed = digest_in(&run(docker().args(["push", &image])));
    run(docker().args(["rmi", &image]));
    run(docker().args(["pull", &image]));
    let repo_digest = run(docker().args(["inspect", "--format", "{{index .RepoDigests 0}}", &image]));
    assert_eq!(digest_in(&repo_digest), pushed, "docker pulled what it pushed");
    assert_eq!(head_digest(&n3, "team/docker-app", "v1", &pw).as_deref(), Some(pushed.as_str()), "node 3 knows the image");

    // podman: login, push through node 2, pull back through node 2.
    let pod_root = work.join("podman");
    let podman = || podman_in(&pod_root);
    let authfile = work.join("podman-auth.json");
    run(podman().args(["login", "--tls-verify=false", "-u", "admin", "-p", &pw, "--authfile"]).arg(&authfile).arg(&n2));
    run(podman().arg("import").arg(rootfs_tar(&work, "podman")).arg("localhost/pod/app:v1"));
    let digestfile = work.join("podman.digest");
    let target = format!("{n2}/team/podman-app:v1");
    run(podman()
        .args(["push", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .arg("--digestfile")
        .arg(&digestfile)
        .args(["localhost/pod/app:v1", &target]));
    let pushed = std::fs::read_to_string(&digestfile).unwrap().trim().to_string();
    run(podman().args(["rmi", "-a", "-f"]));
    run(podman().args(["pull", "--tls-verify=false", "--authfile"]).arg(&authfile).arg(&target));
    let pulled = run(podman().args(["image", "inspect", "--format", "{{.Digest}}", &target]));
    assert_eq!(pulled.trim(), pushed, "podman pulled what it pushed");
    assert_eq!(head_digest(&n1, "team/podman-app", "v1", &pw).as_deref(), Some(pushed.as_str()));

    // skopeo: copy, inspect, list-tags, delete.
    let creds = format!("admin:{pw}");
    let layout = work.join("single");
    let multi = work.join("multi");
    let index_digest = multi_arch_layout(&multi);
    // A single-image layout: the amd64 child of the index, as its own layout.
    run(Command::new("skopeo")
        .args(["copy", "--override-arch", "amd64"])
        .arg(format!("oci:{}:multi", multi.display()))
        .arg(format!("oci:{}:one", layout.display())));
    let src_digest = run(Command::new("skopeo").args(["inspect", "--format", "{{.Digest}}"]).arg(format!("oci:{}:one", layout.display())));
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{}:one", layout.display()))
        .arg(format!("docker://{n1}/team/skopeo-app:v1")));
    let inspected = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--creds", &creds, "--format", "{{.Digest}}"])
        .arg(format!("docker://{n1}/team/skopeo-app:v1")));
    assert_eq!(inspected.trim(), src_digest.trim(), "skopeo stored the manifest byte for byte");
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{}:one", layout.display()))
        .arg(format!("docker://{n1}/team/skopeo-app:v2")));
    let tags: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{n3}/team/skopeo-app"))))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));
    run(Command::new("skopeo").args(["delete", "--tls-verify=false", "--creds", &creds]).arg(format!("docker://{n2}/team/skopeo-app:v1")));
    assert_eq!(head_digest(&n1, "team/skopeo-app", "v1", &pw), None, "deleted through node 2, gone on node 1");
    // copy --all of a multi-arch index, and back. skopeo may re-encode the
    // children (and so the index) on the way; what it wrote is what must
    // come back, byte for byte.
    let all_digest = work.join("skopeo-all.digest");
    run(Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false", "--dest-creds", &creds, "--digestfile"])
        .arg(&all_digest)
        .arg(format!("oci:{}:multi", multi.display()))
        .arg(format!("docker://{n1}/team/multi:latest")));
    let written = std::fs::read_to_string(&all_digest).unwrap().trim().to_string();
    assert!(index_digest.starts_with("sha256:"));
    assert_eq!(head_digest(&n3, "team/multi", "latest", &pw).as_deref(), Some(written.as_str()), "node 3 serves the index skopeo wrote");
    let raw: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{n2}/team/multi:latest"))))
    .unwrap();
    assert_eq!(raw["manifests"].as_array().map(|m| m.len()), Some(2), "both platforms");
    let back = work.join("back");
    run(Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false", "--src-creds", &creds])
        .arg(format!("docker://{n1}/team/multi:latest"))
        .arg(format!("oci:{}:multi", back.display())));
    let back_index: serde_json::Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(back_index["manifests"][0]["digest"], written.as_str());

    // buildah: build from scratch, push through node 2.
    let bah_root = work.join("buildah");
    let buildah = || {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root").arg(bah_root.join("storage")).arg("--runroot").arg(bah_root.join("run")).arg("--storage-driver=vfs");
        cmd
    };
    let ctr = run(buildah().args(["from", "scratch"])).trim().to_string();
    std::fs::write(work.join("buildah.txt"), "built by buildah").unwrap();
    run(buildah().arg("copy").arg(&ctr).arg(work.join("buildah.txt")).arg("/buildah.txt"));
    run(buildah().args(["commit", &ctr, "bah/app:v1"]));
    let bah_digest = work.join("buildah.digest");
    run(buildah()
        .args(["push", "--tls-verify=false", "--creds", &creds, "--digestfile"])
        .arg(&bah_digest)
        .args(["bah/app:v1", &format!("docker://{n2}/team/buildah-app:v1")]));
    let pushed = std::fs::read_to_string(&bah_digest).unwrap().trim().to_string();
    assert_eq!(head_digest(&n3, "team/buildah-app", "v1", &pw).as_deref(), Some(pushed.as_str()));

    // containerd: ctr pulls what buildah pushed, through the node that holds it.
    let (_containerd, sock) = start_containerd(c.root.path());
    let ctr_out = run(Command::new("ctr").arg("-a").arg(&sock).args(["image", "pull", "--plain-http", "--user", &creds, &format!("{n2}/team/buildah-app:v1")]));
    assert!(ctr_out.contains("done"), "{ctr_out}");
    let listed = run(Command::new("ctr").arg("-a").arg(&sock).args(["image", "ls"]));
    assert!(listed.contains(&pushed), "ctr holds the pushed digest: {listed}");

    // oras: an artifact with a subject, found again through the referrers API.
    let subject = head_digest(&n1, "team/docker-app", "v1", &pw).unwrap();
    let script = format!(
        r#"
import json, os, sys, requests, oras.client, oras.oci
host, pw, work = "{n1}", sys.argv[1], "{}"
c = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
c.login(username="admin", password=pw, hostname=host)
h = requests.head(f"http://{{host}}/v2/team/docker-app/manifests/v1", auth=("admin", pw), headers={{"Accept": "application/vnd.docker.distribution.manifest.v2+json"}}).headers
subject = oras.oci.Subject(mediaType=h["Content-Type"], digest=h["Docker-Content-Digest"], size=int(h["Content-Length"]))
os.chdir(work)
with open("sbom.json", "w") as f:
    f.write('{{"sbom": true}}')
r = c.push(target=f"{{host}}/team/docker-app:sbom", files=["sbom.json"], subject=subject)
assert r.status_code == 201, r.text
pushed = r.headers["Docker-Content-Digest"]
refs = requests.get(f"http://{{host}}/v2/team/docker-app/referrers/{{subject.digest}}", auth=("admin", pw)).json()
assert any(m["digest"] == pushed for m in refs["manifests"]), refs
out = os.path.join(work, "oras-out")
os.makedirs(out, exist_ok=True)
files = c.pull(target=f"{{host}}/team/docker-app:sbom", outdir=out)
assert open(os.path.join(out, "sbom.json")).read() == '{{"sbom": true}}'
print(pushed)
"#,
        work.display()
    );
    let pushed = run(Command::new("python3").arg("-c").arg(&script).arg(&pw));
    assert!(pushed.trim().starts_with("sha256:"), "{pushed}");
    assert!(subject.starts_with("sha256:"));
}

#[test]
fn a_replicated_image_is_pulled_from_one_node_when_the_others_are_dead() {
    let mut c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let multi = work.join("multi");
    multi_arch_layout(&multi);
    let layout = work.join("single");
    run(Command::new("skopeo")
        .args(["copy", "--override-arch", "amd64"])
        .arg(format!("oci:{}:multi", multi.display()))
        .arg(format!("oci:{}:one", layout.display())));
    let pushed_file = work.join("pushed.digest");
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds, "--digestfile"])
        .arg(&pushed_file)
        .arg(format!("oci:{}:one", layout.display()))
        .arg(format!("docker://{}/team/survivor:v1", c.http[0])));
    let pushed = std::fs::read_to_string(&pushed_file).unwrap().trim().to_string();

    // Wait until node 3 holds every blob (its disk, so no peer is needed).
    let man: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{}/team/survivor:v1", c.http[2]))))
    .unwrap();
    let mut blobs = vec![man["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(man["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    let deadline = Instant::now() + Duration::from_secs(30);
    for b in &blobs {
        let hex = b.trim_start_matches("sha256:");
        let path = c.dirs[2].join("blobs/sha256").join(&hex[..2]).join(hex);
        while !path.exists() {
            assert!(Instant::now() < deadline, "node 3 never got {b}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Nodes 1 and 2 die: no quorum is left, and none is needed to pull.
    c.procs[0].kill9();
    c.procs[1].kill9();
    let out = work.join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
        .arg(format!("docker://{}/team/survivor:v1", c.http[2]))
        .arg(format!("oci:{}:v1", out.display())));
    let pulled = run(Command::new("skopeo").args(["inspect", "--format", "{{.Digest}}"]).arg(format!("oci:{}:v1", out.display())));
    assert_eq!(pulled.trim(), pushed, "node 3 alone served the whole image");
}
