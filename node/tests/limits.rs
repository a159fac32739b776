//! Resources an outsider or a plain user could exhaust, each capped: upload
//! sessions per account and per node, descriptors held by idle sessions,
//! connections that never finish their headers or sit idle, connections
//! per node, and scopes per token request.
//!
//! Each test runs one node with small caps from its `[limits]` section so
//! it is quick. The tests share one lock: the descriptor count in
//! `/proc/self/fd` is per process, and another test's node starting
//! beside it would make the count meaningless.

mod common;

use std::time::{Duration, Instant};

use berth_common::Digest;
use berth_node::config::{Layout, LimitsConfig};
use berth_node::runtime::{init_cluster, start_node, RunningNode};
use common::{bind_pair, eventually, fast_config, init_logs};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Node {
    _dir: tempfile::TempDir,
    node: RunningNode,
    base: String,
    http: reqwest::Client,
}

/// One node whose `[limits]` (and upload timeout) `tweak` sets.
async fn node_with(tweak: impl FnOnce(&mut LimitsConfig, &mut u64)) -> Node {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (listeners, mut addrs) = bind_pair().await;
    addrs.region = "region-1".into();
    let data = dir.path().join("node-1");
    init_cluster(&data, &addrs, Some("admin-password".into()), fast_config()).await.unwrap();
    let layout = Layout::new(&data);
    let mut cfg = layout.load().unwrap();
    tweak(&mut cfg.limits, &mut cfg.upload_timeout_secs);
    std::fs::write(layout.config(), toml::to_string(&cfg).unwrap()).unwrap();
    let node = start_node(&data, Some(listeners), berth_raft::LinkFilter::default()).await.unwrap();
    let base = format!("http://{}", node.http_addr);
    let n = Node { _dir: dir, node, base, http: reqwest::Client::new() };
    n.wait_ready().await;
    n
}

impl Node {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/health/ready", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, user: &str, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self.http.request(method, format!("{}{path}", self.base)).basic_auth(user, Some(format!("{user}-password"))).body(body).send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let bytes = r.bytes().await.unwrap();
        (s, h, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn add_user(&self, name: &str) {
        let r = self
            .http
            .post(format!("{}/api/v1/superuser/users/", self.base))
            .basic_auth("admin", Some("admin-password"))
            .json(&json!({"username": name, "password": format!("{name}-password")}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating {name}: {}", r.status());
    }

    /// Opens an upload session as `user`; the status and the session's path.
    async fn open_upload(&self, user: &str, repo: &str) -> (StatusCode, Value, Option<String>) {
        let (s, h, v) = self.send(user, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), vec![]).await;
        (s, v, h.get("location").map(|l| l.to_str().unwrap().to_string()))
    }

    /// A chunked upload from start to finish: POST, two PATCHes, PUT.
    async fn chunked_upload(&self, user: &str, repo: &str, bytes: &[u8]) -> StatusCode {
        let (s, v, loc) = self.open_upload(user, repo).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let mut loc = loc.unwrap();
        let half = bytes.len() / 2;
        for (start, chunk) in [(0, &bytes[..half]), (half, &bytes[half..])] {
            let end = start + chunk.len() - 1;
            let r = self
                .http
                .patch(format!("{}{loc}", self.base))
                .basic_auth(user, Some(format!("{user}-password")))
                .header("content-range", format!("{start}-{end}"))
                .body(chunk.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            loc = r.headers()["location"].to_str().unwrap().to_string();
        }
        let digest = Digest::sha256_of(bytes);
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.send(user, Method::PUT, &format!("{loc}{sep}digest={digest}"), vec![]).await.0
    }
}

fn code(v: &Value) -> &str {
    v["errors"][0]["code"].as_str().unwrap_or("")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads until the server closes the connection; how long that took, or
/// `None` if it was still open after `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_sessions_are_capped_per_account_and_per_node() {
    let _serial = SERIAL.lock().await;
    let n = node_with(|l, ttl| {
        l.uploads_per_account = 3;
        l.uploads_per_node = 5;
        *ttl = 3;
    })
    .await;
    for u in ["bob", "carol"] {
        n.add_user(u).await;
        // Each account's first password check (argon2, slow in a debug
        // build) happens here, not while bob's sessions must stay open.
        assert_eq!(n.send(u, Method::GET, "/v2/", vec![]).await.0, StatusCode::OK);
    }

    let mut bobs = Vec::new();
    for _ in 0..3 {
        let (s, v, loc) = n.open_upload("bob", "bob/app").await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        bobs.push(loc.unwrap());
    }
    let (s, v, _) = n.open_upload("bob", "bob/app").await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"), "the 4th session of one account: {v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("upload"), "{v}");

    // Another account is not held back by bob's sessions.
    assert_eq!(n.chunked_upload("carol", "carol/app", b"an honest layer, in two chunks").await, StatusCode::CREATED);

    // Cancelling a session frees its slot.
    let (s, _, _) = n.send("bob", Method::DELETE, &bobs.pop().unwrap(), vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v, _) = n.open_upload("bob", "bob/app").await;
    assert_eq!(s, StatusCode::ACCEPTED, "a cancelled session's slot is free: {v}");

    // The node's cap: bob holds 3, carol 2 of 5.
    for _ in 0..2 {
        assert_eq!(n.open_upload("carol", "carol/app").await.0, StatusCode::ACCEPTED);
    }
    let (s, v, _) = n.open_upload("admin", "library/app").await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"), "the node's 6th session: {v}");

    // Expired sessions free theirs (the upload timeout is 3 s here).
    eventually(Duration::from_secs(20), "idle sessions expire", || async { n.node.uploads.in_progress() == 0 }).await;
    assert_eq!(n.chunked_upload("admin", "library/app", b"after the others expired").await, StatusCode::CREATED);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_upload_sessions_hold_no_open_file() {
    let _serial = SERIAL.lock().await;
    let n = node_with(|l, _| {
        l.uploads_per_account = 1000;
        l.uploads_per_node = 1000;
    })
    .await;
    // Warm up the client's connection and the node's lazily opened state.
    assert_eq!(n.chunked_upload("admin", "library/app", b"warm-up layer").await, StatusCode::CREATED);

    const SESSIONS: usize = 200;
    let before = open_fds();
    for i in 0..SESSIONS {
        let (s, v, loc) = n.open_upload("admin", "library/app").await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        // Some data too: a session that has bytes stays idle between PATCHes.
        if i % 2 == 0 {
            let (s, _, _) = n.send("admin", Method::PATCH, &loc.unwrap(), vec![7u8; 1000]).await;
            assert_eq!(s, StatusCode::ACCEPTED);
        }
    }
    let after = open_fds();
    assert_eq!(n.node.uploads.in_progress(), SESSIONS);
    assert!(after < before + SESSIONS / 10, "{SESSIONS} idle sessions hold descriptors: {before} open before, {after} after");

    // Hashing while streaming still holds across PATCHes that reopen the file.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(n.chunked_upload("admin", "library/app", &big).await, StatusCode::CREATED);
    let r =
        n.http.get(format!("{}/v2/library/app/blobs/{}", n.base, Digest::sha256_of(&big))).basic_auth("admin", Some("admin-password")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == big, "the stored blob is what was sent");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_connections_are_closed() {
    let _serial = SERIAL.lock().await;
    let n = node_with(|l, _| {
        l.http_header_timeout_secs = 1;
        l.http_idle_timeout_secs = 2;
    })
    .await;
    let addr = n.node.http_addr;
    let slack = Duration::from_millis(2500);

    // Every case is checked before the verdict, so a failure names them all.
    let mut still_open = Vec::new();

    // Half a header, then nothing.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Half: ").await.unwrap();
    let half_closed = closed_within(&mut half, Duration::from_secs(1) + slack);

    // Headers dripped a line at a time: the timeout counts from the first byte.
    let mut drip = TcpStream::connect(addr).await.unwrap();
    drip.write_all(b"GET /v2/ HTTP/1.1\r\nHost: berth\r\n").await.unwrap();
    let dripping = async {
        for i in 0.. {
            if drip.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let drip_cut = tokio::time::timeout(Duration::from_secs(1) + slack, dripping);

    // Nothing at all: not even the first byte of a request.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let silent_closed = closed_within(&mut silent, Duration::from_secs(1) + slack);

    let (half_closed, drip_cut, silent_closed) = tokio::join!(half_closed, drip_cut, silent_closed);
    if half_closed.is_none() {
        still_open.push("half a header");
    }
    if drip_cut.is_err() {
        still_open.push("dripped headers");
    }
    if silent_closed.is_none() {
        still_open.push("nothing sent");
    }

    // Idle after a complete request and response (keep-alive).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: berth\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let got = idle.read(&mut buf).await.unwrap();
    assert!(buf[..got].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..got]));
    if closed_within(&mut idle, Duration::from_secs(2) + slack).await.is_none() {
        still_open.push("idle after a request");
    }
    assert!(still_open.is_empty(), "connections still open well after their timeout: {still_open:?}");

    // An honest request on a fresh connection is served.
    assert_eq!(n.http.get(format!("{}/health", n.base)).send().await.unwrap().status(), StatusCode::OK);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_are_refused_gracefully() {
    let _serial = SERIAL.lock().await;
    let n = node_with(|l, _| {
        l.http_max_connections = 4;
    })
    .await;
    let addr = n.node.http_addr;
    // The client that waited for readiness holds a pooled connection.
    drop(n.http);
    // Four keep-alive connections, each with a request served: all
    // accepted, once the node has seen the pooled one close.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while held.len() < 4 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: berth\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let got = c.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..got]);
        if head.starts_with("HTTP/1.1 200") {
            held.push(c);
        } else {
            assert!(head.starts_with("HTTP/1.1 503") && Instant::now() < deadline, "{head}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A fifth gets a clear answer, not a hang.
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap();
    let r = fresh().get(format!("{}/health", n.base)).send().await.expect("an answer, not a dropped connection");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "UNAVAILABLE", "{v}");

    // Once the others close, an honest request gets through.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = fresh().get(format!("{}/health", n.base)).send().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "still refused after the other connections closed: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_requests_with_too_many_scopes_are_refused() {
    let _serial = SERIAL.lock().await;
    let n = node_with(|_, _| {}).await;
    let token = |scopes: usize| {
        let q: Vec<String> = (0..scopes).map(|i| format!("scope=repository:library/app{i}:pull,push")).collect();
        n.http.get(format!("{}/v2/auth?{}", n.base, q.join("&"))).basic_auth("admin", Some("admin-password")).send()
    };
    let r = token(32).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "32 scopes are a fair request");

    let start = Instant::now();
    let r = token(100).await.unwrap();
    let took = start.elapsed();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!((status, code(&v)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("scopes"), "{v}");
    assert!(took < Duration::from_millis(500), "refused in {took:?}");

    // Scopes packed into one parameter count one by one.
    let packed: Vec<String> = (0..33).map(|i| format!("repository:library/app{i}:pull")).collect();
    let r = n.http.get(format!("{}/v2/auth?scope={}", n.base, packed.join("%20"))).basic_auth("admin", Some("admin-password")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A long query is refused before it is parsed.
    let r = n.http.get(format!("{}/v2/auth?junk={}", n.base, "a".repeat(20_000))).basic_auth("admin", Some("admin-password")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    n.node.shutdown().await;
}
