//! Repository states and mirroring against a real three-node cluster of
//! `berth` processes, with real clients: skopeo and docker pushes refused
//! by a READ_ONLY or MIRROR repository (inside the Raft command), Quay's
//! mirror API and its refusals.
//!
//! Tools come from `scripts/setup-debian.sh`; a missing one fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_common::Digest;
use common::daemons::*;
use common::procs::*;
use serde_json::{json, Value};

const REPO: &str = "team/app";

/// One admin API call through `http` as `user:password`: status and JSON body.
fn api(http: &str, creds: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
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
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An OCI layout at `dir` holding one small image tagged `tag`, its layer
/// saying `content`; returns the manifest's digest.
fn image_layout(dir: &Path, tag: &str, content: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let (cd, cs) = put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let (ld, ls) = put(content.as_bytes());
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

fn skopeo_push(layout: &Path, tag: &str, to: &str, creds: &str) -> Output {
    Command::new("skopeo")
        .args(["copy", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{to}"))
        .output()
        .expect("skopeo (scripts/setup-debian.sh installs it)")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn state_of(http: &str, creds: &str) -> String {
    let (s, v) = api(http, creds, "GET", &format!("/api/v1/repository/{REPO}"), None);
    assert_eq!(s, 200, "{v}");
    v["state"].as_str().unwrap().to_string()
}

fn work_dir(c: &ProcCluster) -> PathBuf {
    let w = c.root.path().join("work");
    std::fs::create_dir_all(&w).unwrap();
    w
}

/// READ_ONLY refuses pushes (skopeo), deletes and tag changes through every
/// node with `405 UNSUPPORTED` "repository is read-only"; MIRROR needs a
/// configuration; back to NORMAL, pushes work again.
#[test]
fn read_only_refuses_pushes_and_deletes_on_every_node() {
    let c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = work_dir(&c);
    let layout = work.join("img");
    image_layout(&layout, "v1", "layer one");
    let out = skopeo_push(&layout, "v1", &format!("{n1}/{REPO}:v1"), &creds);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(state_of(&n3, &creds), "NORMAL");

    // Refusals change nothing.
    let change = |http: &str, state: &str| api(http, &creds, "PUT", &format!("/api/v1/repository/{REPO}/changestate"), Some(json!({"state": state})));
    let (s, v) = change(&n2, "FROZEN");
    assert_eq!(s, 400, "{v}");
    let (s, v) = change(&n2, "MIRROR");
    assert_eq!(s, 400, "no mirror configured: {v}");
    assert!(v.to_string().contains("mirror configuration"), "{v}");
    assert_eq!(state_of(&n1, &creds), "NORMAL");

    let (s, v) = change(&n2, "READ_ONLY");
    assert_eq!(s, 200, "{v}");
    eventually("node 3 sees READ_ONLY", Duration::from_secs(10), || state_of(&n3, &creds) == "READ_ONLY");

    // A push through any node: skopeo says why.
    image_layout(&layout, "v2", "layer two");
    for n in [&n1, &n3] {
        let out = skopeo_push(&layout, "v2", &format!("{n}/{REPO}:v2"), &creds);
        assert!(!out.status.success(), "a push into a read-only repository succeeded");
        assert!(text(&out).contains("repository is read-only"), "{}", text(&out));
    }
    // A delete of the tag, of the manifest: 405 UNSUPPORTED in the OCI shape.
    for reference in ["v1".to_string(), head(&n2, &creds, "v1")] {
        let (s, v) = api(&n2, &creds, "DELETE", &format!("/v2/{REPO}/manifests/{reference}"), None);
        assert_eq!(s, 405, "{v}");
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{v}");
        assert_eq!(v["errors"][0]["message"], "repository is read-only", "{v}");
    }
    // A tag change through the API: 405.
    let (s, v) = api(&n3, &creds, "PUT", &format!("/api/v1/repository/{REPO}/tag/v1"), Some(json!({"immutable": true})));
    assert_eq!(s, 405, "{v}");
    assert_eq!(head(&n3, &creds, "v2"), "", "nothing was pushed");
    assert!(!head(&n3, &creds, "v1").is_empty(), "nothing was deleted");

    // Back to NORMAL: the push goes through.
    let (s, v) = change(&n3, "NORMAL");
    assert_eq!(s, 200, "{v}");
    eventually("node 1 sees NORMAL", Duration::from_secs(10), || state_of(&n1, &creds) == "NORMAL");
    let out = skopeo_push(&layout, "v2", &format!("{n1}/{REPO}:v2"), &creds);
    assert!(out.status.success(), "{}", text(&out));
}

/// The manifest digest `http` answers for `REPO:reference`, or "".
fn head(http: &str, creds: &str, reference: &str) -> String {
    let out = run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-I", "-w", "%{http_code} %header{docker-content-digest}", "-u", creds])
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"])
        .arg(format!("http://{http}/v2/{REPO}/manifests/{reference}")));
    match out.split_once(' ') {
        Some(("200", d)) => d.trim().to_string(),
        _ => String::new(),
    }
}

fn good_mirror(robot: &str) -> Value {
    json!({
        "is_enabled": true,
        "external_reference": "127.0.0.1:5999/upstream/app",
        "external_registry_username": "puller",
        "external_registry_password": "upstream-secret-7f3a9",
        "sync_start_date": "2030-01-01T00:00:00Z",
        "sync_interval": 3600,
        "robot_username": robot,
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["1-*", "latest"]},
        "external_registry_config": {"verify_tls": false, "unsigned_images": true, "proxy": {"http_proxy": null, "https_proxy": null, "no_proxy": null}},
        "skopeo_timeout_interval": 300,
        "architecture_filter": null,
    })
}

/// Quay's mirror API: refusals are 400 with a message and change nothing;
/// a configuration puts the repository in MIRROR state, where a docker
/// push by the administrator is refused and the mirror robot's push is
/// not; the password is never shown, nor kept in the clear on disk.
#[test]
fn mirror_configuration_and_the_mirror_state() {
    let c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = work_dir(&c);
    let layout = work.join("img");
    image_layout(&layout, "v1", "layer one");
    let out = skopeo_push(&layout, "v1", &format!("{n1}/{REPO}:v1"), &creds);
    assert!(out.status.success(), "{}", text(&out));
    let (s, robot) = api(&n1, &creds, "PUT", "/api/v1/organization/team/robots/sync", Some(json!({"description": "mirror"})));
    assert_eq!(s, 201, "{robot}");
    let robot_creds = format!("team+sync:{}", robot["token"].as_str().unwrap());
    let mirror_path = format!("/api/v1/repository/{REPO}/mirror");

    let refusals: Vec<(&str, Box<dyn Fn(&mut Value)>)> = vec![
        ("sync_start_date", Box::new(|m| m["sync_start_date"] = json!("2030-01-01 00:00:00"))),
        ("robot_username", Box::new(|m| m["robot_username"] = json!("team+ghost"))),
        ("robot_username", Box::new(|m| m["robot_username"] = json!("other+sync"))),
        ("root_rule", Box::new(|m| m.as_object_mut().unwrap().remove("root_rule").map(|_| ()).unwrap())),
        ("tag glob", Box::new(|m| m["root_rule"]["rule_value"] = json!([]))),
        ("external_reference", Box::new(|m| m["external_reference"] = json!("https://127.0.0.1:5999/upstream/app"))),
        ("external_reference", Box::new(|m| m["external_reference"] = json!("127.0.0.1:5999/upstream/app:latest"))),
        ("external_registry_username", Box::new(|m| m["external_registry_username"] = Value::Null)),
        ("sync_interval", Box::new(|m| m["sync_interval"] = json!(0))),
    ];
    for (what, change) in &refusals {
        let mut m = good_mirror("team+sync");
        change(&mut m);
        let (s, v) = api(&n2, &creds, "POST", &mirror_path, Some(m));
        assert_eq!(s, 400, "{what}: {v}");
        assert!(v.to_string().contains(what), "{what}: {v}");
    }
    let (s, _) = api(&n2, &creds, "GET", &mirror_path, None);
    assert_eq!(s, 404, "no mirror after the refusals");
    assert_eq!(state_of(&n3, &creds), "NORMAL");

    // Created through node 2: MIRROR everywhere, the same view everywhere, no password.
    let (s, v) = api(&n2, &creds, "POST", &mirror_path, Some(good_mirror("team+sync")));
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["mirror_type"].as_str(), v["sync_status"].as_str(), v["sync_retries_remaining"].as_u64()), (Some("PULL"), Some("NEVER_RUN"), Some(3)), "{v}");
    assert_eq!(v["sync_start_date"], "2030-01-01T00:00:00Z");
    assert_eq!(v["root_rule"]["rule_value"], json!(["1-*", "latest"]));
    let (s, again) = api(&n2, &creds, "POST", &mirror_path, Some(good_mirror("team+sync")));
    assert_eq!(s, 409, "created once: {again}");
    eventually("node 3 sees the mirror", Duration::from_secs(10), || api(&n3, &creds, "GET", &mirror_path, None).0 == 200);
    let (_, on3) = api(&n3, &creds, "GET", &mirror_path, None);
    assert_eq!(on3, v, "every node shows the same");
    assert!(!on3.to_string().contains("upstream-secret-7f3a9"), "the password is never shown");
    assert_eq!(state_of(&n3, &creds), "MIRROR");
    // Sealed on disk: no data dir holds the password in the clear.
    for d in &c.dirs {
        let found = Command::new("grep").args(["-r", "-l", "-a", "upstream-secret-7f3a9"]).arg(d).output().unwrap();
        assert!(found.stdout.is_empty(), "password in the clear in {}", String::from_utf8_lossy(&found.stdout));
    }

    // An update changes the fields given and keeps the rest.
    let (s, v) = api(&n1, &creds, "PUT", &mirror_path, Some(json!({"sync_interval": 60, "architecture_filter": ["amd64"]})));
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["sync_interval"].as_u64(), v["external_registry_username"].as_str()), (Some(60), Some("puller")));
    assert_eq!(v["architecture_filter"], json!(["amd64"]));
    let (s, v) = api(&n1, &creds, "PUT", &mirror_path, Some(json!({"sync_start_date": "tomorrow"})));
    assert_eq!(s, 400, "{v}");

    // The admin's docker push is refused, with the reason.
    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let out = docker_login(docker(), &n1, "admin", &c.password);
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello.txt"), "mirror").unwrap();
    let tar = work.join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    let image = format!("{n1}/{REPO}:pushed");
    run(docker().arg("import").arg(&tar).arg(&image));
    let out = docker().args(["push", &image]).output().unwrap();
    assert!(!out.status.success(), "an admin's push into a mirror succeeded");
    assert!(text(&out).contains("repository is a mirror"), "{}", text(&out));
    let (s, v) = api(&n3, &creds, "DELETE", &format!("/v2/{REPO}/manifests/v1"), None);
    assert_eq!((s, v["errors"][0]["code"].as_str()), (405, Some("UNSUPPORTED")), "{v}");

    // The mirror robot writes.
    let out = skopeo_push(&layout, "v1", &format!("{n3}/{REPO}:by-robot"), &robot_creds);
    assert!(out.status.success(), "{}", text(&out));

    // sync-now and sync-cancel: 204, the same status on every node.
    let (s, v) = api(&n2, &creds, "POST", &format!("{mirror_path}/sync-cancel"), None);
    assert_eq!(s, 204, "{v}");
    eventually("CANCEL on node 3", Duration::from_secs(10), || api(&n3, &creds, "GET", &mirror_path, None).1["sync_status"] == "CANCEL");
    // Back to NORMAL: the admin pushes again; the configuration stays.
    let (s, v) = api(&n2, &creds, "PUT", &format!("/api/v1/repository/{REPO}/changestate"), Some(json!({"state": "NORMAL"})));
    assert_eq!(s, 200, "{v}");
    eventually("node 1 sees NORMAL", Duration::from_secs(10), || state_of(&n1, &creds) == "NORMAL");
    run(docker().args(["push", &image]));
    assert_eq!(api(&n1, &creds, "GET", &mirror_path, None).0, 200);
}
