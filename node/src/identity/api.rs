//! The node's side of the identity API: each call checks what the caller
//! may do ([`crate::identity::policy`]), makes one metadata write, and records it in
//! the usage log before answering.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use berth_common::names::valid_component;
use berth_gateway::identity::*;
use berth_gateway::{Access, ApiError, Caller, ErrorCode, Principal};
use berth_raft::command::{
    namespace_of, AppTokenRecord, AuditRecord, Grantee, IdentityCommand, OrgRecord, RobotRecord, Role, TeamRecord, TeamRole, TokenKey, TokenScope,
};
use berth_raft::command::{MetaCommand, MetaResponse, RepositoryRecord, UserRecord};
use berth_raft::state::keys;
use berth_raft::{MetaNodeHandle, MetaState, StateRead};
use rand::Rng;

use crate::errors::{meta_err, state_err};
use crate::identity::audit::AuditLog;
use crate::identity::auth::{actor_of, is_federated, sha256_hex, Authenticator, APP_TOKEN_PREFIX};
use crate::identity::policy;
use crate::util::{now_ms, rfc3339};

mod logs;
mod mirror;
mod notifications;
mod oauth;
mod permissions;
mod policies;
mod proxycache;
mod quotas;
mod scan;
mod tags;
mod tokens;

pub use logs::parse_time;

pub struct NodeIdentity {
    meta: MetaNodeHandle,
    auth: Arc<Authenticator>,
    audit: AuditLog,
    /// Where notifications may go ([`NodeIdentity::with_notifications`]).
    notify: crate::notify::Policy,
    /// The time machine windows (s) a namespace may choose (`[tags]
    /// expiration_options`).
    tag_expiration_options: Vec<u64>,
    /// How long OAuth codes and tokens live (`[oauth]`).
    oauth: crate::config::OAuthConfig,
    /// The scanner, for the security API ([`NodeIdentity::with_scanner`]).
    scanner: Option<Arc<crate::scan::Scanner>>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::NotFound, msg)
}

fn denied(who: &Principal, what: &str) -> ApiError {
    match who {
        Principal::Anonymous => ApiError::new(ErrorCode::Unauthorized, "authentication required"),
        p => ApiError::new(ErrorCode::Denied, format!("{} may not {what}", p.performer())),
    }
}

/// An application token must carry `scope` for `what`; other callers are
/// judged by the rules of the call alone.
fn require_scope(who: &Access, scope: &str, what: &str) -> Result<(), ApiError> {
    match &who.principal {
        p @ Principal::App { .. } if !p.has_scope(scope) => Err(denied(p, &format!("{what} (needs a token with {scope})"))),
        _ => Ok(()),
    }
}

/// A random secret of `n` characters from `[A-Z0-9]` (Quay's robot token alphabet).
fn secret(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.len() < 2 || name.len() > 255 || !valid_component(name) {
        return Err(bad(format!("{kind} name {name:?} is invalid: 2-255 lowercase letters and digits, separated by '.', '_' or '-'")));
    }
    Ok(())
}

impl NodeIdentity {
    pub fn new(meta: MetaNodeHandle, auth: Arc<Authenticator>, audit: AuditLog) -> NodeIdentity {
        let tag_expiration_options = crate::config::TagsConfig::default().expiration_options_s().expect("the default options parse");
        NodeIdentity { meta, auth, audit, notify: crate::notify::Policy::default(), tag_expiration_options, oauth: Default::default(), scanner: None }
    }

    /// Checks new notifications' targets with `policy` (by default,
    /// private networks are refused and e-mail has no server).
    pub fn with_notifications(mut self, policy: crate::notify::Policy) -> NodeIdentity {
        self.notify = policy;
        self
    }

    /// Answers the security API and feed imports with `scanner`.
    pub fn with_scanner(mut self, scanner: Arc<crate::scan::Scanner>) -> NodeIdentity {
        self.scanner = Some(scanner);
        self
    }

    /// The time machine windows a namespace may choose, in seconds.
    pub fn with_tag_expiration_options(mut self, options: Vec<u64>) -> NodeIdentity {
        self.tag_expiration_options = options;
        self
    }

    /// How long OAuth codes and tokens live.
    pub fn with_oauth(mut self, oauth: crate::config::OAuthConfig) -> NodeIdentity {
        self.oauth = oauth;
        self
    }

    fn state(&self) -> MetaState {
        self.meta.state()
    }

    /// One metadata write for `who`; `NotFound` and `Refused` become 404
    /// and 409.
    async fn write(&self, who: &Access, cmd: IdentityCommand, missing: impl FnOnce() -> String) -> Result<(), ApiError> {
        match self.meta.write(actor_of(&who.principal), MetaCommand::Identity(cmd)).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(not_found(missing())),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::Conflict, why)),
            MetaResponse::TagImmutable { tag } => Err(crate::errors::tag_immutable(&tag)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
    }

    /// Records an identity change and waits until the record is committed.
    async fn log(&self, who: &Access, kind: &str, namespace: Option<&str>, repo: Option<&str>, metadata: Vec<(&str, String)>) {
        self.audit.record(kind, &who.principal, who.ip, namespace, repo, metadata);
        self.audit.flush().await;
    }

    fn require_superuser(&self, who: &Access, what: &str) -> Result<(), ApiError> {
        if who.principal.is_superuser() {
            Ok(())
        } else {
            Err(denied(&who.principal, what))
        }
    }

    /// The caller's own user name (users and their tokens).
    fn own_name(&self, who: &Access, scope: &str) -> Result<String, ApiError> {
        match &who.principal {
            Principal::User { name, .. } => Ok(name.clone()),
            Principal::App { owner, .. } if who.principal.has_scope(scope) => Ok(owner.clone()),
            p => Err(denied(p, &format!("use this endpoint (needs a user login or a token with {scope})"))),
        }
    }

    /// The time machine window of namespace `ns`, s.
    fn time_machine_s(&self, ns: &str) -> Result<u64, ApiError> {
        berth_raft::state::tags::namespace_time_machine_s(&self.state(), ns).map_err(state_err)
    }

    fn check_time_machine(&self, seconds: u64) -> Result<(), ApiError> {
        if self.tag_expiration_options.contains(&seconds) {
            return Ok(());
        }
        let allowed: Vec<String> = self.tag_expiration_options.iter().map(u64::to_string).collect();
        Err(bad(format!("tag_expiration_s {seconds} is not one of the allowed windows ({} s)", allowed.join(", "))))
    }

    async fn set_time_machine(&self, who: &Access, ns: &str, seconds: u64) -> Result<(), ApiError> {
        let cmd = MetaCommand::Tag(berth_raft::command::TagCommand::SetTimeMachine { namespace: ns.to_string(), tag_expiration_s: seconds });
        match self.meta.write(actor_of(&who.principal), cmd).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("no namespace {ns}"))),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, "change_tag_expiration", Some(ns), None, vec![("tag_expiration_s", seconds.to_string())]).await;
        Ok(())
    }

    fn user_record(&self, name: &str) -> Result<Option<UserRecord>, ApiError> {
        self.state().get(&keys::user(name)).map_err(state_err)
    }

    fn org_record(&self, org: &str) -> Result<OrgRecord, ApiError> {
        self.state().get(&keys::org(org)).map_err(state_err)?.ok_or_else(|| not_found(format!("no organization {org}")))
    }

    /// When the user or organization now named `ns` was created; 0 when
    /// there is none (a superuser reading a deleted namespace's history).
    ///
    /// Usage-log records name their namespace (and performer) by name, and
    /// a deleted name may be taken again by anyone: a query about a
    /// namespace or a user's own actions shows only records made since
    /// the current one's creation, so the name's new holder never reads
    /// the old one's history. The records stay, for superusers
    /// (`/superuser/logs`) and for retention to prune. Chosen over purging
    /// on deletion, which would make deleting an account scan the whole
    /// log inside the state machine and still miss records queued on other
    /// nodes at the time. Times are the nodes' clocks: a name taken again
    /// within the clock skew between nodes could show a few stray records.
    fn created_at(&self, ns: &str) -> Result<u64, ApiError> {
        if let Some(u) = self.user_record(ns)? {
            return Ok(u.created_at_ms);
        }
        let org: Option<OrgRecord> = self.state().get(&keys::org(ns)).map_err(state_err)?;
        Ok(org.map_or(0, |o| o.created_at_ms))
    }

    fn require_org_admin(&self, who: &Access, org: &str) -> Result<(), ApiError> {
        self.org_record(org)?;
        if policy::is_org_admin(&self.state(), &who.principal, org).map_err(state_err)? {
            Ok(())
        } else {
            Err(denied(&who.principal, &format!("administer organization {org}")))
        }
    }

    /// The namespace robots are managed in: an organization the caller
    /// administers, or the caller's own user namespace.
    fn robot_namespace(&self, who: &Access, namespace: Option<&str>) -> Result<String, ApiError> {
        match namespace {
            Some(org) => {
                self.require_org_admin(who, org)?;
                Ok(org.to_string())
            }
            None => self.own_name(who, "user:admin"),
        }
    }

    fn robot_view(r: &RobotRecord, token: Option<String>) -> RobotView {
        RobotView { name: r.full_name(), description: r.description.clone(), created: rfc3339(r.created_at_ms), token }
    }

    fn team_view(t: &TeamRecord) -> TeamView {
        TeamView { name: t.name.clone(), description: t.description.clone(), role: t.role.as_str().into(), member_count: t.members.len() }
    }

    fn repo_record(&self, repo: &str) -> Result<Option<RepositoryRecord>, ApiError> {
        self.state().get(&keys::repo(repo)).map_err(state_err)
    }

    /// The repository, if the caller has at least `need` on it. Callers
    /// who cannot even read it learn nothing about whether it exists.
    fn repo_with(&self, who: &Access, repo: &str, need: Role) -> Result<(RepositoryRecord, Role), ApiError> {
        if let Err(e) = repo.parse::<berth_common::RepoName>() {
            return Err(bad(format!("{e} (lowercase letters and digits, separated by '.', '_' or '-')")));
        }
        let rec = self.repo_record(repo)?;
        let role = policy::repo_role(&self.state(), &who.principal, repo, rec.as_ref()).map_err(state_err)?;
        match (rec, role) {
            (Some(rec), Some(r)) if r >= need => Ok((rec, r)),
            (None, _) if who.principal.is_superuser() || role.is_some() => Err(not_found(format!("no repository {repo}"))),
            (_, Some(_)) => Err(denied(&who.principal, &format!("{} repository {repo}", need.as_str()))),
            (_, None) => Err(denied(&who.principal, &format!("access repository {repo}"))),
        }
    }

    fn repo_view(&self, rec: &RepositoryRecord, role: Option<Role>) -> Result<RepoView, ApiError> {
        let ns = namespace_of(&rec.name).unwrap_or("");
        // As /v2 lists them: an expired tag is gone.
        let tags = berth_raft::state::tags::visible_tag_names(&self.state(), &rec.name, now_ms()).map_err(state_err)?;
        Ok(RepoView {
            namespace: ns.to_string(),
            name: rec.name.strip_prefix(&format!("{ns}/")).unwrap_or(&rec.name).to_string(),
            description: rec.description.clone(),
            is_public: rec.public,
            kind: "image".into(),
            is_organization: self.state().get_raw(&keys::org(ns)).map_err(state_err)?.is_some(),
            can_write: role >= Some(Role::Write),
            can_admin: role >= Some(Role::Admin),
            tags,
            state: berth_raft::state::mirror::repo_state(&self.state(), &rec.name).map_err(state_err)?.as_str().into(),
        })
    }

    async fn password_hash(password: &str) -> Result<String, ApiError> {
        if password.len() < 8 {
            return Err(bad("passwords have at least 8 characters"));
        }
        crate::identity::auth::hash_password_in_turn(password).await.map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
    }
}

#[async_trait]
impl Identity for NodeIdentity {
    async fn authenticate(&self, caller: &Caller) -> Result<Access, ApiError> {
        let a = self.auth.authenticate(caller).await?;
        // Registry tokens are for /v2; the admin API takes users, app tokens and the operator.
        if a.grants.is_some() || matches!(a.principal, Principal::Robot { .. }) {
            return Err(ApiError::new(ErrorCode::Denied, "registry tokens and robot accounts cannot use the admin API"));
        }
        Ok(Access { principal: a.principal, ip: caller.ip })
    }

    async fn sign_in(
        &self,
        ip: Option<std::net::IpAddr>,
        req: berth_gateway::identity::SessionRequest,
    ) -> Result<berth_gateway::identity::SessionIssued, ApiError> {
        crate::identity::session::sign_in(&self.auth, ip, req).await
    }

    async fn current_user(&self, who: &Access) -> Result<CurrentUser, ApiError> {
        if who.principal == Principal::Anonymous {
            return Err(denied(&who.principal, "read the current user"));
        }
        let name = who.principal.performer();
        let orgs: Vec<OrgRecord> = self.state().scan(keys::ORG_PREFIX).map_err(state_err)?;
        let mut organizations = Vec::new();
        for o in orgs {
            if policy::is_org_member(&self.state(), &who.principal, &o.name).map_err(state_err)? {
                organizations.push(o.name);
            }
        }
        let scopes = match &who.principal {
            Principal::App { scopes, .. } => scopes.clone(),
            _ => Vec::new(),
        };
        let tag_expiration_s = match &who.principal {
            Principal::User { name, .. } | Principal::App { owner: name, .. } => Some(self.time_machine_s(name)?),
            _ => None,
        };
        Ok(CurrentUser { username: name, kind: who.principal.kind().into(), super_user: who.principal.is_superuser(), organizations, scopes, tag_expiration_s })
    }

    async fn change_own_password(&self, who: &Access, req: PasswordChange) -> Result<(), ApiError> {
        if req.password.is_none() && req.tag_expiration_s.is_none() {
            return Err(bad("give a password, a tag_expiration_s, or both"));
        }
        let name = self.own_name(who, "user:admin")?;
        let mut rec = self.user_record(&name)?.ok_or_else(|| not_found(format!("no user {name}")))?;
        // A local password would take over from the directory's for good.
        if req.password.is_some() && is_federated(&rec) {
            return Err(bad(format!("{name} signs in through the LDAP directory; change the password there")));
        }
        // Checked before anything is written: a refusal changes nothing.
        let password_hash = match req.password.as_deref() {
            Some(p) => Some(Self::password_hash(p).await?),
            None => None,
        };
        if let Some(s) = req.tag_expiration_s {
            self.check_time_machine(s)?;
        }
        if let Some(hash) = password_hash {
            rec.password_hash = hash;
            self.meta.write(actor_of(&who.principal), MetaCommand::PutUser(rec)).await.map_err(meta_err)?;
            self.log(who, "change_password", Some(&name), None, vec![]).await;
        }
        if let Some(s) = req.tag_expiration_s {
            self.set_time_machine(who, &name, s).await?;
        }
        Ok(())
    }

    async fn list_users(&self, who: &Access) -> Result<UserList, ApiError> {
        self.require_superuser(who, "list users")?;
        let users: Vec<UserRecord> = self.state().scan(keys::USER_PREFIX).map_err(state_err)?;
        Ok(UserList { users: users.into_iter().map(|u| UserView { username: u.name, super_user: u.superuser }).collect() })
    }

    async fn create_user(&self, who: &Access, req: UserCreate) -> Result<UserCreated, ApiError> {
        self.require_superuser(who, "create users")?;
        check_name("user", &req.username)?;
        let (password, generated) = match req.password {
            Some(p) => (p, false),
            None => (secret(24).to_lowercase(), true),
        };
        let password_hash = Self::password_hash(&password).await?;
        let rec = UserRecord { name: req.username.clone(), password_hash, superuser: req.superuser, created_at_ms: now_ms() };
        self.write(who, IdentityCommand::CreateUser(rec), || String::new()).await?;
        self.log(who, "user_create", Some(&req.username), None, vec![("superuser", req.superuser.to_string())]).await;
        Ok(UserCreated { username: req.username, password: generated.then_some(password) })
    }

    async fn update_user(&self, who: &Access, name: &str, req: UserUpdate) -> Result<UserView, ApiError> {
        self.require_superuser(who, "change users")?;
        let mut rec = self.user_record(name)?.ok_or_else(|| not_found(format!("no user {name}")))?;
        if let Some(p) = &req.password {
            rec.password_hash = Self::password_hash(p).await?;
        }
        if let Some(s) = req.superuser {
            rec.superuser = s;
        }
        self.meta.write(actor_of(&who.principal), MetaCommand::PutUser(rec.clone())).await.map_err(meta_err)?;
        self.log(who, "user_change", Some(name), None, vec![("password_changed", req.password.is_some().to_string())]).await;
        Ok(UserView { username: rec.name, super_user: rec.superuser })
    }

    async fn delete_user(&self, who: &Access, name: &str) -> Result<(), ApiError> {
        self.require_superuser(who, "delete users")?;
        self.write(who, IdentityCommand::DeleteUser { name: name.to_string() }, || format!("no user {name}")).await?;
        self.log(who, "user_delete", Some(name), None, vec![]).await;
        Ok(())
    }

    async fn list_orgs(&self, who: &Access) -> Result<OrgList, ApiError> {
        self.require_superuser(who, "list every organization")?;
        let mut out = Vec::new();
        for o in self.state().scan::<OrgRecord>(keys::ORG_PREFIX).map_err(state_err)? {
            if policy::is_org_member(&self.state(), &who.principal, &o.name).map_err(state_err)? {
                out.push(self.get_org(who, &o.name).await?);
            }
        }
        Ok(OrgList { organizations: out })
    }

    async fn create_org(&self, who: &Access, req: OrgCreate) -> Result<OrgView, ApiError> {
        let owner = match &who.principal {
            p if p.is_superuser() => match p {
                Principal::User { name, .. } | Principal::App { owner: name, .. } => Some(name.clone()),
                _ => None,
            },
            Principal::User { name, .. } => Some(name.clone()),
            Principal::App { owner, .. } if who.principal.has_scope("org:admin") => Some(owner.clone()),
            p => return Err(denied(p, "create organizations")),
        };
        check_name("organization", &req.name)?;
        let org = OrgRecord { name: req.name.clone(), email: req.email.clone(), created_at_ms: now_ms() };
        self.write(who, IdentityCommand::CreateOrg { org, owner }, String::new).await?;
        self.log(who, "org_create", Some(&req.name), None, vec![]).await;
        self.get_org(who, &req.name).await
    }

    async fn get_org(&self, who: &Access, org: &str) -> Result<OrgView, ApiError> {
        let rec = self.org_record(org)?;
        let state = self.state();
        let is_member = policy::is_org_member(&state, &who.principal, org).map_err(state_err)?;
        if !is_member {
            return Err(denied(&who.principal, &format!("see organization {org}")));
        }
        let is_admin = policy::is_org_admin(&state, &who.principal, org).map_err(state_err)?;
        let teams = state.scan::<TeamRecord>(&keys::teams_of(org)).map_err(state_err)?.iter().map(|t| (t.name.clone(), Self::team_view(t))).collect();
        let tag_expiration_s = self.time_machine_s(org)?;
        Ok(OrgView { name: rec.name, email: rec.email, is_admin, is_member, teams, tag_expiration_s })
    }

    async fn update_org(&self, who: &Access, org: &str, req: OrgUpdate) -> Result<OrgView, ApiError> {
        let rec = self.org_record(org)?;
        self.require_org_admin(who, org)?;
        if req.email.as_ref().is_some_and(|e| Some(e) != rec.email.as_ref()) {
            return Err(bad("an organization's email cannot be changed"));
        }
        if let Some(s) = req.tag_expiration_s {
            self.check_time_machine(s)?;
            self.set_time_machine(who, org, s).await?;
        }
        self.get_org(who, org).await
    }

    async fn delete_org(&self, who: &Access, org: &str) -> Result<(), ApiError> {
        self.require_org_admin(who, org)?;
        self.write(who, IdentityCommand::DeleteOrg { name: org.to_string() }, || format!("no organization {org}")).await?;
        self.log(who, "org_delete", Some(org), None, vec![]).await;
        Ok(())
    }

    async fn list_robots(&self, who: &Access, namespace: Option<&str>) -> Result<RobotList, ApiError> {
        let ns = self.robot_namespace(who, namespace)?;
        let robots: Vec<RobotRecord> = self.state().scan(&keys::robots_of(&ns)).map_err(state_err)?;
        Ok(RobotList { robots: robots.iter().map(|r| Self::robot_view(r, None)).collect() })
    }

    async fn put_robot(&self, who: &Access, namespace: Option<&str>, short: &str, req: RobotCreate) -> Result<RobotView, ApiError> {
        let ns = self.robot_namespace(who, namespace)?;
        check_name("robot", short)?;
        if self.state().get_raw(&keys::robot(&ns, short)).map_err(state_err)?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("robot {ns}+{short} exists (regenerate its token instead)")));
        }
        let token = secret(64);
        let rec = RobotRecord {
            namespace: ns.clone(),
            short: short.to_string(),
            description: req.description.unwrap_or_default(),
            secret_sha256: sha256_hex(&token),
            created_at_ms: now_ms(),
        };
        self.write(who, IdentityCommand::PutRobot(rec.clone()), || format!("no namespace {ns}")).await?;
        self.log(who, "create_robot", Some(&ns), None, vec![("robot", rec.full_name())]).await;
        Ok(Self::robot_view(&rec, Some(token)))
    }

    async fn get_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<RobotView, ApiError> {
        let ns = self.robot_namespace(who, namespace)?;
        let rec: RobotRecord = self.state().get(&keys::robot(&ns, short)).map_err(state_err)?.ok_or_else(|| not_found(format!("no robot {ns}+{short}")))?;
        Ok(Self::robot_view(&rec, None))
    }

    async fn delete_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<(), ApiError> {
        let ns = self.robot_namespace(who, namespace)?;
        self.write(who, IdentityCommand::DeleteRobot { namespace: ns.clone(), short: short.to_string() }, || format!("no robot {ns}+{short}")).await?;
        self.log(who, "delete_robot", Some(&ns), None, vec![("robot", format!("{ns}+{short}"))]).await;
        Ok(())
    }

    async fn regenerate_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<RobotView, ApiError> {
        let ns = self.robot_namespace(who, namespace)?;
        let mut rec: RobotRecord = self.state().get(&keys::robot(&ns, short)).map_err(state_err)?.ok_or_else(|| not_found(format!("no robot {ns}+{short}")))?;
        let token = secret(64);
        rec.secret_sha256 = sha256_hex(&token);
        self.write(who, IdentityCommand::PutRobot(rec.clone()), || format!("no namespace {ns}")).await?;
        self.log(who, "regenerate_robot_token", Some(&ns), None, vec![("robot", rec.full_name())]).await;
        Ok(Self::robot_view(&rec, Some(token)))
    }

    async fn put_team(&self, who: &Access, org: &str, team: &str, req: TeamUpdate) -> Result<TeamView, ApiError> {
        self.require_org_admin(who, org)?;
        check_name("team", team)?;
        let role = TeamRole::parse(&req.role).ok_or_else(|| bad(format!("team role {:?} is not member, creator or admin", req.role)))?;
        let existing: Option<TeamRecord> = self.state().get(&keys::team(org, team)).map_err(state_err)?;
        let description = req.description.or(existing.map(|t| t.description)).unwrap_or_default();
        let cmd = IdentityCommand::PutTeam { org: org.to_string(), name: team.to_string(), role, description };
        self.write(who, cmd, || format!("no organization {org}")).await?;
        self.log(who, "org_set_team", Some(org), None, vec![("team", team.to_string()), ("role", req.role)]).await;
        let rec: TeamRecord = self.state().get(&keys::team(org, team)).map_err(state_err)?.ok_or_else(|| not_found(format!("team {team} vanished")))?;
        Ok(Self::team_view(&rec))
    }

    async fn delete_team(&self, who: &Access, org: &str, team: &str) -> Result<(), ApiError> {
        self.require_org_admin(who, org)?;
        self.write(who, IdentityCommand::DeleteTeam { org: org.to_string(), name: team.to_string() }, || format!("no team {team} in {org}")).await?;
        self.log(who, "org_delete_team", Some(org), None, vec![("team", team.to_string())]).await;
        Ok(())
    }

    async fn team_members(&self, who: &Access, org: &str, team: &str) -> Result<TeamMembers, ApiError> {
        self.org_record(org)?;
        if !policy::is_org_member(&self.state(), &who.principal, org).map_err(state_err)? {
            return Err(denied(&who.principal, &format!("see the teams of {org}")));
        }
        let rec: TeamRecord = self.state().get(&keys::team(org, team)).map_err(state_err)?.ok_or_else(|| not_found(format!("no team {team} in {org}")))?;
        let can_edit = policy::is_org_admin(&self.state(), &who.principal, org).map_err(state_err)?;
        let members = rec.members.iter().map(|m| MemberView { name: m.clone(), kind: "user".into(), is_robot: m.contains('+') }).collect();
        Ok(TeamMembers { name: rec.name, members, can_edit })
    }

    async fn add_team_member(&self, who: &Access, org: &str, team: &str, member: &str) -> Result<MemberView, ApiError> {
        self.require_org_admin(who, org)?;
        if let Some((ns, _)) = member.split_once('+') {
            if ns != org {
                return Err(bad(format!("robot {member} belongs to another namespace than {org}")));
            }
        }
        let cmd = IdentityCommand::SetTeamMember { org: org.to_string(), team: team.to_string(), member: member.to_string(), present: true };
        match self.write(who, cmd, || format!("no team {team} in {org}")).await {
            Err(e) if e.code == ErrorCode::Conflict => return Err(not_found(e.message)),
            other => other?,
        }
        self.log(who, "org_add_team_member", Some(org), None, vec![("team", team.to_string()), ("member", member.to_string())]).await;
        Ok(MemberView { name: member.to_string(), kind: "user".into(), is_robot: member.contains('+') })
    }

    async fn remove_team_member(&self, who: &Access, org: &str, team: &str, member: &str) -> Result<(), ApiError> {
        self.require_org_admin(who, org)?;
        let cmd = IdentityCommand::SetTeamMember { org: org.to_string(), team: team.to_string(), member: member.to_string(), present: false };
        self.write(who, cmd, || format!("{member} is not in team {team} of {org}")).await?;
        self.log(who, "org_remove_team_member", Some(org), None, vec![("team", team.to_string()), ("member", member.to_string())]).await;
        Ok(())
    }

    async fn create_repo(&self, who: &Access, req: RepoCreate) -> Result<RepoCreated, ApiError> {
        let name = format!("{}/{}", req.namespace, req.repository);
        if let Err(e) = name.parse::<berth_common::RepoName>() {
            return Err(bad(format!("{e} (lowercase letters and digits, separated by '.', '_' or '-')")));
        }
        let public = match req.visibility.as_str() {
            "public" => true,
            "private" => false,
            v => return Err(bad(format!("visibility {v:?} is not public or private"))),
        };
        if !policy::may_create(&self.state(), &who.principal, &name).map_err(state_err)? {
            return Err(denied(&who.principal, &format!("create repositories in {}", req.namespace)));
        }
        if !who.principal.is_superuser() && !berth_raft::state::identity::namespace_exists(&self.state(), &req.namespace).map_err(state_err)? {
            return Err(not_found(format!("no namespace {}", req.namespace)));
        }
        let mut rec = RepositoryRecord::new(&name, now_ms());
        rec.public = public;
        rec.description = req.description.unwrap_or_default();
        grant_creator(&mut rec, &who.principal);
        if let Some(org) = implicit_namespace(&self.state(), &who.principal, &name)? {
            // Refused only if someone made the namespace meanwhile: fine.
            match self.write(who, org, String::new).await {
                Ok(()) => self.log(who, "org_create", Some(&req.namespace), None, vec![("by", "create_repo".into())]).await,
                Err(e) if e.code == ErrorCode::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        self.write(who, IdentityCommand::CreateRepository(rec), String::new).await?;
        self.log(who, "create_repo", Some(&req.namespace), Some(&name), vec![("visibility", req.visibility)]).await;
        Ok(RepoCreated { namespace: req.namespace, name: req.repository, kind: "image".into() })
    }

    async fn list_repos(&self, who: &Access, q: RepoListQuery) -> Result<RepoList, ApiError> {
        let state = self.state();
        let prefix = match &q.namespace {
            Some(ns) => keys::repos_in(ns),
            None => keys::REPO_PREFIX.to_vec(),
        };
        let mut out = Vec::new();
        for rec in state.scan::<RepositoryRecord>(&prefix).map_err(state_err)? {
            if q.public.is_some_and(|p| p != rec.public) {
                continue;
            }
            let role = policy::repo_role(&state, &who.principal, &rec.name, Some(&rec)).map_err(state_err)?;
            if role.is_some() {
                out.push(self.repo_view(&rec, role)?);
            }
        }
        Ok(RepoList { repositories: out })
    }

    async fn get_repo(&self, who: &Access, repo: &str) -> Result<RepoView, ApiError> {
        let (rec, role) = self.repo_with(who, repo, Role::Read)?;
        self.repo_view(&rec, Some(role))
    }

    async fn update_repo(&self, who: &Access, repo: &str, description: Option<String>, visibility: Option<String>) -> Result<(), ApiError> {
        let need = if visibility.is_some() { Role::Admin } else { Role::Write };
        self.repo_with(who, repo, need)?;
        let public = match visibility.as_deref() {
            None => None,
            Some("public") => Some(true),
            Some("private") => Some(false),
            Some(v) => return Err(bad(format!("visibility {v:?} is not public or private"))),
        };
        let cmd = IdentityCommand::UpdateRepository { name: repo.to_string(), public, description: description.clone() };
        self.write(who, cmd, || format!("no repository {repo}")).await?;
        let (kind, meta) = match visibility {
            Some(v) => ("change_repo_visibility", vec![("visibility", v)]),
            None => ("set_repo_description", vec![("description", description.unwrap_or_default())]),
        };
        self.log(who, kind, namespace_of(repo), Some(repo), meta).await;
        Ok(())
    }

    async fn delete_repo(&self, who: &Access, repo: &str) -> Result<(), ApiError> {
        self.repo_with(who, repo, Role::Admin)?;
        self.write(who, IdentityCommand::DeleteRepository { name: repo.to_string() }, || format!("no repository {repo}")).await?;
        self.log(who, "delete_repo", namespace_of(repo), Some(repo), vec![]).await;
        Ok(())
    }

    async fn list_permissions(&self, who: &Access, repo: &str, kind: GranteeKind) -> Result<PermissionList, ApiError> {
        self.list_repo_permissions(who, repo, kind).await
    }

    async fn set_permission(&self, who: &Access, repo: &str, kind: GranteeKind, name: &str, role: Option<&str>) -> Result<Option<PermissionView>, ApiError> {
        self.set_repo_permission(who, repo, kind, name, role).await
    }

    async fn list_tokens(&self, who: &Access) -> Result<AppTokenList, ApiError> {
        self.list_app_tokens(who).await
    }

    async fn create_token(&self, who: &Access, req: AppTokenCreate) -> Result<AppTokenCreated, ApiError> {
        self.create_app_token(who, req).await
    }

    async fn delete_token(&self, who: &Access, id: &str) -> Result<(), ApiError> {
        self.delete_app_token(who, id).await
    }

    async fn logs(&self, who: &Access, filter: LogFilter) -> Result<LogPage, ApiError> {
        self.log_page(who, filter).await
    }

    async fn list_tags(&self, who: &Access, repo: &str, q: TagListQuery) -> Result<TagList, ApiError> {
        self.list_tag_rows(who, repo, q).await
    }

    async fn update_tag(&self, who: &Access, repo: &str, tag: &str, req: TagUpdate) -> Result<(), ApiError> {
        self.update_tag_row(who, repo, tag, req).await
    }

    async fn restore_tag(&self, who: &Access, repo: &str, tag: &str, req: TagRestore) -> Result<(), ApiError> {
        self.restore_tag_row(who, repo, tag, req).await
    }

    async fn delete_tag(&self, who: &Access, repo: &str, tag: &str) -> Result<(), ApiError> {
        self.delete_tag_row(who, repo, tag).await
    }

    async fn manifest_placement(&self, who: &Access, repo: &str, digest: &str) -> Result<ManifestPlacement, ApiError> {
        self.placement_of(who, repo, digest)
    }

    async fn list_notifications(
        &self,
        who: &Access,
        target: &berth_gateway::notifications::NotificationTarget,
    ) -> Result<berth_gateway::notifications::NotificationList, ApiError> {
        self.notifications_list(who, target).await
    }

    async fn create_notification(
        &self,
        who: &Access,
        target: &berth_gateway::notifications::NotificationTarget,
        req: berth_gateway::notifications::NotificationCreate,
    ) -> Result<berth_gateway::notifications::NotificationView, ApiError> {
        self.notification_create(who, target, req).await
    }

    async fn get_notification(
        &self,
        who: &Access,
        target: &berth_gateway::notifications::NotificationTarget,
        uuid: &str,
    ) -> Result<berth_gateway::notifications::NotificationView, ApiError> {
        self.notification_get(who, target, uuid).await
    }

    async fn delete_notification(&self, who: &Access, target: &berth_gateway::notifications::NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        self.notification_delete(who, target, uuid).await
    }

    async fn reset_notification(&self, who: &Access, target: &berth_gateway::notifications::NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        self.notification_reset(who, target, uuid).await
    }

    async fn test_notification(&self, who: &Access, target: &berth_gateway::notifications::NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        self.notification_test(who, target, uuid).await
    }

    async fn authenticate_for_tags(&self, caller: &Caller) -> Result<Access, ApiError> {
        let a = self.auth.authenticate(caller).await?;
        // Robots too (a robot with write may lock a tag, not unlock it);
        // registry tokens stay on /v2.
        if a.grants.is_some() {
            return Err(ApiError::new(ErrorCode::Denied, "registry tokens cannot use the admin API"));
        }
        Ok(Access { principal: a.principal, ip: caller.ip })
    }

    async fn list_immutability_policies(&self, who: &Access, scope: &PolicyScope) -> Result<ImmutabilityPolicyList, ApiError> {
        self.list_immutability(who, scope).await
    }

    async fn put_immutability_policy(
        &self,
        who: &Access,
        scope: &PolicyScope,
        uuid: Option<&str>,
        req: ImmutabilityPolicyBody,
    ) -> Result<ImmutabilityPolicyView, ApiError> {
        self.put_immutability(who, scope, uuid, req).await
    }

    async fn get_immutability_policy(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<ImmutabilityPolicyView, ApiError> {
        self.get_immutability(who, scope, uuid).await
    }

    async fn delete_immutability_policy(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<(), ApiError> {
        self.delete_immutability(who, scope, uuid).await
    }

    async fn list_autoprune_policies(&self, who: &Access, scope: &PolicyScope) -> Result<AutoPrunePolicyList, ApiError> {
        self.list_autoprune(who, scope).await
    }

    async fn put_autoprune_policy(
        &self,
        who: &Access,
        scope: &PolicyScope,
        uuid: Option<&str>,
        req: AutoPrunePolicyBody,
    ) -> Result<AutoPrunePolicyView, ApiError> {
        self.put_autoprune(who, scope, uuid, req).await
    }

    async fn get_autoprune_policy(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<AutoPrunePolicyView, ApiError> {
        self.get_autoprune(who, scope, uuid).await
    }

    async fn delete_autoprune_policy(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<(), ApiError> {
        self.delete_autoprune(who, scope, uuid).await
    }

    async fn list_quotas(&self, who: &Access, ns: Option<&str>) -> Result<Vec<QuotaView>, ApiError> {
        self.quotas_of(who, ns).await
    }

    async fn create_quota(&self, who: &Access, ns: &str, req: QuotaBody) -> Result<QuotaView, ApiError> {
        self.quota_create(who, ns, req).await
    }

    async fn update_quota(&self, who: &Access, ns: &str, id: &str, req: QuotaBody) -> Result<QuotaView, ApiError> {
        self.quota_update(who, ns, id, req).await
    }

    async fn delete_quota(&self, who: &Access, ns: &str, id: &str) -> Result<(), ApiError> {
        self.quota_delete(who, ns, id).await
    }

    async fn create_quota_limit(&self, who: &Access, ns: &str, id: &str, req: QuotaLimitBody) -> Result<QuotaView, ApiError> {
        self.quota_limit_create(who, ns, id, req).await
    }

    async fn delete_quota_limit(&self, who: &Access, ns: &str, id: &str, limit_id: &str) -> Result<(), ApiError> {
        self.quota_limit_delete(who, ns, id, limit_id).await
    }

    async fn default_quota(&self, who: &Access) -> Result<DefaultQuota, ApiError> {
        self.default_quota_view(who).await
    }

    async fn set_default_quota(&self, who: &Access, req: Option<QuotaBody>) -> Result<DefaultQuota, ApiError> {
        self.default_quota_set(who, req).await
    }

    async fn change_repo_state(&self, who: &Access, repo: &str, req: berth_gateway::identity::RepoStateChange) -> Result<(), ApiError> {
        self.change_state(who, repo, req).await
    }

    async fn get_mirror(&self, who: &Access, repo: &str) -> Result<berth_gateway::identity::MirrorView, ApiError> {
        self.mirror_view(who, repo).await
    }
    async fn manifest_security(&self, who: &Access, repo: &str, digest: &str, vulnerabilities: bool) -> Result<serde_json::Value, ApiError> {
        self.security_of(who, repo, digest, vulnerabilities).await
    }
    async fn manifest_sbom(&self, who: &Access, repo: &str, digest: &str) -> Result<serde_json::Value, ApiError> {
        self.sbom_of(who, repo, digest).await
    }
    async fn import_feed(&self, who: &Access, name: &str, bytes: bytes::Bytes) -> Result<berth_gateway::identity::FeedView, ApiError> {
        self.feed_import(who, name, bytes).await
    }
    async fn scanner_status(&self, who: &Access) -> Result<berth_gateway::identity::ScannerStatus, ApiError> {
        self.scan_status(who).await
    }
    async fn put_feed_source(
        &self,
        who: &Access,
        name: &str,
        req: berth_gateway::identity::FeedSourceRequest,
    ) -> Result<berth_gateway::identity::FeedSourceView, ApiError> {
        self.source_put(who, name, req).await
    }
    async fn delete_feed_source(&self, who: &Access, name: &str) -> Result<(), ApiError> {
        self.source_delete(who, name).await
    }

    async fn put_mirror(
        &self,
        who: &Access,
        repo: &str,
        req: berth_gateway::identity::MirrorRequest,
        create: bool,
    ) -> Result<berth_gateway::identity::MirrorView, ApiError> {
        self.mirror_put(who, repo, req, create).await
    }

    async fn mirror_sync(&self, who: &Access, repo: &str, now: bool) -> Result<(), ApiError> {
        self.mirror_sync_request(who, repo, now).await
    }

    async fn get_proxy_cache(&self, who: &Access, org: &str) -> Result<berth_gateway::identity::ProxyCacheView, ApiError> {
        self.proxy_cache_view(who, org).await
    }

    async fn put_proxy_cache(
        &self,
        who: &Access,
        org: &str,
        req: berth_gateway::identity::ProxyCacheRequest,
    ) -> Result<berth_gateway::identity::ProxyCacheView, ApiError> {
        self.proxy_cache_put(who, org, req).await
    }

    async fn delete_proxy_cache(&self, who: &Access, org: &str) -> Result<(), ApiError> {
        self.proxy_cache_delete(who, org).await
    }
    async fn list_applications(&self, who: &Access, org: &str) -> Result<ApplicationList, ApiError> {
        self.app_list(who, org).await
    }
    async fn create_application(&self, who: &Access, org: &str, req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        self.app_create(who, org, req).await
    }
    async fn get_application(&self, who: &Access, org: &str, client_id: &str) -> Result<ApplicationView, ApiError> {
        self.app_in(who, org, client_id).map(|a| Self::app_view(&a, None))
    }
    async fn update_application(&self, who: &Access, org: &str, client_id: &str, req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        self.app_update(who, org, client_id, req).await
    }
    async fn delete_application(&self, who: &Access, org: &str, client_id: &str) -> Result<(), ApiError> {
        self.app_delete(who, org, client_id).await
    }
    async fn reset_application_secret(&self, who: &Access, org: &str, client_id: &str) -> Result<ApplicationView, ApiError> {
        self.app_reset_secret(who, org, client_id).await
    }
    async fn application_tokens(&self, who: &Access, org: &str, client_id: &str) -> Result<ApplicationTokenList, ApiError> {
        self.app_tokens(who, org, client_id).await
    }
    async fn revoke_application_token(&self, who: &Access, org: &str, client_id: &str, token_id: &str) -> Result<(), ApiError> {
        self.app_token_revoke(who, org, client_id, token_id).await
    }
    async fn generate_application_token(&self, who: &Access, org: &str, client_id: &str, req: GenerateTokenRequest) -> Result<ApplicationTokenView, ApiError> {
        self.app_generate_token(who, org, client_id, req).await
    }
    async fn public_application(&self, client_id: &str) -> Result<PublicApplicationView, ApiError> {
        self.app_public(client_id).await
    }
    async fn oauth_authorize(&self, caller: &Caller, req: AuthorizeRequest) -> OAuthOutcome {
        self.authorize_page(caller, req).await
    }
    async fn oauth_decide(&self, caller: &Caller, form: AuthorizeRequest, approve: bool) -> OAuthOutcome {
        self.authorize_decide(caller, form, approve).await
    }
    async fn oauth_access_token(&self, caller: &Caller, req: TokenRequest) -> Result<OAuthTokenResponse, OAuthError> {
        self.access_token(caller, req).await
    }

    async fn rotate_token_key(&self, who: &Access) -> Result<KeyRotated, ApiError> {
        self.require_superuser(who, "rotate the token key")?;
        let pem = crate::identity::jwt::new_signing_key_pem().map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let kid = hex::encode(rand::random::<[u8; 8]>());
        let now = now_ms();
        let key = TokenKey { kid: kid.clone(), pkcs8_pem: pem, created_at_ms: now, retired_at_ms: None };
        self.write(who, IdentityCommand::RotateTokenKey { key, now_ms: now }, String::new).await?;
        self.log(who, "rotate_token_key", None, None, vec![("kid", kid.clone())]).await;
        Ok(KeyRotated { kid })
    }
}

/// Whoever creates a repository in an organization administers it.
/// The organization a superuser's first repository in an unknown namespace
/// makes, owned by that superuser: a namespace exists before anything is
/// stored under it (the state machine refuses a repository otherwise), so
/// nobody can later claim it and administer what is already there. Only a
/// superuser may create in a namespace that does not exist (see
/// `policy::may_create`); `None` for everyone else and for a namespace
/// that exists.
pub fn implicit_namespace(state: &impl StateRead, p: &Principal, repo: &str) -> Result<Option<IdentityCommand>, ApiError> {
    let Some(ns) = namespace_of(repo) else { return Ok(None) };
    let exists = berth_raft::state::identity::namespace_exists(state, ns).map_err(state_err)?;
    let owner = match p {
        Principal::User { name, superuser: true } => name.clone(),
        Principal::App { owner, .. } if p.is_superuser() => owner.clone(),
        _ => return Ok(None),
    };
    if exists {
        return Ok(None);
    }
    let org = OrgRecord { name: ns.to_string(), email: None, created_at_ms: now_ms() };
    Ok(Some(IdentityCommand::CreateOrg { org, owner: Some(owner) }))
}

pub fn grant_creator(rec: &mut RepositoryRecord, p: &Principal) {
    let ns = namespace_of(&rec.name).map(str::to_string);
    match p {
        Principal::User { name, .. } | Principal::App { owner: name, .. } if ns.as_deref() != Some(name.as_str()) && !p.is_superuser() => {
            rec.users.insert(name.clone(), Role::Admin);
        }
        Principal::Robot { name } => {
            rec.users.insert(name.clone(), Role::Admin);
        }
        _ => {}
    }
}
