//! `berth drill region` with real processes, through the CLI an operator
//! uses: three nodes in three regions, a follower's region cut off for a
//! few seconds while the drill (and this test) write and read on both
//! sides; then the refusals that keep a drill safe.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_common::Digest;
use common::http::{manifest_json, OCI_MANIFEST};
use common::procs::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The registry and admin API of every node, as the admin.
struct Client {
    http: reqwest::Client,
    password: String,
}

impl Client {
    fn req(&self, node: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{node}{path}")).basic_auth("admin", Some(&self.password)).timeout(Duration::from_secs(20))
    }

    async fn status(&self, node: &str, method: Method, path: &str) -> StatusCode {
        self.req(node, method, path).send().await.unwrap().status()
    }

    async fn blob(&self, node: &str, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let s = self.req(node, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}")).body(bytes.to_vec()).send().await.unwrap().status();
        assert_eq!(s, StatusCode::CREATED, "blob push to {node}");
        d
    }

    async fn put_manifest(&self, node: &str, repo: &str, tag: &str, body: &[u8]) -> StatusCode {
        self.req(node, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A drill probe write through `node`: its status and error code, and how long it took.
    async fn probe_write(&self, node: &str) -> (StatusCode, Option<String>, Duration) {
        let t = Instant::now();
        let r = self.req(node, Method::POST, "/api/v1/drill/probe").send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body["errors"][0]["code"].as_str().map(str::to_string), t.elapsed())
    }

    async fn wait_pullable(&self, node: &str, path: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status(node, Method::GET, path).await != StatusCode::OK {
            assert!(Instant::now() < deadline, "{path} never became pullable on {node}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn err_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "must fail: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn a_follower_region_is_cut_off_and_rejoins_and_unsafe_drills_are_refused() {
    berth_node::install_crypto_provider();
    let c = ProcCluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client { http: reqwest::Client::new(), password: c.password.clone() };
    let urls: Vec<String> = c.http.iter().map(|h| format!("http://{h}")).collect();
    let pw = c.password_file.to_str().unwrap().to_string();
    let login = ["--endpoint", urls[0].as_str(), "--password-file", pw.as_str()];

    // A small image, pulled from every node.
    let image = rt.block_on(async {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer = b"layer bytes of the drill image";
        let (cd, ld) = (client.blob(&urls[0], "drill/app", config).await, client.blob(&urls[0], "drill/app", layer).await);
        let manifest = manifest_json(&cd, config.len() as u64, &[(ld, layer.len() as u64)], None, None);
        assert_eq!(client.put_manifest(&urls[0], "drill/app", "v1", &manifest).await, StatusCode::CREATED);
        for u in &urls {
            client.wait_pullable(u, "/v2/drill/app/manifests/v1", Duration::from_secs(10)).await;
        }
        manifest
    });

    let s = status(&c.dirs[0]).expect("status");
    let leader = s["leader"].as_u64().unwrap();
    let nodes = s["nodes"].as_array().unwrap();
    let target = nodes.iter().find(|n| n["id"].as_u64() != Some(leader)).unwrap();
    let (target_id, region, target_url) = (target["id"].as_u64().unwrap(), target["region"].as_str().unwrap(), target["http_addr"].as_str().unwrap());
    let leader_url = nodes.iter().find(|n| n["id"].as_u64() == Some(leader)).unwrap()["http_addr"].as_str().unwrap();

    // An unknown region: one line, non-zero, nothing done.
    let e = err_line(&berth(&[&["drill", "region", "atlantis"][..], &login[..]].concat()));
    assert!(e.contains("\"atlantis\" has no nodes") && e.contains(region), "{e}");

    // The drill, in the background; this test writes and reads alongside.
    let mut drill = Command::new(BERTH)
        .args([&["drill", "region", region, "--duration", "4s", "--json"][..], &login[..]].concat())
        .env("BERTH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rt.block_on(async {
        // Once cut off, the node refuses writes at once, with the OCI error JSON.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (code, took) = loop {
            let (status, code, took) = client.probe_write(target_url).await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                break (code, took);
            }
            assert!(status.is_success(), "before the cut the node takes writes: {status}");
            if let Some(exit) = drill.try_wait().unwrap() {
                let (mut out, mut err) = (String::new(), String::new());
                std::io::Read::read_to_string(drill.stdout.as_mut().unwrap(), &mut out).unwrap();
                std::io::Read::read_to_string(drill.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("the drill ended ({exit}) before node {target_id} was cut off: {err}{out}");
            }
            assert!(Instant::now() < deadline, "node {target_id} was never cut off");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(code.as_deref(), Some("UNAVAILABLE"));
        assert!(took < Duration::from_secs(2), "a refusal, not a hang: {took:?}");
        // The majority takes a new tag; the cut-off node serves what it has but cannot see it.
        assert_eq!(client.put_manifest(leader_url, "drill/app", "during", &image).await, StatusCode::CREATED);
        assert_eq!(client.status(target_url, Method::GET, "/v2/drill/app/manifests/v1").await, StatusCode::OK);
        let during = client.status(target_url, Method::GET, "/v2/drill/app/manifests/during").await;
        // The blob transport: the leader asks every node for its RTTs over QUIC; the cut-off node does not answer.
        let s: Value = client.req(leader_url, Method::GET, "/api/v1/cluster/status").send().await.unwrap().json().await.unwrap();
        let rtt_rows: Vec<u64> = s["rtt_ms"].as_array().unwrap().iter().map(|r| r["from"].as_u64().unwrap()).collect();
        if client.probe_write(target_url).await.0 == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(during, StatusCode::NOT_FOUND, "a cut-off node cannot have seen a tag pushed during the drill (raft calls refused)");
            assert!(!rtt_rows.contains(&target_id), "a cut-off node answers no blob request: {rtt_rows:?}");
            assert!(rtt_rows.contains(&leader), "{rtt_rows:?}");
        }
    });
    let out = drill.wait_with_output().unwrap();
    assert!(out.status.success(), "drill failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("drill report: {r:#}");
    assert_eq!(r["region"], region);
    assert_eq!(r["nodes"], serde_json::json!([target_id]));
    assert_eq!(r["read_path"], "/v2/drill/app/manifests/v1", "reads probe a pull of the image");
    let outside = &r["writes_outside"];
    assert!(outside["recovered"] == true && outside["ok"].as_u64().unwrap() > 10, "{r:#}");
    let inside = &r["writes_inside"];
    assert_eq!(inside["ok"], 0, "no write went through the cut-off node: {r:#}");
    assert!(inside["refused"].as_u64().unwrap() > 10, "{r:#}");
    assert_eq!(inside["refusals"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["503 UNAVAILABLE"], "{r:#}");
    assert!(inside["slowest_refusal_ms"].as_u64().unwrap() < 2_000, "{r:#}");
    assert!(inside["example"].as_str().unwrap().contains("cut off"), "{r:#}");
    let reads = r["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 3, "{r:#}");
    for read in reads {
        assert_eq!(read["failed"], 0, "no read failed on any node, cut off or not: {r:#}");
        assert!(read["longest_gap_ms"].as_u64().unwrap() < 1_000, "{r:#}");
        assert_eq!(read["isolated"], read["node"].as_u64() == Some(target_id));
    }
    assert!(r["rejoined"] == true && r["rejoin_ms"].is_u64(), "{r:#}");
    assert!(r["isolated_ms"].as_u64().unwrap() >= 4_000, "{r:#}");
    assert!(r.get("warnings").is_none(), "{r:#}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("report was not recorded"), "{}", String::from_utf8_lossy(&out.stderr));

    // The drill posted its report (the refused one none): the cut-off
    // node lists it, as every node does, with the CLI's figures as they are.
    rt.block_on(async {
        // The node just rejoined: it lists the report once it has caught up.
        let deadline = Instant::now() + Duration::from_secs(15);
        let listed = loop {
            let listed: Value = client.req(target_url, Method::GET, "/api/v1/drill/reports").send().await.unwrap().json().await.unwrap();
            if listed.as_array().is_some_and(|a| !a.is_empty()) || Instant::now() > deadline {
                break listed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!((&listed[0]["kind"], &listed[0]["target"], &listed[0]["by"]), (&Value::from("region"), &Value::from(region), &Value::from("admin")));
        assert_eq!(listed[0]["nodes"], serde_json::json!([target_id]));
        assert_eq!(listed[0]["figures"], r, "the report keeps the CLI's figures");
        let took = listed[0]["ended_ms"].as_u64().unwrap() - listed[0]["started_ms"].as_u64().unwrap();
        assert!(took >= 4_000, "from the drill's start to its end: {took} ms");
        // A report of no known drill, or out of bounds, is refused and not kept.
        for bad in [
            serde_json::json!({"kind": "meteor", "started_ms": 1, "ended_ms": 2, "target": "eu"}),
            serde_json::json!({"kind": "region", "started_ms": 1, "ended_ms": 2, "target": "x".repeat(500)}),
            serde_json::json!({"kind": "region", "started_ms": 1, "ended_ms": 2, "target": "eu", "figures": {"x": "y".repeat(20_000)}}),
            serde_json::json!({"kind": "region", "started_ms": 1, "ended_ms": 2, "target": "eu", "by": "mallory"}),
        ] {
            let resp = client.req(leader_url, Method::POST, "/api/v1/drill/reports").json(&bad).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["errors"][0]["message"].is_string(), "{body}");
        }
        let after: Value = client.req(leader_url, Method::GET, "/api/v1/drill/reports").send().await.unwrap().json().await.unwrap();
        assert_eq!(after.as_array().unwrap().len(), 1, "nothing kept: {after:#}");
    });

    rt.block_on(async {
        // What the majority took during the drill reached the node once it rejoined.
        client.wait_pullable(target_url, "/v2/drill/app/manifests/during", Duration::from_secs(10)).await;
        let (status, _, _) = client.probe_write(target_url).await;
        assert!(status.is_success(), "the rejoined node takes writes again: {status}");
    });

    // A region holding the majority of the voters: demote a node so that
    // one voter is left, in one region; drilling that region is refused.
    let other = nodes.iter().map(|n| n["id"].as_u64().unwrap()).find(|id| *id != leader && *id != target_id).unwrap();
    ok(&[&["cluster", "demote", &other.to_string()][..], &login[..]].concat());
    let s = wait_status(&c.dirs[0], "one voter", Duration::from_secs(30), |s| voters(s).len() == 1 && s["leader"].as_u64() == voters(s).first().copied());
    let voter = voters(&s)[0];
    let voter_region = s["nodes"].as_array().unwrap().iter().find(|n| n["id"].as_u64() == Some(voter)).unwrap()["region"].as_str().unwrap().to_string();
    let e = err_line(&berth(&[&["drill", "region", &voter_region, "--duration", "2s"][..], &login[..]].concat()));
    assert!(e.contains("hold 0 of the 1 voters") && e.contains("--force"), "{e}");
}
