//! The records the state machine stores, and the values inside them.
//!
//! Each is kept as a `berth_common::codec` envelope of format version
//! [`RECORD_VERSION`] under the key [`crate::state::keys`] gives it. This
//! module is a leaf: it names nothing else in the crate, so commands,
//! rules, storage and the node all read the same definitions.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::{Digest, NodeId};
use serde::{Deserialize, Serialize};

/// The format version of every stored record.
pub const RECORD_VERSION: u8 = 1;

/// The cluster's identity and the key that signs registry tokens,
/// replicated so that any node can issue and verify tokens.
///
/// `ca_cert_pem` is the CA the cluster was made with (see [`crate::ca`] for
/// the CA after a rotation). The CA's private key is kept by the voters on
/// their disks; `ca_key_pem` is empty, except in clusters made before that,
/// whose leader clears it ([`crate::ca::CaCommand::ForgetLegacyKey`]) once
/// it holds the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Private key (PKCS#8 PEM) that signs registry tokens.
    pub token_signing_key_pem: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    /// Voter when caught up, unless that would make the voter count even.
    Auto,
    /// Always a voter once caught up (operator's `promote`).
    Voter,
    /// Never a voter (`--learner`, operator's `demote`): edge regions.
    Learner,
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeRole::Auto => "auto",
            NodeRole::Voter => "voter",
            NodeRole::Learner => "learner",
        })
    }
}

/// A joining node's proof: the token id and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProof {
    pub id: String,
    pub secret_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub region: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub role: NodeRole,
    pub removed: bool,
    pub joined_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub revoked: bool,
    pub uses: u32,
    /// `None`: any number of joins until it expires or is revoked.
    pub max_uses: Option<u32>,
}

impl JoinTokenRecord {
    /// Why `proof` may not join a node at `now_ms`, or `None` if it may.
    /// The state machine decides with this when it counts a use; a seed
    /// asks it first, so a wrong token never becomes a log entry.
    pub fn refusal(&self, proof: &TokenProof, now_ms: u64) -> Option<&'static str> {
        if self.secret_sha256 != proof.secret_sha256 {
            Some("join token secret is wrong")
        } else if self.revoked {
            Some("join token was revoked")
        } else if now_ms >= self.expires_at_ms {
            Some("join token has expired")
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            Some("join token has been used up")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub superuser: bool,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub name: String,
    pub public: bool,
    pub created_at_ms: u64,
    pub description: String,
    /// Roles of users and robots (`ns+short`).
    pub users: BTreeMap<String, Role>,
    /// Roles of teams of the repository's organization.
    pub teams: BTreeMap<String, Role>,
}

impl RepositoryRecord {
    /// A private repository with no grants.
    pub fn new(name: &str, now_ms: u64) -> RepositoryRecord {
        RepositoryRecord {
            name: name.to_string(),
            public: false,
            created_at_ms: now_ms,
            description: String::new(),
            users: BTreeMap::new(),
            teams: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub repo: String,
    pub digest: Digest,
    pub media_type: String,
    /// As bytes, not a sequence of u8: the same encoding, written and read
    /// in one copy instead of one call per byte (a 4 MiB manifest).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Blobs (config and layers) this manifest references.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index).
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub pushed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub pushed_at_ms: u64,
}

/// Which nodes keep a copy of a namespace's blobs in the background.
/// Whatever the policy, any node can serve any blob (fetching on a miss),
/// and a push waits for `min_copies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Placement {
    /// Every node of every region (the default).
    #[default]
    Everywhere,
    /// Every node of these regions.
    Regions(Vec<String>),
    /// Only where it was pushed (and min_copies), and wherever it is pulled.
    OnDemand,
}

impl Placement {
    pub fn wants(&self, region: &str) -> bool {
        match self {
            Placement::Everywhere => true,
            Placement::Regions(r) => r.iter().any(|x| x == region),
            Placement::OnDemand => false,
        }
    }
}

/// A blob's membership in a repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobLink {
    pub size: u64,
    pub linked_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    /// Nodes with a verified copy.
    pub holders: BTreeSet<NodeId>,
    /// Manifests (in any repository) that reference the blob.
    pub refs: u64,
    /// Repositories the blob is linked into, and when it was last linked.
    pub repos: BTreeMap<String, u64>,
}

impl BlobRecord {
    pub fn new(size: u64) -> BlobRecord {
        BlobRecord { size, holders: BTreeSet::new(), refs: 0, repos: BTreeMap::new() }
    }
}

// Identity: who may do what (the rules are in `crate::state::identity`).

/// A role on a repository; the order is the order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A team's role in its organization: members get what the team is
/// granted per repository; creators may also create repositories; admins
/// administer the organization and all its repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TeamRole {
    Member,
    Creator,
    Admin,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Member => "member",
            TeamRole::Creator => "creator",
            TeamRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<TeamRole> {
        match s {
            "member" => Some(TeamRole::Member),
            "creator" => Some(TeamRole::Creator),
            "admin" => Some(TeamRole::Admin),
            _ => None,
        }
    }
}

/// Quay's OAuth scopes, carried by application tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TokenScope {
    RepoRead,
    RepoWrite,
    RepoAdmin,
    RepoCreate,
    UserRead,
    UserAdmin,
    OrgAdmin,
    SuperUser,
}

impl TokenScope {
    pub const ALL: [TokenScope; 8] = [
        TokenScope::RepoRead,
        TokenScope::RepoWrite,
        TokenScope::RepoAdmin,
        TokenScope::RepoCreate,
        TokenScope::UserRead,
        TokenScope::UserAdmin,
        TokenScope::OrgAdmin,
        TokenScope::SuperUser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::RepoRead => "repo:read",
            TokenScope::RepoWrite => "repo:write",
            TokenScope::RepoAdmin => "repo:admin",
            TokenScope::RepoCreate => "repo:create",
            TokenScope::UserRead => "user:read",
            TokenScope::UserAdmin => "user:admin",
            TokenScope::OrgAdmin => "org:admin",
            TokenScope::SuperUser => "super:user",
        }
    }

    pub fn parse(s: &str) -> Option<TokenScope> {
        TokenScope::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRecord {
    pub name: String,
    pub email: Option<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub org: String,
    pub name: String,
    pub role: TeamRole,
    pub description: String,
    /// User names and robot names (`org+short`).
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotRecord {
    /// The user or organization that owns it.
    pub namespace: String,
    pub short: String,
    pub description: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at_ms: u64,
}

impl RobotRecord {
    pub fn full_name(&self) -> String {
        format!("{}+{}", self.namespace, self.short)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppTokenRecord {
    pub id: String,
    pub owner: String,
    pub title: String,
    pub scopes: BTreeSet<TokenScope>,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// The id of the token key `berth cluster init` made (in the cluster record).
pub const INITIAL_KID: &str = "cluster";

/// A key that signs registry tokens (ES256). The newest unretired key
/// signs; retired keys still verify until the tokens they signed expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenKey {
    pub kid: String,
    /// PKCS#8 PEM of a P-256 private key.
    pub pkcs8_pem: String,
    pub created_at_ms: u64,
    pub retired_at_ms: Option<u64>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// Random, to keep records of the same millisecond apart.
    pub id: u64,
    /// Quay's log kinds: `push_repo`, `pull_repo`, `login_success`, ….
    pub kind: String,
    /// Who: a user, robot (`ns+short`), `$app:<token id>`, `(anonymous)` or `(operator)`.
    pub performer: String,
    pub namespace: Option<String>,
    pub repo: Option<String>,
    pub node: NodeId,
    pub region: String,
    pub ip: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Who is granted a role on a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    /// A user or a robot (`ns+short`).
    User(String),
    /// A team of the repository's organization.
    Team(String),
}

/// The namespace a repository belongs to: its first path component.
/// A one-component name (`alpine`) is in no namespace: only superusers
/// create and administer those.
pub fn namespace_of(repo: &str) -> Option<&str> {
    repo.split_once('/').map(|(ns, _)| ns)
}

// The cluster CA (the rules are in `crate::state::ca`).

/// A CA certificate (PEM) and the hex SHA-256 of its DER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaCert {
    pub pem: String,
    pub fingerprint: String,
}

/// The CAs of a cluster that has rotated its CA at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaTrust {
    /// The CA that signs certificates now.
    pub signing: CaCert,
    /// Set while a rotation is under way.
    pub rotation: Option<Rotation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The CA before: still trusted until the rotation finishes.
    pub previous: CaCert,
    /// The signing CA's certificate, signed by the previous CA (PEM).
    pub cross_pem: String,
    pub started_at_ms: u64,
}

/// What a live tag carries beyond its [`TagRecord`], kept under its own
/// key so the tag record every reader knows stays as it was. No record:
/// no expiration, not immutable, not restored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagLifeRecord {
    /// From this moment (ms since the epoch) the tag is absent for every
    /// reader, whether or not a worker has closed the row yet.
    pub expiration_ms: Option<u64>,
    /// No write may move, delete, expire or restore over the tag.
    pub immutable: bool,
    /// The row was brought back from history (Quay's `reversion`).
    pub reverted: bool,
}

impl TagLifeRecord {
    /// Whether the tag is gone at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expiration_ms.is_some_and(|e| e <= now_ms)
    }
}

/// A closed row of a tag's history: where the tag pointed from `start_ms`
/// until `end_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagHistoryRecord {
    pub digest: Digest,
    pub start_ms: u64,
    /// When the row was closed: moved, deleted, or the expiration it
    /// reached. A row closed by a command older than tag history, which
    /// carried no time, ends where it started.
    pub end_ms: u64,
    pub expiration_ms: Option<u64>,
    pub immutable: bool,
    pub reverted: bool,
}

/// What a notification listens to: one repository, or every repository
/// of a namespace (Quay's organization-wide notifications).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationScope {
    Repository(String),
    Namespace(String),
}

impl NotificationScope {
    /// Whether an event of repository `repo` is this scope's.
    pub fn covers(&self, repo: &str) -> bool {
        match self {
            NotificationScope::Repository(r) => r == repo,
            NotificationScope::Namespace(ns) => repo.strip_prefix(ns.as_str()).is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

/// A notification: which event of which scope is delivered how. The
/// method's and the event's settings are kept as the JSON the client gave
/// (checked by the node when created): the state machine only matches the
/// event's kind and scope, and counts deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// Random, chosen by the proposer.
    pub uuid: String,
    pub scope: NotificationScope,
    pub title: String,
    /// [`NotificationEvent::kind`] of the events it takes.
    pub event: String,
    /// `webhook`, `slack`, `email` or `cloudevents`.
    pub method: String,
    /// The method's settings (url, template, headers, email), JSON.
    pub config_json: String,
    /// The event's settings (`days`, `level`), JSON.
    pub event_config_json: String,
    /// Key of the HMAC-SHA256 signature over each body. It has to be
    /// kept as it is to sign with; the API shows it once, at creation.
    pub secret: String,
    pub created_at_ms: u64,
    /// Events given up on in a row; at [`NOTIFICATION_MAX_FAILURES`] the
    /// notification is skipped until reset (Quay's rule).
    pub number_of_failures: u32,
    /// The sequence number of the next event; with the uuid it makes the
    /// event's id, the same on every node and every retry.
    pub next_seq: u64,
    /// Events delivered, given up on, and not queued because the
    /// notification's outbox was full or it was skipped.
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

impl NotificationRecord {
    pub fn skipped(&self) -> bool {
        self.number_of_failures >= NOTIFICATION_MAX_FAILURES
    }
}

/// Events given up on in a row after which a notification is skipped.
pub const NOTIFICATION_MAX_FAILURES: u32 = 3;
/// Events one notification may have waiting; past it new events are
/// counted in `dropped`, not queued, so one dead receiver cannot grow the
/// state without bound.
pub const NOTIFICATION_OUTBOX_MAX: usize = 1000;
/// Notifications one repository or namespace may have.
pub const NOTIFICATIONS_PER_SCOPE_MAX: usize = 100;

/// Where a push landed and who made it, as the proposing node knew it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOrigin {
    /// The account that pushed (user, `ns+robot`, or a token's owner).
    pub pushed_by: String,
    pub node: NodeId,
    pub region: String,
    /// The registry's public host (and port) for `docker_url`.
    pub registry: String,
}

/// What happened, as the outbox keeps it; the node renders it for each
/// method. The kinds beyond push and expiry are laid down for the
/// mirroring, scanning and quota work that will emit them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationEvent {
    RepoPush {
        repo: String,
        tags: Vec<String>,
        digest: Digest,
        origin: PushOrigin,
        at_ms: u64,
    },
    ImageExpiry {
        repo: String,
        tags: Vec<String>,
        digest: Digest,
        expiration_ms: u64,
        days: u64,
    },
    MirrorSyncStarted {
        repo: String,
        message: String,
    },
    MirrorSyncSuccess {
        repo: String,
        tags: Vec<String>,
        message: String,
    },
    MirrorSyncFailed {
        repo: String,
        tags: Vec<String>,
        message: String,
    },
    VulnerabilityFound {
        repo: String,
        digest: Digest,
        tags: Vec<String>,
        id: String,
        level: String,
        description: String,
    },
    QuotaWarning {
        namespace: String,
        used_bytes: u64,
        limit_bytes: u64,
    },
    QuotaError {
        namespace: String,
        used_bytes: u64,
        limit_bytes: u64,
    },
    /// The `test` call: the sample payload of the notification's event.
    Test {
        event: String,
    },
}

/// Every event kind a notification may name.
pub const NOTIFICATION_EVENTS: &[&str] = &[
    "repo_push",
    "repo_image_expiry",
    "repo_mirror_sync_started",
    "repo_mirror_sync_success",
    "repo_mirror_sync_failed",
    "vulnerability_found",
    "quota_warning",
    "quota_error",
];

impl NotificationEvent {
    pub fn kind(&self) -> &str {
        match self {
            NotificationEvent::RepoPush { .. } => "repo_push",
            NotificationEvent::ImageExpiry { .. } => "repo_image_expiry",
            NotificationEvent::MirrorSyncStarted { .. } => "repo_mirror_sync_started",
            NotificationEvent::MirrorSyncSuccess { .. } => "repo_mirror_sync_success",
            NotificationEvent::MirrorSyncFailed { .. } => "repo_mirror_sync_failed",
            NotificationEvent::VulnerabilityFound { .. } => "vulnerability_found",
            NotificationEvent::QuotaWarning { .. } => "quota_warning",
            NotificationEvent::QuotaError { .. } => "quota_error",
            NotificationEvent::Test { event } => event,
        }
    }
}

/// One event waiting in a notification's outbox until it is delivered or
/// given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub notification: String,
    pub seq: u64,
    pub event: NotificationEvent,
    pub created_at_ms: u64,
}

impl OutboxRecord {
    /// The event's id: stable across retries and deliverers, so receivers
    /// can deduplicate.
    pub fn id(&self) -> String {
        format!("{}-{}", self.notification, self.seq)
    }
}

/// A namespace's time machine window when it has not set one: two
/// weeks, as Quay's default.
pub const DEFAULT_TAG_EXPIRATION_S: u64 = 14 * 24 * 3600;

/// A namespace's (organization's or user's) tag lifecycle settings. No
/// record: the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceLifeRecord {
    /// The time machine window: a tag row closed this long ago or less can
    /// be restored, and its manifest and blobs are kept; older rows are
    /// pruned and what only they held is collected.
    pub tag_expiration_s: u64,
}

impl Default for NamespaceLifeRecord {
    fn default() -> Self {
        NamespaceLifeRecord { tag_expiration_s: DEFAULT_TAG_EXPIRATION_S }
    }
}

/// A pattern of tag names: a regular expression that must match a whole
/// name, and whether the policy is about the names it matches (`true`)
/// or the names it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagPattern {
    pub pattern: String,
    pub matches: bool,
}

/// The longest tag pattern a policy may have.
pub const MAX_TAG_PATTERN_LEN: usize = 256;

/// Tags whose names fit `pattern` are immutable: made so when the policy
/// is created (the live ones) and whenever such a tag is pushed, moved or
/// restored. Deleting the policy unlocks nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutabilityPolicyRecord {
    pub uuid: String,
    pub pattern: TagPattern,
}

/// What an auto-prune policy removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PruneMethod {
    /// Keep the newest this many tags (of those the policy covers).
    NumberOfTags(u64),
    /// Remove tags pushed longer ago than this many seconds.
    CreationDate(u64),
}

/// The lifecycle worker deletes (into the time machine) the tags this
/// policy selects; immutable tags are never selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoPrunePolicyRecord {
    pub uuid: String,
    pub method: PruneMethod,
    /// None: every tag.
    pub pattern: Option<TagPattern>,
}

/// What crossing a quota limit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaLimitKind {
    /// Recorded (and notified), nothing refused.
    Warning,
    /// A push that would cross it is refused and stores nothing.
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimit {
    pub id: String,
    pub kind: QuotaLimitKind,
    /// 1 to 100, of the quota's bytes.
    pub threshold_percent: u8,
}

/// A namespace's storage quota. While it exists the state machine keeps
/// the namespace's usage exact: the deduplicated bytes of the blobs its
/// manifests reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub id: String,
    pub limit_bytes: u64,
    pub limits: Vec<QuotaLimit>,
}

impl QuotaRecord {
    /// The usage (bytes) a limit of `kind` allows at most; the lowest of them.
    pub fn threshold(&self, kind: QuotaLimitKind) -> Option<u64> {
        self.limits.iter().filter(|l| l.kind == kind).map(|l| (u128::from(self.limit_bytes) * u128::from(l.threshold_percent) / 100) as u64).min()
    }
}

/// An OAuth application of an organization (Quay's "applications").
/// Only the SHA-256 of its client secret is kept: the secret is shown at
/// creation and at a reset, never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthAppRecord {
    /// 20 random characters; the key.
    pub client_id: String,
    pub org: String,
    pub name: String,
    pub description: String,
    pub application_uri: String,
    /// Where the flows may send the browser back: a URI under this one.
    pub redirect_uri: String,
    pub avatar_email: Option<String>,
    /// Hex SHA-256 of the 40-character client secret.
    pub secret_sha256: String,
    /// A public client (a pipeline or a native tool that cannot keep a
    /// secret) exchanges codes without the secret, and only with PKCE.
    pub public_client: bool,
    pub created_at_ms: u64,
}

/// An authorization code, kept under the SHA-256 of the code until it is
/// exchanged (once) or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthCodeRecord {
    pub code_sha256: String,
    pub client_id: String,
    /// The user who approved; the token acts for them.
    pub user: String,
    pub scopes: BTreeSet<TokenScope>,
    /// The redirect URI the code was sent to; the exchange must name it.
    pub redirect_uri: String,
    /// PKCE `S256` challenge (base64url of the verifier's SHA-256).
    pub code_challenge: Option<String>,
    pub expires_at_ms: u64,
}

/// What a drill rehearsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrillKind {
    /// Leadership moved away from the leader (`berth drill failover`).
    Failover,
    /// A region cut off from the rest, then healed (`berth drill region`,
    /// or the console's region drill).
    Region,
}

impl DrillKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DrillKind::Failover => "failover",
            DrillKind::Region => "region",
        }
    }
}

/// The most drill reports the state keeps: recording one more drops the oldest.
pub const DRILL_REPORTS_KEPT: usize = 50;
/// The longest a report's target and author may be, bytes.
pub const DRILL_TARGET_MAX: usize = 128;
/// The largest a report's figures may be, bytes of JSON: a drill of a
/// big cluster lists every node's reads, and no more.
pub const DRILL_FIGURES_MAX: usize = 16 * 1024;
/// The most nodes a report names.
pub const DRILL_NODES_MAX: usize = 64;

/// One drill's report, kept so that every node's console shows the same
/// recent drills. The figures are what the drill measured, as the CLI
/// printed them; the state stores them without reading them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReportRecord {
    pub kind: DrillKind,
    /// Who ran it: the user, or `operator`.
    pub by: String,
    /// Wall-clock start and end, ms since the epoch (the runner's clock).
    pub started_ms: u64,
    pub ended_ms: u64,
    /// What was drilled: the region, or the leader change (`1 -> 2`).
    pub target: String,
    /// The nodes the drill acted on (the region's, or the old and new leader).
    pub nodes: Vec<NodeId>,
    /// The measurements, a JSON object (at most [`DRILL_FIGURES_MAX`] bytes).
    pub figures_json: String,
}

/// A drill report outside the bounds every node holds it to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrillBounds {
    #[error("target must be 1 to {DRILL_TARGET_MAX} bytes without control characters")]
    Target,
    #[error("by must be at most {DRILL_TARGET_MAX} bytes")]
    By,
    #[error("a report names at most {DRILL_NODES_MAX} nodes")]
    Nodes,
    #[error("figures must be at most {DRILL_FIGURES_MAX} bytes of JSON")]
    Figures,
    #[error("a drill cannot end before it starts")]
    EndsBeforeStart,
}

impl DrillReportRecord {
    /// The bounds every node holds a report to.
    pub fn check_bounds(&self) -> Result<(), DrillBounds> {
        if self.target.is_empty() || self.target.len() > DRILL_TARGET_MAX || self.target.chars().any(char::is_control) {
            return Err(DrillBounds::Target);
        }
        if self.by.len() > DRILL_TARGET_MAX {
            return Err(DrillBounds::By);
        }
        if self.nodes.len() > DRILL_NODES_MAX {
            return Err(DrillBounds::Nodes);
        }
        if self.figures_json.len() > DRILL_FIGURES_MAX {
            return Err(DrillBounds::Figures);
        }
        if self.ended_ms < self.started_ms {
            return Err(DrillBounds::EndsBeforeStart);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `serde_bytes` on a manifest's bytes must not change the stored
    /// form: records written before it are read by it and the other way.
    #[test]
    fn manifest_bytes_encode_as_a_plain_sequence_did() {
        #[derive(Serialize)]
        struct Before<'a> {
            repo: &'a str,
            digest: &'a Digest,
            media_type: &'a str,
            bytes: &'a Vec<u8>,
            blobs: Vec<Digest>,
            children: Vec<Digest>,
            subject: Option<Digest>,
            pushed_at_ms: u64,
        }
        let digest = Digest::sha256_of(b"m");
        let rec = ManifestRecord {
            repo: "a/b".into(),
            digest: digest.clone(),
            media_type: "t".into(),
            bytes: (0..=255u8).collect(),
            blobs: vec![],
            children: vec![],
            subject: None,
            pushed_at_ms: 7,
        };
        let before =
            Before { repo: "a/b", digest: &digest, media_type: "t", bytes: &rec.bytes, blobs: vec![], children: vec![], subject: None, pushed_at_ms: 7 };
        let old = berth_common::encode_versioned(1, &before).unwrap();
        assert_eq!(berth_common::encode_versioned(1, &rec).unwrap(), old);
        assert_eq!(berth_common::decode_versioned::<ManifestRecord>(1, &old).unwrap(), rec);
    }

    pub(crate) mod properties {
        //! Every value the state machine stores round-trips through its
        //! envelope, and a value of another format version is refused, not
        //! misread (issue 21 item 12).
        //!
        //! What is stored, by key (see the table in `crate::state`), each
        //! generated here with every variant of every enum it holds:
        //!
        //! - cluster: `ClusterRecord` (`c`), the next node id `u64` (`i`),
        //!   `NodeRecord` (`n`), `JoinTokenRecord` (`t`), `CaTrust` (`a`),
        //!   a node's CA fingerprint `String` (`N`);
        //! - identity: `UserRecord` (`u`), `RepositoryRecord` (`r`),
        //!   `OrgRecord` (`o`), `TeamRecord` (`T`), `RobotRecord` (`R`),
        //!   `AppTokenRecord` (`A`), `Vec<TokenKey>` (`K`), `AuditRecord`
        //!   (`L`), a credential generation `u64` (`G`), `OAuthAppRecord`
        //!   (`O`), `OAuthCodeRecord` (`C`), an application's token `()` (`E`);
        //! - registry: `ManifestRecord` (`m`), `TagRecord` (`g`),
        //!   `TagLifeRecord` (`e`), `TagHistoryRecord` (`h`), `BlobRecord`
        //!   (`b`), `BlobLink` (`l`), `Placement` (`p`), a referrer `()` (`s`);
        //! - lifecycle and quotas: `NamespaceLifeRecord` (`X`),
        //!   `ImmutabilityPolicyRecord` (`I`), `AutoPrunePolicyRecord` (`P`),
        //!   `QuotaRecord` (`Q`), the default quota, a namespace's usage and
        //!   a blob's count, each a `u64` (`D`, `U`, `q`);
        //! - notifications: `NotificationRecord` (`W`), a scope's entry `()`
        //!   (`V`), `OutboxRecord` (`w`), an event queued once until `u64` (`x`);
        //! - mirrors, proxy caches and scans: `RepoState` (`y`),
        //!   `MirrorRecord` (`Y`), `ProxyCacheConfig` (`B`), `FetchRecord`
        //!   (`H`), `ScanRecord` (`S`), `LayerIndexRecord` (`k`), `FeedRecord`
        //!   (`F`), `FeedGeneration` (`J`);
        //! - drills: `DrillReportRecord` (`Z`).
        //!
        //! 36 record types, and the plain `u64`, `String` and `()` values.
        //! A new record needs its strategy here and a line in a test below.

        use super::*;
        use crate::mirror::{MirrorConfig, MirrorLease, MirrorRecord, MirrorStatus, RepoState, SyncStatus};
        use crate::proxycache::{FetchLease, FetchRecord, ProxyCacheConfig};
        use crate::scan::{FeedGeneration, FeedRecord, LayerIndexRecord, ScanLease, ScanRecord, ScanStatus};
        use berth_common::{decode_versioned, encode_versioned};
        use proptest::collection::{btree_map, btree_set, vec};
        use proptest::option::of;
        use proptest::prelude::*;

        /// A digest of either algorithm a push may name.
        pub(crate) fn digest() -> impl Strategy<Value = Digest> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Digest::sha256_of(&b)),
                "[0-9a-f]{128}".prop_map(|hex| format!("sha512:{hex}").parse().unwrap()),
            ]
        }

        pub(crate) fn role() -> impl Strategy<Value = NodeRole> {
            prop_oneof![Just(NodeRole::Auto), Just(NodeRole::Voter), Just(NodeRole::Learner)]
        }

        pub(crate) fn manifest() -> impl Strategy<Value = ManifestRecord> {
            (
                ".{0,40}",
                digest(),
                ".{0,60}",
                proptest::collection::vec(any::<u8>(), 0..512),
                proptest::collection::vec(digest(), 0..6),
                proptest::collection::vec(digest(), 0..3),
                proptest::option::of(digest()),
                any::<u64>(),
            )
                .prop_map(|(repo, digest, media_type, bytes, blobs, children, subject, pushed_at_ms)| ManifestRecord {
                    repo,
                    digest,
                    media_type,
                    bytes,
                    blobs,
                    children,
                    subject,
                    pushed_at_ms,
                })
        }

        pub(crate) fn round_trips<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
            let bytes = encode_versioned(RECORD_VERSION, v).unwrap();
            prop_assert_eq!(&decode_versioned::<T>(RECORD_VERSION, &bytes).unwrap(), v);
            // A record of another version is refused, not misread.
            prop_assert!(decode_versioned::<T>(RECORD_VERSION + 1, &bytes).is_err());
            Ok(())
        }

        /// Short names, as most keys and fields hold.
        fn names(max: usize) -> impl Strategy<Value = Vec<String>> {
            vec(".{0,20}", 0..max)
        }

        // The cluster's own records.

        fn cluster() -> impl Strategy<Value = ClusterRecord> {
            (".{0,36}", ".{0,200}", ".{0,200}", ".{0,200}", any::<u64>()).prop_map(
                |(cluster_id, ca_cert_pem, ca_key_pem, token_signing_key_pem, created_at_ms)| ClusterRecord {
                    cluster_id,
                    ca_cert_pem,
                    ca_key_pem,
                    token_signing_key_pem,
                    created_at_ms,
                },
            )
        }

        fn node() -> impl Strategy<Value = NodeRecord> {
            (any::<u64>(), ".{0,20}", ".{0,30}", ".{0,30}", role(), any::<bool>(), any::<u64>()).prop_map(
                |(id, region, peer_addr, http_addr, role, removed, joined_at_ms)| NodeRecord { id, region, peer_addr, http_addr, role, removed, joined_at_ms },
            )
        }

        fn join_token() -> impl Strategy<Value = JoinTokenRecord> {
            (".{0,20}", ".{0,64}", any::<u64>(), any::<u64>(), any::<bool>(), any::<u32>(), of(any::<u32>())).prop_map(
                |(id, secret_sha256, created_at_ms, expires_at_ms, revoked, uses, max_uses)| JoinTokenRecord {
                    id,
                    secret_sha256,
                    created_at_ms,
                    expires_at_ms,
                    revoked,
                    uses,
                    max_uses,
                },
            )
        }

        fn ca_cert() -> impl Strategy<Value = CaCert> {
            (".{0,200}", ".{0,64}").prop_map(|(pem, fingerprint)| CaCert { pem, fingerprint })
        }

        fn ca_trust() -> impl Strategy<Value = CaTrust> {
            let rotation =
                (ca_cert(), ".{0,200}", any::<u64>()).prop_map(|(previous, cross_pem, started_at_ms)| Rotation { previous, cross_pem, started_at_ms });
            (ca_cert(), of(rotation)).prop_map(|(signing, rotation)| CaTrust { signing, rotation })
        }

        // Identity, and OAuth applications.

        fn repo_role() -> impl Strategy<Value = Role> {
            prop_oneof![Just(Role::Read), Just(Role::Write), Just(Role::Admin)]
        }

        fn team_role() -> impl Strategy<Value = TeamRole> {
            prop_oneof![Just(TeamRole::Member), Just(TeamRole::Creator), Just(TeamRole::Admin)]
        }

        fn scopes() -> impl Strategy<Value = BTreeSet<TokenScope>> {
            let scope = prop_oneof![
                Just(TokenScope::RepoRead),
                Just(TokenScope::RepoWrite),
                Just(TokenScope::RepoAdmin),
                Just(TokenScope::RepoCreate),
                Just(TokenScope::UserRead),
                Just(TokenScope::UserAdmin),
                Just(TokenScope::OrgAdmin),
                Just(TokenScope::SuperUser),
            ];
            btree_set(scope, 0..9)
        }

        fn user() -> impl Strategy<Value = UserRecord> {
            (".{0,20}", ".{0,100}", any::<bool>(), any::<u64>()).prop_map(|(name, password_hash, superuser, created_at_ms)| UserRecord {
                name,
                password_hash,
                superuser,
                created_at_ms,
            })
        }

        fn repository() -> impl Strategy<Value = RepositoryRecord> {
            (".{0,40}", any::<bool>(), any::<u64>(), ".{0,60}", btree_map(".{0,20}", repo_role(), 0..4), btree_map(".{0,20}", repo_role(), 0..4)).prop_map(
                |(name, public, created_at_ms, description, users, teams)| RepositoryRecord { name, public, created_at_ms, description, users, teams },
            )
        }

        fn org() -> impl Strategy<Value = OrgRecord> {
            (".{0,20}", of(".{0,30}"), any::<u64>()).prop_map(|(name, email, created_at_ms)| OrgRecord { name, email, created_at_ms })
        }

        fn team() -> impl Strategy<Value = TeamRecord> {
            (".{0,20}", ".{0,20}", team_role(), ".{0,40}", btree_set(".{0,20}", 0..5)).prop_map(|(org, name, role, description, members)| TeamRecord {
                org,
                name,
                role,
                description,
                members,
            })
        }

        fn robot() -> impl Strategy<Value = RobotRecord> {
            (".{0,20}", ".{0,20}", ".{0,40}", ".{0,64}", any::<u64>()).prop_map(|(namespace, short, description, secret_sha256, created_at_ms)| RobotRecord {
                namespace,
                short,
                description,
                secret_sha256,
                created_at_ms,
            })
        }

        fn app_token() -> impl Strategy<Value = AppTokenRecord> {
            (".{0,20}", ".{0,20}", ".{0,40}", scopes(), ".{0,64}", any::<u64>(), of(any::<u64>())).prop_map(
                |(id, owner, title, scopes, secret_sha256, created_at_ms, expires_at_ms)| AppTokenRecord {
                    id,
                    owner,
                    title,
                    scopes,
                    secret_sha256,
                    created_at_ms,
                    expires_at_ms,
                },
            )
        }

        fn token_keys() -> impl Strategy<Value = Vec<TokenKey>> {
            let key = (".{0,20}", ".{0,200}", any::<u64>(), of(any::<u64>())).prop_map(|(kid, pkcs8_pem, created_at_ms, retired_at_ms)| TokenKey {
                kid,
                pkcs8_pem,
                created_at_ms,
                retired_at_ms,
            });
            vec(key, 0..4)
        }

        prop_compose! {
            fn audit()(
                at_ms in any::<u64>(),
                id in any::<u64>(),
                kind in ".{0,20}",
                performer in ".{0,30}",
                namespace in of(".{0,20}"),
                repo in of(".{0,40}"),
                node in any::<u64>(),
                region in ".{0,20}",
                ip in of(".{0,40}"),
                metadata in btree_map(".{0,20}", ".{0,40}", 0..5),
            ) -> AuditRecord {
                AuditRecord { at_ms, id, kind, performer, namespace, repo, node, region, ip, metadata }
            }
        }

        prop_compose! {
            fn oauth_app()(
                client_id in ".{0,20}",
                org in ".{0,20}",
                name in ".{0,30}",
                description in ".{0,60}",
                application_uri in ".{0,60}",
                redirect_uri in ".{0,60}",
                avatar_email in of(".{0,30}"),
                secret_sha256 in ".{0,64}",
                public_client in any::<bool>(),
                created_at_ms in any::<u64>(),
            ) -> OAuthAppRecord {
                OAuthAppRecord { client_id, org, name, description, application_uri, redirect_uri, avatar_email, secret_sha256, public_client, created_at_ms }
            }
        }

        fn oauth_code() -> impl Strategy<Value = OAuthCodeRecord> {
            (".{0,64}", ".{0,20}", ".{0,20}", scopes(), ".{0,60}", of(".{0,43}"), any::<u64>()).prop_map(
                |(code_sha256, client_id, user, scopes, redirect_uri, code_challenge, expires_at_ms)| OAuthCodeRecord {
                    code_sha256,
                    client_id,
                    user,
                    scopes,
                    redirect_uri,
                    code_challenge,
                    expires_at_ms,
                },
            )
        }

        // What is pushed.

        fn tag() -> impl Strategy<Value = TagRecord> {
            (digest(), any::<u64>()).prop_map(|(digest, pushed_at_ms)| TagRecord { digest, pushed_at_ms })
        }

        fn tag_life() -> impl Strategy<Value = TagLifeRecord> {
            (of(any::<u64>()), any::<bool>(), any::<bool>()).prop_map(|(expiration_ms, immutable, reverted)| TagLifeRecord {
                expiration_ms,
                immutable,
                reverted,
            })
        }

        fn tag_history() -> impl Strategy<Value = TagHistoryRecord> {
            (digest(), any::<u64>(), any::<u64>(), of(any::<u64>()), any::<bool>(), any::<bool>()).prop_map(
                |(digest, start_ms, end_ms, expiration_ms, immutable, reverted)| TagHistoryRecord {
                    digest,
                    start_ms,
                    end_ms,
                    expiration_ms,
                    immutable,
                    reverted,
                },
            )
        }

        fn blob() -> impl Strategy<Value = BlobRecord> {
            (any::<u64>(), proptest::collection::btree_set(any::<u64>(), 0..6), any::<u64>(), proptest::collection::btree_map(".{0,20}", any::<u64>(), 0..4))
                .prop_map(|(size, holders, refs, repos)| BlobRecord { size, holders, refs, repos })
        }

        fn blob_link() -> impl Strategy<Value = BlobLink> {
            (any::<u64>(), any::<u64>()).prop_map(|(size, linked_at_ms)| BlobLink { size, linked_at_ms })
        }

        fn placement() -> impl Strategy<Value = Placement> {
            prop_oneof![Just(Placement::Everywhere), names(4).prop_map(Placement::Regions), Just(Placement::OnDemand)]
        }

        // Tag lifecycle policies and quotas.

        fn tag_pattern() -> impl Strategy<Value = TagPattern> {
            (".{0,40}", any::<bool>()).prop_map(|(pattern, matches)| TagPattern { pattern, matches })
        }

        fn immutability_policy() -> impl Strategy<Value = ImmutabilityPolicyRecord> {
            (".{0,36}", tag_pattern()).prop_map(|(uuid, pattern)| ImmutabilityPolicyRecord { uuid, pattern })
        }

        fn autoprune_policy() -> impl Strategy<Value = AutoPrunePolicyRecord> {
            let method = prop_oneof![any::<u64>().prop_map(PruneMethod::NumberOfTags), any::<u64>().prop_map(PruneMethod::CreationDate)];
            (".{0,36}", method, of(tag_pattern())).prop_map(|(uuid, method, pattern)| AutoPrunePolicyRecord { uuid, method, pattern })
        }

        fn quota() -> impl Strategy<Value = QuotaRecord> {
            let kind = prop_oneof![Just(QuotaLimitKind::Warning), Just(QuotaLimitKind::Reject)];
            let limit = (".{0,36}", kind, any::<u8>()).prop_map(|(id, kind, threshold_percent)| QuotaLimit { id, kind, threshold_percent });
            (".{0,36}", any::<u64>(), vec(limit, 0..4)).prop_map(|(id, limit_bytes, limits)| QuotaRecord { id, limit_bytes, limits })
        }

        // Notifications and their outbox.

        fn notification_scope() -> impl Strategy<Value = NotificationScope> {
            prop_oneof![".{0,40}".prop_map(NotificationScope::Repository), ".{0,20}".prop_map(NotificationScope::Namespace)]
        }

        prop_compose! {
            fn notification()(
                uuid in ".{0,36}",
                scope in notification_scope(),
                title in ".{0,40}",
                event in ".{0,30}",
                method in ".{0,12}",
                config_json in ".{0,100}",
                event_config_json in ".{0,60}",
                secret in ".{0,64}",
                created_at_ms in any::<u64>(),
                number_of_failures in any::<u32>(),
                next_seq in any::<u64>(),
                delivered in any::<u64>(),
                failed in any::<u64>(),
                dropped in any::<u64>(),
            ) -> NotificationRecord {
                NotificationRecord {
                    uuid,
                    scope,
                    title,
                    event,
                    method,
                    config_json,
                    event_config_json,
                    secret,
                    created_at_ms,
                    number_of_failures,
                    next_seq,
                    delivered,
                    failed,
                    dropped,
                }
            }
        }

        fn notification_event() -> impl Strategy<Value = NotificationEvent> {
            let origin = (".{0,20}", any::<u64>(), ".{0,20}", ".{0,30}").prop_map(|(pushed_by, node, region, registry)| PushOrigin {
                pushed_by,
                node,
                region,
                registry,
            });
            prop_oneof![
                (".{0,40}", names(4), digest(), origin, any::<u64>()).prop_map(|(repo, tags, digest, origin, at_ms)| NotificationEvent::RepoPush {
                    repo,
                    tags,
                    digest,
                    origin,
                    at_ms
                }),
                (".{0,40}", names(4), digest(), any::<u64>(), any::<u64>())
                    .prop_map(|(repo, tags, digest, expiration_ms, days)| { NotificationEvent::ImageExpiry { repo, tags, digest, expiration_ms, days } }),
                (".{0,40}", ".{0,60}").prop_map(|(repo, message)| NotificationEvent::MirrorSyncStarted { repo, message }),
                (".{0,40}", names(4), ".{0,60}").prop_map(|(repo, tags, message)| NotificationEvent::MirrorSyncSuccess { repo, tags, message }),
                (".{0,40}", names(4), ".{0,60}").prop_map(|(repo, tags, message)| NotificationEvent::MirrorSyncFailed { repo, tags, message }),
                (".{0,40}", digest(), names(4), ".{0,20}", ".{0,12}", ".{0,60}").prop_map(|(repo, digest, tags, id, level, description)| {
                    NotificationEvent::VulnerabilityFound { repo, digest, tags, id, level, description }
                }),
                (".{0,20}", any::<u64>(), any::<u64>()).prop_map(|(namespace, used_bytes, limit_bytes)| NotificationEvent::QuotaWarning {
                    namespace,
                    used_bytes,
                    limit_bytes
                }),
                (".{0,20}", any::<u64>(), any::<u64>()).prop_map(|(namespace, used_bytes, limit_bytes)| NotificationEvent::QuotaError {
                    namespace,
                    used_bytes,
                    limit_bytes
                }),
                ".{0,30}".prop_map(|event| NotificationEvent::Test { event }),
            ]
        }

        fn outbox() -> impl Strategy<Value = OutboxRecord> {
            (".{0,36}", any::<u64>(), notification_event(), any::<u64>()).prop_map(|(notification, seq, event, created_at_ms)| OutboxRecord {
                notification,
                seq,
                event,
                created_at_ms,
            })
        }

        // Mirrors, proxy caches and scans.

        fn repo_state() -> impl Strategy<Value = RepoState> {
            prop_oneof![Just(RepoState::Normal), Just(RepoState::ReadOnly), Just(RepoState::Mirror)]
        }

        prop_compose! {
            fn mirror_config()(
                is_enabled in any::<bool>(),
                external_reference in ".{0,60}",
                username in of(".{0,20}"),
                sealed_password in of(vec(any::<u8>(), 0..64)),
                sync_start_ms in any::<u64>(),
                sync_interval_s in any::<u64>(),
                robot in ".{0,30}",
                tag_globs in names(4),
                verify_tls in any::<bool>(),
                unsigned_images in any::<bool>(),
                http_proxy in of(".{0,30}"),
                https_proxy in of(".{0,30}"),
                no_proxy in of(".{0,30}"),
                timeout_s in any::<u64>(),
                architecture_filter in of(names(4)),
                preferred_region in of(".{0,20}"),
            ) -> MirrorConfig {
                MirrorConfig {
                    is_enabled,
                    external_reference,
                    username,
                    sealed_password,
                    sync_start_ms,
                    sync_interval_s,
                    robot,
                    tag_globs,
                    verify_tls,
                    unsigned_images,
                    http_proxy,
                    https_proxy,
                    no_proxy,
                    timeout_s,
                    architecture_filter,
                    preferred_region,
                }
            }
        }

        prop_compose! {
            fn mirror()(
                config in mirror_config(),
                sync_status in prop_oneof![
                    Just(SyncStatus::NeverRun),
                    Just(SyncStatus::SyncNow),
                    Just(SyncStatus::Syncing),
                    Just(SyncStatus::Success),
                    Just(SyncStatus::Fail),
                    Just(SyncStatus::Cancel),
                ],
                next_start_ms in any::<u64>(),
                expiration_ms in of(any::<u64>()),
                retries_remaining in any::<u32>(),
                last_message in of(".{0,60}"),
                last_end_ms in of(any::<u64>()),
                lease in of((any::<u64>(), any::<u64>())),
            ) -> MirrorRecord {
                MirrorRecord {
                    config,
                    status: MirrorStatus { sync_status, next_start_ms, expiration_ms, retries_remaining, last_message, last_end_ms },
                    lease: lease.map(|(node, until_ms)| MirrorLease { node, until_ms }),
                }
            }
        }

        fn proxy_cache() -> impl Strategy<Value = ProxyCacheConfig> {
            (".{0,60}", of(".{0,20}"), of(vec(any::<u8>(), 0..64)), any::<u64>(), any::<bool>(), any::<u64>()).prop_map(
                |(upstream_registry, username, sealed_password, expiration_s, insecure, created_at_ms)| ProxyCacheConfig {
                    upstream_registry,
                    username,
                    sealed_password,
                    expiration_s,
                    insecure,
                    created_at_ms,
                },
            )
        }

        fn fetch() -> impl Strategy<Value = FetchRecord> {
            let lease = (any::<u64>(), any::<u64>()).prop_map(|(node, until_ms)| FetchLease { node, until_ms });
            (of(lease), of(any::<u64>()), of((any::<u64>(), ".{0,60}"))).prop_map(|(lease, checked_ms, failed)| FetchRecord { lease, checked_ms, failed })
        }

        prop_compose! {
            fn scan()(
                repos in names(4),
                status in prop_oneof![Just(ScanStatus::Queued), Just(ScanStatus::Scanned), Just(ScanStatus::Failed), Just(ScanStatus::Unsupported)],
                reason in of(".{0,60}"),
                queued_at_ms in any::<u64>(),
                finished_at_ms in of(any::<u64>()),
                lease in of((any::<u64>(), any::<u64>())),
                attempts in any::<u32>(),
                index_json in vec(any::<u8>(), 0..256),
                matched_generation in any::<u64>(),
                findings in vec((".{0,20}", ".{0,20}"), 0..5),
            ) -> ScanRecord {
                ScanRecord {
                    repos,
                    status,
                    reason,
                    queued_at_ms,
                    finished_at_ms,
                    lease: lease.map(|(node, until_ms)| ScanLease { node, until_ms }),
                    attempts,
                    index_json,
                    matched_generation,
                    findings,
                }
            }
        }

        fn layer_index() -> impl Strategy<Value = LayerIndexRecord> {
            (any::<u32>(), vec(any::<u8>(), 0..256)).prop_map(|(indexer_version, json)| LayerIndexRecord { indexer_version, json })
        }

        fn feed() -> impl Strategy<Value = FeedRecord> {
            (".{0,40}", ".{0,20}", digest(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(name, kind, digest, size, advisories, imported_at_ms, generation)| FeedRecord {
                    name,
                    kind,
                    digest,
                    size,
                    advisories,
                    imported_at_ms,
                    generation,
                },
            )
        }

        fn drill_report() -> impl Strategy<Value = DrillReportRecord> {
            (
                prop_oneof![Just(DrillKind::Failover), Just(DrillKind::Region)],
                ".{0,20}",
                any::<u64>(),
                any::<u64>(),
                ".{0,40}",
                vec(any::<u64>(), 0..5),
                ".{0,200}",
            )
                .prop_map(|(kind, by, started_ms, ended_ms, target, nodes, figures_json)| DrillReportRecord {
                    kind,
                    by,
                    started_ms,
                    ended_ms,
                    target,
                    nodes,
                    figures_json,
                })
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            /// The cluster's own records: its identity and CA, its nodes and
            /// their join tokens, the next node id and each node's CA.
            #[test]
            fn cluster_records_round_trip(
                c in cluster(),
                n in node(),
                t in join_token(),
                trust in ca_trust(),
                next_node_id in any::<u64>(),
                node_ca in ".{0,64}",
            ) {
                round_trips(&c)?;
                round_trips(&n)?;
                round_trips(&t)?;
                round_trips(&trust)?;
                round_trips(&next_node_id)?;
                round_trips(&node_ca)?;
            }

            /// Who may do what: users, repositories and their grants,
            /// organizations, teams, robots, application tokens, the
            /// token-signing keys, the audit log, credential generations,
            /// and OAuth applications, their codes and their tokens' index.
            #[test]
            fn identity_records_round_trip(
                people in (user(), org(), team(), robot()),
                r in repository(),
                a in app_token(),
                keys in token_keys(),
                l in audit(),
                generation in any::<u64>(),
                oauth in (oauth_app(), oauth_code()),
            ) {
                round_trips(&people.0)?;
                round_trips(&people.1)?;
                round_trips(&people.2)?;
                round_trips(&people.3)?;
                round_trips(&r)?;
                round_trips(&a)?;
                round_trips(&keys)?;
                round_trips(&l)?;
                round_trips(&generation)?;
                round_trips(&oauth.0)?;
                round_trips(&oauth.1)?;
                round_trips(&())?;
            }

            /// What is pushed: manifests, tags with their life and history,
            /// blobs and their links, placements and the referrer index.
            #[test]
            fn registry_records_round_trip(
                m in manifest(),
                tags in (tag(), tag_life(), tag_history()),
                b in blob(),
                link in blob_link(),
                p in placement(),
            ) {
                round_trips(&m)?;
                round_trips(&tags.0)?;
                round_trips(&tags.1)?;
                round_trips(&tags.2)?;
                round_trips(&b)?;
                round_trips(&link)?;
                round_trips(&p)?;
                round_trips(&())?;
            }

            /// A namespace's time machine window, tag immutability and
            /// auto-prune policies, quotas, and the default quota, usage and
            /// blob counts kept while one governs.
            #[test]
            fn policy_records_round_trip(
                life in any::<u64>().prop_map(|tag_expiration_s| NamespaceLifeRecord { tag_expiration_s }),
                i in immutability_policy(),
                p in autoprune_policy(),
                q in quota(),
                bytes in any::<u64>(),
            ) {
                round_trips(&life)?;
                round_trips(&i)?;
                round_trips(&p)?;
                round_trips(&q)?;
                round_trips(&bytes)?;
            }

            /// Notifications, their scopes' index, every kind of event in
            /// their outbox, and the events queued once.
            #[test]
            fn notification_records_round_trip(n in notification(), o in outbox(), until_ms in any::<u64>()) {
                round_trips(&n)?;
                round_trips(&o)?;
                round_trips(&until_ms)?;
                round_trips(&())?;
            }

            /// Repository states and mirrors, proxy-cache organizations and
            /// their fetches, and scans: their records, layer indexes, feeds
            /// and the feeds' generation.
            #[test]
            fn feature_records_round_trip(
                state in repo_state(),
                mi in mirror(),
                proxy in (proxy_cache(), fetch()),
                s in scan(),
                li in layer_index(),
                f in feed(),
                generation in any::<u64>().prop_map(FeedGeneration),
            ) {
                round_trips(&state)?;
                round_trips(&mi)?;
                round_trips(&proxy.0)?;
                round_trips(&proxy.1)?;
                round_trips(&s)?;
                round_trips(&li)?;
                round_trips(&f)?;
                round_trips(&generation)?;
            }

            /// The recent drills' reports.
            #[test]
            fn drill_records_round_trip(d in drill_report()) {
                round_trips(&d)?;
            }
        }
    }
}
