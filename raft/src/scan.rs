//! Vulnerability scanning: the records the state machine keeps for it and
//! the commands that change them (their rules are
//! [`crate::state::scan`]'s). This module is a leaf, like
//! [`crate::records`]: what a scan finds is carried as the scanner's JSON,
//! so the metadata plane never depends on the scanner.
//!
//! Keys: `S` + manifest digest: [`ScanRecord`] (status, lease, the merged
//! image index, what the last match found); `k` + layer digest: a layer's
//! index ([`LayerIndexRecord`], computed once by any node); `F` + feed
//! name: the newest [`FeedRecord`] of that feed; `J`: the feeds'
//! generation ([`FeedGeneration`]), bumped by every import so every
//! scanned manifest is matched again; `f` + feed name: a
//! [`FeedSourceRecord`], a URL fetched on a schedule under a lease.

use berth_common::{Digest, NodeId};
use serde::{Deserialize, Serialize};

/// Quay's scan statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanStatus {
    Queued,
    Scanned,
    Failed,
    Unsupported,
}

impl ScanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Queued => "queued",
            ScanStatus::Scanned => "scanned",
            ScanStatus::Failed => "failed",
            ScanStatus::Unsupported => "unsupported",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanLease {
    pub node: NodeId,
    pub until_ms: u64,
}

/// A scan attempt given up on after this many leases lapsed or failed:
/// a manifest never stays `queued` for ever.
pub const SCAN_ATTEMPTS_MAX: u32 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// Repositories the manifest was pushed to (a digest is scanned once).
    pub repos: Vec<String>,
    pub status: ScanStatus,
    /// Why a scan failed or is unsupported.
    pub reason: Option<String>,
    pub queued_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub lease: Option<ScanLease>,
    /// Leases handed out so far.
    pub attempts: u32,
    /// The scanner's merged image index (JSON), empty until scanned.
    #[serde(with = "serde_bytes")]
    pub index_json: Vec<u8>,
    /// The feed generation of the last match, and what it found as
    /// `(vulnerability, package)` pairs: a re-match tells new findings
    /// from known ones with it.
    pub matched_generation: u64,
    pub findings: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerIndexRecord {
    pub indexer_version: u32,
    #[serde(with = "serde_bytes")]
    pub json: Vec<u8>,
}

/// One imported feed snapshot, stored as a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    /// The feed's name (its source: a file name or URL).
    pub name: String,
    /// The format, as the scanner names it (`debian-tracker`, ...).
    pub kind: String,
    pub digest: Digest,
    pub size: u64,
    pub advisories: u64,
    pub imported_at_ms: u64,
    /// The generation this import started.
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FeedGeneration(pub u64);

/// A feed fetched from a URL on a schedule: one node at a time (under
/// `lease`) asks the URL with the validators of its last answer
/// (`If-None-Match`, `If-Modified-Since`) and imports what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedSourceRecord {
    /// The feed's name: its imports replace the feed of that name.
    pub name: String,
    pub url: String,
    pub interval_secs: u64,
    /// When the next fetch is due (0: at once).
    pub due_at_ms: u64,
    pub lease: Option<ScanLease>,
    /// The last 200 answer's `ETag` and `Last-Modified`.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The last fetch: when, by which node, and what came of it
    /// ("imported sha256:…", "not modified", or the error).
    pub checked_at_ms: u64,
    pub checked_by: Option<NodeId>,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScanCommand {
    /// A node takes the scan of `digest` until `until_ms`: refused unless
    /// it is queued and no other node holds a live lease.
    Acquire { digest: Digest, node: NodeId, now_ms: u64, until_ms: u64 },
    /// The holder extends its lease while it works.
    Renew { digest: Digest, node: NodeId, until_ms: u64 },
    /// A layer's index, kept for every image that shares the layer.
    PutLayerIndex { layer: Digest, record: LayerIndexRecord },
    /// The holder's result. Refused when the lease is not the node's.
    Finish {
        digest: Digest,
        node: NodeId,
        status: ScanStatus,
        reason: Option<String>,
        index_json: Vec<u8>,
        findings: Vec<(String, String)>,
        generation: u64,
        now_ms: u64,
    },
    /// A feed snapshot imported (its blob stored on `node`): bumps the
    /// generation and keeps the blob from garbage collection.
    ImportFeed { feed: FeedRecord, node: NodeId },
    /// A re-match's result (no lease: it reads no layer and is idempotent;
    /// ignored when a newer generation was recorded already).
    Rematched { digest: Digest, generation: u64, findings: Vec<(String, String)> },
    /// Queues a manifest again (an operator's rescan).
    Requeue { digest: Digest, now_ms: u64 },
    /// Adds or changes a scheduled feed source (superusers); due at once.
    /// A changed URL forgets the old validators.
    PutSource { name: String, url: String, interval_secs: u64, now_ms: u64 },
    /// Removes a feed source; the feed it imported stays.
    RemoveSource { name: String },
    /// A node takes (or, holding it, extends) the fetch of a due source.
    AcquireSource { name: String, node: NodeId, now_ms: u64, until_ms: u64 },
    /// The lease holder's result: the new validators and when the next
    /// fetch is due, and the snapshot when the URL answered a new one
    /// (recorded as [`ScanCommand::ImportFeed`] would). Refused when the
    /// lease is not the node's.
    SourceFetched {
        name: String,
        node: NodeId,
        now_ms: u64,
        due_at_ms: u64,
        etag: Option<String>,
        last_modified: Option<String>,
        outcome: String,
        feed: Option<FeedRecord>,
    },
}

impl ScanCommand {
    pub fn kind(&self) -> &'static str {
        match self {
            ScanCommand::Acquire { .. } => "scan_acquire",
            ScanCommand::Renew { .. } => "scan_renew",
            ScanCommand::PutLayerIndex { .. } => "scan_layer_index",
            ScanCommand::Finish { .. } => "scan_finish",
            ScanCommand::ImportFeed { .. } => "scan_import_feed",
            ScanCommand::Rematched { .. } => "scan_rematched",
            ScanCommand::Requeue { .. } => "scan_requeue",
            ScanCommand::PutSource { .. } => "scan_put_source",
            ScanCommand::RemoveSource { .. } => "scan_remove_source",
            ScanCommand::AcquireSource { .. } => "scan_acquire_source",
            ScanCommand::SourceFetched { .. } => "scan_source_fetched",
        }
    }
}
