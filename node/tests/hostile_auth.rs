//! Hostile input against authentication and the usage log: a registry
//! token used as an admin credential, a removed node's operator token,
//! one address locking others out, a reused name inheriting a deleted
//! namespace's history, narrow application tokens reading logs, registry
//! tokens outliving a credential change, and a forged `Host` in the
//! challenge.

mod common;

use std::time::Duration;

use berth_raft::command::ClusterRecord;
use berth_raft::state::keys;
use berth_raft::StateRead;
use common::{eventually, fast_config, Cluster};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: (&str, &str) = ("admin", "admin-password");
const T: Duration = Duration::from_secs(20);

type Reply = (StatusCode, Value);

/// How a request authenticates.
enum Auth<'a> {
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

struct Env {
    c: Cluster,
    http: reqwest::Client,
    service: String,
}

impl Env {
    async fn new(nodes: usize) -> Env {
        let c = Cluster::new(nodes, fast_config()).await;
        let ids: Vec<u64> = (1..=nodes as u64).collect();
        c.wait_voters(&ids, T).await;
        let rec: ClusterRecord = c.node(1).meta.state().get(keys::CLUSTER).unwrap().unwrap();
        Env { c, http: reqwest::Client::new(), service: rec.cluster_id }
    }

    fn base(&self, node: u64) -> String {
        format!("http://{}", self.c.node(node).http_addr)
    }

    /// A client whose connections come from `ip` (any 127.0.0.0/8 address
    /// reaches the node's loopback listener).
    fn client_from(ip: &str) -> reqwest::Client {
        reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
    }

    async fn call(&self, http: &reqwest::Client, node: u64, auth: &Auth<'_>, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut rb = http.request(method, format!("{}{path}", self.base(node)));
        rb = match auth {
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        };
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status();
        (s, serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn api(&self, auth: &Auth<'_>, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(&self.http, 1, auth, method, path, body).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.api(&Auth::Basic(ADMIN.0, ADMIN.1), method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    async fn user(&self, name: &str) {
        self.admin(Method::POST, "/api/v1/superuser/users/", Some(json!({"username": name, "password": format!("{name}-password")}))).await;
    }

    /// `/v2/auth` with basic credentials, from `http`'s address.
    async fn token_with(&self, http: &reqwest::Client, user: &str, password: &str, scope: Option<&str>) -> Result<String, Reply> {
        let mut url = format!("{}/v2/auth?service={}", self.base(1), self.service);
        if let Some(s) = scope {
            url.push_str(&format!("&scope={s}"));
        }
        let r = http.get(url).basic_auth(user, Some(password)).send().await.unwrap();
        let s = r.status();
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
        if s != StatusCode::OK {
            return Err((s, v));
        }
        Ok(v["token"].as_str().unwrap().to_string())
    }

    async fn token(&self, user: &str, password: &str, scope: Option<&str>) -> Result<String, Reply> {
        self.token_with(&self.http, user, password, scope).await
    }

    /// `GET /v2/` with a registry token: 200 while the token is a credential.
    async fn v2_base(&self, token: &str) -> StatusCode {
        self.call(&self.http, 1, &Auth::Bearer(token), Method::GET, "/v2/", None).await.0
    }

    fn operator_token(&self, node: u64) -> String {
        berth_node::config::Layout::new(&self.c.dirs[&node]).read_operator_token().unwrap()
    }
}

fn code(r: &Reply) -> &str {
    r.1["errors"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_tokens_are_not_admin_credentials() {
    let e = Env::new(1).await;
    let jwt = e.token(ADMIN.0, ADMIN.1, Some("repository:lib/app:pull")).await.unwrap();
    let (s, t) = e.api(&Auth::Basic(ADMIN.0, ADMIN.1), Method::POST, "/api/v1/user/apptoken", Some(json!({"title": "ops", "scopes": ["super:user"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let app = t["token"]["token_code"].as_str().unwrap().to_string();
    let operator = e.operator_token(1);

    let calls: [(Method, &str, Option<Value>); 4] = [
        (Method::GET, "/api/v1/cluster/status", None),
        (Method::POST, "/api/v1/cluster/tokens", Some(json!({"ttl_secs": 60, "max_uses": 1}))),
        (Method::GET, "/api/v1/cluster/tokens", None),
        (Method::GET, "/api/v1/placement/lib", None),
    ];
    for (m, path, body) in &calls {
        let r = e.api(&Auth::Bearer(&jwt), m.clone(), path, body.clone()).await;
        assert_eq!((r.0, code(&r)), (StatusCode::FORBIDDEN, "DENIED"), "a superuser's registry token on {m} {path}: {}", r.1);
        // What the admin API takes still works there.
        for (who, auth) in [("basic", Auth::Basic(ADMIN.0, ADMIN.1)), ("super:user app token", Auth::Bearer(&app)), ("operator", Auth::Bearer(&operator))] {
            let r = e.api(&auth, m.clone(), path, body.clone()).await;
            assert!(r.0.is_success(), "{who} on {m} {path}: {} {}", r.0, r.1);
        }
    }
    let r = e.api(&Auth::Bearer(&jwt), Method::PUT, "/api/v1/placement/lib", Some(json!({"policy": "everywhere"}))).await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);
    // The token still does its job on /v2.
    assert_eq!(e.v2_base(&jwt).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_nodes_operator_token_is_refused() {
    let e = Env::new(3).await;
    let operator = e.operator_token(3);
    let operator = Auth::Bearer(&operator);
    let status = || e.call(&e.http, 3, &operator, Method::GET, "/api/v1/cluster/status", None);
    assert_eq!(status().await.0, StatusCode::OK, "a member's operator token");
    let (s, v) = e.api(&Auth::Basic(ADMIN.0, ADMIN.1), Method::DELETE, "/api/v1/cluster/nodes/3", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = status().await;
        if r.0 == StatusCode::UNAUTHORIZED {
            assert_eq!(code(&r), "UNAUTHORIZED");
            break;
        }
        let v = e.c.node(3).meta.view();
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 still takes its operator token after its removal ({}; node 3 in its own membership: {})",
            r.0,
            v.members.contains(&3)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The rest of the cluster goes on with its own credentials.
    assert_eq!(e.api(&Auth::Bearer(&e.operator_token(1)), Method::GET, "/api/v1/cluster/status", None).await.0, StatusCode::OK);
}

/// The peak resident memory of this process, in MiB.
fn peak_rss_mib() -> u64 {
    common::procs::status_kib("self", "VmHWM").unwrap() / 1024
}

/// A burst of password guesses at once: each argon2 check holds 19 MiB, so
/// 48 side by side would take some 900 MiB. They take turns (as many as
/// there are cores), a guess the throttle refuses by its turn costs
/// nothing, and the right password still works from elsewhere after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_password_guesses_takes_turns_not_memory() {
    let e = Env::new(1).await;
    e.user("ann").await;
    let guesser = Env::client_from("127.0.0.4");
    // Start the peak over from the present (`/proc/self/clear_refs`).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss_mib();
    let guesses = (0..48).map(|i| {
        let (e, guesser) = (&e, &guesser);
        async move { e.token_with(guesser, "ann", &format!("guess-{i}"), None).await.unwrap_err().0 }
    });
    let statuses = futures::future::join_all(guesses).await;
    let grown = peak_rss_mib().saturating_sub(before);
    assert!(statuses.iter().all(|s| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)), "{statuses:?}");
    assert!(grown < 250, "48 guesses at once raised the peak memory by {grown} MiB");
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "the throttle refused none of 48 guesses: {statuses:?}");
    assert!(e.token_with(&Env::client_from("127.0.0.5"), "ann", "ann-password", None).await.is_ok(), "the right password from another address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_from_one_source_do_not_lock_others_out() {
    let e = Env::new(1).await;
    e.user("tom").await;
    e.admin(Method::POST, "/api/v1/organization/", Some(json!({"name": "shop"}))).await;
    let robot = e.admin(Method::PUT, "/api/v1/organization/shop/robots/ci", None).await;
    let secret = robot["token"].as_str().unwrap().to_string();
    let (a, b) = (Env::client_from("127.0.0.2"), Env::client_from("127.0.0.3"));
    for (account, right) in [("tom", "tom-password"), ("shop+ci", secret.as_str())] {
        let mut statuses = vec![];
        for _ in 0..7 {
            statuses.push(e.token_with(&a, account, "guess", None).await.unwrap_err().0);
        }
        assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS, "{account} from A: {statuses:?}");
        let r = e.token_with(&a, account, right, None).await.unwrap_err();
        assert_eq!((r.0, code(&r)), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"), "A is slowed down, even with the right secret");
        let r = e.token_with(&b, account, right, None).await;
        assert!(r.is_ok(), "{account} with the right secret from B after A's guesses: {:?}", r.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_name_does_not_inherit_the_usage_log() {
    let e = Env::new(1).await;
    e.user("carol").await;
    let carol = Auth::Basic("carol", "carol-password");
    let (s, v) = e.api(&carol, Method::POST, "/api/v1/repository", Some(json!({"repository": "diary", "namespace": "carol", "visibility": "private"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = e.api(&carol, Method::GET, "/api/v1/organization/carol/logs", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.to_string().contains("create_repo"), "carol sees her own history: {v}");
    e.admin(Method::DELETE, "/api/v1/repository/carol/diary", None).await;
    e.admin(Method::DELETE, "/api/v1/superuser/users/carol", None).await;

    // bob takes the name for an organization; carol (a new user) comes back too.
    e.user("bob").await;
    let bob = Auth::Basic("bob", "bob-password");
    let (s, v) = e.api(&bob, Method::POST, "/api/v1/organization/", Some(json!({"name": "carol"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = e.api(&bob, Method::GET, "/api/v1/organization/carol/logs", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let kinds: Vec<&str> = v["logs"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["org_create"], "the organization carol's log starts at its creation: {v}");
    let (s, v) = e.api(&bob, Method::GET, "/api/v1/repository/carol/diary/logs", None).await;
    assert_ne!(s, StatusCode::OK, "no repository, no log: {v}");

    e.admin(Method::DELETE, "/api/v1/organization/carol", None).await;
    e.user("carol").await;
    let (s, v) = e.api(&carol, Method::GET, "/api/v1/user/logs", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("diary"), "a new carol does not see the old carol's actions: {v}");

    // Superusers keep the whole history.
    let all = e.admin(Method::GET, "/api/v1/superuser/logs", None).await.to_string();
    assert!(all.contains("carol/diary") && all.contains("user_delete"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_logs_needs_the_matching_token_scope() {
    let e = Env::new(1).await;
    e.user("wade").await;
    let wade = Auth::Basic("wade", "wade-password");
    let (s, v) = e.api(&wade, Method::POST, "/api/v1/organization/", Some(json!({"name": "works"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut tokens = std::collections::BTreeMap::new();
    for scope in ["repo:read", "user:read", "org:admin"] {
        let (s, t) = e.api(&wade, Method::POST, "/api/v1/user/apptoken", Some(json!({"title": scope, "scopes": [scope]}))).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        tokens.insert(scope, t["token"]["token_code"].as_str().unwrap().to_string());
    }
    // (scope, path, allowed)
    let cases = [
        ("repo:read", "/api/v1/user/logs", false),
        ("repo:read", "/api/v1/organization/wade/logs", false),
        ("repo:read", "/api/v1/organization/works/logs", false),
        ("user:read", "/api/v1/user/logs", true),
        ("user:read", "/api/v1/organization/works/logs", false),
        ("org:admin", "/api/v1/organization/works/logs", true),
        ("org:admin", "/api/v1/organization/wade/logs", true),
        ("org:admin", "/api/v1/user/logs", false),
    ];
    for (scope, path, allowed) in cases {
        let r = e.api(&Auth::Bearer(&tokens[scope]), Method::GET, path, None).await;
        if allowed {
            assert_eq!(r.0, StatusCode::OK, "{scope} on {path}: {}", r.1);
        } else {
            assert_eq!((r.0, code(&r)), (StatusCode::FORBIDDEN, "DENIED"), "{scope} on {path}: {}", r.1);
        }
    }
    // The user's own login reads both.
    for path in ["/api/v1/user/logs", "/api/v1/organization/works/logs", "/api/v1/organization/wade/logs"] {
        assert_eq!(e.api(&wade, Method::GET, path, None).await.0, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credential_changes_revoke_registry_tokens() {
    let e = Env::new(1).await;
    e.admin(Method::POST, "/api/v1/organization/", Some(json!({"name": "shop"}))).await;
    let robot = e.admin(Method::PUT, "/api/v1/organization/shop/robots/ci", None).await;
    let old = e.token("shop+ci", robot["token"].as_str().unwrap(), None).await.unwrap();
    assert_eq!(e.v2_base(&old).await, StatusCode::OK);
    let again = e.admin(Method::POST, "/api/v1/organization/shop/robots/ci/regenerate", None).await;
    assert_eq!(e.v2_base(&old).await, StatusCode::UNAUTHORIZED, "a robot's token from before its secret was regenerated");
    let new = e.token("shop+ci", again["token"].as_str().unwrap(), None).await.unwrap();
    assert_eq!(e.v2_base(&new).await, StatusCode::OK, "a token of the new secret");

    e.user("tom").await;
    let old = e.token("tom", "tom-password", None).await.unwrap();
    assert_eq!(e.v2_base(&old).await, StatusCode::OK);
    let (s, v) = e.api(&Auth::Basic("tom", "tom-password"), Method::PUT, "/api/v1/user/", Some(json!({"password": "tom-password-2"}))).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(e.v2_base(&old).await, StatusCode::UNAUTHORIZED, "a user's token from before a password change");
    let new = e.token("tom", "tom-password-2", None).await.unwrap();
    assert_eq!(e.v2_base(&new).await, StatusCode::OK);
    // A superuser setting the password revokes too; changing only the role does not.
    e.admin(Method::PUT, "/api/v1/superuser/users/tom", Some(json!({"superuser": true}))).await;
    assert_eq!(e.v2_base(&new).await, StatusCode::OK, "a role change is not a credential change");
    e.admin(Method::PUT, "/api/v1/superuser/users/tom", Some(json!({"password": "tom-password-3"}))).await;
    assert_eq!(e.v2_base(&new).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_host_does_not_reach_the_challenge() {
    let e = Env::new(1).await;
    let addr = e.c.node(1).http_addr;
    let get = |host: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let challenge = out.lines().find_map(|l| l.strip_prefix("www-authenticate: ").or_else(|| l.strip_prefix("WWW-Authenticate: "))).map(str::to_string);
        challenge.unwrap_or_else(|| panic!("no challenge in {out}"))
    };
    let want = format!("Bearer realm=\"http://{addr}/v2/auth\",service=\"{}\"", e.service);
    let c = get("evil.example\",service=\"x").await;
    assert_eq!(c, want, "the realm is the node's address, the service the cluster's");
    assert_eq!(get("other.example:5000").await, want, "the advertised address wins over the Host header");
}

/// A robot deleted while a node is cut off: that node cannot learn of the
/// deletion, so it stops trusting tokens issued before it lost touch, two
/// election timeouts after. A token issued after the cut, by a node with
/// fresher state, still works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_node_stops_trusting_tokens_issued_before_the_cut() {
    let e = Env::new(3).await;
    e.admin(Method::POST, "/api/v1/organization/", Some(json!({"name": "far"}))).await;
    let robot = e.admin(Method::PUT, "/api/v1/organization/far/robots/ci", None).await;
    let old = e.token("far+ci", robot["token"].as_str().unwrap(), None).await.unwrap();
    let on_node_3 = |token: String| {
        let e = &e;
        async move { e.call(&e.http, 3, &Auth::Bearer(&token), Method::GET, "/v2/", None).await }
    };
    assert_eq!(on_node_3(old.clone()).await.0, StatusCode::OK);
    // Token times are in whole seconds, and node 3 judges a token by the
    // second it last heard its leader in: cut it once that second is later
    // than the token's (at most about a second, on the clock itself).
    let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let issued_by = secs(std::time::SystemTime::now());
    eventually(T, "node 3 hears its leader in a second after the token's", || async {
        secs(std::time::SystemTime::now() - e.c.node(3).meta.last_in_touch().elapsed()) > issued_by
    })
    .await;
    e.c.filter.isolate(3, [1, 2]);
    e.admin(Method::DELETE, "/api/v1/organization/far/robots/ci", None).await;
    let grace = Duration::from_millis(2 * fast_config().election_max_ms);
    let started = std::time::Instant::now();
    let refused = loop {
        let r = on_node_3(old.clone()).await;
        if r.0 == StatusCode::UNAUTHORIZED {
            break r;
        }
        assert!(started.elapsed() < grace + Duration::from_secs(3), "node 3 still takes the deleted robot's token: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused.1.to_string().contains("cut off from the cluster"), "{}", refused.1);
    let fresh = e.token(ADMIN.0, ADMIN.1, None).await.unwrap();
    assert_eq!(on_node_3(fresh).await.0, StatusCode::OK, "a token issued after the cut");
    e.c.filter.heal();
    // Back in touch, node 3 knows the robot is gone.
    let started = std::time::Instant::now();
    loop {
        let r = on_node_3(old.clone()).await;
        if r.0 == StatusCode::UNAUTHORIZED && r.1.to_string().contains("no longer exists") {
            break;
        }
        assert!(started.elapsed() < T, "after healing: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node in touch with its cluster keeps trusting tokens however long it
/// idles, a single-node cluster (its own majority) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_node_in_touch_keeps_trusting_its_tokens() {
    for nodes in [1, 3] {
        let e = Env::new(nodes).await;
        let token = e.token(ADMIN.0, ADMIN.1, None).await.unwrap();
        // A fixed wait, on purpose: the rule under test is about time going
        // by (idling past the two election timeouts after which a cut-off
        // node would stop trusting the token), and there is no event to wait
        // for, since the point is that nothing happens.
        tokio::time::sleep(Duration::from_millis(2 * fast_config().election_max_ms) + Duration::from_secs(1)).await;
        for node in 1..=nodes as u64 {
            let r = e.call(&e.http, node, &Auth::Bearer(&token), Method::GET, "/v2/", None).await;
            assert_eq!(r.0, StatusCode::OK, "{nodes} nodes, node {node}: {r:?}");
        }
    }
}
