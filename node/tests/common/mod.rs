//! An in-process cluster: real nodes (RocksDB, tonic over mutual TLS on
//! loopback, HTTP) as tasks of one test, with ports chosen by the OS and a
//! shared link filter to cut links.

#![allow(dead_code)]

pub mod daemons;
pub mod debian;
pub mod http;
pub mod procs;
pub mod receiver;
pub mod upstream;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use berth_common::Digest;
use berth_node::runtime::{init_cluster, join_cluster, start_node, Listeners, NodeAddrs, RunningNode};
use berth_raft::command::{ManifestRecord, MetaCommand, MetaResponse, TagRecord};
use berth_raft::state::keys;
use berth_raft::{LinkFilter, MetaConfig, StateRead};
use tokio::net::TcpListener;

/// Waits until `cond` holds (`true`, or `Some(value)`, which it returns),
/// checking every 20 ms; panics naming `what` after `timeout`.
///
/// The one way these tests wait: on a condition, never for a fixed time. A
/// test that must show something does *not* happen waits instead for the
/// event that would have caused it to be processed (an applied log index, a
/// reconciler pass, a refused call on a cut link), then looks.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> <Fut::Output as Ready>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Ready,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await.ready() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What [`eventually`] waits on: a condition, or a value to come.
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Timing for tests on one machine: elections in a few hundred ms.
pub fn fast_config() -> MetaConfig {
    MetaConfig { heartbeat_ms: 50, election_min_ms: 300, election_max_ms: 600, write_timeout_ms: 8_000, ..MetaConfig::default() }
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: BTreeMap<u64, RunningNode>,
    pub dirs: BTreeMap<u64, PathBuf>,
    pub filter: LinkFilter,
    pub config: MetaConfig,
    pub token: String,
    made: usize,
    replication: Option<berth_replication::ReplicationConfig>,
}

pub async fn bind_pair() -> (Listeners, NodeAddrs) {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = NodeAddrs {
        region: String::new(),
        http_listen: http.local_addr().unwrap().to_string(),
        peer_listen: peer.local_addr().unwrap().to_string(),
        http_advertise: None,
        peer_advertise: None,
    };
    (Listeners { http, peer }, addrs)
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    berth_node::install_crypto_provider();
}

/// Rewrites a node's berth.toml before it starts.
fn tweak_config(dir: &std::path::Path, replication: &Option<berth_replication::ReplicationConfig>) {
    if let Some(r) = replication {
        let layout = berth_node::config::Layout::new(dir);
        let mut cfg = layout.load().unwrap();
        cfg.replication = r.clone();
        std::fs::write(layout.config(), toml::to_string(&cfg).unwrap()).unwrap();
    }
}

impl Cluster {
    pub async fn new(n: usize, config: MetaConfig) -> Cluster {
        Cluster::with_replication(n, config, None).await
    }

    /// A cluster whose nodes use `replication` (and `config` for Raft).
    pub async fn with_replication(n: usize, config: MetaConfig, replication: Option<berth_replication::ReplicationConfig>) -> Cluster {
        init_logs();
        let root = tempfile::tempdir().unwrap();
        let (listeners, mut addrs) = bind_pair().await;
        addrs.region = "region-1".into();
        let dir = root.path().join("node-1");
        let out = init_cluster(&dir, &addrs, Some("admin-password".into()), config.clone()).await.unwrap();
        tweak_config(&dir, &replication);
        let filter = LinkFilter::default();
        let node = start_node(&dir, Some(listeners), filter.clone()).await.unwrap();
        let id = node.config.node_id;
        let mut c = Cluster {
            root,
            nodes: BTreeMap::from([(id, node)]),
            dirs: BTreeMap::from([(id, dir)]),
            filter,
            config,
            token: out.token.to_string(),
            made: 1,
            replication,
        };
        for i in 2..=n {
            c.add_node(&format!("region-{}", (i - 1) % 3 + 1)).await;
        }
        c
    }

    pub fn any(&self) -> &RunningNode {
        self.nodes.values().next().expect("a running node")
    }

    pub fn node(&self, id: u64) -> &RunningNode {
        &self.nodes[&id]
    }

    /// Joins a new node through any running node and starts it.
    pub async fn add_node(&mut self, region: &str) -> u64 {
        self.add_node_advertising(region, None).await
    }

    /// [`Cluster::add_node`], telling the cluster to reach the node's HTTP
    /// at `http_advertise` (a proxy in front of it, say).
    pub async fn add_node_advertising(&mut self, region: &str, http_advertise: Option<String>) -> u64 {
        let seed = self.any().config.node_id;
        self.join(region, http_advertise, seed, false).await
    }

    /// Joins a new node through node `seed` (as a learner if `learner`)
    /// and starts it.
    pub async fn join(&mut self, region: &str, http_advertise: Option<String>, seed: u64, learner: bool) -> u64 {
        self.made += 1;
        let (listeners, mut addrs) = bind_pair().await;
        addrs.region = region.into();
        addrs.http_advertise = http_advertise;
        let dir = self.root.path().join(format!("node-{}", self.made));
        let seed = self.node(seed).peer_addr.to_string();
        let cfg = join_cluster(&dir, &addrs, &seed, &self.token, learner, self.config.clone()).await.unwrap();
        tweak_config(&dir, &self.replication);
        let node = start_node(&dir, Some(listeners), self.filter.clone()).await.unwrap();
        self.nodes.insert(cfg.node_id, node);
        self.dirs.insert(cfg.node_id, dir);
        cfg.node_id
    }

    pub async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running node");
        node.shutdown().await;
    }

    /// Starts node `id` again from its directory. A node stopped in this
    /// process lets go of its store lock and its UDP port only when its
    /// last connection task has ended (peer connections drain, QUIC
    /// connections time out), which a process restart never waits for;
    /// here the start is retried until they have.
    pub async fn restart(&mut self, id: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let node = loop {
            match start_node(&self.dirs[&id], None, self.filter.clone()).await {
                Ok(n) => break n,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(node_id = id, error = %format!("{e:#}"), "restart: the stopped node still holds its resources; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("node {id} does not start again: {e:#}"),
            }
        };
        self.nodes.insert(id, node);
    }

    /// Waits until every running node has applied everything committed
    /// before this call (a read barrier on each): what one node wrote, all
    /// now see.
    pub async fn sync_all(&self) {
        for (id, n) in &self.nodes {
            n.meta.read_barrier().await.unwrap_or_else(|e| panic!("node {id} cannot catch up: {e}"));
        }
    }

    /// Commits every usage record queued on any running node, then makes
    /// every node see them (records are otherwise batched every
    /// [`berth_node::identity::audit::FLUSH_EVERY`]).
    pub async fn flush_audit(&self) {
        for n in self.nodes.values() {
            n.audit.flush().await;
        }
        self.sync_all().await;
    }

    /// The leader as every running node sees it, once they agree.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        eventually(timeout, "every running node agrees on one leader", || async {
            let leaders: Vec<Option<u64>> = self.nodes.values().map(|n| n.meta.leader()).collect();
            let l = (*leaders.first()?)?;
            (self.nodes.contains_key(&l) && leaders.iter().all(|x| x == &Some(l)) && self.nodes[&l].meta.is_leader()).then_some(l)
        })
        .await
    }

    /// Waits until the voters, as the leader sees them, are exactly `ids`.
    pub async fn wait_voters(&self, ids: &[u64], timeout: Duration) {
        eventually(timeout, &format!("the voters are {ids:?}"), || async {
            let l = self.wait_leader(timeout).await;
            let v = self.nodes[&l].meta.view();
            v.voters.iter().copied().eq(ids.iter().copied()) && !v.changing_membership
        })
        .await
    }
}

/// Writes `cmd` through `node`, sending it again while the outcome is not
/// known or no leader answers: an election on a busy machine must not fail
/// a test about something else. Only for writes that end the same when
/// applied twice.
pub async fn write_settled(node: &RunningNode, cmd: MetaCommand) -> MetaResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match node.meta.write(berth_raft::Actor::OPERATOR, cmd.clone()).await {
            Ok(answer) => return answer,
            Err(e @ (berth_raft::MetaError::Unknown(_) | berth_raft::MetaError::Unavailable(_))) => {
                assert!(tokio::time::Instant::now() < deadline, "{cmd:?} through node {}: {e}", node.config.node_id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{cmd:?} through node {}: {e}", node.config.node_id),
        }
    }
}

/// A manifest and a tag pointing at it: what a push leaves in the metadata
/// (with the namespace and repository a push makes first, if missing).
pub async fn push(node: &RunningNode, repo: &str, tag: &str, n: u64) -> Digest {
    use berth_raft::command::RepositoryRecord;
    use berth_raft::command::{IdentityCommand, OrgRecord};
    if let Some((ns, _)) = repo.split_once('/') {
        let org = OrgRecord { name: ns.into(), email: None, created_at_ms: 0 };
        // Refused when it exists: fine either way.
        write_settled(node, MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None })).await;
    }
    // Refused when it exists: fine either way.
    write_settled(node, MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new(repo, 0)))).await;
    let bytes = format!("{{\"schemaVersion\":2,\"n\":{n}}}").into_bytes();
    let digest = Digest::sha256_of(&bytes);
    let manifest = ManifestRecord {
        repo: repo.into(),
        digest: digest.clone(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes,
        blobs: vec![],
        children: vec![],
        subject: None,
        pushed_at_ms: n,
    };
    assert_eq!(write_settled(node, MetaCommand::PutManifest { record: manifest, tag: None }).await, MetaResponse::Done);
    let tag_cmd = MetaCommand::SetTag { repo: repo.into(), tag: tag.into(), digest: digest.clone(), pushed_at_ms: n, if_current: None };
    assert_eq!(write_settled(node, tag_cmd).await, MetaResponse::Done);
    digest
}

/// The tag as `node` has applied it, without waiting.
pub fn tag_on(node: &RunningNode, repo: &str, tag: &str) -> Option<Digest> {
    node.meta.state().get::<TagRecord>(&keys::tag(repo, tag)).unwrap().map(|t| t.digest)
}

/// Waits until `node` has applied the tag pointing at `digest`.
pub async fn wait_tag(node: &RunningNode, repo: &str, tag: &str, digest: &Digest, timeout: Duration) {
    let what = format!("node {} sees {repo}:{tag} = {digest}", node.config.node_id);
    eventually(timeout, &what, || async { tag_on(node, repo, tag).as_ref() == Some(digest) }).await;
}
