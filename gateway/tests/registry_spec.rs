//! The OCI distribution API's HTTP shape, endpoint by endpoint and error
//! by error, written from the spec's text, against the in-memory node
//! ([`berth_gateway::testing::MemoryNode`]): status codes, headers, the
//! error JSON, paging and `Link`, `Range` and `Content-Range`, challenges
//! and tokens. Every refusal checks the status, the error code, and that
//! nothing changed.
//!
//! What needs a cluster (forwarding, quorum loss, replication, the usage
//! log, the node's manifest rules) is in `node/tests/registry_spec.rs`.
//! The tests here that also exercise a store's own rules (uploads and
//! their refusals, mounts, tags and deletes, referrers) run there too,
//! against the node's store: the same spec, two implementations.

use berth_common::Digest;
use berth_gateway::testing::client::*;
use berth_gateway::testing::{spec, MemoryNode};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-password";

/// A client of a new in-memory node, logged in as admin.
async fn memory() -> Reg {
    let node = MemoryNode::new(ADMIN_PASSWORD);
    Reg::at(node.serve().await.unwrap(), "admin", ADMIN_PASSWORD)
}

#[tokio::test]
async fn base_endpoint_and_authentication() {
    let r = memory().await;
    let (s, h, _) = r.send(r.req(Method::GET, "/v2/")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["docker-distribution-api-version"], "registry/2.0");

    let anon = r.send(r.http.get(format!("{}/v2/", r.base))).await;
    assert_error(&anon, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let challenge = anon.1["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with(&format!("Bearer realm=\"{}/v2/auth\",service=\"", r.base)), "{challenge}");
    let wrong = r.send(r.http.get(format!("{}/v2/", r.base)).basic_auth("admin", Some("nope"))).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let anon_push = r.send(r.http.post(format!("{}/v2/x/blobs/uploads/", r.base))).await;
    assert_error(&anon_push, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert!(anon_push.1["www-authenticate"].to_str().unwrap().ends_with(",scope=\"repository:x:pull,push\""), "{:?}", anon_push.1);
    assert_eq!(r.status_of(Method::GET, "/v2/_catalog").await, StatusCode::OK);
}

#[tokio::test]
async fn blob_uploads_monolithic_post_put_and_chunked() {
    spec::blob_uploads_monolithic_post_put_and_chunked(&memory().await).await;
}

#[tokio::test]
async fn upload_refusals_change_nothing() {
    spec::upload_refusals_change_nothing(&memory().await).await;
}

#[tokio::test]
async fn cross_repository_mount() {
    spec::cross_repository_mount(&memory().await).await;
}

#[tokio::test]
async fn tags_catalog_paging_and_deletes() {
    spec::tags_catalog_paging_and_deletes(&memory().await).await;
}

#[tokio::test]
async fn referrers_and_subject() {
    spec::referrers_and_subject(&memory().await).await;
}

#[tokio::test]
async fn suffix_ranges_serve_the_last_bytes() {
    let r = &memory().await;
    let data: Vec<u8> = (0..2_000u32).map(|i| (i % 251) as u8).collect();
    let d = r.blob("lib/tail", &data).await;
    let (s, h, body) = r.send(r.req(Method::GET, &format!("/v2/lib/tail/blobs/{d}")).header("range", "bytes=-500")).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT, "{}", String::from_utf8_lossy(&body));
    assert!(body == data[1_500..], "the last 500 bytes");
    assert_eq!(h["content-range"], "bytes 1500-1999/2000");
    assert_eq!(h["content-length"], "500");
    // More than the blob holds: all of it.
    let (s, h, body) = r.send(r.req(Method::GET, &format!("/v2/lib/tail/blobs/{d}")).header("range", "bytes=-5000")).await;
    assert_eq!((s, h["content-range"].to_str().unwrap()), (StatusCode::PARTIAL_CONTENT, "bytes 0-1999/2000"));
    assert!(body == data);
    // The last zero bytes are no bytes.
    let none = r.send(r.req(Method::GET, &format!("/v2/lib/tail/blobs/{d}")).header("range", "bytes=-0")).await;
    assert_error(&none, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    // A suffix of a blob that is not there is still BLOB_UNKNOWN.
    let ghost = r.send(r.req(Method::GET, &format!("/v2/lib/tail/blobs/{}", Digest::sha256_of(b"ghost"))).header("range", "bytes=-5")).await;
    assert_error(&ghost, StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn a_reference_no_manifest_can_have_is_manifest_unknown() {
    let r = &memory().await;
    let m = r.image("lib/refs", "r").await;
    assert_eq!(r.put_manifest("lib/refs", "v1", OCI_MANIFEST, &m).await.0, StatusCode::CREATED);
    let path = "/v2/lib/refs/manifests/.INVALID_MANIFEST_NAME";
    assert_error(&r.send(r.req(Method::GET, path)).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_head_error(&r.send(r.req(Method::HEAD, path)).await, StatusCode::NOT_FOUND);
    assert_error(&r.send(r.req(Method::DELETE, path)).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    // Pushing under it is still refused as invalid, and reading it is
    // still authorized first.
    assert_error(&r.put_manifest("lib/refs", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &m).await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    let anon = r.send(r.http.get(format!("{}{path}", r.base))).await;
    assert_error(&anon, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

/// A registry token from the token endpoint, as admin, for `scope`.
async fn admin_token(r: &Reg, scope: &str) -> String {
    let (s, _, body) = r.send(r.req(Method::GET, &format!("/v2/auth?scope={scope}"))).await;
    assert_eq!(s, StatusCode::OK);
    serde_json::from_slice::<Value>(&body).unwrap()["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn upload_status_after_a_refused_chunk_is_a_read() {
    let r = &memory().await;
    let push = admin_token(r, "repository:lib/chunks:pull,push").await;
    let pull = admin_token(r, "repository:lib/chunks:pull").await;
    let (s, h, _) = r.send(r.http.post(format!("{}/v2/lib/chunks/blobs/uploads/", r.base)).bearer_auth(&push)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let loc = format!("{}{}", r.base, h["location"].to_str().unwrap());
    let (s, _, _) = r.send(r.http.patch(&loc).bearer_auth(&push).header("content-range", "0-9").body(vec![7u8; 10])).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let ooo = r.send(r.http.patch(&loc).bearer_auth(&push).header("content-range", "20-29").body(vec![7u8; 10])).await;
    assert_error(&ooo, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    // Reading the status is a read: a pull token does, as in distribution.
    for token in [&pull, &push] {
        let (s, h, body) = r.send(r.http.get(&loc).bearer_auth(token)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&body));
        assert_eq!(h["range"], "0-9");
        assert!(h["location"].to_str().unwrap().ends_with(h["docker-upload-uuid"].to_str().unwrap()));
    }
    let (s, h, _) = r.send(r.http.head(&loc).bearer_auth(&pull)).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-9"));
    // Writing is not: a pull token adds no chunk.
    let refused = r.send(r.http.patch(&loc).bearer_auth(&pull).header("content-range", "10-19").body(vec![7u8; 10])).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "DENIED");
    assert_eq!(r.send(r.http.get(&loc).bearer_auth(&push)).await.1["range"], "0-9");
}

#[tokio::test]
async fn a_content_range_to_u64_max_is_refused_and_the_session_goes_on() {
    let r = &memory().await;
    let (_, h, _) = r.send(r.req(Method::POST, "/v2/lib/huge/blobs/uploads/")).await;
    let loc = h["location"].to_str().unwrap().to_string();
    let resp = r.send(r.req(Method::PATCH, &loc).header("content-range", "0-18446744073709551615").body(vec![1u8; 10])).await;
    assert_error(&resp, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    let (s, h, _) = r.send(r.req(Method::GET, &loc)).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-0"), "nothing was written");
    let data = b"after the refusal".to_vec();
    let (s, _, _) = r.send(r.req(Method::PATCH, &loc).header("content-range", format!("0-{}", data.len() - 1)).body(data.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let d = Digest::sha256_of(&data);
    assert_eq!(r.send(r.req(Method::PUT, &format!("{loc}?digest={d}"))).await.0, StatusCode::CREATED);
}
