//! Repository states and mirror configurations on Quay's paths. The
//! caller administers the repository; the rules that must hold under
//! races (a mirror exists once, the robot is of the namespace, the state
//! guards every content write) are the state machine's
//! (`berth_raft::state::mirror`). Every refusal here happens before any
//! write: a bad request changes nothing.

use berth_gateway::identity::{MirrorProxy, MirrorRegistryConfig, MirrorRequest, MirrorRootRule, MirrorView, RepoStateChange};
use berth_raft::mirror::{MirrorCommand, MirrorConfig, MirrorRecord, RepoState};
use berth_raft::state::mirror as rules;

use super::*;
use crate::mirror_config as m;

/// Quay's bounds of the per-sync timeout, in seconds.
const MIN_TIMEOUT_S: u64 = 30;
const MAX_TIMEOUT_S: u64 = 12 * 3600;
const DEFAULT_TIMEOUT_S: u64 = 300;

fn view(rec: &MirrorRecord) -> MirrorView {
    let c = &rec.config;
    MirrorView {
        is_enabled: c.is_enabled,
        mirror_type: "PULL".into(),
        external_reference: c.external_reference.clone(),
        external_registry_username: c.username.clone(),
        external_registry_config: MirrorRegistryConfig {
            verify_tls: Some(c.verify_tls),
            unsigned_images: Some(c.unsigned_images),
            proxy: Some(MirrorProxy { http_proxy: c.http_proxy.clone(), https_proxy: c.https_proxy.clone(), no_proxy: c.no_proxy.clone() }),
        },
        sync_interval: c.sync_interval_s,
        sync_start_date: m::format_date(rec.status.next_start_ms),
        sync_expiration_date: rec.status.expiration_ms.map(m::format_date),
        sync_retries_remaining: rec.status.retries_remaining,
        sync_status: rec.status.sync_status.as_str().into(),
        root_rule: MirrorRootRule { rule_kind: "tag_glob_csv".into(), rule_value: c.tag_globs.clone() },
        robot_username: c.robot.clone(),
        skopeo_timeout_interval: c.timeout_s,
        architecture_filter: c.architecture_filter.clone(),
        last_sync_message: rec.status.last_message.clone(),
        syncing_node: rec.lease.as_ref().map(|l| l.node),
        preferred_region: c.preferred_region.clone(),
    }
}

/// The robot must be one of the repository's namespace.
fn check_robot(state: &MetaState, repo: &str, robot: &str) -> Result<(), ApiError> {
    let robot_known = match robot.split_once('+') {
        Some((ns, short)) => Some(ns) == namespace_of(repo) && state.get_raw(&keys::robot(ns, short)).map_err(state_err)?.is_some(),
        None => false,
    };
    if !robot_known {
        return Err(bad(format!("robot_username {robot:?} is not a robot of the repository's namespace")));
    }
    Ok(())
}

// Each field below: what the request says, else what `old` has, else the
// default (or a refusal when the field is required).

fn tag_globs(rule: Option<MirrorRootRule>, old: Option<&MirrorConfig>) -> Result<Vec<String>, ApiError> {
    let rule = match (rule, old) {
        (Some(rule), _) => rule,
        (None, Some(o)) => return Ok(o.tag_globs.clone()),
        (None, None) => return Err(bad("root_rule with at least one tag glob is required")),
    };
    if rule.rule_kind != "tag_glob_csv" {
        return Err(bad(format!("root_rule.rule_kind {:?} is not tag_glob_csv", rule.rule_kind)));
    }
    let globs: Vec<String> = rule.rule_value.iter().flat_map(|v| v.split(',')).map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect();
    if globs.is_empty() {
        return Err(bad("root_rule.rule_value needs at least one tag glob"));
    }
    if let Some(g) = globs.iter().find(|g| g.len() > 255 || g.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(bad(format!("tag glob {g:?} is not valid")));
    }
    Ok(globs)
}

/// The sealed password and whether to keep the stored one: a new one is
/// sealed; an update without one keeps the stored one; `null` clears it.
fn password(state: &MetaState, repo: &str, given: Option<Option<String>>, old: Option<&MirrorConfig>) -> Result<(Option<Vec<u8>>, bool), ApiError> {
    Ok(match given {
        Some(Some(p)) if !p.is_empty() => (Some(m::seal(state, repo, &p).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?), false),
        Some(_) => (None, false),
        None => (None, old.is_some()),
    })
}

/// `http_proxy`, `https_proxy` and `no_proxy`.
type Proxies = (Option<String>, Option<String>, Option<String>);

/// A request that names the proxy block sets all three; one that does
/// not keeps them.
fn proxies(proxy: Option<MirrorProxy>, old: Option<&MirrorConfig>) -> Result<Proxies, ApiError> {
    Ok(match (proxy, old) {
        (Some(p), _) => {
            for (what, u) in [("http_proxy", &p.http_proxy), ("https_proxy", &p.https_proxy)] {
                if let Some(u) = non_empty(u.clone()) {
                    if reqwest::Url::parse(&u).is_err() {
                        return Err(bad(format!("{what} {u:?} is not a URL")));
                    }
                }
            }
            (non_empty(p.http_proxy), non_empty(p.https_proxy), non_empty(p.no_proxy))
        }
        (None, Some(o)) => (o.http_proxy.clone(), o.https_proxy.clone(), o.no_proxy.clone()),
        (None, None) => (None, None, None),
    })
}

fn timeout_s(given: Option<u64>, old: Option<&MirrorConfig>) -> Result<u64, ApiError> {
    Ok(match (given, old) {
        (Some(t), _) if !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&t) => {
            return Err(bad(format!("skopeo_timeout_interval must be {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S} seconds")))
        }
        (Some(t), _) => t,
        (None, Some(o)) => o.timeout_s,
        (None, None) => DEFAULT_TIMEOUT_S,
    })
}

fn architecture_filter(given: Option<Option<Vec<String>>>, old: Option<&MirrorConfig>) -> Result<Option<Vec<String>>, ApiError> {
    Ok(match (given, old) {
        (Some(Some(a)), _) if a.is_empty() => None,
        (Some(Some(a)), _) => {
            if let Some(bad_arch) = a.iter().find(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')) {
                return Err(bad(format!("architecture {bad_arch:?} is not valid")));
            }
            Some(a)
        }
        (Some(None), _) => None,
        (None, Some(o)) => o.architecture_filter.clone(),
        (None, None) => None,
    })
}

fn preferred_region(given: Option<Option<String>>, old: Option<&MirrorConfig>) -> Result<Option<String>, ApiError> {
    Ok(match (given, old) {
        (Some(Some(r)), _) => {
            if r.parse::<berth_common::Region>().is_err() {
                return Err(bad(format!("preferred_region {r:?} is not a region name")));
            }
            Some(r)
        }
        (Some(None), _) => None,
        (None, Some(o)) => o.preferred_region.clone(),
        (None, None) => None,
    })
}

/// `""` and `null` alike are no value.
fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl NodeIdentity {
    fn mirror_outcome(resp: MetaResponse, repo: &str) -> Result<(), ApiError> {
        match resp {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(not_found(format!("repository {repo} has no mirror configuration"))),
            MetaResponse::Refused(why) => Err(bad(why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
    }

    async fn mirror_write(&self, who: &Access, cmd: MirrorCommand) -> Result<MetaResponse, ApiError> {
        self.meta.write(actor_of(&who.principal), MetaCommand::Mirror(cmd)).await.map_err(meta_err)
    }

    pub(super) async fn change_state(&self, who: &Access, repo: &str, req: RepoStateChange) -> Result<(), ApiError> {
        require_scope(who, "repo:admin", "change a repository's state")?;
        self.repo_with(who, repo, Role::Admin)?;
        let state = RepoState::parse(&req.state).ok_or_else(|| bad(format!("state {:?} is not NORMAL, READ_ONLY or MIRROR", req.state)))?;
        let resp = self.mirror_write(who, MirrorCommand::SetRepoState { repo: repo.to_string(), state }).await?;
        Self::mirror_outcome(resp, repo)?;
        self.log(who, "change_repo_state", namespace_of(repo), Some(repo), vec![("state_changed", state.as_str().into())]).await;
        Ok(())
    }

    fn mirror_of(&self, repo: &str) -> Result<MirrorRecord, ApiError> {
        rules::mirror(&self.state(), repo).map_err(state_err)?.ok_or_else(|| not_found(format!("repository {repo} has no mirror configuration")))
    }

    pub(super) async fn mirror_view(&self, who: &Access, repo: &str) -> Result<MirrorView, ApiError> {
        require_scope(who, "repo:admin", "see a repository's mirror")?;
        self.repo_with(who, repo, Role::Admin)?;
        Ok(view(&self.mirror_of(repo)?))
    }

    /// The configuration `req` makes, over `old` (an update), checked
    /// whole before anything is written.
    fn mirror_config(&self, repo: &str, req: MirrorRequest, old: Option<&MirrorConfig>) -> Result<(MirrorConfig, bool), ApiError> {
        let state = self.state();
        let required = |what: &str| bad(format!("{what} is required"));
        let external_reference = match (non_empty(req.external_reference), old) {
            (Some(r), _) => r,
            (None, Some(o)) => o.external_reference.clone(),
            (None, None) => return Err(required("external_reference")),
        };
        m::check_reference(&external_reference).map_err(|e| bad(e.to_string()))?;
        let sync_start_ms = match (req.sync_start_date, old) {
            (Some(d), _) => m::parse_start_date(&d).map_err(|e| bad(e.to_string()))?,
            (None, Some(o)) => o.sync_start_ms,
            (None, None) => return Err(required("sync_start_date")),
        };
        let sync_interval_s = match (req.sync_interval, old) {
            (Some(0), _) => return Err(bad("sync_interval must be at least 1 second")),
            (Some(i), _) => i,
            (None, Some(o)) => o.sync_interval_s,
            (None, None) => return Err(required("sync_interval")),
        };
        let robot = match (non_empty(req.robot_username), old) {
            (Some(r), _) => r,
            (None, Some(o)) => o.robot.clone(),
            (None, None) => return Err(required("robot_username")),
        };
        check_robot(&state, repo, &robot)?;
        let tag_globs = tag_globs(req.root_rule, old)?;
        let username = match (req.external_registry_username, old) {
            (Some(u), _) => non_empty(u),
            (None, Some(o)) => o.username.clone(),
            (None, None) => None,
        };
        let (sealed_password, keep_password) = password(&state, repo, req.external_registry_password, old)?;
        let has_password = sealed_password.is_some() || (keep_password && old.is_some_and(|o| o.sealed_password.is_some()));
        if has_password && username.is_none() {
            return Err(bad("external_registry_password needs external_registry_username"));
        }
        let reg = req.external_registry_config.unwrap_or_default();
        let (http_proxy, https_proxy, no_proxy) = proxies(reg.proxy, old)?;
        let timeout_s = timeout_s(req.skopeo_timeout_interval, old)?;
        let architecture_filter = architecture_filter(req.architecture_filter, old)?;
        let preferred_region = preferred_region(req.preferred_region, old)?;
        let config = MirrorConfig {
            is_enabled: req.is_enabled.or(old.map(|o| o.is_enabled)).unwrap_or(true),
            external_reference,
            username,
            sealed_password,
            sync_start_ms,
            sync_interval_s,
            robot,
            tag_globs,
            verify_tls: reg.verify_tls.or(old.map(|o| o.verify_tls)).unwrap_or(true),
            unsigned_images: reg.unsigned_images.or(old.map(|o| o.unsigned_images)).unwrap_or(false),
            http_proxy,
            https_proxy,
            no_proxy,
            timeout_s,
            architecture_filter,
            preferred_region,
        };
        Ok((config, keep_password))
    }

    pub(super) async fn mirror_put(&self, who: &Access, repo: &str, req: MirrorRequest, create: bool) -> Result<MirrorView, ApiError> {
        require_scope(who, "repo:admin", "configure a repository's mirror")?;
        self.repo_with(who, repo, Role::Admin)?;
        let old = rules::mirror(&self.state(), repo).map_err(state_err)?;
        match (&old, create) {
            (Some(_), true) => return Err(ApiError::new(ErrorCode::Conflict, format!("repository {repo} already has a mirror configuration: PUT changes it"))),
            (None, false) => return Err(not_found(format!("repository {repo} has no mirror configuration: POST creates one"))),
            _ => {}
        }
        let (config, keep_password) = self.mirror_config(repo, req, old.as_ref().map(|o| &o.config))?;
        // The robot writes the mirrored content.
        let grant = IdentityCommand::SetPermission { repo: repo.to_string(), grantee: Grantee::User(config.robot.clone()), role: Some(Role::Write) };
        let robot = config.robot.clone();
        let already = self.repo_record(repo)?.and_then(|r| r.users.get(&robot).copied()).is_some_and(|r| r >= Role::Write);
        if !already {
            self.write(who, grant, || format!("no robot {robot}")).await?;
        }
        let resp = self.mirror_write(who, MirrorCommand::PutMirror { repo: repo.to_string(), config, create, keep_password, now_ms: now_ms() }).await?;
        if let MetaResponse::Exists(why) = resp {
            return Err(ApiError::new(ErrorCode::Conflict, why));
        }
        Self::mirror_outcome(resp, repo)?;
        let kind = if create { "repo_mirror_enabled" } else { "repo_mirror_config_changed" };
        self.log(who, kind, namespace_of(repo), Some(repo), vec![("robot", robot)]).await;
        let _ = self.meta.read_barrier().await;
        Ok(view(&self.mirror_of(repo)?))
    }

    pub(super) async fn mirror_sync_request(&self, who: &Access, repo: &str, now: bool) -> Result<(), ApiError> {
        require_scope(who, "repo:admin", "start or cancel a repository's mirror sync")?;
        self.repo_with(who, repo, Role::Admin)?;
        self.mirror_of(repo)?;
        let cmd = if now {
            MirrorCommand::SyncNow { repo: repo.to_string(), now_ms: now_ms() }
        } else {
            MirrorCommand::SyncCancel { repo: repo.to_string(), now_ms: now_ms() }
        };
        match self.mirror_write(who, cmd).await? {
            MetaResponse::Refused(why) => return Err(ApiError::new(ErrorCode::Conflict, why)),
            resp => Self::mirror_outcome(resp, repo)?,
        }
        let kind = if now { "repo_mirror_sync_now_requested" } else { "repo_mirror_sync_cancelled" };
        self.log(who, kind, namespace_of(repo), Some(repo), vec![]).await;
        Ok(())
    }
}
