//! The security API and the scanner's admin calls (see `crate::scan`).
//! The report is readable by whoever may pull the repository; feeds and
//! the scanner's status are superusers'.

use berth_gateway::identity::{FeedView, ScanCounts, ScannerStatus};
use berth_raft::command::{FeedRecord, ScanStatus};
use berth_raft::state::scan as rules;

use super::*;

fn feed_view(f: &FeedRecord) -> FeedView {
    FeedView {
        name: f.name.clone(),
        kind: f.kind.clone(),
        digest: f.digest.to_string(),
        size: f.size,
        advisories: f.advisories,
        imported_at: rfc3339(f.imported_at_ms),
        generation: f.generation,
    }
}

impl NodeIdentity {
    fn scanner(&self) -> Result<&Arc<crate::scan::Scanner>, ApiError> {
        self.scanner.as_ref().ok_or_else(|| ApiError::method_not_allowed("this node does not scan"))
    }

    pub(super) async fn security_of(&self, who: &Access, repo: &str, digest: &str, vulnerabilities: bool) -> Result<serde_json::Value, ApiError> {
        let scanner = self.scanner()?;
        self.repo_with(who, repo, Role::Read)?;
        let digest: berth_common::Digest = digest.parse().map_err(|e| bad(format!("digest {digest:?}: {e}")))?;
        if self.state().get_raw(&keys::manifest(repo, &digest)).map_err(state_err)?.is_none() {
            return Err(not_found(format!("manifest {digest} is not in repository {repo}")));
        }
        let found = scanner.report(&digest).await.map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
        let body = match found {
            // An index, or a manifest stored before scanning existed.
            None => berth_scanner::quay::security_body(&digest.to_string(), "unsupported", None, vulnerabilities),
            Some((rec, report)) => {
                let mut body = berth_scanner::quay::security_body(&digest.to_string(), rec.status.as_str(), report.as_ref(), vulnerabilities);
                if let Some(reason) = rec.reason.filter(|_| rec.status != ScanStatus::Scanned) {
                    body["reason"] = serde_json::Value::String(reason);
                }
                body
            }
        };
        Ok(body)
    }

    /// The image's CycloneDX SBOM, from the index its scan stored; 409
    /// until the manifest is scanned.
    pub(super) async fn sbom_of(&self, who: &Access, repo: &str, digest: &str) -> Result<serde_json::Value, ApiError> {
        self.scanner()?;
        self.repo_with(who, repo, Role::Read)?;
        let digest: berth_common::Digest = digest.parse().map_err(|e| bad(format!("digest {digest:?}: {e}")))?;
        if self.state().get_raw(&keys::manifest(repo, &digest)).map_err(state_err)?.is_none() {
            return Err(not_found(format!("manifest {digest} is not in repository {repo}")));
        }
        let rec = rules::scan(&self.state(), &digest).map_err(state_err)?;
        let status = rec.as_ref().map(|r| r.status.as_str()).unwrap_or("unsupported");
        let Some(rec) = rec.filter(|r| r.status == ScanStatus::Scanned) else {
            return Err(ApiError::new(ErrorCode::Conflict, format!("manifest {digest} has no SBOM: its scan is {status}")));
        };
        let index: berth_scanner::index::ImageIndex =
            serde_json::from_slice(&rec.index_json).map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored index unreadable: {e}")))?;
        Ok(crate::scan::sbom_document(repo, &digest, &index))
    }

    pub(super) async fn feed_import(&self, who: &Access, name: &str, bytes: bytes::Bytes) -> Result<FeedView, ApiError> {
        self.require_superuser(who, "import advisory feeds")?;
        let scanner = self.scanner()?;
        let rec = scanner.import_feed(actor_of(&who.principal), name, bytes.to_vec()).await.map_err(|e| match e {
            crate::scan::ScanError::Feed(m) => bad(m),
            other => ApiError::new(ErrorCode::Unavailable, other.to_string()),
        })?;
        self.log(who, "scanner_feed_import", None, None, vec![("feed", rec.name.clone()), ("digest", rec.digest.to_string())]).await;
        Ok(feed_view(&rec))
    }

    pub(super) async fn scan_status(&self, who: &Access) -> Result<ScannerStatus, ApiError> {
        self.require_superuser(who, "see the scanner's status")?;
        let state = self.state();
        let generation = rules::generation(&state).map_err(state_err)?;
        let mut counts = ScanCounts { queued: 0, scanned: 0, failed: 0, unsupported: 0 };
        let mut rematch_pending = 0;
        for (_, r) in rules::scans(&state).map_err(state_err)? {
            match r.status {
                ScanStatus::Queued => counts.queued += 1,
                ScanStatus::Scanned => {
                    counts.scanned += 1;
                    if r.matched_generation < generation {
                        rematch_pending += 1;
                    }
                }
                ScanStatus::Failed => counts.failed += 1,
                ScanStatus::Unsupported => counts.unsupported += 1,
            }
        }
        let feeds = rules::feeds(&state).map_err(state_err)?.iter().map(feed_view).collect();
        Ok(ScannerStatus { feeds, generation, scans: counts, rematch_pending })
    }
}
