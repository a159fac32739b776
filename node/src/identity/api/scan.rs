//! The security API and the scanner's admin calls (see `crate::scan`).
//! The report is readable by whoever may pull the repository; feeds and
//! the scanner's status are superusers'.

use berth_gateway::identity::{FeedSourceRequest, FeedSourceView, FeedView, ScanCounts, ScannerStatus};
use berth_raft::command::{FeedRecord, FeedSourceRecord, MetaCommand, MetaResponse, ScanCommand, ScanStatus};
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

fn source_view(s: &FeedSourceRecord) -> FeedSourceView {
    FeedSourceView {
        name: s.name.clone(),
        url: s.url.clone(),
        interval_secs: s.interval_secs,
        next_fetch_at: rfc3339(s.due_at_ms),
        fetching_node: s.lease.as_ref().map(|l| l.node),
        last_checked_at: (s.checked_at_ms > 0).then(|| rfc3339(s.checked_at_ms)),
        last_checked_by: s.checked_by,
        last_outcome: s.outcome.clone(),
        etag: s.etag.clone(),
        last_modified: s.last_modified.clone(),
    }
}

/// Six hours: the Debian tracker and osv.dev change every few hours.
const DEFAULT_SOURCE_INTERVAL_SECS: u64 = 6 * 3600;

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
        let sources = rules::sources(&state).map_err(state_err)?.iter().map(source_view).collect();
        Ok(ScannerStatus { feeds, generation, scans: counts, rematch_pending, sources })
    }

    pub(super) async fn source_put(&self, who: &Access, name: &str, req: FeedSourceRequest) -> Result<FeedSourceView, ApiError> {
        self.require_superuser(who, "schedule advisory feeds")?;
        self.scanner()?;
        if name.is_empty() || name.len() > 256 {
            return Err(bad("a feed's name is 1 to 256 characters"));
        }
        let url = reqwest::Url::parse(&req.url).map_err(|e| bad(format!("url {:?}: {e}", req.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("url {:?}: only http:// and https:// feeds are fetched", req.url)));
        }
        let interval_secs = req.interval_secs.unwrap_or(DEFAULT_SOURCE_INTERVAL_SECS);
        if interval_secs == 0 {
            return Err(bad("interval_secs is at least 1"));
        }
        let cmd = ScanCommand::PutSource { name: name.to_string(), url: url.to_string(), interval_secs, now_ms: crate::util::now_ms() };
        match self.meta.write(actor_of(&who.principal), MetaCommand::Scan(cmd)).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::Refused(why) => return Err(bad(why)),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, "scanner_source_put", None, None, vec![("feed", name.to_string()), ("url", url.to_string())]).await;
        let src = rules::sources(&self.state()).map_err(state_err)?.into_iter().find(|s| s.name == name);
        src.map(|s| source_view(&s)).ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the source is recorded but not applied here yet"))
    }

    pub(super) async fn source_delete(&self, who: &Access, name: &str) -> Result<(), ApiError> {
        self.require_superuser(who, "schedule advisory feeds")?;
        self.scanner()?;
        match self.meta.write(actor_of(&who.principal), MetaCommand::Scan(ScanCommand::RemoveSource { name: name.to_string() })).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("no feed source {name}"))),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, "scanner_source_delete", None, None, vec![("feed", name.to_string())]).await;
        Ok(())
    }
}
