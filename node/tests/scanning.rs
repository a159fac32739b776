//! Vulnerability scanning across three real `berth` processes (issue 17).
//!
//! The image is real package data: one layer holding this machine's own
//! `/etc/os-release` and `/var/lib/dpkg/status` (Debian 12 "bookworm"),
//! pushed with skopeo through node 1. The feed is in the Debian security
//! tracker's JSON format and names real CVEs with the versions Debian
//! fixed them in, taken from the changelogs of the packages on the
//! bookworm mirror (`openssl 3.0.22-1~deb12u2`'s
//! `changelog.Debian.gz` lists CVE-2026-7383 fixed in 3.0.20-1~deb12u2,
//! CVE-2026-84782 in 3.0.22-1~deb12u2, CVE-2026-28387 in
//! 3.0.19-1~deb12u2, CVE-2025-15467 in 3.0.18-1~deb12u2) and the
//! tracker's long-open "unimportant" entries (tar CVE-2005-2541, glibc
//! CVE-2010-4756, util-linux CVE-2022-0563).
//!
//! Shown here: the security API through node 3 lists exactly the
//! installed packages and the expected vulnerabilities (`FixedBy`,
//! `AddedBy`, severities; fixed-before and other-release entries do not
//! match); a second feed imported through node 2 re-matches without
//! reading layers and a webhook gets `vulnerability_found` for the tag;
//! malformed layers end `failed` with a reason and no node dies; a node
//! killed mid-scan is replaced and the scan completes.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, Mutex as StdMutex};
use std::time::Duration;

use berth_common::Digest;
use common::daemons::run;
use common::debian::*;
use common::eventually;
use common::procs::*;
use common::receiver::start_receiver;
use reqwest::Method;
use serde_json::{json, Value};

/// One cluster at a time: the kill test's nodes take a pause from the
/// environment, which the other test's nodes must not inherit.
static SERIAL: Mutex<()> = Mutex::new(());

/// Three nodes whose scan workers look every 300 ms, and organization
/// `team` made through node 2.
async fn scanning_cluster() -> (ProcCluster, Api, [String; 3]) {
    let c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            t.insert("scan".into(), toml::Value::Table(toml::toml! { poll_interval_ms = 300 }));
        })
    });
    let nodes = [c.http[0].clone(), c.http[1].clone(), c.http[2].clone()];
    let api = Api { http: reqwest::Client::new(), password: c.password.clone() };
    api.ok(&nodes[1], Method::POST, "/api/v1/organization/", Some(json!({"name": "team"}))).await;
    (c, api, nodes)
}

struct Api {
    http: reqwest::Client,
    password: String,
}

impl Api {
    async fn call(&self, node: &str, method: Method, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("http://{node}{path}")).basic_auth("admin", Some(&self.password));
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ok(&self, node: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(node, method.clone(), path, body.map(|b| serde_json::to_vec(&b).unwrap())).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    async fn import(&self, node: &str, name: &str, feed: &Value) -> Value {
        let (s, v) = self.call(node, Method::POST, &format!("/api/v1/superuser/scanner/feeds?name={name}"), Some(serde_json::to_vec(feed).unwrap())).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn security(&self, node: &str, repo: &str, digest: &str) -> Value {
        let (s, v) = self.call(node, Method::GET, &format!("/api/v1/repository/{repo}/manifest/{digest}/security?vulnerabilities=true"), None).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Waits until the manifest's scan is no longer queued. A node other
    /// than the one that took the push may not have applied it yet: its
    /// 404 is "not yet" here, never a pass.
    async fn scanned(&self, node: &str, repo: &str, digest: &str, within: Duration) -> Value {
        eventually(within, "scan finished", || async {
            let (s, v) = self.call(node, Method::GET, &format!("/api/v1/repository/{repo}/manifest/{digest}/security?vulnerabilities=true"), None).await;
            (s == 200 && v["status"] != "queued").then_some(v)
        })
        .await
    }

    /// Pushes an image of one layer (`layer`, media type `media`) through
    /// the registry API; answers the manifest's digest.
    async fn push_layer(&self, node: &str, repo: &str, tag: &str, layer: &[u8], media: &str) -> String {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        for blob in [&config[..], layer] {
            let d = Digest::sha256_of(blob);
            let r = self.http.post(format!("http://{node}/v2/{repo}/blobs/uploads/?digest={d}")).basic_auth("admin", Some(&self.password)).body(blob.to_vec());
            assert_eq!(r.send().await.unwrap().status(), 201);
        }
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": media, "digest": Digest::sha256_of(layer).to_string(), "size": layer.len()}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let resp = self
            .http
            .put(format!("http://{node}/v2/{repo}/manifests/{tag}"))
            .basic_auth("admin", Some(&self.password))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        Digest::sha256_of(&bytes).to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debian_image_is_scanned_matched_and_rematched_on_a_new_feed() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    let (inbox, rx) = start_receiver().await;
    let c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            t.insert("notifications".into(), toml::Value::Table(toml::toml! { allowed_networks = ["127.0.0.0/8"] poll_interval_ms = 200 }));
            t.insert("scan".into(), toml::Value::Table(toml::toml! { poll_interval_ms = 300 }));
        })
    });
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let api = Api { http: reqwest::Client::new(), password: c.password.clone() };
    api.ok(&n2, Method::POST, "/api/v1/organization/", Some(json!({"name": "team"}))).await;
    api.ok(&n2, Method::POST, "/api/v1/repository", Some(json!({"namespace": "team", "repository": "debian", "visibility": "private"}))).await;
    api.ok(
        &n2,
        Method::POST,
        "/api/v1/repository/team/debian/notification/",
        Some(json!({"event": "vulnerability_found", "method": "webhook", "config": {"url": format!("http://{rx}/vuln")}, "eventConfig": {"level": "medium"}})),
    )
    .await;

    // A bad feed is refused and changes nothing.
    let (s, v) = api.call(&n2, Method::POST, "/api/v1/superuser/scanner/feeds?name=debian", Some(b"{\"not\": \"a feed\"".to_vec())).await;
    assert_eq!(s, 400, "{v}");
    let st = api.ok(&n1, Method::GET, "/api/v1/superuser/scanner/status", None).await;
    assert_eq!((st["generation"].as_u64(), st["feeds"].as_array().map(Vec::len)), (Some(0), Some(0)), "{st}");

    let imported = api.import(&n2, "debian", &feed_v1()).await;
    assert_eq!(imported["kind"], "debian-tracker");
    assert_eq!(imported["generation"], 1);

    let tmp = tempfile::tempdir().unwrap();
    let layer = debian_layout(tmp.path());
    let digest = tokio::task::block_in_place(|| skopeo_push(tmp.path(), &n1, &c.password, "team/debian:bookworm"));
    let v = api.scanned(&n3, "team/debian", &digest, Duration::from_secs(90)).await;
    check_report(&v, &layer, false);
    assert_eq!(v["data"]["Layer"]["Name"], digest.as_str());
    // Every node gives the same report.
    assert_eq!(api.security(&n1, "team/debian", &digest).await, v);

    // A second snapshot through node 2: re-matched without reading the
    // layer again, and the receiver hears of the medium-or-worse new one.
    // Through the CLI on node 2's host; a missing file is one line and a
    // non-zero exit.
    let feed_file = tmp.path().join("debian.json");
    std::fs::write(&feed_file, serde_json::to_vec(&feed_v2()).unwrap()).unwrap();
    let n2_dir = c.dirs[1].to_str().unwrap().to_string();
    let out = berth(&["scanner", "import", "/nonexistent/feed.json", "--data-dir", &n2_dir]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let imported: Value =
        serde_json::from_str(&ok(&["scanner", "import", feed_file.to_str().unwrap(), "--name", "debian", "--data-dir", &n2_dir, "--json"])).unwrap();
    assert_eq!(imported["generation"], 2);
    let got = eventually(Duration::from_secs(60), "vulnerability_found delivered", || async {
        let all = inbox.jsons();
        (!all.is_empty()).then_some(all)
    })
    .await;
    // All of it is in once nothing is left to re-match (the events are
    // queued before the re-match is recorded) nor to deliver.
    eventually(Duration::from_secs(30), "every event delivered", || async {
        let st = api.ok(&n3, Method::GET, "/api/v1/superuser/scanner/status", None).await;
        let ns = api.ok(&n3, Method::GET, "/api/v1/repository/team/debian/notification/", None).await;
        st["rematch_pending"] == 0 && ns["notifications"].as_array().is_some_and(|ns| ns.iter().all(|n| n["pending"] == 0))
    })
    .await;
    let got_all = inbox.jsons();
    let affected = installed().values().filter(|(_, s)| s == "openssl").count();
    assert!(!got.is_empty());
    assert_eq!(got_all.len(), affected, "one event per affected package, none for known or below-level ones: {got_all:?}");
    for e in &got_all {
        assert_eq!(e["event"], "vulnerability_found");
        assert_eq!(e["tags"], json!(["bookworm"]));
        assert_eq!(e["digest"], digest.as_str());
        assert_eq!(e["vulnerability"]["id"], "CVE-2026-42767");
        assert_eq!(e["vulnerability"]["priority"], "medium");
    }
    let st = eventually(Duration::from_secs(30), "re-matched", || async {
        let st = api.ok(&n3, Method::GET, "/api/v1/superuser/scanner/status", None).await;
        (st["rematch_pending"] == 0).then_some(st)
    })
    .await;
    assert_eq!(st["scans"]["scanned"], 1, "{st}");
    check_report(&api.security(&n3, "team/debian", &digest).await, &layer, true);
    let pw = c.password_file.to_str().unwrap().to_string();
    let shown = ok(&["scan", "show", "team/debian:bookworm", "--endpoint", &format!("http://{n3}"), "--password-file", &pw]);
    assert!(shown.contains("scanned") && shown.contains("CVE-2026-42767") && shown.contains("3.0.22-1~deb12u1"), "{shown}");
    // The SBOM through the CLI: one library component per package of the
    // report, each with its Debian package URL.
    let sbom: Value =
        serde_json::from_str(&ok(&["scan", "sbom", "team/debian:bookworm", "--endpoint", &format!("http://{n3}"), "--password-file", &pw])).unwrap();
    let features = api.security(&n3, "team/debian", &digest).await["data"]["Layer"]["Features"].as_array().unwrap().len();
    let libraries: Vec<&Value> = sbom["components"].as_array().unwrap().iter().filter(|c| c["type"] == "library").collect();
    assert_eq!(libraries.len(), features);
    let libc = libraries.iter().find(|c| c["name"] == "libc6").unwrap();
    let purl = libc["purl"].as_str().unwrap();
    assert!(purl.starts_with("pkg:deb/debian/libc6@2.36-9") && purl.ends_with("?distro=debian-12"), "{purl}");
    let status = ok(&["scanner", "status", "--data-dir", c.dirs[2].to_str().unwrap()]);
    assert!(status.contains("1 scanned") && status.contains("debian-tracker"), "{status}");

    // Malformed layers: each ends `failed` with a reason; no node dies.
    let tar_of = |name: &str, size: u64, body: &[u8]| -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        let sz = format!("{size:011o}\0");
        let sz = if sz.len() > 12 { format!("{:011o}\0", 0) } else { sz };
        h[124..136].copy_from_slice(sz.as_bytes());
        if size >= 8 << 30 {
            // GNU base-256 size for sizes octal cannot hold in 11 digits.
            let mut b = [0u8; 12];
            b[0] = 0x80;
            b[4..].copy_from_slice(&size.to_be_bytes());
            h[124..136].copy_from_slice(&b);
        }
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    };
    let gz = |raw: &[u8]| -> Vec<u8> {
        let p = tmp.path().join("bad.tar");
        std::fs::write(&p, raw).unwrap();
        run(Command::new("gzip").args(["-1", "-f", "-n"]).arg(&p));
        std::fs::read(tmp.path().join("bad.tar.gz")).unwrap()
    };
    let good = std::fs::read(tmp.path().join("oci/blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    let mut traversal = tar_of("../../etc/passwd", 4, b"root");
    traversal.extend_from_slice(&[0u8; 1024]);
    let sparse = tar_of("disk.img", 10 << 30, b"");
    let bomb = {
        // One million empty files in a gzip layer of a few MB.
        let mut raw = Vec::with_capacity(1_000_001 * 512);
        for i in 0..1_000_000u32 {
            raw.extend_from_slice(&tar_of(&format!("f/{i:07}"), 0, b""));
        }
        raw.extend_from_slice(&[0u8; 1024]);
        gz(&raw)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "not a readable tar stream"),
        ("traversal", gz(&traversal), "path traversal"),
        ("sparse", gz(&sparse), "declares"),
        ("bomb", bomb, "more than 500000 entries"),
    ];
    let mut digests = vec![];
    for (tag, bytes, _) in &cases {
        digests.push(api.push_layer(&n1, "team/debian", tag, bytes, "application/vnd.oci.image.layer.v1.tar+gzip").await);
    }
    for ((tag, _, why), d) in cases.iter().zip(&digests) {
        let v = api.scanned(&n2, "team/debian", d, Duration::from_secs(120)).await;
        assert_eq!(v["status"], "failed", "{tag}: {v}");
        assert!(v["reason"].as_str().unwrap_or_default().contains(why), "{tag}: {v}");
    }
    for (i, node) in c.http.iter().enumerate() {
        let r = reqwest::get(format!("http://{node}/health")).await.unwrap();
        assert!(r.status().is_success(), "node {} alive", i + 1);
    }
    // An Alpine layer (the apk database of `alpine:3.19.1`'s base
    // packages) against a secdb file of the v3.19 branch.
    let alpine_root = tmp.path().join("alpine");
    std::fs::create_dir_all(alpine_root.join("etc")).unwrap();
    std::fs::create_dir_all(alpine_root.join("lib/apk/db")).unwrap();
    std::fs::write(alpine_root.join("etc/os-release"), "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n").unwrap();
    let apk = [
        ("musl", "1.2.4_git20230717-r4", "musl"),
        ("busybox", "1.36.1-r15", "busybox"),
        ("ssl_client", "1.36.1-r15", "busybox"),
        ("libcrypto3", "3.1.4-r5", "openssl"),
        ("libssl3", "3.1.4-r5", "openssl"),
        ("zlib", "1.3.1-r0", "zlib"),
    ];
    let db: String = apk.iter().map(|(p, v, o)| format!("C:Q1\nP:{p}\nV:{v}\nA:x86_64\no:{o}\n\n")).collect();
    std::fs::write(alpine_root.join("lib/apk/db/installed"), db).unwrap();
    let alpine_tar = tmp.path().join("alpine.tar");
    run(Command::new("tar").arg("-C").arg(&alpine_root).arg("-cf").arg(&alpine_tar).args(["etc", "lib"]));
    run(Command::new("gzip").arg("-n").arg(&alpine_tar));
    let alpine_layer = std::fs::read(tmp.path().join("alpine.tar.gz")).unwrap();
    let secdb = json!({
        "distroversion": "v3.19", "reponame": "main", "urlprefix": "https://dl-cdn.alpinelinux.org/alpine", "apkurl": "{{urlprefix}}/{{distroversion}}/{{reponame}}/{{arch}}/{{pkg.name}}-{{pkg.ver}}.apk", "archs": ["x86_64"],
        "packages": [
            {"pkg": {"name": "openssl", "secfixes": {"3.1.4-r1": ["CVE-2023-5678"], "3.1.4-r5": ["CVE-2024-0727"], "3.1.4-r6": ["CVE-2024-2511"], "0": ["CVE-2022-3358"]}}},
            {"pkg": {"name": "busybox", "secfixes": {"1.36.1-r17": ["CVE-2023-42363"]}}},
            {"pkg": {"name": "zlib", "secfixes": {"1.2.12-r2": ["CVE-2022-37434"]}}}
        ]
    });
    assert_eq!(api.import(&n2, "alpine-v3.19-main", &secdb).await["kind"], "alpine-secdb");
    let alpine = api.push_layer(&n1, "team/alpine", "3.19", &alpine_layer, "application/vnd.oci.image.layer.v1.tar+gzip").await;
    let v = api.scanned(&n3, "team/alpine", &alpine, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "scanned", "{v}");
    assert_eq!(v["data"]["Layer"]["NamespaceName"], "alpine:v3.19");
    let features = v["data"]["Layer"]["Features"].as_array().unwrap();
    assert_eq!(features.len(), apk.len());
    let mut got = vulnerability_rows(features);
    got.sort();
    let want: Vec<(String, String, String, String)> = [
        ("busybox", "CVE-2023-42363", "1.36.1-r17"),
        ("libcrypto3", "CVE-2024-2511", "3.1.4-r6"),
        ("libssl3", "CVE-2024-2511", "3.1.4-r6"),
        ("ssl_client", "CVE-2023-42363", "1.36.1-r17"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string(), "Unknown".to_string()))
    .collect();
    assert_eq!(got, want);
    for f in features {
        assert_eq!(f["VersionFormat"], "apk");
        assert_eq!(f["AddedBy"], Digest::sha256_of(&alpine_layer).to_string());
    }

    // /metrics counts them, on the nodes that did them (any of the three:
    // both holders of the layers are preferred, and either may win).
    let mut scans_done = 0.0;
    for n in [&n1, &n2, &n3] {
        let m = reqwest::get(format!("http://{n}/metrics")).await.unwrap().text().await.unwrap();
        scans_done +=
            m.lines().filter(|l| l.starts_with("berth_scans_total{status=\"scanned\"}")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>();
    }
    assert!(scans_done >= 2.0, "the bookworm and alpine images' scans: {scans_done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_whose_node_is_killed_is_taken_over_and_completes() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    // Every node holds a scan's lease 6 s before working on it: long
    // enough to kill the holder mid-scan.
    unsafe { std::env::set_var("BERTH_SCAN_PAUSE_MS", "6000") };
    let mut c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            t.insert("scan".into(), toml::Value::Table(toml::toml! { poll_interval_ms = 300 lease_secs = 3 local_preference_ms = 0 }));
        })
    });
    unsafe { std::env::remove_var("BERTH_SCAN_PAUSE_MS") };
    let (n1, n2) = (c.http[0].clone(), c.http[1].clone());
    let api = Api { http: reqwest::Client::new(), password: c.password.clone() };
    api.import(&n2, "debian", &feed_v1()).await;
    let tmp = tempfile::tempdir().unwrap();
    let layer = debian_layout(tmp.path());
    let digest = tokio::task::block_in_place(|| skopeo_push(tmp.path(), &n1, &c.password, "team/debian:bookworm"));
    // Find the node holding the lease from its log, and kill it.
    let holder = eventually(Duration::from_secs(30), "a node started the scan", || async {
        (0..3).find(|&i| std::fs::read_to_string(c.dirs[i].with_extension("log")).unwrap_or_default().contains("scan started"))
    })
    .await;
    c.procs[holder].kill9();
    let alive = c.http.iter().enumerate().find(|(i, _)| *i != holder).unwrap().1.clone();
    let v = api.scanned(&alive, "team/debian", &digest, Duration::from_secs(60)).await;
    check_report(&v, &layer, false);
    let other_started =
        (0..3).filter(|&i| i != holder).any(|i| std::fs::read_to_string(c.dirs[i].with_extension("log")).unwrap_or_default().contains("scan started"));
    assert!(other_started, "another node took the scan over");
    // The node that finished the scan attached one SBOM, with one node down.
    let (s, referrers) = api.call(&alive, Method::GET, &format!("/v2/team/debian/referrers/{digest}"), None).await;
    assert_eq!(s, 200, "{referrers}");
    let sboms: Vec<&Value> = referrers["manifests"].as_array().unwrap().iter().filter(|m| m["artifactType"] == "application/vnd.cyclonedx+json").collect();
    assert_eq!(sboms.len(), 1, "{referrers}");
}

/// A Python image: one gzip layer made with tar from this machine's
/// Debian python3 packages (the `cryptography` wheel's dist-info, urllib3's
/// and requests' egg-info) and an OSV zip of PyPI advisories
/// (`scanner/testdata/osv-pypi/`, sources in its README) imported through
/// node 2; pushed through node 1, read through node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_image_is_matched_against_an_osv_zip() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    let dist = "usr/lib/python3/dist-packages";
    let metadata = [
        format!("{dist}/cryptography-38.0.4.dist-info/METADATA"),
        format!("{dist}/requests-2.28.1.egg-info/PKG-INFO"),
        format!("{dist}/urllib3-1.26.12.egg-info/PKG-INFO"),
    ];
    let gz = tmp.path().join("layer.tar.gz");
    run(Command::new("tar").args(["-C", "/", "-czf"]).arg(&gz).args(["etc/os-release", "usr/lib/os-release"]).args(&metadata));
    let layer = std::fs::read(&gz).unwrap();
    let layer_digest = Digest::sha256_of(&layer).to_string();
    let osv_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/osv-pypi");
    let zip = tmp.path().join("pypi.zip");
    let mut records: Vec<_> = std::fs::read_dir(&osv_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    records.sort();
    run(Command::new("python3").args(["-m", "zipfile", "-c"]).arg(&zip).args(&records));

    let (_c, api, [n1, n2, n3]) = scanning_cluster().await;
    let (s, imported) = api.call(&n2, Method::POST, "/api/v1/superuser/scanner/feeds?name=pypi", Some(std::fs::read(&zip).unwrap())).await;
    assert_eq!(s, 201, "{imported}");
    assert_eq!((imported["kind"].as_str(), imported["advisories"].as_u64()), (Some("osv"), Some(11)), "{imported}");
    // A cut archive is refused and changes nothing.
    let bytes = std::fs::read(&zip).unwrap();
    let (s, _) = api.call(&n2, Method::POST, "/api/v1/superuser/scanner/feeds?name=pypi", Some(bytes[..bytes.len() - 40].to_vec())).await;
    assert_eq!(s, 400);

    let digest = api.push_layer(&n1, "team/python", "3.11", &layer, "application/vnd.oci.image.layer.v1.tar+gzip").await;
    let v = api.scanned(&n3, "team/python", &digest, Duration::from_secs(90)).await;
    assert_eq!(v["status"], "scanned", "{v}");
    let features = v["data"]["Layer"]["Features"].as_array().unwrap();
    let got: Vec<(String, String, String, String)> = features
        .iter()
        .map(|f| {
            (
                f["Name"].as_str().unwrap().into(),
                f["Version"].as_str().unwrap().into(),
                f["VersionFormat"].as_str().unwrap().into(),
                f["AddedBy"].as_str().unwrap().into(),
            )
        })
        .collect();
    let row = |n: &str, v: &str| (n.to_string(), v.to_string(), "pep440".to_string(), layer_digest.clone());
    assert_eq!(got, vec![row("cryptography", "38.0.4"), row("requests", "2.28.1"), row("urllib3", "1.26.12")]);
    let vulns = vulnerability_rows(features);
    let want = [
        ("cryptography", "CVE-2023-23931", "39.0.1", "Medium"),
        ("cryptography", "CVE-2023-49083", "41.0.6", "Medium"),
        ("cryptography", "CVE-2024-26130", "42.0.4", "High"),
        ("urllib3", "CVE-2023-43804", "1.26.17", "High"),
        ("urllib3", "CVE-2023-45803", "1.26.18", "Medium"),
        ("urllib3", "CVE-2024-37891", "1.26.19", "Medium"),
    ];
    assert_eq!(vulns, want.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string())).collect::<Vec<_>>());
    assert_eq!(features[2]["Vulnerabilities"][0]["NamespaceName"], "PyPI");
    assert_eq!(api.security(&n1, "team/python", &digest).await, v);
    // The tag list carries the manifest's summary: counts by severity.
    let tags = api.ok(&n3, Method::GET, "/api/v1/repository/team/python/tag/", None).await;
    assert_eq!(tags["tags"][0]["name"], "3.11", "{tags}");
    assert_eq!(tags["tags"][0]["security"], json!({"status": "scanned", "counts": {"High": 2, "Medium": 4}}), "{tags}");
}

/// A Go binary through three real nodes: Debian's `docker-registry` (a
/// real Go program) in an image's layer is indexed as the Go toolchain it
/// was built with, and an OSV Go advisory for that toolchain, imported
/// through another node, is in the security report on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_binary_is_matched_against_an_osv_go_advisory() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    let binary = "usr/bin/docker-registry";
    assert!(Path::new("/").join(binary).exists(), "/{binary} is missing (apt-get install docker-registry)");
    let tmp = tempfile::tempdir().unwrap();
    let gz = tmp.path().join("layer.tar.gz");
    run(Command::new("tar").args(["-C", "/", "-czf"]).arg(&gz).args(["etc/os-release", "usr/lib/os-release", binary]));
    let layer = std::fs::read(&gz).unwrap();
    let layer_digest = Digest::sha256_of(&layer).to_string();
    // Debian bookworm's docker-registry is built with go1.19.8, before
    // the fix of this advisory (shaped as the Go vulnerability database
    // writes them; the ranges are this test's).
    let feed = json!([
        {"id": "GO-2023-2185", "modified": "2024-01-01T00:00:00Z", "aliases": ["CVE-2023-45283"], "summary": "Insecure parsing of Windows paths with a \\??\\ prefix in path/filepath",
         "affected": [{"package": {"ecosystem": "Go", "name": "stdlib"},
                       "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.20.11"}, {"introduced": "1.21.0-0"}, {"fixed": "1.21.4"}]}]}]},
        {"id": "GO-2099-0001", "modified": "2024-01-01T00:00:00Z",
         "affected": [{"package": {"ecosystem": "Go", "name": "stdlib"},
                       "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.21.0"}, {"fixed": "1.21.1"}]}]}]}
    ]);

    let (_c, api, [n1, n2, n3]) = scanning_cluster().await;
    let (s, imported) = api.call(&n2, Method::POST, "/api/v1/superuser/scanner/feeds?name=go", Some(serde_json::to_vec(&feed).unwrap())).await;
    assert_eq!(s, 201, "{imported}");
    // One advisory per affected range: the first record has two.
    assert_eq!((imported["kind"].as_str(), imported["advisories"].as_u64()), (Some("osv"), Some(3)), "{imported}");

    let digest = api.push_layer(&n1, "team/registry", "2.8", &layer, "application/vnd.oci.image.layer.v1.tar+gzip").await;
    let v = api.scanned(&n3, "team/registry", &digest, Duration::from_secs(90)).await;
    assert_eq!(v["status"], "scanned", "{v}");
    let features = v["data"]["Layer"]["Features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "the toolchain only: Debian builds it without Go modules: {v}");
    let f = &features[0];
    assert_eq!((f["Name"].as_str(), f["VersionFormat"].as_str(), f["AddedBy"].as_str()), (Some("stdlib"), Some("semver"), Some(layer_digest.as_str())), "{v}");
    let version = f["Version"].as_str().unwrap();
    assert!(version.starts_with("1.19."), "go1.19.x as OSV writes it: {version}");
    let vulns = f["Vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns.len(), 1, "only the advisory whose range holds 1.19: {v}");
    assert_eq!(
        (vulns[0]["Name"].as_str(), vulns[0]["FixedBy"].as_str(), vulns[0]["NamespaceName"].as_str()),
        (Some("CVE-2023-45283"), Some("1.20.11"), Some("Go")),
        "{v}"
    );
    assert_eq!(api.security(&n1, "team/registry", &digest).await, v, "the same report through another node");
}

/// An rpm image through three real nodes: a Rocky Linux 9.3 layer whose
/// `rpmdb.sqlite` rpm itself wrote (`scanner/testdata/rocky9/`, sources in
/// its README), pushed through node 1; Rocky's OSV records imported
/// through node 2; node 3's report has the rpm packages, the errata
/// that affect them with their fixed versions, and not the one fixed
/// before the installed glibc or the one for Rocky Linux 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpm_image_is_matched_against_rocky_osv_records() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/rocky9");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    run(Command::new(data.join("make-rpmdb.sh")).arg(&root));
    let gz = tmp.path().join("layer.tar.gz");
    run(Command::new("tar").arg("-C").arg(&root).arg("-czf").arg(&gz).args(["etc", "usr", "var"]));
    let layer = std::fs::read(&gz).unwrap();
    let layer_digest = Digest::sha256_of(&layer).to_string();
    let mut records = Vec::new();
    for f in ["RLSA-2024-0310.json", "RLSA-2024-2447.json", "RLSA-2023-5455.json", "RLSA-TEST-0001.json"] {
        records.push(serde_json::from_slice::<Value>(&std::fs::read(data.join(f)).unwrap()).unwrap());
    }

    let (_c, api, [n1, n2, n3]) = scanning_cluster().await;
    let imported = api.import(&n2, "rocky", &Value::Array(records)).await;
    assert_eq!(imported["kind"], "osv", "{imported}");
    let digest = api.push_layer(&n1, "team/rocky", "9.3", &layer, "application/vnd.oci.image.layer.v1.tar+gzip").await;
    let v = api.scanned(&n3, "team/rocky", &digest, Duration::from_secs(90)).await;
    assert_eq!(v["status"], "scanned", "{v}");
    let features = v["data"]["Layer"]["Features"].as_array().unwrap();
    let got: Vec<(&str, &str, &str, &str, &str)> = features
        .iter()
        .map(|f| {
            (
                f["Name"].as_str().unwrap(),
                f["Version"].as_str().unwrap(),
                f["VersionFormat"].as_str().unwrap(),
                f["NamespaceName"].as_str().unwrap(),
                f["AddedBy"].as_str().unwrap(),
            )
        })
        .collect();
    let row = |n, v| (n, v, "rpm", "rocky:9.3", layer_digest.as_str());
    assert_eq!(
        got,
        vec![row("alternatives", "1.24-1.el9"), row("bash", "5.1.8-6.el9_1"), row("glibc", "2.34-83.el9.7"), row("openssl-libs", "1:3.0.7-24.el9")],
        "{v}"
    );
    let want = [("openssl-libs", "CVE-2023-3446", "1:3.0.7-27.el9", "Low"), ("openssl-libs", "CVE-2023-5363", "1:3.0.7-25.el9_3", "High")];
    assert_eq!(vulnerability_rows(features), want.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string())).collect::<Vec<_>>());
    assert_eq!(features[3]["Vulnerabilities"][0]["NamespaceName"], "Rocky Linux:9");
    assert_eq!(features[3]["Vulnerabilities"][1]["Link"], "https://errata.rockylinux.org/RLSA-2024:0310");
    assert_eq!(api.security(&n1, "team/rocky", &digest).await, v, "the same report through another node");

    // Its SBOM: CycloneDX 1.5, valid by the CycloneDX project's own
    // schema validator, one component per package with its package URL.
    let sbom_path = format!("/api/v1/repository/team/rocky/manifest/{digest}/sbom");
    let resp = api.http.get(format!("http://{n3}{sbom_path}")).basic_auth("admin", Some(&api.password)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/vnd.cyclonedx+json");
    let sbom_bytes = resp.bytes().await.unwrap().to_vec();
    let sbom: Value = serde_json::from_slice(&sbom_bytes).unwrap();
    let file = tmp.path().join("sbom.json");
    std::fs::write(&file, &sbom_bytes).unwrap();
    let check = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
                 e = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\nsys.exit(str(e) if e else 0)";
    run(Command::new("python3").args(["-c", check]).arg(&file));
    let purls: Vec<&str> = sbom["components"].as_array().unwrap().iter().filter_map(|c| c["purl"].as_str()).collect();
    assert_eq!(
        purls,
        [
            "pkg:rpm/rocky/alternatives@1.24-1.el9?distro=rocky-9.3",
            "pkg:rpm/rocky/bash@5.1.8-6.el9_1?distro=rocky-9.3",
            "pkg:rpm/rocky/glibc@2.34-83.el9.7?distro=rocky-9.3",
            "pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?distro=rocky-9.3&epoch=1",
        ]
    );
    assert_eq!(sbom["components"][0]["type"], "operating-system");
    // The same document through another node, and attached to the image
    // as an OCI referrer (what `oras discover` lists), by the node that
    // scanned it, before the scan was recorded.
    let (s, again) = api.call(&n1, Method::GET, &sbom_path, None).await;
    assert_eq!((s, &again), (200, &sbom));
    let (s, referrers) = api.call(&n2, Method::GET, &format!("/v2/team/rocky/referrers/{digest}"), None).await;
    assert_eq!(s, 200, "{referrers}");
    let found = referrers["manifests"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{referrers}");
    assert_eq!(found[0]["artifactType"], "application/vnd.cyclonedx+json", "{referrers}");
    let (s, artifact) = api.call(&n2, Method::GET, &format!("/v2/team/rocky/manifests/{}", found[0]["digest"].as_str().unwrap()), None).await;
    assert_eq!(s, 200, "{artifact}");
    assert_eq!(artifact["subject"]["digest"], digest.as_str(), "{artifact}");
    let layer = artifact["layers"][0]["digest"].as_str().unwrap();
    let blob = api.http.get(format!("http://{n2}/v2/team/rocky/blobs/{layer}")).basic_auth("admin", Some(&api.password)).send().await.unwrap();
    assert_eq!(blob.bytes().await.unwrap().to_vec(), sbom_bytes, "the referrer holds the API's document, byte for byte");
    // An artifact has no SBOM of its own: it is not an image.
    let (s, err) = api.call(&n3, Method::GET, &format!("/api/v1/repository/team/rocky/manifest/{}/sbom", found[0]["digest"].as_str().unwrap()), None).await;
    assert_eq!(s, 409, "{err}");
}

/// A feed URL the test controls: it answers `ETag` and `Last-Modified`,
/// 304 to a matching `If-None-Match`, keeps every request's validators,
/// and holds its first answer for a while (so the fetching node can be
/// killed mid-fetch).
#[derive(Clone, Default)]
struct FeedUrl {
    body: Arc<StdMutex<(Vec<u8>, String)>>,
    asked: Arc<StdMutex<Vec<Option<String>>>>,
}

impl FeedUrl {
    async fn start(body: Vec<u8>, etag: &str) -> (FeedUrl, String) {
        let url = FeedUrl::default();
        *url.body.lock().unwrap() = (body, etag.to_string());
        let serve = url.clone();
        let app = axum::Router::new().route(
            "/rocky.json",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let serve = serve.clone();
                async move {
                    let asked = headers.get("if-none-match").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let first = {
                        let mut log = serve.asked.lock().unwrap();
                        log.push(asked.clone());
                        log.len() == 1
                    };
                    if first {
                        tokio::time::sleep(Duration::from_secs(8)).await;
                    }
                    let (body, etag) = serve.body.lock().unwrap().clone();
                    let lm = "Sat, 01 Jun 2024 00:00:00 GMT";
                    if asked.as_deref() == Some(etag.as_str()) {
                        return (axum::http::StatusCode::NOT_MODIFIED, [("etag", etag), ("last-modified", lm.to_string())], Vec::new());
                    }
                    (axum::http::StatusCode::OK, [("etag", etag), ("last-modified", lm.to_string())], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, format!("http://{addr}/rocky.json"))
    }

    fn asked(&self) -> Vec<Option<String>> {
        self.asked.lock().unwrap().clone()
    }
}

fn rocky_records(files: &[&str]) -> Vec<u8> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanner/testdata/rocky9");
    let records: Vec<Value> = files.iter().map(|f| serde_json::from_slice(&std::fs::read(data.join(f)).unwrap()).unwrap()).collect();
    serde_json::to_vec(&records).unwrap()
}

/// A feed fetched on a schedule: set through node 2, fetched by one node
/// under a lease; that node killed mid-fetch, another takes the fetch
/// over and imports it; the next fetches send the `ETag` back and a 304
/// changes nothing; a new snapshot at the URL is imported; bad input is
/// refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_url_is_fetched_on_schedule_conditionally_and_taken_over() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    berth_node::install_crypto_provider();
    let all = ["RLSA-2024-0310.json", "RLSA-2024-2447.json", "RLSA-2023-5455.json", "RLSA-TEST-0001.json"];
    let (feed, url) = FeedUrl::start(rocky_records(&all), "\"v1\"").await;
    let mut c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            t.insert("scan".into(), toml::Value::Table(toml::toml! { poll_interval_ms = 300 lease_secs = 3 }));
        })
    });
    let api = Api { http: reqwest::Client::new(), password: c.password.clone() };
    let n2 = c.http[1].clone();
    let pw = c.password_file.to_str().unwrap().to_string();
    let set = ok(&["scanner", "source", "set", "rocky", &url, "--every", "2", "--endpoint", &format!("http://{n2}"), "--password-file", &pw]);
    assert!(set.contains("feed source rocky set"), "{set}");

    // The first fetch hangs at the URL: kill the node making it.
    eventually(Duration::from_secs(30), "the URL was asked", || async { (!feed.asked().is_empty()).then_some(()) }).await;
    let holder = eventually(Duration::from_secs(10), "a node started the fetch", || async {
        (0..3).find(|&i| std::fs::read_to_string(c.dirs[i].with_extension("log")).unwrap_or_default().contains("feed fetch started"))
    })
    .await;
    c.procs[holder].kill9();
    let alive = c.http.iter().enumerate().find(|(i, _)| *i != holder).unwrap().1.clone();
    let status_path = "/api/v1/superuser/scanner/status";
    let st = eventually(Duration::from_secs(60), "the feed imported by another node", || async {
        let st = api.ok(&alive, Method::GET, status_path, None).await;
        (st["feeds"].as_array().unwrap().len() == 1).then_some(st)
    })
    .await;
    assert_eq!((st["feeds"][0]["name"].as_str(), st["feeds"][0]["advisories"].as_u64()), (Some("rocky"), Some(13)), "{st}");
    let src = &st["sources"][0];
    assert_ne!(src["last_checked_by"].as_u64(), Some(holder as u64 + 1), "{st}");
    assert!(src["last_outcome"].as_str().unwrap().starts_with("imported sha256:"), "{st}");
    assert_eq!(src["etag"], "\"v1\"", "{st}");
    let generation = st["generation"].as_u64().unwrap();
    assert_eq!(feed.asked()[..2], [None, None], "no validators before a first answer");

    // Later fetches send the ETag back; the 304 changes nothing.
    let st = eventually(Duration::from_secs(30), "a conditional fetch answered 304", || async {
        let st = api.ok(&alive, Method::GET, status_path, None).await;
        (st["sources"][0]["last_outcome"] == "not modified").then_some(st)
    })
    .await;
    assert!(feed.asked().iter().skip(2).all(|a| a.as_deref() == Some("\"v1\"")), "{:?}", feed.asked());
    assert_eq!(st["generation"].as_u64(), Some(generation), "{st}");

    // A new snapshot at the URL is imported on the next fetch.
    *feed.body.lock().unwrap() = (rocky_records(&all[..3]), "\"v2\"".to_string());
    let st = eventually(Duration::from_secs(30), "the new snapshot imported", || async {
        let st = api.ok(&alive, Method::GET, status_path, None).await;
        (st["feeds"][0]["advisories"].as_u64() == Some(11)).then_some(st)
    })
    .await;
    assert_eq!(st["generation"].as_u64(), Some(generation + 1), "{st}");
    assert_eq!(st["sources"][0]["etag"], "\"v2\"", "{st}");
    let shown = ok(&["scanner", "status", "--endpoint", &format!("http://{alive}"), "--password-file", &pw]);
    assert!(shown.contains("SOURCE") && shown.contains(&url), "{shown}");

    // Bad input: refused, with nothing changed.
    let (s, _) =
        api.call(&alive, Method::PUT, "/api/v1/superuser/scanner/sources/x", Some(br#"{"url": "ftp://example/feed", "interval_secs": 60}"#.to_vec())).await;
    assert_eq!(s, 400);
    let (s, _) =
        api.call(&alive, Method::PUT, "/api/v1/superuser/scanner/sources/x", Some(format!(r#"{{"url": "{url}", "interval_secs": 0}}"#).into_bytes())).await;
    assert_eq!(s, 400);
    let out = berth(&["scanner", "source", "rm", "nope", "--endpoint", &format!("http://{alive}"), "--password-file", &pw]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(api.ok(&alive, Method::GET, status_path, None).await["sources"].as_array().unwrap().len(), 1);
    let removed = ok(&["scanner", "source", "rm", "rocky", "--endpoint", &format!("http://{alive}"), "--password-file", &pw]);
    assert!(removed.contains("removed"), "{removed}");
    let st = api.ok(&alive, Method::GET, status_path, None).await;
    assert!(st["sources"].as_array().unwrap().is_empty() && st["feeds"].as_array().unwrap().len() == 1, "{st}");
}
