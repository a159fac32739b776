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
use berth_gateway::testing::MemoryNode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ADMIN_PASSWORD: &str = "admin-password";

type Resp = (StatusCode, reqwest::header::HeaderMap, Vec<u8>);

/// A client of one in-memory node, logged in as admin.
struct Reg {
    base: String,
    http: reqwest::Client,
}

impl Reg {
    async fn new() -> Reg {
        let node = MemoryNode::new(ADMIN_PASSWORD);
        Reg { base: node.serve().await.unwrap(), http: reqwest::Client::new() }
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) };
        self.http.request(method, url).basic_auth("admin", Some(ADMIN_PASSWORD))
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.bytes().await.unwrap().to_vec())
    }

    /// Pushes a blob in one request; returns its digest.
    async fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let (s, h, _) = self.send(self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}")).body(bytes.to_vec())).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(h["docker-content-digest"], d.to_string().as_str());
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.send(self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}")).header("content-type", media_type).body(body.to_vec())).await
    }

    /// A config and one layer pushed, and an OCI manifest for them.
    async fn image(&self, repo: &str, seed: &str) -> Vec<u8> {
        let config = self.blob(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes()).await;
        let layer = self.blob(repo, format!("layer {seed}").as_bytes()).await;
        manifest_json(&config, 2 + seed.len() as u64 + 10, &[(layer, 6 + seed.len() as u64)], None, None)
    }

    async fn status_of(&self, method: Method, path: &str) -> StatusCode {
        self.send(self.req(method, path)).await.0
    }
}

fn manifest_json(config: &Digest, config_size: u64, layers: &[(Digest, u64)], subject: Option<(&Digest, u64)>, artifact_type: Option<&str>) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        v["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s});
    }
    if let Some(a) = artifact_type {
        v["artifactType"] = json!(a);
        v["annotations"] = json!({"org.example.kind": a});
    }
    serde_json::to_vec(&v).unwrap()
}

/// A HEAD response carries no body: only the status tells.
fn assert_head_error(resp: &Resp, status: StatusCode) {
    assert_eq!(resp.0, status);
    assert!(resp.2.is_empty());
}

/// Asserts an error response: status and the spec's JSON with `code`.
fn assert_error(resp: &Resp, status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "body: {}", String::from_utf8_lossy(&resp.2));
    let v: Value = serde_json::from_slice(&resp.2).unwrap_or_else(|e| panic!("error body is JSON ({e}): {}", String::from_utf8_lossy(&resp.2)));
    assert_eq!(v["errors"][0]["code"], code, "{v}");
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {v}");
}

#[tokio::test]
async fn base_endpoint_and_authentication() {
    let r = Reg::new().await;
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
    let r = &Reg::new().await;
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

#[tokio::test]
async fn upload_refusals_change_nothing() {
    let r = &Reg::new().await;
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

#[tokio::test]
async fn cross_repository_mount() {
    let r = &Reg::new().await;
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

#[tokio::test]
async fn tags_catalog_paging_and_deletes() {
    let r = &Reg::new().await;
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

#[tokio::test]
async fn referrers_and_subject() {
    let r = &Reg::new().await;
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

#[tokio::test]
async fn suffix_ranges_serve_the_last_bytes() {
    let r = &Reg::new().await;
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
    let r = &Reg::new().await;
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
    let r = &Reg::new().await;
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
    let r = &Reg::new().await;
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
