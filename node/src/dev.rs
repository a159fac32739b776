//! `berth dev`: a whole local cluster in one process, for trying berth and
//! for development. Nodes get consecutive ports on 127.0.0.1 and pretend
//! regions; the data directory is kept, so running it again with the same
//! `--data-dir` brings the same cluster back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use berth_raft::{LinkFilter, MetaConfig};

use crate::runtime::{init_cluster, join_cluster, start_node, NodeAddrs, RunningNode};

pub struct DevOptions {
    pub nodes: usize,
    pub data_dir: PathBuf,
    pub http_port: u16,
}

pub const DEV_REGIONS: [&str; 3] = ["dev-east", "dev-west", "dev-south"];

fn node_dir(root: &Path, i: usize) -> PathBuf {
    root.join(format!("node{i}"))
}

/// Ports of node `i` (1-based): HTTP at http_port + i - 1, peer 1000 above.
fn addrs(opts: &DevOptions, i: usize) -> anyhow::Result<NodeAddrs> {
    let http = opts.http_port.checked_add((i - 1) as u16).context("--http-port too high")?;
    let peer = http.checked_add(1000).context("--http-port too high")?;
    Ok(NodeAddrs {
        region: DEV_REGIONS[(i - 1) % DEV_REGIONS.len()].to_string(),
        http_listen: format!("127.0.0.1:{http}"),
        peer_listen: format!("127.0.0.1:{peer}"),
        http_advertise: None,
        peer_advertise: None,
    })
}

pub struct DevCluster {
    pub nodes: Vec<RunningNode>,
    /// Set when the cluster was created by this run.
    pub admin_password: Option<String>,
}

/// Creates (or restarts) the cluster and waits until every node is a member.
pub async fn start(opts: &DevOptions) -> anyhow::Result<DevCluster> {
    anyhow::ensure!((1..=9).contains(&opts.nodes), "--nodes must be between 1 and 9");
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let mut admin_password = None;
    let mut nodes = Vec::new();
    let first = node_dir(&opts.data_dir, 1);
    let mut token = None;
    if !first.join("berth.toml").exists() {
        let password = crate::util::random_hex(8);
        let out = init_cluster(&first, &addrs(opts, 1)?, Some(password.clone()), MetaConfig::default()).await?;
        admin_password = Some(password);
        token = Some(out.token.to_string());
    }
    nodes.push(start_node(&first, None, LinkFilter::default()).await?);
    for i in 2..=opts.nodes {
        let dir = node_dir(&opts.data_dir, i);
        if !dir.join("berth.toml").exists() {
            let token = match &token {
                Some(t) => t.clone(),
                None => new_token(&nodes[0]).await?,
            };
            join_cluster(&dir, &addrs(opts, i)?, &nodes[0].peer_addr.to_string(), &token, false, MetaConfig::default()).await?;
        }
        nodes.push(start_node(&dir, None, LinkFilter::default()).await?);
    }
    let ids: Vec<u64> = nodes.iter().map(|n| n.config.node_id).collect();
    let meta = nodes[0].meta.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let group = meta.view();
        if ids.iter().all(|id| group.members.contains(id)) && group.leader.is_some() {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the dev cluster did not form within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(DevCluster { nodes, admin_password })
}

async fn new_token(node: &RunningNode) -> anyhow::Result<String> {
    let cluster: berth_raft::ClusterRecord =
        berth_raft::StateRead::get(&node.meta.state(), berth_raft::state::keys::CLUSTER)?.context("cluster record missing")?;
    let token = crate::cluster::join::JoinToken::generate(&crate::cluster::pki::fingerprint(&cluster.ca_cert_pem)?);
    node.meta.write(berth_raft::Actor::OPERATOR, crate::cluster::join::token_record(&token, Duration::from_secs(600), Some(1))).await?;
    Ok(token.to_string())
}
