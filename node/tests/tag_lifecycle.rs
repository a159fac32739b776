//! Tag lifecycle across a real three-node cluster in one process: an
//! expiration set through one node's API ends the tag on another node's
//! `/v2` at the moment it passes, with no worker closing the row; a
//! restore brings it back everywhere; an immutable tag refuses writes
//! through every node, inside the Raft command.

mod common;

use std::time::Duration;

use berth_node::util::now_ms;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::http::*;
use common::*;

const T: Duration = Duration::from_secs(20);
const HOUR_MS: u64 = 3_600_000;
/// A tag pushed this long less than an hour ago may be given the shortest
/// expiration (an hour after its start), which is then this far ahead: room
/// for the push and the API call on a loaded machine, then a short wait.
const MARGIN_MS: u64 = 10_000;
const REPO: &str = "team/app";

async fn json_of(r: &Reg, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut rb = r.req(method, path);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let (s, _, bytes) = r.send(rb).await;
    (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn tag_path(tag: &str) -> String {
    format!("/api/v1/repository/{REPO}/tag/{tag}")
}

/// The rows of `tag` as `r`'s node lists them, newest first.
async fn rows(r: &Reg, tag: &str) -> Vec<Value> {
    let (s, v) = json_of(r, Method::GET, &format!("/api/v1/repository/{REPO}/tag/?specificTag={tag}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tags"].as_array().unwrap().clone()
}

async fn v2_tags(r: &Reg) -> Vec<String> {
    let (s, v) = json_of(r, Method::GET, &format!("/v2/{REPO}/tags/list"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiration_restore_and_immutability_hold_on_every_node() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let (r1, r2, r3) = (reg(c.node(1)), reg(c.node(2)), reg(c.node(3)));

    // A tag that started almost an hour ago (the shortest lifetime an
    // expiration may give is an hour from the start), pushed through node 1.
    let start_ms = now_ms() - HOUR_MS + MARGIN_MS;
    let digest = push(c.node(1), REPO, "ci", start_ms).await;
    c.sync_all().await;

    // Refusals change nothing: a time not in the future, a bad body.
    let (s, v) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": now_ms() / 1000 - 10}))).await;
    assert_eq!((s, v["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BAD_REQUEST")), "{v}");
    let (s, _) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": null, "immutable": true}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "one change at a time");
    let (s, _) = json_of(&r2, Method::PUT, &tag_path("nope"), Some(json!({"expiration": now_ms() / 1000 + 7200}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(rows(&r3, "ci").await[0]["expiration"], Value::Null);

    // Set through node 2: five seconds from now, clamped to an hour after the start.
    let (s, v) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": now_ms() / 1000 + 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let expires_ms = start_ms + HOUR_MS;
    // Cleared through node 2 (node 3 sees no expiration), then set again.
    let (s, v) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": null}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    c.sync_all().await;
    assert_eq!(rows(&r3, "ci").await[0]["expiration"], Value::Null, "cleared");
    let (s, v) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": now_ms() / 1000 + 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    c.sync_all().await;
    let listed = rows(&r3, "ci").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["expiration"], json!(expires_ms / 1000));
    assert_eq!(listed[0]["manifest_digest"], json!(digest.to_string()));
    assert!(now_ms() < expires_ms, "the test was too slow to see the tag before it expired");
    assert_eq!(v2_tags(&r3).await, vec!["ci".to_string()]);

    // Once the moment passes node 3 serves the tag no more, though no
    // worker closed the row: the live record is still there.
    eventually(T, "node 3 stops listing the expired tag", || async { v2_tags(&r3).await.is_empty() }).await;
    assert!(now_ms() >= expires_ms);
    let (s, _, _) = r3.send(r3.req(Method::GET, &format!("/v2/{REPO}/manifests/ci"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(tag_on(c.node(3), REPO, "ci"), Some(digest.clone()), "the row is not closed: expiry is checked at read time");
    let (s, v) = json_of(&r3, Method::GET, &format!("/api/v1/repository/{REPO}/tag/?onlyActiveTags=true"), None).await;
    assert_eq!((s, v["tags"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{v}");
    let (s, v) = json_of(&r3, Method::GET, &format!("/api/v1/repository/{REPO}"), None).await;
    assert_eq!((s, v["tags"].clone()), (StatusCode::OK, json!([])), "the repository shows no expired tag: {v}");

    // Restore through the API: an unknown digest is a 404 and changes
    // nothing; the right one brings the tag back, pullable through node 2.
    let other = berth_common::Digest::sha256_of(b"never pushed");
    let (s, _) = json_of(&r1, Method::POST, &format!("{}/restore", tag_path("ci")), Some(json!({"manifest_digest": other.to_string()}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = json_of(&r1, Method::POST, &format!("{}/restore", tag_path("ci")), Some(json!({"manifest_digest": digest.to_string()}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    c.sync_all().await;
    let (s, h, _) = r2.send(r2.req(Method::GET, &format!("/v2/{REPO}/manifests/ci"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["docker-content-digest"], digest.to_string().as_str());
    let listed = rows(&r3, "ci").await;
    assert_eq!(listed.len(), 2, "the restored row and the expired one: {listed:?}");
    assert_eq!((listed[0]["reversion"].clone(), listed[0]["end_ts"].clone()), (json!(true), Value::Null));
    assert_eq!(listed[1]["end_ts"], json!(expires_ms / 1000), "the expired row ended at its expiration");

    // Locked through node 1: an overwrite through node 3 and a delete
    // through node 2 are refused with TAG_IMMUTABLE, and nothing changes.
    let (s, v) = json_of(&r1, Method::PUT, &tag_path("ci"), Some(json!({"immutable": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    c.sync_all().await;
    let image = r3.image(REPO, "other").await;
    assert_error(&r3.put_manifest(REPO, "ci", OCI_MANIFEST, &image).await, StatusCode::CONFLICT, "TAG_IMMUTABLE");
    assert_error(&r2.send(r2.req(Method::DELETE, &format!("/v2/{REPO}/manifests/ci"))).await, StatusCode::CONFLICT, "TAG_IMMUTABLE");
    let (s, v) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"expiration": now_ms() / 1000 + 7200}))).await;
    assert_eq!((s, v["errors"][0]["code"].as_str()), (StatusCode::CONFLICT, Some("TAG_IMMUTABLE")), "{v}");
    // Two pushes of different images racing through two nodes: both refused.
    let image2 = r2.image(REPO, "racer").await;
    let (a, b) = tokio::join!(r2.put_manifest(REPO, "ci", OCI_MANIFEST, &image2), r3.put_manifest(REPO, "ci", OCI_MANIFEST, &image));
    assert_error(&a, StatusCode::CONFLICT, "TAG_IMMUTABLE");
    assert_error(&b, StatusCode::CONFLICT, "TAG_IMMUTABLE");
    c.sync_all().await;
    for n in c.nodes.values() {
        assert_eq!(tag_on(n, REPO, "ci"), Some(digest.clone()), "node {} still has the tag where it was", n.config.node_id);
    }
    let refused = berth_common::Digest::sha256_of(&image);
    let (s, _, _) = r1.send(r1.req(Method::GET, &format!("/v2/{REPO}/manifests/{refused}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the refused push stored no manifest");

    // Unlocking needs admin on the repository; the admin may, then moves work.
    let (s, _) = json_of(&r2, Method::PUT, &tag_path("ci"), Some(json!({"immutable": false}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = r3.put_manifest(REPO, "ci", OCI_MANIFEST, &image).await;
    assert_eq!(s, StatusCode::CREATED);

    // Every change is in the usage log.
    c.flush_audit().await;
    let (s, v) = json_of(&r3, Method::GET, &format!("/api/v1/repository/{REPO}/logs"), None).await;
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<&str> = v["logs"].as_array().unwrap().iter().filter_map(|l| l["kind"].as_str()).collect();
    for kind in ["change_tag_expiration", "revert_tag", "change_tag_immutability"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

/// A user with write on the repository may lock a tag but not unlock it
/// (that needs admin); the refusal changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlocking_needs_admin() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_voters(&[1], T).await;
    let admin = reg(c.node(1));
    push(c.node(1), REPO, "v1", now_ms()).await;
    let (s, v) = json_of(&admin, Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "dev", "password": "dev-password-1"}))).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = json_of(&admin, Method::PUT, &format!("/api/v1/repository/{REPO}/permissions/user/dev"), Some(json!({"role": "write"}))).await;
    assert!(s.is_success(), "{v}");
    let dev = Reg::at(admin.base.clone(), "dev", "dev-password-1");
    let (s, v) = json_of(&dev, Method::PUT, &tag_path("v1"), Some(json!({"immutable": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = json_of(&dev, Method::PUT, &tag_path("v1"), Some(json!({"immutable": false}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(rows(&admin, "v1").await[0]["immutable"], json!(true), "still locked");
    let (s, _) = json_of(&admin, Method::PUT, &tag_path("v1"), Some(json!({"immutable": false}))).await;
    assert_eq!(s, StatusCode::CREATED, "the admin may");
}

/// The listing's query: filters, paging, and a 400 for what is malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_listing_filters_and_pages() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_voters(&[1], T).await;
    let admin = reg(c.node(1));
    let base = now_ms();
    for (i, tag) in ["v1", "v2", "v3", "latest"].iter().enumerate() {
        push(c.node(1), REPO, tag, base + i as u64).await;
    }
    let list = |q: &'static str| {
        let admin = admin.clone();
        async move { json_of(&admin, Method::GET, &format!("/api/v1/repository/{REPO}/tag/{q}"), None).await }
    };
    let names = |v: &Value| v["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (s, v) = list("").await;
    assert_eq!((s, names(&v)), (StatusCode::OK, vec!["latest".to_string(), "v3".into(), "v2".into(), "v1".into()]), "newest first");
    let (_, v) = list("?limit=3").await;
    assert_eq!((names(&v).len(), v["has_additional"].clone(), v["page"].clone()), (3, json!(true), json!(1)));
    let (_, v) = list("?limit=3&page=2").await;
    assert_eq!((names(&v), v["has_additional"].clone()), (vec!["v1".to_string()], json!(false)));
    let (_, v) = list("?filter_tag_name=like:v").await;
    assert_eq!(names(&v), vec!["v3".to_string(), "v2".into(), "v1".into()]);
    let (_, v) = list("?filter_tag_name=eq:v2").await;
    assert_eq!(names(&v), vec!["v2".to_string()]);
    let (_, v) = list("?specificTag=latest").await;
    assert_eq!(names(&v), vec!["latest".to_string()]);
    for bad in ["?limit=0", "?limit=101", "?page=0", "?filter_tag_name=v1", "?limit=x"] {
        let (s, _) = list(bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, _) = json_of(&admin, Method::PUT, &tag_path("bad%20tag"), Some(json!({"immutable": true}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a malformed tag");
    let (s, _) = json_of(&admin, Method::PUT, &tag_path("v1"), Some(json!({"manifest_digest": "sha256:zz"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a malformed digest");
    // A move through the API is history too.
    let d3 = tag_on(c.node(1), REPO, "v3").unwrap();
    let (s, _) = json_of(&admin, Method::PUT, &tag_path("v1"), Some(json!({"manifest_digest": d3.to_string()}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, v) = list("?specificTag=v1").await;
    let rows = v["tags"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["manifest_digest"].clone(), rows[0]["end_ts"].clone()), (json!(d3.to_string()), Value::Null));
    assert!(rows[1]["end_ts"].is_u64());
    let (_, v) = list("?specificTag=v1&onlyActiveTags=true").await;
    assert_eq!(v["tags"].as_array().unwrap().len(), 1);
}

/// The leader's pass closes an expired row into history on every node; a
/// follower's pass, and a second pass, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_pass_closes_expired_rows() {
    use berth_node::registry::lifecycle::close_expired_once;
    use berth_raft::command::TagHistoryRecord;
    use berth_raft::state::keys;
    use berth_raft::StateRead;

    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let start_ms = now_ms() - HOUR_MS + MARGIN_MS;
    let digest = push(c.node(leader), REPO, "ci", start_ms).await;
    let (s, v) = json_of(&reg(c.node(follower)), Method::PUT, &tag_path("ci"), Some(json!({"expiration": now_ms() / 1000 + 5}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(close_expired_once(&c.node(leader).meta, now_ms()).await, 0, "nothing has expired yet");
    let expires_ms = start_ms + HOUR_MS;
    eventually(T, "the expiration passes", || async { now_ms() >= expires_ms }).await;
    c.sync_all().await;
    assert_eq!(close_expired_once(&c.node(follower).meta, now_ms()).await, 0, "only the leader closes rows");
    assert_eq!(tag_on(c.node(leader), REPO, "ci"), Some(digest.clone()));
    assert_eq!(close_expired_once(&c.node(leader).meta, now_ms()).await, 1);
    c.sync_all().await;
    for n in c.nodes.values() {
        assert_eq!(tag_on(n, REPO, "ci"), None, "node {}", n.config.node_id);
        let history: Vec<TagHistoryRecord> = n.meta.state().scan(&keys::tag_history(REPO, "ci")).unwrap();
        assert_eq!(history.iter().map(|h| (h.digest.clone(), h.start_ms, h.end_ms)).collect::<Vec<_>>(), vec![(digest.clone(), start_ms, expires_ms)]);
    }
    assert_eq!(close_expired_once(&c.node(leader).meta, now_ms()).await, 0, "a second pass changes nothing");
}

/// A namespace's time machine window: chosen among the allowed options
/// through `PUT /organization/{org}` and `PUT /user/`, shown by their
/// GETs; a restore reaches only rows that ended inside it; history
/// outside it is pruned by the leader's pass, and garbage collection
/// forgets the images only such rows held, keeping everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_time_machine_window_bounds_restores_and_collection() {
    use berth_node::registry::gc::{collect_at, GcStats};
    use berth_node::registry::lifecycle::prune_history_once;

    let c = Cluster::new(1, fast_config()).await;
    c.wait_voters(&[1], T).await;
    let r = reg(c.node(1));
    let node = c.node(1);
    push(node, "team/seed", "x", now_ms()).await; // makes the organization
    let org = "/api/v1/organization/team";
    let (s, v) = json_of(&r, Method::GET, org, None).await;
    assert_eq!((s, v["tag_expiration_s"].clone()), (StatusCode::OK, json!(14 * 24 * 3600)), "two weeks by default: {v}");

    // Refusals change nothing: a window not among the options, an unknown
    // field, another email, an empty change of one's own settings.
    for body in [json!({"tag_expiration_s": 12345}), json!({"tag_expiration_s": 86400, "bogus": 1}), json!({"email": "x@example.com"})] {
        let (s, v) = json_of(&r, Method::PUT, org, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (s, v) = json_of(&r, Method::PUT, "/api/v1/user/", Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = json_of(&r, Method::PUT, "/api/v1/user/", Some(json!({"tag_expiration_s": 7}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = json_of(&r, Method::GET, org, None).await;
    assert_eq!(v["tag_expiration_s"], json!(14 * 24 * 3600), "unchanged");
    let (_, v) = json_of(&r, Method::GET, "/api/v1/user/", None).await;
    assert_eq!(v["tag_expiration_s"], json!(14 * 24 * 3600), "unchanged");

    // The user's own window, and the organization's.
    let (s, v) = json_of(&r, Method::PUT, "/api/v1/user/", Some(json!({"tag_expiration_s": 0}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = json_of(&r, Method::GET, "/api/v1/user/", None).await;
    assert_eq!(v["tag_expiration_s"], json!(0));
    let (s, v) = json_of(&r, Method::PUT, org, Some(json!({"tag_expiration_s": 86400}))).await;
    assert_eq!((s, v["tag_expiration_s"].clone()), (StatusCode::OK, json!(86400)), "{v}");

    // Three images through one tag: the first two end in history.
    let mut images = vec![];
    for seed in ["one", "two", "three"] {
        let m = r.image(REPO, seed).await;
        let (s, _, _) = r.put_manifest(REPO, "rel", OCI_MANIFEST, &m).await;
        assert_eq!(s, StatusCode::CREATED);
        images.push(m);
    }
    let digests: Vec<_> = images.iter().map(|m| berth_common::Digest::sha256_of(m)).collect();
    let config_of = |m: &[u8]| -> String { serde_json::from_slice::<Value>(m).unwrap()["config"]["digest"].as_str().unwrap().to_string() };
    let restore = |d: &berth_common::Digest| {
        let r = r.clone();
        let body = json!({"manifest_digest": d.to_string()});
        async move { json_of(&r, Method::POST, &format!("{}/restore", tag_path("rel")), Some(body)).await }
    };
    // Inside the window (a day): restorable, and collection keeps every image.
    let (s, v) = restore(&digests[1]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = json_of(&r, Method::PUT, &tag_path("rel"), Some(json!({"manifest_digest": digests[2].to_string()}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let grace = Duration::from_secs(3600);
    let later = std::time::SystemTime::now() + grace + Duration::from_secs(1);
    let stats = GcStats::default();
    let report = collect_at(&node.meta, node.replicator.store(), later, grace, &stats).await;
    assert_eq!((report.manifests, report.swept), (0, 0), "everything is inside the window");

    // A zero window: nothing closed can be restored, and the refusal changes nothing.
    let (s, _) = json_of(&r, Method::PUT, org, Some(json!({"tag_expiration_s": 0}))).await;
    assert_eq!(s, StatusCode::OK);
    let before = rows(&r, "rel").await;
    let (s, v) = restore(&digests[0]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("time machine"), "{v}");
    assert_eq!(rows(&r, "rel").await, before, "nothing changed");
    assert_eq!(tag_on(node, REPO, "rel"), Some(digests[2].clone()));

    // The leader's pass prunes the rows outside the window; collection
    // forgets the two images only they held, with their blobs, and keeps
    // the tagged one and the other repository's.
    assert!(before.len() > 1);
    assert_eq!(prune_history_once(&node.meta, now_ms() + 1).await, 1, "one repository pruned");
    let listed = rows(&r, "rel").await;
    assert_eq!(listed.len(), 1, "only the live row is left: {listed:?}");
    let report = collect_at(&node.meta, node.replicator.store(), later, grace, &stats).await;
    assert_eq!(report.manifests, 2, "{report:?}");
    assert_eq!(report.swept, 4, "two configs and two layers: {report:?}");
    for (i, m) in images.iter().enumerate() {
        let kept = i == 2;
        let s = r.status_of(Method::GET, &format!("/v2/{REPO}/manifests/{}", digests[i])).await;
        assert_eq!(s == StatusCode::OK, kept, "image {i}: {s}");
        let s = r.status_of(Method::GET, &format!("/v2/{REPO}/blobs/{}", config_of(m))).await;
        assert_eq!(s == StatusCode::OK, kept, "config of image {i}: {s}");
    }
    assert_eq!(r.status_of(Method::GET, &format!("/v2/{REPO}/manifests/rel")).await, StatusCode::OK);
    assert_eq!(r.status_of(Method::GET, "/v2/team/seed/manifests/x").await, StatusCode::OK, "the pushed-by-helper image is tagged");

    c.flush_audit().await;
    let (_, v) = json_of(&r, Method::GET, "/api/v1/organization/team/logs?kind=change_tag_expiration", None).await;
    assert!(v["logs"].as_array().unwrap().iter().any(|l| l["metadata"]["tag_expiration_s"] == "0"), "{v}");
}

/// A JSON call through curl to a node of a process cluster: (status, body).
fn curl_json(http: &str, password: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-u", &format!("admin:{password}")]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", &b.to_string()]);
    }
    let out = cmd.arg(format!("http://{http}{path}")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Polls `cond` every 100 ms until it gives a value; panics naming `what` after `timeout`.
fn wait_for<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The labels of a real image build: buildah builds from scratch with
/// `quay.expires-after=5s` and pushes through node 1 of three `berth`
/// processes whose lifecycle worker never runs during the test. Every
/// node lists the tag with its expiration; once it passes, a pull
/// through node 3 fails (no worker closed the row: expiry is checked at
/// read time), the row shows ended in the tag's history, and a restore
/// brings the tag back, pullable through node 2. A malformed label is
/// ignored (the push works, the usage log says so); `quay.immutable=true`
/// locks the tag.
#[test]
fn labels_of_a_real_build_expire_and_lock_the_pushed_tag() {
    use common::daemons::run;
    use common::procs::ProcCluster;
    use std::process::Command;

    let c = ProcCluster::start_configured(3, &[], |t| {
        let tags = t.entry("tags").or_insert(toml::Value::Table(Default::default()));
        tags.as_table_mut().unwrap().insert("expiry_interval_secs".into(), toml::Value::Integer(3600));
    });
    let pw = c.password.clone();
    let creds = format!("admin:{pw}");
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let work = c.root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let root = work.join("buildah");
    let buildah = || {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root").arg(root.join("storage")).arg("--runroot").arg(root.join("run")).arg("--storage-driver=vfs");
        cmd
    };
    // One image per label set, each from scratch with a file of its own.
    let build = |name: &str, labels: &[&str]| {
        let ctr = run(buildah().args(["from", "scratch"])).trim().to_string();
        for l in labels {
            run(buildah().args(["config", "--label", l, &ctr]));
        }
        let file = work.join(format!("{name}.txt"));
        std::fs::write(&file, format!("built for {name}")).unwrap();
        run(buildah().arg("copy").arg(&ctr).arg(&file).arg("/file.txt"));
        run(buildah().args(["commit", &ctr, &format!("local/{name}:1")]));
    };
    let push = |name: &str, target: &str| -> std::process::Output {
        let digestfile = work.join(format!("{name}.digest"));
        buildah()
            .args(["push", "--tls-verify=false", "--creds", &creds, "--digestfile"])
            .arg(&digestfile)
            .args([&format!("local/{name}:1"), &format!("docker://{target}")])
            .output()
            .expect("buildah push")
    };
    let digest_of = |name: &str| std::fs::read_to_string(work.join(format!("{name}.digest"))).unwrap().trim().to_string();
    build("ci", &["quay.expires-after=5s"]);
    build("bad", &["quay.expires-after=soon"]);
    build("locked", &["quay.immutable=true"]);
    let rows_on = |http: &str, tag: &str| -> Vec<Value> {
        let (s, v) = curl_json(http, &pw, "GET", &format!("/api/v1/repository/team/labeled/tag/?specificTag={tag}"), None);
        if s != 200 {
            return vec![];
        }
        v["tags"].as_array().cloned().unwrap_or_default()
    };

    let out = push("ci", &format!("{n1}/team/labeled:ci"));
    assert!(out.status.success(), "buildah push: {}", String::from_utf8_lossy(&out.stderr));
    let digest = digest_of("ci");
    // Listed with its expiration, five seconds after its start, on every node.
    let mut expiration = 0;
    for http in [&n1, &n2, &n3] {
        let row = wait_for(T, &format!("{http} lists team/labeled:ci"), || rows_on(http, "ci").into_iter().next());
        assert_eq!(row["manifest_digest"], json!(digest), "{row}");
        let (start, exp) = (row["start_ts"].as_u64().unwrap(), row["expiration"].as_u64().expect("an expiration"));
        assert!(exp == start + 5 || exp == start + 6, "five seconds after the push (rounding to seconds): {row}");
        assert!(expiration == 0 || expiration == exp, "every node agrees");
        expiration = exp;
    }
    // Once the moment passed, node 3 serves the tag no more.
    wait_for(T, "the expiration passes", || (now_ms() >= (expiration + 1) * 1000).then_some(()));
    let inspect = |http: &str, tag: &str| {
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{http}/team/labeled:{tag}"))
            .output()
            .expect("skopeo")
    };
    let out = inspect(&n3, "ci");
    assert!(!out.status.success(), "the expired tag is still served through node 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest unknown"), "{}", String::from_utf8_lossy(&out.stderr));
    // The row shows ended at its expiration; no live row is left.
    let rows = rows_on(&n3, "ci");
    assert_eq!((rows.len(), rows[0]["end_ts"].as_u64()), (1, Some(expiration)), "{rows:?}");
    let (_, v) = curl_json(&n3, &pw, "GET", "/api/v1/repository/team/labeled/tag/?onlyActiveTags=true&specificTag=ci", None);
    assert_eq!(v["tags"], json!([]), "{v}");
    // Restored through node 1, pulled through node 2.
    let (s, v) = curl_json(&n1, &pw, "POST", "/api/v1/repository/team/labeled/tag/ci/restore", Some(json!({"manifest_digest": digest})));
    assert_eq!(s, 200, "{v}");
    let pulled = work.join("pulled");
    wait_for(T, "node 2 serves the restored tag", || {
        let out = Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{n2}/team/labeled:ci"))
            .arg(format!("oci:{}:ci", pulled.display()))
            .output()
            .expect("skopeo");
        out.status.success().then_some(())
    });
    let raw = inspect(&n2, "ci");
    assert_eq!(berth_common::Digest::sha256_of(&raw.stdout).to_string(), digest, "node 2 serves the image buildah pushed");
    let rows = wait_for(T, "node 3 lists the restored row", || Some(rows_on(&n3, "ci")).filter(|r| r.len() == 2));
    assert_eq!((rows[0]["reversion"].clone(), rows[0]["expiration"].clone()), (json!(true), Value::Null), "the restored row does not expire");

    // A malformed label: the push works, the tag has no expiration, and the usage log says why.
    let out = push("bad", &format!("{n1}/team/labeled:bad"));
    assert!(out.status.success(), "buildah push: {}", String::from_utf8_lossy(&out.stderr));
    let row = wait_for(T, "node 3 lists :bad", || rows_on(&n3, "bad").into_iter().next());
    assert_eq!(row["expiration"], Value::Null, "{row}");
    wait_for(T, "the usage log notes the ignored label", || {
        let (_, v) = curl_json(&n2, &pw, "GET", "/api/v1/repository/team/labeled/logs?kind=tag_expiration_label_ignored", None);
        v["logs"].as_array().and_then(|l| l.iter().find(|l| l["metadata"]["value"] == "soon").cloned())
    });

    // quay.immutable=true: the tag is locked, and a push over it is refused.
    let out = push("locked", &format!("{n2}/team/labeled:locked"));
    assert!(out.status.success(), "buildah push: {}", String::from_utf8_lossy(&out.stderr));
    let row = wait_for(T, "node 1 lists :locked", || rows_on(&n1, "locked").into_iter().next());
    assert_eq!(row["immutable"], json!(true), "{row}");
    let out = push("bad", &format!("{n3}/team/labeled:locked"));
    assert!(!out.status.success(), "a push over an immutable tag went through");
    assert_eq!(rows_on(&n1, "locked")[0]["manifest_digest"], json!(digest_of("locked")), "the tag is unchanged");
}

/// Immutability policies through the API of three nodes: a bad pattern
/// is a 400 that stores nothing; a namespace policy locks the live tags
/// it covers on every node and every tag pushed under it afterwards; a
/// repository's policy can be read, changed and deleted. A robot with
/// write may lock a tag but not unlock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutability_policies_and_robot_locks() {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let (r1, r2, r3) = (reg(c.node(1)), reg(c.node(2)), reg(c.node(3)));
    push(c.node(1), REPO, "v1", now_ms()).await;
    push(c.node(1), REPO, "latest", now_ms()).await;
    c.sync_all().await;
    let org_policies = "/api/v1/organization/team/immutabilitypolicy/";
    let repo_policies = format!("/api/v1/repository/{REPO}/immutabilitypolicy/");

    for body in [json!({"tagPattern": "v[0-9"}), json!({"tagPattern": ""}), json!({"tagPattern": "v1", "extra": 1}), json!({})] {
        let (s, v) = json_of(&r2, Method::POST, org_policies, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (s, v) = json_of(&r2, Method::POST, "/api/v1/organization/nobody/immutabilitypolicy/", Some(json!({"tagPattern": "v.*"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = json_of(&r2, Method::GET, org_policies, None).await;
    assert_eq!((s, v["policies"].clone()), (StatusCode::OK, json!([])), "refusals stored nothing");

    // The namespace's policy locks the existing v1 (not latest), everywhere.
    let (s, v) = json_of(&r2, Method::POST, org_policies, Some(json!({"tagPattern": "v[0-9]+"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let uuid = v["uuid"].as_str().unwrap().to_string();
    c.sync_all().await;
    assert_eq!((rows(&r3, "v1").await[0]["immutable"].clone(), rows(&r3, "latest").await[0]["immutable"].clone()), (json!(true), json!(false)));
    // A tag pushed under it is locked by the push itself; an overwrite is refused.
    let image = r3.image(REPO, "v2").await;
    assert_eq!(r3.put_manifest(REPO, "v2", OCI_MANIFEST, &image).await.0, StatusCode::CREATED);
    c.sync_all().await;
    assert_eq!(rows(&r1, "v2").await[0]["immutable"], json!(true));
    let other = r1.image(REPO, "other").await;
    assert_error(&r1.put_manifest(REPO, "v2", OCI_MANIFEST, &other).await, StatusCode::CONFLICT, "TAG_IMMUTABLE");
    assert_eq!(r1.put_manifest(REPO, "v2-rc", OCI_MANIFEST, &other).await.0, StatusCode::CREATED, "a full match only");
    let (s, v) = json_of(&r1, Method::GET, &format!("{org_policies}{uuid}"), None).await;
    assert_eq!((s, v["tagPattern"].clone(), v["tagPatternMatches"].clone()), (StatusCode::OK, json!("v[0-9]+"), json!(true)), "{v}");

    // A repository's policy: created, changed (a bad change is refused), deleted.
    let (s, v) = json_of(&r1, Method::POST, &repo_policies, Some(json!({"tagPattern": "rel-.*", "tagPatternMatches": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let repo_uuid = v["uuid"].as_str().unwrap().to_string();
    let (s, _) = json_of(&r2, Method::PUT, &format!("{repo_policies}{repo_uuid}"), Some(json!({"tagPattern": "(rel"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = json_of(&r2, Method::PUT, &format!("{repo_policies}{repo_uuid}"), Some(json!({"tagPattern": "prod", "tagPatternMatches": true}))).await;
    assert_eq!((s, v["tagPattern"].clone()), (StatusCode::OK, json!("prod")), "{v}");
    let (s, _) = json_of(&r2, Method::PUT, &format!("{repo_policies}no-such-policy"), Some(json!({"tagPattern": "x"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(r2.put_manifest(REPO, "prod", OCI_MANIFEST, &other).await.0, StatusCode::CREATED);
    c.sync_all().await;
    assert_eq!(rows(&r3, "prod").await[0]["immutable"], json!(true));
    let (s, _) = json_of(&r3, Method::DELETE, &format!("{repo_policies}{repo_uuid}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = json_of(&r3, Method::GET, &format!("{repo_policies}{repo_uuid}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(rows(&r3, "prod").await[0]["immutable"], json!(true), "deleting a policy unlocks nothing");

    // A robot with write: locks, cannot unlock, and has no other admin call.
    let (s, v) = json_of(&r1, Method::PUT, "/api/v1/organization/team/robots/ci", None).await;
    assert!(s.is_success(), "{v}");
    let secret = v["token"].as_str().unwrap().to_string();
    let (s, v) = json_of(&r1, Method::PUT, &format!("/api/v1/repository/{REPO}/permissions/user/team+ci"), Some(json!({"role": "write"}))).await;
    assert!(s.is_success(), "{v}");
    c.sync_all().await;
    let robot = Reg::at(r2.base.clone(), "team+ci", &secret);
    let (s, v) = json_of(&robot, Method::PUT, &tag_path("latest"), Some(json!({"immutable": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = json_of(&robot, Method::PUT, &tag_path("latest"), Some(json!({"immutable": false}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(rows(&robot, "latest").await[0]["immutable"], json!(true), "still locked");
    let (s, _) = json_of(&robot, Method::GET, &format!("/api/v1/repository/{REPO}"), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a robot has the tag calls only");
    let (s, _) = json_of(&robot, Method::GET, org_policies, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    c.flush_audit().await;
    let (_, v) = json_of(&r3, Method::GET, "/api/v1/organization/team/logs", None).await;
    let kinds: Vec<&str> = v["logs"].as_array().unwrap().iter().filter_map(|l| l["kind"].as_str()).collect();
    for kind in ["create_immutability_policy", "update_immutability_policy", "delete_immutability_policy", "change_tag_immutability"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
}

/// Auto-prune: number_of_tags=3 over ten tags keeps exactly the newest
/// three on every node, and the immutable one besides; the pruned tags
/// are in the time machine, and the usage log names the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autoprune_keeps_the_newest_three_and_the_immutable_one() {
    use berth_node::registry::lifecycle::autoprune_once;

    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let leader = c.wait_leader(T).await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let r = reg(c.node(follower));
    let base = now_ms() - 100_000;
    for i in 1..=10u64 {
        push(c.node(1), REPO, &format!("t{i:02}"), base + i * 1000).await;
    }
    c.sync_all().await;
    let (s, v) = json_of(&r, Method::PUT, &tag_path("t02"), Some(json!({"immutable": true}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let policies = "/api/v1/organization/team/autoprunepolicy/";
    for body in [
        json!({"method": "number_of_tags", "value": 0}),
        json!({"method": "number_of_tags", "value": "three"}),
        json!({"method": "newest", "value": 3}),
        json!({"method": "creation_date", "value": "soon"}),
        json!({"method": "number_of_tags", "value": 3, "tagPattern": "("}),
        json!({"method": "number_of_tags", "value": 3, "tagPatternMatches": false}),
    ] {
        let (s, v) = json_of(&r, Method::POST, policies, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (_, v) = json_of(&r, Method::GET, policies, None).await;
    assert_eq!(v["policies"], json!([]), "refusals stored nothing");
    // Nothing happens without a policy.
    assert_eq!(autoprune_once(&c.node(leader).meta, &c.node(leader).audit, now_ms()).await, 0);
    let (s, v) = json_of(&r, Method::POST, policies, Some(json!({"method": "number_of_tags", "value": 3}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let uuid = v["uuid"].as_str().unwrap().to_string();
    let (_, v) = json_of(&r, Method::GET, &format!("{policies}{uuid}"), None).await;
    assert_eq!((v["method"].clone(), v["value"].clone()), (json!("number_of_tags"), json!(3)), "{v}");
    c.sync_all().await;

    assert_eq!(autoprune_once(&c.node(follower).meta, &c.node(follower).audit, now_ms()).await, 0, "only the leader prunes");
    assert_eq!(autoprune_once(&c.node(leader).meta, &c.node(leader).audit, now_ms()).await, 6);
    c.sync_all().await;
    for n in c.nodes.values() {
        let r = reg(n);
        assert_eq!(v2_tags(&r).await, vec!["t02".to_string(), "t08".into(), "t09".into(), "t10".into()], "node {}", n.config.node_id);
    }
    let pruned = rows(&r, "t01").await;
    assert_eq!((pruned.len(), pruned[0]["end_ts"].is_u64()), (1, true), "into the time machine: {pruned:?}");
    assert_eq!(autoprune_once(&c.node(leader).meta, &c.node(leader).audit, now_ms()).await, 0, "a second pass changes nothing");

    c.flush_audit().await;
    let (_, v) = json_of(&r, Method::GET, &format!("/api/v1/repository/{REPO}/logs?kind=autoprune_tag_delete"), None).await;
    let logs = v["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 6, "{v}");
    assert!(logs.iter().all(|l| l["performer"]["name"] == "autoprune worker"), "{v}");
}

/// `berth tag` and `berth policy` against a running node: tables and
/// JSON, and refusals that exit non-zero with the node's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tag_and_policy_commands() {
    use common::procs::berth;

    let c = Cluster::new(1, fast_config()).await;
    c.wait_voters(&[1], T).await;
    let r = reg(c.node(1));
    let d = c.dirs[&1].to_str().unwrap().to_string();
    let mut digests = vec![];
    for tag in ["v1", "v2"] {
        let image = r.image(REPO, tag).await;
        assert_eq!(r.put_manifest(REPO, tag, OCI_MANIFEST, &image).await.0, StatusCode::CREATED);
        digests.push(berth_common::Digest::sha256_of(&image).to_string());
    }
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &d]);
        let out = berth(&all);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let ok = |args: &[&str]| {
        let (success, out, err) = run(args);
        assert!(success, "berth {args:?}: {err}");
        out
    };
    let listed = |args: &[&str]| -> Value { serde_json::from_str(&ok(args)).unwrap() };

    let table = ok(&["tag", "list", REPO]);
    assert!(table.starts_with("TAG") && table.contains("v1") && table.contains("v2"), "{table}");
    assert_eq!(listed(&["tag", "list", REPO, "--json"]).as_array().unwrap().len(), 2);

    ok(&["tag", "expire", REPO, "v1", "--in", "2h"]);
    let v1 = |v: Value| v.as_array().unwrap().iter().find(|t| t["name"] == "v1").cloned().unwrap();
    let exp = v1(listed(&["tag", "list", REPO, "--json"]))["expiration"].as_u64().unwrap();
    assert!(exp.abs_diff(now_ms() / 1000 + 7200) < 60, "two hours from now: {exp}");
    ok(&["tag", "expire", REPO, "v1", "--never"]);
    assert_eq!(v1(listed(&["tag", "list", REPO, "--json"]))["expiration"], Value::Null);
    let (success, _, err) = run(&["tag", "expire", REPO, "v1", "--in", "soon"]);
    assert!(!success && err.contains("not an integer and a unit"), "{err}");

    ok(&["tag", "lock", REPO, "v1"]);
    let (success, _, err) = run(&["tag", "expire", REPO, "v1", "--in", "2h"]);
    assert!(!success && err.contains("immutable"), "{err}");
    assert!(ok(&["tag", "list", REPO]).lines().any(|l| l.starts_with("v1") && l.trim_end().ends_with("yes")), "shown locked");
    ok(&["tag", "unlock", REPO, "v1"]);

    // A move, the history, a restore.
    let (s, _) = json_of(&r, Method::PUT, &tag_path("v1"), Some(json!({"manifest_digest": digests[1]}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let history = listed(&["tag", "history", REPO, "v1", "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert!(ok(&["tag", "history", REPO, "v1"]).contains(&digests[0]));
    ok(&["tag", "restore", REPO, "v1", &digests[0]]);
    assert_eq!(tag_on(c.node(1), REPO, "v1").unwrap().to_string(), digests[0]);
    let (success, _, err) = run(&["tag", "restore", REPO, "v1", "sha256:0000000000000000000000000000000000000000000000000000000000000000"]);
    assert!(!success && err.contains("never pointed"), "{err}");

    // Policies.
    let out = ok(&["policy", "immutable", "--org", "team", "rel-.*"]);
    let uuid = out.split_whitespace().nth(2).unwrap().to_string();
    ok(&["policy", "prune", "--repo", REPO, "--keep", "5"]);
    let (success, _, err) = run(&["policy", "immutable", "--org", "team", "("]);
    assert!(!success && err.contains("regular expression"), "{err}");
    let (success, _, err) = run(&["policy", "prune", "--org", "team", "--older-than", "later"]);
    assert!(!success && err.contains("creation_date"), "{err}");
    let all = listed(&["policy", "list", "--org", "team", "--json"]);
    assert_eq!((all["immutability"].as_array().unwrap().len(), all["autoprune"].as_array().unwrap().len()), (1, 0), "{all}");
    let table = ok(&["policy", "list", "--repo", REPO]);
    assert!(table.contains("keep newest 5"), "{table}");
    ok(&["policy", "delete", "--org", "team", &uuid]);
    assert_eq!(listed(&["policy", "list", "--org", "team", "--json"])["immutability"], json!([]));

    // Quotas.
    assert_eq!(ok(&["quota", "show", "team"]).trim(), "no quota");
    let (success, _, err) = run(&["quota", "set", "team", "lots"]);
    assert!(!success && err.contains("is not a size"), "{err}");
    ok(&["quota", "set", "team", "10 MiB"]);
    ok(&["quota", "set", "team", "20 MiB"]);
    ok(&["quota", "limit", "team", "Reject", "90"]);
    let q = listed(&["quota", "show", "team", "--json"]);
    assert_eq!((q[0]["limit_bytes"].clone(), q[0]["limits"][0]["limit_percent"].clone()), (json!(20 << 20), json!(90)), "{q}");
    assert!(q[0]["usage"]["bytes"].as_u64().unwrap() > 0, "the two images count: {q}");
    let table = ok(&["quota", "show", "team"]);
    assert!(table.contains("20 MiB") && table.contains(REPO) && table.contains("Reject at 90%"), "{table}");
    ok(&["quota", "remove", "team"]);
    assert_eq!(listed(&["quota", "show", "team", "--json"]), json!([]));
}

/// A namespace quota of 10 MiB with a Reject limit, on three nodes: an
/// 8 MiB push succeeds, a second image sharing its layer counts the
/// layer once, and a 4 MiB push is refused with 403 DENIED through any
/// node, leaving no blob record and no tag. Deleted tags keep their
/// bytes until their images leave the time machine; then the push works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reject_quota_refuses_pushes_over_it_and_counts_shared_layers_once() {
    use berth_node::registry::gc::{collect_at, GcStats};
    use berth_raft::command::BlobRecord;
    use berth_raft::state::keys;
    use berth_raft::StateRead;

    const MIB: usize = 1 << 20;
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let (r1, r2, r3) = (reg(c.node(1)), reg(c.node(2)), reg(c.node(3)));
    push(c.node(1), "team/seed", "x", now_ms()).await; // the organization
    let quota = "/api/v1/organization/team/quota";

    // Refusals change nothing.
    for body in [json!({}), json!({"limit": "lots"}), json!({"limit_bytes": 0}), json!({"limit_bytes": 5, "limit": "5 MiB"}), json!({"limit_bytes": 5, "x": 1})]
    {
        let (s, v) = json_of(&r1, Method::POST, quota, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (s, v) = json_of(&r1, Method::GET, quota, None).await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!([])), "{v}");
    let (s, v) = json_of(&r2, Method::POST, quota, Some(json!({"limit": "10 MiB"}))).await;
    assert_eq!((s, v["limit_bytes"].clone()), (StatusCode::CREATED, json!(10 * MIB)), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, _) = json_of(&r2, Method::POST, quota, Some(json!({"limit": "20 MiB"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "one quota per namespace");
    for body in [
        json!({"type": "Maybe", "threshold_percent": 50}),
        json!({"type": "Reject", "threshold_percent": 0}),
        json!({"type": "Reject", "threshold_percent": 101}),
    ] {
        let (s, v) = json_of(&r2, Method::POST, &format!("{quota}/{id}/limit"), Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (s, v) = json_of(&r2, Method::POST, &format!("{quota}/{id}/limit"), Some(json!({"type": "Reject", "threshold_percent": 100}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = json_of(&r2, Method::POST, &format!("{quota}/{id}/limit"), Some(json!({"type": "Warning", "threshold_percent": 50}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["limits"].as_array().unwrap().iter().map(|l| l["limit_percent"].clone()).collect::<Vec<_>>(), vec![json!(100), json!(50)]);
    c.sync_all().await;

    // 8 MiB through node 1.
    let big = vec![7u8; 8 * MIB];
    let layer = r1.blob(REPO, &big).await;
    let config_a = r1.blob(REPO, b"{\"image\":\"a\"}").await;
    let a = manifest_json(&config_a, 13, &[(layer.clone(), big.len() as u64)], None, None);
    assert_eq!(r1.put_manifest(REPO, "a", OCI_MANIFEST, &a).await.0, StatusCode::CREATED);
    // A second image through node 2 with the same layer counts it once.
    let (s, _, _) = r2.send(r2.req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/?mount={layer}&from={REPO}"))).await;
    assert_eq!(s, StatusCode::CREATED, "the layer counts already: mounting it again adds nothing");
    let config_b = r2.blob(REPO, b"{\"image\":\"b\"}").await;
    let b = manifest_json(&config_b, 13, &[(layer.clone(), big.len() as u64)], None, None);
    assert_eq!(r2.put_manifest(REPO, "b", OCI_MANIFEST, &b).await.0, StatusCode::CREATED);
    c.sync_all().await;
    let usage = |r: Reg| async move { json_of(&r, Method::GET, quota, None).await.1[0]["usage"].clone() };
    let expected = (8 * MIB + 13 + 13) as u64;
    for r in [&r1, &r2, &r3] {
        let u = usage(r.clone()).await;
        assert_eq!((u["bytes"].clone(), u["repositories"][REPO].clone()), (json!(expected), json!(expected)), "{u}");
    }

    // A 4 MiB layer through any node: refused, and nothing recorded.
    let small = vec![9u8; 4 * MIB];
    let small_digest = berth_common::Digest::sha256_of(&small);
    for r in [&r1, &r2, &r3] {
        let resp = r.send(r.req(Method::POST, &format!("/v2/{REPO}/blobs/uploads/?digest={small_digest}")).body(small.clone())).await;
        assert_error(&resp, StatusCode::FORBIDDEN, "DENIED");
        assert!(String::from_utf8_lossy(&resp.2).contains("Quota has been exceeded on namespace team"), "{}", String::from_utf8_lossy(&resp.2));
    }
    c.sync_all().await;
    for n in c.nodes.values() {
        assert!(n.meta.state().get::<BlobRecord>(&keys::blob(&small_digest)).unwrap().is_none(), "node {} has no record of the refused blob", n.config.node_id);
    }
    let config_c = r3.blob(REPO, b"{\"image\":\"c\"}").await;
    let cm = manifest_json(&config_c, 13, &[(small_digest.clone(), small.len() as u64)], None, None);
    assert_eq!(r3.put_manifest(REPO, "c", OCI_MANIFEST, &cm).await.0, StatusCode::BAD_REQUEST, "its layer was never stored");
    assert_eq!(tag_on(c.node(3), REPO, "c"), None);

    // Deleted, the images still count until the time machine lets them go.
    for t in ["a", "b"] {
        assert_eq!(r1.status_of(Method::DELETE, &format!("/v2/{REPO}/manifests/{t}")).await, StatusCode::ACCEPTED);
    }
    assert_eq!(usage(r1.clone()).await["bytes"], json!(expected), "still in the time machine");
    let (s, _) = json_of(&r1, Method::PUT, "/api/v1/organization/team", Some(json!({"tag_expiration_s": 0}))).await;
    assert_eq!(s, StatusCode::OK);
    let leader = c.wait_leader(T).await;
    let grace = Duration::from_secs(3600);
    let later = std::time::SystemTime::now() + grace + Duration::from_secs(1);
    let report = collect_at(&c.node(leader).meta, c.node(leader).replicator.store(), later, grace, &GcStats::default()).await;
    assert_eq!(report.manifests, 2, "{report:?}");
    c.sync_all().await;
    assert_eq!(usage(r3.clone()).await["bytes"], json!(0));
    // (The collector's clock ran ahead: c's config, unreferenced, went too.)
    assert_eq!(r3.blob(REPO, b"{\"image\":\"c\"}").await, config_c);
    assert_eq!(r3.blob(REPO, &small).await, small_digest);
    assert_eq!(r3.put_manifest(REPO, "c", OCI_MANIFEST, &cm).await.0, StatusCode::CREATED, "room again");

    // Only superusers set quotas; the usage log has the changes.
    c.flush_audit().await;
    let (_, v) = json_of(&r1, Method::GET, "/api/v1/organization/team/logs", None).await;
    let kinds: Vec<&str> = v["logs"].as_array().unwrap().iter().filter_map(|l| l["kind"].as_str()).collect();
    for kind in ["org_create_quota", "org_create_quota_limit", "quota_warning"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let (s, v) = json_of(&r1, Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "dev", "password": "dev-password-1"}))).await;
    assert!(s.is_success(), "{v}");
    let dev = Reg::at(r1.base.clone(), "dev", "dev-password-1");
    let (s, _) = json_of(&dev, Method::PUT, &format!("{quota}/{id}"), Some(json!({"limit": "1 TiB"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = json_of(&dev, Method::GET, quota, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "not a member");

    // The cluster's default Reject quota governs a namespace without its own.
    let default = "/api/v1/superuser/quota/default";
    let (s, _) = json_of(&dev, Method::PUT, default, Some(json!({"limit": "1 MiB"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "superusers only");
    let (s, _) = json_of(&r1, Method::PUT, default, Some(json!({"limit": "much"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = json_of(&r1, Method::GET, default, None).await;
    assert_eq!((s, v["limit_bytes"].clone()), (StatusCode::OK, Value::Null), "refusals set nothing");
    push(c.node(1), "other/seed", "x", now_ms()).await;
    let (s, v) = json_of(&r1, Method::PUT, default, Some(json!({"limit": "1 MiB"}))).await;
    assert_eq!((s, v["limit_bytes"].clone()), (StatusCode::OK, json!(MIB)), "{v}");
    c.sync_all().await;
    let two = vec![3u8; 2 * MIB];
    let two_digest = berth_common::Digest::sha256_of(&two);
    let resp = r2.send(r2.req(Method::POST, &format!("/v2/other/app/blobs/uploads/?digest={two_digest}")).body(two.clone())).await;
    assert_error(&resp, StatusCode::FORBIDDEN, "DENIED");
    let (_, v) = json_of(&r3, Method::GET, "/api/v1/organization/other/quota", None).await;
    assert_eq!(v[0]["id"], json!("default"), "{v}");
    let (_, v) = json_of(&r3, Method::GET, quota, None).await;
    assert_eq!(v[0]["id"], json!(id), "team keeps its own");
    let (s, _) = json_of(&r1, Method::DELETE, default, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    c.sync_all().await;
    assert_eq!(r2.blob("other/app", &two).await, two_digest, "no default, no limit");
}
