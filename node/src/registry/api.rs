//! The node's registry: the OCI distribution API's calls become metadata
//! reads and writes (Raft) and blob store reads and writes (local disk).
//!
//! Reads are local. A read that misses asks the leader for a read index once
//! and looks again, so a pull through one node right after a push through
//! another does not see a stale "unknown". A blob of the repository that
//! this node lacks is streamed from the nearest holder while it is stored
//! here; a manifest is acknowledged only once its blobs have `min_copies`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_common::{Digest, NodeId, RepoName};
use berth_gateway::*;
use berth_raft::command::QuotaLimitKind;
use berth_raft::command::{namespace_of, IdentityCommand, Role};
use berth_raft::command::{BlobLink, BlobRecord, ManifestRecord, MetaCommand, MetaResponse, NodeRecord, RepositoryRecord, TagRecord};
use berth_raft::state::{keys, quotas, tags};
use berth_raft::{MetaNodeHandle, MetaState, StateRead};
use berth_replication::Replicator;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::errors::{meta_err, state_err};
use crate::identity::audit::AuditLog;
use crate::identity::auth::{actor_of, Authenticated, Authenticator, TOKEN_TTL_SECS};
use crate::identity::jwt;
use crate::identity::policy;
use crate::registry::lifecycle::{self, LabelLife};
use crate::registry::manifest;
use crate::registry::uploads::{self, blob_err, owner_of, write_body, UploadManager};
use crate::util::now_ms;

pub struct NodeRegistry {
    meta: MetaNodeHandle,
    uploads: Arc<UploadManager>,
    replicator: Replicator,
    auth: Arc<Authenticator>,
    audit: AuditLog,
    /// Repositories found missing a moment ago, so a flood of pulls of
    /// names that do not exist does not send every one to the leader.
    absent: AbsentRepos,
    /// Where this node is, for the notifications a push causes.
    site: Option<crate::notify::Site>,
    /// The lifecycle labels of image configs pushed lately (see [`Self::label_life`]).
    config_labels: lifecycle::ConfigLabels,
    /// Fills a proxy-cache organization's misses before a manifest read
    /// (set once by the composition root; see [`PullThrough`]).
    pull_through: std::sync::OnceLock<Arc<dyn PullThrough>>,
}

/// What a manifest read asks of a proxy cache first: on a miss (or a tag
/// due a re-check) the reference is fetched from the upstream and stored
/// through this registry's push path before the read goes on.
#[async_trait]
pub trait PullThrough: Send + Sync + 'static {
    async fn before_manifest_read(&self, repo: &RepoName, reference: &Reference) -> Result<(), ApiError>;
}

/// How long a repository found missing after catching up with the leader
/// is taken to be missing without asking the leader again. A repository
/// created through another node in that window shows here as soon as
/// this node applies it, and at the latest when the window ends.
const ABSENT_FOR: Duration = Duration::from_millis(1500);
/// Names remembered at most, so made-up names cannot grow the map.
const ABSENT_MAX: usize = 10_000;

/// Repository names confirmed missing (after a read barrier), and when.
#[derive(Default)]
struct AbsentRepos {
    seen: Mutex<HashMap<String, Instant>>,
}

impl AbsentRepos {
    fn recently(&self, repo: &RepoName) -> bool {
        self.seen.lock().expect("absent lock").get(repo.as_str()).is_some_and(|at| at.elapsed() < ABSENT_FOR)
    }

    fn remember(&self, repo: &RepoName) {
        let mut seen = self.seen.lock().expect("absent lock");
        if seen.len() >= ABSENT_MAX {
            seen.retain(|_, at| at.elapsed() < ABSENT_FOR);
        }
        // Still full: a flood of distinct names; those go to the leader.
        if seen.len() < ABSENT_MAX {
            seen.insert(repo.to_string(), Instant::now());
        }
    }

    fn forget(&self, repo: &RepoName) {
        self.seen.lock().expect("absent lock").remove(repo.as_str());
    }
}

/// Quay's refusal of a push over a namespace's Reject limit.
fn quota_exceeded(namespace: &str) -> ApiError {
    ApiError::new(ErrorCode::Denied, format!("Quota has been exceeded on namespace {namespace}"))
}

fn unexpected(what: &str, r: MetaResponse) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("{what}: unexpected outcome {r:?}"))
}

impl NodeRegistry {
    pub fn new(meta: MetaNodeHandle, uploads: Arc<UploadManager>, replicator: Replicator, auth: Arc<Authenticator>, audit: AuditLog) -> NodeRegistry {
        NodeRegistry {
            meta,
            uploads,
            replicator,
            auth,
            audit,
            absent: AbsentRepos::default(),
            site: None,
            config_labels: Default::default(),
            pull_through: std::sync::OnceLock::new(),
        }
    }

    /// Pushes name this node, its region and the registry's public name
    /// (and the account), for the notifications they cause.
    pub fn with_site(mut self, site: crate::notify::Site) -> NodeRegistry {
        self.site = Some(site);
        self
    }

    /// Makes manifest reads fill proxy-cache misses through `p` (once).
    pub fn set_pull_through(&self, p: Arc<dyn PullThrough>) {
        if self.pull_through.set(p).is_err() {
            tracing::warn!("the proxy cache was wired twice; keeping the first");
        }
    }

    /// The actions on `repo` a principal may have, of those asked for.
    /// The principal's role on `repo` and whether it may create it. With
    /// `fresh`, after catching up with the leader: a grant made through
    /// another node a moment ago counts.
    async fn rights(&self, p: &Principal, repo: &RepoName, fresh: bool) -> Result<(Option<RepositoryRecord>, Option<Role>, bool), ApiError> {
        // Grants of a repository found missing a moment ago are not worth
        // a round trip either.
        if fresh && !self.known_absent(repo)? {
            if let Err(e) = self.meta.read_barrier().await {
                tracing::debug!(error = %e, "read barrier failed; authorizing on local state");
            }
        }
        let rec = self.repo_record(repo).await?;
        let state = self.state();
        let mut role = policy::repo_role(&state, p, repo.as_str(), rec.as_ref()).map_err(state_err)?;
        // A proxy cache serves its organization: every member may pull
        // through it, what is cached and what is not yet (the fill itself
        // is the node's write, never the member's).
        if let (None, Some(org)) = (role, namespace_of(repo.as_str())) {
            if berth_raft::state::proxycache::config(&state, org).map_err(state_err)?.is_some() && policy::is_org_member(&state, p, org).map_err(state_err)? {
                role = Some(Role::Read);
            }
        }
        let may_create = rec.is_none() && policy::may_create(&state, p, repo.as_str()).map_err(state_err)?;
        Ok((rec, role, may_create))
    }

    /// Does `scope` allow what `a` (authenticated from `caller`) asks?
    async fn allow(&self, a: Authenticated, caller: &Caller, scope: Scope<'_>) -> Result<Access, ApiError> {
        let p = &a.principal;
        let refuse = |what: String| match p {
            Principal::Anonymous => ApiError::new(ErrorCode::Unauthorized, "authentication required"),
            p => ApiError::new(ErrorCode::Denied, format!("{} may not {what}", p.performer())),
        };
        // A registry token allows at most what it names.
        let token_allows = |kind: &str, name: &str, action: &str| {
            a.grants.as_ref().is_none_or(|g| g.iter().any(|g| g.kind == kind && g.name == name && g.actions.iter().any(|x| x == action || x == "*")))
        };
        match scope {
            Scope::Base => {
                if *p == Principal::Anonymous {
                    return Err(refuse(String::new()));
                }
                if let Credentials::Basic { user, .. } = &caller.creds {
                    self.audit.login(true, user, caller.ip, "basic auth on /v2/");
                }
            }
            Scope::Catalog => {
                if *p == Principal::Anonymous || !token_allows("registry", "catalog", "*") {
                    return Err(refuse("list the catalog".into()));
                }
            }
            Scope::Repo { name, action } => {
                let (word, need) = match action {
                    Action::Pull => ("pull", Role::Read),
                    Action::Push => ("push", Role::Write),
                    Action::Delete => ("delete", Role::Write),
                };
                // Docker asks for push, and deletes with it; others ask for delete.
                let in_token =
                    token_allows("repository", name.as_str(), word) || (action == Action::Delete && token_allows("repository", name.as_str(), "push"));
                if !in_token {
                    return Err(refuse(format!("{word} {name} with this token")));
                }
                // Who may create a repository may read and write it before
                // its first write creates it (an upload in progress); a
                // delete needs something to delete.
                let allowed =
                    |(_, role, may_create): &(Option<RepositoryRecord>, Option<Role>, bool)| *role >= Some(need) || (action != Action::Delete && *may_create);
                let mut rights = self.rights(p, name, false).await?;
                if !allowed(&rights) {
                    rights = self.rights(p, name, true).await?;
                }
                if !allowed(&rights) {
                    return Err(refuse(format!("{word} {name}")));
                }
            }
        }
        Ok(Access { principal: a.principal, ip: caller.ip })
    }

    /// The actions on `repo` a principal may have, of those asked for.
    async fn allowed_actions(&self, p: &Principal, repo: &RepoName, asked: &[String]) -> Result<Vec<String>, ApiError> {
        let mut granted = Vec::new();
        for fresh in [false, true] {
            let (_, role, may_create) = self.rights(p, repo, fresh).await?;
            let write = role >= Some(Role::Write) || may_create;
            granted = asked
                .iter()
                .filter(|a| match a.as_str() {
                    "pull" => role.is_some() || may_create,
                    "push" | "delete" | "*" => write,
                    _ => false,
                })
                .cloned()
                .collect();
            if granted.len() == asked.len() {
                break;
            }
        }
        Ok(granted)
    }

    fn state(&self) -> MetaState {
        self.meta.state()
    }

    fn node_id(&self) -> NodeId {
        self.meta.id()
    }

    /// A local read; on a miss, once more after a linearizable barrier.
    async fn read_fresh<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ApiError> {
        if let Some(v) = self.state().get(key).map_err(state_err)? {
            return Ok(Some(v));
        }
        if let Err(e) = self.meta.read_barrier().await {
            // Without a leader the local answer is the best there is.
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
            return Ok(None);
        }
        self.state().get(key).map_err(state_err)
    }

    /// Where `tag` points now, expiry checked here at read time (so no
    /// node serves an expired tag before its row is closed); like
    /// [`Self::read_fresh`], a miss waits for the leader's commits once.
    async fn visible_tag(&self, repo: &RepoName, tag: &str) -> Result<Option<TagRecord>, ApiError> {
        let read = || tags::visible_tag(&self.state(), repo.as_str(), tag, now_ms()).map_err(state_err);
        if let Some(t) = read()? {
            return Ok(Some(t));
        }
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
            return Ok(None);
        }
        read()
    }

    /// A metadata write for the client `who`.
    /// The repository's state as this node knows it, checked before a
    /// push moves any bytes: a client is told at once. The command checks
    /// it again when applied, which is what no race gets past.
    fn refused_by_state(&self, access: &Access, repo: &RepoName) -> Result<(), ApiError> {
        use berth_raft::state::mirror;
        let state = self.state();
        let robot = match &access.principal {
            berth_gateway::Principal::Robot { name } => Some(name.as_str()),
            _ => None,
        };
        if access.principal != Principal::Operator {
            if let Some(c) = berth_raft::state::proxycache::config_of_repo(&state, repo.as_str()).map_err(state_err)? {
                let org = namespace_of(repo.as_str()).unwrap_or_default();
                return Err(crate::errors::proxy_cache(org, &c.upstream_registry));
            }
        }
        match mirror::repo_state(&state, repo.as_str()).map_err(state_err)? {
            berth_raft::mirror::RepoState::Normal => Ok(()),
            berth_raft::mirror::RepoState::Mirror
                if robot.is_some() && mirror::mirror(&state, repo.as_str()).map_err(state_err)?.map(|m| m.config.robot).as_deref() == robot =>
            {
                Ok(())
            }
            other => Err(crate::errors::repository_state(other)),
        }
    }

    /// A refusal by the repository's state (read-only, mirror) is the
    /// same error whichever write it was.
    async fn write(&self, who: &Access, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        match self.meta.write(actor_of(&who.principal), crate::errors::as_principal(&who.principal, cmd)).await.map_err(meta_err)? {
            MetaResponse::RepositoryState { state } => Err(crate::errors::repository_state(state)),
            MetaResponse::ProxyCache { org, upstream } => Err(crate::errors::proxy_cache(&org, &upstream)),
            other => Ok(other),
        }
    }

    async fn link(&self, repo: &RepoName, digest: &Digest) -> Result<BlobLink, ApiError> {
        self.read_fresh(&keys::link(repo.as_str(), digest))
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in repository {repo}")))
    }

    async fn record_blob(&self, access: &Access, repo: &RepoName, digest: &Digest, size: u64) -> Result<(), ApiError> {
        match self
            .write_to(access, repo, MetaCommand::LinkBlob { repo: repo.to_string(), digest: digest.clone(), size, node: self.node_id(), now_ms: now_ms() })
            .await?
        {
            MetaResponse::Done => {
                self.replicator.announce(digest, size).await;
                Ok(())
            }
            other => Err(unexpected("link blob", other)),
        }
    }

    /// Records a blob just stored here while its pipelined copies are
    /// sealed, then has those copies record themselves (the manifest
    /// waits for those records). The pin keeps the sweeper off the copy
    /// until it is recorded. Refused over the quota: the copies stay
    /// unrecorded, and gc deletes them.
    async fn record_committed(&self, access: &Access, repo: &RepoName, digest: &Digest, committed: uploads::Committed) -> Result<(), ApiError> {
        let uploads::Committed { size, pin: _pin, sealing } = committed;
        let record = async {
            self.check_quota(repo, Some((digest, size)))?;
            self.ensure_repository(access, repo).await?;
            self.record_blob(access, repo, digest, size).await
        };
        let sealed = async {
            Ok(match sealing {
                Some(s) => s.await.ok(),
                None => None,
            })
        };
        // A refused record (a node cut off from the majority refuses at
        // once) answers at once too, not after the copies' sealing.
        let ((), sealed) = tokio::try_join!(record, sealed)?;
        if let Some(p) = sealed {
            p.record(digest);
        }
        Ok(())
    }

    /// Creates `repo`, private, administered by its creator, when a push
    /// into it is about to be committed and it does not exist yet. Called
    /// only once the write itself has passed its checks (the blob's digest,
    /// the manifest's references), so a refused request creates nothing.
    /// A writer who may write but not create (an application token without
    /// `repo:create` in its owner's namespace) is refused: nothing else
    /// makes a repository, and the manifest commit would refuse it too.
    /// A superuser's first repository in a namespace nobody has makes that
    /// namespace, an organization they own.
    async fn ensure_repository(&self, access: &Access, repo: &RepoName) -> Result<(), ApiError> {
        let state = self.state();
        if state.get_raw(&keys::repo(repo.as_str())).map_err(state_err)?.is_some() {
            return Ok(());
        }
        let p = &access.principal;
        if !policy::may_create(&state, p, repo.as_str()).map_err(state_err)? {
            return Err(ApiError::new(ErrorCode::Denied, format!("{} may not create repository {repo}", p.performer())));
        }
        let mut rec = RepositoryRecord::new(repo.as_str(), now_ms());
        crate::identity::api::grant_creator(&mut rec, p);
        if let Some(org) = crate::identity::api::implicit_namespace(&state, p, repo.as_str())? {
            match self.write(access, MetaCommand::Identity(org)).await? {
                MetaResponse::Done => self.audit.record("org_create", p, access.ip, namespace_of(repo.as_str()), None, vec![("by", "push".into())]),
                // A concurrent push or an admin made the namespace first.
                MetaResponse::Refused(_) => {}
                other => return Err(unexpected("create namespace", other)),
            }
        }
        match self.write_to(access, repo, MetaCommand::Identity(IdentityCommand::CreateRepository(rec))).await? {
            MetaResponse::Done => {
                self.audit.record("create_repo", p, access.ip, namespace_of(repo.as_str()), Some(repo.as_str()), vec![("by", "push".into())]);
            }
            MetaResponse::Refused(why) => {
                // A concurrent push (or one through a node this one lags)
                // created it first (a write is applied here before it
                // returns), or its namespace does not exist.
                if self.state().get_raw(&keys::repo(repo.as_str())).map_err(state_err)?.is_none() {
                    return Err(ApiError::new(ErrorCode::Denied, why));
                }
            }
            other => return Err(unexpected("create repository", other)),
        }
        Ok(())
    }

    /// BLOB_UNKNOWN for a blob of the repository that no node holds.
    fn held_nowhere(&self, digest: &Digest) -> ApiError {
        ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is in the repository but no node holds a copy"))
    }

    /// Missing here, and confirmed missing by the leader a moment ago.
    fn known_absent(&self, repo: &RepoName) -> Result<bool, ApiError> {
        Ok(self.state().get_raw(&keys::repo(repo.as_str())).map_err(state_err)?.is_none() && self.absent.recently(repo))
    }

    /// A repository's record: local, or on a miss after a read barrier,
    /// unless the leader said a moment ago that it does not exist.
    async fn repo_record(&self, repo: &RepoName) -> Result<Option<RepositoryRecord>, ApiError> {
        let key = keys::repo(repo.as_str());
        if let Some(rec) = self.state().get(&key).map_err(state_err)? {
            return Ok(Some(rec));
        }
        if self.absent.recently(repo) {
            return Ok(None);
        }
        if let Err(e) = self.meta.read_barrier().await {
            // Without a leader the local answer is the best there is, but
            // not one to remember.
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
            return Ok(None);
        }
        let rec = self.state().get(&key).map_err(state_err)?;
        if rec.is_none() {
            self.absent.remember(repo);
        }
        Ok(rec)
    }

    /// A metadata write about `repo`: whatever it is, the repository is
    /// no longer known to be missing.
    async fn write_to(&self, who: &Access, repo: &RepoName, cmd: MetaCommand) -> Result<MetaResponse, ApiError> {
        let out = self.write(who, cmd).await;
        self.absent.forget(repo);
        out
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<(), ApiError> {
        match self.repo_record(repo).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known"))),
        }
    }

    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest, ApiError> {
        if self.known_absent(repo)? {
            return Err(ApiError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known")));
        }
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => match self.visible_tag(repo, t).await? {
                Some(tag) => Ok(tag.digest),
                None => {
                    self.repo_exists(repo).await?;
                    Err(ApiError::new(ErrorCode::ManifestUnknown, format!("tag {t} is not in repository {repo}")))
                }
            },
        }
    }

    /// Manifests are content too: clients (containerd) fetch an index's
    /// children through the blob endpoint.
    async fn manifest_as_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Bytes>, ApiError> {
        Ok(self.state().get::<ManifestRecord>(&keys::manifest(repo.as_str(), digest)).map_err(state_err)?.map(|m| Bytes::from(m.bytes)))
    }

    /// Refuses, before anything is recorded, a blob upload (`None`: one
    /// just starting) that would take `repo`'s namespace over a Reject
    /// limit of its quota. A blob the namespace already counts adds
    /// nothing. The manifest's own check is the state machine's.
    fn check_quota(&self, repo: &RepoName, blob: Option<(&Digest, u64)>) -> Result<(), ApiError> {
        let Some(ns) = namespace_of(repo.as_str()) else { return Ok(()) };
        let state = self.state();
        let Some(limit) = quotas::effective_quota(&state, ns).map_err(state_err)?.and_then(|q| q.threshold(QuotaLimitKind::Reject)) else { return Ok(()) };
        let usage = quotas::usage_of(&state, ns).map_err(state_err)?;
        let over = match blob {
            None => usage >= limit,
            Some((d, _)) if quotas::counted(&state, ns, d).map_err(state_err)? => false,
            Some((_, size)) => usage.saturating_add(size) > limit,
        };
        if over {
            return Err(quota_exceeded(ns));
        }
        Ok(())
    }

    /// The counted usage of `repo`'s namespace, if it has a quota.
    fn quota_usage(&self, repo: &RepoName) -> Option<u64> {
        let ns = namespace_of(repo.as_str())?;
        quotas::effective_quota(&self.state(), ns).ok().flatten()?;
        quotas::usage_of(&self.state(), ns).ok()
    }

    /// Records a push that took the namespace across a Warning limit.
    fn audit_quota_warning(&self, access: &Access, repo: &RepoName, before: Option<u64>) {
        let (Some(before), Some(after), Some(ns)) = (before, self.quota_usage(repo), namespace_of(repo.as_str())) else { return };
        let Some(q) = quotas::effective_quota(&self.state(), ns).ok().flatten() else { return };
        let Some(warn) = q.threshold(QuotaLimitKind::Warning) else { return };
        if before <= warn && after > warn {
            let meta = vec![("usage_bytes", after.to_string()), ("limit_bytes", q.limit_bytes.to_string()), ("warning_bytes", warn.to_string())];
            self.audit.record("quota_warning", &access.principal, access.ip, Some(ns), Some(repo.as_str()), meta);
        }
    }

    /// What the pushed image's labels ask of its tag: an image's own
    /// config labels, or for an index those all its children agree on.
    async fn label_life(&self, repo: &RepoName, parsed: &manifest::Parsed) -> Result<LabelLife, ApiError> {
        let configs: Vec<Digest> = match parsed.kind {
            manifest::Kind::Image => parsed.blobs.first().cloned().into_iter().collect(),
            manifest::Kind::Index => {
                let mut configs = Vec::with_capacity(parsed.children.len());
                for c in &parsed.children {
                    let Some(rec) = self.state().get::<ManifestRecord>(&keys::manifest(repo.as_str(), c)).map_err(state_err)? else {
                        return Ok(LabelLife::default());
                    };
                    // A child that is no image (a nested index) has no labels: no agreement.
                    match manifest::parse(&rec.bytes, Some(&rec.media_type)) {
                        Ok(p) if p.kind == manifest::Kind::Image && !p.blobs.is_empty() => configs.push(p.blobs[0].clone()),
                        _ => return Ok(LabelLife::default()),
                    }
                }
                configs
            }
        };
        let mut sets = Vec::with_capacity(configs.len());
        for c in &configs {
            match self.config_labels.of(c, || lifecycle::read_config(&self.replicator, c)).await {
                Some(labels) => sets.push((*labels).clone()),
                None => return Ok(LabelLife::default()),
            }
        }
        Ok(LabelLife::from_labels(&lifecycle::agreed_labels(&sets)))
    }

    /// The usage log of what the labels did to a pushed tag.
    fn audit_labels(&self, access: &Access, repo: &RepoName, tag: &str, labels: &LabelLife, expiration_ms: Option<u64>) {
        let (ns, r) = (namespace_of(repo.as_str()), Some(repo.as_str()));
        if let Some(e) = expiration_ms {
            let meta = vec![("tag", tag.to_string()), ("expiration", (e / 1000).to_string()), ("by", lifecycle::EXPIRES_AFTER_LABEL.to_string())];
            self.audit.record("change_tag_expiration", &access.principal, access.ip, ns, r, meta);
        }
        if labels.immutable {
            let meta = vec![("tag", tag.to_string()), ("immutable", "true".to_string()), ("by", lifecycle::IMMUTABLE_LABEL.to_string())];
            self.audit.record("change_tag_immutability", &access.principal, access.ip, ns, r, meta);
        }
        if let Some(value) = &labels.malformed {
            let meta = vec![
                ("tag", tag.to_string()),
                ("label", lifecycle::EXPIRES_AFTER_LABEL.to_string()),
                ("value", value.chars().take(200).collect()),
                ("reason", "not an integer and a unit (s, m, h, d, w, y): ignored".to_string()),
            ];
            self.audit.record("tag_expiration_label_ignored", &access.principal, access.ip, ns, r, meta);
        }
    }
}

/// Serves `bytes` (or a range of them) as a blob body.
fn bytes_body(bytes: Bytes, range: Option<ByteRange>) -> Result<BlobBody, ApiError> {
    let size = bytes.len() as u64;
    let (start, len) = match range {
        None => (0, size),
        Some(r) => {
            if r.start >= size || r.end.is_some_and(|e| e < r.start) {
                return Err(ApiError::new(ErrorCode::RangeInvalid, format!("range {}-{:?} is outside a blob of {size} bytes", r.start, r.end)));
            }
            let end = r.end.unwrap_or(size - 1).min(size - 1);
            (r.start, end - r.start + 1)
        }
    };
    let part = bytes.slice(start as usize..(start + len) as usize);
    Ok(BlobBody { size, start, len, stream: Box::pin(futures::stream::once(async move { Ok(part) })) })
}

/// What a registry token or an upload grant names a principal by: `sub`,
/// and for an application token its id.
fn subject_of(p: &Principal) -> (String, Option<String>) {
    match p {
        Principal::App { id, owner, .. } => (owner.clone(), Some(id.clone())),
        Principal::Anonymous => (String::new(), None),
        other => (other.performer(), None),
    }
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
    }
}

/// The part of a key after `prefix`.
fn suffix(key: &[u8], prefix: &[u8]) -> String {
    String::from_utf8_lossy(&key[prefix.len()..]).into_owned()
}

#[async_trait]
impl Registry for NodeRegistry {
    fn service(&self) -> String {
        self.auth.service()
    }

    async fn authorize(&self, caller: &Caller, scope: Scope<'_>) -> Result<Access, ApiError> {
        let a = self.auth.authenticate(caller).await?;
        self.allow(a, caller, scope).await
    }

    async fn upload_grant(&self, access: &Access, repo: &RepoName, id: &str, action: Action) -> Result<String, ApiError> {
        let word = action_word(action).to_string();
        let now_s = now_ms() / 1000;
        let (sub, app) = subject_of(&access.principal);
        let claims = jwt::Claims {
            iss: jwt::ISSUER.into(),
            sub,
            aud: jwt::upload_grant_audience(&self.auth.service()),
            exp: now_s + jwt::UPLOAD_GRANT_TTL_SECS,
            nbf: now_s,
            iat: now_s,
            jti: hex::encode(rand::random::<[u8; 12]>()),
            // The repository, as a registry token names it, and the one
            // session: a grant read on the wire opens nothing else.
            access: vec![
                jwt::Grant { kind: "repository".into(), name: repo.to_string(), actions: vec![word.clone()] },
                jwt::Grant { kind: jwt::UPLOAD_GRANT_KIND.into(), name: id.to_string(), actions: vec![word] },
            ],
            berth_kind: access.principal.kind().into(),
            berth_app: app,
            // The owner checks the caller's credentials are still current.
            berth_gen: self.auth.credential_generation(&access.principal)?,
        };
        self.auth.sign(&claims)
    }

    async fn authorize_upload_grant(&self, grant: &str, caller: &Caller, repo: &RepoName, id: &str, action: Action) -> Result<Access, ApiError> {
        let a = self.auth.upload_grant(grant).await?;
        let word = action_word(action);
        let for_this = a.grants.iter().flatten().any(|g| g.kind == jwt::UPLOAD_GRANT_KIND && g.name == id && g.actions.iter().any(|x| x == word));
        if !for_this {
            return Err(ApiError::new(ErrorCode::Unauthorized, format!("the upload grant is not for {word} on upload {id}")));
        }
        self.allow(a, caller, Scope::Repo { name: repo, action }).await
    }

    async fn issue_token(&self, caller: &Caller, scopes: &[ResourceScope]) -> Result<IssuedToken, ApiError> {
        // A login sees every identity change committed anywhere before it
        // (a robot deleted through another node a moment ago is refused
        // here too). Without a leader, logins go on against local state.
        if !matches!(caller.creds, Credentials::None) {
            if let Err(e) = self.meta.read_barrier().await {
                tracing::debug!(error = %e, "read barrier failed; logging in against local state");
            }
        }
        let a = self.auth.authenticate(caller).await?;
        if a.grants.is_some() {
            return Err(ApiError::new(ErrorCode::Unauthorized, "present credentials, not a registry token, to get a token"));
        }
        let p = a.principal;
        if p == Principal::Operator {
            return Err(ApiError::new(ErrorCode::Denied, "the operator token is used as is, not exchanged for registry tokens"));
        }
        let mut access = Vec::new();
        for s in scopes {
            let actions = match (s.kind.as_str(), s.name.as_str()) {
                ("repository", name) => match name.parse::<RepoName>() {
                    Ok(repo) => self.allowed_actions(&p, &repo, &s.actions).await?,
                    Err(_) => Vec::new(),
                },
                ("registry", "catalog") if p != Principal::Anonymous => s.actions.iter().filter(|a| *a == "*").cloned().collect(),
                _ => Vec::new(),
            };
            access.push(jwt::Grant { kind: s.kind.clone(), name: s.name.clone(), actions });
        }
        let now_s = now_ms() / 1000;
        let (sub, app) = subject_of(&p);
        let claims = jwt::Claims {
            iss: jwt::ISSUER.into(),
            sub,
            aud: self.auth.service(),
            exp: now_s + TOKEN_TTL_SECS,
            nbf: now_s,
            iat: now_s,
            jti: hex::encode(rand::random::<[u8; 12]>()),
            access,
            berth_kind: p.kind().into(),
            berth_app: app,
            berth_gen: self.auth.credential_generation(&p)?,
        };
        let token = self.auth.sign(&claims)?;
        if let Credentials::Basic { user, .. } = &caller.creds {
            self.audit.login(true, user, caller.ip, "token issued");
        }
        Ok(IssuedToken { access_token: token.clone(), token, expires_in: TOKEN_TTL_SECS, issued_at: crate::util::rfc3339(now_s * 1000) })
    }

    async fn audit(&self, access: &Access, kind: &'static str, repo: &RepoName, metadata: Vec<(&'static str, String)>) {
        self.audit.record(kind, &access.principal, access.ip, namespace_of(repo.as_str()), Some(repo.as_str()), metadata);
    }

    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> Result<u64, ApiError> {
        if let Err(e) = self.link(repo, digest).await {
            return self.manifest_as_blob(repo, digest).await?.map(|b| b.len() as u64).ok_or(e);
        }
        if let Some(size) = self.uploads.store().stat(digest).await.map_err(blob_err)? {
            return Ok(size);
        }
        let rec: Option<BlobRecord> = self.read_fresh(&keys::blob(digest)).await?;
        rec.filter(|r| !r.holders.is_empty()).map(|r| r.size).ok_or_else(|| self.held_nowhere(digest))
    }

    async fn blob_read(&self, repo: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobBody, ApiError> {
        if let Err(e) = self.link(repo, digest).await {
            let bytes = self.manifest_as_blob(repo, digest).await?.ok_or(e)?;
            return bytes_body(bytes, range);
        }
        let range = range.map(|r| berth_replication::BlobRange { start: r.start, end: r.end });
        // Local disk, or streamed from the nearest holder while this node stores it.
        let body = self.replicator.open(digest, range).await.map_err(blob_err)?.ok_or_else(|| self.held_nowhere(digest))?;
        Ok(BlobBody { size: body.size, start: body.start, len: body.len, stream: body.stream })
    }

    async fn blob_delete(&self, access: &Access, repo: &RepoName, digest: &Digest) -> Result<(), ApiError> {
        match self.write_to(access, repo, MetaCommand::UnlinkBlob { repo: repo.to_string(), digest: digest.clone() }).await? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in repository {repo}"))),
            other => Err(unexpected("delete blob", other)),
        }
    }

    async fn blob_mount(&self, access: &Access, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool, ApiError> {
        let Some(link) = self.read_fresh::<BlobLink>(&keys::link(from.as_str(), digest)).await? else { return Ok(false) };
        let holder = if self.uploads.store().stat(digest).await.map_err(blob_err)?.is_some() {
            self.node_id()
        } else {
            match self.state().get::<BlobRecord>(&keys::blob(digest)).map_err(state_err)?.and_then(|r| r.holders.into_iter().next()) {
                Some(h) => h,
                None => return Ok(false),
            }
        };
        self.check_quota(repo, Some((digest, link.size)))?;
        self.ensure_repository(access, repo).await?;
        match self
            .write_to(access, repo, MetaCommand::LinkBlob { repo: repo.to_string(), digest: digest.clone(), size: link.size, node: holder, now_ms: now_ms() })
            .await?
        {
            MetaResponse::Done => Ok(true),
            other => Err(unexpected("mount blob", other)),
        }
    }

    async fn blob_put(&self, access: &Access, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<(), ApiError> {
        self.refused_by_state(access, repo)?;
        let store = self.uploads.store();
        let mut staging = store.create_staging().await.map_err(blob_err)?;
        let mut pipeline = self.uploads.pipeline(repo.as_str());
        write_body(&mut staging, pipeline.as_mut(), body).await?;
        let committed = uploads::commit(store, staging, pipeline, digest).await?;
        self.record_committed(access, repo, digest, committed).await
    }

    fn upload_owner(&self, id: &str) -> Result<UploadOwner, ApiError> {
        let unknown = || ApiError::new(ErrorCode::BlobUploadUnknown, format!("upload {id} is unknown"));
        let owner = owner_of(id).ok_or_else(unknown)?;
        if owner == self.node_id() {
            return Ok(UploadOwner::Local);
        }
        let node: NodeRecord = self.state().get(&keys::node(owner)).map_err(state_err)?.filter(|n: &NodeRecord| !n.removed).ok_or_else(unknown)?;
        Ok(UploadOwner::Remote(node.http_addr))
    }

    async fn upload_start(&self, access: &Access, repo: &RepoName) -> Result<UploadState, ApiError> {
        self.check_quota(repo, None)?;
        self.refused_by_state(access, repo)?;
        self.uploads.start(&access.principal.performer(), repo.as_str()).await
    }

    async fn upload_patch(&self, repo: &RepoName, id: &str, range: Option<(u64, u64)>, body: ByteStream) -> Result<UploadState, ApiError> {
        self.uploads.patch(repo.as_str(), id, range, body).await
    }

    async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadState, ApiError> {
        self.uploads.status(repo.as_str(), id).await
    }

    async fn upload_finish(&self, access: &Access, repo: &RepoName, id: &str, digest: &Digest, body: ByteStream) -> Result<(), ApiError> {
        let committed = self.uploads.finish(repo.as_str(), id, digest, body).await?;
        self.record_committed(access, repo, digest, committed).await
    }

    async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<(), ApiError> {
        self.uploads.cancel(repo.as_str(), id).await
    }

    async fn manifest_get(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest, ApiError> {
        if let Some(p) = self.pull_through.get() {
            p.before_manifest_read(repo, reference).await?;
        }
        let digest = self.resolve(repo, reference).await?;
        let rec: ManifestRecord = match self.read_fresh(&keys::manifest(repo.as_str(), &digest)).await? {
            Some(r) => r,
            None => {
                self.repo_exists(repo).await?;
                return Err(ApiError::new(ErrorCode::ManifestUnknown, format!("manifest {digest} is not in repository {repo}")));
            }
        };
        Ok(StoredManifest { media_type: rec.media_type, digest: rec.digest, bytes: Bytes::from(rec.bytes), subject: rec.subject })
    }

    async fn manifest_put(
        &self,
        access: &Access,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutOutcome, ApiError> {
        self.refused_by_state(access, repo)?;
        let parsed = manifest::parse(&bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(d) => {
                if !d.matches(&bytes) {
                    return Err(ApiError::new(ErrorCode::DigestInvalid, format!("the manifest's content does not have digest {d}")));
                }
                d.clone()
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        // Each blob's link into the repository, which also says its size:
        // the links of one repository sit side by side, where the blob
        // records are spread over the whole key space.
        let links: Vec<Vec<u8>> = parsed.blobs.iter().map(|b| keys::link(repo.as_str(), b)).collect();
        let held = self.state().get_many_raw(&links).map_err(state_err)?;
        let mut sized = Vec::with_capacity(parsed.blobs.len());
        for ((b, key), held) in parsed.blobs.iter().zip(&links).zip(held) {
            let link = match held {
                Some(v) => Some(berth_raft::state::decode_record::<BlobLink>(key, &v).map_err(state_err)?),
                // Not applied here yet, perhaps: asked again after catching up.
                None => self.read_fresh::<BlobLink>(key).await?,
            };
            let Some(link) = link else {
                return Err(ApiError::new(ErrorCode::ManifestBlobUnknown, format!("blob {b} is not in repository {repo}: push it first"))
                    .with_detail(serde_json::json!({ "digest": b.to_string() })));
            };
            sized.push((b.clone(), link.size));
        }
        for c in &parsed.children {
            if self.read_fresh::<ManifestRecord>(&keys::manifest(repo.as_str(), c)).await?.is_none() {
                return Err(ApiError::new(ErrorCode::ManifestBlobUnknown, format!("manifest {c} is not in repository {repo}: push it first"))
                    .with_detail(serde_json::json!({ "digest": c.to_string() })));
            }
        }
        // Durability: every blob on min_copies nodes before the push is acknowledged.
        // A node cut off from the majority cannot commit the manifest, and
        // its peers may be out of reach for the copies too: it answers 503
        // as soon as it knows, instead of holding the client until the copy
        // timeout or the heal.
        let copies = self.replicator.ensure_copies(&sized);
        tokio::select! {
            copied = copies => copied.map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("push not acknowledged: {e}")))?,
            why = self.meta.refusing() => return Err(ApiError::new(ErrorCode::Unavailable, format!("push not acknowledged: {why}"))),
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        // The lifecycle labels, read before the proposal so the tag's new
        // row is decided in the same command as the tag write.
        let labels = match &tag {
            Some(_) => self.label_life(repo, &parsed).await?,
            None => LabelLife::default(),
        };
        let pushed_at_ms = now_ms();
        let record = ManifestRecord {
            repo: repo.to_string(),
            digest: digest.clone(),
            media_type: parsed.media_type,
            bytes: bytes.to_vec(),
            blobs: parsed.blobs,
            children: parsed.children,
            subject: parsed.subject.clone(),
            pushed_at_ms,
        };
        self.ensure_repository(access, repo).await?;
        let expiration_ms = labels.expiration_ms(pushed_at_ms);
        let cmd = match &self.site {
            Some(site) => MetaCommand::PutManifestFrom {
                record,
                tag: tag.clone(),
                origin: site.origin(&access.principal.performer()),
                expiration_ms,
                immutable: labels.immutable,
            },
            None => MetaCommand::PutManifest { record, tag: tag.clone() },
        };
        let usage_before = self.quota_usage(repo);
        match self.write_to(access, repo, cmd).await? {
            MetaResponse::Done => {
                if let Some(tag) = &tag {
                    self.audit_labels(access, repo, tag, &labels, expiration_ms);
                }
                self.audit_quota_warning(access, repo, usage_before);
                Ok(PutOutcome { digest, subject: parsed.subject })
            }
            MetaResponse::QuotaExceeded { namespace } => Err(quota_exceeded(&namespace)),
            MetaResponse::TagImmutable { tag } => Err(crate::errors::tag_immutable(&tag)),
            // A blob was garbage-collected between the check above and the commit.
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::ManifestBlobUnknown, format!("{why}: push it again"))),
            other => Err(unexpected("put manifest", other)),
        }
    }

    async fn manifest_delete(&self, access: &Access, repo: &RepoName, reference: &Reference) -> Result<(), ApiError> {
        self.refused_by_state(access, repo)?;
        let cmd = match reference {
            Reference::Digest(d) => MetaCommand::DeleteManifestAt { repo: repo.to_string(), digest: d.clone(), now_ms: now_ms() },
            Reference::Tag(t) => MetaCommand::DeleteTagAt { repo: repo.to_string(), tag: t.clone(), if_current: None, now_ms: now_ms() },
        };
        match self.write_to(access, repo, cmd).await? {
            MetaResponse::Done => Ok(()),
            MetaResponse::TagImmutable { tag } => Err(crate::errors::tag_immutable(&tag)),
            MetaResponse::NotFound => Err(ApiError::new(ErrorCode::ManifestUnknown, format!("{reference} is not in repository {repo}"))),
            other => Err(unexpected("delete manifest", other)),
        }
    }

    async fn catch_up(&self) -> Result<(), ApiError> {
        self.meta.read_barrier().await.map_err(meta_err)
    }

    async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError> {
        self.repo_exists(repo).await?;
        let (items, more) = tags::visible_tag_page(&self.state(), repo.as_str(), now_ms(), last, n.unwrap_or(usize::MAX - 1)).map_err(state_err)?;
        Ok(Page { items, more })
    }

    async fn catalog(&self, access: &Access, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError> {
        // Read from `last` on, a batch at a time, until the page is full:
        // a page costs the repositories it passes, not the whole catalog.
        let state = self.state();
        let (items, more) = berth_raft::state::page_filtered(&state, keys::REPO_PREFIX, last.map(str::as_bytes), n.unwrap_or(usize::MAX - 1), |batch, _| {
            let mut names = Vec::with_capacity(batch.len());
            for (k, v) in batch {
                let r: RepositoryRecord = berth_raft::state::decode_record(k, v)?;
                if policy::repo_role(&state, &access.principal, &r.name, Some(&r))?.is_some() {
                    names.push(r.name);
                }
            }
            Ok(names)
        })
        .map_err(state_err)?;
        Ok(Page { items, more })
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>, ApiError> {
        let prefix = keys::referrers_of(repo.as_str(), subject);
        let mut out = Vec::new();
        for (k, _) in self.state().scan_raw(&prefix).map_err(state_err)? {
            let Ok(digest) = suffix(&k, &prefix).parse::<Digest>() else { continue };
            let Some(rec) = self.state().get::<ManifestRecord>(&keys::manifest(repo.as_str(), &digest)).map_err(state_err)? else { continue };
            let Ok(parsed) = manifest::parse(&rec.bytes, Some(&rec.media_type)) else { continue };
            if artifact_type.is_some_and(|want| parsed.artifact_type.as_deref() != Some(want)) {
                continue;
            }
            out.push(Descriptor {
                media_type: rec.media_type,
                digest,
                size: rec.bytes.len() as u64,
                artifact_type: parsed.artifact_type,
                annotations: parsed.annotations.map(|a| a.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect()),
            });
        }
        Ok(out)
    }
}
