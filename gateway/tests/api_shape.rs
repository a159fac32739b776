//! The shape of everything beside `/v2` proper, against the in-memory
//! node: the token endpoint's answers and refusals, the identity and
//! cluster APIs' authentication (once, before the body) and their error
//! JSON. What the node decides (who may do what) is tested in node.

use berth_gateway::testing::{MemoryNode, SERVICE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

type Reply = (StatusCode, reqwest::header::HeaderMap, Value);

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn new() -> Api {
        let node = MemoryNode::new("admin-password");
        node.add_user("ann", "ann-password");
        Api { base: node.serve().await.unwrap(), http: reqwest::Client::new() }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.req(method, path).basic_auth("admin", Some("admin-password"))
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        let bytes = r.bytes().await.unwrap();
        (s, h, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Asserts the error shape: status, `{"errors":[{"code","message"}]}`.
fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.0, status, "{}", r.2);
    assert_eq!(r.2["errors"][0]["code"], code, "{}", r.2);
    assert!(r.2["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {}", r.2);
}

#[tokio::test]
async fn the_token_endpoint_answers_and_refuses_in_its_shapes() {
    let a = Api::new().await;
    let (s, _, t) = a.send(a.admin(Method::GET, &format!("/v2/auth?service={SERVICE}&scope=repository:admin/app:pull"))).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token"], t["access_token"]);
    assert!(t["expires_in"].as_u64().unwrap() > 0 && t["issued_at"].as_str().unwrap().ends_with('Z'), "{t}");
    let token = t["token"].as_str().unwrap();
    assert_eq!(a.send(a.req(Method::GET, "/v2/").bearer_auth(token)).await.0, StatusCode::OK, "the token works on /v2");

    assert_error(&a.send(a.admin(Method::GET, "/v2/auth?service=another")).await, StatusCode::FORBIDDEN, "DENIED");
    let wrong = a.send(a.req(Method::GET, "/v2/auth").basic_auth("admin", Some("nope"))).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_error(&a.send(a.req(Method::GET, "/v2/auth").header("authorization", "Token x")).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // The OAuth2 password grant, and what it refuses.
    let form = |body: &str| a.req(Method::POST, "/v2/auth").header("content-type", "application/x-www-form-urlencoded").body(body.to_string());
    let (s, _, t) = a.send(form("grant_type=password&username=ann&password=ann-password&scope=repository:ann/app:pull,push")).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(a.send(a.req(Method::POST, "/v2/ann/app/blobs/uploads/").bearer_auth(t["access_token"].as_str().unwrap())).await.0, StatusCode::ACCEPTED);
    assert_error(&a.send(form("grant_type=refresh_token&refresh_token=x")).await, StatusCode::BAD_REQUEST, "UNSUPPORTED");
    assert_error(&a.send(form("username=ann&password=ann-password")).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_error(&a.send(form("grant_type=password&username=ann")).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_error(&a.send(a.admin(Method::PUT, "/v2/auth")).await, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");

    // Limits: scopes counted, the query measured before it is parsed.
    let scopes: String = (0..33).map(|i| format!("&scope=repository:admin/r{i}:pull")).collect();
    let many = a.send(a.admin(Method::GET, &format!("/v2/auth?service={SERVICE}{scopes}"))).await;
    assert_error(&many, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(many.2["errors"][0]["detail"], json!({"max_scopes": 32}));
    let long = format!("/v2/auth?scope={}", "a".repeat(9 << 10));
    assert_error(&a.send(a.admin(Method::GET, &long)).await, StatusCode::URI_TOO_LONG, "BAD_REQUEST");
}

#[tokio::test]
async fn the_identity_api_authenticates_before_it_reads_a_body() {
    let a = Api::new().await;
    let anon = a.send(a.req(Method::GET, "/api/v1/user/")).await;
    assert_error(&anon, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(anon.1["www-authenticate"], "Basic realm=\"berth\"");
    assert_error(&a.send(a.req(Method::GET, "/api/v1/user/").basic_auth("ann", Some("nope"))).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_error(&a.send(a.req(Method::GET, "/api/v1/user/").header("authorization", "Basic !!")).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (s, _, me) = a.send(a.admin(Method::GET, "/api/v1/user/")).await;
    assert_eq!((s, me["username"].as_str(), me["super_user"].as_bool()), (StatusCode::OK, Some("admin"), Some(true)), "{me}");

    // A body is read only for a caller who is who they say.
    let garbage = || "{\"username\":".to_string();
    let r = a
        .send(a.req(Method::POST, "/api/v1/superuser/users/").basic_auth("admin", Some("nope")).header("content-type", "application/json").body(garbage()))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = a.send(a.admin(Method::POST, "/api/v1/superuser/users/").header("content-type", "application/json").body(garbage())).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (s, _, v) = a.send(a.admin(Method::POST, "/api/v1/superuser/users/").json(&json!({"username": "bob", "password": "bob-password"}))).await;
    assert_eq!((s, v["username"].as_str()), (StatusCode::CREATED, Some("bob")), "{v}");
    assert_error(
        &a.send(a.admin(Method::POST, "/api/v1/superuser/users/").json(&json!({"username": "bob", "password": "bob-password"}))).await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    let (s, _, v) = a.send(a.admin(Method::GET, "/api/v1/superuser/users/")).await;
    assert_eq!((s, v["users"].as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "{v}");
    assert_error(&a.send(a.req(Method::GET, "/api/v1/superuser/users/").basic_auth("bob", Some("bob-password"))).await, StatusCode::FORBIDDEN, "DENIED");

    // A malformed query is refused before the caller is looked at.
    for rb in [a.req(Method::GET, "/api/v1/repository?public=maybe"), a.req(Method::GET, "/api/v1/repository?public=maybe").basic_auth("ann", Some("nope"))] {
        assert_error(&a.send(rb).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // What the in-memory node does not model says so.
    assert_error(&a.send(a.admin(Method::GET, "/api/v1/organization/acme")).await, StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED");
    assert_error(&a.send(a.admin(Method::GET, "/api/v1/no/such/thing")).await, StatusCode::NOT_FOUND, "NOT_FOUND");
    let hook = json!({"event": "repo_push", "method": "webhook", "config": {"url": "http://127.0.0.1:9/"}});
    for rb in [
        a.admin(Method::GET, "/api/v1/repository/acme/app/notification/"),
        a.admin(Method::POST, "/api/v1/repository/acme/app/notification/").json(&hook),
        a.admin(Method::POST, "/api/v1/repository/acme/app/notification/some-uuid/test"),
        a.admin(Method::DELETE, "/api/v1/organization/acme/notifications/some-uuid"),
    ] {
        let r = a.send(rb).await;
        assert_error(&r, StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED");
        assert!(r.2["errors"][0]["message"].as_str().is_some_and(|m| m.contains("notifications")), "{}", r.2);
    }
}

#[tokio::test]
async fn the_cluster_api_is_for_administrators() {
    let a = Api::new().await;
    let r = a.send(a.req(Method::GET, "/health")).await;
    assert_eq!(r.0, StatusCode::OK);
    assert_error(&a.send(a.req(Method::GET, "/api/v1/cluster/status")).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let ann = a.send(a.req(Method::GET, "/api/v1/cluster/status").basic_auth("ann", Some("ann-password"))).await;
    assert_error(&ann, StatusCode::FORBIDDEN, "DENIED");
    assert_error(&a.send(a.admin(Method::GET, "/api/v1/cluster/status")).await, StatusCode::NOT_IMPLEMENTED, "UNSUPPORTED");
    let bad = a.send(a.admin(Method::POST, "/api/v1/drill/isolate").json(&json!({"duration_ms": 5}))).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_error(&a.send(a.admin(Method::DELETE, "/api/v1/cluster/nodes/x")).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    // The region drill: administrators only, and its duration bounded
    // before anything else is asked of the cluster.
    let drill = json!({"region": "eu", "duration_ms": 5_000});
    assert_error(&a.send(a.req(Method::POST, "/api/v1/drill/region").json(&drill)).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let ann = a.send(a.req(Method::POST, "/api/v1/drill/region").basic_auth("ann", Some("ann-password")).json(&drill)).await;
    assert_error(&ann, StatusCode::FORBIDDEN, "DENIED");
    let ann = a.send(a.req(Method::DELETE, "/api/v1/drill/region/eu").basic_auth("ann", Some("ann-password"))).await;
    assert_error(&ann, StatusCode::FORBIDDEN, "DENIED");
    let short = a.send(a.admin(Method::POST, "/api/v1/drill/region").json(&json!({"region": "eu", "duration_ms": 5}))).await;
    assert_error(&short, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}
