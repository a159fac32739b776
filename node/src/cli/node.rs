//! `berth node up` and `berth node stepdown`: what a container, a compose
//! service or a Kubernetes pod runs, where the same command starts a node
//! for the first time and every time after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_gateway::{ClusterStatus, TransferLeaderReply, TransferLeaderRequest};
use berth_node::config::{Layout, TlsConfig, TlsMode};
use berth_node::runtime;
use berth_raft::MetaConfig;

use crate::client::{AdminClient, Target};
use crate::identity::hostname;
use crate::{AddrArgs, TlsArgs};

#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    addrs: AddrArgs,
    /// On first start, create the cluster when this host's name (or
    /// $BERTH_NODE_NAME) is NAME, and join it otherwise: one command line
    /// for every replica of a StatefulSet or compose service.
    #[arg(long, value_name = "NAME", conflicts_with = "init")]
    init_on: Option<String>,
    /// On first start, create the cluster.
    #[arg(long)]
    init: bool,
    /// With a new cluster: file with the `admin` password (else one is generated and printed once).
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// With a new cluster: write its join token to this file (mode 0600) for the other nodes.
    #[arg(long)]
    join_token_out: Option<PathBuf>,
    /// When joining: peer address (host:port) of any member.
    #[arg(long)]
    seed: Option<String>,
    /// When joining: file holding the join token, waited for while absent or empty.
    #[arg(long, env = "BERTH_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// How long a first start waits for the token file and the seed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    wait: Duration,
    #[command(flatten)]
    tls: TlsArgs,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let dir = args.addrs.data_dir.clone();
    if Layout::new(&dir).config().exists() {
        println!("{} holds a node: starting it", dir.display());
    } else if should_init(&args) {
        create_cluster(&args).await?;
    } else {
        join_with_retries(&args).await?;
    }
    crate::run_node(&dir, args.tls.config()).await
}

fn should_init(args: &UpArgs) -> bool {
    args.init || args.init_on.as_deref().is_some_and(|name| node_name() == name)
}

/// The name `--init-on` compares: $BERTH_NODE_NAME (Kubernetes can set it
/// from the pod's name), else the host name.
fn node_name() -> String {
    std::env::var("BERTH_NODE_NAME").ok().filter(|n| !n.is_empty()).unwrap_or_else(hostname)
}

async fn create_cluster(args: &UpArgs) -> anyhow::Result<()> {
    let password = crate::read_password_file(args.admin_password_file.clone())?;
    let out = runtime::init_cluster(&args.addrs.data_dir, &args.addrs.addrs(), password, MetaConfig::default()).await?;
    println!("initialized cluster {} as node {} (region {})", out.config.cluster_id, out.config.node_id, out.config.region);
    if let Some(p) = &out.generated_password {
        println!("admin password (shown once): {p}");
    }
    if let Some(file) = &args.join_token_out {
        write_secret(file, &out.token.to_string())?;
        println!("join token (valid 24h) written to {}", file.display());
    }
    Ok(())
}

fn write_secret(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Write beside it and rename, so a joiner never reads half a token.
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

/// A first start that joins: the token file may not exist yet (the first
/// node writes it) and the seed may not answer yet (it is starting too), so
/// both are waited for; a refusal is retried as well, since a seed that has
/// just been created may not have committed its token yet.
async fn join_with_retries(args: &UpArgs) -> anyhow::Result<()> {
    let (Some(seed), Some(token_file)) = (&args.seed, &args.join_token_file) else {
        bail!("{} holds no node: give --init (or --init-on NAME), or --seed and --join-token-file to join", args.addrs.data_dir.display());
    };
    let deadline = Instant::now() + args.wait;
    let mut said_waiting = false;
    loop {
        let token = std::fs::read_to_string(token_file).map(|t| t.trim().to_string()).unwrap_or_default();
        let attempt = if token.is_empty() {
            Err(anyhow::anyhow!("no join token in {} yet", token_file.display()))
        } else {
            runtime::join_cluster(&args.addrs.data_dir, &args.addrs.addrs(), seed, &token, false, MetaConfig::default()).await
        };
        match attempt {
            Ok(cfg) => {
                println!("joined cluster {} as node {} (region {})", cfg.cluster_id, cfg.node_id, cfg.region);
                return Ok(());
            }
            Err(e) if Instant::now() < deadline => {
                if !said_waiting {
                    println!("waiting to join through {seed}: {e:#}");
                    said_waiting = true;
                }
                tracing::info!("not joined yet: {e:#}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.context(format!("could not join through {seed} within {}", humantime::format_duration(args.wait)))),
        }
    }
}

/// `berth node stepdown`: when the node behind `target` leads, hand
/// leadership to another voter; otherwise nothing. A pod's preStop hook, so
/// a rolling restart never waits out an election.
pub async fn stepdown(target: &Target) -> anyhow::Result<()> {
    let client = AdminClient::new(target)?;
    let status: ClusterStatus = client.get("/api/v1/cluster/status").await?;
    if status.leader != Some(status.answered_by) {
        println!("node {} does not lead: nothing to do", status.answered_by);
        return Ok(());
    }
    let r: TransferLeaderReply = client.post("/api/v1/cluster/transfer-leader", &TransferLeaderRequest { to: None }).await?;
    println!("leader moved from node {} to node {}", r.previous, r.leader);
    Ok(())
}

/// `berth node ready`: the readiness probe as a command, for images that
/// have no shell or curl.
pub async fn ready(url: &str) -> anyhow::Result<()> {
    let probe = format!("{}/health/ready", url.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
    let resp = client.get(&probe).send().await.with_context(|| format!("{probe} did not answer"))?;
    if !resp.status().is_success() {
        bail!("{probe}: {} {}", resp.status(), resp.text().await.unwrap_or_default().trim());
    }
    println!("ready");
    Ok(())
}

impl TlsArgs {
    pub fn config(&self) -> Option<TlsConfig> {
        match (&self.tls_cert, &self.tls_key, self.tls_cluster) {
            (Some(c), Some(k), _) => Some(TlsConfig { mode: TlsMode::Files, cert_file: Some(c.clone()), key_file: Some(k.clone()) }),
            (_, _, true) => Some(TlsConfig { mode: TlsMode::Cluster, cert_file: None, key_file: None }),
            _ => None,
        }
    }
}
