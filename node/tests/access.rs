//! Identity and access on a 3-node cluster: the permission matrix through
//! the Docker token flow, bad tokens, key rotation, robots deleted on one
//! node and refused on all, login throttling, and the usage log.
//!
//! Every `/v2` call in the matrix takes a token from node 2's token
//! endpoint and presents it to node 1, so every case also shows that one
//! node's tokens are accepted by another.

mod common;

use std::time::Duration;

use base64::Engine;
use berth_node::identity::jwt::{Claims, Grant, SigningKey, ISSUER};
use berth_raft::command::ClusterRecord;
use berth_raft::state::keys;
use berth_raft::StateRead;
use common::http::{manifest_json, OCI_MANIFEST};
use common::{fast_config, Cluster};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("admin", "admin-password");

/// One caller, and how it authenticates.
#[derive(Clone, Debug)]
enum Who {
    Anonymous,
    /// Basic credentials: a user, a robot (`ns+short`) or `$app` + token.
    Basic(String, String),
}

impl Who {
    fn user(name: &str) -> Who {
        Who::Basic(name.into(), format!("{name}-password"))
    }
}

struct Env {
    cluster: Cluster,
    /// HTTP base URLs of nodes 1, 2, 3.
    base: Vec<String>,
    http: reqwest::Client,
    service: String,
}

type Reply = (StatusCode, Value, reqwest::header::HeaderMap);

impl Env {
    async fn new() -> Env {
        let c = Cluster::new(3, fast_config()).await;
        c.wait_voters(&[1, 2, 3], Duration::from_secs(20)).await;
        let base = (1..=3).map(|i| format!("http://{}", c.node(i).http_addr)).collect();
        let rec: ClusterRecord = c.node(1).meta.state().get(keys::CLUSTER).unwrap().unwrap();
        Env { cluster: c, base, http: reqwest::Client::new(), service: rec.cluster_id }
    }

    fn node(&self, i: usize) -> &str {
        &self.base[i - 1]
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let bytes = r.bytes().await.unwrap();
        (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null), h)
    }

    fn auth(&self, rb: reqwest::RequestBuilder, who: &Who) -> reqwest::RequestBuilder {
        match who {
            Who::Anonymous => rb,
            Who::Basic(u, p) => rb.basic_auth(u, Some(p)),
        }
    }

    /// An admin API call as `who` (basic credentials, or a bearer app token for `$app`).
    async fn api(&self, who: &Who, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut rb = self.http.request(method, format!("{}{path}", self.node(1)));
        rb = match who {
            Who::Basic(u, t) if u == "$app" => rb.bearer_auth(t),
            w => self.auth(rb, w),
        };
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        self.send(rb).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v, _) = self.api(&Who::Basic(ADMIN.0.into(), ADMIN.1.into()), method.clone(), path, body).await;
        assert!(s.is_success(), "{method} {path}: {s} {v}");
        v
    }

    /// A registry token from node `from`'s token endpoint.
    async fn token_from(&self, from: usize, who: &Who, scopes: &[String]) -> Result<String, Reply> {
        let mut url = format!("{}/v2/auth?service={}", self.node(from), self.service);
        for s in scopes {
            url.push_str(&format!("&scope={}", url_encode(s)));
        }
        let (s, v, h) = self.send(self.auth(self.http.get(url), who)).await;
        if s != StatusCode::OK {
            return Err((s, v, h));
        }
        assert_eq!(v["token"], v["access_token"]);
        assert!(v["expires_in"].as_u64().unwrap() > 0 && v["issued_at"].is_string(), "{v}");
        Ok(v["token"].as_str().unwrap().to_string())
    }

    /// A `/v2` request on node 1 the way docker makes it: try, read the
    /// challenge, get a token for its scope from node 2, try again.
    async fn v2(&self, who: &Who, method: Method, path: &str, body: Option<(Vec<u8>, &str)>) -> Reply {
        let build = |token: Option<&str>| {
            let mut rb = self.http.request(method.clone(), format!("{}{path}", self.node(1)));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some((b, ct)) = &body {
                rb = rb.header("content-type", *ct).body(b.clone());
            }
            rb
        };
        let first = self.send(build(None)).await;
        if first.0 != StatusCode::UNAUTHORIZED {
            return first;
        }
        let challenge = first.2["www-authenticate"].to_str().unwrap().to_string();
        let scope = challenge.split("scope=\"").nth(1).map(|s| s.trim_end_matches('"').to_string());
        assert!(challenge.starts_with(&format!("Bearer realm=\"{}/v2/auth\",service=\"{}\"", self.node(1), self.service)), "{challenge}");
        let token = match self.token_from(2, who, &scope.into_iter().collect::<Vec<_>>()).await {
            Ok(t) => t,
            Err(e) => return e,
        };
        self.send(build(Some(&token))).await
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn code(r: &Reply) -> &str {
    r.1["errors"][0]["code"].as_str().unwrap_or("")
}

/// What a case expects: allowed, or refused with this status and code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allowed,
    Unauthorized,
    Denied,
}
use Expect::*;

fn check(case: &str, r: &Reply, want: Expect, ok_status: StatusCode) {
    match want {
        Allowed => assert_eq!(r.0, ok_status, "{case}: {} {}", r.0, r.1),
        Unauthorized => assert_eq!((r.0, code(r)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{case}: {}", r.1),
        Denied => assert_eq!((r.0, code(r)), (StatusCode::FORBIDDEN, "DENIED"), "{case}: {}", r.1),
    }
}

/// Sets up acme: a public and a private repository holding an image, teams
/// with read and write, an owner, a creator team, a robot with read on the
/// private one, an outsider, and a `repo:read` token of the writer.
async fn acme(e: &Env) -> (Vec<(&'static str, Who)>, Vec<u8>) {
    for u in ["olga", "rita", "wade", "cara", "uma"] {
        e.admin(Method::POST, "/api/v1/superuser/users/", Some(json!({"username": u, "password": format!("{u}-password")}))).await;
    }
    let olga = Who::user("olga");
    let (s, v, _) = e.api(&olga, Method::POST, "/api/v1/organization/", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["teams"]["owners"]["role"], "admin");
    for (team, role, member) in [("readers", "member", "rita"), ("writers", "member", "wade"), ("builders", "creator", "cara")] {
        let (s, v, _) = e.api(&olga, Method::PUT, &format!("/api/v1/organization/acme/team/{team}"), Some(json!({"role": role}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v, _) = e.api(&olga, Method::PUT, &format!("/api/v1/organization/acme/team/{team}/members/{member}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, robot, _) = e.api(&olga, Method::PUT, "/api/v1/organization/acme/robots/reader", Some(json!({"description": "CI"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{robot}");
    assert_eq!(robot["name"], "acme+reader");
    let robot_token = robot["token"].as_str().unwrap().to_string();
    for (name, vis) in [("public", "public"), ("private", "private")] {
        let (s, v, _) = e
            .api(&olga, Method::POST, "/api/v1/repository", Some(json!({"repository": name, "namespace": "acme", "visibility": vis, "description": ""})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        for (team, role) in [("readers", "read"), ("writers", "write")] {
            let (s, v, _) = e.api(&olga, Method::PUT, &format!("/api/v1/repository/acme/{name}/permissions/team/{team}"), Some(json!({"role": role}))).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    }
    let (s, v, _) = e.api(&olga, Method::PUT, "/api/v1/repository/acme/private/permissions/user/acme+reader", Some(json!({"role": "read"}))).await;
    assert_eq!((s, v["is_robot"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, t, _) = e.api(&Who::user("wade"), Method::POST, "/api/v1/user/apptoken", Some(json!({"title": "ci", "scopes": ["repo:read"]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let app_token = t["token"]["token_code"].as_str().unwrap().to_string();

    // An image in both, and a tag per caller to delete.
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    let manifest = push_image(e, &admin, "acme/public", "v1", "seed").await;
    push_image(e, &admin, "acme/private", "v1", "seed").await;
    let who = vec![
        ("anonymous", Who::Anonymous),
        ("user", Who::user("uma")),
        ("org-reader", Who::user("rita")),
        ("org-writer", Who::user("wade")),
        ("org-admin", olga),
        ("team-creator", Who::user("cara")),
        ("robot-read-private", Who::Basic("acme+reader".into(), robot_token)),
        ("app-token-repo-read", Who::Basic("$app".into(), app_token)),
        ("superuser", admin.clone()),
    ];
    for (name, _) in &who {
        for repo in ["acme/public", "acme/private"] {
            let (s, v, _) = e.v2(&admin, Method::PUT, &format!("/v2/{repo}/manifests/del-{name}"), Some((manifest.clone(), OCI_MANIFEST))).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
    }
    (who, manifest)
}

/// Pushes a config and a layer and a manifest tagged `tag`; returns the manifest.
async fn push_image(e: &Env, who: &Who, repo: &str, tag: &str, seed: &str) -> Vec<u8> {
    let config = format!("{{\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer {seed}").into_bytes();
    let mut digests = vec![];
    for b in [&config, &layer] {
        let d = berth_common::Digest::sha256_of(b);
        let r = e.v2(who, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), Some((b.clone(), "application/octet-stream"))).await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        digests.push(d);
    }
    let m = manifest_json(&digests[0], config.len() as u64, &[(digests[1].clone(), layer.len() as u64)], None, None);
    let r = e.v2(who, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), Some((m.clone(), OCI_MANIFEST))).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    m
}

async fn tags(e: &Env, repo: &str) -> Vec<String> {
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    let r = e.v2(&admin, Method::GET, &format!("/v2/{repo}/tags/list"), None).await;
    r.1["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permission_matrix() {
    let e = Env::new().await;
    let (who, _) = acme(&e).await;
    // (caller) → expected for: pull, push, delete, admin API; [public, private]; then catalog.
    let table: &[(&str, [Expect; 2], [Expect; 2], [Expect; 2], [Expect; 2], Expect)] = &[
        ("anonymous", [Allowed, Unauthorized], [Unauthorized; 2], [Unauthorized; 2], [Unauthorized; 2], Unauthorized),
        ("user", [Allowed, Denied], [Denied; 2], [Denied; 2], [Denied; 2], Allowed),
        ("org-reader", [Allowed, Allowed], [Denied; 2], [Denied; 2], [Denied; 2], Allowed),
        ("org-writer", [Allowed, Allowed], [Allowed, Allowed], [Allowed, Allowed], [Denied; 2], Allowed),
        ("org-admin", [Allowed, Allowed], [Allowed, Allowed], [Allowed, Allowed], [Allowed, Allowed], Allowed),
        ("team-creator", [Allowed, Denied], [Denied; 2], [Denied; 2], [Denied; 2], Allowed),
        ("robot-read-private", [Allowed, Allowed], [Denied; 2], [Denied; 2], [Denied; 2], Allowed),
        ("app-token-repo-read", [Allowed, Allowed], [Denied; 2], [Denied; 2], [Denied; 2], Allowed),
        ("superuser", [Allowed, Allowed], [Allowed, Allowed], [Allowed, Allowed], [Allowed, Allowed], Allowed),
    ];
    let mut cases = 0;
    for (name, pull, push, delete, admin_api, catalog) in table {
        let w = &who.iter().find(|(n, _)| n == name).unwrap().1;
        for (i, repo) in ["acme/public", "acme/private"].iter().enumerate() {
            let case = |what: &str| format!("{name} {what} {repo}");
            let r = e.v2(w, Method::GET, &format!("/v2/{repo}/manifests/v1"), None).await;
            check(&case("pull"), &r, pull[i], StatusCode::OK);

            let tag = format!("pushed-by-{name}");
            let layer = format!("layer of {name}").into_bytes();
            let d = berth_common::Digest::sha256_of(&layer);
            let r = e.v2(w, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), Some((layer.clone(), "application/octet-stream"))).await;
            check(&case("push a blob"), &r, push[i], StatusCode::CREATED);
            if push[i] == Allowed {
                let m = manifest_json(&d, layer.len() as u64, &[(d.clone(), layer.len() as u64)], None, None);
                let r = e.v2(w, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), Some((m, OCI_MANIFEST))).await;
                check(&case("push a manifest"), &r, Allowed, StatusCode::CREATED);
            }
            assert_eq!(tags(&e, repo).await.contains(&tag), push[i] == Allowed, "{}", case("push leaves a tag only when allowed"));

            let r = e.v2(w, Method::DELETE, &format!("/v2/{repo}/manifests/del-{name}"), None).await;
            check(&case("delete"), &r, delete[i], StatusCode::ACCEPTED);
            assert_eq!(tags(&e, repo).await.contains(&format!("del-{name}")), delete[i] != Allowed, "{}", case("a refused delete changes nothing"));

            let r = e.api(w, Method::GET, &format!("/api/v1/repository/{repo}/permissions/team/"), None).await;
            check(&case("admin API"), &r, admin_api[i], StatusCode::OK);
            if admin_api[i] == Allowed {
                assert_eq!(r.1["permissions"]["writers"]["role"], "write", "{}", case("admin API"));
            }
            cases += 4;
        }
        let r = e.v2(w, Method::GET, "/v2/_catalog", None).await;
        check(&format!("{name} catalog"), &r, *catalog, StatusCode::OK);
        if *catalog == Allowed {
            let listed: Vec<&str> = r.1["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let sees_private = pull[1] == Allowed;
            assert_eq!(listed.contains(&"acme/private"), sees_private, "{name} catalog lists only what it may pull: {listed:?}");
            assert!(listed.contains(&"acme/public"), "{name}: {listed:?}");
        }
        cases += 1;
    }
    assert!(cases >= 60, "{cases} cases");

    // Creating by pushing: where the caller may create, and nowhere else.
    let cara = &who[5].1;
    push_image(&e, cara, "acme/made-by-cara", "v1", "cara").await;
    let (s, v, _) = e.api(cara, Method::GET, "/api/v1/repository/acme/made-by-cara", None).await;
    assert_eq!((s, v["is_public"].as_bool(), v["can_admin"].as_bool()), (StatusCode::OK, Some(false), Some(true)), "{v}");
    for (name, repo) in
        [("org-writer", "acme/new-by-writer"), ("user", "acme/new-by-user"), ("robot-read-private", "acme/new-by-robot"), ("user", "olga/theirs")]
    {
        let w = &who.iter().find(|(n, _)| *n == name).unwrap().1;
        let r = e.v2(w, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), None).await;
        check(&format!("{name} creates {repo}"), &r, Denied, StatusCode::ACCEPTED);
        let (s, _, _) = e.api(&Who::Basic(ADMIN.0.into(), ADMIN.1.into()), Method::GET, &format!("/api/v1/repository/{repo}"), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "a refused push creates no repository {repo}");
    }
    push_image(&e, &Who::user("uma"), "uma/own", "v1", "uma").await;

    // The takeover: a superuser's push into a namespace nobody has makes
    // an organization owned by that superuser, so a plain user can neither
    // claim the name nor change what lives there.
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    push_image(&e, &admin, "team/alpine", "v1", "team").await;
    let (s, v, _) = e.api(&admin, Method::GET, "/api/v1/organization/team", None).await;
    assert_eq!((s, v["is_admin"].as_bool()), (StatusCode::OK, Some(true)), "the push made the namespace: {v}");
    let uma = Who::user("uma");
    let (s, v, _) = e.api(&uma, Method::POST, "/api/v1/organization/", Some(json!({"name": "team"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "a plain user cannot claim a namespace that holds repositories: {v}");
    let (s, v, _) = e.api(&uma, Method::POST, "/api/v1/repository/team/alpine/changevisibility", Some(json!({"visibility": "public"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    check(
        "anonymous list after the takeover attempt",
        &e.v2(&Who::Anonymous, Method::GET, "/v2/team/alpine/tags/list", None).await,
        Unauthorized,
        StatusCode::OK,
    );
    // Nor can a user be created under that name.
    let (s, v, _) = e.api(&admin, Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "team", "password": "team-password"}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A plain user cannot make a namespace by pushing into it either.
    let r = e.v2(&uma, Method::POST, "/v2/nobodys/app/blobs/uploads/", None).await;
    check("user creates nobodys/app", &r, Denied, StatusCode::ACCEPTED);
    let (s, _, _) = e.api(&admin, Method::GET, "/api/v1/organization/nobodys", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a refused push makes no namespace");

    // Public after a visibility change; private again after another.
    let olga = &who[4].1;
    let (s, _, _) = e.api(olga, Method::POST, "/api/v1/repository/acme/private/changevisibility", Some(json!({"visibility": "public"}))).await;
    assert_eq!(s, StatusCode::OK);
    check("anonymous pull after publishing", &e.v2(&Who::Anonymous, Method::GET, "/v2/acme/private/manifests/v1", None).await, Allowed, StatusCode::OK);
    e.api(olga, Method::POST, "/api/v1/repository/acme/private/changevisibility", Some(json!({"visibility": "private"}))).await;
    check("anonymous pull after hiding", &e.v2(&Who::Anonymous, Method::GET, "/v2/acme/private/manifests/v1", None).await, Unauthorized, StatusCode::OK);

    // A partial grant is a token, not an error.
    let rita = &who[2].1;
    let t = e.token_from(3, rita, &["repository:acme/private:pull,push".into(), "repository:localhost:5000/acme/x:pull".into()]).await.unwrap();
    let claims = decode_claims(&t);
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]));
    assert_eq!(claims["access"][1]["actions"], json!([]), "an invalid name is granted nothing");
    // Wrong credentials at the token endpoint are a 401.
    let r = e.token_from(1, &Who::Basic("rita".into(), "wrong".into()), &[]).await.unwrap_err();
    assert_eq!((r.0, code(&r)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"));
}

fn decode_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused() {
    let e = Env::new().await;
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    push_image(&e, &admin, "lib/app", "v1", "x").await;
    let scope = "repository:lib/app:pull".to_string();
    let good = e.token_from(2, &admin, std::slice::from_ref(&scope)).await.unwrap();
    let pull = |t: String| {
        let e = &e;
        async move { e.send(e.http.get(format!("{}/v2/lib/app/manifests/v1", e.node(3))).bearer_auth(t)).await }
    };
    assert_eq!(pull(good.clone()).await.0, StatusCode::OK, "node 2's token works on node 3");
    // The OAuth2 password grant containerd tries first.
    let form = format!("grant_type=password&username=admin&password={}&service={}&scope={}", ADMIN.1, e.service, url_encode(&scope));
    let (s, v, _) = e.send(e.http.post(format!("{}/v2/auth", e.node(1))).header("content-type", "application/x-www-form-urlencoded").body(form)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(pull(v["access_token"].as_str().unwrap().to_string()).await.0, StatusCode::OK);
    let (s, _, _) = e.send(e.http.post(format!("{}/v2/auth", e.node(1))).body("grant_type=refresh_token&refresh_token=x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "grants berth does not issue are refused");

    let rec: ClusterRecord = e.cluster.node(1).meta.state().get(keys::CLUSTER).unwrap().unwrap();
    let cluster_key = SigningKey::from_pem("cluster", &rec.token_signing_key_pem).unwrap();
    let now = berth_node::util::now_ms() / 1000;
    let claims = |f: &dyn Fn(&mut Claims)| {
        let mut c = Claims {
            iss: ISSUER.into(),
            sub: "admin".into(),
            aud: e.service.clone(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "t".into(),
            access: vec![Grant { kind: "repository".into(), name: "lib/app".into(), actions: vec!["pull".into()] }],
            berth_kind: "user".into(),
            berth_app: None,
            berth_gen: 0,
        };
        f(&mut c);
        c
    };
    assert_eq!(pull(cluster_key.sign(&claims(&|_| {}))).await.0, StatusCode::OK, "a token made here with the cluster key is valid");
    let other_key = SigningKey::from_pem("cluster", &rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut widened = decode_claims(&good);
    widened["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    let bad: Vec<(&str, String)> = vec![
        ("signed with another key", other_key.sign(&claims(&|_| {}))),
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": "cluster"})), parts[1])),
        ("alg HS256", format!("{}.{}.{}", b64(&json!({"alg": "HS256", "typ": "JWT", "kid": "cluster"})), parts[1], parts[2])),
        ("expired", cluster_key.sign(&claims(&|c| c.exp = now - 3600))),
        ("not yet valid", cluster_key.sign(&claims(&|c| c.nbf = now + 3600))),
        ("wrong audience", cluster_key.sign(&claims(&|c| c.aud = "another-cluster".into()))),
        ("wrong issuer", cluster_key.sign(&claims(&|c| c.iss = "someone".into()))),
        ("scope widened by hand", format!("{}.{}.{}", parts[0], b64(&widened), parts[2])),
        ("garbage", "not.a.token".into()),
        ("a deleted user's", cluster_key.sign(&claims(&|c| c.sub = "ghost".into()))),
    ];
    for (what, t) in bad {
        let r = pull(t).await;
        assert_eq!((r.0, code(&r)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "{what}: {}", r.1);
    }
    // A token for pull does not push, however the request is made.
    let r = e.send(e.http.post(format!("{}/v2/lib/app/blobs/uploads/", e.node(1))).bearer_auth(&good)).await;
    assert_eq!((r.0, code(&r)), (StatusCode::FORBIDDEN, "DENIED"));

    // Rotation: new tokens carry the new key; tokens of the old key still
    // work until they expire; a key that was never the cluster's does not.
    let rotated = e.admin(Method::POST, "/api/v1/superuser/keys/rotate", None).await;
    let kid = rotated["kid"].as_str().unwrap();
    let fresh = e.token_from(1, &admin, std::slice::from_ref(&scope)).await.unwrap();
    let header: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(fresh.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("ES256"), Some(kid)));
    for node in 1..=3 {
        let r = e.send(e.http.get(format!("{}/v2/lib/app/manifests/v1", e.node(node))).bearer_auth(&fresh)).await;
        assert_eq!(r.0, StatusCode::OK, "node {node} knows the new key");
    }
    assert_eq!(pull(good).await.0, StatusCode::OK, "a token of the retired key lives out its lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn robots_tokens_throttling_and_usage_logs() {
    let e = Env::new().await;
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    e.admin(Method::POST, "/api/v1/organization/", Some(json!({"name": "shop"}))).await;
    let robot = e.admin(Method::PUT, "/api/v1/organization/shop/robots/deploy", None).await;
    let token = robot["token"].as_str().unwrap().to_string();
    e.admin(Method::POST, "/api/v1/repository", Some(json!({"repository": "web", "namespace": "shop", "visibility": "private"}))).await;
    e.admin(Method::PUT, "/api/v1/repository/shop/web/permissions/user/shop+deploy", Some(json!({"role": "write"}))).await;
    let bot = Who::Basic("shop+deploy".into(), token.clone());
    push_image(&e, &bot, "shop/web", "v1", "bot").await;

    // Regenerating the secret retires the old one at once.
    let again = e.admin(Method::POST, "/api/v1/organization/shop/robots/deploy/regenerate", None).await;
    let new_token = again["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    assert_eq!(e.token_from(1, &bot, &[]).await.unwrap_err().0, StatusCode::UNAUTHORIZED);
    let bot = Who::Basic("shop+deploy".into(), new_token);
    let held = e.token_from(2, &bot, &["repository:shop/web:pull".into()]).await.unwrap();

    // Deleted on node 1: refused on every node, with its secret or its token.
    e.admin(Method::DELETE, "/api/v1/organization/shop/robots/deploy", None).await;
    e.cluster.sync_all().await;
    for node in 1..=3 {
        let r = e.send(e.auth(e.http.get(format!("{}/v2/shop/web/manifests/v1", e.node(node))), &bot)).await;
        assert_eq!((r.0, code(&r)), (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"), "node {node}: {}", r.1);
        let r = e.send(e.http.get(format!("{}/v2/shop/web/manifests/v1", e.node(node))).bearer_auth(&held)).await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED, "node {node}: a token of a deleted robot");
    }
    let (s, v, _) = e.api(&admin, Method::GET, "/api/v1/repository/shop/web/permissions/user/", None).await;
    assert_eq!((s, v["permissions"].as_object().map(|m| m.len())), (StatusCode::OK, Some(0)), "its grants went with it: {v}");

    // Application tokens: scoped, listed without their secret, revocable.
    e.admin(Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "tom", "password": "tom-password"}))).await;
    let tom = Who::user("tom");
    let (s, t, _) = e.api(&tom, Method::POST, "/api/v1/user/apptoken", Some(json!({"title": "read only", "scopes": ["user:read"], "expires_in": 3600}))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let app = Who::Basic("$app".into(), t["token"]["token_code"].as_str().unwrap().to_string());
    let (s, me, _) = e.api(&app, Method::GET, "/api/v1/user/", None).await;
    assert_eq!((s, me["username"].as_str(), me["kind"].as_str()), (StatusCode::OK, Some("tom"), Some("app_token")), "{me}");
    let (s, v, _) = e.api(&app, Method::POST, "/api/v1/user/apptoken", Some(json!({"title": "wider", "scopes": ["repo:write"]}))).await;
    assert_eq!((s, v["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("DENIED")), "a token cannot mint a wider one: {v}");
    let (_, list, _) = e.api(&tom, Method::GET, "/api/v1/user/apptoken", None).await;
    assert!(list["tokens"][0].get("token_code").is_none(), "{list}");
    let id = t["token"]["uuid"].as_str().unwrap();
    let (s, _, _) = e.api(&tom, Method::DELETE, &format!("/api/v1/user/apptoken/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(e.api(&app, Method::GET, "/api/v1/user/", None).await.0, StatusCode::UNAUTHORIZED, "a revoked token");

    // Failed logins: after a few, the account is slowed down (429) from
    // this address, even with the right password, while other accounts
    // are not (other addresses: tests/hostile_auth.rs).
    let mut statuses = vec![];
    for _ in 0..7 {
        statuses.push(e.token_from(1, &Who::Basic("tom".into(), "guess".into()), &[]).await.unwrap_err().0);
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(statuses[6], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    let r = e.token_from(1, &tom, &[]).await.unwrap_err();
    assert_eq!((r.0, code(&r)), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    assert!(e.token_from(1, &admin, &[]).await.is_ok(), "another account is not slowed down");

    // The usage log saw all of it, from every node, and never a secret.
    e.cluster.flush_audit().await;
    let logs = e.admin(Method::GET, "/api/v1/organization/shop/logs", None).await;
    let kinds: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    for want in ["create_robot", "regenerate_robot_token", "delete_robot", "push_repo", "change_repo_permission", "create_repo", "login_success"] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }
    let push = logs["logs"].as_array().unwrap().iter().find(|l| l["kind"] == "push_repo").unwrap();
    assert_eq!((push["performer"]["name"].as_str(), push["repository"].as_str()), (Some("shop+deploy"), Some("shop/web")), "{push}");
    assert!(push["node"].as_u64().is_some() && push["region"].is_string() && push["ip"].as_str() == Some("127.0.0.1"), "{push}");
    let repo_logs = e.admin(Method::GET, "/api/v1/repository/shop/web/logs?kind=push_repo", None).await;
    assert!(repo_logs["logs"].as_array().unwrap().iter().all(|l| l["kind"] == "push_repo" && l["repository"] == "shop/web"));
    let future = e.admin(Method::GET, "/api/v1/superuser/logs?starttime=2100-01-01T00:00:00Z&endtime=2100-01-02T00:00:00Z", None).await;
    assert_eq!(future["logs"].as_array().unwrap().len(), 0, "the time filter holds");
    let all = e.admin(Method::GET, "/api/v1/superuser/logs", None).await.to_string();
    assert!(all.contains("login_failure"), "failed logins are logged");
    for secret in [&token, "tom-password", "guess", "admin-password"] {
        assert!(!all.contains(secret), "a secret in the usage log");
    }
    // tom is still slowed down from above (the fixed wait that stood before
    // the usage log let that lapse): another outsider asks.
    e.admin(Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "ann", "password": "ann-password"}))).await;
    let (s, _, _) = e.api(&Who::user("ann"), Method::GET, "/api/v1/organization/shop/logs", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an outsider reads no organization's logs");
    let r = e.send(e.http.get(format!("{}/api/v1/superuser/logs?starttime=yesterday", e.node(2))).basic_auth(ADMIN.0, Some(ADMIN.1))).await;
    assert_eq!((r.0, code(&r)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_refusals_change_nothing() {
    let e = Env::new().await;
    let before = e.admin(Method::GET, "/api/v1/superuser/users/", None).await;
    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    let cases: Vec<(Method, &str, Option<Value>, StatusCode)> = vec![
        (Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "Bad Name", "password": "long-enough"})), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "shorty", "password": "short"})), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "admin", "password": "long-enough"})), StatusCode::CONFLICT),
        (Method::POST, "/api/v1/superuser/users/", Some(json!({"nope": 1})), StatusCode::BAD_REQUEST),
        (Method::POST, "/api/v1/organization/", Some(json!({"name": "admin"})), StatusCode::CONFLICT),
        (Method::DELETE, "/api/v1/superuser/users/admin", None, StatusCode::CONFLICT),
        (Method::PUT, "/api/v1/organization/none/team/x", Some(json!({"role": "member"})), StatusCode::NOT_FOUND),
        (Method::POST, "/api/v1/repository", Some(json!({"repository": "x", "namespace": "lib", "visibility": "secret"})), StatusCode::BAD_REQUEST),
        (Method::PUT, "/api/v1/repository/lib/none/permissions/user/admin", Some(json!({"role": "read"})), StatusCode::NOT_FOUND),
        (Method::POST, "/api/v1/user/apptoken", Some(json!({"title": "t", "scopes": ["repo:everything"]})), StatusCode::BAD_REQUEST),
    ];
    for (m, path, body, want) in cases {
        let r = e.api(&admin, m.clone(), path, body).await;
        assert_eq!(r.0, want, "{m} {path}: {}", r.1);
        assert!(r.1["errors"][0]["message"].as_str().is_some_and(|s| !s.is_empty()), "{m} {path}: an error message: {}", r.1);
    }
    e.admin(Method::POST, "/api/v1/organization/", Some(json!({"name": "solo"}))).await;
    let r = e.api(&admin, Method::DELETE, "/api/v1/organization/solo/team/owners/members/admin", None).await;
    assert_eq!(r.0, StatusCode::CONFLICT, "the owners team keeps a member: {}", r.1);
    push_image(&e, &admin, "solo/app", "v1", "s").await;
    let r = e.api(&admin, Method::DELETE, "/api/v1/organization/solo", None).await;
    assert_eq!(r.0, StatusCode::CONFLICT, "an organization with repositories stays: {}", r.1);
    let r = e.api(&admin, Method::DELETE, "/api/v1/repository/solo/app", None).await;
    assert_eq!(r.0, StatusCode::NO_CONTENT);
    let r = e.v2(&admin, Method::GET, "/v2/solo/app/manifests/v1", None).await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "a deleted repository's images are gone");
    assert_eq!(e.api(&admin, Method::DELETE, "/api/v1/organization/solo", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(e.admin(Method::GET, "/api/v1/superuser/users/", None).await, before, "no refusal changed the users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_write_that_succeeds_creates_a_repository() {
    let e = Env::new().await;
    let olga = Who::user("olga");
    let cara = Who::user("cara");
    for u in ["olga", "cara"] {
        e.admin(Method::POST, "/api/v1/superuser/users/", Some(json!({"username": u, "password": format!("{u}-password")}))).await;
    }
    let (s, v, _) = e.api(&olga, Method::POST, "/api/v1/organization/", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    e.api(&olga, Method::PUT, "/api/v1/organization/acme/team/builders", Some(json!({"role": "creator"}))).await;
    let (s, v, _) = e.api(&olga, Method::PUT, "/api/v1/organization/acme/team/builders/members/cara", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let unknown_upload = format!("1-{}", "0".repeat(32));

    // cara may create repositories in acme; none of these requests writes one.
    let r =
        e.v2(&cara, Method::PATCH, &format!("/v2/acme/ghost-patch/blobs/uploads/{unknown_upload}"), Some((b"x".to_vec(), "application/octet-stream"))).await;
    assert_eq!((r.0, code(&r)), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"), "{}", r.1);
    let r = e.v2(&cara, Method::GET, &format!("/v2/acme/ghost-status/blobs/uploads/{unknown_upload}"), None).await;
    assert_eq!((r.0, code(&r)), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"), "{}", r.1);
    let r = e.v2(&cara, Method::GET, "/v2/acme/ghost-get/blobs/uploads/", None).await;
    assert_eq!(r.0, StatusCode::METHOD_NOT_ALLOWED, "{}", r.1);
    // An upload started, refused a bad chunk, and abandoned.
    let r = e.v2(&cara, Method::POST, "/v2/acme/ghost-started/blobs/uploads/", None).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    let loc = r.2["location"].to_str().unwrap().to_string();
    let r = e.v2(&cara, Method::GET, &loc, None).await;
    assert_eq!((r.0, r.2["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-0"), "its creator reads the status before the repository exists");
    let r = e.v2(&cara, Method::PATCH, &loc, Some((b"abc".to_vec(), "application/octet-stream"))).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    // A wrong digest: the upload fails, and still no repository.
    let r = e.v2(&cara, Method::PUT, &format!("{loc}?digest={}", berth_common::Digest::sha256_of(b"not abc")), None).await;
    assert_eq!((r.0, code(&r)), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"), "{}", r.1);
    let r =
        e.v2(&cara, Method::POST, &format!("/v2/acme/ghost-mount/blobs/uploads/?mount={}&from=acme/none", berth_common::Digest::sha256_of(b"x")), None).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "a mount that cannot be done is a fresh session: {}", r.1);

    let admin = Who::Basic(ADMIN.0.into(), ADMIN.1.into());
    let catalog = |r: &Reply| r.1["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let listed = catalog(&e.v2(&admin, Method::GET, "/v2/_catalog", None).await);
    assert!(listed.iter().all(|n| !n.starts_with("acme/ghost")), "no request above created a repository: {listed:?}");

    // The first blob stored creates it, administered by its creator.
    let d = berth_common::Digest::sha256_of(b"real");
    let r = e.v2(&cara, Method::POST, &format!("/v2/acme/real/blobs/uploads/?digest={d}"), Some((b"real".to_vec(), "application/octet-stream"))).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert!(catalog(&e.v2(&admin, Method::GET, "/v2/_catalog", None).await).contains(&"acme/real".to_string()));
    let (s, v, _) = e.api(&cara, Method::GET, "/api/v1/repository/acme/real", None).await;
    assert_eq!((s, v["is_public"].as_bool(), v["can_admin"].as_bool()), (StatusCode::OK, Some(false), Some(true)), "{v}");
    // So does the first mount, into another new repository (with a token
    // for both, as docker asks for a mount).
    let token = e.token_from(2, &cara, &["repository:acme/mounted:pull,push".into(), "repository:acme/real:pull".into()]).await.unwrap();
    let r = e.send(e.http.post(format!("{}/v2/acme/mounted/blobs/uploads/?mount={d}&from=acme/real", e.node(1))).bearer_auth(token)).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let (s, v, _) = e.api(&cara, Method::GET, "/api/v1/repository/acme/mounted", None).await;
    assert_eq!((s, v["can_admin"].as_bool()), (StatusCode::OK, Some(true)), "{v}");

    // Catalog pages are read from where they start, in batches, skipping
    // what the reader may not see: pages of any size add up to the list.
    for (name, who) in [("olga", &olga), ("cara", &cara)] {
        for i in 0..12 {
            let d = berth_common::Digest::sha256_of(format!("{name}-{i}").as_bytes());
            let r = e
                .v2(
                    who,
                    Method::POST,
                    &format!("/v2/acme/{name}-{i:02}/blobs/uploads/?digest={d}"),
                    Some((format!("{name}-{i}").into_bytes(), "application/octet-stream")),
                )
                .await;
            assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        }
    }
    for who in [&admin, &olga, &cara] {
        let whole = catalog(&e.v2(who, Method::GET, "/v2/_catalog", None).await);
        for n in [1, 5, 17] {
            let (mut paged, mut path) = (Vec::new(), format!("/v2/_catalog?n={n}"));
            loop {
                let r = e.v2(who, Method::GET, &path, None).await;
                assert_eq!(r.0, StatusCode::OK, "{}", r.1);
                let page = catalog(&r);
                assert!(page.len() <= n);
                paged.extend(page.iter().cloned());
                match r.2.get("link") {
                    Some(_) => path = format!("/v2/_catalog?n={n}&last={}", page.last().unwrap()),
                    None => break,
                }
            }
            assert_eq!(paged, whole, "pages of {n} add up to the catalog");
        }
    }
    let seen_by_cara = catalog(&e.v2(&cara, Method::GET, "/v2/_catalog", None).await);
    assert!(seen_by_cara.iter().all(|n| !n.starts_with("acme/olga-")), "cara's pages skipped olga's private repositories: {seen_by_cara:?}");
    assert_eq!(seen_by_cara.iter().filter(|n| n.starts_with("acme/cara-")).count(), 12);
    assert_eq!(
        catalog(&e.v2(&admin, Method::GET, "/v2/_catalog", None).await).iter().filter(|n| n.starts_with("acme/olga-") || n.starts_with("acme/cara-")).count(),
        24
    );
}
