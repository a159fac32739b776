//! The spec's checks that hold for any registry, each against a client
//! logged in as an administrator of a registry with nothing in it: the
//! same check for the in-memory node (`gateway/tests/registry_spec.rs`)
//! and a real cluster (`node/tests/registry_spec.rs`).

use berth_common::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::*;

pub async fn blob_uploads_monolithic_post_put_and_chunked(r: &Reg) {
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

pub async fn upload_refusals_change_nothing(r: &Reg) {
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

pub async fn cross_repository_mount(r: &Reg) {
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

pub async fn tags_catalog_paging_and_deletes(r: &Reg) {
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

pub async fn referrers_and_subject(r: &Reg) {
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
