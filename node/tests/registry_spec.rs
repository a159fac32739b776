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
use berth_gateway::testing::spec;
use common::http::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

async fn cluster() -> (Cluster, Vec<Reg>) {
    let c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], Duration::from_secs(20)).await;
    let regs = c.nodes.values().map(reg).collect();
    (c, regs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_uploads_monolithic_post_put_and_chunked() {
    let (_c, r) = cluster().await;
    spec::blob_uploads_monolithic_post_put_and_chunked(&r[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_refusals_change_nothing() {
    let (_c, r) = cluster().await;
    spec::upload_refusals_change_nothing(&r[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_repository_mount() {
    let (_c, r) = cluster().await;
    spec::cross_repository_mount(&r[0]).await;
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
    spec::tags_catalog_paging_and_deletes(&r[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_and_subject() {
    let (_c, r) = cluster().await;
    spec::referrers_and_subject(&r[0]).await;
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
    let r: Vec<Reg> = c.nodes.values().map(reg).collect();
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
    let reg = reg(c.node(1));
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
    let owner = reg(c.node(owner_id));
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
