//! `/metrics`: valid Prometheus text (promtool), and counters that move
//! with a push, a pull that fetches from a peer, and a GC run.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_node::registry::gc::collect_once;
use common::http::*;
use common::*;
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(30);

async fn scrape(node: &berth_node::runtime::RunningNode) -> String {
    let resp = reqwest::get(format!("http://{}/metrics", node.http_addr)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    resp.text().await.unwrap()
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")))).then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_valid_and_move_with_push_peer_pull_and_gc() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    // A namespace kept only where pushed (and where its second copy is
    // streamed), so a pull through the third node must fetch from a peer.
    let on_demand = berth_raft::MetaCommand::SetPlacement { namespace: "obs".into(), placement: berth_raft::command::Placement::OnDemand };
    c.node(leader).meta.write(berth_raft::Actor::OPERATOR, on_demand).await.unwrap();
    let before = [scrape(c.node(2)).await, scrape(c.node(3)).await];
    promtool_check(&before[0]);
    for name in [
        "berth_raft_term",
        "berth_raft_applied_index",
        "berth_raft_apply_lag_entries",
        "berth_raft_read_barriers_total",
        "berth_raft_write_groups_total",
        "berth_raft_grouped_writes_total",
        "berth_uploads_in_progress",
        "berth_replication_backlog_blobs",
        "berth_gc_runs_total",
    ] {
        assert!(before[0].contains(name), "{name} is exported");
    }

    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let d = reg(c.node(1)).blob("obs/app", &blob).await;
    let mut without = Vec::new();
    for id in [2, 3] {
        if c.node(id).replicator.store().stat(&d).await.unwrap().is_none() {
            without.push(id);
        }
    }
    assert_eq!(without.len(), 1, "one peer got the pipelined copy, the other nothing");
    let puller = without[0];
    let before = &before[puller as usize - 2];
    let r = reg(c.node(puller));
    let (s, _, body) = r.send(r.req(Method::GET, &format!("/v2/obs/app/blobs/{d}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == blob);
    let n = c.node(puller);
    collect_once(&n.meta, n.replicator.store(), Duration::from_secs(3600), &n.gc_stats).await;

    let after = scrape(c.node(puller)).await;
    promtool_check(&after);
    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(before, name, labels);
    assert!(moved("berth_blob_reads_total", &[("source", "peer")]) >= 1.0, "a pull served from a peer");
    assert!(moved("berth_peer_fetched_bytes_total", &[]) >= blob.len() as f64, "bytes fetched from a holder");
    assert!(moved("berth_peer_fetches_total", &[("outcome", "ok")]) >= 1.0);
    assert!(moved("berth_http_requests_total", &[("endpoint", "v2_blob"), ("method", "GET"), ("status", "200")]) >= 1.0);
    assert!(moved("berth_http_request_duration_seconds_count", &[("endpoint", "v2_blob")]) >= 1.0, "latency histogram");
    assert!(moved("berth_gc_runs_total", &[]) >= 1.0);
    // The push, as node 1 counts it.
    let n1 = scrape(c.node(1)).await;
    assert!(value(&n1, "berth_http_requests_total", &[("endpoint", "v2_upload_start"), ("method", "POST"), ("status", "201")]) >= 1.0);
    assert!(value(&n1, "berth_http_received_bytes_total", &[("endpoint", "v2_upload_start")]) >= blob.len() as f64);
    // No repository names or digests as labels.
    assert!(!after.contains("obs/app") && !after.contains(d.hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_methods_share_one_label() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_leader(T).await;
    let http = reqwest::Client::new();
    for path in ["/v2/", "/health", "/v2/lib/app/manifests/v1"] {
        let r = http.request(Method::from_bytes(b"FOO123").unwrap(), format!("http://{}{path}", c.any().http_addr)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    let text = scrape(c.any()).await;
    assert!(!text.contains("FOO123"), "a made-up method is no label");
    assert!(value(&text, "berth_http_requests_total", &[("method", "other")]) >= 3.0, "counted as other");
    promtool_check(&text);
}
