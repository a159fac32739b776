//! Repository states and repository mirroring: the records the state
//! machine keeps for them and the commands that change them (their rules
//! are [`crate::state::mirror`]'s).
//!
//! A repository is `NORMAL` (no record), `READ_ONLY` or `MIRROR`. Content
//! writes (pushes, tag changes, deletes, blob links) check the state in
//! the same command, so a write racing a state change cannot get past it:
//! a read-only repository takes none, a mirror takes only those its mirror
//! robot makes ([`crate::command::MetaCommand::AsRobot`]).
//!
//! A mirror's configuration, its sync status and the lease of the node
//! running its sync live in one [`MirrorRecord`]; each command changes its
//! own part. This module is a leaf, like [`crate::records`].

use berth_common::NodeId;
use serde::{Deserialize, Serialize};

/// What a repository accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RepoState {
    #[default]
    Normal,
    /// No push, tag change or delete, by anyone.
    ReadOnly,
    /// Content only from the mirror's robot (the sync).
    Mirror,
}

impl RepoState {
    /// Quay's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoState::Normal => "NORMAL",
            RepoState::ReadOnly => "READ_ONLY",
            RepoState::Mirror => "MIRROR",
        }
    }

    pub fn parse(s: &str) -> Option<RepoState> {
        match s {
            "NORMAL" => Some(RepoState::Normal),
            "READ_ONLY" => Some(RepoState::ReadOnly),
            "MIRROR" => Some(RepoState::Mirror),
            _ => None,
        }
    }
}

/// Quay's sync states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncStatus {
    NeverRun,
    /// Asked to run at once (`sync-now`).
    SyncNow,
    /// A node holds the lease and is syncing.
    Syncing,
    Success,
    Fail,
    /// Cancelled by an administrator; the running sync stops at its next step.
    Cancel,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::NeverRun => "NEVER_RUN",
            SyncStatus::SyncNow => "SYNC_NOW",
            SyncStatus::Syncing => "SYNCING",
            SyncStatus::Success => "SUCCESS",
            SyncStatus::Fail => "FAIL",
            SyncStatus::Cancel => "CANCEL",
        }
    }
}

/// How many times a failed sync is retried before waiting for the next
/// interval (Quay's rule).
pub const MIRROR_RETRIES: u32 = 3;

/// A mirror's configuration, as an administrator set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorConfig {
    pub is_enabled: bool,
    /// `host[:port]/path` of the upstream repository.
    pub external_reference: String,
    pub username: Option<String>,
    /// The upstream password, sealed with the cluster's mirror key by the
    /// node that received it (nonce then ciphertext); never shown.
    pub sealed_password: Option<Vec<u8>>,
    /// When the first sync is due (ms since the epoch).
    pub sync_start_ms: u64,
    /// Seconds between syncs.
    pub sync_interval_s: u64,
    /// The robot (`ns+short`) the sync writes as.
    pub robot: String,
    /// Upstream tags matching any of these globs are mirrored.
    pub tag_globs: Vec<String>,
    pub verify_tls: bool,
    pub unsigned_images: bool,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    /// The longest one sync may run, in seconds.
    pub timeout_s: u64,
    /// Architectures kept from an index; `None` keeps every child.
    pub architecture_filter: Option<Vec<String>>,
    /// The region whose nodes sync this mirror (close to the upstream);
    /// nodes elsewhere take a due sync only after a grace period.
    pub preferred_region: Option<String>,
}

/// The node running a mirror's sync, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorLease {
    pub node: NodeId,
    pub until_ms: u64,
}

/// A mirror's sync status, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub sync_status: SyncStatus,
    /// When the next sync is due (ms since the epoch).
    pub next_start_ms: u64,
    /// When the running sync must have ended (start + timeout).
    pub expiration_ms: Option<u64>,
    pub retries_remaining: u32,
    /// The last sync's outcome, for people.
    pub last_message: Option<String>,
    pub last_end_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorRecord {
    pub config: MirrorConfig,
    pub status: MirrorStatus,
    pub lease: Option<MirrorLease>,
}

/// How a sync ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncOutcome {
    Success(String),
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MirrorCommand {
    /// Sets the repository's state. Refused for an unknown repository, and
    /// `MIRROR` without a mirror configuration.
    SetRepoState { repo: String, state: RepoState },
    /// Creates (`create: true`, refused if one exists) or replaces (refused
    /// if none exists) a mirror configuration. Creating one puts the
    /// repository in `MIRROR` state. A replaced configuration keeps the
    /// sealed password when `keep_password`.
    PutMirror { repo: String, config: MirrorConfig, create: bool, keep_password: bool, now_ms: u64 },
    /// Asks for a sync at once.
    SyncNow { repo: String, now_ms: u64 },
    /// Cancels the running or pending sync; its lease is released.
    SyncCancel { repo: String, now_ms: u64 },
    /// `node` takes the lease of a due mirror until `until_ms`; refused
    /// while another node's lease has not expired at `now_ms`, or when the
    /// mirror is not due (renewing its own lease is [`MirrorCommand::RenewLease`]).
    AcquireLease { repo: String, node: NodeId, now_ms: u64, until_ms: u64 },
    /// Extends `node`'s lease; refused if the lease is not `node`'s any more.
    RenewLease { repo: String, node: NodeId, now_ms: u64, until_ms: u64 },
    /// `node`'s sync ended: the status, the retries and the next start are
    /// set by Quay's rules and the lease is released. Refused if the lease
    /// is not `node`'s any more (another node took over).
    FinishSync { repo: String, node: NodeId, outcome: SyncOutcome, now_ms: u64 },
}

impl MirrorCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            MirrorCommand::SetRepoState { .. } => "set_repo_state",
            MirrorCommand::PutMirror { .. } => "put_mirror",
            MirrorCommand::SyncNow { .. } => "mirror_sync_now",
            MirrorCommand::SyncCancel { .. } => "mirror_sync_cancel",
            MirrorCommand::AcquireLease { .. } => "mirror_acquire_lease",
            MirrorCommand::RenewLease { .. } => "mirror_renew_lease",
            MirrorCommand::FinishSync { .. } => "mirror_finish_sync",
        }
    }

    pub fn repo(&self) -> &str {
        match self {
            MirrorCommand::SetRepoState { repo, .. }
            | MirrorCommand::PutMirror { repo, .. }
            | MirrorCommand::SyncNow { repo, .. }
            | MirrorCommand::SyncCancel { repo, .. }
            | MirrorCommand::AcquireLease { repo, .. }
            | MirrorCommand::RenewLease { repo, .. }
            | MirrorCommand::FinishSync { repo, .. } => repo,
        }
    }
}

/// The next start after `now_ms` on the grid `start + k * interval`
/// (Quay aligns the schedule to the interval, not to when a sync ended).
pub fn next_aligned_start(start_ms: u64, interval_s: u64, now_ms: u64) -> u64 {
    let step = interval_s.max(1) * 1000;
    if now_ms < start_ms {
        return start_ms;
    }
    start_ms + ((now_ms - start_ms) / step + 1) * step
}
