//! Notifications across three real `berth` processes: a skopeo push through
//! node 1 reaches a webhook, a Slack-style and a CloudEvents receiver
//! started here (signed, with the push's tags, digest, node and region),
//! and an SMTP server (Python's aiosmtpd); 20 pushes while the delivering
//! leader is SIGKILLed and the receiver fails for its first 10 s all
//! arrive; a receiver that always fails gets the notification skipped
//! after 3 events until a reset; `test` sends the sample; an expiring tag
//! is announced once; bad notifications are refused and nothing is stored.
//!
//! The nodes allow 127.0.0.0/8 as targets (`[notifications]
//! allowed_networks`), as an operator running receivers on the same host
//! would; retries are cut to 40 s in total so a given-up event shows up
//! within the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use berth_common::Digest;
use common::daemons::run;
use common::eventually;
use common::procs::*;
use common::receiver::*;
use reqwest::Method;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// `python3 -m aiosmtpd`, printing every message it takes; killed when dropped.
struct Smtp {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        let port = free_port("127.0.0.1");
        let out = dir.join("smtp.out");
        let child = Command::new("python3")
            .args(["-u", "-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start (pip install aiosmtpd)");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp { child, out, port }
    }

    fn messages(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin API of one node, as the cluster's superuser.
struct Api {
    http: reqwest::Client,
    password: String,
}

impl Api {
    async fn call(&self, node: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("http://{node}{path}")).basic_auth("admin", Some(&self.password));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ok(&self, node: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(node, method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    /// Creates a notification; answers its uuid and signing secret.
    async fn notify(&self, node: &str, path: &str, body: Value) -> (String, String) {
        let (s, v) = self.call(node, Method::POST, path, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (v["uuid"].as_str().unwrap().to_string(), v["signing_secret"].as_str().unwrap().to_string())
    }

    /// Pushes a small image of its own (`n` makes it unique) as `repo:tag`
    /// through `node` over the registry API; answers its digest, or why
    /// the push was not acknowledged.
    async fn push(&self, node: &str, repo: &str, tag: &str, n: u64) -> Result<String, String> {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{n}}}"#).into_bytes();
        let layer = format!("layer {n}").into_bytes();
        for blob in [&config, &layer] {
            let d = Digest::sha256_of(blob);
            let r = self.http.post(format!("http://{node}/v2/{repo}/blobs/uploads/?digest={d}")).basic_auth("admin", Some(&self.password)).body(blob.clone());
            let resp = r.send().await.map_err(|e| e.to_string())?;
            if resp.status() != 201 {
                return Err(format!("blob upload: {}", resp.status()));
            }
        }
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
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
            .map_err(|e| e.to_string())?;
        if resp.status() != 201 {
            return Err(format!("manifest: {}", resp.status()));
        }
        Ok(Digest::sha256_of(&bytes).to_string())
    }
}

/// An OCI layout with one image tagged `one`.
fn oci_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let (cd, cs) = put(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let (ld, ls) = put(b"a layer for the notification test");
    let m = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    });
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "one"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

fn hmac(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

/// The current leader, as any live node's status says.
fn leader(c: &ProcCluster, alive: &[usize]) -> u64 {
    for &i in alive {
        if let Some(l) = status(&c.dirs[i]).and_then(|s| s["leader"].as_u64()) {
            return l;
        }
    }
    panic!("no node knows a leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_delivered_signed_and_never_lost() {
    berth_node::install_crypto_provider();
    let started = Instant::now();
    let (inbox, rx) = start_receiver().await;
    let tmp = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(tmp.path());
    let smtp_port = smtp.port as i64;
    let mut c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(3, &[], |t| {
            let n = toml::toml! {
                allowed_networks = ["127.0.0.0/8"]
                retry_total_secs = 40
                retry_max_interval_secs = 2
                poll_interval_ms = 200
                expiry_interval_secs = 1
            };
            let mut n = n;
            n.insert(
                "smtp".into(),
                toml::Value::Table(toml::toml! {
                    host = "127.0.0.1"
                    tls = "none"
                    from = "berth <berth@registry.test>"
                }),
            );
            n.get_mut("smtp").unwrap().as_table_mut().unwrap().insert("port".into(), toml::Value::Integer(smtp_port));
            t.insert("notifications".into(), toml::Value::Table(n));
        })
    });
    let (n1, n2, n3) = (c.http[0].clone(), c.http[1].clone(), c.http[2].clone());
    let api = Api { http: reqwest::Client::new(), password: c.password.clone() };
    api.ok(&n2, Method::POST, "/api/v1/organization/", Some(json!({"name": "team"}))).await;
    for repo in ["app", "broken", "many"] {
        api.ok(&n2, Method::POST, "/api/v1/repository", Some(json!({"namespace": "team", "repository": repo, "visibility": "private"}))).await;
    }
    let url = |path: &str| format!("http://{rx}{path}");

    // Refusals: 400 with a message, and nothing stored.
    let refused = [
        json!({"event": "repo_pull", "method": "webhook", "config": {"url": url("/hook")}}),
        json!({"event": "repo_push", "method": "carrier_pigeon", "config": {"url": url("/hook")}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": "ftp://127.0.0.1/x"}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": "http://[::1]:9/x"}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": "http://169.254.169.254/latest"}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": "http://10.1.2.3/x"}}),
        json!({"event": "repo_push", "method": "webhook", "config": {}}),
        json!({"event": "repo_push", "method": "email", "config": {}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": url("/hook"), "template": "{not json"}}),
        json!({"event": "repo_image_expiry", "method": "webhook", "config": {"url": url("/hook")}}),
        json!({"event": "repo_push", "method": "webhook", "config": {"url": url("/hook"), "headers": {"Content-Type": "text/plain"}}}),
    ];
    for body in refused {
        let (s, v) = api.call(&n3, Method::POST, "/api/v1/repository/team/app/notification/", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let listed = api.ok(&n3, Method::GET, "/api/v1/repository/team/app/notification/", None).await;
    assert_eq!(listed["notifications"], json!([]), "nothing stored");

    // The notifications of team/app: a webhook with a template, Slack,
    // e-mail, and CloudEvents for the whole organization.
    let repo_path = "/api/v1/repository/team/app/notification/";
    let (hook, hook_secret) = api
        .notify(
            &n2,
            repo_path,
            json!({"event": "repo_push", "method": "webhook", "title": "ci", "config": {"url": url("/hook"), "headers": {"Authorization": "Bearer sesame"}}}),
        )
        .await;
    let template = r#"{"repo": "${repository}", "tags": "${updated_tags}", "text": "${repository} pushed by ${pushed_by}"}"#;
    let (tpl, _) = api.notify(&n2, repo_path, json!({"event": "repo_push", "method": "webhook", "config": {"url": url("/tpl"), "template": template}})).await;
    // Slack through the CLI, on node 3's operator token.
    let d3 = c.dirs[2].to_str().unwrap().to_string();
    let slack_url = url("/slack");
    let added: Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        ok(&["notify", "add", "team/app", "--event", "repo_push", "--method", "slack", "--url", &slack_url, "--json", "--data-dir", &d3])
    }))
    .unwrap();
    assert!(added["uuid"].is_string() && added["signing_secret"].is_string(), "{added}");
    let (_mail, _) = api.notify(&n2, repo_path, json!({"event": "repo_push", "method": "email", "config": {"email": "ops@registry.test"}})).await;
    let (ce, _) =
        api.notify(&n2, "/api/v1/organization/team/notifications", json!({"event": "repo_push", "method": "cloudevents", "config": {"url": url("/ce")}})).await;
    let shown = api.ok(&n3, Method::GET, &format!("{repo_path}{hook}"), None).await;
    assert_eq!(shown["config"]["headers"]["Authorization"], "(hidden)", "header values are not shown");
    assert!(shown.get("signing_secret").is_none(), "the secret is shown at creation only");
    assert_eq!(shown["number_of_failures"], 0);

    // skopeo pushes through node 1.
    let layout = tmp.path().join("layout");
    oci_layout(&layout);
    let creds = format!("admin:{}", c.password);
    let digest_file = tmp.path().join("pushed.digest");
    tokio::task::block_in_place(|| {
        run(Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds, "--digestfile"])
            .arg(&digest_file)
            .arg(format!("oci:{}:one", layout.display()))
            .arg(format!("docker://{n1}/team/app:v1")))
    });
    let digest = std::fs::read_to_string(&digest_file).unwrap().trim().to_string();
    let pushed_at = Instant::now();

    // Every receiver gets it once it is marked delivered.
    for path in ["/hook", "/tpl", "/slack", "/ce"] {
        eventually(T, &format!("{path} gets the push"), || async { !inbox.at(path).is_empty() }).await;
    }
    eventually(T, "the mail arrives", || async { smtp.messages().contains("END MESSAGE") }).await;
    for uuid in [&hook, &tpl] {
        eventually(T, "delivery recorded", || async { api.ok(&n3, Method::GET, &format!("{repo_path}{uuid}"), None).await["pending"] == 0 }).await;
    }
    eventually(T, "delivery recorded", || async {
        api.ok(&n3, Method::GET, &format!("/api/v1/organization/team/notifications/{ce}"), None).await["pending"] == 0
    })
    .await;
    let got = inbox.at("/hook");
    assert_eq!(got.len(), 1, "exactly one repo_push: {got:?}");
    println!("push acknowledged to webhook received: {:?}", got[0].at.saturating_duration_since(pushed_at));
    let p = &got[0].json;
    assert_eq!(p["event"], "repo_push");
    assert_eq!(p["repository"], "team/app");
    assert_eq!((p["namespace"].as_str(), p["name"].as_str()), (Some("team"), Some("app")));
    assert_eq!(p["updated_tags"], json!(["v1"]));
    assert_eq!(p["digest"], digest);
    assert_eq!(p["pushed_by"], "admin");
    assert_eq!((p["node"].as_u64(), p["region"].as_str()), (Some(1), Some(REGIONS[0])), "where the push landed");
    assert_eq!(p["docker_url"], format!("{n1}/team/app"));
    assert_eq!(got[0].content_type, "application/json");
    assert_eq!(got[0].signature, hmac(&hook_secret, &got[0].body), "the HMAC verifies");
    assert_eq!(got[0].event_id, p["id"].as_str().unwrap());
    assert_ne!(got[0].signature, hmac("another secret", &got[0].body));
    let t = &inbox.at("/tpl")[0].json;
    assert_eq!(*t, json!({"repo": "team/app", "tags": ["v1"], "text": "team/app pushed by admin"}), "the template is filled");
    let s = &inbox.at("/slack")[0].json;
    assert!(s["text"].as_str().unwrap().contains("team/app") && s["text"].as_str().unwrap().contains("v1"), "{s}");
    let e = &inbox.at("/ce")[0];
    assert_eq!(e.content_type, "application/cloudevents+json");
    assert_eq!((e.json["specversion"].as_str(), e.json["type"].as_str()), (Some("1.0"), Some("io.berth.repo.push")));
    assert_eq!(e.json["source"], format!("//{n1}/team/app"));
    assert_eq!(e.json["data"]["updated_tags"], json!(["v1"]));
    assert_eq!(e.json["id"].as_str(), Some(e.event_id.as_str()));
    let mail = smtp.messages().replace("\r\n", "\n").replace("\n ", " ");
    assert!(mail.contains("ops@registry.test") && mail.contains("team/app: v1 pushed by admin"), "{mail}");
    assert!(mail.contains("text/html") && mail.contains("text/plain"), "text and HTML: {mail}");

    // `test` sends the sample payload, under an id of its own.
    api.ok(&n3, Method::POST, &format!("{repo_path}{hook}/test"), None).await;
    eventually(T, "the sample arrives", || async { inbox.at("/hook").len() == 2 }).await;
    let sample = &inbox.at("/hook")[1];
    assert_eq!((sample.json["test"].as_bool(), sample.json["event"].as_str()), (Some(true), Some("repo_push")));
    assert!(sample.json["updated_tags"].is_array() && sample.json["repository"] == "team/app", "{}", sample.json);
    assert_ne!(sample.event_id, got[0].event_id);

    // An expiring tag is announced once.
    let (expiry, _) = api
        .notify(&n2, repo_path, json!({"event": "repo_image_expiry", "method": "webhook", "config": {"url": url("/expiry")}, "eventConfig": {"days": 1}}))
        .await;
    let in_two_hours = berth_node::util::now_ms() / 1000 + 7200;
    api.ok(&n2, Method::PUT, "/api/v1/repository/team/app/tag/v1", Some(json!({"expiration": in_two_hours}))).await;
    eventually(T, "the expiry is announced", || async { inbox.at("/expiry").len() == 1 }).await;
    let x = &inbox.at("/expiry")[0].json;
    assert_eq!((x["event"].as_str(), x["tags"].clone()), (Some("repo_image_expiry"), json!(["v1"])), "{x}");
    // Another tag expiring: once its event has come, passes have seen v1
    // again, and announced it no second time.
    api.push(&n1, "team/app", "v2", 1).await.unwrap();
    api.ok(&n2, Method::PUT, "/api/v1/repository/team/app/tag/v2", Some(json!({"expiration": in_two_hours}))).await;
    eventually(T, "the second expiry", || async { inbox.at("/expiry").len() >= 2 }).await;
    eventually(T, "expiry deliveries recorded", || async { api.ok(&n3, Method::GET, &format!("{repo_path}{expiry}"), None).await["pending"] == 0 }).await;
    let tags: Vec<Value> = inbox.at("/expiry").iter().map(|g| g.json["tags"][0].clone()).collect();
    assert_eq!(tags, [json!("v1"), json!("v2")], "once per tag");
    api.ok(&n2, Method::DELETE, &format!("{repo_path}{expiry}"), None).await;

    // A receiver that always fails: three events given up on, then skipped.
    inbox.failing.store(true, Ordering::SeqCst);
    let broken_path = "/api/v1/repository/team/broken/notification/";
    let (broken, _) = api.notify(&n2, broken_path, json!({"event": "repo_push", "method": "webhook", "config": {"url": url("/fail")}})).await;
    for i in 0..3 {
        api.push(&n2, "team/broken", &format!("b{i}"), 100 + i).await.unwrap();
    }

    // Meanwhile, no loss: 20 pushes through a follower, the leader (the
    // deliverer) SIGKILLed after the 10th, the receiver failing until just
    // after that.
    let many_path = "/api/v1/repository/team/many/notification/";
    let (many, many_secret) = api.notify(&n2, many_path, json!({"event": "repo_push", "method": "webhook", "config": {"url": url("/flaky")}})).await;
    // Failing until the deliverer is dead, however long the pushes take.
    *inbox.flaky_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let old_leader = leader(&c, &[0, 1, 2]) as usize;
    let via = (0..3).find(|i| i + 1 != old_leader).unwrap();
    let via_http = c.http[via].clone();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..20u64 {
        if i == 10 {
            // The receiver is still failing: the first ten events wait on
            // the leader that is about to die.
            let before = inbox.at("/flaky").len();
            assert!(before < 10, "some events must still wait when the deliverer dies ({before} arrived)");
            c.procs[old_leader - 1].kill9();
            *inbox.flaky_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));
            println!("no-loss: leader {old_leader} killed with {} of 10 events undelivered", 10 - before);
        }
        let tag = format!("m{i}");
        let deadline = Instant::now() + T;
        loop {
            match api.push(&via_http, "team/many", &tag, 1000 + i).await {
                Ok(d) => {
                    acked.insert(tag.clone(), d);
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "push {tag} never acknowledged: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let last_push = Instant::now();
    let alive: Vec<usize> = (0..3).filter(|i| i + 1 != old_leader).collect();
    let new_leader = leader(&c, &alive);
    assert_ne!(new_leader as usize, old_leader);
    let api_node = c.http[alive[0]].clone();
    let ids = |inbox: &Inbox| inbox.at("/flaky").iter().map(|g| g.event_id.clone()).collect::<BTreeSet<_>>();
    eventually(Duration::from_secs(60), "every one of the 20 events arrives", || async { ids(&inbox).len() >= 20 }).await;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for g in inbox.at("/flaky") {
        assert_eq!(g.signature, hmac(&many_secret, &g.body));
        let tag = g.json["updated_tags"][0].as_str().unwrap().to_string();
        if let Some(prev) = seen.insert(g.event_id.clone(), tag.clone()) {
            assert_eq!(prev, tag, "a repeated id is the same event");
        }
        assert_eq!(acked.get(&tag), g.json["digest"].as_str().map(str::to_string).as_ref(), "the right payload for {tag}");
    }
    let tags: BTreeSet<String> = seen.values().cloned().collect();
    assert_eq!(tags, acked.keys().cloned().collect::<BTreeSet<_>>(), "none lost");
    assert_eq!(ids(&inbox).len(), 20, "one id per event");
    let deliveries = inbox.at("/flaky").len();
    let all_in = inbox.at("/flaky").iter().map(|g| g.at).max().unwrap();
    println!("no-loss: the last push acknowledged to all 20 events received: {:?}", all_in.saturating_duration_since(last_push));
    eventually(T, "deliveries recorded", || async { api.ok(&api_node, Method::GET, &format!("{many_path}{many}"), None).await["pending"] == 0 }).await;
    println!("no-loss: 20 events, {deliveries} deliveries, old leader {old_leader}, new leader {new_leader}");

    // The failing notification: skipped after three events in a row.
    let view = eventually(Duration::from_secs(90), "three events given up on", || async {
        let v = api.ok(&api_node, Method::GET, &format!("{broken_path}{broken}"), None).await;
        (v["number_of_failures"] == 3 && v["pending"] == 0).then_some(v)
    })
    .await;
    assert_eq!(view["number_of_failures"], 3);
    api.push(&api_node, "team/broken", "b3", 103).await.unwrap();
    let v = api.ok(&api_node, Method::GET, &format!("{broken_path}{broken}"), None).await;
    assert_eq!(v["pending"], 0, "skipped: the push queued nothing");
    let metrics = reqwest::get(format!("http://{api_node}/metrics")).await.unwrap().text().await.unwrap();
    let metric = |name: &str| {
        metrics.lines().find(|l| l.starts_with(&format!("{name}{{method=\"webhook\"}}"))).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok())
    };
    assert!(metric("berth_notifications_failed_total").is_some_and(|v| v >= 3.0), "{metrics}");
    assert!(metric("berth_notifications_delivered_total").is_some_and(|v| v >= 23.0), "{metrics}");
    assert_eq!(metric("berth_notifications_skipped"), Some(1.0));
    assert!(metric("berth_notifications_dropped_total").is_some_and(|v| v >= 1.0));
    // Reset (through the CLI): it delivers again.
    let cli_dir = c.dirs[alive[0]].to_str().unwrap().to_string();
    let listed = tokio::task::block_in_place(|| ok(&["notify", "list", "team/broken", "--data-dir", &cli_dir]));
    assert!(listed.contains(&broken) && listed.contains("skipped"), "{listed}");
    inbox.failing.store(false, Ordering::SeqCst);
    tokio::task::block_in_place(|| ok(&["notify", "reset", "team/broken", &broken, "--data-dir", &cli_dir]));
    api.push(&api_node, "team/broken", "b4", 104).await.unwrap();
    eventually(T, "delivered after the reset", || async { inbox.at("/fail").iter().any(|g| g.json["updated_tags"] == json!(["b4"])) }).await;
    assert!(!inbox.at("/fail").iter().any(|g| g.json["updated_tags"] == json!(["b3"])), "the event of the skipped time was not queued");

    // The usage log, and a delete.
    let (s, _) = api.call(&api_node, Method::DELETE, &format!("{broken_path}{broken}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.call(&api_node, Method::GET, &format!("{broken_path}{broken}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let logs = eventually(T, "the usage log shows it", || async {
        let v = api.ok(&api_node, Method::GET, "/api/v1/repository/team/broken/logs", None).await;
        let kinds: BTreeSet<String> = v["logs"].as_array().unwrap().iter().filter_map(|l| l["kind"].as_str().map(str::to_string)).collect();
        let want = ["add_repo_notification", "notification_failed", "notification_skipped", "reset_repo_notification", "delete_repo_notification"];
        want.iter().all(|k| kinds.contains(*k)).then_some(kinds)
    })
    .await;
    assert!(logs.contains("add_repo_notification"));
    println!("notifications test: {:?}", started.elapsed());
}
