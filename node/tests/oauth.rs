//! OAuth applications and Quay's OAuth 2 flows against a real `berth`
//! process, driven like a browser: a reqwest client opens the consent
//! page, reads its form (hidden fields and CSRF token), signs in on it,
//! and follows the redirect to a callback server started here.
//!
//! Shows: the authorization-code flow end to end (the token pushes with
//! `repo:write` and is refused a `repo:admin` call), the implicit flow
//! (its `repo:admin` token creates a notification), PKCE for a public
//! client, an administrator's generated token, listing and revoking an
//! application's tokens, and each refusal with its OAuth error, issuing
//! nothing: a wrong secret, a reused code, an expired code, a redirect outside the
//! registered URI, a scope widened at the exchange, a missing CSRF token,
//! a PKCE verifier mismatch, a public client without PKCE.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::Uri;
use base64::Engine;
use berth_common::Digest;
use common::procs::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

/// The query strings the callback server got.
#[derive(Clone, Default)]
struct Callbacks(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

async fn start_callback() -> (Callbacks, String) {
    let got = Callbacks::default();
    let g = got.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let g = g.clone();
        async move {
            let q = url_pairs(uri.query().unwrap_or(""));
            g.0.lock().unwrap().push(q);
            "you may close this window"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (got, format!("http://{addr}"))
}

/// A urlencoded form body, as a browser sends it.
fn form<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))).finish()
}

const FORM: &str = "application/x-www-form-urlencoded";

fn url_pairs(s: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

/// The hidden fields of the first form of a page (the approval form).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let form = html.split("</form>").next().unwrap();
    let mut out = vec![];
    for tag in form.split("<input").skip(1) {
        let tag = tag.split('>').next().unwrap();
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |name: &str| {
            let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            let v = &tag[start..];
            unescape(&v[..v.find('"').unwrap()])
        };
        out.push((attr("name"), attr("value")));
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

struct Node {
    base: String,
    http: reqwest::Client,
}

impl Node {
    async fn api(&self, who: (&str, &str), method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).basic_auth(who.0, Some(who.1));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn bearer(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Opens the consent page as a browser would: `(status, html)`.
    async fn open(&self, query: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        let r = self.http.get(format!("{}/oauth/authorize?{q}", self.base)).send().await.unwrap();
        let loc = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (r.status(), r.text().await.unwrap(), loc)
    }

    /// Submits a form to `path`: `(status, Location, body)`.
    async fn submit(&self, path: &str, fields: &[(String, String)]) -> (StatusCode, Option<String>, String) {
        let r = self.http.post(format!("{}{path}", self.base)).header("content-type", FORM).body(form(fields)).send().await.unwrap();
        let loc = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        (r.status(), loc, r.text().await.unwrap())
    }

    async fn exchange(&self, fields: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self.http.post(format!("{}/oauth/access_token", self.base)).header("content-type", FORM).body(form(fields)).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Opens the page, signs in as `user` and approves: the Location.
    async fn approve(&self, query: &[(&str, &str)], user: (&str, &str)) -> String {
        let (s, html, _) = self.open(query).await;
        assert_eq!(s, StatusCode::OK, "{html}");
        let mut fields = hidden_fields(&html);
        fields.push(("username".into(), user.0.into()));
        fields.push(("password".into(), user.1.into()));
        let (s, loc, body) = self.submit("/oauth/authorizeapp", &fields).await;
        assert_eq!(s, StatusCode::FOUND, "{body}");
        loc.unwrap()
    }

    /// Pushes a small image as `repo:tag` with a bearer token.
    async fn push(&self, token: &str, repo: &str, tag: &str) -> StatusCode {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let layer = b"oauth layer".to_vec();
        for blob in [&config, &layer] {
            let d = Digest::sha256_of(blob);
            let r = self.http.post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.base)).bearer_auth(token).body(blob.clone()).send().await.unwrap();
            if r.status() != StatusCode::CREATED {
                return r.status();
            }
        }
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
        });
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        r.status()
    }
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    url_pairs(location.split_once('?').map(|(_, q)| q).unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_applications_and_flows() {
    berth_node::install_crypto_provider();
    // The notification the implicit flow's token creates goes to the
    // callback server, on loopback.
    let c = tokio::task::block_in_place(|| {
        ProcCluster::start_configured(1, &[], |t| {
            t.insert("notifications".into(), toml::Value::Table(toml::toml! { allowed_networks = ["127.0.0.0/8"] }));
            // Codes expire within the test (Quay's 10 minutes otherwise).
            t.insert("oauth".into(), toml::Value::Table(toml::toml! { code_ttl_secs = 8 }));
        })
    });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let n = Node { base: format!("http://{}", c.http[0]), http };
    let admin = ("admin", c.password.as_str());
    let alice = ("alice", "alice's long password");
    let (cb, cb_base) = start_callback().await;
    let redirect = format!("{cb_base}/oauth/cb");

    // Alice, her organization and a repository in it.
    let (s, v) = n.api(admin, Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "alice", "password": alice.1}))).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = n.api(alice, Method::POST, "/api/v1/organization/", Some(json!({"name": "acme"}))).await;
    assert!(s.is_success(), "{v}");
    let (s, v) = n.api(alice, Method::POST, "/api/v1/repository", Some(json!({"repository": "app", "namespace": "acme", "visibility": "private"}))).await;
    assert!(s.is_success(), "{v}");

    // Register an application; the secret is shown once.
    let app_req = json!({"name": "CI <pipeline>", "redirect_uri": redirect, "application_uri": cb_base, "description": "builds & pushes"});
    let (s, app) = n.api(alice, Method::POST, "/api/v1/organization/acme/applications", Some(app_req)).await;
    assert_eq!(s, StatusCode::CREATED, "{app}");
    let client_id = app["client_id"].as_str().unwrap().to_string();
    let secret = app["client_secret"].as_str().unwrap().to_string();
    assert_eq!(client_id.len(), 20);
    assert_eq!(secret.len(), 40);
    let (s, shown) = n.api(alice, Method::GET, &format!("/api/v1/organization/acme/applications/{client_id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(shown["client_secret"].is_null(), "the secret is never shown again: {shown}");
    let (s, public) = n.http.get(format!("{}/api/v1/app/{client_id}", n.base)).send().await.map(|r| (r.status(), r)).unwrap();
    assert_eq!(s, StatusCode::OK);
    let public: Value = public.json().await.unwrap();
    assert_eq!(public["organization"], "acme");
    // Bad applications are refused and stored nothing.
    for bad in [json!({"name": "x", "redirect_uri": "ftp://h/cb"}), json!({"name": "", "redirect_uri": redirect}), json!({"name": "x"})] {
        let (s, v) = n.api(alice, Method::POST, "/api/v1/organization/acme/applications", Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let (_, list) = n.api(alice, Method::GET, "/api/v1/organization/acme/applications", None).await;
    assert_eq!(list["applications"].as_array().unwrap().len(), 1);
    // Someone else's organization's applications are not theirs to see.
    n.api(admin, Method::POST, "/api/v1/superuser/users/", Some(json!({"username": "bob", "password": "bob's long password"}))).await;
    let (s, _) = n.api(("bob", "bob's long password"), Method::GET, "/api/v1/organization/acme/applications", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The authorization-code flow, followed like a browser.
    let q = [
        ("client_id", client_id.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("scope", "repo:read repo:write"),
        ("response_type", "code"),
        ("state", "s-1"),
    ];
    let (s, html, _) = n.open(&q).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("CI &lt;pipeline&gt;") && !html.contains("CI <pipeline>"), "names are escaped: {html}");
    assert!(html.contains("acme") && html.contains("Read/Write to any accessible repositories") && html.contains("View all visible repositories"));
    assert!(html.contains("name=\"password\""), "no credentials: the page asks for them");
    let mut fields = hidden_fields(&html);
    fields.push(("username".into(), "alice".into()));
    fields.push(("password".into(), "wrong password".into()));
    let (s, loc, page) = n.submit("/oauth/authorizeapp", &fields).await;
    assert_eq!((s, loc), (StatusCode::UNAUTHORIZED, None), "a wrong password gets the page again, and no code");
    assert!(page.contains("wrong user name or password"));
    fields.pop();
    fields.push(("password".into(), alice.1.into()));
    let (s, loc, body) = n.submit("/oauth/authorizeapp", &fields).await;
    assert_eq!(s, StatusCode::FOUND, "{body}");
    let loc = loc.unwrap();
    assert!(loc.starts_with(&format!("{redirect}?")), "{loc}");
    // Follow the redirect to the callback server.
    let r = n.http.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = cb.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(got["state"], "s-1");
    let code = got["code"].clone();

    // Refusals at the exchange, each issuing nothing.
    let exchange = |code: String, secret: String, extra: Vec<(&'static str, String)>| {
        let mut f = vec![("grant_type", "authorization_code".to_string()), ("code", code), ("client_id", client_id.clone()), ("client_secret", secret)];
        f.extend(extra);
        f.push(("redirect_uri", redirect.clone()));
        f
    };
    let call = |f: Vec<(&'static str, String)>| {
        let n = &n;
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            n.exchange(&pairs).await
        }
    };
    let (s, v) = call(exchange(code.clone(), "X".repeat(40), vec![])).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{v}");
    let (s, v) = call(exchange(code.clone(), secret.clone(), vec![("scope", "repo:read repo:write repo:admin".into())])).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")), "{v}");
    let (s, v) = call(vec![("grant_type", "password".into()), ("client_id", client_id.clone()), ("client_secret", secret.clone())]).await;
    assert_eq!(v["error"], "unsupported_grant_type", "{s} {v}");
    let (s, v) = call(vec![("client_id", client_id.clone()), ("client_secret", secret.clone())]).await;
    assert_eq!(v["error"], "invalid_request", "{s} {v}");
    let tokens_path = format!("/api/v1/organization/acme/applications/{client_id}/tokens");
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), 0, "no refusal issued a token");

    // The exchange, with the secret over HTTP Basic.
    let r = n
        .http
        .post(format!("{}/oauth/access_token", n.base))
        .basic_auth(&client_id, Some(&secret))
        .header("content-type", FORM)
        .body(form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", redirect.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].is_null() && t["expires_in"].as_u64().unwrap() > 0);
    let token = t["access_token"].as_str().unwrap().to_string();
    // Reused: invalid_grant, nothing more issued.
    let (s, v) = call(exchange(code.clone(), secret.clone(), vec![])).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{v}");
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), 1);

    // The token acts for alice within repo:read repo:write.
    assert_eq!(n.push(&token, "acme/app", "v1").await, StatusCode::CREATED);
    let (s, v) = n.bearer(&token, Method::GET, "/api/v1/repository/acme/app", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let hook = json!({"event": "repo_push", "method": "webhook", "config": {"url": format!("{cb_base}/hook")}, "eventConfig": {}, "title": "t"});
    let (s, v) = n.bearer(&token, Method::POST, "/api/v1/repository/acme/app/notification/", Some(hook.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a repo:admin call is refused: {v}");
    let (s, v) = n.bearer(&token, Method::PUT, "/api/v1/repository/acme/app/changestate", Some(json!({"state": "READ_ONLY"}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // The implicit flow: the token comes in the fragment; with repo:admin
    // it creates a notification.
    let loc = n
        .approve(&[("client_id", &client_id), ("redirect_uri", &redirect), ("scope", "repo:admin"), ("response_type", "token"), ("state", "s-2")], alice)
        .await;
    let (before, fragment) = loc.split_once('#').unwrap();
    assert_eq!(before, redirect);
    let f = url_pairs(fragment);
    assert_eq!((f["token_type"].as_str(), f["state"].as_str()), ("Bearer", "s-2"));
    assert!(f["expires_in"].parse::<u64>().unwrap() > 0);
    let (s, v) = n.bearer(&f["access_token"], Method::POST, "/api/v1/repository/acme/app/notification/", Some(hook)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), 2);

    // Denial.
    let (_, html, _) = n.open(&[("client_id", &client_id), ("scope", "repo:read"), ("response_type", "code"), ("state", "s-3")]).await;
    let (s, loc, _) = n.submit("/oauth/denyapp", &hidden_fields(&html)).await;
    assert_eq!(s, StatusCode::FOUND);
    let d = query_of(&loc.unwrap());
    assert_eq!((d["error"].as_str(), d["state"].as_str()), ("access_denied", "s-3"));

    // A redirect outside the registered one: a page, never a redirect.
    for outside in
        [format!("{cb_base}/elsewhere"), format!("{redirect}/../../x"), redirect.replace("http://", "http://evil@"), "http://evil.example/oauth/cb".into()]
    {
        let (s, html, loc) = n.open(&[("client_id", &client_id), ("redirect_uri", &outside), ("scope", "repo:read"), ("response_type", "code")]).await;
        assert_eq!((s, loc), (StatusCode::BAD_REQUEST, None), "{outside}: {html}");
        assert!(html.contains("invalid_request"));
    }
    // An unknown scope goes back as invalid_scope.
    let (s, _, loc) = n.open(&[("client_id", &client_id), ("scope", "repo:everything"), ("response_type", "code"), ("state", "s")]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(query_of(&loc.unwrap())["error"], "invalid_scope");

    // Missing or tampered CSRF token: refused, no code.
    let (_, html, _) = n.open(&q).await;
    let base_fields = hidden_fields(&html);
    let mut no_csrf: Vec<(String, String)> = base_fields.iter().filter(|(k, _)| k != "csrf_token").cloned().collect();
    no_csrf.push(("username".into(), "alice".into()));
    no_csrf.push(("password".into(), alice.1.into()));
    let (s, loc, body) = n.submit("/oauth/authorizeapp", &no_csrf).await;
    assert_eq!((s, loc), (StatusCode::BAD_REQUEST, None));
    assert!(body.contains("invalid_request") && body.contains("CSRF"));
    let mut widened: Vec<(String, String)> =
        base_fields.iter().map(|(k, v)| if k == "scope" { (k.clone(), "repo:read repo:write repo:admin".into()) } else { (k.clone(), v.clone()) }).collect();
    widened.push(("username".into(), "alice".into()));
    widened.push(("password".into(), alice.1.into()));
    let (s, loc, _) = n.submit("/oauth/authorizeapp", &widened).await;
    assert_eq!((s, loc), (StatusCode::BAD_REQUEST, None), "a form for one request approves no other");

    // PKCE with a public client.
    let (s, papp) = n
        .api(alice, Method::POST, "/api/v1/organization/acme/applications", Some(json!({"name": "cli", "redirect_uri": redirect, "public_client": true})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{papp}");
    let pid = papp["client_id"].as_str().unwrap().to_string();
    let (s, _, loc) = n.open(&[("client_id", &pid), ("scope", "repo:read"), ("response_type", "code"), ("state", "p")]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(query_of(&loc.unwrap())["error"], "invalid_request", "a public client must use PKCE");
    let verifier = "a-long-random-verifier-of-the-client-0123456789abcdef";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let pkce_query =
        [("client_id", pid.as_str()), ("scope", "repo:read"), ("response_type", "code"), ("code_challenge", &challenge), ("code_challenge_method", "S256")];
    let pcode = query_of(&n.approve(&pkce_query, alice).await)["code"].clone();
    let (s, v) = n.exchange(&[("grant_type", "authorization_code"), ("code", &pcode), ("client_id", &pid), ("code_verifier", &format!("{verifier}x"))]).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{v}");
    let (s, v) = n.exchange(&[("grant_type", "authorization_code"), ("code", &pcode), ("client_id", &pid)]).await;
    assert_eq!(v["error"], "invalid_grant", "{s} {v}");
    let (s, v) = n.exchange(&[("grant_type", "authorization_code"), ("code", &pcode), ("client_id", &pid), ("code_verifier", verifier)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = n.bearer(v["access_token"].as_str().unwrap(), Method::GET, "/api/v1/repository/acme/app", None).await;
    assert_eq!(s, StatusCode::OK);

    // Generate a token without the redirect; list, revoke.
    let (s, g) =
        n.api(alice, Method::POST, &format!("/api/v1/organization/acme/applications/{client_id}/generatetoken"), Some(json!({"scope": "repo:read"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gtoken = g["access_token"].as_str().unwrap().to_string();
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), 3);
    let (s, _) = n.bearer(&gtoken, Method::GET, "/api/v1/repository/acme/app", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) =
        n.api(alice, Method::DELETE, &format!("/api/v1/organization/acme/applications/{client_id}/tokens/{}", g["uuid"].as_str().unwrap()), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.bearer(&gtoken, Method::GET, "/api/v1/repository/acme/app", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked token is refused");
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), 2);

    // An expired code: invalid_grant, nothing issued.
    let before = n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len();
    let late = query_of(&n.approve(&q, alice).await)["code"].clone();
    tokio::time::sleep(std::time::Duration::from_secs(9)).await;
    let (s, v) = call(exchange(late, secret.clone(), vec![])).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{v}");
    assert_eq!(n.api(alice, Method::GET, &tokens_path, None).await.1["tokens"].as_array().unwrap().len(), before);

    // Reset the secret: the old one stops working.
    let (s, reset) = n.api(alice, Method::POST, &format!("/api/v1/organization/acme/applications/{client_id}/resetclientsecret"), None).await;
    assert_eq!(s, StatusCode::OK);
    let new_secret = reset["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let code2 = query_of(&n.approve(&q, alice).await)["code"].clone();
    let (s, v) = call(exchange(code2.clone(), secret.clone(), vec![])).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let (s, v) = call(exchange(code2, new_secret, vec![])).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The CLI over the same API.
    let pw = c.root.path().join("alice.pw");
    std::fs::write(&pw, alice.1).unwrap();
    let endpoint = n.base.clone();
    let target = ["--endpoint", endpoint.as_str(), "--user", "alice", "--password-file", pw.to_str().unwrap()];
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(target);
        tokio::task::block_in_place(|| berth(&all))
    };
    let out = cli(&["app", "create", "acme", "made-by-cli", "--redirect-uri", &redirect, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["client_secret"].as_str().unwrap().len(), 40);
    let listed = cli(&["app", "list", "acme"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(made["client_id"].as_str().unwrap()));
    let bad = cli(&["app", "create", "acme", "x", "--redirect-uri", "ftp://h/cb"]);
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).trim().lines().count(), 1, "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(cli(&["app", "delete", "acme", made["client_id"].as_str().unwrap()]).status.success());

    // The usage log.
    let (_, logs) = n.api(alice, Method::GET, "/api/v1/organization/acme/logs", None).await;
    let kinds: Vec<String> = logs["logs"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap().to_string()).collect();
    for k in ["create_application", "reset_application_client_secret", "oauth_token_assigned", "oauth_token_revoked"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }

    // Deleting the application takes its tokens.
    let (s, _) = n.api(alice, Method::DELETE, &format!("/api/v1/organization/acme/applications/{client_id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.bearer(&token, Method::GET, "/api/v1/repository/acme/app", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, logs) = n.api(alice, Method::GET, "/api/v1/organization/acme/logs", None).await;
    assert!(logs["logs"].as_array().unwrap().iter().any(|l| l["kind"] == "delete_application"));
}
