//! The tag lifecycle on Quay's paths: a repository's tag history, and
//! expiration, locks, moves and restores of one tag. The rules (immutable,
//! expired, clamped) are the state machine's (`berth_raft::state::tags`);
//! this side checks the caller's rights, shapes the rows and logs.

use berth_common::Digest;
use berth_raft::command::{BlobRecord, ManifestRecord, NodeRecord, TagCommand, TagHistoryRecord, TagLifeRecord, TagRecord};
use berth_raft::state::decode_record;

use super::*;

/// One row as the listing sees it, before paging.
struct Row {
    name: String,
    digest: Digest,
    start_ms: u64,
    end_ms: Option<u64>,
    expiration_ms: Option<u64>,
    reverted: bool,
    immutable: bool,
    /// The tag's live row (absent for readers once expired).
    live: bool,
}

/// Which tag names a query keeps.
fn name_filter(q: &TagListQuery) -> Result<impl Fn(&str) -> bool + '_, ApiError> {
    let filter = match q.filter_tag_name.as_deref() {
        None => None,
        Some(f) => match f.split_once(':') {
            Some(("like", s)) => Some((true, s)),
            Some(("eq", s)) => Some((false, s)),
            _ => return Err(bad(format!("filter_tag_name {f:?} is not like:TEXT or eq:NAME"))),
        },
    };
    Ok(move |name: &str| q.specific_tag.as_deref().is_none_or(|t| t == name) && filter.is_none_or(|(like, s)| if like { name.contains(s) } else { name == s }))
}

/// The outcome of a tag command: `refused` is the code for a refusal that
/// is not the immutable one.
fn outcome(resp: MetaResponse, missing: impl FnOnce() -> String, refused: ErrorCode) -> Result<(), ApiError> {
    match resp {
        MetaResponse::Done => Ok(()),
        MetaResponse::NotFound => Err(not_found(missing())),
        MetaResponse::TagImmutable { tag } => Err(crate::errors::tag_immutable(&tag)),
        MetaResponse::Refused(why) => Err(ApiError::new(refused, why)),
        MetaResponse::ProxyCache { org, upstream } => Err(ApiError::new(refused, berth_raft::state::proxycache::refusal(&org, &upstream))),
        other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
    }
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|_| bad(format!("manifest_digest {s:?} is not a digest")))
}

impl NodeIdentity {
    async fn tag_write(&self, who: &Access, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        match self.meta.write(actor_of(&who.principal), crate::errors::as_principal(&who.principal, cmd)).await.map_err(meta_err)? {
            MetaResponse::RepositoryState { state } => Err(crate::errors::repository_state(state)),
            other => Ok(other),
        }
    }

    fn tag_rows(&self, repo: &str) -> Result<Vec<Row>, ApiError> {
        let state = self.state();
        let mut rows = Vec::new();
        let prefix = keys::tags_of(repo);
        for (k, v) in state.scan_raw(&prefix).map_err(state_err)? {
            let rec: TagRecord = decode_record(&k, &v).map_err(state_err)?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let life = state.get::<TagLifeRecord>(&keys::tag_life(repo, &name)).map_err(state_err)?.unwrap_or_default();
            // Live rows end at their expiration, if they have one.
            let end_ms = life.expiration_ms;
            rows.push(Row {
                name,
                digest: rec.digest,
                start_ms: rec.pushed_at_ms,
                end_ms,
                expiration_ms: life.expiration_ms,
                reverted: life.reverted,
                immutable: life.immutable,
                live: true,
            });
        }
        let prefix = keys::tag_histories_of(repo);
        for (k, v) in state.scan_raw(&prefix).map_err(state_err)? {
            let h: TagHistoryRecord = decode_record(&k, &v).map_err(state_err)?;
            let rest = &k[prefix.len()..];
            let name = String::from_utf8_lossy(&rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]).into_owned();
            rows.push(Row {
                name,
                digest: h.digest,
                start_ms: h.start_ms,
                end_ms: Some(h.end_ms),
                expiration_ms: h.expiration_ms,
                reverted: h.reverted,
                immutable: h.immutable,
                live: false,
            });
        }
        // Newest first, as Quay lists them.
        rows.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.name.cmp(&b.name)));
        Ok(rows)
    }

    fn tag_view(&self, repo: &str, row: Row) -> Result<TagView, ApiError> {
        let state = self.state();
        let manifest = state.get::<ManifestRecord>(&keys::manifest(repo, &row.digest)).map_err(state_err)?;
        let size = match &manifest {
            Some(m) if m.children.is_empty() => {
                let mut total = 0u64;
                for b in m.blobs.iter().collect::<BTreeSet<_>>() {
                    total += state.get::<BlobRecord>(&keys::blob(b)).map_err(state_err)?.map_or(0, |r| r.size);
                }
                Some(total)
            }
            _ => None,
        };
        Ok(TagView {
            name: row.name,
            manifest_digest: row.digest.to_string(),
            is_manifest_list: manifest.as_ref().is_some_and(|m| !m.children.is_empty()),
            size,
            start_ts: row.start_ms / 1000,
            end_ts: row.end_ms.map(|e| e / 1000),
            last_modified: row.start_ms / 1000,
            expiration: row.expiration_ms.map(|e| e / 1000),
            reversion: row.reverted,
            immutable: row.immutable,
            security: None,
        })
    }

    pub(super) async fn list_tag_rows(&self, who: &Access, repo: &str, q: TagListQuery) -> Result<TagList, ApiError> {
        let limit = q.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(bad(format!("limit {limit} is not between 1 and 100")));
        }
        let page = q.page.unwrap_or(1);
        if page == 0 {
            return Err(bad("page starts at 1"));
        }
        let keep = name_filter(&q)?;
        self.repo_with(who, repo, Role::Read)?;
        let now = now_ms();
        let rows: Vec<Row> = self
            .tag_rows(repo)?
            .into_iter()
            .filter(|r| keep(&r.name))
            .filter(|r| !q.only_active_tags || r.live && r.expiration_ms.is_none_or(|e| e > now))
            .collect();
        let from = (page as usize - 1) * limit as usize;
        let has_additional = rows.len() > from + limit as usize;
        let mut tags: Vec<TagView> = rows.into_iter().skip(from).take(limit as usize).map(|r| self.tag_view(repo, r)).collect::<Result<_, _>>()?;
        if let Some(scanner) = &self.scanner {
            // Re-matching needs no layer reads: at most `limit` cheap
            // matches against this node's advisories.
            for t in &mut tags {
                let Ok(digest) = t.manifest_digest.parse::<Digest>() else { continue };
                if let Ok(Some((rec, report))) = scanner.report(&digest).await {
                    let counts = report.map(|r| r.counts().into_iter().map(|(k, v)| (k.to_string(), v)).collect()).unwrap_or_default();
                    t.security = Some(berth_gateway::identity::SecuritySummary { status: rec.status.as_str().to_string(), counts });
                }
            }
        }
        Ok(TagList { tags, page, has_additional })
    }

    pub(super) async fn update_tag_row(&self, who: &Access, repo: &str, tag: &str, req: TagUpdate) -> Result<(), ApiError> {
        let fields = usize::from(req.expiration.is_some()) + usize::from(req.immutable.is_some()) + usize::from(req.manifest_digest.is_some());
        if fields != 1 {
            return Err(bad("give exactly one of expiration, immutable and manifest_digest"));
        }
        let need = if req.immutable == Some(false) { Role::Admin } else { Role::Write };
        self.repo_with(who, repo, need)?;
        let now = now_ms();
        let missing = || format!("no tag {tag} in repository {repo}");
        let (kind, meta) = if let Some(expiration) = req.expiration {
            let expiration_ms = expiration.map(|s| s.checked_mul(1000).ok_or_else(|| bad("expiration is out of range"))).transpose()?;
            let cmd = MetaCommand::Tag(TagCommand::SetExpiration { repo: repo.into(), tag: tag.into(), expiration_ms, now_ms: now });
            outcome(self.tag_write(who, cmd).await?, missing, ErrorCode::BadRequest)?;
            ("change_tag_expiration", vec![("tag", tag.to_string()), ("expiration", expiration.map_or("none".into(), |s| s.to_string()))])
        } else if let Some(immutable) = req.immutable {
            let cmd = MetaCommand::Tag(TagCommand::SetImmutable { repo: repo.into(), tag: tag.into(), immutable, now_ms: now });
            outcome(self.tag_write(who, cmd).await?, missing, ErrorCode::Conflict)?;
            ("change_tag_immutability", vec![("tag", tag.to_string()), ("immutable", immutable.to_string())])
        } else {
            let d = digest(req.manifest_digest.as_deref().unwrap_or_default())?;
            let before = berth_raft::state::tags::visible_tag(&self.state(), repo, tag, now).map_err(state_err)?;
            let cmd = MetaCommand::SetTag { repo: repo.into(), tag: tag.into(), digest: d.clone(), pushed_at_ms: now, if_current: None };
            outcome(self.tag_write(who, cmd).await?, || format!("no manifest {d} in repository {repo}"), ErrorCode::Conflict)?;
            (if before.is_some() { "move_tag" } else { "create_tag" }, vec![("tag", tag.to_string()), ("manifest_digest", d.to_string())])
        };
        self.log(who, kind, namespace_of(repo), Some(repo), meta).await;
        Ok(())
    }

    pub(super) async fn restore_tag_row(&self, who: &Access, repo: &str, tag: &str, req: TagRestore) -> Result<(), ApiError> {
        let d = digest(&req.manifest_digest)?;
        self.repo_with(who, repo, Role::Write)?;
        let cmd = MetaCommand::Tag(TagCommand::Restore { repo: repo.into(), tag: tag.into(), digest: d.clone(), now_ms: now_ms() });
        outcome(self.tag_write(who, cmd).await?, || format!("tag {tag} never pointed at {d}"), ErrorCode::NotFound)?;
        self.log(who, "revert_tag", namespace_of(repo), Some(repo), vec![("tag", tag.to_string()), ("manifest_digest", d.to_string())]).await;
        Ok(())
    }

    /// The same command as a `DELETE /v2/{r}/manifests/{tag}`: the live row
    /// ends now and joins the history (restorable); an immutable tag is
    /// refused inside the state machine.
    pub(super) async fn delete_tag_row(&self, who: &Access, repo: &str, tag: &str) -> Result<(), ApiError> {
        self.repo_with(who, repo, Role::Write)?;
        let now = now_ms();
        let live = berth_raft::state::tags::visible_tag(&self.state(), repo, tag, now).map_err(state_err)?;
        let Some(current) = live else {
            return Err(not_found(format!("no tag {tag} in repository {repo}")));
        };
        let cmd = MetaCommand::DeleteTagAt { repo: repo.into(), tag: tag.into(), if_current: None, now_ms: now };
        outcome(self.tag_write(who, cmd).await?, || format!("no tag {tag} in repository {repo}"), ErrorCode::Conflict)?;
        self.log(who, "delete_tag", namespace_of(repo), Some(repo), vec![("tag", tag.to_string()), ("manifest_digest", current.digest.to_string())]).await;
        Ok(())
    }

    /// Each blob of the manifest (and of an index's children) with its
    /// size and the nodes holding a verified copy, as this node's state
    /// machine has them (every node has the same records).
    pub(super) fn placement_of(&self, who: &Access, repo: &str, digest: &str) -> Result<ManifestPlacement, ApiError> {
        let d: Digest = digest.parse().map_err(|_| bad(format!("{digest:?} is not a digest")))?;
        self.repo_with(who, repo, Role::Admin)?;
        let state = self.state();
        let missing = || not_found(format!("no manifest {d} in repository {repo}"));
        let top = state.get::<ManifestRecord>(&keys::manifest(repo, &d)).map_err(state_err)?.ok_or_else(missing)?;
        let mut manifests = vec![top.clone()];
        for child in &top.children {
            if let Some(m) = state.get::<ManifestRecord>(&keys::manifest(repo, child)).map_err(state_err)? {
                manifests.push(m);
            }
        }
        let mut seen = BTreeSet::new();
        let mut blobs = Vec::new();
        for m in &manifests {
            // The config is named in the manifest's JSON; the rest are layers.
            let config = serde_json::from_slice::<serde_json::Value>(&m.bytes).ok().and_then(|v| v["config"]["digest"].as_str().map(String::from));
            for b in &m.blobs {
                if !seen.insert(b.clone()) {
                    continue;
                }
                let rec = state.get::<BlobRecord>(&keys::blob(b)).map_err(state_err)?;
                let mut holders = Vec::new();
                for node in rec.as_ref().map(|r| r.holders.iter().copied().collect::<Vec<_>>()).unwrap_or_default() {
                    let n = state.get::<NodeRecord>(&keys::node(node)).map_err(state_err)?.filter(|n| !n.removed);
                    holders.push(BlobHolder { node, region: n.map(|n| n.region).unwrap_or_default() });
                }
                let kind = if config.as_deref() == Some(b.to_string().as_str()) { "config" } else { "layer" };
                blobs.push(BlobPlacement { digest: b.to_string(), kind: kind.into(), size: rec.map_or(0, |r| r.size), holders });
            }
        }
        Ok(ManifestPlacement { manifest_digest: d.to_string(), blobs })
    }
}
