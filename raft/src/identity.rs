//! Who may do what: users, organizations, teams, robot accounts,
//! application tokens, repository permissions, the token-signing keys and
//! the audit log, as replicated records and the rules that change them.
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

use berth_common::NodeId;
use serde::{Deserialize, Serialize};

use berth_common::Digest;

use crate::command::{BlobRecord, ManifestRecord, MetaResponse, RepositoryRecord};
use crate::state::{keys, Changes, StateError, StateRead};

/// A role on a repository; the order is the order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A team's role in its organization: members get what the team is
/// granted per repository; creators may also create repositories; admins
/// administer the organization and all its repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TeamRole {
    Member,
    Creator,
    Admin,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Member => "member",
            TeamRole::Creator => "creator",
            TeamRole::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<TeamRole> {
        match s {
            "member" => Some(TeamRole::Member),
            "creator" => Some(TeamRole::Creator),
            "admin" => Some(TeamRole::Admin),
            _ => None,
        }
    }
}

/// Quay's OAuth scopes, carried by application tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TokenScope {
    RepoRead,
    RepoWrite,
    RepoAdmin,
    RepoCreate,
    UserRead,
    UserAdmin,
    OrgAdmin,
    SuperUser,
}

impl TokenScope {
    pub const ALL: [TokenScope; 8] = [
        TokenScope::RepoRead,
        TokenScope::RepoWrite,
        TokenScope::RepoAdmin,
        TokenScope::RepoCreate,
        TokenScope::UserRead,
        TokenScope::UserAdmin,
        TokenScope::OrgAdmin,
        TokenScope::SuperUser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::RepoRead => "repo:read",
            TokenScope::RepoWrite => "repo:write",
            TokenScope::RepoAdmin => "repo:admin",
            TokenScope::RepoCreate => "repo:create",
            TokenScope::UserRead => "user:read",
            TokenScope::UserAdmin => "user:admin",
            TokenScope::OrgAdmin => "org:admin",
            TokenScope::SuperUser => "super:user",
        }
    }

    pub fn parse(s: &str) -> Option<TokenScope> {
        TokenScope::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRecord {
    pub name: String,
    pub email: Option<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub org: String,
    pub name: String,
    pub role: TeamRole,
    pub description: String,
    /// User names and robot names (`org+short`).
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobotRecord {
    /// The user or organization that owns it.
    pub namespace: String,
    pub short: String,
    pub description: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at_ms: u64,
}

impl RobotRecord {
    pub fn full_name(&self) -> String {
        format!("{}+{}", self.namespace, self.short)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppTokenRecord {
    pub id: String,
    pub owner: String,
    pub title: String,
    pub scopes: BTreeSet<TokenScope>,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// The id of the token key `berth cluster init` made (in the cluster record).
pub const INITIAL_KID: &str = "cluster";

/// A key that signs registry tokens (ES256). The newest unretired key
/// signs; retired keys still verify until the tokens they signed expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenKey {
    pub kid: String,
    /// PKCS#8 PEM of a P-256 private key.
    pub pkcs8_pem: String,
    pub created_at_ms: u64,
    pub retired_at_ms: Option<u64>,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// Random, to keep records of the same millisecond apart.
    pub id: u64,
    /// Quay's log kinds: `push_repo`, `pull_repo`, `login_success`, ….
    pub kind: String,
    /// Who: a user, robot (`ns+short`), `$app:<token id>`, `(anonymous)` or `(operator)`.
    pub performer: String,
    pub namespace: Option<String>,
    pub repo: Option<String>,
    pub node: NodeId,
    pub region: String,
    pub ip: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Who is granted a role on a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    /// A user or a robot (`ns+short`).
    User(String),
    /// A team of the repository's organization.
    Team(String),
}

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
    CreateUser(crate::command::UserRecord),
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

/// The namespace a repository belongs to: its first path component.
/// A one-component name (`alpine`) is in no namespace: only superusers
/// create and administer those.
pub fn namespace_of(repo: &str) -> Option<&str> {
    repo.split_once('/').map(|(ns, _)| ns)
}

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
    Ok(match cmd {
        IdentityCommand::CreateOrg { org, owner } => {
            if namespace_taken(state, &org.name)? {
                return Ok(refused(format!("namespace {} is taken", org.name)));
            }
            ch.put(keys::org(&org.name), org);
            let members = owner.iter().cloned().collect();
            let owners = TeamRecord { org: org.name.clone(), name: "owners".into(), role: TeamRole::Admin, description: "Organization owners".into(), members };
            ch.put(keys::team(&org.name, "owners"), &owners);
            MetaResponse::Done
        }
        IdentityCommand::DeleteOrg { name } => {
            if state.get_raw(&keys::org(name))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            if has_repositories(state, name)? {
                return Ok(refused(format!("organization {name} still has repositories: delete them first")));
            }
            for (k, _) in state.scan_raw(&keys::teams_of(name))? {
                ch.delete(k);
            }
            for robot in state.scan::<RobotRecord>(&keys::robots_of(name))? {
                forget_member(state, ch, &robot.full_name())?;
                bump_credential_generation(state, ch, &robot.full_name())?;
                ch.delete(keys::robot(name, &robot.short));
            }
            ch.delete(keys::org(name));
            MetaResponse::Done
        }
        IdentityCommand::CreateUser(user) => {
            if namespace_taken(state, &user.name)? {
                return Ok(refused(format!("namespace {} is taken", user.name)));
            }
            ch.put(keys::user(&user.name), user);
            MetaResponse::Done
        }
        IdentityCommand::DeleteUser { name } => {
            if state.get_raw(&keys::user(name))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            if has_repositories(state, name)? {
                return Ok(refused(format!("user {name} still has repositories: delete them first")));
            }
            let superusers =
                state.scan::<crate::command::UserRecord>(keys::USER_PREFIX)?.into_iter().filter(|u| u.superuser).map(|u| u.name).collect::<Vec<_>>();
            if superusers == [name.clone()] {
                return Ok(refused(format!("{name} is the last superuser")));
            }
            forget_member(state, ch, name)?;
            bump_credential_generation(state, ch, name)?;
            for robot in state.scan::<RobotRecord>(&keys::robots_of(name))? {
                forget_member(state, ch, &robot.full_name())?;
                bump_credential_generation(state, ch, &robot.full_name())?;
                ch.delete(keys::robot(name, &robot.short));
            }
            for token in state.scan::<AppTokenRecord>(keys::APP_TOKEN_PREFIX)? {
                if token.owner == *name {
                    ch.delete(keys::app_token(&token.id));
                }
            }
            ch.delete(keys::user(name));
            MetaResponse::Done
        }
        IdentityCommand::PutTeam { org, name, role, description } => {
            if state.get_raw(&keys::org(org))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            let key = keys::team(org, name);
            let members = state.get::<TeamRecord>(&key)?.map(|t| t.members).unwrap_or_default();
            if name == "owners" && *role != TeamRole::Admin {
                return Ok(refused("the owners team keeps the admin role"));
            }
            ch.put(key, &TeamRecord { org: org.clone(), name: name.clone(), role: *role, description: description.clone(), members });
            MetaResponse::Done
        }
        IdentityCommand::DeleteTeam { org, name } => {
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
            MetaResponse::Done
        }
        IdentityCommand::SetTeamMember { org, team, member, present } => {
            let Some(mut rec) = state.get::<TeamRecord>(&keys::team(org, team))? else { return Ok(MetaResponse::NotFound) };
            if *present {
                if !member_exists(state, member)? {
                    return Ok(refused(format!("{member} is not a user or robot")));
                }
                rec.members.insert(member.clone());
            } else {
                if !rec.members.remove(member) {
                    return Ok(MetaResponse::NotFound);
                }
                if team == "owners" && rec.members.is_empty() {
                    return Ok(refused("the owners team must keep one member"));
                }
            }
            ch.put(keys::team(org, team), &rec);
            MetaResponse::Done
        }
        IdentityCommand::PutRobot(robot) => {
            if !namespace_exists(state, &robot.namespace)? {
                return Ok(MetaResponse::NotFound);
            }
            let old = state.get::<RobotRecord>(&keys::robot(&robot.namespace, &robot.short))?;
            if old.is_some_and(|o| o.secret_sha256 != robot.secret_sha256) {
                bump_credential_generation(state, ch, &robot.full_name())?;
            }
            ch.put(keys::robot(&robot.namespace, &robot.short), robot);
            MetaResponse::Done
        }
        IdentityCommand::DeleteRobot { namespace, short } => {
            let Some(robot) = state.get::<RobotRecord>(&keys::robot(namespace, short))? else { return Ok(MetaResponse::NotFound) };
            forget_member(state, ch, &robot.full_name())?;
            bump_credential_generation(state, ch, &robot.full_name())?;
            ch.delete(keys::robot(namespace, short));
            MetaResponse::Done
        }
        IdentityCommand::CreateAppToken(token) => {
            if state.get_raw(&keys::user(&token.owner))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            ch.put(keys::app_token(&token.id), token);
            MetaResponse::Done
        }
        IdentityCommand::DeleteAppToken { id } => {
            if state.get_raw(&keys::app_token(id))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            ch.delete(keys::app_token(id));
            MetaResponse::Done
        }
        IdentityCommand::CreateRepository(repo) => create_repository(state, ch, repo)?,
        IdentityCommand::UpdateRepository { name, public, description } => {
            let Some(mut repo) = state.get::<RepositoryRecord>(&keys::repo(name))? else { return Ok(MetaResponse::NotFound) };
            if let Some(p) = public {
                repo.public = *p;
            }
            if let Some(d) = description {
                repo.description = d.clone();
            }
            ch.put(keys::repo(name), &repo);
            MetaResponse::Done
        }
        IdentityCommand::DeleteRepository { name } => {
            if state.get_raw(&keys::repo(name))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            delete_repository(state, ch, name)?;
            MetaResponse::Done
        }
        IdentityCommand::SetPermission { repo, grantee, role } => {
            let Some(mut rec) = state.get::<RepositoryRecord>(&keys::repo(repo))? else { return Ok(MetaResponse::NotFound) };
            let (map, exists) = match grantee {
                Grantee::User(u) => (&mut rec.users, member_exists(state, u)?),
                Grantee::Team(t) => match namespace_of(repo) {
                    Some(ns) => (&mut rec.teams, state.get_raw(&keys::team(ns, t))?.is_some()),
                    None => (&mut rec.teams, false),
                },
            };
            let name = match grantee {
                Grantee::User(n) | Grantee::Team(n) => n,
            };
            match role {
                Some(r) if exists => {
                    map.insert(name.clone(), *r);
                }
                Some(_) => return Ok(MetaResponse::NotFound),
                None => {
                    if map.remove(name).is_none() {
                        return Ok(MetaResponse::NotFound);
                    }
                }
            }
            ch.put(keys::repo(repo), &rec);
            MetaResponse::Done
        }
        IdentityCommand::AppendAudit(records) => {
            for r in records {
                ch.put(keys::audit(r.at_ms, r.id), r);
            }
            MetaResponse::Done
        }
        IdentityCommand::PruneAudit { before_ms } => {
            for (k, _) in state.range_raw(keys::AUDIT_PREFIX, &keys::audit(*before_ms, 0), usize::MAX)? {
                ch.delete(k);
            }
            MetaResponse::Done
        }
        IdentityCommand::RotateTokenKey { key, now_ms } => {
            let mut ring: Vec<TokenKey> = match state.get(keys::TOKEN_KEYS)? {
                Some(ring) => ring,
                // The first rotation: the key `init` made (in the cluster record) retires.
                None => state
                    .get::<crate::command::ClusterRecord>(keys::CLUSTER)?
                    .map(|c| TokenKey { kid: INITIAL_KID.into(), pkcs8_pem: c.token_signing_key_pem, created_at_ms: c.created_at_ms, retired_at_ms: None })
                    .into_iter()
                    .collect(),
            };
            for k in ring.iter_mut() {
                k.retired_at_ms.get_or_insert(*now_ms);
            }
            // Keys retired more than a day ago verify nothing any more.
            ring.retain(|k| k.retired_at_ms.is_some_and(|r| r + 86_400_000 > *now_ms));
            ring.push(key.clone());
            ch.put(keys::TOKEN_KEYS.to_vec(), &ring);
            MetaResponse::Done
        }
    })
}

fn delete_repository(state: &impl StateRead, ch: &mut Changes, name: &str) -> Result<(), StateError> {
    let mut blobs: BTreeMap<Digest, BlobRecord> = BTreeMap::new();
    for (k, v) in state.scan_raw(&keys::manifests_of(name))? {
        let m: ManifestRecord = crate::state::decode(&k, &v)?;
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
    for (k, _) in state.scan_raw(&keys::tags_of(name))? {
        ch.delete(k);
    }
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
    for (d, mut rec) in blobs {
        rec.repos.remove(name);
        ch.put(keys::blob(&d), &rec);
    }
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
