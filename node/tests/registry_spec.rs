//! The OCI distribution API, endpoint by endpoint and error by error,
//! written from the spec's text, against a real 3-node cluster on loopback.
//! Every refusal checks the status, the error code, and that nothing changed.
//!
//! The HTTP shape alone (challenges, `Range` and `Content-Range` parsing,
//! references no manifest can have, which scope a request needs) is
//! checked in milliseconds against the gateway's in-memory node, in
//! `gateway/tests/registry_spec.rs`. What stays here needs the node's own
//! rules: its digest checks, upload sessions, tag and referrer indexes,
//! forwarding, quorum and the usage log; the tests that also check shape
//! run there too, against the in-memory node.

mod common;

use std::time::Duration;

use berth_common::Digest;
use common::http::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A HEAD response carries no body: only the status tells.
fn assert_head_error(resp: &(StatusCode, reqwest::header::HeaderMap, Vec<u8>), status: StatusCode) {
    assert_eq!(resp.0, status);
    assert!(resp.2.is_empty());
}

/// Asserts an error response: status and the spec's JSON with `code`.
fn assert_error(resp: &(StatusCode, reqwest::header::HeaderMap, Vec<u8>), status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "body: {}", String::from_utf8_lossy(&resp.2));
    let v: Value = serde_json::from_slice(&resp.2).unwrap_or_else(|e| panic!("error body is JSON ({e}): {}", String::from_utf8_lossy(&resp.2)));
    assert_eq!(v["errors"][0]["code"], code, "{v}");
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {v}");
}

async fn cluster() -> (Cluster, Vec<Reg>) {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], Duration::from_secs(20)).await;
    let regs = c.nodes.values().map(Reg::new).collect();
    (c, regs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_uploads_monolithic_post_put_and_chunked() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    // Monolithic: POST ?digest=.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = r.blob("lib/app", &data).await;
    let (s, h, _) = r.send(r.req(Method::HEAD, &format!("/v2/lib/app/blobs/{d}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["docker-content-digest"], d.to_string().as_str());
    let (s, _, body) = r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{d}"))).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, data.as_slice()));
    // Ranges.
    let (s, h, body) = r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{d}")).header("range", "bytes=10-19")).await;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[10..20]);
    assert_eq!(h["content-range"], format!("bytes 10-19/{}", data.len()).as_str());
    let (s, _, body) = r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{d}")).header("range", "bytes=99990-")).await;
    assert_eq!((s, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &data[99_990..]));
    let bad = r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{d}")).header("range", "bytes=100000-")).await;
    assert_error(&bad, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");

    // POST then PUT with the whole body.
    let (s, h, _) = r.send(r.req(Method::POST, "/v2/lib/app/blobs/uploads/")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let loc = h["location"].to_str().unwrap().to_string();
    assert!(h.contains_key("docker-upload-uuid") && h.contains_key("oci-chunk-min-length"));
    let small = b"put in one go".to_vec();
    let ds = Digest::sha256_of(&small);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let (s, h, _) = r.send(r.req(Method::PUT, &format!("{loc}{sep}digest={ds}")).body(small.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["location"], format!("/v2/lib/app/blobs/{ds}").as_str());

    // Chunked with Content-Range, status, out-of-order and repeated chunks.
    let (_, h, _) = r.send(r.req(Method::POST, "/v2/lib/app/blobs/uploads/")).await;
    let loc = h["location"].to_str().unwrap().to_string();
    let whole: Vec<u8> = (0..30u8).collect();
    let (s, h, _) = r.send(r.req(Method::PATCH, &loc).header("content-range", "0-9").body(whole[..10].to_vec())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(h["range"], "0-9");
    let (s, h, _) = r.send(r.req(Method::GET, &loc)).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-9"));
    let ooo = r.send(r.req(Method::PATCH, &loc).header("content-range", "15-19").body(whole[15..20].to_vec())).await;
    assert_error(&ooo, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    let again = r.send(r.req(Method::PATCH, &loc).header("content-range", "0-9").body(whole[..10].to_vec())).await;
    assert_error(&again, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    let (_, h, _) = r.send(r.req(Method::GET, &loc)).await;
    assert_eq!(h["range"], "0-9", "refused chunks changed nothing");
    let bad_cr = r.send(r.req(Method::PATCH, &loc).header("content-range", "ten-twenty").body(vec![1])).await;
    assert_error(&bad_cr, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID");
    // A chunk without Content-Range (docker streams like this).
    let (s, h, _) = r.send(r.req(Method::PATCH, &loc).body(whole[10..20].to_vec())).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::ACCEPTED, "0-19"));
    let dw = Digest::sha256_of(&whole);
    let (s, _, _) = r.send(r.req(Method::PUT, &format!("{loc}?digest={dw}")).body(whole[20..].to_vec())).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, _, body) = r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{dw}"))).await;
    assert_eq!(body, whole);
    // The finished session is gone.
    assert_error(&r.send(r.req(Method::GET, &loc)).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");

    // sha512.
    use sha2::Digest as _;
    let d512: Digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"five twelve"))).parse().unwrap();
    let (s, _, _) = r.send(r.req(Method::POST, &format!("/v2/lib/app/blobs/uploads/?digest={d512}")).body(b"five twelve".to_vec())).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(r.send(r.req(Method::GET, &format!("/v2/lib/app/blobs/{d512}"))).await.2, b"five twelve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_refusals_change_nothing() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    // Monolithic with a wrong digest.
    let claimed = Digest::sha256_of(b"claimed");
    let resp = r.send(r.req(Method::POST, &format!("/v2/lib/x/blobs/uploads/?digest={claimed}")).body(b"actual".to_vec())).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_head_error(&r.send(r.req(Method::HEAD, &format!("/v2/lib/x/blobs/{claimed}"))).await, StatusCode::NOT_FOUND);
    // Final PUT with a wrong digest.
    let (_, h, _) = r.send(r.req(Method::POST, "/v2/lib/x/blobs/uploads/")).await;
    let loc = h["location"].to_str().unwrap().to_string();
    let resp = r.send(r.req(Method::PUT, &format!("{loc}?digest={claimed}")).body(b"actual".to_vec())).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_head_error(&r.send(r.req(Method::HEAD, &format!("/v2/lib/x/blobs/{claimed}"))).await, StatusCode::NOT_FOUND);
    // Malformed digests.
    assert_error(
        &r.send(r.req(Method::POST, "/v2/lib/x/blobs/uploads/?digest=sha256:xyz").body(b"a".to_vec())).await,
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    );
    assert_error(&r.send(r.req(Method::GET, "/v2/lib/x/blobs/md5:abc")).await, StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // A final PUT without ?digest.
    let (_, h, _) = r.send(r.req(Method::POST, "/v2/lib/x/blobs/uploads/")).await;
    let loc = h["location"].to_str().unwrap().to_string();
    assert_error(&r.send(r.req(Method::PUT, &loc).body(b"a".to_vec())).await, StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    // Cancel, then every use of the session is unknown.
    assert_eq!(r.status_of(Method::DELETE, &loc).await, StatusCode::NO_CONTENT);
    assert_error(&r.send(r.req(Method::GET, &loc)).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&r.send(r.req(Method::PATCH, &loc).body(b"x".to_vec())).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&r.send(r.req(Method::DELETE, &loc)).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    // Ids that name no session at all.
    assert_error(&r.send(r.req(Method::GET, "/v2/lib/x/blobs/uploads/not-an-id")).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&r.send(r.req(Method::GET, &format!("/v2/lib/x/blobs/uploads/1-{}", "0".repeat(32)))).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    // A session is bound to its repository.
    let (_, h, _) = r.send(r.req(Method::POST, "/v2/lib/x/blobs/uploads/")).await;
    let id = h["docker-upload-uuid"].to_str().unwrap().to_string();
    assert_error(&r.send(r.req(Method::GET, &format!("/v2/lib/other/blobs/uploads/{id}"))).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    // A Content-Range that announces more than the body holds cancels the session.
    let resp = r.send(r.req(Method::PATCH, &format!("/v2/lib/x/blobs/uploads/{id}")).header("content-range", "0-99").body(vec![0u8; 10])).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");
    // Nothing of all that reached the repository.
    assert_error(&r.send(r.req(Method::GET, "/v2/lib/x/tags/list")).await, StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_repository_mount() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    let d = r.blob("src/repo", b"shared layer").await;
    let (s, h, _) = r.send(r.req(Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["location"], format!("/v2/dst/repo/blobs/{d}").as_str());
    assert_eq!(r.send(r.req(Method::GET, &format!("/v2/dst/repo/blobs/{d}"))).await.2, b"shared layer");
    // Cannot mount (not in `from`): a fresh session instead.
    let missing = Digest::sha256_of(b"nowhere");
    let (s, h, _) = r.send(r.req(Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo"))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(h["location"].to_str().unwrap().contains("/blobs/uploads/"));
    assert_head_error(&r.send(r.req(Method::HEAD, &format!("/v2/dst/repo/blobs/{missing}"))).await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_push_pull_and_refusals() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    let m = r.image("lib/img", "one").await;
    let dm = Digest::sha256_of(&m);
    let (s, h, _) = r.put_manifest("lib/img", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["docker-content-digest"], dm.to_string().as_str());
    assert_eq!(h["location"], format!("/v2/lib/img/manifests/{dm}").as_str());
    for reference in ["v1".to_string(), dm.to_string()] {
        let (s, h, body) = r.send(r.req(Method::GET, &format!("/v2/lib/img/manifests/{reference}")).header("accept", OCI_MANIFEST)).await;
        assert_eq!((s, body.as_slice()), (StatusCode::OK, m.as_slice()));
        assert_eq!(h["content-type"], OCI_MANIFEST);
        assert_eq!(h["docker-content-digest"], dm.to_string().as_str());
        let (s, h, body) = r.send(r.req(Method::HEAD, &format!("/v2/lib/img/manifests/{reference}"))).await;
        assert_eq!((s, body.len()), (StatusCode::OK, 0));
        assert_eq!(h["content-length"], m.len().to_string().as_str());
    }
    // By digest: the right one is accepted, a wrong one refused.
    let m2 = r.image("lib/img", "two").await;
    let d2 = Digest::sha256_of(&m2);
    assert_eq!(r.put_manifest("lib/img", &d2.to_string(), OCI_MANIFEST, &m2).await.0, StatusCode::CREATED);
    let wrong = r.put_manifest("lib/img", &dm.to_string(), OCI_MANIFEST, &m2).await;
    assert_error(&wrong, StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    let before = r.send(r.req(Method::GET, "/v2/lib/img/manifests/v1")).await.2;
    // References a blob that was never pushed.
    let ghost = manifest_json(&Digest::sha256_of(b"no config"), 9, &[], None, None);
    let resp = r.put_manifest("lib/img", "v1", OCI_MANIFEST, &ghost).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    // Oversized.
    let mut huge = m.clone();
    huge.extend(std::iter::repeat_n(b' ', 4 << 20));
    assert_error(&r.put_manifest("lib/img", "v1", OCI_MANIFEST, &huge).await, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    // Malformed JSON, wrong Content-Type, unknown media type.
    assert_error(&r.put_manifest("lib/img", "v1", OCI_MANIFEST, b"{\"schemaVersion\":").await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert_error(&r.put_manifest("lib/img", "v1", DOCKER_MANIFEST, &m).await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert_error(&r.put_manifest("lib/img", "v1", "text/plain", br#"{"schemaVersion":2}"#).await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    // An invalid tag and an invalid name.
    assert_error(&r.put_manifest("lib/img", "-bad-tag", OCI_MANIFEST, &m).await, StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    assert_error(&r.put_manifest("Lib/Img", "v1", OCI_MANIFEST, &m).await, StatusCode::BAD_REQUEST, "NAME_INVALID");
    assert_eq!(r.send(r.req(Method::GET, "/v2/lib/img/manifests/v1")).await.2, before, "refused pushes did not move the tag");

    // Unknown things.
    assert_error(&r.send(r.req(Method::GET, "/v2/lib/img/manifests/nope")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_error(&r.send(r.req(Method::GET, &format!("/v2/lib/img/manifests/{}", Digest::sha256_of(b"?")))).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_error(&r.send(r.req(Method::GET, "/v2/no/such/manifests/v1")).await, StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    for bad in ["/v2/../etc/manifests/v1", "/v2/a//b/manifests/v1", &format!("/v2/{}/manifests/v1", "a".repeat(256))] {
        let resp = r.send(r.req(Method::GET, bad)).await;
        assert!(resp.0 == StatusCode::BAD_REQUEST || resp.0 == StatusCode::NOT_FOUND, "{bad}: {}", resp.0);
    }
    assert_error(&r.send(r.req(Method::GET, "/v2/a//b/manifests/v1")).await, StatusCode::BAD_REQUEST, "NAME_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_manifests_indexes_and_lists() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    let config = r.blob("multi/arch", b"{\"architecture\":\"amd64\"}").await;
    let layer = r.blob("multi/arch", b"amd64 layer").await;
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 24},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 11}],
    }))
    .unwrap();
    let dd = Digest::sha256_of(&docker);
    assert_eq!(r.put_manifest("multi/arch", &dd.to_string(), DOCKER_MANIFEST, &docker).await.0, StatusCode::CREATED);
    let oci = manifest_json(&config, 24, &[(layer.clone(), 11)], None, None);
    let doci = Digest::sha256_of(&oci);
    assert_eq!(r.put_manifest("multi/arch", &doci.to_string(), OCI_MANIFEST, &oci).await.0, StatusCode::CREATED);

    let list = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": dd.to_string(), "size": docker.len(), "platform": {"architecture": "amd64", "os": "linux"}}]}))
    .unwrap();
    assert_eq!(r.put_manifest("multi/arch", "list", DOCKER_LIST, &list).await.0, StatusCode::CREATED);
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": doci.to_string(), "size": oci.len(), "platform": {"architecture": "arm64", "os": "linux"}}]}))
    .unwrap();
    assert_eq!(r.put_manifest("multi/arch", "index", OCI_INDEX, &index).await.0, StatusCode::CREATED);
    let (_, h, body) = r.send(r.req(Method::GET, "/v2/multi/arch/manifests/index")).await;
    assert_eq!((h["content-type"].to_str().unwrap(), body), (OCI_INDEX, index.clone()));
    // Children are served through the blob endpoint too (containerd fetches them so).
    assert_eq!(r.send(r.req(Method::GET, &format!("/v2/multi/arch/blobs/{doci}"))).await.2, oci);

    // An index whose child is not in the repository.
    let orphan = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": Digest::sha256_of(b"absent").to_string(), "size": 3}]}))
    .unwrap();
    assert_error(&r.put_manifest("multi/arch", "orphan", OCI_INDEX, &orphan).await, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_error(&r.send(r.req(Method::GET, "/v2/multi/arch/manifests/orphan")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_catalog_paging_and_deletes() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    let m = r.image("page/repo", "p").await;
    let dm = Digest::sha256_of(&m);
    for t in ["e", "a", "d", "b", "c"] {
        assert_eq!(r.put_manifest("page/repo", t, OCI_MANIFEST, &m).await.0, StatusCode::CREATED);
    }
    let list =
        |v: &[u8]| serde_json::from_slice::<Value>(v).unwrap()["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (_, h, body) = r.send(r.req(Method::GET, "/v2/page/repo/tags/list")).await;
    assert_eq!(list(&body), ["a", "b", "c", "d", "e"]);
    assert!(!h.contains_key("link"));
    let (_, h, body) = r.send(r.req(Method::GET, "/v2/page/repo/tags/list?n=2")).await;
    assert_eq!(list(&body), ["a", "b"]);
    assert_eq!(h["link"], "</v2/page/repo/tags/list?n=2&last=b>; rel=\"next\"");
    let (_, _, body) = r.send(r.req(Method::GET, "/v2/page/repo/tags/list?n=2&last=b")).await;
    assert_eq!(list(&body), ["c", "d"]);
    let (_, h, body) = r.send(r.req(Method::GET, "/v2/page/repo/tags/list?n=2&last=d")).await;
    assert_eq!(list(&body), ["e"]);
    assert!(!h.contains_key("link"));
    assert_error(&r.send(r.req(Method::GET, "/v2/page/repo/tags/list?n=x")).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_error(&r.send(r.req(Method::GET, "/v2/page/none/tags/list")).await, StatusCode::NOT_FOUND, "NAME_UNKNOWN");

    for n in ["page/a2", "page/a1"] {
        r.image(n, n).await;
        let m = r.image(n, n).await;
        r.put_manifest(n, "t", OCI_MANIFEST, &m).await;
    }
    let (_, h, body) = r.send(r.req(Method::GET, "/v2/_catalog?n=2")).await;
    let repos: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(repos["repositories"], json!(["page/a1", "page/a2"]));
    assert_eq!(h["link"], "</v2/_catalog?n=2&last=page/a2>; rel=\"next\"");
    let (_, _, body) = r.send(r.req(Method::GET, "/v2/_catalog?n=2&last=page/a2")).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["repositories"], json!(["page/repo"]));

    // Tag delete, then manifest delete (which takes its other tags along).
    assert_eq!(r.status_of(Method::DELETE, "/v2/page/repo/manifests/a").await, StatusCode::ACCEPTED);
    assert_error(&r.send(r.req(Method::GET, "/v2/page/repo/manifests/a")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(r.status_of(Method::GET, "/v2/page/repo/manifests/b").await, StatusCode::OK);
    assert_eq!(r.status_of(Method::DELETE, &format!("/v2/page/repo/manifests/{dm}")).await, StatusCode::ACCEPTED);
    assert_error(&r.send(r.req(Method::GET, &format!("/v2/page/repo/manifests/{dm}"))).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_eq!(list(&r.send(r.req(Method::GET, "/v2/page/repo/tags/list")).await.2), Vec::<String>::new());
    assert_error(&r.send(r.req(Method::DELETE, &format!("/v2/page/repo/manifests/{dm}"))).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    assert_error(&r.send(r.req(Method::DELETE, "/v2/page/repo/manifests/zzz")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // Blob delete.
    let d = r.blob("page/repo", b"to delete").await;
    assert_eq!(r.status_of(Method::DELETE, &format!("/v2/page/repo/blobs/{d}")).await, StatusCode::ACCEPTED);
    assert_head_error(&r.send(r.req(Method::HEAD, &format!("/v2/page/repo/blobs/{d}"))).await, StatusCode::NOT_FOUND);
    assert_error(&r.send(r.req(Method::DELETE, &format!("/v2/page/repo/blobs/{d}"))).await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    // A method an endpoint lacks.
    let resp = r.send(r.req(Method::POST, "/v2/page/repo/tags/list")).await;
    assert_error(&resp, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_and_subject() {
    let (_c, r) = cluster().await;
    let r = &r[0];
    let m = r.image("sig/app", "subject").await;
    let dm = Digest::sha256_of(&m);
    r.put_manifest("sig/app", "v1", OCI_MANIFEST, &m).await;
    let empty = r.blob("sig/app", b"{}").await;
    let sig = manifest_json(&empty, 2, &[], Some((&dm, m.len() as u64)), Some("application/vnd.example.signature"));
    let sbom = manifest_json(&empty, 2, &[], Some((&dm, m.len() as u64)), Some("application/vnd.example.sbom"));
    let (s, h, _) = r.put_manifest("sig/app", &Digest::sha256_of(&sig).to_string(), OCI_MANIFEST, &sig).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(h["oci-subject"], dm.to_string().as_str());
    r.put_manifest("sig/app", &Digest::sha256_of(&sbom).to_string(), OCI_MANIFEST, &sbom).await;

    let (s, h, body) = r.send(r.req(Method::GET, &format!("/v2/sig/app/referrers/{dm}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], OCI_INDEX);
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    let (_, h, body) = r.send(r.req(Method::GET, &format!("/v2/sig/app/referrers/{dm}?artifactType=application/vnd.example.sbom"))).await;
    assert_eq!(h["oci-filters-applied"], "artifactType");
    let idx: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(idx["manifests"][0]["digest"], Digest::sha256_of(&sbom).to_string());
    assert_eq!(idx["manifests"][0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(idx["manifests"][0]["annotations"]["org.example.kind"], "application/vnd.example.sbom");
    // A subject that is not (yet) there: the referrer is accepted, the list is empty for others.
    let absent = Digest::sha256_of(b"later");
    let early = manifest_json(&empty, 2, &[], Some((&absent, 5)), Some("application/vnd.example.signature"));
    assert_eq!(r.put_manifest("sig/app", &Digest::sha256_of(&early).to_string(), OCI_MANIFEST, &early).await.0, StatusCode::CREATED);
    let (_, _, body) = r.send(r.req(Method::GET, &format!("/v2/sig/app/referrers/{}", Digest::sha256_of(b"other")))).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["manifests"], json!([]));
    // Deleting a referrer takes it out of the list.
    r.send(r.req(Method::DELETE, &format!("/v2/sig/app/manifests/{}", Digest::sha256_of(&sig)))).await;
    let (_, _, body) = r.send(r.req(Method::GET, &format!("/v2/sig/app/referrers/{dm}"))).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_forwarded_to_the_node_that_owns_them_and_images_are_known_everywhere() {
    let (mut c, r) = cluster().await;
    // POST on node 1, PATCH on node 2, status on node 3, PUT on node 2.
    let (s, h, _) = r[0].send(r[0].req(Method::POST, "/v2/lb/app/blobs/uploads/")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let path = h["location"].to_str().unwrap().to_string();
    let data = vec![42u8; 300_000];
    let (s, h, _) = r[1].send(r[1].req(Method::PATCH, &path).header("content-range", "0-199999").body(data[..200_000].to_vec())).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::ACCEPTED, "0-199999"));
    let (s, h, _) = r[2].send(r[2].req(Method::GET, &path)).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-199999"));
    let d = Digest::sha256_of(&data);
    let (s, _, _) = r[1].send(r[1].req(Method::PUT, &format!("{path}?digest={d}")).body(data[200_000..].to_vec())).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(r[0].send(r[0].req(Method::GET, &format!("/v2/lb/app/blobs/{d}"))).await.2 == data, "the owner stored it");

    // A manifest pushed through node 1 is known through the others at once.
    let m = r[0].image("lb/app", "x").await;
    let (s, _, _) = r[0].put_manifest("lb/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(s, StatusCode::CREATED);
    for reg in &r[1..] {
        assert_eq!(reg.status_of(Method::HEAD, "/v2/lb/app/manifests/v1").await, StatusCode::OK);
    }
    // A blob held only by node 1 is streamed through node 3 from its holder
    // (before or after background replication, whichever comes first).
    let (s, _, body) = r[2].send(r[2].req(Method::GET, &format!("/v2/lb/app/blobs/{d}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body == data, "node 3 served the bytes node 1 stored");

    // Every node restarts: the image is still served.
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &ids {
        c.stop(*id).await;
    }
    for id in &ids {
        c.restart(*id).await;
    }
    c.wait_leader(Duration::from_secs(20)).await;
    let r: Vec<Reg> = c.nodes.values().map(Reg::new).collect();
    for reg in &r {
        let (s, _, body) = reg.send(reg.req(Method::GET, "/v2/lb/app/manifests/v1")).await;
        assert_eq!((s, body), (StatusCode::OK, m.clone()));
    }
    assert!(r[0].send(r[0].req(Method::GET, &format!("/v2/lb/app/blobs/{d}"))).await.2 == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_without_quorum_is_a_503_with_a_message_and_changes_nothing() {
    let mut c = Cluster::new(3, berth_raft::MetaConfig { write_timeout_ms: 2_000, ..fast_config() }).await;
    c.wait_voters(&[1, 2, 3], Duration::from_secs(20)).await;
    let reg = Reg::new(c.node(1));
    let m = reg.image("q/app", "q").await;
    // Let the blobs reach a second node, so what fails below is the quorum.
    let man: Value = serde_json::from_slice(&m).unwrap();
    let mut blobs = vec![man["config"]["digest"].as_str().unwrap().parse::<Digest>().unwrap()];
    blobs.extend(man["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().parse::<Digest>().unwrap()));
    // Node 1 knows it from the blobs' records, which the copies make once stored.
    for d in &blobs {
        eventually(Duration::from_secs(20), &format!("node 1 knows node 2 holds {d}"), || async {
            let rec: Option<berth_raft::command::BlobRecord> = berth_raft::StateRead::get(&c.node(1).meta.state(), &berth_raft::state::keys::blob(d)).unwrap();
            rec.is_some_and(|r| r.holders.contains(&2))
        })
        .await;
    }
    let ids: Vec<u64> = c.nodes.keys().copied().filter(|i| *i != 1).collect();
    for id in ids {
        c.stop(id).await;
    }
    let resp = reg.put_manifest("q/app", "v1", OCI_MANIFEST, &m).await;
    assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(String::from_utf8_lossy(&resp.2).contains("metadata"), "the message says the metadata is unavailable: {}", String::from_utf8_lossy(&resp.2));
    // Pulls of what is local keep working without a quorum.
    assert_eq!(reg.status_of(Method::GET, "/v2/").await, StatusCode::OK);
    // The blobs' upload created the repository; the refused manifest is not in it.
    assert_error(&reg.send(reg.req(Method::GET, "/v2/q/app/manifests/v1")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_deletes_are_in_the_usage_log() {
    let (c, r) = cluster().await;
    let r = &r[0];
    let m = r.image("lib/audited", "a").await;
    assert_eq!(r.put_manifest("lib/audited", "v1", OCI_MANIFEST, &m).await.0, StatusCode::CREATED);
    let d = r.blob("lib/audited", b"short-lived").await;
    assert_eq!(r.status_of(Method::DELETE, &format!("/v2/lib/audited/blobs/{d}")).await, StatusCode::ACCEPTED);
    // A refused delete is no delete.
    let ghost = Digest::sha256_of(b"never here");
    assert_eq!(r.status_of(Method::DELETE, &format!("/v2/lib/audited/blobs/{ghost}")).await, StatusCode::NOT_FOUND);
    // Every record of both deletes (had the refused one made one) is
    // committed and seen everywhere once the queues are flushed.
    c.flush_audit().await;
    let (s, _, body) = r.send(r.req(Method::GET, "/api/v1/repository/lib/audited/logs?kind=delete_blob")).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let logs = v["logs"].as_array().unwrap().clone();
    assert_eq!(logs.len(), 1, "one record, for the delete that happened: {logs:?}");
    let rec = &logs[0];
    assert_eq!((rec["performer"]["name"].as_str(), rec["repository"].as_str()), (Some("admin"), Some("lib/audited")), "{rec}");
    assert_eq!(rec["metadata"]["digest"], d.to_string(), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_uploads_carry_a_grant_not_the_clients_credentials() {
    let (mut c, r) = cluster().await;
    // Node 4 owns the session; the others reach its HTTP through a tap.
    let tap = Tap::start().await;
    let owner_id = c.add_node_advertising("region-1", Some(format!("http://{}", tap.addr))).await;
    tap.point_at(c.node(owner_id).http_addr);
    let owner = Reg::new(c.node(owner_id));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for id in [1, 2] {
        while berth_raft::StateRead::get::<berth_raft::command::NodeRecord>(&c.node(id).meta.state(), &berth_raft::state::keys::node(owner_id))
            .unwrap()
            .is_none()
        {
            assert!(std::time::Instant::now() < deadline, "node {id} never learned of node {owner_id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let (s, h, _) = owner.send(owner.req(Method::POST, "/v2/fwd/app/blobs/uploads/")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let path = h["location"].to_str().unwrap().to_string();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let (s, h, _) = r[0].send(r[0].req(Method::PATCH, &path).header("content-range", "0-59999").body(data[..60_000].to_vec())).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::ACCEPTED, "0-59999"));
    let (s, h, _) = r[1].send(r[1].req(Method::GET, &path)).await;
    assert_eq!((s, h["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-59999"));
    let d = Digest::sha256_of(&data);
    let (s, _, body) = r[0].send(r[0].req(Method::PUT, &format!("{path}?digest={d}")).body(data[60_000..].to_vec())).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    assert!(owner.send(owner.req(Method::GET, &format!("/v2/fwd/app/blobs/{d}"))).await.2 == data, "the owner stored it");

    let sent = tap.sent();
    for m in ["PATCH", "GET", "PUT"] {
        assert!(sent.contains(&format!("{m} {path}")), "the {m} went through the tap");
    }
    let lower = sent.to_ascii_lowercase();
    assert!(!lower.contains("\r\nauthorization:"), "no client credential crossed plain HTTP");
    let grant = lower
        .split("\r\n")
        .find_map(|l| l.strip_prefix("x-berth-upload-grant: "))
        .map(|g| sent[lower.find(g).unwrap()..][..g.len()].to_string())
        .expect("forwarded requests carry a grant");

    // A grant read on the wire is worth its own upload, nothing else.
    let (_, h, _) = owner.send(owner.req(Method::POST, "/v2/fwd/app/blobs/uploads/")).await;
    let other = h["location"].to_str().unwrap().to_string();
    let replay = owner.send(owner.http.patch(format!("{}{other}", owner.base)).header("x-berth-upload-grant", &grant).body(b"evil".to_vec())).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let elsewhere = owner.send(owner.http.get(format!("{}/v2/fwd/app/tags/list", owner.base)).header("x-berth-upload-grant", &grant)).await;
    assert_error(&elsewhere, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let forged = owner.send(owner.http.patch(format!("{}{other}", owner.base)).header("x-berth-upload-grant", "e30.e30.AAAA").body(b"evil".to_vec())).await;
    assert_error(&forged, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(owner.send(owner.req(Method::GET, &other)).await.1["range"], "0-0", "nothing reached the other session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_of_a_repository_that_does_not_exist_spare_the_leader() {
    let (c, r) = cluster().await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let (i, follower) = c.nodes.iter().enumerate().find(|(_, (id, _))| **id != leader).map(|(i, (_, n))| (i, n)).unwrap();
    let reg = &r[i];
    let before = follower.meta.read_barriers();
    for _ in 0..30 {
        let anon = reg.send(reg.http.get(format!("{}/v2/nowhere/app/manifests/latest", reg.base))).await;
        assert_error(&anon, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let spent = follower.meta.read_barriers() - before;
    assert!(spent <= 4, "30 anonymous pulls of a missing repository asked the leader {spent} times");

    // A push through this node is seen by it at once…
    let m = reg.image("nowhere/app", "n").await;
    assert_eq!(reg.put_manifest("nowhere/app", "latest", OCI_MANIFEST, &m).await.0, StatusCode::CREATED);
    assert_eq!(reg.status_of(Method::GET, "/v2/nowhere/app/manifests/latest").await, StatusCode::OK);
    // …and one through another node within the moment a miss is remembered.
    let other = &r[(i + 1) % r.len()];
    assert_error(&reg.send(reg.req(Method::GET, "/v2/nowhere/else/manifests/v1")).await, StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    let m = other.image("nowhere/else", "e").await;
    assert_eq!(other.put_manifest("nowhere/else", "v1", OCI_MANIFEST, &m).await.0, StatusCode::CREATED);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while reg.status_of(Method::GET, "/v2/nowhere/else/manifests/v1").await != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "a repository made through another node stays unknown here");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
