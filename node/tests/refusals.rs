//! Every way a join or a peer is refused, each with its one-line reason,
//! and proof that a refusal changes nothing.

mod common;

use std::time::Duration;

use berth_node::cluster::join::{token_record, JoinToken};
use berth_node::runtime::join_cluster;
use berth_raft::command::NodeRecord;
use berth_raft::state::keys;
use berth_raft::{MetaCommand, StateRead};
use common::*;

async fn try_join(c: &Cluster, token: &str) -> anyhow::Result<u64> {
    let (_listeners, mut addrs) = bind_pair().await;
    addrs.region = "edge".into();
    let dir = c.root.path().join(format!("joiner-{}", berth_node::util::random_hex(4)));
    let out = join_cluster(&dir, &addrs, &c.any().peer_addr.to_string(), token, false, fast_config()).await;
    if out.is_err() {
        assert!(!dir.join("berth.toml").exists(), "a refused join leaves no node directory");
    }
    out.map(|cfg| cfg.node_id)
}

fn node_count(c: &Cluster) -> usize {
    c.any().meta.state().scan::<NodeRecord>(keys::NODE_PREFIX).unwrap().len()
}

fn err_line(e: anyhow::Error) -> String {
    let line = format!("{e:#}");
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused_and_change_nothing() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let good = JoinToken::parse(&c.token).unwrap();
    let before = node_count(&c);

    let wrong_secret = JoinToken { secret: "0".repeat(48), ..good.clone() };
    let e = err_line(try_join(&c, &wrong_secret.to_string()).await.unwrap_err());
    assert!(e.contains("join token secret is wrong"), "{e}");

    let unknown = JoinToken { id: "0".repeat(12), ..good.clone() };
    let e = err_line(try_join(&c, &unknown.to_string()).await.unwrap_err());
    assert!(e.contains("join token is not known"), "{e}");

    let e = err_line(try_join(&c, "berth1.nonsense").await.unwrap_err());
    assert!(e.contains("join token is malformed"), "{e}");

    // Expired: a token whose lifetime ended the moment it was made (a
    // token is expired from its `expires_at_ms` on).
    let short = JoinToken::generate(&good.ca_fingerprint);
    c.any().meta.write(berth_raft::Actor::OPERATOR, token_record(&short, Duration::ZERO, None)).await.unwrap();
    let e = err_line(try_join(&c, &short.to_string()).await.unwrap_err());
    assert!(e.contains("join token has expired"), "{e}");

    // Revoked.
    let revoked = JoinToken::generate(&good.ca_fingerprint);
    c.any().meta.write(berth_raft::Actor::OPERATOR, token_record(&revoked, Duration::from_secs(600), None)).await.unwrap();
    c.any().meta.write(berth_raft::Actor::OPERATOR, MetaCommand::RevokeJoinToken { id: revoked.id.clone() }).await.unwrap();
    let e = err_line(try_join(&c, &revoked.to_string()).await.unwrap_err());
    assert!(e.contains("join token was revoked"), "{e}");

    // Used up.
    let once = JoinToken::generate(&good.ca_fingerprint);
    c.any().meta.write(berth_raft::Actor::OPERATOR, token_record(&once, Duration::from_secs(600), Some(1))).await.unwrap();
    try_join(&c, &once.to_string()).await.unwrap();
    let e = err_line(try_join(&c, &once.to_string()).await.unwrap_err());
    assert!(e.contains("join token has been used up"), "{e}");

    assert_eq!(node_count(&c), before + 1, "only the one good join registered a node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seed_whose_ca_does_not_match_the_token_is_refused_before_the_secret_is_sent() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let good = JoinToken::parse(&c.token).unwrap();
    let before = node_count(&c);
    let other_ca = JoinToken { ca_fingerprint: "ab".repeat(32), ..good };
    let e = err_line(try_join(&c, &other_ca.to_string()).await.unwrap_err());
    assert!(e.contains("the seed's CA does not match the token"), "{e}");
    assert_eq!(node_count(&c), before);
    // The token itself was never presented: it still works.
    try_join(&c, &c.token).await.unwrap();
}

/// Calls AppendEntries on `addr` with the given client TLS setup.
async fn raw_append(addr: &str, tls: tonic::transport::ClientTlsConfig) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = berth_raft::pb::peer_client::PeerClient::new(channel);
    client.append_entries(berth_raft::pb::Payload { data: vec![1] }).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_without_a_cluster_certificate_are_refused() {
    let c = Cluster::new(1, fast_config()).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let addr = c.any().peer_addr.to_string();
    let ca_pem = std::fs::read_to_string(c.dirs[&1].join("tls/ca.pem")).unwrap();
    let base =
        || tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)).domain_name(berth_raft::PEER_TLS_NAME);

    // No client certificate: the handshake passes (joiners need that), the call does not.
    let e = raw_append(&addr, base()).await.unwrap_err();
    assert!(e.contains("Unauthenticated") && e.contains("certificate from the cluster CA is required"), "{e}");

    // A certificate from another CA: the handshake itself fails.
    let rogue_ca = berth_node::cluster::pki::new_ca("rogue").unwrap();
    let key = berth_node::cluster::pki::new_node_key().unwrap();
    let leaf = berth_node::cluster::pki::sign_node_cert(&rogue_ca, 7, &rcgen::PublicKeyData::subject_public_key_info(&key)).unwrap();
    let chain = format!("{leaf}{}", rogue_ca.cert_pem);
    let rogue = base().identity(tonic::transport::Identity::from_pem(chain, key.serialize_pem()));
    let e = raw_append(&addr, rogue).await.unwrap_err();
    assert!(!e.contains("Unauthenticated"), "refused at the TLS layer, not by the service: {e}");

    // With the node's own certificate the same call reaches Raft (and fails
    // only because the payload is garbage).
    let own = base().identity(tonic::transport::Identity::from_pem(
        std::fs::read_to_string(c.dirs[&1].join("tls/node.pem")).unwrap(),
        std::fs::read_to_string(c.dirs[&1].join("tls/node.key")).unwrap(),
    ));
    let e = raw_append(&addr, own).await.unwrap_err();
    assert!(e.contains("InvalidArgument"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_and_join_refuse_a_directory_that_holds_a_node() {
    let c = Cluster::new(1, fast_config()).await;
    let (_l, mut addrs) = bind_pair().await;
    addrs.region = "eu".into();
    let e = berth_node::runtime::init_cluster(&c.dirs[&1], &addrs, None, fast_config()).await.err().expect("refused");
    assert!(format!("{e:#}").contains("already holds a berth node"), "{e:#}");
    let e = join_cluster(&c.dirs[&1], &addrs, &c.any().peer_addr.to_string(), &c.token, false, fast_config()).await.err().expect("refused");
    assert!(format!("{e:#}").contains("already holds a berth node"), "{e:#}");
    let e = berth_node::runtime::init_cluster(
        &c.root.path().join("x"),
        &berth_node::runtime::NodeAddrs { region: "Bad Region".into(), ..addrs },
        None,
        fast_config(),
    )
    .await
    .err()
    .expect("refused");
    assert!(format!("{e:#}").contains("region"), "{e:#}");
}
