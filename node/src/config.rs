//! `berth.toml`: a node's configuration, written by `cluster init` or
//! `cluster join` into the data directory and read by `node start`.
//!
//! Every field is documented here; unknown fields are refused, so a typo
//! fails loudly instead of being ignored.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_raft::MetaConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, assigned by the cluster when it registered.
    pub node_id: u64,
    /// The cluster this node belongs to (random, made by `cluster init`).
    pub cluster_id: String,
    /// Where this node runs; placement and voter spread use it.
    pub region: String,
    /// Address the registry/API HTTP listener binds.
    pub http_listen: String,
    /// How clients and other nodes reach the HTTP listener (a URL).
    pub http_advertise: String,
    /// Address the peer (Raft gRPC, mutual TLS) listener binds.
    pub peer_listen: String,
    /// How other nodes reach the peer listener (`host:port`).
    pub peer_advertise: String,
    /// An upload session idle for this long is dropped with its staging file.
    #[serde(default = "default_upload_timeout_secs")]
    pub upload_timeout_secs: u64,
    /// Usage-log records older than this many days are dropped (0: kept forever).
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u64,
    /// Raft timing; the defaults suit regions 100–250 ms apart.
    #[serde(default)]
    pub raft: MetaConfig,
    /// Blob transport and replication: windows, reconciler, min_copies.
    #[serde(default)]
    pub replication: berth_replication::ReplicationConfig,
    /// Online garbage collection of unreferenced blobs.
    #[serde(default)]
    pub gc: GcConfig,
    /// The tag lifecycle worker.
    #[serde(default)]
    pub tags: TagsConfig,
    /// HTTPS on the registry/API listener: off, the operator's files, or a
    /// certificate from the cluster CA.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Caps on what clients may hold on this node at once.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Repository notifications: where they may go, how long delivery is
    /// retried, and the SMTP server for e-mail.
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// The repository-mirror sync worker.
    #[serde(default)]
    pub mirror: MirrorSyncConfig,
    /// OAuth applications' flows.
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// How users sign in besides berth's own passwords (`[auth.ldap]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Vulnerability scanning of pushed images.
    #[serde(default)]
    pub scan: ScanConfig,
}

/// `[auth]`: sign-in against a directory. Local users (and every robot and
/// token) keep working whatever is configured here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub ldap: Option<LdapConfig>,
}

/// `[auth.ldap]`: a login whose name has no local password is checked by
/// binding as that user in the directory (see `crate::identity::ldap`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA certificates trusted for `ldaps://` and StartTLS (the system's
    /// roots otherwise).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users and groups (anonymous
    /// search when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the service account's password (one line).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub base_dn: String,
    /// Extra conditions on user entries, e.g. `(objectClass=inetOrgPerson)`;
    /// ANDed with `(uid_attr=<escaped name>)`.
    #[serde(default = "default_ldap_user_filter")]
    pub user_filter: String,
    /// The attribute holding the login name.
    #[serde(default = "default_ldap_uid_attr")]
    pub uid_attr: String,
    /// The attribute holding the e-mail address.
    #[serde(default = "default_ldap_mail_attr")]
    pub mail_attr: String,
    /// How long one directory operation may take before the login is
    /// refused as unavailable (503), s.
    #[serde(default = "default_ldap_timeout_secs")]
    pub timeout_secs: u64,
    /// Group-to-team sync; off when `teams` is empty.
    #[serde(default)]
    pub group_base_dn: Option<String>,
    /// Groups a user is in; `{dn}` and `{uid}` are replaced by the user's
    /// DN and name, escaped.
    #[serde(default = "default_ldap_group_filter")]
    pub group_filter: String,
    /// The attribute naming a group in `teams`.
    #[serde(default = "default_ldap_group_name_attr")]
    pub group_name_attr: String,
    /// LDAP group name → `org/team` whose members follow the group.
    #[serde(default)]
    pub teams: std::collections::BTreeMap<String, String>,
    /// How often the leader re-syncs every federated user's teams, s.
    #[serde(default = "default_ldap_sync_interval_secs")]
    pub sync_interval_secs: u64,
}

fn default_ldap_user_filter() -> String {
    "(objectClass=*)".into()
}
fn default_ldap_uid_attr() -> String {
    "uid".into()
}
fn default_ldap_mail_attr() -> String {
    "mail".into()
}
fn default_ldap_timeout_secs() -> u64 {
    5
}
fn default_ldap_group_filter() -> String {
    "(member={dn})".into()
}
fn default_ldap_group_name_attr() -> String {
    "cn".into()
}
fn default_ldap_sync_interval_secs() -> u64 {
    300
}

impl LdapConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.url.starts_with("ldap://") || self.url.starts_with("ldaps://")) {
            bail!("url must start with ldap:// or ldaps://");
        }
        if self.starttls && self.url.starts_with("ldaps://") {
            bail!("starttls is for ldap:// urls; ldaps:// is TLS already");
        }
        if self.bind_dn.is_some() != self.bind_password_file.is_some() {
            bail!("bind_dn and bind_password_file go together");
        }
        if self.base_dn.is_empty() {
            bail!("base_dn must not be empty");
        }
        for (what, f) in [("user_filter", &self.user_filter), ("group_filter", &self.group_filter)] {
            if !(f.starts_with('(') && f.ends_with(')')) {
                bail!("{what} must be a parenthesized LDAP filter");
            }
        }
        if !(1..=60).contains(&self.timeout_secs) {
            bail!("timeout_secs must be 1 to 60");
        }
        if self.sync_interval_secs == 0 {
            bail!("sync_interval_secs must be at least 1");
        }
        if !self.teams.is_empty() && self.group_base_dn.is_none() {
            bail!("teams needs group_base_dn");
        }
        for (group, team) in &self.teams {
            if team.split_once('/').is_none_or(|(o, t)| o.is_empty() || t.is_empty() || t.contains('/')) {
                bail!("teams: {group} maps to {team:?}, not org/team");
            }
        }
        Ok(())
    }
}

/// `[oauth]`: how long what the OAuth flows hand out lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// How long an authorization code may be exchanged, s (1 to 600;
    /// Quay's, and the default, is 600).
    pub code_ttl_secs: u64,
    /// How long a token an application gets lives, s (at least 60).
    pub token_ttl_secs: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig { code_ttl_secs: 600, token_ttl_secs: 365 * 24 * 3600 }
    }
}

impl OAuthConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=600).contains(&self.code_ttl_secs) {
            bail!("[oauth] code_ttl_secs must be 1 to 600");
        }
        if self.token_ttl_secs < 60 {
            bail!("[oauth] token_ttl_secs must be at least 60");
        }
        Ok(())
    }
}

/// `[notifications]` (see `crate::notify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Networks (CIDRs) a notification may target although they are
    /// loopback, link-local or private, which are refused by default
    /// (a notification must not become a way into the cluster's network).
    pub allowed_networks: Vec<String>,
    /// The registry's public name (`host[:port]`, or a URL) for the
    /// payloads' `docker_url` and `homepage`; default: this node's
    /// `http_advertise`.
    pub registry_name: Option<String>,
    /// How long an event is retried (exponential backoff with jitter)
    /// before it is given up on, s.
    pub retry_total_secs: u64,
    /// The longest wait between two attempts, s.
    pub retry_max_interval_secs: u64,
    /// One attempt's timeout (connect, send, answer), s.
    pub attempt_timeout_secs: u64,
    /// How often the deliverer (the leader) looks for waiting events, ms.
    pub poll_interval_ms: u64,
    /// How often the leader looks for tags about to expire, for
    /// `repo_image_expiry`, s (0: never).
    pub expiry_interval_secs: u64,
    /// The SMTP server for `email` notifications; without it they are refused.
    pub smtp: Option<SmtpConfig>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            allowed_networks: Vec::new(),
            registry_name: None,
            retry_total_secs: 3600,
            retry_max_interval_secs: 300,
            attempt_timeout_secs: 10,
            poll_interval_ms: 500,
            expiry_interval_secs: 300,
            smtp: None,
        }
    }
}

impl NotificationsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for n in &self.allowed_networks {
            n.parse::<ipnet::IpNet>().with_context(|| format!("allowed_networks: {n:?} is not a CIDR such as 127.0.0.0/8"))?;
        }
        if self.attempt_timeout_secs == 0 || self.poll_interval_ms == 0 || self.retry_max_interval_secs == 0 {
            bail!("attempt_timeout_secs, retry_max_interval_secs and poll_interval_ms must be at least 1");
        }
        if let Some(s) = &self.smtp {
            if s.host.is_empty() || s.from.parse::<lettre::message::Mailbox>().is_err() {
                bail!("smtp needs a host and a from address such as \"berth <berth@example.com>\"");
            }
            if s.password.is_some() && s.password_file.is_some() {
                bail!("smtp: password or password_file, not both");
            }
        }
        Ok(())
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// Plain, then STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// `[notifications.smtp]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 25 with `none`, 587 with `starttls`, 465 with `tls`.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub user: Option<String>,
    /// The password itself, or (better) a file holding it; never logged.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The sender, such as `berth <registry@example.com>`.
    pub from: String,
}

/// Without the password: a configuration may be logged.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("password_file", &self.password_file)
            .field("from", &self.from)
            .finish()
    }
}

/// Caps on what one client, or all clients together, may hold on this
/// node: each is something an outsider or a plain user could otherwise
/// grow until the node runs out of descriptors or memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upload sessions one account may have open on this node at once;
    /// more is a 429 TOOMANYREQUESTS. A client pushes a few layers in
    /// parallel: dozens open at once is a leak or an attack.
    pub uploads_per_account: usize,
    /// Upload sessions all accounts together may have open on this node.
    pub uploads_per_node: usize,
    /// HTTP listener: once a request's first byte arrives its headers must
    /// be complete within this many seconds, and a new connection (its TLS
    /// handshake included) must send its first request's headers within
    /// as long; otherwise the connection is closed. Slow or half-sent
    /// headers otherwise hold a connection forever.
    pub http_header_timeout_secs: u64,
    /// HTTP listener: a connection with no request in flight (none being
    /// handled, no response being sent) for this many seconds is closed.
    pub http_idle_timeout_secs: u64,
    /// HTTP listener: connections served at once. Past this the node still
    /// accepts (the listen queue never fills): over HTTP the connection
    /// gets a 503 UNAVAILABLE with Retry-After and is closed, over HTTPS it
    /// is closed at once (an answer would cost a TLS handshake). Each
    /// connection is a descriptor, so keep this well under the process's
    /// open-file limit (`ulimit -n`).
    pub http_max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { uploads_per_account: 64, uploads_per_node: 4096, http_header_timeout_secs: 20, http_idle_timeout_secs: 60, http_max_connections: 4096 }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.uploads_per_account == 0 || self.uploads_per_node == 0 {
            bail!("uploads_per_account and uploads_per_node must be at least 1");
        }
        if self.http_header_timeout_secs == 0 || self.http_idle_timeout_secs == 0 || self.http_max_connections == 0 {
            bail!("http_header_timeout_secs, http_idle_timeout_secs and http_max_connections must be at least 1");
        }
        Ok(())
    }

    /// The HTTP listener's share of these limits.
    pub fn http(&self) -> berth_gateway::HttpLimits {
        berth_gateway::HttpLimits {
            header_timeout: std::time::Duration::from_secs(self.http_header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout_secs),
            max_connections: self.http_max_connections,
        }
    }
}

pub fn default_audit_retention_days() -> u64 {
    90
}

pub fn default_upload_timeout_secs() -> u64 {
    3600
}

impl NodeConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.region.parse::<berth_common::Region>()?;
        for (what, addr) in [("http_listen", &self.http_listen), ("peer_listen", &self.peer_listen)] {
            addr.parse::<std::net::SocketAddr>().with_context(|| format!("{what} {addr:?} is not an ip:port address"))?;
        }
        if !(self.http_advertise.starts_with("http://") || self.http_advertise.starts_with("https://")) {
            bail!("http_advertise {:?} must be an http:// or https:// URL", self.http_advertise);
        }
        if self.peer_advertise.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none_or(|p| p == 0) {
            bail!("peer_advertise {:?} must be host:port with a non-zero port", self.peer_advertise);
        }
        if self.tls.mode == TlsMode::Files && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            bail!("tls mode files needs cert_file and key_file");
        }
        if self.upload_timeout_secs == 0 {
            bail!("upload_timeout_secs must be at least 1");
        }
        self.raft.validate().map_err(|e| anyhow::anyhow!("raft: {e}"))?;
        self.limits.validate().context("limits")?;
        self.notifications.validate().context("notifications")?;
        if let Some(l) = &self.auth.ldap {
            l.validate().context("auth.ldap")?;
        }
        if self.tags.expiration_options_s().context("tags")?.is_empty() {
            bail!("tags: expiration_options must name at least one window");
        }
        Ok(())
    }
}

/// `[gc]`: online garbage collection of blobs (see `crate::registry::gc`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// An unreferenced blob is kept at least this long after it was last
    /// linked (uploaded or mounted), so a push in flight never loses it.
    pub grace_secs: u64,
    /// How often a collection runs, s (0: never).
    pub interval_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { grace_secs: 3600, interval_secs: 600 }
    }
}

/// `[tags]`: the tag lifecycle worker (see `crate::registry::lifecycle`).
/// Expiry itself needs no pass: every read checks it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagsConfig {
    /// How often the leader closes expired tag rows into history, applies
    /// the auto-prune policies and prunes history outside the time
    /// machine windows, s (0: never).
    pub expiry_interval_secs: u64,
    /// The time machine windows a namespace may choose
    /// (`tag_expiration_s`), each an integer and a unit: s, m, h, d, w
    /// or y. A namespace that never chose has two weeks.
    pub expiration_options: Vec<String>,
}

impl Default for TagsConfig {
    fn default() -> Self {
        TagsConfig { expiry_interval_secs: 60, expiration_options: ["0s", "1d", "1w", "2w", "4w"].map(String::from).to_vec() }
    }
}

impl TagsConfig {
    /// The allowed windows, in seconds.
    pub fn expiration_options_s(&self) -> anyhow::Result<Vec<u64>> {
        self.expiration_options
            .iter()
            .map(|o| crate::util::parse_lifetime_s(o).with_context(|| format!("expiration option {o:?} is not an integer and a unit (s, m, h, d, w, y)")))
            .collect()
    }
}

/// `[mirror]`: the repository-mirror sync worker. Every node runs one;
/// one node at a time syncs a given mirror, under a lease in the metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorSyncConfig {
    /// How often the node looks for mirrors due a sync, ms (0: this node
    /// never syncs).
    pub poll_interval_ms: u64,
    /// How long a sync's lease lasts unless renewed, s: after a node dies
    /// mid-sync, another takes over this long after its last renewal.
    pub lease_secs: u64,
    /// A PEM bundle of CAs trusted for upstream registries, beside the
    /// system's (an upstream with a private CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for MirrorSyncConfig {
    fn default() -> Self {
        MirrorSyncConfig { poll_interval_ms: 2_000, lease_secs: 15, ca_file: None }
    }
}

/// `[scan]`: the scan worker every node runs (see `crate::scan`). One
/// node scans a given manifest, under a lease in the metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// How often the node looks for queued scans and feed changes, ms (0:
    /// this node never scans; it still answers the security API).
    pub poll_interval_ms: u64,
    /// How long a scan's lease lasts unless renewed, s: after a node dies
    /// mid-scan, another takes the scan over this long after its last
    /// renewal.
    pub lease_secs: u64,
    /// How long a node that lacks some of a manifest's layers leaves its
    /// scan to a node that holds them all, ms.
    pub local_preference_ms: u64,
    /// Bounds on one layer: entries, uncompressed bytes, seconds.
    pub max_layer_entries: u64,
    pub max_layer_bytes: u64,
    pub max_layer_secs: u64,
    /// How long one scheduled fetch of a feed source may take, s.
    pub feed_fetch_timeout_secs: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            poll_interval_ms: 1_000,
            lease_secs: 30,
            local_preference_ms: 3_000,
            max_layer_entries: 500_000,
            max_layer_bytes: 32 << 30,
            max_layer_secs: 600,
            feed_fetch_timeout_secs: 600,
        }
    }
}

/// `[tls]`: HTTPS on the registry listener (see `crate::cluster::tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP (berth dev, loopback tests, or TLS ended in front).
    #[default]
    Off,
    /// The operator's certificate and key files.
    Files,
    /// A certificate from the cluster CA, made and renewed by the node.
    Cluster,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// With `files`: PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// With `files`: PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Where things live inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf() }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("berth.toml")
    }
    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }
    pub fn meta(&self) -> PathBuf {
        self.dir.join("meta")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("tls/node.pem")
    }
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("tls/node.key")
    }
    /// The cluster CA's private keys, one file per CA by fingerprint: on
    /// voters only (see `crate::cluster::ca`).
    pub fn ca_keys(&self) -> PathBuf {
        self.dir.join("tls/ca-keys")
    }
    /// A secret that makes the holder an administrator of this node's API:
    /// how `berth cluster … --data-dir D` authenticates on the node's host.
    pub fn operator_token(&self) -> PathBuf {
        self.dir.join("operator.token")
    }

    pub fn load(&self) -> anyhow::Result<NodeConfig> {
        let path = self.config();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (is this a berth data directory?)", path.display()))?;
        let cfg: NodeConfig = toml::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?;
        cfg.validate().with_context(|| format!("{} is invalid", path.display()))?;
        Ok(cfg)
    }

    pub fn read_tls(&self) -> anyhow::Result<berth_raft::PeerTls> {
        let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()));
        Ok(berth_raft::PeerTls { ca_pem: read(self.ca_cert())?, cert_pem: read(self.node_cert())?, key_pem: read(self.node_key())? })
    }

    pub fn read_operator_token(&self) -> anyhow::Result<String> {
        let p = self.operator_token();
        Ok(std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?.trim().to_string())
    }

    /// Refuses a directory that already holds a node.
    pub fn ensure_fresh(&self) -> anyhow::Result<()> {
        if self.config().exists() {
            bail!("{} already holds a berth node ({} exists)", self.dir.display(), self.config().display());
        }
        Ok(())
    }

    /// Writes TLS material, operator token and config; the config last, so a
    /// directory with a config is a complete one.
    pub fn write_new(&self, cfg: &NodeConfig, tls: &berth_raft::PeerTls, operator_token: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.dir.join("tls")).with_context(|| format!("cannot create {}", self.dir.display()))?;
        write_private(&self.ca_cert(), &tls.ca_pem)?;
        write_private(&self.node_cert(), &tls.cert_pem)?;
        write_private(&self.node_key(), &tls.key_pem)?;
        write_private(&self.operator_token(), operator_token)?;
        let text = toml::to_string_pretty(cfg).context("encode config")?;
        write_private(&self.config(), &format!("# berth node configuration; see node/src/config.rs for every field.\n{text}"))?;
        Ok(())
    }
}

/// Writes a file readable by its owner only, durably.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[auth.ldap]` as the README shows it, and the refusals of bad ones.
    #[test]
    fn ldap_section_parses_and_is_checked() {
        let good = r#"
            url = "ldaps://ldap.example.net"
            bind_dn = "cn=berth,dc=example,dc=net"
            bind_password_file = "/etc/berth/ldap-bind.pw"
            base_dn = "ou=people,dc=example,dc=net"
            group_base_dn = "ou=groups,dc=example,dc=net"
            [teams]
            developers = "acme/devs"
        "#;
        let cfg: LdapConfig = toml::from_str(good).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.uid_attr.as_str(), cfg.timeout_secs, cfg.group_filter.as_str()), ("uid", 5, "(member={dn})"));
        let base = |extra: &str| format!("base_dn = \"dc=x\"\n{extra}");
        let check = |text: String, why: &str| {
            let err = match toml::from_str::<LdapConfig>(&text) {
                Ok(c) => c.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(why), "{text}: {err}");
        };
        check(base("url = \"http://ldap\""), "ldap:// or ldaps://");
        check(base("url = \"ldaps://ldap\"\nstarttls = true"), "starttls");
        check(base("url = \"ldap://ldap\"\nbind_dn = \"cn=x\""), "go together");
        check(base("url = \"ldap://ldap\"\nuser_filter = \"uid=x\""), "parenthesized");
        check(base("url = \"ldap://ldap\"\ntimeout_secs = 0"), "timeout_secs");
        check(base("url = \"ldap://ldap\"\n[teams]\ng = \"acme/devs\""), "group_base_dn");
        check(base("url = \"ldap://ldap\"\ngroup_base_dn = \"dc=x\"\n[teams]\ng = \"acme\""), "not org/team");
        check(base("url = \"ldap://ldap\"\nbind_pasword_file = \"/x\""), "unknown field");
    }

    /// The `[notifications]` section as the deployment example writes it,
    /// and the refusals of a bad one.
    #[test]
    fn notifications_section_parses_and_is_checked() {
        let text = r#"
            allowed_networks = ["10.20.0.0/16", "127.0.0.0/8"]
            registry_name = "registry.example.net"
            retry_total_secs = 3600

            [smtp]
            host = "smtp.example.net"
            tls = "starttls"
            user = "registry"
            password = "hunter2"
            from = "berth <registry@example.net>"
        "#;
        let cfg: NotificationsConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let smtp = cfg.smtp.as_ref().unwrap();
        assert_eq!((smtp.tls, smtp.port), (SmtpTls::Starttls, None));
        assert!(!format!("{cfg:?}").contains("hunter2"), "the password stays out of logs");
        assert_eq!(cfg.attempt_timeout_secs, 10, "10 s per attempt by default");
        let bad: NotificationsConfig = toml::from_str(r#"allowed_networks = ["10.0.0.0/33"]"#).unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<NotificationsConfig>("allowed_network = []").is_err(), "a typo is refused");
        let no_from: NotificationsConfig = toml::from_str("[smtp]\nhost = \"h\"\nfrom = \"not an address\"").unwrap();
        assert!(no_from.validate().is_err());
    }
}
