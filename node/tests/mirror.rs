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
use common::upstream::*;
use serde_json::{json, Value};

const REPO: &str = "team/app";

fn skopeo_push(layout: &Path, tag: &str, to: &str, creds: &str) -> Output {
    Command::new("skopeo")
        .args(["copy", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{to}"))
        .output()
        .expect("skopeo (scripts/setup-debian.sh installs it)")
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

    type Change = Box<dyn Fn(&mut Value)>;
    let refusals: Vec<(&str, Change)> = vec![
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
    // The usage log has the creation and the one update that changed something.
    let kinds = || -> Vec<String> {
        let (_, logs) = api(&n3, &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["kind"].as_str().filter(|k| ["repo_mirror_enabled", "repo_mirror_config_changed"].contains(k)).map(String::from))
            .collect()
    };
    eventually("the mirror's configuration in the usage log", Duration::from_secs(10), || kinds().contains(&"repo_mirror_config_changed".to_string()));
    let mut seen = kinds();
    seen.sort();
    assert_eq!(seen, ["repo_mirror_config_changed", "repo_mirror_enabled"], "one row each, none for the refused update");

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

/// A two-platform index (amd64, arm64) tagged `tag` in the layout at
/// `dir`, its layers saying `salt`; returns the index digest.
fn index_layout(dir: &Path, tag: &str, salt: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let mut manifests = vec![];
    for arch in ["amd64", "arm64"] {
        let (ld, ls) = put(&layer_tar(format!("layer for {arch} {salt}")));
        let (cd, cs) = put(format!(r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{ld}"]}}}}"#).as_bytes());
        let m = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
        });
        let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
        manifests.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let (id, is) = put(&serde_json::to_vec(&index).unwrap());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is, "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    id
}

/// Copies the layout's `tag` to the upstream as `as_tag` (every platform).
fn seed(up: &UpstreamRegistry, layout: &Path, tag: &str, as_tag: &str) {
    run(Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false", "--dest-creds", &up.creds])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{UP_REPO}:{as_tag}", up.addr)));
}

/// The digest of the manifest skopeo reads raw at `image` (`docker://…`).
fn raw_digest(image: &str, creds: &str) -> String {
    let out = Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", "--creds", creds]).arg(image).output().unwrap();
    assert!(out.status.success(), "skopeo inspect {image}: {}", text(&out));
    Digest::sha256_of(&out.stdout).to_string()
}

fn raw_manifest(image: &str, creds: &str) -> Value {
    let out = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", "--creds", creds]).arg(image));
    serde_json::from_str(&out).unwrap()
}

fn berth_tags(http: &str, creds: &str) -> Vec<String> {
    let (s, v) = api(http, creds, "GET", &format!("/v2/{REPO}/tags/list"), None);
    assert_eq!(s, 200, "{v}");
    let mut t: Vec<String> = v["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    t.sort();
    t
}

/// An organization `team`, its robot `team+sync`, and the empty
/// repository `team/app`; returns the robot's login.
fn team_with_robot(http: &str, creds: &str) -> String {
    let (s, v) = api(http, creds, "POST", "/api/v1/organization/", Some(json!({"name": "team"})));
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(http, creds, "POST", "/api/v1/repository", Some(json!({"namespace": "team", "repository": "app", "visibility": "private"})));
    assert_eq!(s, 201, "{v}");
    let (s, robot) = api(http, creds, "PUT", "/api/v1/organization/team/robots/sync", Some(json!({"description": "mirror"})));
    assert_eq!(s, 201, "{robot}");
    format!("team+sync:{}", robot["token"].as_str().unwrap())
}

fn mirror_of(up: &UpstreamRegistry) -> Value {
    json!({
        "is_enabled": true,
        "external_reference": format!("{}/{UP_REPO}", up.addr),
        "external_registry_username": UP_USER,
        "external_registry_password": UP_PASS,
        "sync_start_date": "2030-01-01T00:00:00Z",
        "sync_interval": 86400,
        "robot_username": "team+sync",
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["1-*", "latest"]},
        "external_registry_config": {"verify_tls": false},
    })
}

/// Asks for a sync through `http` and waits, through `watch`, until it
/// has succeeded with the tags `want`.
fn sync_and_wait(http: &str, watch: &str, creds: &str, want: &[&str]) -> Value {
    let path = format!("/api/v1/repository/{REPO}/mirror");
    let (s, v) = api(http, creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, m) = api(watch, creds, "GET", &path, None);
        if m["sync_status"] == "SUCCESS" && berth_tags(watch, creds) == want {
            return m;
        }
        assert!(m["sync_status"] != "FAIL" || m["sync_retries_remaining"].as_u64() > Some(0), "sync failed for good: {m}");
        assert!(Instant::now() < deadline, "sync did not end with {want:?}: {m}, tags {:?}", berth_tags(watch, creds));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The issue's must-show: globs `1-*,latest` over upstream tags 1-1, 1-2,
/// 2-0 and latest (a two-platform index); a sync asked through node 2
/// leaves exactly 1-1, 1-2 and latest, with upstream's digests (skopeo on
/// both sides), pullable through node 3 with docker. The upstream changes
/// (latest moved, 1-2 deleted, 1-3 added) and berth follows; an
/// architecture filter keeps only the amd64 child of an index.
#[test]
fn mirror_sync_follows_the_upstream() {
    let c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    let layout = work.join("layout");
    for (tag, content) in [("1-1", "one-one"), ("1-2", "one-two"), ("2-0", "two-zero")] {
        image_layout(&layout.join(tag), tag, content);
        seed(&up, &layout.join(tag), tag, tag);
    }
    index_layout(&layout.join("multi"), "multi", "first");
    seed(&up, &layout.join("multi"), "multi", "latest");

    let robot = team_with_robot(&n1, &creds);
    let path = format!("/api/v1/repository/{REPO}/mirror");
    // Synced by node 3, in the region preferred (close to the upstream).
    let mut config = mirror_of(&up);
    config["preferred_region"] = json!(REGIONS[2]);
    let (s, v) = api(&n2, &creds, "POST", &path, Some(config));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["preferred_region"], REGIONS[2]);

    let m = sync_and_wait(&n2, &n3, &creds, &["1-1", "1-2", "latest"]);
    let synced_by = || -> Vec<u64> {
        let (_, logs) = api(&n2, &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
        logs["logs"].as_array().unwrap().iter().filter(|l| l["kind"] == "repo_mirror_sync_success").filter_map(|l| l["node"].as_u64()).collect()
    };
    eventually("the sync's usage log", Duration::from_secs(10), || !synced_by().is_empty());
    assert_eq!(synced_by(), [3], "the preferred region's node synced");
    assert_eq!(m["sync_retries_remaining"], 3, "{m}");
    assert!(m["last_sync_message"].as_str().unwrap().contains("synced 3 tags"), "{m}");
    for tag in ["1-1", "1-2", "latest"] {
        let upstream = raw_digest(&format!("docker://{}/{UP_REPO}:{tag}", up.addr), &up.creds);
        for n in [&n1, &n3] {
            assert_eq!(raw_digest(&format!("docker://{n}/{REPO}:{tag}"), &creds), upstream, "{tag} through {n}");
        }
    }
    // Idempotent: a sync with nothing new upstream copies nothing.
    let first_end = m["last_sync_message"].clone();
    let (s, v) = api(&n1, &creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    eventually("a second sync", Duration::from_secs(60), || {
        let (_, m) = api(&n1, &creds, "GET", &path, None);
        m["sync_status"] == "SUCCESS" && m["last_sync_message"] != first_end
            || m["last_sync_message"].as_str().is_some_and(|s| s.contains("(0 manifests and 0 blobs copied)"))
    });
    let (_, again) = api(&n1, &creds, "GET", &path, None);
    assert!(again["last_sync_message"].as_str().unwrap().contains("synced 3 tags (0 manifests and 0 blobs copied), deleted 0"), "{again}");
    // Every node shows the same status.
    let (_, on1) = api(&n1, &creds, "GET", &path, None);
    assert_eq!((on1["sync_status"].as_str(), on1["syncing_node"].as_u64()), (Some("SUCCESS"), None), "{on1}");

    // docker pulls the mirrored index and image through node 3.
    let (_dockerd, docker_host) = start_dockerd(c.root.path());
    let docker_config = work.join("docker-config");
    let docker = || docker_in(&docker_host, &docker_config);
    let out = docker_login(docker(), &n3, "admin", &c.password);
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    for tag in ["latest", "1-1"] {
        let image = format!("{n3}/{REPO}:{tag}");
        let pulled = run(docker().args(["pull", &image]));
        assert!(pulled.contains(&raw_digest(&format!("docker://{n3}/{REPO}:{tag}"), &creds)), "{pulled}");
    }

    // The upstream moves on: latest moved, 1-2 deleted, 1-3 added.
    image_layout(&layout.join("1-3"), "1-3", "one-three");
    seed(&up, &layout.join("1-3"), "1-3", "1-3");
    image_layout(&layout.join("new-latest"), "new-latest", "latest-two");
    seed(&up, &layout.join("new-latest"), "new-latest", "latest");
    run(Command::new("skopeo").args(["delete", "--tls-verify=false", "--creds", &up.creds]).arg(format!("docker://{}/{UP_REPO}:1-2", up.addr)));
    sync_and_wait(&n1, &n2, &creds, &["1-1", "1-3", "latest"]);
    for tag in ["1-3", "latest"] {
        let upstream = raw_digest(&format!("docker://{}/{UP_REPO}:{tag}", up.addr), &up.creds);
        assert_eq!(raw_digest(&format!("docker://{n3}/{REPO}:{tag}"), &creds), upstream, "{tag} followed");
    }
    // 1-2 went into history.
    let (s, v) = api(&n3, &creds, "GET", &format!("/api/v1/repository/{REPO}/tag/?specificTag=1-2"), None);
    assert_eq!(s, 200, "{v}");
    assert!(v["tags"].as_array().is_some_and(|rows| rows.iter().any(|r| r["end_ts"].is_number())), "{v}");

    // Only amd64 from an index.
    seed(&up, &layout.join("multi"), "multi", "1-multi");
    let (s, v) = api(&n3, &creds, "PUT", &path, Some(json!({"architecture_filter": ["amd64"]})));
    assert_eq!(s, 201, "{v}");
    sync_and_wait(&n3, &n1, &creds, &["1-1", "1-3", "1-multi", "latest"]);
    let index = raw_manifest(&format!("docker://{n2}/{REPO}:1-multi"), &creds);
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{index}");
    assert_eq!(children[0]["platform"]["architecture"], "amd64");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(format!("docker://{n2}/{REPO}@{}", children[0]["digest"].as_str().unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "the amd64 child is held: {}", text(&out));

    // The usage log tells the story.
    let (_, logs) = api(&n2, &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
    let kinds: Vec<&str> = logs["logs"].as_array().unwrap().iter().filter_map(|l| l["kind"].as_str()).collect();
    for k in ["repo_mirror_sync_started", "repo_mirror_sync_success", "repo_mirror_sync_tag_success"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // The robot wrote the content; the admin still may not.
    let _ = robot;
    let out = skopeo_push(&layout.join("1-1"), "1-1", &format!("{n1}/{REPO}:mine"), &creds);
    assert!(!out.status.success() && text(&out).contains("repository is a mirror"), "{}", text(&out));
}

/// The node syncing a mirror is SIGKILLed mid-sync: another node takes the
/// lease once it lapses and completes the sync; every tag berth shows is
/// whole (skopeo copies it out) and has the upstream's digest.
#[test]
fn a_sync_whose_node_dies_is_taken_over() {
    const TAGS: usize = 16;
    let mut c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    let layout = work.join("layout");
    let mut want = Vec::new();
    for i in 0..TAGS {
        let tag = format!("1-{i:02}");
        // Big enough (4 MiB of noise each) that the sync takes a while.
        let noise: Vec<u8> = (0..4 << 20).map(|j: usize| (j.wrapping_mul(2654435761).wrapping_add(i * 7919) >> 13) as u8).collect();
        image_layout(&layout.join(&tag), &tag, noise);
        seed(&up, &layout.join(&tag), &tag, &tag);
        want.push(tag);
    }
    let want_refs: Vec<&str> = want.iter().map(String::as_str).collect();
    let robot = team_with_robot(&c.http[0], &creds);
    let _ = robot;
    let path = format!("/api/v1/repository/{REPO}/mirror");
    let (s, v) = api(&c.http[1], &creds, "POST", &path, Some(mirror_of(&up)));
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(&c.http[1], &creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");

    // Caught mid-sync: some tags copied, not all.
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim.is_none() {
        assert!(Instant::now() < deadline, "never saw the sync in progress");
        let (_, m) = api(&c.http[0], &creds, "GET", &path, None);
        if let (Some("SYNCING"), Some(node)) = (m["sync_status"].as_str(), m["syncing_node"].as_u64()) {
            let copied = berth_tags(&c.http[0], &creds).len();
            assert!(copied < TAGS, "the sync ended before it could be interrupted");
            if copied >= 1 {
                victim = Some(node);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = victim.unwrap();
    c.procs[victim as usize - 1].kill9();
    let killed_at = Instant::now();
    let mut announced = false;
    let survivor = c.http[if victim == 1 { 1 } else { 0 }].clone();

    // Another node takes over once the lease lapses, and completes.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, m) = api(&survivor, &creds, "GET", &path, None);
        if m["sync_status"] == "SUCCESS" && berth_tags(&survivor, &creds) == want_refs {
            break;
        }
        assert!(Instant::now() < deadline, "the sync was not completed after the kill: {m}");
        if !announced && m["syncing_node"].as_u64().is_some_and(|n| n != victim) {
            announced = true;
            println!("lease taken over by node {} {:?} after the kill", m["syncing_node"], killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("sync of {TAGS} tags of 4 MiB completed {:?} after node {victim} was killed", killed_at.elapsed());
    let (_, logs) = api(&survivor, &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
    let done_by: Vec<u64> =
        logs["logs"].as_array().unwrap().iter().filter(|l| l["kind"] == "repo_mirror_sync_success").filter_map(|l| l["node"].as_u64()).collect();
    assert!(!done_by.is_empty() && !done_by.contains(&victim), "completed by another node: {done_by:?} (victim {victim})");
    std::fs::create_dir_all(work.join("out")).unwrap();
    for tag in &want {
        let upstream = raw_digest(&format!("docker://{}/{UP_REPO}:{tag}", up.addr), &up.creds);
        assert_eq!(raw_digest(&format!("docker://{survivor}/{REPO}:{tag}"), &creds), upstream, "{tag}");
        let out = Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{survivor}/{REPO}:{tag}"))
            .arg(format!("dir:{}", work.join("out").join(tag).display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{tag} is whole: {}", text(&out));
    }
}

/// A CA and a certificate it signs for 127.0.0.1, made with openssl in
/// `dir`: (CA certificate, server certificate, server key).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=berth mirror test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .args(["-CAcreateserial", "-out"])
        .arg(p("server.crt"))
        .arg("-extfile")
        .arg(p("ext.cnf")));
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

/// tinyproxy on loopback, logging every request; stopped when dropped.
struct Tinyproxy {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tinyproxy(dir: &Path) -> Tinyproxy {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port("127.0.0.1");
    let log = dir.join("tinyproxy.log");
    let conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\nMaxClients 20\nDisableViaHeader Yes\n",
        log.display()
    );
    std::fs::write(dir.join("tinyproxy.conf"), conf).unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(dir.join("tinyproxy.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("tinyproxy (scripts/setup-debian.sh installs it)");
    let addr = format!("127.0.0.1:{port}");
    eventually("tinyproxy", Duration::from_secs(10), || std::net::TcpStream::connect(&addr).is_ok());
    Tinyproxy { child, addr, log }
}

/// Waits through `http` until the mirror's status is `status`.
fn wait_status_is(http: &str, creds: &str, status: &str) -> Value {
    let path = format!("/api/v1/repository/{REPO}/mirror");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, m) = api(http, creds, "GET", &path, None);
        if m["sync_status"] == status {
            return m;
        }
        assert!(Instant::now() < deadline, "mirror never reached {status}: {m}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Through an HTTP proxy (tinyproxy's log shows the upstream requests),
/// then from a TLS upstream with `verify_tls` on: refused (FAIL, with the
/// reason) while the node does not trust its CA, synced once the
/// operator's CA bundle (`[mirror] ca_file`) names it.
#[test]
fn mirror_through_a_proxy_and_from_a_tls_upstream() {
    let mut c = ProcCluster::start(1);
    let creds = format!("admin:{}", c.password);
    let n1 = c.http[0].clone();
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    let layout = work.join("layout");
    image_layout(&layout.join("1-1"), "1-1", "through the proxy");
    seed(&up, &layout.join("1-1"), "1-1", "1-1");
    let proxy = start_tinyproxy(&work.join("proxy"));
    team_with_robot(&n1, &creds);
    let path = format!("/api/v1/repository/{REPO}/mirror");
    let mut m = mirror_of(&up);
    m["external_registry_config"]["proxy"] = json!({"http_proxy": format!("http://{}", proxy.addr), "https_proxy": null, "no_proxy": null});
    let (s, v) = api(&n1, &creds, "POST", &path, Some(m));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["external_registry_config"]["proxy"]["http_proxy"], format!("http://{}", proxy.addr));
    sync_and_wait(&n1, &n1, &creds, &["1-1"]);
    let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
    assert!(log.contains(&format!("{}/v2/{UP_REPO}/manifests/1-1", up.addr)), "the proxy carried the sync: {log}");
    let blob_requests = log.lines().filter(|l| l.contains(&format!("/v2/{UP_REPO}/blobs/"))).count();
    assert!(blob_requests >= 2, "config and layer through the proxy: {log}");

    // A TLS upstream whose CA the node does not trust: FAIL, saying why.
    let (ca, cert, key) = test_ca(&work.join("pki"));
    let tls_up = start_upstream_with(&work.join("tls-upstream"), Some((&cert, &key)));
    image_layout(&layout.join("1-2"), "1-2", "over tls");
    seed(&tls_up, &layout.join("1-2"), "1-2", "1-2");
    let change = json!({
        "external_reference": format!("{}/{UP_REPO}", tls_up.addr),
        "external_registry_config": {"verify_tls": true, "proxy": {"http_proxy": null, "https_proxy": null, "no_proxy": null}},
    });
    let (s, v) = api(&n1, &creds, "PUT", &path, Some(change));
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(&n1, &creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    let failed = wait_status_is(&n1, &creds, "FAIL");
    let why = failed["last_sync_message"].as_str().unwrap_or_default().to_lowercase();
    assert!(why.contains("certificate") || why.contains("issuer"), "the refusal says why: {failed}");
    assert_eq!(berth_tags(&n1, &creds), ["1-1"], "nothing changed");
    let (_, logs) = api(&n1, &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
    assert!(logs["logs"].as_array().unwrap().iter().any(|l| l["kind"] == "repo_mirror_sync_failed"), "{logs}");

    // The operator trusts the CA: the next sync succeeds.
    c.procs[0].terminate();
    let config_path = c.dirs[0].join("berth.toml");
    let mut config: toml::Value = toml::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let table = config.as_table_mut().unwrap().entry("mirror").or_insert_with(|| toml::Value::Table(Default::default()));
    table.as_table_mut().unwrap().insert("ca_file".into(), toml::Value::String(ca.display().to_string()));
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    c.procs[0] = Proc::start(&c.dirs[0]);
    wait_status(&c.dirs[0], "node back", Duration::from_secs(30), |s| s["leader"] == 1);
    eventually("the API back", Duration::from_secs(30), || api(&n1, &creds, "GET", &path, None).0 == 200);
    // A retry may be running already (sync-now then answers 409); either
    // way a sync ends in SUCCESS with the TLS upstream's tags.
    eventually("a sync from the TLS upstream", Duration::from_secs(90), || {
        let (s, v) = api(&n1, &creds, "POST", &format!("{path}/sync-now"), None);
        assert!(s == 204 || s == 409, "{v}");
        std::thread::sleep(Duration::from_millis(500));
        api(&n1, &creds, "GET", &path, None).1["sync_status"] == "SUCCESS" && berth_tags(&n1, &creds) == ["1-2"]
    });
    let upstream = raw_digest(&format!("docker://{}/{UP_REPO}:1-2", tls_up.addr), &tls_up.creds);
    assert_eq!(raw_digest(&format!("docker://{n1}/{REPO}:1-2"), &creds), upstream);

    // The same CA bundle serves a proxy cache of that upstream, verified.
    let (s, v) = api(&n1, &creds, "POST", "/api/v1/organization/", Some(json!({"name": "edge"})));
    assert_eq!(s, 201, "{v}");
    let cache = json!({
        "upstream_registry": tls_up.addr,
        "upstream_registry_username": UP_USER,
        "upstream_registry_password": UP_PASS,
        "expiration_s": 3600,
        "insecure": false,
    });
    let (s, v) = api(&n1, &creds, "POST", "/api/v1/organization/edge/proxycache", Some(cache));
    assert_eq!(s, 201, "{v}");
    assert_eq!(raw_digest(&format!("docker://{n1}/edge/{UP_REPO}:1-2"), &creds), upstream, "pulled through the cache, over verified TLS");
}

/// `berth mirror set|show|sync|cancel|state` drive the same API: a mirror
/// made from the command line syncs, shows its status, and its state can
/// be changed.
#[test]
fn the_mirror_command_line() {
    let c = ProcCluster::start(1);
    let creds = format!("admin:{}", c.password);
    let n1 = c.http[0].clone();
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    let layout = work.join("layout");
    for tag in ["1-1", "2-0"] {
        image_layout(&layout.join(tag), tag, tag);
        seed(&up, &layout.join(tag), tag, tag);
    }
    team_with_robot(&n1, &creds);
    let pw = work.join("upstream.pw");
    std::fs::write(&pw, format!("{UP_PASS}\n")).unwrap();
    let dir = c.dirs[0].to_str().unwrap().to_string();
    let reference = format!("{}/{UP_REPO}", up.addr);
    let out = ok(&[
        "mirror",
        "set",
        REPO,
        "--data-dir",
        &dir,
        "--upstream",
        &reference,
        "--tags",
        "1-*",
        "--robot",
        "team+sync",
        "--interval",
        "1day",
        "--username",
        UP_USER,
        "--upstream-password-file",
        pw.to_str().unwrap(),
        "--no-verify-tls",
    ]);
    assert!(out.contains("mirrors"), "{out}");
    let bad = berth(&["mirror", "set", "team/other", "--data-dir", &dir, "--upstream", "nope", "--tags", "x", "--robot", "team+sync", "--interval", "1h"]);
    assert!(!bad.status.success());
    sync_via_cli(&dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown: Value = serde_json::from_str(&ok(&["mirror", "show", REPO, "--data-dir", &dir, "--json"])).unwrap();
        if shown["sync_status"] == "SUCCESS" && berth_tags(&n1, &creds) == ["1-1"] {
            assert_eq!(shown["external_reference"], reference.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "no sync: {shown}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let table = ok(&["mirror", "show", REPO, "--data-dir", &dir]);
    assert!(table.contains("SUCCESS") && table.contains("1-*") && !table.contains(UP_PASS), "{table}");
    // The sync has the robot's rights: without its write grant, it fails and says why.
    ok(&["repo", "revoke", REPO, "--account", "team+sync", "--data-dir", &dir]);
    sync_via_cli(&dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown: Value = serde_json::from_str(&ok(&["mirror", "show", REPO, "--data-dir", &dir, "--json"])).unwrap();
        if shown["sync_status"] == "FAIL" {
            assert!(shown["last_sync_message"].as_str().unwrap().contains("may not write"), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure: {shown}");
        std::thread::sleep(Duration::from_millis(300));
    }
    ok(&["mirror", "cancel", REPO, "--data-dir", &dir]);
    assert!(ok(&["mirror", "show", REPO, "--data-dir", &dir]).contains("CANCEL"));
    ok(&["mirror", "state", REPO, "READ_ONLY", "--data-dir", &dir]);
    assert_eq!(state_of(&n1, &creds), "READ_ONLY");
}

/// `berth mirror sync`, again while it says a sync is running: the
/// configuration starts one at once by itself (its start date is now),
/// and a loaded machine may still be running it (or the one asked for
/// before) when the test asks.
fn sync_via_cli(dir: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = berth(&["mirror", "sync", REPO, "--data-dir", dir]);
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is running") && Instant::now() < deadline, "berth mirror sync: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An upstream that speaks the Docker token flow (berth itself: a 401
/// with `WWW-Authenticate: Bearer realm=…`): the sync fetches a token
/// with the upstream credentials and mirrors.
#[test]
fn mirror_from_an_upstream_with_token_auth() {
    let c = ProcCluster::start(1);
    let creds = format!("admin:{}", c.password);
    let n1 = c.http[0].clone();
    let work = work_dir(&c);
    let challenge = run(Command::new("curl").args(["-sS", "-D", "-", "-o", "/dev/null"]).arg(format!("http://{n1}/v2/team/source/tags/list")));
    assert!(challenge.to_lowercase().contains("bearer realm="), "berth challenges with a token realm: {challenge}");
    team_with_robot(&n1, &creds);
    let layout = work.join("img");
    image_layout(&layout, "1-0", "token flow");
    let out = skopeo_push(&layout, "1-0", &format!("{n1}/team/source:1-0"), &creds);
    assert!(out.status.success(), "{}", text(&out));
    let mut m = mirror_of_reference(&format!("{n1}/team/source"), "admin", &c.password);
    m["root_rule"]["rule_value"] = json!(["1-*"]);
    let (s, v) = api(&n1, &creds, "POST", &format!("/api/v1/repository/{REPO}/mirror"), Some(m));
    assert_eq!(s, 201, "{v}");
    sync_and_wait(&n1, &n1, &creds, &["1-0"]);
    assert_eq!(raw_digest(&format!("docker://{n1}/{REPO}:1-0"), &creds), raw_digest(&format!("docker://{n1}/team/source:1-0"), &creds));
}

fn mirror_of_reference(reference: &str, user: &str, password: &str) -> Value {
    json!({
        "is_enabled": true,
        "external_reference": reference,
        "external_registry_username": user,
        "external_registry_password": password,
        "sync_start_date": "2030-01-01T00:00:00Z",
        "sync_interval": 86400,
        "robot_username": "team+sync",
        "root_rule": {"rule_kind": "tag_glob_csv", "rule_value": ["*"]},
        "external_registry_config": {"verify_tls": false},
    })
}

/// `sync-cancel` while a sync runs: the syncing node stops at its next
/// step and records nothing over the CANCEL status; the lease is free.
/// The sync has to last long enough for the test to see it under way and
/// cancel it: with 12 tags, one clean-clone CI run (eight tests of this
/// file at once) logged no cancel, most likely because the sync had
/// already finished.
#[test]
fn a_cancelled_sync_stops() {
    const TAGS: usize = 24;
    let c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    let layout = work.join("layout");
    for i in 0..TAGS {
        let tag = format!("1-{i:02}");
        let noise: Vec<u8> = (0..4 << 20).map(|j: usize| (j.wrapping_mul(2246822519).wrapping_add(i * 104729) >> 11) as u8).collect();
        image_layout(&layout.join(&tag), &tag, noise);
        seed(&up, &layout.join(&tag), &tag, &tag);
    }
    team_with_robot(&c.http[0], &creds);
    let path = format!("/api/v1/repository/{REPO}/mirror");
    let (s, v) = api(&c.http[0], &creds, "POST", &path, Some(mirror_of(&up)));
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(&c.http[0], &creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never saw the sync in progress");
        let (_, m) = api(&c.http[1], &creds, "GET", &path, None);
        if m["sync_status"] == "SYNCING" && !berth_tags(&c.http[1], &creds).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, v) = api(&c.http[2], &creds, "POST", &format!("{path}/sync-cancel"), None);
    assert_eq!(s, 204, "{v}");
    // The worker noticed and stopped: its usage log says so.
    eventually("the sync stopped", Duration::from_secs(30), || {
        let (_, logs) = api(&c.http[0], &creds, "GET", &format!("/api/v1/repository/{REPO}/logs"), None);
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["kind"] == "repo_mirror_sync_failed" && l["metadata"]["message"].as_str().is_some_and(|m| m.contains("cancelled")))
    });
    let copied = berth_tags(&c.http[0], &creds).len();
    assert!(copied < TAGS, "cancelled before the end: {copied} of {TAGS}");
    for n in &c.http {
        let (_, m) = api(n, &creds, "GET", &path, None);
        assert_eq!((m["sync_status"].as_str(), m["syncing_node"].as_u64()), (Some("CANCEL"), None), "{m}");
    }
    // A cancelled mirror syncs again when asked.
    let (s, v) = api(&c.http[1], &creds, "POST", &format!("{path}/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    let want: Vec<String> = (0..TAGS).map(|i| format!("1-{i:02}")).collect();
    eventually("the whole sync", Duration::from_secs(120), || {
        api(&c.http[1], &creds, "GET", &path, None).1["sync_status"] == "SUCCESS" && berth_tags(&c.http[1], &creds) == want
    });
}

/// Quay's mirror events reach the repository's notifications: a sync
/// announces its start and its success (with the tags it left), and a
/// sync against a stopped upstream its failure (with why), each once.
#[test]
fn mirror_syncs_notify_started_success_and_failed() {
    let (inbox, rx) = common::receiver::start_receiver_thread();
    let c = ProcCluster::start_configured(3, &[], |t| {
        let n = toml::toml! {
            allowed_networks = ["127.0.0.0/8"]
            poll_interval_ms = 200
        };
        t.insert("notifications".into(), toml::Value::Table(n));
    });
    let creds = format!("admin:{}", c.password);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = work_dir(&c);
    let up = start_upstream(&work.join("upstream"));
    image_layout(&work.join("layout"), "1-1", "one-one");
    seed(&up, &work.join("layout"), "1-1", "1-1");
    team_with_robot(&n1, &creds);
    for event in ["repo_mirror_sync_started", "repo_mirror_sync_success", "repo_mirror_sync_failed"] {
        let body = json!({"event": event, "method": "webhook", "config": {"url": format!("http://{rx}/{event}")}});
        let (s, v) = api(&n2, &creds, "POST", &format!("/api/v1/repository/{REPO}/notification/"), Some(body));
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = api(&n1, &creds, "POST", &format!("/api/v1/repository/{REPO}/mirror"), Some(mirror_of(&up)));
    assert_eq!(s, 201, "{v}");

    sync_and_wait(&n2, &n3, &creds, &["1-1"]);
    let got = |path: &str| inbox.at(path);
    eventually("started and success delivered", Duration::from_secs(30), || {
        !got("/repo_mirror_sync_started").is_empty() && !got("/repo_mirror_sync_success").is_empty()
    });
    let started = &got("/repo_mirror_sync_started")[0].json;
    assert_eq!(started["repository"], REPO, "{started}");
    let success = &got("/repo_mirror_sync_success")[0].json;
    assert_eq!((success["repository"].as_str(), &success["tags"]), (Some(REPO), &json!(["1-1"])), "{success}");
    assert!(got("/repo_mirror_sync_failed").is_empty());

    // The upstream stops: the sync fails, and says so (each retry too).
    drop(up);
    let (s, v) = api(&n3, &creds, "POST", &format!("/api/v1/repository/{REPO}/mirror/sync-now"), None);
    assert_eq!(s, 204, "{v}");
    eventually("failed delivered", Duration::from_secs(60), || !got("/repo_mirror_sync_failed").is_empty());
    let failed = &got("/repo_mirror_sync_failed")[0].json;
    assert_eq!(failed["repository"], REPO, "{failed}");
    assert!(failed["message"].as_str().is_some_and(|m| m.contains("upstream")), "{failed}");
    assert_eq!(got("/repo_mirror_sync_success").len(), 1, "one success, announced once");
    // Each notification has an outbox of its own, delivered on its own, so
    // the failure may arrive before the start it follows.
    eventually("the second sync announced its start too", Duration::from_secs(30), || got("/repo_mirror_sync_started").len() >= 2);
}
