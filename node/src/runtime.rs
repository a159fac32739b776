//! Creating, joining and running a node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_raft::command::{ClusterRecord, MetaCommand, MetaResponse, NodeRegistration, NodeRole, UserRecord};
use berth_raft::{LinkFilter, MetaConfig, MetaNode, MetaNodeHandle, PeerTls, RocksStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::api::NodeBackend;
use crate::cluster::join::{self, token_record, JoinToken, DEFAULT_TOKEN_TTL};
use crate::cluster::pki;
use crate::cluster::tls::ReloadingCert;
use crate::cluster::view::NodeView;
use crate::cluster::write_gate::WriteRules;
use crate::config::{GcConfig, Layout, NodeConfig, TagsConfig, TlsConfig, TlsMode};
use crate::identity::api::NodeIdentity;
use crate::identity::audit::AuditLog;
use crate::identity::auth::Authenticator;
use crate::registry::api::NodeRegistry;
use crate::registry::gc::{collect_once, GcStats};
use crate::registry::lifecycle::{autoprune_once, close_expired_once, prune_history_once};
use crate::registry::uploads::{UploadCaps, UploadManager};
use crate::util::{now_ms, random_hex};
use berth_replication::{BlobStore, Replicator};

/// Addresses a new node is given by the operator.
#[derive(Debug, Clone)]
pub struct NodeAddrs {
    pub region: String,
    pub http_listen: String,
    pub peer_listen: String,
    pub http_advertise: Option<String>,
    pub peer_advertise: Option<String>,
}

impl NodeAddrs {
    /// The configuration of a new node at these addresses, checked.
    fn config(&self, node_id: u64, cluster_id: &str, http_advertise: String, peer_advertise: String, raft: MetaConfig) -> anyhow::Result<NodeConfig> {
        let config = NodeConfig {
            node_id,
            cluster_id: cluster_id.to_string(),
            region: self.region.clone(),
            http_listen: self.http_listen.clone(),
            http_advertise,
            peer_listen: self.peer_listen.clone(),
            peer_advertise,
            upload_timeout_secs: crate::config::default_upload_timeout_secs(),
            audit_retention_days: crate::config::default_audit_retention_days(),
            raft,
            replication: Default::default(),
            gc: Default::default(),
            tags: Default::default(),
            mirror: Default::default(),
            oauth: Default::default(),
            auth: Default::default(),
            scan: Default::default(),
            tls: Default::default(),
            limits: Default::default(),
            notifications: Default::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Fills in advertised addresses and checks everything.
    fn resolve(&self) -> anyhow::Result<(String, String)> {
        self.region.parse::<berth_common::Region>()?;
        let http: SocketAddr = self.http_listen.parse().with_context(|| format!("--http {:?} is not an ip:port address", self.http_listen))?;
        let peer: SocketAddr = self.peer_listen.parse().with_context(|| format!("--peer {:?} is not an ip:port address", self.peer_listen))?;
        let http_adv = match &self.http_advertise {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if http.ip().is_unspecified() => {
                bail!("--http binds {http}; give --advertise-http with the URL clients use")
            }
            None => format!("http://{http}"),
        };
        let peer_adv = match &self.peer_advertise {
            Some(a) => a.clone(),
            None if peer.ip().is_unspecified() => bail!("--peer binds {peer}; give --advertise-peer with the host:port other nodes use"),
            None => peer.to_string(),
        };
        Ok((http_adv, peer_adv))
    }
}

pub struct InitOutcome {
    pub config: NodeConfig,
    pub token: JoinToken,
    /// Set when no password was given: shown once, never stored in clear.
    pub generated_password: Option<String>,
}

/// One of `init`'s writes, made as the operator who runs it.
async fn expect_done(meta: &MetaNodeHandle, cmd: MetaCommand) -> anyhow::Result<MetaResponse> {
    let kind = cmd.kind();
    match meta.write(berth_raft::Actor::OPERATOR, cmd).await? {
        MetaResponse::Refused(why) => bail!("{kind} refused: {why}"),
        other => Ok(other),
    }
}

/// `berth cluster init`: a one-node cluster with its CA, keys, admin user
/// and a first join token, written to `dir`.
pub async fn init_cluster(dir: &Path, addrs: &NodeAddrs, admin_password: Option<String>, raft: MetaConfig) -> anyhow::Result<InitOutcome> {
    let layout = Layout::new(dir);
    layout.ensure_fresh()?;
    let (http_advertise, peer_advertise) = addrs.resolve()?;
    raft.validate().map_err(|e| anyhow::anyhow!("raft: {e}"))?;
    let cluster_id = random_hex(8);
    let ca = pki::new_ca(&cluster_id)?;
    let node_id = 1;
    let tls = pki::new_node_tls(&ca, node_id)?;
    let config = addrs.config(node_id, &cluster_id, http_advertise, peer_advertise, raft)?;
    let (password, generated_password) = match admin_password {
        Some(p) if p.len() < 8 => bail!("the admin password must be at least 8 characters"),
        Some(p) => (p, None),
        None => {
            let p = random_hex(12);
            (p.clone(), Some(p))
        }
    };

    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::cluster::ca::Keyring::new(&layout).put(&pki::fingerprint(&ca.cert_pem)?, &ca.key_pem)?;
    let store = RocksStore::open(&layout.meta()).with_context(|| format!("cannot open {}", layout.meta().display()))?;
    let local_ip = config.peer_listen.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    let meta = MetaNodeHandle::start(node_id, store, &tls, LinkFilter::default(), config.raft.clone(), local_ip, Arc::new(WriteRules)).await?;
    let result = async {
        meta.initialize(MetaNode { peer_addr: config.peer_advertise.clone(), region: config.region.clone() }).await?;
        meta.wait_for_leader(Duration::from_secs(10)).await?;
        let now = now_ms();
        expect_done(
            &meta,
            MetaCommand::Bootstrap(ClusterRecord {
                cluster_id: cluster_id.clone(),
                ca_cert_pem: ca.cert_pem.clone(),
                // Kept on this node's disk (and the voters'), never replicated.
                ca_key_pem: String::new(),
                token_signing_key_pem: crate::identity::jwt::new_signing_key_pem()?,
                created_at_ms: now,
            }),
        )
        .await?;
        let registered = expect_done(
            &meta,
            MetaCommand::RegisterNode {
                registration: NodeRegistration {
                    region: config.region.clone(),
                    peer_addr: config.peer_advertise.clone(),
                    http_addr: config.http_advertise.clone(),
                    role: NodeRole::Auto,
                },
                token: None,
                now_ms: now,
            },
        )
        .await?;
        if registered != MetaResponse::NodeId(node_id) {
            bail!("first node registered as {registered:?}, expected node {node_id}");
        }
        expect_done(
            &meta,
            MetaCommand::PutUser(UserRecord {
                name: "admin".into(),
                password_hash: crate::identity::auth::hash_password(&password)?,
                superuser: true,
                created_at_ms: now,
            }),
        )
        .await?;
        let token = JoinToken::generate(&pki::fingerprint(&ca.cert_pem)?);
        expect_done(&meta, token_record(&token, DEFAULT_TOKEN_TTL, None)).await?;
        Ok(token)
    }
    .await;
    meta.shutdown().await;
    let token = result?;
    layout.write_new(&config, &tls, &random_hex(24))?;
    Ok(InitOutcome { config, token, generated_password })
}

/// `berth cluster join`: registers with the cluster through `seed` and
/// writes this node's directory. The node runs with `node start`.
pub async fn join_cluster(dir: &Path, addrs: &NodeAddrs, seed: &str, token: &str, learner: bool, raft: MetaConfig) -> anyhow::Result<NodeConfig> {
    let layout = Layout::new(dir);
    layout.ensure_fresh()?;
    let (http_advertise, peer_advertise) = addrs.resolve()?;
    raft.validate().map_err(|e| anyhow::anyhow!("raft: {e}"))?;
    let token = JoinToken::parse(token)?;
    let outcome = join::request_join(seed, &token, &addrs.region, &peer_advertise, &http_advertise, learner).await?;
    let config = addrs.config(outcome.reply.node_id, &outcome.reply.cluster_id, http_advertise, peer_advertise, raft)?;
    let tls = PeerTls { ca_pem: outcome.reply.ca_pem, cert_pem: outcome.reply.cert_pem, key_pem: outcome.key_pem };
    layout.write_new(&config, &tls, &random_hex(24))?;
    Ok(config)
}

/// What `berth cluster recover` found or did.
pub struct RecoverOutcome {
    pub recovery: berth_raft::store::Recovery,
    /// Whether this node holds the cluster CA's key: without it no new node
    /// can be given a certificate, so none can join the recovered cluster.
    pub holds_ca_key: bool,
}

/// `berth cluster recover --force-new-cluster`: with the node stopped, makes
/// it the only voter of a cluster that keeps all the metadata it holds (see
/// [`RocksStore::force_new_cluster`]). With `dry_run`, only says what it
/// would do.
pub fn recover_cluster(dir: &Path, dry_run: bool) -> anyhow::Result<RecoverOutcome> {
    let layout = Layout::new(dir);
    let config = layout.load()?;
    let store =
        RocksStore::open(&layout.meta()).with_context(|| format!("cannot open the metadata store {} (stop the node first)", layout.meta().display()))?;
    let recovery = store.force_new_cluster(config.node_id, dry_run).map_err(|e| anyhow::anyhow!(e))?;
    let holds_ca_key = std::fs::read_dir(layout.ca_keys()).map(|mut d| d.next().is_some()).unwrap_or(false);
    Ok(RecoverOutcome { recovery, holds_ca_key })
}

/// What `berth cluster restore` made.
pub struct RestoreOutcome {
    pub init: InitOutcome,
    pub records: usize,
    pub blobs_restored: usize,
    /// Blobs that manifests use but the backup does not hold.
    pub blobs_missing: Vec<String>,
    pub backup_cluster_id: String,
    pub backup_applied_index: Option<u64>,
}

/// `berth cluster restore`: a new cluster in `dir` (as `cluster init`
/// makes one) holding the backup in `from` (see [`crate::cluster::backup`]).
/// Nothing is written to `dir` when the backup cannot be read.
pub async fn restore_cluster(dir: &Path, addrs: &NodeAddrs, from: &Path) -> anyhow::Result<RestoreOutcome> {
    let mut backup = crate::cluster::backup::read(from)?;
    // The admin made here is replaced by the backup's users.
    let init = init_cluster(dir, addrs, None, MetaConfig::default()).await?;
    let layout = Layout::new(dir);
    let blobs =
        berth_replication::BlobStore::open(&layout.blobs()).await.with_context(|| format!("cannot open the blob store in {}", layout.blobs().display()))?;
    let (blobs_restored, blobs_missing) = crate::cluster::backup::restore_blobs(&mut backup, from, &blobs, init.config.node_id).await?;
    let (backup_cluster_id, backup_applied_index) = (backup.cluster_id, backup.applied_index);
    let store = RocksStore::open(&layout.meta()).with_context(|| format!("cannot open {}", layout.meta().display()))?;
    let records = store.import_records(backup.records).map_err(|e| anyhow::anyhow!("importing the backup: {e}"))?;
    Ok(RestoreOutcome { init, records, blobs_restored, blobs_missing, backup_cluster_id, backup_applied_index })
}

/// A node that is running: its metadata handle, its bound addresses, and
/// the way to stop it.
pub struct RunningNode {
    pub config: NodeConfig,
    pub meta: MetaNodeHandle,
    pub uploads: Arc<UploadManager>,
    pub replicator: Replicator,
    pub gc_stats: Arc<GcStats>,
    /// This node's usage-log queue: tests flush it instead of waiting out
    /// the batching interval.
    pub audit: AuditLog,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Pre-bound listeners, for tests and `berth dev` that pick ports first.
pub struct Listeners {
    pub http: TcpListener,
    pub peer: TcpListener,
}

/// Starts the node in `dir`. With `listeners`, serves on those instead of
/// binding the configured addresses.
pub async fn start_node(dir: &Path, listeners: Option<Listeners>, filter: LinkFilter) -> anyhow::Result<RunningNode> {
    start_node_with(dir, listeners, filter, None).await
}

/// [`start_node`], with the `[tls]` section of the configuration replaced
/// (the `node start --tls-*` flags).
pub async fn start_node_with(dir: &Path, listeners: Option<Listeners>, filter: LinkFilter, tls_override: Option<TlsConfig>) -> anyhow::Result<RunningNode> {
    let layout = Layout::new(dir);
    let config = load_config(&layout, tls_override)?;
    // The operator's certificate is checked before anything starts.
    let operator_cert = match (&config.tls.mode, &config.tls.cert_file, &config.tls.key_file) {
        (TlsMode::Files, Some(c), Some(k)) => Some(crate::cluster::tls::load_files(c, k)?),
        _ => None,
    };
    let tls = layout.read_tls()?;
    let operator_token = layout.read_operator_token()?;
    let listeners = bind(listeners, &config).await?;
    let http_addr = listeners.http.local_addr()?;
    let peer_addr = listeners.peer.local_addr()?;
    let store = RocksStore::open(&layout.meta()).with_context(|| format!("cannot open metadata store {}", layout.meta().display()))?;
    let meta = MetaNodeHandle::start(config.node_id, store, &tls, filter.clone(), config.raft.clone(), Some(peer_addr.ip()), Arc::new(WriteRules)).await?;
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let authority = crate::cluster::ca::Authority::new(meta.clone(), &layout);
    let ca_changes = start_peer_service(&meta, &authority, &tls, listeners.peer, &rx, &mut tasks);

    let blobs = BlobStore::open(&layout.blobs()).await.with_context(|| format!("cannot open blob store {}", layout.blobs().display()))?;
    let view = Arc::new(NodeView::new(meta.clone(), config.region.clone()));
    let (replicator, blob_tasks) = Replicator::start(blobs.clone(), view, peer_addr, &tls, filter.clone(), config.replication.clone(), rx.clone())
        .with_context(|| format!("cannot start the blob transport on {peer_addr} (udp)"))?;
    tasks.extend(blob_tasks);
    let caps = UploadCaps { per_account: config.limits.uploads_per_account, per_node: config.limits.uploads_per_node };
    let uploads = Arc::new(UploadManager::new(config.node_id, blobs, Duration::from_secs(config.upload_timeout_secs), caps).pipelined(replicator.clone()));
    let (audit, audit_task) = AuditLog::start(meta.clone(), config.region.clone(), config.audit_retention_days, rx.clone());
    tasks.push(audit_task);
    let auth = authenticator(&meta, &config, operator_token, &audit, &rx, &mut tasks)?;
    let gc_stats = Arc::new(GcStats::default());
    crate::metrics::handle();
    let backend =
        Arc::new(NodeBackend::new(meta.clone(), config.clone(), auth.clone(), replicator.clone(), uploads.clone(), gc_stats.clone(), authority.clone()));
    let site = crate::notify::Site::new(config.node_id, &config.region, &config.notifications, &config.http_advertise);
    let registry = Arc::new(NodeRegistry::new(meta.clone(), uploads.clone(), replicator.clone(), auth.clone(), audit.clone()).with_site(site.clone()));
    let scanner = crate::scan::Scanner::new(meta.clone(), replicator.clone(), registry.clone(), config.scan.clone());
    tasks.push(tokio::spawn(scanner.clone().run(rx.clone())));
    let identity = Arc::new(
        NodeIdentity::new(meta.clone(), auth, audit.clone())
            .with_scanner(scanner)
            .with_notifications(crate::notify::Policy::new(&config.notifications))
            .with_tag_expiration_options(config.tags.expiration_options_s()?)
            .with_oauth({
                config.oauth.validate()?;
                config.oauth.clone()
            }),
    );
    {
        let weak: std::sync::Weak<dyn berth_gateway::Registry> = Arc::downgrade(&(registry.clone() as Arc<dyn berth_gateway::Registry>));
        registry.set_pull_through(crate::registry::proxycache::ProxyCache::new(meta.clone(), weak, config.mirror.ca_file.clone()));
    }
    let mirror_worker =
        crate::registry::mirror::sync::MirrorWorker::new(meta.clone(), registry.clone(), audit.clone(), config.mirror.clone(), config.region.clone());
    start_notifications(&meta, &audit, &config, site, &rx, &mut tasks)?;

    let forwarder = forwarder(&tls, &config)?;
    let https = https_config(&config, operator_cert, &authority, ca_changes, &rx, &mut tasks).await?;
    let services = berth_gateway::Services { backend, registry, identity, http: forwarder, public_url: Some(config.http_advertise.clone()) };
    let http_limits = config.limits.http();
    let http_stop = stopped(rx.clone());
    let http_listener = listeners.http;
    tasks.push(tokio::spawn(async move {
        let served = match https {
            None => berth_gateway::serve(http_listener, services, http_limits, http_stop).await,
            Some(tls) => berth_gateway::serve_tls(http_listener, services, tls, http_limits, http_stop).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "http service stopped");
        }
    }));

    tasks.push(tokio::spawn(expire_uploads(uploads.clone(), rx.clone())));
    tasks.push(tokio::spawn(collect_garbage(meta.clone(), replicator.store().clone(), config.gc.clone(), gc_stats.clone(), rx.clone())));
    tasks.push(tokio::spawn(close_expired_tags(meta.clone(), audit.clone(), config.tags.clone(), rx.clone())));
    tasks.push(tokio::spawn(mirror_worker.run(rx.clone())));
    tasks.push(tokio::spawn(berth_raft::membership::run(meta.clone(), rx)));
    tracing::info!(node_id = config.node_id, region = %config.region, http = %http_addr, peer = %peer_addr, "node started");
    Ok(RunningNode { config, meta, uploads, replicator, gc_stats, audit, http_addr, peer_addr, shutdown, tasks })
}

/// The node's configuration, with `[tls]` replaced when `tls_override`
/// says (and then checked again).
fn load_config(layout: &Layout, tls_override: Option<TlsConfig>) -> anyhow::Result<NodeConfig> {
    let mut config = layout.load()?;
    if let Some(t) = tls_override {
        config.tls = t;
        config.validate()?;
    }
    Ok(config)
}

/// `listeners` when given, else the configured addresses, bound.
async fn bind(listeners: Option<Listeners>, config: &NodeConfig) -> anyhow::Result<Listeners> {
    Ok(match listeners {
        Some(l) => l,
        None => Listeners {
            http: TcpListener::bind(&config.http_listen).await.with_context(|| format!("cannot listen on {} (http_listen)", config.http_listen))?,
            peer: TcpListener::bind(&config.peer_listen).await.with_context(|| format!("cannot listen on {} (peer_listen)", config.peer_listen))?,
        },
    })
}

/// Resolves once `rx` says stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The CA's upkeep and the peer service (Raft, forwarded writes, joins,
/// CA calls); returns the signing CA's changes, which renew the cluster
/// HTTPS certificate.
fn start_peer_service(
    meta: &MetaNodeHandle,
    authority: &Arc<crate::cluster::ca::Authority>,
    tls: &PeerTls,
    listener: TcpListener,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> watch::Receiver<String> {
    let custody = crate::cluster::ca::Custody::new(authority.clone(), &tls.cert_pem);
    let ca_changes = custody.signing_changes();
    tasks.push(tokio::spawn(custody.run(rx.clone())));
    let ca_service = crate::cluster::join::CaService::handler(authority.clone());
    let (peer_meta, peer_tls, peer_stop) = (meta.clone(), tls.clone(), stopped(rx.clone()));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = berth_raft::server::serve(peer_meta, ca_service, &peer_tls, listener, peer_stop).await {
            tracing::error!(error = %e, "peer service stopped");
        }
    }));
    ca_changes
}

/// Who is asking: the operator's token, local users and, with `[auth.ldap]`,
/// the directory (whose teams the leader syncs).
fn authenticator(
    meta: &MetaNodeHandle,
    config: &NodeConfig,
    operator_token: String,
    audit: &AuditLog,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Arc<Authenticator>> {
    let directory = match &config.auth.ldap {
        Some(l) => Some(Arc::new(crate::identity::ldap::Directory::new(l).context("auth.ldap")?)),
        None => None,
    };
    if let Some(dir) = &directory {
        tasks.push(tokio::spawn(crate::identity::auth::sync_all_teams(meta.clone(), dir.clone(), rx.clone())));
    }
    Ok(Arc::new(Authenticator::new(meta.clone(), operator_token, audit.clone()).with_directory(directory)))
}

/// The notification outbox's delivery and the tag-expiry events.
fn start_notifications(
    meta: &MetaNodeHandle,
    audit: &AuditLog,
    config: &NodeConfig,
    site: crate::notify::Site,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<()> {
    let audit = audit.clone();
    let usage_log: crate::notify::deliver::UsageLog = Arc::new(move |kind, ns, repo, meta| audit.record_node(kind, ns, repo, meta));
    let deliverer = crate::notify::deliver::Deliverer::new(meta.clone(), usage_log, config.notifications.clone(), site)?;
    tasks.push(tokio::spawn(deliverer.run(rx.clone())));
    tasks.push(tokio::spawn(emit_expiry_notifications(meta.clone(), config.notifications.expiry_interval_secs, rx.clone())));
    Ok(())
}

/// The client that forwards requests to other nodes, trusting the cluster CA.
fn forwarder(tls: &PeerTls, config: &NodeConfig) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(tls.ca_pem.as_bytes()).context("cluster CA")?)
        // Other nodes close a connection idle for http_idle_timeout_secs;
        // reusing one just as it closes fails the forwarded request, so
        // the pool lets it go first.
        .pool_idle_timeout(Duration::from_secs(config.limits.http_idle_timeout_secs).mul_f64(0.5))
        .build()
        .context("http client")
}

/// The HTTP listener's TLS, as `[tls] mode` says, with the task that keeps
/// its certificate current; `None` for plain HTTP.
async fn https_config(
    config: &NodeConfig,
    operator_cert: Option<rustls::sign::CertifiedKey>,
    authority: &Arc<crate::cluster::ca::Authority>,
    ca_changes: watch::Receiver<String>,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match config.tls.mode {
        TlsMode::Off => {
            tasks.push(tokio::spawn(crate::cluster::tls::ignore_reloads(rx.clone())));
            None
        }
        TlsMode::Files => {
            let resolver = ReloadingCert::new(operator_cert.expect("loaded above"));
            let (c, k) = (config.tls.cert_file.clone().expect("validated"), config.tls.key_file.clone().expect("validated"));
            tasks.push(tokio::spawn(crate::cluster::tls::watch_files(resolver.clone(), c, k, rx.clone())));
            Some(crate::cluster::tls::server_config(resolver)?)
        }
        TlsMode::Cluster => {
            let resolver = ReloadingCert::new(cluster_certificate(authority, config).await?);
            tasks.push(tokio::spawn(renew_cluster_certificate(authority.clone(), config.clone(), resolver.clone(), ca_changes, rx.clone())));
            Some(crate::cluster::tls::server_config(resolver)?)
        }
    })
}

async fn collect_garbage(meta: MetaNodeHandle, store: BlobStore, cfg: GcConfig, stats: Arc<GcStats>, mut shutdown: watch::Receiver<bool>) {
    if cfg.interval_secs == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.interval_secs)) => {
                collect_once(&meta, &store, Duration::from_secs(cfg.grace_secs), &stats).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn close_expired_tags(meta: MetaNodeHandle, audit: AuditLog, cfg: TagsConfig, mut shutdown: watch::Receiver<bool>) {
    if cfg.expiry_interval_secs == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.expiry_interval_secs)) => {
                let now = now_ms();
                close_expired_once(&meta, now).await;
                autoprune_once(&meta, &audit, now).await;
                prune_history_once(&meta, now).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn emit_expiry_notifications(meta: MetaNodeHandle, interval_secs: u64, mut shutdown: watch::Receiver<bool>) {
    if interval_secs == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(interval_secs)) => {
                crate::notify::expiry::emit_expiring_once(&meta, now_ms()).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// A cluster-signed certificate for this node, once the cluster record (and
/// its CA) has reached this node.
async fn cluster_certificate(authority: &crate::cluster::ca::Authority, config: &NodeConfig) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while authority.trust().is_err() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "tls mode cluster: the cluster CA has not reached this node within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = crate::cluster::tls::names_for(&config.http_advertise, &config.http_listen);
    crate::cluster::ca::cluster_server_cert(authority, &names).await
}

/// Renews the cluster-signed certificate when two thirds of its life passed,
/// at once when the cluster CA rotates, and on SIGHUP.
async fn renew_cluster_certificate(
    authority: Arc<crate::cluster::ca::Authority>,
    config: NodeConfig,
    resolver: Arc<ReloadingCert>,
    mut ca_changes: watch::Receiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let renew_every = Duration::from_secs(crate::cluster::pki::SERVER_CERT_DAYS * 24 * 3600 * 2 / 3);
    ca_changes.mark_unchanged();
    let mut hup = crate::cluster::tls::hangups();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(renew_every) => {}
            Ok(()) = ca_changes.changed() => {}
            _ = crate::cluster::tls::next_hangup(&mut hup) => {}
            _ = shutdown.changed() => return,
        }
        match cluster_certificate(&authority, &config).await {
            Ok(fresh) => {
                resolver.swap(fresh);
                tracing::info!("cluster TLS certificate renewed");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cluster TLS certificate not renewed; will retry"),
        }
    }
}

/// Drops idle upload sessions, a tenth of the timeout after they expire at worst.
async fn expire_uploads(uploads: Arc<UploadManager>, mut shutdown: watch::Receiver<bool>) {
    let period = (uploads.ttl() / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => { uploads.expire().await; }
            _ = shutdown.changed() => return,
        }
    }
}

impl RunningNode {
    /// Stops serving, then stops Raft; returns when everything has ended.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.replicator.close();
        for mut t in self.tasks {
            // Graceful first; a peer holding a connection open must not keep
            // the node (and its RocksDB lock) alive.
            if tokio::time::timeout(Duration::from_secs(3), &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), self.replicator.wait_idle()).await;
        self.meta.shutdown().await;
        tracing::info!(node_id = self.config.node_id, "node stopped");
    }
}
