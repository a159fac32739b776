//! The cluster CA: its key stays with the voters, nodes without it get
//! what they need signed by a voter, and a rotation moves every node to a
//! new CA while the cluster keeps taking writes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_node::cluster::ca::{CaReply, CaRequest};
use berth_node::config::Layout;
use berth_raft::command::ClusterRecord;
use berth_raft::network::PeerRpc;
use berth_raft::state::keys;
use berth_raft::StateRead;
use common::http::reg;
use common::*;
use reqwest::{Method, StatusCode};

const T: Duration = Duration::from_secs(30);

/// The CA keys a node holds, by fingerprint.
fn keys_held(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Layout::new(dir).ca_keys()) else { return Vec::new() };
    let mut fps: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()?.strip_suffix(".key").map(str::to_string)).collect();
    fps.sort();
    fps
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within {T:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn first_ca(c: &Cluster) -> String {
    let rec: ClusterRecord = c.node(1).meta.state().get(keys::CLUSTER).unwrap().unwrap();
    berth_node::cluster::pki::fingerprint(&rec.ca_cert_pem).unwrap()
}

/// The CA that issued the certificate in a node's data directory.
fn cert_issuer(dir: &Path) -> Option<String> {
    berth_node::cluster::pki::fingerprint_of_issuer_in(&std::fs::read_to_string(Layout::new(dir).node_cert()).unwrap())
}

fn trusted(dir: &Path) -> Vec<String> {
    berth_node::cluster::pki::fingerprints(&std::fs::read_to_string(Layout::new(dir).ca_cert()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ca_key_stays_with_the_voters() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let learner = c.join("region-2", None, 1, true).await;
    let ca = first_ca(&c);

    // Every voter keeps the key (node 1 made it, 2 and 3 fetched it); the
    // learner has none, and no replicated record holds it.
    for id in [1, 2, 3] {
        let dir = c.dirs[&id].clone();
        eventually(&format!("node {id} keeps the CA key"), || keys_held(&dir) == vec![ca.clone()]).await;
    }
    assert!(keys_held(&c.dirs[&learner]).is_empty());
    for n in c.nodes.values() {
        let rec: ClusterRecord = n.meta.state().get(keys::CLUSTER).unwrap().unwrap();
        assert!(rec.ca_key_pem.is_empty(), "node {} has the CA key in its state", n.config.node_id);
    }

    // Asking for it is not enough: a voter gives it to voters only.
    let asked: Result<Result<Vec<u8>, String>, _> = c.node(learner).meta.call_member(1, PeerRpc::Ca, &CaRequest::FetchKey { fingerprint: ca.clone() }, T).await;
    let refusal = asked.unwrap().unwrap_err();
    assert!(refusal.contains("not a voter"), "{refusal}");

    // A join through the learner is relayed to a voter, which signs.
    let joined = c.join("region-3", None, learner, false).await;
    let d = push(c.node(joined), "via/learner", "x", 1).await;
    wait_tag(c.node(learner), "via/learner", "x", &d, T).await;
    assert_eq!(cert_issuer(&c.dirs[&joined]), Some(ca.clone()));
    // The learner's HTTPS certificate comes from a voter too.
    let chain = c.node(learner).meta.call_member::<_, Result<Vec<u8>, String>>(1, PeerRpc::Ca, &sign_server_request(), T).await.unwrap().unwrap();
    let CaReply::Cert(leaf) = berth_raft::wire::from_payload(&chain).unwrap() else { panic!("not a certificate") };
    let ca = c_ca_pem(&c);
    assert_eq!(berth_node::cluster::pki::fingerprint_of_issuer_in(&format!("{leaf}{ca}")), Some(berth_node::cluster::pki::fingerprint(&ca).unwrap()));

    // A voter made a learner gives its key up.
    c.node(1).meta.write(berth_raft::Actor::OPERATOR, berth_raft::MetaCommand::SetNodeRole { node: 3, role: berth_raft::NodeRole::Learner }).await.unwrap();
    let dir3 = c.dirs[&3].clone();
    eventually("the demoted node deletes its key", || keys_held(&dir3).is_empty()).await;
}

fn sign_server_request() -> CaRequest {
    let key = rcgen::KeyPair::generate().unwrap();
    CaRequest::SignServer { public_key_der: rcgen::PublicKeyData::subject_public_key_info(&key) }
}

fn c_ca_pem(c: &Cluster) -> String {
    let rec: ClusterRecord = c.node(1).meta.state().get(keys::CLUSTER).unwrap().unwrap();
    rec.ca_cert_pem
}

async fn rotate(c: &Cluster, via: u64, finish: bool) -> (StatusCode, serde_json::Value) {
    let client = reg(c.node(via));
    let path = if finish { "/api/v1/cluster/ca/rotate/finish" } else { "/api/v1/cluster/ca/rotate" };
    let (status, _, body) = client.send(client.req(Method::POST, path)).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// Pushes through `via` and waits until every running node has the tag.
async fn writes_flow(c: &Cluster, via: u64, tag: &str, n: u64) {
    let d = push(c.node(via), "rotation/repo", tag, n).await;
    for node in c.nodes.values() {
        wait_tag(node, "rotation/repo", tag, &d, T).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_moves_every_node_to_a_new_ca_while_writes_go_on() {
    let mut c = Cluster::new(3, fast_config()).await;
    c.wait_voters(&[1, 2, 3], T).await;
    let learner = c.join("region-2", None, 1, true).await;
    let old = first_ca(&c);
    let dir1 = c.dirs[&1].clone();
    eventually("voters keep the key", || c.dirs.values().take(3).all(|d| keys_held(d) == vec![old.clone()])).await;
    // A certificate from the old CA, kept to try after the rotation.
    let old_tls = Layout::new(&c.dirs[&3]).read_tls().unwrap();

    let (status, body) = rotate(&c, learner, false).await;
    assert_eq!(status, StatusCode::CONFLICT, "a learner holds no key to rotate from: {body}");
    let (status, body) = rotate(&c, 1, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previous"], old.as_str());
    let new = body["signing"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotate(&c, 1, false).await.0, StatusCode::CONFLICT, "one rotation at a time");

    // Every node, the learner included, writes a certificate from the new
    // CA and a bundle of both; every voter keeps both keys.
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    for (id, dir) in c.dirs.clone() {
        let renewed = || {
            let mut bundle = trusted(&dir);
            bundle.sort();
            cert_issuer(&dir).as_deref() == Some(new.as_str()) && bundle == both
        };
        eventually(&format!("node {id} has its new certificate and trusts both CAs"), renewed).await;
        if id != learner {
            eventually(&format!("voter {id} keeps both keys"), || keys_held(&dir).len() == 2).await;
        }
    }
    let (status, body) = rotate(&c, 2, true).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.to_string().contains("previous CA"), "{body}");

    // Restart one node at a time: nodes on the old certificate and nodes on
    // the new one work together all along.
    writes_flow(&c, 1, "before", 1).await;
    for (i, id) in [2, learner, 1, 3].into_iter().enumerate() {
        c.stop(id).await;
        c.restart(id).await;
        c.wait_leader(T).await;
        writes_flow(&c, id, &format!("after-restart-{i}"), 10 + i as u64).await;
    }
    let (status, body) = rotate(&c, 2, true).await;
    let reported = || async {
        let client = reg(c.node(2));
        let (_, _, b) = client.send(client.req(Method::GET, "/api/v1/cluster/ca/status")).await;
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()
    };
    if status != StatusCode::OK {
        // The last restarted node may not have reported yet.
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let s = reported().await;
            if s["nodes"].as_array().unwrap().iter().all(|n| n["running"] == new.as_str()) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "nodes never reported the new CA: {s} (finish said {body})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, body) = rotate(&c, 2, true).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // The old CA is dropped everywhere, and its key from the voters' disks
    // once it is old enough not to be a rotation in progress.
    for (id, dir) in c.dirs.clone() {
        eventually(&format!("node {id} trusts only the new CA"), || trusted(&dir) == vec![new.clone()]).await;
    }
    assert!(keys_held(&dir1).contains(&new));
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for id in ids {
        c.stop(id).await;
        c.restart(id).await;
    }
    c.wait_leader(T).await;
    writes_flow(&c, learner, "after-finish", 99).await;

    // A certificate from the old CA no longer gets a node in.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read_to_string(Layout::new(&dir1).ca_cert()).unwrap()))
        .identity(tonic::transport::Identity::from_pem(&old_tls.cert_pem, &old_tls.key_pem))
        .domain_name(berth_raft::PEER_TLS_NAME);
    let addr = c.node(1).peer_addr.to_string();
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?;
        berth_raft::network::call::<_, Result<(), String>>(channel, &addr, PeerRpc::Elect, &(), T).await.map_err(anyhow::Error::from)
    }
    .await;
    assert!(refused.is_err(), "a certificate from the retired CA was accepted: {refused:?}");
}

/// The operator's path with real processes serving cluster-signed HTTPS:
/// a client that trusts the old CA keeps working through the rotation, and
/// one that trusts only the new CA works from its start.
#[test]
fn the_operator_rotates_the_ca_of_an_https_cluster() {
    use common::procs::*;
    let mut c = ProcCluster::start_with(3, &["--tls-cluster"]);
    let d1 = c.dirs[0].to_str().unwrap().to_string();
    let old_ca = ok(&["cluster", "ca", "export", "--data-dir", &d1]);
    // curl, trusting only `ca`, gets the registry's 401 from every node.
    let ca_file = c.root.path().join("client-ca.pem");
    let answers = |ca: &str| {
        std::fs::write(&ca_file, ca).unwrap();
        c.http.iter().all(|h| {
            let out = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", ca_file.to_str().unwrap()])
                .arg(format!("https://{h}/v2/"))
                .output()
                .expect("run curl");
            out.stdout == b"401"
        })
    };
    assert!(answers(&old_ca));

    let started = ok(&["cluster", "ca", "rotate", "--data-dir", &d1]);
    assert!(started.contains("rotation started"), "{started}");
    let refused = berth(&["cluster", "ca", "rotate", "--finish", "--data-dir", &d1]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("previous CA") && why.trim().lines().count() == 1, "one line saying why: {why}");

    // HTTPS certificates follow the new CA at once; the old CA's clients
    // still get through (the chain links the new CA to the old one).
    // `export --data-dir` reads the node's bundle, written within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bundle = loop {
        let b = ok(&["cluster", "ca", "export", "--data-dir", &d1]);
        if berth_node::cluster::pki::fingerprints(&b).len() == 2 {
            break b;
        }
        assert!(Instant::now() < deadline, "node 1 did not write the two-CA bundle");
        std::thread::sleep(Duration::from_millis(200));
    };
    let new_ca = bundle.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&new_ca) {
        assert!(Instant::now() < deadline, "HTTPS certificates were not renewed under the new CA");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answers(&old_ca));

    let status: serde_json::Value = serde_json::from_str(&ok(&["cluster", "ca", "status", "--json", "--data-dir", &d1])).unwrap();
    let signing = status["signing"].as_str().unwrap().to_string();
    for i in 0..c.procs.len() {
        let dir = c.dirs[i].clone();
        let renewed = || std::fs::read_to_string(Layout::new(&dir).ca_cert()).unwrap() == bundle && cert_issuer(&dir).as_deref() == Some(signing.as_str());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !renewed() {
            assert!(Instant::now() < deadline, "node {} did not write the new trust bundle", i + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
        c.procs[i].terminate();
        c.procs[i] = Proc::start_with(&dir, &["--tls-cluster"]);
        wait_status(&dir, "restarted node back", Duration::from_secs(30), |s| s["leader"].is_u64() && voters(s).len() == 3);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = berth(&["cluster", "ca", "rotate", "--finish", "--data-dir", &d1]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "finish refused: {}\n{}", String::from_utf8_lossy(&out.stderr), node_logs(&c));
        std::thread::sleep(Duration::from_millis(500));
    }
    let status: serde_json::Value = serde_json::from_str(&ok(&["cluster", "ca", "status", "--json", "--data-dir", &d1])).unwrap();
    assert!(status["previous"].is_null(), "{status}");
    assert!(status["nodes"].as_array().unwrap().iter().all(|n| n["running"] == status["signing"]), "{status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok(&["cluster", "ca", "export", "--data-dir", &d1]) != new_ca {
        assert!(Instant::now() < deadline, "node 1 still trusts the previous CA");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answers(&new_ca));
}

/// The end of each node's log, for a failure message.
fn node_logs(c: &common::procs::ProcCluster) -> String {
    let mut out = String::new();
    for d in &c.dirs {
        let log = std::fs::read_to_string(d.with_extension("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        out += &format!("--- {}\n{}\n", d.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    out
}
