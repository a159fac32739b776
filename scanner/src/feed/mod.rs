//! Advisory feeds in their native formats, parsed into [`Advisory`] rows.
//! A feed snapshot is the raw file; every node parses the same bytes.

pub mod alpine;
pub mod debian;
pub mod osv;

use serde::{Deserialize, Serialize};

/// Severities as Quay shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Unknown,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "Unknown",
            Severity::Negligible => "Negligible",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

/// Which packages an advisory concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A Debian source package in one release (by codename).
    DebianSource { release: String, package: String },
    /// An Alpine origin package in one branch (`v3.19`).
    AlpineOrigin { branch: String, package: String },
    /// A package of an OSV ecosystem (`PyPI`, `Rocky Linux:9`, ...),
    /// named as [`osv::package_key`] keys it.
    Osv { ecosystem: String, package: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// The vulnerability's id (a CVE id for the Debian tracker).
    pub id: String,
    pub target: Target,
    /// The first version that is not affected; `None`: no fix yet.
    pub fixed: Option<String>,
    /// The first affected version (OSV's `introduced`); `None`: all
    /// versions before `fixed` are.
    #[serde(default)]
    pub introduced: Option<String>,
    /// The last affected version (OSV's `last_affected`), when the range
    /// ends there rather than at a fix.
    #[serde(default)]
    pub last_affected: Option<String>,
    pub severity: Severity,
    pub description: String,
    pub link: String,
    /// Quay's `NamespaceName` of the vulnerability, e.g. `debian:12`.
    pub namespace: String,
}

/// Which format a feed file is in, recognised from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedKind {
    DebianTracker,
    AlpineSecdb,
    /// OSV records: one, an array, or a zip archive of them.
    Osv,
}

impl FeedKind {
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::DebianTracker => "debian-tracker",
            FeedKind::AlpineSecdb => "alpine-secdb",
            FeedKind::Osv => "osv",
        }
    }
}

/// Parses a feed file, recognising its format.
pub fn parse(bytes: &[u8]) -> crate::Result<(FeedKind, Vec<Advisory>)> {
    if osv::is_zip(bytes) {
        return Ok((FeedKind::Osv, osv::parse_zip(bytes)?));
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| crate::Error::Feed(format!("not JSON: {e}")))?;
    if alpine::looks_like(&v) {
        return Ok((FeedKind::AlpineSecdb, alpine::parse(&v)?));
    }
    if osv::looks_like(&v) {
        return Ok((FeedKind::Osv, osv::parse(&v)?));
    }
    if debian::looks_like(&v) {
        return Ok((FeedKind::DebianTracker, debian::parse(&v)?));
    }
    Err(crate::Error::Feed(
        "unrecognised feed format (expected the Debian security tracker's JSON, an Alpine secdb file, or OSV records as JSON or a zip archive)".into(),
    ))
}
