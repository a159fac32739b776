//! The `berth` command.

mod client;
mod drill;
mod identity;
mod node;
mod notify;
mod scan;
mod tags;

use std::path::PathBuf;
use std::time::Duration;

use crate::client::{AdminClient, Target};
use anyhow::Context;
use berth_gateway::*;
use berth_node::runtime::{self, NodeAddrs};
use berth_raft::{LinkFilter, MetaConfig};
use clap::{Parser, Subcommand};
use identity::{LoginArgs, LogsArgs, OrgCommand, RepoCommand, RobotCommand, TeamCommand, UserCommand};

/// The node's many small, short-lived allocations (a request's headers, a
/// record's encoding, a Raft entry's frames), made on one thread and freed
/// on another: glibc's malloc took 28% of the nodes' CPU samples under a
/// stream of tag writes, consolidating its arenas' free lists. jemalloc
/// keeps a small cache per thread over a few shared arenas (mimalloc, tried
/// first, kept pages per thread and a node grew past 500 MiB). The figures
/// are `berth-bench scale`'s, in README.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "berth", version, about = "berth: a container registry cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole local cluster in this process (Ctrl-C stops it).
    Dev {
        /// How many nodes, each in its own pretend region (3 tolerates the
        /// loss of one; 1 is a plain single-node registry).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where the nodes keep their data; reused on the next run.
        #[arg(long, default_value = "./berth-dev")]
        data_dir: PathBuf,
        /// HTTP port of the first node; the others follow it.
        #[arg(long, default_value_t = 5000)]
        http_port: u16,
    },
    /// Create, grow, inspect and shrink the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run a node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Rehearse failures on a live cluster, safely.
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Where a namespace's blobs are kept (every region, some, or on demand).
    Placement {
        #[command(subcommand)]
        command: PlacementCommand,
    },
    /// Log in to a cluster once; later commands use the saved application token.
    Login(LoginArgs),
    /// Revoke the saved login's token and forget it.
    Logout,
    /// Users (superusers only), and who you are.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Teams of an organization and their members.
    Team {
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Robot accounts (`namespace+short`), for CI and other machines.
    Robot {
        #[command(subcommand)]
        command: RobotCommand,
    },
    /// Your application tokens (for scripts and the registry login).
    Token {
        #[command(subcommand)]
        command: identity::TokenCommand,
    },
    /// Notifications of a repository's or organization's events: webhook,
    /// Slack, e-mail, CloudEvents.
    Notify {
        #[command(subcommand)]
        command: notify::NotifyCommand,
    },
    /// Repositories, their visibility and permissions.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// The usage log: who did what, newest first.
    Logs(LogsArgs),
    /// A repository's tags: list, history, expiration, restore, locks.
    Tag {
        #[command(subcommand)]
        command: tags::TagCommand,
    },
    /// Immutability and auto-prune policies of an organization or repository.
    Policy {
        #[command(subcommand)]
        command: tags::PolicyCommand,
    },
    /// Storage quotas of namespaces, their limits and usage.
    Quota {
        #[command(subcommand)]
        command: tags::QuotaCommand,
    },
    /// A repository's mirror of an upstream registry, and its state.
    Mirror {
        #[command(subcommand)]
        command: identity::mirror::MirrorCommand,
    },
    /// An organization's proxy cache of an upstream registry.
    Proxycache {
        #[command(subcommand)]
        command: identity::proxycache::ProxyCacheCommand,
    },
    /// An organization's OAuth applications and the tokens they hold.
    App {
        #[command(subcommand)]
        command: identity::app::AppCommand,
    },
    /// Advisory feeds and the scanner's status.
    Scanner {
        #[command(subcommand)]
        command: scan::ScannerCommand,
    },
    /// An image's vulnerability report.
    Scan {
        #[command(subcommand)]
        command: scan::ScanCommand,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Move leadership away while probing writes and reads; report what clients saw.
    Failover {
        /// Hand leadership to this node (default: the best other voter).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cut one region's nodes off from the rest for a while, then let them
    /// rejoin; report what clients saw. Each node heals by itself shortly
    /// after the drill's end even if this command dies.
    Region {
        /// The region to cut off (as `berth cluster status` shows it).
        region: String,
        /// How long the region stays cut off (1s to 10m).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Drill even when the nodes outside the region hold no majority of
        /// the voters, which stops every write for the duration.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PlacementCommand {
    /// Show a namespace's placement.
    Get {
        namespace: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a namespace's placement: one of --everywhere, --regions, --on-demand.
    Set {
        namespace: String,
        /// Every node of every region keeps a copy (the default).
        #[arg(long, conflicts_with_all = ["regions", "on_demand"])]
        everywhere: bool,
        /// Only the nodes of these regions keep a copy (comma-separated).
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        /// Copies only where pushed (and min_copies) and where pulled.
        #[arg(long, conflicts_with = "regions")]
        on_demand: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args, Clone)]
struct TlsArgs {
    /// Serve HTTPS with this PEM certificate (chain); re-read on change or SIGHUP.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key", conflicts_with = "tls_cluster")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate from the cluster CA (see `berth cluster ca export`).
    #[arg(long)]
    tls_cluster: bool,
}

#[derive(clap::Args, Clone)]
struct AddrArgs {
    /// Where this node's data lives.
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: PathBuf,
    /// Region this node runs in (a-z, 0-9, '-').
    #[arg(long, env = "BERTH_REGION")]
    region: String,
    /// Address the registry/API listener binds (ip:port).
    #[arg(long, env = "BERTH_HTTP")]
    http: String,
    /// Address the peer listener binds (ip:port).
    #[arg(long, env = "BERTH_PEER")]
    peer: String,
    /// URL clients use to reach --http (default: http://<--http>).
    #[arg(long, env = "BERTH_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// host:port other nodes use to reach --peer (default: --peer).
    #[arg(long, env = "BERTH_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
}

impl AddrArgs {
    fn addrs(&self) -> NodeAddrs {
        NodeAddrs {
            region: self.region.clone(),
            http_listen: self.http.clone(),
            peer_listen: self.peer.clone(),
            http_advertise: self.advertise_http.clone(),
            peer_advertise: self.advertise_peer.clone(),
        }
    }
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create a new cluster with this node as its first member.
    Init {
        #[command(flatten)]
        addrs: AddrArgs,
        /// File with the password of the `admin` superuser (else one is generated and printed once).
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
    /// Register this node with a cluster; then run it with `berth node start`.
    Join {
        #[command(flatten)]
        addrs: AddrArgs,
        /// Peer address (host:port) of any member.
        #[arg(long)]
        seed: String,
        /// Join token from `berth cluster init` or `berth cluster token create`.
        #[arg(long, env = "BERTH_JOIN_TOKEN")]
        token: String,
        /// Never a voter: an edge node that serves and forwards but does not vote.
        #[arg(long)]
        learner: bool,
    },
    /// Show the members, their roles, the leader and replication lag.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Make a node a voter.
    Promote {
        node: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Make a node a learner (it keeps serving, it stops voting).
    Demote {
        node: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Copy the cluster's metadata (as of now: every write acknowledged
    /// before it) to DIR, with an inventory of its blobs and, with
    /// --with-blobs, the blobs too (a run skips the blobs DIR already holds).
    Backup {
        #[arg(long)]
        out: PathBuf,
        /// Copy the blobs as well, each verified by its digest.
        #[arg(long)]
        with_blobs: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make a new cluster from a backup: a first node in --data-dir with a
    /// new cluster id and CA, holding the backup's metadata and blobs.
    Restore {
        /// The directory `berth cluster backup --out` wrote.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        addrs: AddrArgs,
    },
    /// Disaster recovery, with this node stopped: when a majority of the
    /// voters is gone for good, make this node the only voter, keeping all
    /// the metadata it holds; new nodes then join as usual.
    Recover {
        /// Data directory of the stopped node to recover on.
        #[arg(long)]
        data_dir: PathBuf,
        /// Start a new one-voter cluster from this node (required: the only
        /// recovery there is).
        #[arg(long)]
        force_new_cluster: bool,
        /// Do it; without this flag, only say what would happen.
        #[arg(long)]
        force: bool,
    },
    /// Remove a node from the cluster for good (its id is never reused).
    Remove {
        node: u64,
        #[command(flatten)]
        target: Target,
    },
    /// The cluster CA, for clients that must trust cluster-signed HTTPS.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Move leadership to NODE (or to the best other voter).
    TransferLeader {
        node: Option<u64>,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start signing registry tokens with a new key (tokens of the old one stay valid until they expire).
    RotateTokenKey {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM) on stdout, and where clients look for it on stderr.
    Export {
        /// Data directory of a node on this host.
        #[arg(long, env = "BERTH_DATA_DIR", conflicts_with = "endpoint")]
        data_dir: Option<PathBuf>,
        /// URL of any node (the CA is public: no login needed).
        #[arg(long, env = "BERTH_ENDPOINT")]
        endpoint: Option<String>,
    },
    /// Which CA signs, which is still trusted, and which CA each node runs on.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start signing with a new CA (the current one stays trusted); with
    /// --finish, once every node restarted on it, trust only the new one.
    Rotate {
        /// End the rotation under way.
        #[arg(long)]
        finish: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a join token; prints it alone on the last line.
    Create {
        /// Lifetime, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many nodes may join with it (default: any number until it expires).
        #[arg(long)]
        max_uses: Option<u32>,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List join tokens (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run the node in the foreground; SIGTERM or Ctrl-C stops it cleanly.
    Start {
        #[arg(long, env = "BERTH_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Create this node on its first start (init the cluster, or join it
    /// with a token from a file), then run it: for containers and pods,
    /// where the same command runs on every start.
    Up(Box<node::UpArgs>),
    /// Exit 0 when the node at URL is ready to serve (a container healthcheck).
    Ready {
        /// The node's HTTP endpoint.
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
    },
    /// If this node leads, hand leadership to another voter (a preStop hook).
    Stepdown {
        #[command(flatten)]
        target: Target,
    },
    /// Ready NODE for removal: move leadership off it and copy every blob
    /// only it holds to another node (safe to run again).
    Drain {
        node: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(berth_node::DEFAULT_LOG_FILTER));
    // Colours only for a person at a terminal, not in a log file or journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Runs the node in `data_dir` until SIGTERM or Ctrl-C, then stops it cleanly.
async fn run_node(data_dir: &std::path::Path, tls: Option<berth_node::config::TlsConfig>) -> anyhow::Result<()> {
    let node = runtime::start_node_with(data_dir, None, LinkFilter::default(), tls).await?;
    println!("node {} running: http {} peer {}", node.config.node_id, node.http_addr, node.peer_addr);
    wait_for_stop_signal().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn fmt_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn print_status(s: &ClusterStatus) {
    println!(
        "cluster {}  leader {}  term {}  (answered by node {})",
        s.cluster_id,
        s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
        s.term,
        s.answered_by
    );
    println!("{:<6} {:<14} {:<9} {:<8} {:<24} {:<30} {:>9} {:>6}", "NODE", "REGION", "ROLE", "WANTED", "PEER", "HTTP", "MATCHED", "LAG");
    for n in &s.nodes {
        let id = if n.leader { format!("{}*", n.id) } else { n.id.to_string() };
        let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:<14} {:<9} {:<8} {:<24} {:<30} {:>9} {:>6}",
            id,
            n.region,
            n.role,
            n.desired_role,
            n.peer_addr,
            n.http_addr,
            opt(n.matched_index),
            opt(n.lag)
        );
    }
    println!("* leader");
    if !s.rtt_ms.is_empty() {
        let ids: Vec<u64> = s.nodes.iter().filter(|n| n.role != "removed").map(|n| n.id).collect();
        println!();
        print!("{:<10}", "RTT ms");
        for id in &ids {
            print!("{:>9}", format!("to {id}"));
        }
        println!();
        for row in &s.rtt_ms {
            print!("{:<10}", format!("from {}", row.from));
            for id in &ids {
                let cell = if *id == row.from {
                    "-".to_string()
                } else {
                    row.to.iter().find(|(to, _)| to == id).map(|(_, ms)| format!("{ms:.1}")).unwrap_or_else(|| "?".into())
                };
                print!("{cell:>9}");
            }
            println!();
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { nodes, data_dir, http_port } => {
            let cluster = berth_node::dev::start(&berth_node::dev::DevOptions { nodes, data_dir: data_dir.clone(), http_port }).await?;
            println!("berth dev: {} nodes, data in {}", cluster.nodes.len(), data_dir.display());
            for n in &cluster.nodes {
                println!("  node {} ({}): {}  peer {}", n.config.node_id, n.config.region, n.config.http_advertise, n.peer_addr);
            }
            match &cluster.admin_password {
                Some(p) => println!("admin login: user admin, password {p} (shown once)"),
                None => println!("admin login: user admin, password as printed when {} was created", data_dir.display()),
            }
            let first = &cluster.nodes[0];
            let host = first.config.http_advertise.trim_start_matches("http://").trim_start_matches("https://");
            println!("try:");
            println!("  docker login {host} -u admin");
            println!("  docker push {host}/team/app:1");
            println!("  berth cluster status --data-dir {}", data_dir.join("node1").display());
            println!("Ctrl-C stops the cluster.");
            wait_for_stop_signal().await;
            for n in cluster.nodes {
                n.shutdown().await;
            }
        }
        Command::Cluster { command } => run_cluster(command).await?,
        Command::Login(args) => identity::run_login(args).await?,
        Command::Logout => identity::run_logout().await?,
        Command::User { command } => identity::run_user(command).await?,
        Command::Org { command } => identity::run_org(command).await?,
        Command::Team { command } => identity::run_team(command).await?,
        Command::Robot { command } => identity::run_robot(command).await?,
        Command::Token { command } => identity::run_token(command).await?,
        Command::Repo { command } => identity::run_repo(command).await?,
        Command::Notify { command } => notify::run_notify(command).await?,
        Command::Logs(args) => identity::run_logs(args).await?,
        Command::Tag { command } => tags::run_tag(command).await?,
        Command::Policy { command } => tags::run_policy(command).await?,
        Command::Quota { command } => tags::run_quota(command).await?,
        Command::Mirror { command } => identity::mirror::run_mirror(command).await?,
        Command::Proxycache { command } => identity::proxycache::run_proxycache(command).await?,
        Command::App { command } => identity::app::run_app(command).await?,
        Command::Scanner { command } => scan::run_scanner(command).await?,
        Command::Scan { command } => scan::run_scan(command).await?,
        Command::Drill { command: DrillCommand::Failover { to, target, json } } => {
            let client = AdminClient::new(&target)?;
            let started_ms = crate::drill::wall_ms();
            let report = crate::drill::failover(&client, to).await?;
            if json {
                print_json(&report)?;
            } else {
                report.print();
            }
            let nodes = vec![report.previous_leader, report.new_leader];
            crate::drill::post_report(&client, "failover", started_ms, report.target(), nodes, &report).await;
        }
        Command::Drill { command: DrillCommand::Region { region, duration, force, target, json } } => {
            let opts = crate::drill::RegionOptions { region, duration, force };
            let client = AdminClient::new(&target)?;
            let started_ms = crate::drill::wall_ms();
            let report = crate::drill::region(&client, &opts).await?;
            if json {
                print_json(&report)?;
            } else {
                report.print();
            }
            crate::drill::post_report(&client, "region", started_ms, report.region.clone(), report.nodes.clone(), &report).await;
        }
        Command::Placement { command: PlacementCommand::Get { namespace, target, json } } => {
            let doc: PlacementDoc = AdminClient::new(&target)?.get(&format!("/api/v1/placement/{namespace}")).await?;
            if json {
                print_json(&doc)?;
            } else if doc.regions.is_empty() {
                println!("{namespace}: {}", doc.policy);
            } else {
                println!("{namespace}: {} {}", doc.policy, doc.regions.join(","));
            }
        }
        Command::Placement { command: PlacementCommand::Set { namespace, everywhere, regions, on_demand, target } } => {
            let doc = match (everywhere, regions.is_empty(), on_demand) {
                (_, false, _) => PlacementDoc { policy: "regions".into(), regions },
                (_, true, true) => PlacementDoc { policy: "on-demand".into(), regions: vec![] },
                (true, true, false) => PlacementDoc { policy: "everywhere".into(), regions: vec![] },
                (false, true, false) => anyhow::bail!("say where: --everywhere, --regions R1,R2 or --on-demand"),
            };
            AdminClient::new(&target)?.put(&format!("/api/v1/placement/{namespace}"), &doc).await?;
            println!("placement of {namespace} set");
        }
        Command::Node { command: NodeCommand::Drain { node, target, json } } => {
            let r: DrainReport = AdminClient::new(&target)?.post(&format!("/api/v1/cluster/nodes/{node}/drain"), &()).await?;
            if json {
                print_json(&r)?;
            } else {
                if let Some(l) = &r.leadership {
                    println!("leadership moved from node {} to node {}", l.previous, l.leader);
                }
                println!("{} blobs ({} bytes) only node {node} held now have another copy", r.blobs_copied, r.bytes_copied);
                println!("node {node} can be removed: berth cluster remove {node}");
            }
        }
        Command::Node { command: NodeCommand::Start { data_dir, tls } } => run_node(&data_dir, tls.config()).await?,
        Command::Node { command: NodeCommand::Up(args) } => node::up(*args).await?,
        Command::Node { command: NodeCommand::Stepdown { target } } => node::stepdown(&target).await?,
        Command::Node { command: NodeCommand::Ready { url } } => node::ready(&url).await?,
    }
    Ok(())
}

async fn run_cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { addrs, admin_password_file } => cluster_init(&addrs, admin_password_file).await?,
        ClusterCommand::Join { addrs, seed, token, learner } => {
            let cfg = runtime::join_cluster(&addrs.data_dir, &addrs.addrs(), &seed, &token, learner, MetaConfig::default()).await?;
            println!("joined cluster {} as node {} (region {})", cfg.cluster_id, cfg.node_id, cfg.region);
            println!("start it with: berth node start --data-dir {}", addrs.data_dir.display());
        }
        ClusterCommand::Status { target, json } => {
            let s: ClusterStatus = AdminClient::new(&target)?.get("/api/v1/cluster/status").await?;
            if json {
                print_json(&s)?;
            } else {
                print_status(&s);
            }
        }
        ClusterCommand::Token { command } => run_token(command).await?,
        ClusterCommand::Ca { command } => run_ca(command).await?,
        ClusterCommand::Promote { node, target } => {
            AdminClient::new(&target)?.post_empty(&format!("/api/v1/cluster/nodes/{node}/promote")).await?;
            println!("node {node} will vote once caught up, while the voter count stays odd and at most 5 (an even count leaves the last promoted node a learner until another node can vote)");
        }
        ClusterCommand::Demote { node, target } => {
            AdminClient::new(&target)?.post_empty(&format!("/api/v1/cluster/nodes/{node}/demote")).await?;
            println!("node {node} will become a learner");
        }
        ClusterCommand::Backup { out, with_blobs, target } => backup(&out, with_blobs, &target).await?,
        ClusterCommand::Restore { from, addrs } => restore(&from, &addrs).await?,
        ClusterCommand::Recover { data_dir, force_new_cluster, force } => recover(&data_dir, force_new_cluster, force)?,
        ClusterCommand::Remove { node, target } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/cluster/nodes/{node}")).await?;
            println!("node {node} removed");
        }
        ClusterCommand::TransferLeader { node, target, json } => {
            let r: TransferLeaderReply = AdminClient::new(&target)?.post("/api/v1/cluster/transfer-leader", &TransferLeaderRequest { to: node }).await?;
            if json {
                print_json(&r)?;
            } else {
                println!("leader moved from node {} to node {}", r.previous, r.leader);
            }
        }
        ClusterCommand::RotateTokenKey { target, json } => {
            let r: berth_gateway::identity::KeyRotated = AdminClient::new(&target)?.post("/api/v1/superuser/keys/rotate", &serde_json::Map::new()).await?;
            if json {
                print_json(&r)?;
            } else {
                println!("token signing key rotated; new kid {}", r.kid);
            }
        }
    }
    Ok(())
}

/// `berth cluster init`: prints the node, the admin password when one was
/// made, and the join token alone on the last line.
/// `berth cluster backup`: the metadata file first (written whole, then
/// renamed), then its inventory, then the blobs it names.
async fn backup(out: &std::path::Path, with_blobs: bool, target: &Target) -> anyhow::Result<()> {
    use berth_node::cluster::backup::{blob_path, Backup, INVENTORY_FILE, METADATA_FILE};
    let client = AdminClient::new(target)?;
    let bytes = client.get_bytes("/api/v1/cluster/backup").await?;
    let backup = Backup::decode(&bytes)?;
    let inventory = backup.inventory()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, data: &[u8]| -> anyhow::Result<()> {
        let tmp = out.join(format!("{name}.tmp"));
        std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, out.join(name)).with_context(|| format!("cannot write {}", out.join(name).display()))
    };
    write(METADATA_FILE, &bytes)?;
    write(INVENTORY_FILE, &serde_json::to_vec_pretty(&inventory)?)?;
    println!(
        "metadata of cluster {} at index {} ({} records) written to {}",
        backup.cluster_id,
        backup.applied_index.unwrap_or(0),
        backup.records.len(),
        out.join(METADATA_FILE).display()
    );
    if !with_blobs {
        println!("{} blobs listed in {} (not copied: add --with-blobs)", inventory.len(), INVENTORY_FILE);
        return Ok(());
    }
    let (mut copied, mut kept, mut bytes_copied, mut unlinked) = (0, 0, 0u64, 0);
    for b in &inventory {
        let dest = blob_path(out, &b.digest)?;
        if dest.exists() {
            kept += 1;
            continue;
        }
        let Some(repo) = &b.repo else {
            unlinked += 1;
            continue;
        };
        bytes_copied += client.download_verified(&format!("/v2/{repo}/blobs/{}", b.digest), &dest, &b.digest).await?;
        copied += 1;
    }
    println!("blobs: {copied} copied ({bytes_copied} bytes), {kept} already in {}, {unlinked} linked to no repository (not needed)", out.display());
    Ok(())
}

/// `berth cluster restore`: a new cluster from a backup directory.
async fn restore(from: &std::path::Path, addrs: &AddrArgs) -> anyhow::Result<()> {
    let out = runtime::restore_cluster(&addrs.data_dir, &addrs.addrs(), from).await?;
    println!(
        "restored {} records of cluster {} (index {}) into new cluster {} in {}",
        out.records,
        out.backup_cluster_id,
        out.backup_applied_index.unwrap_or(0),
        out.init.config.cluster_id,
        addrs.data_dir.display()
    );
    println!("blobs: {} restored, each digest verified", out.blobs_restored);
    if !out.blobs_missing.is_empty() {
        println!(
            "warning: {} blobs that manifests use are not in the backup (take it with --with-blobs): {}",
            out.blobs_missing.len(),
            out.blobs_missing.join(", ")
        );
    }
    println!("users, robots and their passwords are the backup's (log in as before)");
    println!("start it with: berth node start --data-dir {}", addrs.data_dir.display());
    println!("join other nodes with this token (valid 24h):");
    println!("{}", out.init.token);
    Ok(())
}

/// `berth cluster recover`: says what a forced new cluster keeps and may
/// lose, and does it only with `--force`.
fn recover(dir: &std::path::Path, force_new_cluster: bool, force: bool) -> anyhow::Result<()> {
    if !force_new_cluster {
        anyhow::bail!("cluster recover needs --force-new-cluster: it makes this node the only voter of a new cluster");
    }
    let out = runtime::recover_cluster(dir, !force)?;
    let r = &out.recovery;
    let removed = r.removed.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    println!("node {} becomes the only voter, in term {}", r.node, r.term);
    println!("kept: every entry of its log, up to index {} (it last knew index {} committed)", r.last_index, r.known_committed.unwrap_or(0));
    if r.beyond_commit() > 0 {
        println!("  {} of them past that commit: kept, although their clients may have been told they failed", r.beyond_commit());
    }
    println!("removed for good: node{} {}", if r.removed.len() == 1 { "" } else { "s" }, if removed.is_empty() { "none".into() } else { removed });
    println!("may be lost: writes the lost nodes committed that never reached this node, and blobs only they held");
    if !out.holds_ca_key {
        println!("warning: this node holds no key of the cluster CA, so no new node can join it; recover on a former voter if one is left");
    }
    if !force {
        anyhow::bail!("nothing changed: run again with --force to recover");
    }
    println!("recovered: start it with `berth node start --data-dir {}`, then join new nodes with `berth cluster token create`", dir.display());
    Ok(())
}

/// The first line of a password file, if one was given.
fn read_password_file(file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    match file {
        Some(f) => Ok(Some(std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?.trim_end_matches(['\n', '\r']).to_string())),
        None => Ok(None),
    }
}

async fn cluster_init(addrs: &AddrArgs, admin_password_file: Option<PathBuf>) -> anyhow::Result<()> {
    let password = read_password_file(admin_password_file)?;
    let out = runtime::init_cluster(&addrs.data_dir, &addrs.addrs(), password, MetaConfig::default()).await?;
    println!("initialized cluster {} in {}", out.config.cluster_id, addrs.data_dir.display());
    println!("node {}: region {}, http {}, peer {}", out.config.node_id, out.config.region, out.config.http_advertise, out.config.peer_advertise);
    if let Some(p) = &out.generated_password {
        println!("admin password (shown once): {p}");
    }
    println!("start it with: berth node start --data-dir {}", addrs.data_dir.display());
    println!("join other nodes with this token (valid 24h):");
    println!("{}", out.token);
    Ok(())
}

async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { ttl, max_uses, target, json } => {
            let req = TokenCreateRequest { ttl_secs: Some(ttl.as_secs().max(1)), max_uses };
            let t: CreatedToken = AdminClient::new(&target)?.post("/api/v1/cluster/tokens", &req).await?;
            if json {
                print_json(&t)?;
            } else {
                println!("token {} expires {}", t.id, fmt_ms(t.expires_at_ms));
                println!("{}", t.token);
            }
        }
        TokenCommand::List { target, json } => {
            let list: Vec<TokenInfo> = AdminClient::new(&target)?.get("/api/v1/cluster/tokens").await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<14} {:<22} {:<22} {:<8} {:>6}", "ID", "CREATED", "EXPIRES", "REVOKED", "USES");
                for t in list {
                    let uses = match t.max_uses {
                        Some(m) => format!("{}/{}", t.uses, m),
                        None => t.uses.to_string(),
                    };
                    println!("{:<14} {:<22} {:<22} {:<8} {:>6}", t.id, fmt_ms(t.created_at_ms), fmt_ms(t.expires_at_ms), t.revoked, uses);
                }
            }
        }
        TokenCommand::Revoke { id, target } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/cluster/tokens/{id}")).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

async fn run_ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Export { data_dir, endpoint } => {
            let pem = match (data_dir, endpoint) {
                (Some(d), _) => {
                    let p = berth_node::config::Layout::new(&d).ca_cert();
                    std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?
                }
                (None, Some(url)) => {
                    let url = format!("{}/api/v1/cluster/ca", url.trim_end_matches('/'));
                    let resp = reqwest::get(&url).await.with_context(|| format!("cannot reach {url}"))?;
                    anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
                    resp.text().await?
                }
                (None, None) => anyhow::bail!("say which node: --data-dir D on its host, or --endpoint URL"),
            };
            print!("{pem}");
            eprintln!("Trust it per registry host:port:");
            eprintln!("  docker:  /etc/docker/certs.d/<host:port>/ca.crt");
            eprintln!("  podman, buildah, skopeo:  /etc/containers/certs.d/<host:port>/ca.crt, or --cert-dir DIR (DIR/ca.crt)");
            eprintln!("  containerd (ctr):  --tlscacert FILE");
        }
        CaCommand::Status { target, json } => {
            let status: berth_gateway::CaStatus = AdminClient::new(&target)?.get("/api/v1/cluster/ca/status").await?;
            print_ca_status(&status, json)?;
        }
        CaCommand::Rotate { finish, target, json } => {
            let path = if finish { "/api/v1/cluster/ca/rotate/finish" } else { "/api/v1/cluster/ca/rotate" };
            let status: berth_gateway::CaStatus = AdminClient::new(&target)?.post(path, &serde_json::Map::new()).await?;
            print_ca_status(&status, json)?;
            if !json && finish {
                println!("rotation finished: the previous CA is trusted no more (by each node from its next restart); distribute the new CA to clients (`berth cluster ca export`)");
            } else if !json {
                println!(
                    "rotation started: within seconds every node writes a certificate from the new CA and a trust bundle of both CAs to its data directory."
                );
                println!("Restart the nodes one at a time, in any order; then run `berth cluster ca rotate --finish`.");
            }
        }
    }
    Ok(())
}

fn print_ca_status(s: &berth_gateway::CaStatus, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(s);
    }
    println!("signing CA   sha256:{}", s.signing);
    if let Some(p) = &s.previous {
        println!("previous CA  sha256:{p} (still trusted: a rotation is under way)");
    }
    println!("{:<6} RUNNING ON", "NODE");
    for n in &s.nodes {
        let on = match &n.running {
            Some(fp) if *fp == s.signing => "the signing CA",
            Some(fp) if s.previous.as_ref() == Some(fp) => "the previous CA (restart it)",
            Some(_) => "a CA the cluster no longer trusts",
            None => "not reported yet",
        };
        println!("{:<6} {on}", n.id);
    }
    Ok(())
}

/// Whether `command` runs a node (or `dev`'s nodes) rather than printing
/// something and exiting.
fn runs_a_node(command: &Command) -> bool {
    matches!(command, Command::Dev { .. } | Command::Node { command: NodeCommand::Start { .. } | NodeCommand::Up(_) })
}

/// Caps glibc's malloc at two arenas in a node. By default it keeps up to
/// eight per core, one per thread that allocates at once, and a node's
/// threads (the async workers, RocksDB's blocking calls) spread its heap
/// over all of them, each holding freed memory of its own. With 2,
/// `berth-bench scale` at 200,000 tags measured 183–190 MiB RSS per node
/// after the writes against 230–238 MiB with glibc's default.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called once, before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    let cli = Cli::parse();
    if !runs_a_node(&cli.command) {
        // A command whose reader went away (`berth cluster status | head -1`)
        // ends quietly, as cat does, instead of panicking on the broken
        // pipe. A node keeps Rust's default: a client that hangs up is a
        // write error on that connection, never the end of the process.
        // SAFETY: set once, before any thread is started.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    } else {
        few_malloc_arenas();
    }
    init_tracing();
    berth_node::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("berth: error: {e:#}");
        std::process::exit(1);
    }
}
