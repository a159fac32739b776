//! What the metadata plane agrees on: commands, their responses, and the
//! records they leave in the state machine.
//!
//! Every command is deterministic: anything that depends on the clock or on
//! randomness (timestamps, generated secrets) is decided by the proposer and
//! carried inside the command, so every replica applies the same bytes to the
//! same state. Commands that race carry a condition and fail cleanly with
//! [`MetaResponse::Conflict`] or [`MetaResponse::Refused`] when it does not
//! hold; a refused command changes nothing.

use berth_common::{Digest, NodeId};
use serde::{Deserialize, Serialize};

// A command carries records; they are named here as well as in `records`.
pub use crate::mirror::*;
pub use crate::proxycache::ProxyCacheConfig;
pub use crate::records::*;
pub use crate::scan::*;

/// The payload of a Raft log entry. The variant is the command format
/// version: a new format is a new variant, and old entries stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaRequest {
    V1(MetaCommand),
    /// Concurrent client writes the leader grouped into one entry (group
    /// commit): applied in order, each with its own checks and response,
    /// as one atomic change (see [`crate::state::overlay`]). Releases
    /// before this one cannot read it, so the leader proposes one only when
    /// every member has said it can ([`crate::network::PeerFeatures`]).
    Batch(Vec<MetaCommand>),
}

impl From<MetaCommand> for MetaRequest {
    fn from(c: MetaCommand) -> Self {
        MetaRequest::V1(c)
    }
}

impl std::fmt::Display for MetaRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaRequest::V1(c) => write!(f, "v1:{}", c.kind()),
            MetaRequest::Batch(cs) => write!(f, "batch:{}", cs.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// The first command of a cluster: its identity and keys. Refused once
    /// the cluster exists.
    Bootstrap(ClusterRecord),
    /// A node asks to be part of the cluster. With a join token, the token
    /// is checked and its use counted in the same step, so two nodes cannot
    /// race past a one-use token. The response is the assigned node id.
    RegisterNode {
        registration: NodeRegistration,
        token: Option<TokenProof>,
        now_ms: u64,
    },
    /// The operator's wish for a node's role; the leader's membership
    /// reconciler makes it so.
    SetNodeRole {
        node: NodeId,
        role: NodeRole,
    },
    /// Marks a node removed: it leaves the membership and its id is never
    /// reused.
    RemoveNode {
        node: NodeId,
    },
    CreateJoinToken(JoinTokenRecord),
    RevokeJoinToken {
        id: String,
    },
    /// Sets a user's record (password, superuser), creating it if needed.
    PutUser(UserRecord),
    /// Organizations, teams, robots, tokens, permissions, audit records.
    Identity(IdentityCommand),
    /// Creates a repository if it does not exist yet.
    CreateRepository(RepositoryRecord),
    /// Stores a manifest, creates its repository if needed, and points
    /// `tag` at it, in one step: a push is never half visible.
    PutManifest {
        record: ManifestRecord,
        tag: Option<String>,
    },
    /// Deletes a manifest and every tag pointing at it.
    DeleteManifest {
        repo: String,
        digest: Digest,
    },
    /// Points a tag at a manifest. With `if_current`, only when the tag
    /// still points where the caller last saw it (`None` inside: absent).
    SetTag {
        repo: String,
        tag: String,
        digest: Digest,
        pushed_at_ms: u64,
        if_current: Option<Option<Digest>>,
    },
    DeleteTag {
        repo: String,
        tag: String,
        if_current: Option<Digest>,
    },
    AddBlobHolder {
        digest: Digest,
        size: u64,
        node: NodeId,
    },
    /// Makes a blob part of a repository (upload or mount) and records that
    /// `node` holds a copy.
    LinkBlob {
        repo: String,
        digest: Digest,
        size: u64,
        node: NodeId,
        now_ms: u64,
    },
    /// Changes nothing: a write that proves the metadata takes writes
    /// (`berth drill`).
    Probe {
        at_ms: u64,
    },
    /// Where a namespace's blobs are kept.
    SetPlacement {
        namespace: String,
        placement: Placement,
    },
    /// Garbage collection: forgets a blob that no manifest references and
    /// that no repository linked after `cutoff_ms`, all in one step; refused
    /// if a push got to it meanwhile. Nodes then delete their copies.
    SweepBlob {
        digest: Digest,
        cutoff_ms: u64,
    },
    UnlinkBlob {
        repo: String,
        digest: Digest,
    },
    RemoveBlobHolder {
        digest: Digest,
        node: NodeId,
    },
    /// The cluster CA's trust and rotation (see [`crate::ca`]).
    Ca(CaCommand),
    /// [`MetaCommand::DeleteTag`] with the time it happens: the tag's row
    /// is closed into history at `now_ms`, and an expired tag is absent.
    DeleteTagAt {
        repo: String,
        tag: String,
        if_current: Option<Digest>,
        now_ms: u64,
    },
    /// [`MetaCommand::DeleteManifest`] with the time it happens, which
    /// closes the rows of the tags pointing at it.
    DeleteManifestAt {
        repo: String,
        digest: Digest,
        now_ms: u64,
    },
    /// A tag's lifecycle: expiration, immutability, restore from history.
    Tag(TagCommand),
    /// [`MetaCommand::PutManifest`] with where and by whom it was pushed,
    /// and what the image's labels ask of the new tag row
    /// (`quay.expires-after`, `quay.immutable`; the serving node reads them
    /// from the image's config before it proposes the command). Both are
    /// decided in the same step as the tag write: the row's expiration and
    /// lock, and, when the push moves the tag, a `repo_push` event for each
    /// matching notification (see `state::notifications`).
    PutManifestFrom {
        record: ManifestRecord,
        tag: Option<String>,
        origin: PushOrigin,
        /// When the new row ends (ms since the epoch).
        expiration_ms: Option<u64>,
        immutable: bool,
    },
    /// Notifications and their outbox.
    Notification(NotificationCommand),
    /// A namespace's storage quota (see [`QuotaCommand`]).
    Quota(QuotaCommand),
    /// Repository states and mirrors (see [`crate::mirror`]).
    Mirror(MirrorCommand),
    /// `cmd`, made by the robot `robot` (the leader checks that the write
    /// is that robot's): a mirror repository takes content writes from its
    /// mirror robot only, and must know who makes them when it applies them.
    AsRobot {
        robot: String,
        cmd: Box<MetaCommand>,
    },
    /// Proxy-cache organizations and their fills (see [`crate::proxycache`]).
    ProxyCache(ProxyCacheCommand),
    /// OAuth applications, their codes and the tokens they hold (see
    /// [`OAuthCommand`]).
    OAuth(OAuthCommand),
    /// Vulnerability scanning: leases, results, feed imports (see
    /// [`crate::scan`]).
    Scan(ScanCommand),
    /// Keeps a drill's report; the oldest beyond [`DRILL_REPORTS_KEPT`]
    /// is dropped in the same step. Refused when out of bounds
    /// ([`DrillReportRecord::check_bounds`]).
    RecordDrill(DrillReportRecord),
    /// From here on, blob records leave the repositories they are linked
    /// into to an index of keys (see `state::registry::repos_indexed`).
    /// The leader proposes it once, when every member reads the index
    /// ([`crate::network::FEATURE_BLOB_REPO_INDEX`]).
    IndexBlobRepos,
}

/// OAuth applications and the flows that give them tokens. The tokens
/// are application tokens ([`AppTokenRecord`]) of the approving user, so
/// every rule of those applies; the command also records which
/// application holds each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OAuthCommand {
    /// Refused when the organization does not exist or the id is taken.
    CreateApp(OAuthAppRecord),
    /// Replaces the application's record (its fields or its secret);
    /// `NotFound` when it is gone. The organization cannot change.
    UpdateApp(OAuthAppRecord),
    /// Deletes the application with its codes and its tokens.
    DeleteApp { client_id: String },
    /// Stores an authorization code; refused when the application is gone.
    IssueCode(OAuthCodeRecord),
    /// Consumes the code (`NotFound` once used) and stores `token` for
    /// its user and application, in one step: two exchanges of one code
    /// cannot both get a token. Refused when it expired by `now_ms`
    /// (consumed too) or names another application.
    ExchangeCode { code_sha256: String, client_id: String, token: AppTokenRecord, now_ms: u64 },
    /// Stores `token`, held by the application (the implicit flow, and an
    /// administrator's "generate token").
    IssueToken { client_id: String, token: AppTokenRecord },
    /// Deletes one token the application holds (`NotFound` otherwise).
    RevokeToken { client_id: String, token_id: String },
}

impl OAuthCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            OAuthCommand::CreateApp(_) => "create_application",
            OAuthCommand::UpdateApp(_) => "update_application",
            OAuthCommand::DeleteApp { .. } => "delete_application",
            OAuthCommand::IssueCode(_) => "oauth_issue_code",
            OAuthCommand::ExchangeCode { .. } => "oauth_exchange_code",
            OAuthCommand::IssueToken { .. } => "oauth_issue_token",
            OAuthCommand::RevokeToken { .. } => "oauth_revoke_token",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QuotaCommand {
    /// Sets (`Some`) or removes a namespace's quota. Setting the first
    /// one counts the namespace's usage from its manifests; from then on
    /// every manifest stored or forgotten keeps it exact.
    Set { namespace: String, quota: Option<QuotaRecord> },
    /// Sets (`Some`, bytes) or removes the cluster's default Reject
    /// quota, which governs every namespace without a quota of its own.
    /// Setting it counts every namespace's usage.
    SetDefault { limit_bytes: Option<u64> },
}

impl QuotaCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            QuotaCommand::Set { .. } => "set_quota",
            QuotaCommand::SetDefault { .. } => "set_default_quota",
        }
    }
}

impl MetaCommand {
    /// A short name for logs; never the payload, which may hold secrets.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaCommand::Bootstrap(_) => "bootstrap",
            MetaCommand::RegisterNode { .. } => "register_node",
            MetaCommand::SetNodeRole { .. } => "set_node_role",
            MetaCommand::RemoveNode { .. } => "remove_node",
            MetaCommand::CreateJoinToken(_) => "create_join_token",
            MetaCommand::RevokeJoinToken { .. } => "revoke_join_token",
            MetaCommand::PutUser(_) => "put_user",
            MetaCommand::Identity(c) => c.kind(),
            MetaCommand::CreateRepository(_) => "create_repository",
            MetaCommand::PutManifest { .. } => "put_manifest",
            MetaCommand::DeleteManifest { .. } => "delete_manifest",
            MetaCommand::SetTag { .. } => "set_tag",
            MetaCommand::DeleteTag { .. } => "delete_tag",
            MetaCommand::AddBlobHolder { .. } => "add_blob_holder",
            MetaCommand::LinkBlob { .. } => "link_blob",
            MetaCommand::UnlinkBlob { .. } => "unlink_blob",
            MetaCommand::SweepBlob { .. } => "sweep_blob",
            MetaCommand::SetPlacement { .. } => "set_placement",
            MetaCommand::Probe { .. } => "probe",
            MetaCommand::RemoveBlobHolder { .. } => "remove_blob_holder",
            MetaCommand::Ca(c) => c.kind(),
            MetaCommand::DeleteTagAt { .. } => "delete_tag",
            MetaCommand::DeleteManifestAt { .. } => "delete_manifest",
            MetaCommand::Tag(c) => c.kind(),
            MetaCommand::PutManifestFrom { .. } => "put_manifest",
            MetaCommand::Notification(c) => c.kind(),
            MetaCommand::Quota(c) => c.kind(),
            MetaCommand::Mirror(c) => c.kind(),
            MetaCommand::AsRobot { cmd, .. } => cmd.kind(),
            MetaCommand::ProxyCache(c) => c.kind(),
            MetaCommand::OAuth(c) => c.kind(),
            MetaCommand::Scan(c) => c.kind(),
            MetaCommand::RecordDrill(_) => "record_drill",
            MetaCommand::IndexBlobRepos => "index_blob_repos",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    Done,
    /// The id given to a registered node.
    NodeId(NodeId),
    /// The command's precondition did not hold; the reason is for people.
    Refused(String),
    /// A conditional tag write lost a race; `current` is what the tag holds.
    Conflict {
        current: Option<Digest>,
    },
    NotFound,
    /// The write would move, delete, expire or restore over an immutable
    /// tag, and changed nothing.
    TagImmutable {
        tag: String,
    },
    /// What a command removed (the tags an auto-prune deleted).
    Removed(Vec<String>),
    /// The write would take the namespace over a Reject limit of its
    /// quota, and changed nothing.
    QuotaExceeded {
        namespace: String,
    },
    /// The repository's state (read-only, or a mirror written by another)
    /// refuses the write, which changed nothing.
    RepositoryState {
        state: RepoState,
    },
    /// The repository is in a proxy-cache organization of `upstream`: only
    /// its fill writes there, and this write changed nothing
    /// ([`crate::state::proxycache::refusal`] words it for people).
    ProxyCache {
        org: String,
        upstream: String,
    },
    /// What the command would create exists already (another create won
    /// the race), and nothing changed; the reason is for people.
    Exists(String),
    /// The responses to a [`MetaRequest::Batch`], one per command in
    /// order; the leader hands each to its writer and never sends this
    /// one on.
    Batch(Vec<MetaResponse>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub region: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub role: NodeRole,
}

/// The longest address a node may register: a DNS name (253) with a port,
/// or a URL around one, with room to spare.
pub const MAX_NODE_ADDR_LEN: usize = 512;

/// Why a [`NodeRegistration`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("region must be 1 to 63 lowercase letters, digits and dashes, starting with a letter")]
    Region,
    /// The named address (`peer address`, `http address`) is empty, too
    /// long or not printable.
    #[error("{0} must be 1 to {MAX_NODE_ADDR_LEN} printable ASCII characters without spaces")]
    Address(&'static str),
}

impl NodeRegistration {
    /// Checks the shape of every field. A registration is stored by every
    /// node and shown by every status call for the cluster's lifetime, so
    /// it must be small and printable whoever sent it.
    pub fn validate(&self) -> Result<(), RegistrationError> {
        if self.region.parse::<berth_common::Region>().is_err() {
            return Err(RegistrationError::Region);
        }
        for (what, addr) in [("peer address", &self.peer_addr), ("http address", &self.http_addr)] {
            if addr.is_empty() || addr.len() > MAX_NODE_ADDR_LEN || !addr.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RegistrationError::Address(what));
            }
        }
        Ok(())
    }
}

/// The most voters a cluster has (see `crate::membership`): `SetNodeRole`
/// refuses to promote more nodes than this.
pub const MAX_VOTERS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IdentityCommand {
    /// Creates an organization and its `owners` team (role admin) with
    /// `owner` in it. Refused if a user or organization has the name.
    CreateOrg {
        org: OrgRecord,
        owner: Option<String>,
    },
    /// Refused while repositories remain in it.
    DeleteOrg {
        name: String,
    },
    /// Creates a user; refused if a user or organization has the name.
    CreateUser(UserRecord),
    /// Deletes a user with its permissions, memberships, robots and tokens.
    /// Refused while repositories remain in its namespace.
    DeleteUser {
        name: String,
    },
    /// Creates a team or changes its role and description (members kept).
    PutTeam {
        org: String,
        name: String,
        role: TeamRole,
        description: String,
    },
    DeleteTeam {
        org: String,
        name: String,
    },
    SetTeamMember {
        org: String,
        team: String,
        member: String,
        present: bool,
    },
    /// Creates a robot, or gives an existing one a new secret.
    PutRobot(RobotRecord),
    DeleteRobot {
        namespace: String,
        short: String,
    },
    CreateAppToken(AppTokenRecord),
    DeleteAppToken {
        id: String,
    },
    /// Creates a repository with its first grants; refused if it exists.
    CreateRepository(RepositoryRecord),
    UpdateRepository {
        name: String,
        public: Option<bool>,
        description: Option<String>,
    },
    /// Deletes a repository with its tags, manifests and blob links; the
    /// blobs no longer referenced are left to garbage collection.
    DeleteRepository {
        name: String,
    },
    /// `role: None` removes the grant.
    SetPermission {
        repo: String,
        grantee: Grantee,
        role: Option<Role>,
    },
    AppendAudit(Vec<AuditRecord>),
    /// Drops audit records older than `before_ms`.
    PruneAudit {
        before_ms: u64,
    },
    /// Makes `key` the signing key; earlier keys are retired at `now_ms`.
    RotateTokenKey {
        key: TokenKey,
        now_ms: u64,
    },
}

impl IdentityCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityCommand::CreateOrg { .. } => "create_org",
            IdentityCommand::DeleteOrg { .. } => "delete_org",
            IdentityCommand::CreateUser(_) => "create_user",
            IdentityCommand::DeleteUser { .. } => "delete_user",
            IdentityCommand::PutTeam { .. } => "put_team",
            IdentityCommand::DeleteTeam { .. } => "delete_team",
            IdentityCommand::SetTeamMember { .. } => "set_team_member",
            IdentityCommand::PutRobot(_) => "put_robot",
            IdentityCommand::DeleteRobot { .. } => "delete_robot",
            IdentityCommand::CreateAppToken(_) => "create_app_token",
            IdentityCommand::DeleteAppToken { .. } => "delete_app_token",
            IdentityCommand::CreateRepository(_) => "create_repository",
            IdentityCommand::UpdateRepository { .. } => "update_repository",
            IdentityCommand::DeleteRepository { .. } => "delete_repository",
            IdentityCommand::SetPermission { .. } => "set_permission",
            IdentityCommand::AppendAudit(_) => "append_audit",
            IdentityCommand::PruneAudit { .. } => "prune_audit",
            IdentityCommand::RotateTokenKey { .. } => "rotate_token_key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CaCommand {
    /// `next` signs from now on; `current` must be the CA that signs now
    /// (refused if it changed meanwhile or a rotation is under way).
    StartRotation { current: CaCert, next: CaCert, cross_pem: String, now_ms: u64 },
    /// The previous CA is trusted no more.
    FinishRotation,
    /// Node `node` runs with a certificate from the CA `fingerprint`.
    ReportNodeCa { node: NodeId, fingerprint: String },
    /// Clears the CA key from the cluster record, where clusters made
    /// before voters kept it themselves had it replicated to every node.
    ForgetLegacyKey,
}

impl CaCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            CaCommand::StartRotation { .. } => "ca_start_rotation",
            CaCommand::FinishRotation => "ca_finish_rotation",
            CaCommand::ReportNodeCa { .. } => "ca_report_node",
            CaCommand::ForgetLegacyKey => "ca_forget_legacy_key",
        }
    }
}

/// Changes to a live tag that neither push nor delete it. Each carries
/// the proposer's `now_ms`: a tag expired by then is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TagCommand {
    /// Sets (`Some`, ms since the epoch) or clears the tag's expiration.
    /// Refused when not after `now_ms`; clamped to [`MIN_TAG_LIFETIME_MS`]
    /// ..= [`MAX_TAG_LIFETIME_MS`] after the tag's start.
    SetExpiration {
        repo: String,
        tag: String,
        expiration_ms: Option<u64>,
        now_ms: u64,
    },
    /// Locks or unlocks the tag. Locking a tag with an expiration is
    /// refused: an immutable tag never expires.
    SetImmutable {
        repo: String,
        tag: String,
        immutable: bool,
        now_ms: u64,
    },
    /// Points the tag again at `digest`, a manifest one of its history rows
    /// held (the new row is `reverted`); refused when the manifest is gone.
    Restore {
        repo: String,
        tag: String,
        digest: Digest,
        now_ms: u64,
    },
    /// The lifecycle worker's: closes the tag's live row into history if
    /// it has expired by `now_ms` (`NotFound` if it was moved, deleted or
    /// given a later expiration meanwhile).
    CloseExpired {
        repo: String,
        tag: String,
        now_ms: u64,
    },
    /// A namespace's time machine window (`tag_expiration_s`); `NotFound`
    /// when no organization or user has the name.
    SetTimeMachine {
        namespace: String,
        tag_expiration_s: u64,
    },
    /// The lifecycle worker's: drops the history rows of `repo` that
    /// ended before its namespace's window, as of `now_ms`.
    PruneHistory {
        repo: String,
        now_ms: u64,
    },
    /// Garbage collection's: forgets those of `digests` that nothing
    /// keeps any more (see `state::tags::collectable_manifests`), as of
    /// `now_ms`, never one pushed within `min_age_ms`.
    CollectManifests {
        repo: String,
        digests: Vec<Digest>,
        now_ms: u64,
        min_age_ms: u64,
    },
    /// Creates or replaces an immutability policy of `scope` (a namespace,
    /// or a repository `ns/name`), and locks the live tags it covers as
    /// of `now_ms` (clearing their expiration: a locked tag never
    /// expires). Refused for a pattern that is no regular expression.
    PutImmutabilityPolicy {
        scope: String,
        policy: ImmutabilityPolicyRecord,
        now_ms: u64,
    },
    DeleteImmutabilityPolicy {
        scope: String,
        uuid: String,
    },
    /// Creates or replaces an auto-prune policy of `scope`.
    PutAutoPrunePolicy {
        scope: String,
        policy: AutoPrunePolicyRecord,
    },
    DeleteAutoPrunePolicy {
        scope: String,
        uuid: String,
    },
    /// The lifecycle worker's: deletes (closing their rows into history)
    /// those of `tags` that the auto-prune policies still select as of
    /// `now_ms`; the response lists them.
    AutoPrune {
        repo: String,
        tags: Vec<String>,
        now_ms: u64,
    },
}

/// The shortest and longest a tag may live, from its start, when an
/// expiration is set on it (Quay's bounds).
pub const MIN_TAG_LIFETIME_MS: u64 = 3_600_000;
pub const MAX_TAG_LIFETIME_MS: u64 = 104 * 7 * 24 * 3_600_000;

impl TagCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            TagCommand::SetExpiration { .. } => "set_tag_expiration",
            TagCommand::SetImmutable { .. } => "set_tag_immutable",
            TagCommand::Restore { .. } => "restore_tag",
            TagCommand::CloseExpired { .. } => "close_expired_tag",
            TagCommand::SetTimeMachine { .. } => "set_time_machine",
            TagCommand::PruneHistory { .. } => "prune_tag_history",
            TagCommand::CollectManifests { .. } => "collect_manifests",
            TagCommand::PutImmutabilityPolicy { .. } => "put_immutability_policy",
            TagCommand::DeleteImmutabilityPolicy { .. } => "delete_immutability_policy",
            TagCommand::PutAutoPrunePolicy { .. } => "put_autoprune_policy",
            TagCommand::DeleteAutoPrunePolicy { .. } => "delete_autoprune_policy",
            TagCommand::AutoPrune { .. } => "autoprune",
        }
    }
}

/// Notifications and the delivery of their events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationCommand {
    /// Refused when the repository or namespace does not exist, the uuid
    /// is taken, or the scope has [`NOTIFICATIONS_PER_SCOPE_MAX`].
    Create(NotificationRecord),
    /// Deletes the notification with its waiting events.
    Delete { uuid: String },
    /// Sets `number_of_failures` to 0: a skipped notification delivers again.
    Reset { uuid: String },
    /// Queues the sample event of the notification's kind.
    Test { uuid: String, now_ms: u64 },
    /// The deliverer's: the event reached its receiver (`number_of_failures`
    /// back to 0). `NotFound` if it is no longer waiting.
    Delivered { uuid: String, seq: u64 },
    /// The deliverer's: the event is given up on after its retries.
    GaveUp { uuid: String, seq: u64 },
    /// A worker's event (an expiry coming): queued for notification `uuid`
    /// unless `once` names an event it queued before (`Conflict` then).
    Emit { uuid: String, event: NotificationEvent, once: Option<String>, now_ms: u64 },
}

impl NotificationCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            NotificationCommand::Create(_) => "create_notification",
            NotificationCommand::Delete { .. } => "delete_notification",
            NotificationCommand::Reset { .. } => "reset_notification",
            NotificationCommand::Test { .. } => "test_notification",
            NotificationCommand::Delivered { .. } => "notification_delivered",
            NotificationCommand::GaveUp { .. } => "notification_gave_up",
            NotificationCommand::Emit { .. } => "emit_notification",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::properties::{digest, manifest, role, round_trips};
    use proptest::prelude::*;

    /// A few commands of different shapes, as the log stores them.
    fn command() -> impl Strategy<Value = MetaRequest> {
        prop_oneof![
            (manifest(), proptest::option::of(".{0,20}")).prop_map(|(record, tag)| MetaCommand::PutManifest { record, tag }),
            (any::<u64>(), role()).prop_map(|(node, role)| MetaCommand::SetNodeRole { node, role }),
            (digest(), any::<u64>()).prop_map(|(digest, cutoff_ms)| MetaCommand::SweepBlob { digest, cutoff_ms }),
            (".{0,20}", ".{0,20}", digest(), any::<u64>(), proptest::option::of(proptest::option::of(digest())))
                .prop_map(|(repo, tag, digest, pushed_at_ms, if_current)| MetaCommand::SetTag { repo, tag, digest, pushed_at_ms, if_current }),
            (".{0,20}", ".{0,20}", proptest::option::of(any::<u64>()), any::<u64>())
                .prop_map(|(repo, tag, expiration_ms, now_ms)| MetaCommand::Tag(TagCommand::SetExpiration { repo, tag, expiration_ms, now_ms })),
            (manifest(), proptest::option::of(".{0,20}"), ".{0,20}", any::<u64>(), ".{0,20}", proptest::option::of(any::<u64>()), any::<bool>()).prop_map(
                |(record, tag, pushed_by, node, region, expiration_ms, immutable)| MetaCommand::PutManifestFrom {
                    record,
                    tag,
                    origin: PushOrigin { pushed_by, node, region, registry: "https://r:5000".into() },
                    expiration_ms,
                    immutable
                }
            ),
            (".{0,36}", any::<u64>(), proptest::collection::vec(".{0,10}", 0..3), digest()).prop_map(|(uuid, now_ms, tags, digest)| {
                let event = NotificationEvent::ImageExpiry { repo: "a/b".into(), tags, digest, expiration_ms: now_ms, days: 1 };
                MetaCommand::Notification(NotificationCommand::Emit { uuid, event, once: Some("k".into()), now_ms })
            }),
            (".{0,20}", ".{0,20}", digest(), any::<u64>()).prop_map(|(repo, tag, digest, now_ms)| MetaCommand::Tag(TagCommand::Restore {
                repo,
                tag,
                digest,
                now_ms
            })),
        ]
        .prop_map(MetaRequest::from)
    }

    fn request() -> impl Strategy<Value = MetaRequest> {
        prop_oneof![
            command(),
            proptest::collection::vec(command(), 0..4).prop_map(|rs| MetaRequest::Batch(
                rs.into_iter()
                    .map(|r| match r {
                        MetaRequest::V1(c) => c,
                        MetaRequest::Batch(_) => unreachable!("command() makes V1 requests"),
                    })
                    .collect()
            )),
        ]
    }

    // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
    proptest! {
        #[test]
        fn logged_commands_round_trip(c in request()) {
            round_trips(&c)?;
        }
    }
}

/// Proxy-cache organizations and their fills (the records are
/// [`crate::proxycache`]'s). Here, beside [`MetaCommand`], because a fill
/// wraps one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProxyCacheCommand {
    /// Makes `org` a proxy cache (refused when it is one already).
    Put { org: String, config: ProxyCacheConfig },
    /// Makes `org` an ordinary organization again; what was cached stays.
    Delete { org: String },
    /// Takes the fetch lease of (`repo`, `reference`) for `node`; refused
    /// while any node (this one too) holds a live one.
    AcquireFetch { repo: String, reference: String, node: NodeId, now_ms: u64, until_ms: u64 },
    /// Ends `node`'s fetch: `error` `None` records the upstream's
    /// confirmation at `now_ms`.
    FinishFetch { repo: String, reference: String, node: NodeId, now_ms: u64, error: Option<String> },
    /// A content write of the fill (blob link, manifest, tag, repository
    /// creation), which a proxy-cache organization takes from nobody else.
    Fill(Box<MetaCommand>),
    /// Extends `node`'s fetch lease while its fetch runs; refused when the
    /// lease is not (any more) that node's.
    RenewFetch { repo: String, reference: String, node: NodeId, until_ms: u64 },
}

impl ProxyCacheCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyCacheCommand::Put { .. } => "put_proxy_cache",
            ProxyCacheCommand::Delete { .. } => "delete_proxy_cache",
            ProxyCacheCommand::AcquireFetch { .. } => "proxy_cache_acquire_fetch",
            ProxyCacheCommand::FinishFetch { .. } => "proxy_cache_finish_fetch",
            ProxyCacheCommand::Fill(cmd) => cmd.kind(),
            ProxyCacheCommand::RenewFetch { .. } => "proxy_cache_renew_fetch",
        }
    }
}
