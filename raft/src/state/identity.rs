//! The rules of identity: users, organizations, teams, robot accounts,
//! application tokens, repository permissions, the token-signing keys and
//! the audit log (their records are in `crate::records`).
//!
//! A namespace is a user or an organization, never both. Deleting a user,
//! robot or team also deletes every permission and membership it had, in
//! the same step: a name created again later starts with nothing.
//! Secrets are stored as SHA-256 (robot and application tokens are long and
//! random) or argon2 (passwords, hashed by the proposer).
//!
//! Each user and robot has a credential generation (`keys::credential_generation`,
//! 0 until first bumped). A new password, a regenerated robot secret or a
//! deletion bumps it in the same step, and registry tokens carry the
//! generation they were issued under, so every node refuses a token of an
//! earlier one at once, rather than when it expires. It outlives a deleted
//! account, so a name created again does not take over its tokens.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::Digest;

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

fn refused(why: impl Into<String>) -> MetaResponse {
    MetaResponse::Refused(why.into())
}

/// Whether `name` is a user's or an organization's namespace.
pub fn namespace_exists(state: &impl StateRead, name: &str) -> Result<bool, StateError> {
    Ok(state.get_raw(&keys::user(name))?.is_some() || state.get_raw(&keys::org(name))?.is_some())
}

/// Whether a new user or organization may not take `name`: one already
/// has it, or repositories live under it (left by a deleted account, or
/// written before namespaces were explicit). Whoever took such a name would
/// administer repositories they never had rights to.
fn namespace_taken(state: &impl StateRead, name: &str) -> Result<bool, StateError> {
    Ok(namespace_exists(state, name)? || has_repositories(state, name)?)
}

/// The one way a repository comes to exist. Its namespace (the part before
/// the first `/`) must be a user or an organization: a repository never
/// makes a namespace by itself, so nobody can later claim a namespace that
/// only repositories hold. A name without `/` has no namespace.
pub(crate) fn create_repository(state: &impl StateRead, ch: &mut Changes, repo: &RepositoryRecord) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::repo(&repo.name))?.is_some() {
        return Ok(refused(format!("repository {} exists", repo.name)));
    }
    if let Some(ns) = namespace_of(&repo.name) {
        if !namespace_exists(state, ns)? {
            return Ok(refused(format!("namespace {ns} does not exist: create the organization first")));
        }
    }
    ch.put(keys::repo(&repo.name), repo);
    Ok(MetaResponse::Done)
}

fn has_repositories(state: &impl StateRead, ns: &str) -> Result<bool, StateError> {
    Ok(!state.scan_raw(&keys::repos_in(ns))?.is_empty())
}

/// Makes every registry token issued to `account` so far invalid.
/// Sets a user's record; a new password makes the user's earlier
/// registry tokens invalid (see the credential generation above).
pub(super) fn put_user(state: &impl StateRead, ch: &mut Changes, rec: &UserRecord) -> Result<MetaResponse, StateError> {
    if state.get::<UserRecord>(&keys::user(&rec.name))?.is_some_and(|old| old.password_hash != rec.password_hash) {
        bump_credential_generation(state, ch, &rec.name)?;
    }
    ch.put(keys::user(&rec.name), rec);
    Ok(MetaResponse::Done)
}

pub(crate) fn bump_credential_generation(state: &impl StateRead, ch: &mut Changes, account: &str) -> Result<(), StateError> {
    let key = keys::credential_generation(account);
    let current: u64 = state.get(&key)?.unwrap_or(0);
    ch.put(key, &(current + 1));
    Ok(())
}

/// Removes every trace of a user or robot name: grants and memberships.
fn forget_member(state: &impl StateRead, ch: &mut Changes, name: &str) -> Result<(), StateError> {
    for mut repo in state.scan::<RepositoryRecord>(keys::REPO_PREFIX)? {
        if repo.users.remove(name).is_some() {
            ch.put(keys::repo(&repo.name), &repo);
        }
    }
    for mut team in state.scan::<TeamRecord>(keys::TEAM_PREFIX)? {
        if team.members.remove(name) {
            ch.put(keys::team(&team.org, &team.name), &team);
        }
    }
    Ok(())
}

pub(crate) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &IdentityCommand) -> Result<MetaResponse, StateError> {
    use IdentityCommand as I;
    match cmd {
        I::CreateOrg { org, owner } => create_org(state, ch, org, owner.as_deref()),
        I::DeleteOrg { name } => delete_org(state, ch, name),
        I::CreateUser(user) => create_user(state, ch, user),
        I::DeleteUser { name } => delete_user(state, ch, name),
        I::PutTeam { org, name, role, description } => put_team(state, ch, org, name, *role, description),
        I::DeleteTeam { org, name } => delete_team(state, ch, org, name),
        I::SetTeamMember { org, team, member, present } => set_team_member(state, ch, org, team, member, *present),
        I::PutRobot(robot) => put_robot(state, ch, robot),
        I::DeleteRobot { namespace, short } => delete_robot(state, ch, namespace, short),
        I::CreateAppToken(token) => create_app_token(state, ch, token),
        I::DeleteAppToken { id } => delete_app_token(state, ch, id),
        I::CreateRepository(repo) => create_repository(state, ch, repo),
        I::UpdateRepository { name, public, description } => update_repository(state, ch, name, *public, description.as_deref()),
        I::DeleteRepository { name } => {
            if state.get_raw(&keys::repo(name))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            if let Some(tag) = super::tags::an_immutable_tag(state, name)? {
                return Ok(MetaResponse::TagImmutable { tag });
            }
            delete_repository(state, ch, name)?;
            super::mirror::forget_repository(ch, name);
            super::proxycache::forget_repository(state, ch, name)?;
            Ok(MetaResponse::Done)
        }
        I::SetPermission { repo, grantee, role } => set_permission(state, ch, repo, grantee, *role),
        I::AppendAudit(records) => {
            for r in records {
                ch.put(keys::audit(r.at_ms, r.id), r);
            }
            Ok(MetaResponse::Done)
        }
        I::PruneAudit { before_ms } => {
            for (k, _) in state.range_raw(keys::AUDIT_PREFIX, &keys::audit(*before_ms, 0), usize::MAX)? {
                ch.delete(k);
            }
            Ok(MetaResponse::Done)
        }
        I::RotateTokenKey { key, now_ms } => rotate_token_key(state, ch, key, *now_ms),
    }
}

/// Creates an organization and its `owners` team with `owner` in it.
fn create_org(state: &impl StateRead, ch: &mut Changes, org: &OrgRecord, owner: Option<&str>) -> Result<MetaResponse, StateError> {
    if namespace_taken(state, &org.name)? {
        return Ok(refused(format!("namespace {} is taken", org.name)));
    }
    ch.put(keys::org(&org.name), org);
    let members = owner.into_iter().map(str::to_string).collect();
    let owners = TeamRecord { org: org.name.clone(), name: "owners".into(), role: TeamRole::Admin, description: "Organization owners".into(), members };
    ch.put(keys::team(&org.name, "owners"), &owners);
    Ok(MetaResponse::Done)
}

fn delete_org(state: &impl StateRead, ch: &mut Changes, name: &str) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::org(name))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    if has_repositories(state, name)? {
        return Ok(refused(format!("organization {name} still has repositories: delete them first")));
    }
    for (k, _) in state.scan_raw(&keys::teams_of(name))? {
        ch.delete(k);
    }
    delete_robots_of(state, ch, name)?;
    super::notifications::forget_scope(state, ch, &NotificationScope::Namespace(name.to_string()))?;
    ch.delete(keys::org(name));
    ch.delete(keys::namespace_life(name));
    super::policy_rules::forget_scope(state, ch, name)?;
    super::quotas::forget(state, ch, name)?;
    ch.delete(super::proxycache::config_key(name));
    super::oauth::forget_org(state, ch, name)?;
    Ok(MetaResponse::Done)
}

/// Deletes the robots of namespace `ns`, with their memberships, and
/// makes their registry tokens invalid.
fn delete_robots_of(state: &impl StateRead, ch: &mut Changes, ns: &str) -> Result<(), StateError> {
    for robot in state.scan::<RobotRecord>(&keys::robots_of(ns))? {
        forget_member(state, ch, &robot.full_name())?;
        bump_credential_generation(state, ch, &robot.full_name())?;
        ch.delete(keys::robot(ns, &robot.short));
    }
    Ok(())
}

fn create_user(state: &impl StateRead, ch: &mut Changes, user: &UserRecord) -> Result<MetaResponse, StateError> {
    if namespace_taken(state, &user.name)? {
        return Ok(refused(format!("namespace {} is taken", user.name)));
    }
    ch.put(keys::user(&user.name), user);
    Ok(MetaResponse::Done)
}

fn delete_user(state: &impl StateRead, ch: &mut Changes, name: &str) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::user(name))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    if has_repositories(state, name)? {
        return Ok(refused(format!("user {name} still has repositories: delete them first")));
    }
    let superusers = state.scan::<UserRecord>(keys::USER_PREFIX)?.into_iter().filter(|u| u.superuser).map(|u| u.name).collect::<Vec<_>>();
    if superusers == [name] {
        return Ok(refused(format!("{name} is the last superuser")));
    }
    forget_member(state, ch, name)?;
    bump_credential_generation(state, ch, name)?;
    delete_robots_of(state, ch, name)?;
    super::notifications::forget_scope(state, ch, &NotificationScope::Namespace(name.to_string()))?;
    for token in state.scan::<AppTokenRecord>(keys::APP_TOKEN_PREFIX)? {
        if token.owner == name {
            ch.delete(keys::app_token(&token.id));
        }
    }
    ch.delete(keys::user(name));
    ch.delete(keys::namespace_life(name));
    super::policy_rules::forget_scope(state, ch, name)?;
    super::quotas::forget(state, ch, name)?;
    Ok(MetaResponse::Done)
}

/// Creates a team or changes its role and description (members kept).
fn put_team(state: &impl StateRead, ch: &mut Changes, org: &str, name: &str, role: TeamRole, description: &str) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::org(org))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    if name == "owners" && role != TeamRole::Admin {
        return Ok(refused("the owners team keeps the admin role"));
    }
    let key = keys::team(org, name);
    let members = state.get::<TeamRecord>(&key)?.map(|t| t.members).unwrap_or_default();
    ch.put(key, &TeamRecord { org: org.to_string(), name: name.to_string(), role, description: description.to_string(), members });
    Ok(MetaResponse::Done)
}

fn delete_team(state: &impl StateRead, ch: &mut Changes, org: &str, name: &str) -> Result<MetaResponse, StateError> {
    if name == "owners" {
        return Ok(refused("the owners team cannot be deleted"));
    }
    if state.get_raw(&keys::team(org, name))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    for mut repo in state.scan::<RepositoryRecord>(&keys::repos_in(org))? {
        if repo.teams.remove(name).is_some() {
            ch.put(keys::repo(&repo.name), &repo);
        }
    }
    ch.delete(keys::team(org, name));
    Ok(MetaResponse::Done)
}

fn set_team_member(state: &impl StateRead, ch: &mut Changes, org: &str, team: &str, member: &str, present: bool) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<TeamRecord>(&keys::team(org, team))? else { return Ok(MetaResponse::NotFound) };
    if present {
        if !member_exists(state, member)? {
            return Ok(refused(format!("{member} is not a user or robot")));
        }
        rec.members.insert(member.to_string());
    } else {
        if !rec.members.remove(member) {
            return Ok(MetaResponse::NotFound);
        }
        if team == "owners" && rec.members.is_empty() {
            return Ok(refused("the owners team must keep one member"));
        }
    }
    ch.put(keys::team(org, team), &rec);
    Ok(MetaResponse::Done)
}

/// Creates a robot, or gives an existing one a new secret (which makes its
/// registry tokens invalid).
fn put_robot(state: &impl StateRead, ch: &mut Changes, robot: &RobotRecord) -> Result<MetaResponse, StateError> {
    if !namespace_exists(state, &robot.namespace)? {
        return Ok(MetaResponse::NotFound);
    }
    let old = state.get::<RobotRecord>(&keys::robot(&robot.namespace, &robot.short))?;
    if old.is_some_and(|o| o.secret_sha256 != robot.secret_sha256) {
        bump_credential_generation(state, ch, &robot.full_name())?;
    }
    ch.put(keys::robot(&robot.namespace, &robot.short), robot);
    Ok(MetaResponse::Done)
}

fn delete_robot(state: &impl StateRead, ch: &mut Changes, namespace: &str, short: &str) -> Result<MetaResponse, StateError> {
    let Some(robot) = state.get::<RobotRecord>(&keys::robot(namespace, short))? else { return Ok(MetaResponse::NotFound) };
    forget_member(state, ch, &robot.full_name())?;
    bump_credential_generation(state, ch, &robot.full_name())?;
    ch.delete(keys::robot(namespace, short));
    Ok(MetaResponse::Done)
}

fn create_app_token(state: &impl StateRead, ch: &mut Changes, token: &AppTokenRecord) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::user(&token.owner))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    ch.put(keys::app_token(&token.id), token);
    Ok(MetaResponse::Done)
}

fn delete_app_token(state: &impl StateRead, ch: &mut Changes, id: &str) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::app_token(id))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    ch.delete(keys::app_token(id));
    Ok(MetaResponse::Done)
}

fn update_repository(
    state: &impl StateRead,
    ch: &mut Changes,
    name: &str,
    public: Option<bool>,
    description: Option<&str>,
) -> Result<MetaResponse, StateError> {
    let Some(mut repo) = state.get::<RepositoryRecord>(&keys::repo(name))? else { return Ok(MetaResponse::NotFound) };
    if let Some(p) = public {
        repo.public = p;
    }
    if let Some(d) = description {
        repo.description = d.to_string();
    }
    ch.put(keys::repo(name), &repo);
    Ok(MetaResponse::Done)
}

/// Grants `role` on `repo` to a user, robot or team, or with `None`
/// removes the grant.
fn set_permission(state: &impl StateRead, ch: &mut Changes, repo: &str, grantee: &Grantee, role: Option<Role>) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<RepositoryRecord>(&keys::repo(repo))? else { return Ok(MetaResponse::NotFound) };
    let (map, exists, name) = match grantee {
        Grantee::User(u) => (&mut rec.users, member_exists(state, u)?, u),
        Grantee::Team(t) => {
            let exists = match namespace_of(repo) {
                Some(ns) => state.get_raw(&keys::team(ns, t))?.is_some(),
                None => false,
            };
            (&mut rec.teams, exists, t)
        }
    };
    match role {
        Some(r) if exists => {
            map.insert(name.clone(), r);
        }
        Some(_) => return Ok(MetaResponse::NotFound),
        None if map.remove(name).is_none() => return Ok(MetaResponse::NotFound),
        None => {}
    }
    ch.put(keys::repo(repo), &rec);
    Ok(MetaResponse::Done)
}

/// Makes `key` the signing key; earlier keys are retired at `now_ms`, and
/// forgotten a day later, when no token they signed is valid any more.
fn rotate_token_key(state: &impl StateRead, ch: &mut Changes, key: &TokenKey, now_ms: u64) -> Result<MetaResponse, StateError> {
    let mut ring: Vec<TokenKey> = match state.get(keys::TOKEN_KEYS)? {
        Some(ring) => ring,
        // The first rotation: the key `init` made (in the cluster record) retires.
        None => state
            .get::<ClusterRecord>(keys::CLUSTER)?
            .map(|c| TokenKey { kid: INITIAL_KID.into(), pkcs8_pem: c.token_signing_key_pem, created_at_ms: c.created_at_ms, retired_at_ms: None })
            .into_iter()
            .collect(),
    };
    for k in ring.iter_mut() {
        k.retired_at_ms.get_or_insert(now_ms);
    }
    ring.retain(|k| k.retired_at_ms.is_some_and(|r| r + 86_400_000 > now_ms));
    ring.push(key.clone());
    ch.put(keys::TOKEN_KEYS.to_vec(), &ring);
    Ok(MetaResponse::Done)
}

fn delete_repository(state: &impl StateRead, ch: &mut Changes, name: &str) -> Result<(), StateError> {
    let mut blobs: BTreeMap<Digest, BlobRecord> = BTreeMap::new();
    let mut usage = super::quotas::Usage::of(state, name)?;
    for (k, v) in state.scan_raw(&keys::manifests_of(name))? {
        let m: ManifestRecord = crate::state::decode(&k, &v)?;
        usage.remove(state, &m.blobs)?;
        for b in m.blobs.iter().collect::<BTreeSet<_>>() {
            if !blobs.contains_key(b) {
                let Some(rec) = state.get::<BlobRecord>(&keys::blob(b))? else { continue };
                blobs.insert(b.clone(), rec);
            }
            if let Some(rec) = blobs.get_mut(b) {
                rec.refs = rec.refs.saturating_sub(1);
            }
        }
        ch.delete(k);
    }
    for (k, _) in state.scan_raw(&keys::links_of(name))? {
        ch.delete(k);
    }
    super::tags::forget_repository(state, ch, name)?;
    super::notifications::forget_scope(state, ch, &NotificationScope::Repository(name.to_string()))?;
    for (k, _) in state.scan_raw(&keys::referrers_in(name))? {
        ch.delete(k);
    }
    // Blobs linked but not referenced by a manifest of the repository.
    let prefix = keys::links_of(name);
    for (k, _) in state.scan_raw(&prefix)? {
        let Ok(d) = String::from_utf8_lossy(&k[prefix.len()..]).parse::<Digest>() else { continue };
        if !blobs.contains_key(&d) {
            if let Some(rec) = state.get::<BlobRecord>(&keys::blob(&d))? {
                blobs.insert(d, rec);
            }
        }
    }
    let indexed = super::registry::repos_indexed(state)?;
    for (d, mut rec) in blobs {
        super::registry::unlist_repo(ch, indexed, &d, &mut rec, name);
        ch.put(keys::blob(&d), &rec);
    }
    usage.write(ch);
    ch.delete(keys::repo(name));
    Ok(())
}

/// A user, or a robot (`ns+short`) that exists.
fn member_exists(state: &impl StateRead, name: &str) -> Result<bool, StateError> {
    match name.split_once('+') {
        Some((ns, short)) => Ok(state.get_raw(&keys::robot(ns, short))?.is_some()),
        None => Ok(state.get_raw(&keys::user(name))?.is_some()),
    }
}
