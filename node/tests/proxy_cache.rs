//! Proxy-cache organizations against a real three-node cluster of `berth`
//! processes, with Debian's `docker-registry` as the upstream (its access
//! log read here) and skopeo as the client: a miss pulled ten times at
//! once through three nodes fetches each upstream blob once; a moved
//! upstream tag is followed after `expiration_s`; a stopped upstream
//! leaves the cache serving; pushes and deletes into the organization,
//! and bad configurations, are refused and change nothing.
//!
//! Tools come from `scripts/setup-debian.sh`; a missing one fails the test.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::daemons::run;
use common::procs::*;
use common::upstream::*;
use serde_json::{json, Value};

const ORG: &str = "cache";
/// What a pull asks for: `cache/upstream/app` is `upstream/app` upstream.
const CACHED: &str = "cache/upstream/app";
const EXPIRATION_S: u64 = 4;

/// Copies the layout's `tag` upstream; the digest the upstream serves
/// for it (skopeo compresses the layer on the way).
fn seed(up: &UpstreamRegistry, layout: &Path, tag: &str) -> String {
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &up.creds])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{UP_REPO}:{tag}", up.addr)));
    let out =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", "--creds", &up.creds]).arg(format!("docker://{}/{UP_REPO}:{tag}", up.addr)));
    berth_common::Digest::sha256_of(out.as_bytes()).to_string()
}

/// skopeo pulls `image` (`host/repo:ref`) into a fresh directory.
fn pull(image: &str, creds: &str, into: &Path) -> Output {
    Command::new("skopeo")
        .args(["copy", "--retry-times", "0", "--src-tls-verify=false", "--src-creds", creds])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", into.display()))
        .output()
        .expect("skopeo (scripts/setup-debian.sh installs it)")
}

/// The digest of the manifest skopeo pulled into `dir`.
fn pulled_digest(dir: &Path) -> String {
    berth_common::Digest::sha256_of(&std::fs::read(dir.join("manifest.json")).unwrap()).to_string()
}

/// How many times the upstream served `GET` of each of `blobs` (200s in
/// its access log).
fn upstream_blob_gets(log: &Path, blobs: &[String]) -> Vec<usize> {
    let log = std::fs::read_to_string(log).unwrap();
    blobs.iter().map(|b| log.lines().filter(|l| l.contains(&format!("\"GET /v2/{UP_REPO}/blobs/{b} ")) && l.contains("\" 200 ")).count()).collect()
}

/// The blobs (config and layers) a manifest in `dir` names.
fn blobs_of(dir: &Path) -> Vec<String> {
    let m: Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    out
}

#[test]
fn proxy_cache_fills_once_follows_the_upstream_and_refuses_pushes() {
    let c = ProcCluster::start(3);
    let creds = format!("admin:{}", c.password);
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let up_dir = work.join("upstream");
    let up = start_upstream(&up_dir);
    let layout = work.join("img");
    image_layout(&layout, "v1", "the first layer");
    let upstream_v1 = seed(&up, &layout, "v1");

    let (s, v) = api(&n1, &creds, "POST", "/api/v1/organization/", Some(json!({"name": ORG})));
    assert_eq!(s, 201, "{v}");
    let path = format!("/api/v1/organization/{ORG}/proxycache");

    // Bad configurations: 400 with a message, and nothing changes.
    let good = json!({
        "upstream_registry": up.addr,
        "upstream_registry_username": UP_USER,
        "upstream_registry_password": UP_PASS,
        "expiration_s": EXPIRATION_S,
        "insecure": true,
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (body, says) in [
        (with("upstream_registry", json!(format!("http://{}", up.addr))), "upstream_registry"),
        (with("upstream_registry", json!("no such host:port")), "upstream_registry"),
        (with("upstream_registry", json!("")), "upstream_registry"),
        (with("upstream_registry_username", Value::Null), "needs upstream_registry_username"),
        (with("expiration_s", json!(-5)), "expiration_s"),
    ] {
        let (s, v) = api(&n2, &creds, "POST", &path, Some(body.clone()));
        assert_eq!(s, 400, "{body} -> {v}");
        assert!(v.to_string().contains(says), "{body} -> {v}");
    }
    let (s, v) = api(&n3, &creds, "GET", &path, None);
    assert_eq!(s, 404, "a refused configuration made none: {v}");
    let (s, v) = api(&n1, &creds, "POST", "/api/v1/organization/nosuchorg/proxycache", Some(good.clone()));
    assert_eq!(s, 404, "{v}");

    let (s, v) = api(&n2, &creds, "POST", &path, Some(good.clone()));
    assert_eq!(s, 201, "{v}");
    let (s, v) = api(&n2, &creds, "POST", &path, Some(good.clone()));
    assert_eq!(s, 400, "configured once: {v}");
    eventually("node 3 sees the configuration", Duration::from_secs(10), || api(&n3, &creds, "GET", &path, None).0 == 200);
    let (_, v) = api(&n3, &creds, "GET", &path, None);
    assert_eq!(
        (v["upstream_registry"].as_str(), v["expiration_s"].as_u64(), v["insecure"].as_bool()),
        (Some(up.addr.as_str()), Some(EXPIRATION_S), Some(true))
    );
    assert_eq!(v["upstream_registry_username"], UP_USER);
    assert!(!v.to_string().contains(UP_PASS), "the password is never shown: {v}");
    let (s, logs) = api(&n1, &creds, "GET", &format!("/api/v1/organization/{ORG}/logs"), None);
    assert_eq!(s, 200, "{logs}");
    assert!(logs.to_string().contains("create_proxy_cache_config"), "{logs}");

    // A plain member of the organization (a team with no repository
    // grants) pulls through the cache like its admin; an outsider does not.
    for (user, pw) in [("reader", "reader-password"), ("outsider", "outsider-password")] {
        let (s, v) = api(&n1, &creds, "POST", "/api/v1/superuser/users/", Some(json!({"username": user, "password": pw})));
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = api(&n1, &creds, "PUT", &format!("/api/v1/organization/{ORG}/team/readers"), Some(json!({"role": "member"})));
    assert!(s == 200 || s == 201, "{v}");
    let (s, v) = api(&n1, &creds, "PUT", &format!("/api/v1/organization/{ORG}/team/readers/members/reader"), None);
    assert!(s == 200 || s == 201, "{v}");
    let member = "reader:reader-password".to_string();

    // Ten pulls at once through three nodes of an image not cached yet,
    // half of them by the member: each upstream blob is fetched once.
    let image = |n: &str, r: &str| format!("{n}/{CACHED}:{r}");
    let outsider = pull(&image(&n1, "v1"), "outsider:outsider-password", &work.join("outsider"));
    assert!(!outsider.status.success(), "an outsider does not pull through the cache");
    let pulls: Vec<_> = (0..10)
        .map(|i| {
            let node = [&n1, &n2, &n3][i % 3].to_string();
            let creds = if i % 2 == 0 { creds.clone() } else { member.clone() };
            let into = work.join(format!("pull-{i}"));
            std::thread::spawn(move || (pull(&image(&node, "v1"), &creds, &into), into))
        })
        .collect();
    let mut dirs = vec![];
    for p in pulls {
        let (out, into) = p.join().unwrap();
        assert!(out.status.success(), "pull: {}", text(&out));
        assert_eq!(pulled_digest(&into), upstream_v1, "the upstream's manifest, byte for byte");
        dirs.push(into);
    }
    let blobs = blobs_of(&dirs[0]);
    let log = up_dir.join("registry.log");
    assert_eq!(upstream_blob_gets(&log, &blobs), vec![1; blobs.len()], "each blob fetched once upstream:\n{}", std::fs::read_to_string(&log).unwrap());

    // Pushes and deletes into the proxy-cache organization are refused.
    let out = Command::new("skopeo")
        .args(["copy", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", &creds])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}", image(&n2, "pushed")))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a push into a proxy cache succeeded");
    assert!(text(&out).contains("is a proxy cache"), "{}", text(&out));
    let (s, v) = api(&n3, &creds, "DELETE", &format!("/v2/{CACHED}/manifests/v1"), None);
    assert_eq!((s, v["errors"][0]["code"].as_str()), (405, Some("UNSUPPORTED")), "{v}");
    assert!(v.to_string().contains("is a proxy cache"), "{v}");

    // The upstream moves the tag: after expiration_s the cache follows.
    image_layout(&layout, "v1", "the second layer");
    let upstream_v2 = seed(&up, &layout, "v1");
    std::thread::sleep(Duration::from_secs(EXPIRATION_S + 1));
    let into = work.join("pull-moved");
    let out = pull(&image(&n2, "v1"), &creds, &into);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(pulled_digest(&into), upstream_v2, "the moved tag is followed");

    // The upstream stops: what is cached still pulls, by tag (its check
    // due again and failing) and by digest, through every node.
    drop(up);
    std::thread::sleep(Duration::from_secs(EXPIRATION_S + 1));
    for (i, n) in [&n1, &n2, &n3].iter().enumerate() {
        let into = work.join(format!("pull-down-{i}"));
        let out = pull(&image(n, "v1"), &creds, &into);
        assert!(out.status.success(), "with the upstream down: {}", text(&out));
        assert_eq!(pulled_digest(&into), upstream_v2);
    }
    let into = work.join("pull-down-digest");
    let out = pull(&format!("{n3}/{CACHED}@{upstream_v1}"), &creds, &into);
    assert!(out.status.success(), "by digest with the upstream down: {}", text(&out));
    // Each node counts its own fetches: two fills in all (the first
    // pull, the moved tag), the upstream's failure served stale.
    let fetches = |outcome: &str| -> u64 {
        [&n1, &n2, &n3]
            .iter()
            .map(|n| {
                let m = run(Command::new("curl").args(["-sS"]).arg(format!("http://{n}/metrics")));
                let series = format!("berth_proxy_cache_fetches_total{{outcome=\"{outcome}\"}} ");
                m.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
            })
            .sum()
    };
    assert_eq!(fetches("filled"), 2);
    assert!(fetches("stale") >= 1);
    // A miss cannot be filled, and says why.
    let out = pull(&image(&n1, "never-cached"), &creds, &work.join("pull-miss"));
    assert!(!out.status.success());

    // The CLI shows it, refuses a second one in one line, and deletes it:
    // the organization is an ordinary one again.
    let dir = c.dirs[0].to_str().unwrap().to_string();
    let shown: Value = serde_json::from_str(&ok(&["proxycache", "show", ORG, "--data-dir", &dir, "--json"])).unwrap();
    assert_eq!(shown["expiration_s"].as_u64(), Some(EXPIRATION_S), "{shown}");
    let table = ok(&["proxycache", "show", ORG, "--data-dir", &dir]);
    assert!(table.contains("upstream") && table.contains(UP_USER), "{table}");
    let again = berth(&["proxycache", "set", ORG, "--data-dir", &dir, "--upstream", "127.0.0.1:1", "--expiration", "1h"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("proxy cache already") && err.trim().lines().count() == 1, "{err}");
    ok(&["proxycache", "delete", ORG, "--data-dir", &dir]);
    let (s, _) = api(&n1, &creds, "GET", &path, None);
    assert_eq!(s, 404);
    let out = ok(&["proxycache", "set", ORG, "--data-dir", &dir, "--upstream", "127.0.0.1:1/mirror", "--expiration", "1h", "--insecure"]);
    assert!(out.contains("is a proxy cache of 127.0.0.1:1/mirror"), "{out}");
    let (s, logs) = api(&n1, &creds, "GET", &format!("/api/v1/organization/{ORG}/logs"), None);
    assert_eq!(s, 200, "{logs}");
    assert!(logs.to_string().contains("delete_proxy_cache_config"), "{logs}");
}
