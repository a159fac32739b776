//! [`Identity`] over the in-memory state: users with passwords. The rest
//! of the identity API (organizations, robots, teams, repositories'
//! settings, application tokens, usage logs) is refused with 501.

use async_trait::async_trait;

use super::{unmodelled, MemoryNode, User};
use crate::access::{Access, Caller, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::identity::*;

/// Shortest password a user may be given.
const MIN_PASSWORD: usize = 8;

fn superuser_only(who: &Access) -> Result<(), ApiError> {
    match &who.principal {
        Principal::Anonymous => Err(ApiError::new(ErrorCode::Unauthorized, "log in first")),
        p if p.is_superuser() => Ok(()),
        _ => Err(ApiError::new(ErrorCode::Denied, "only a superuser manages users")),
    }
}

fn checked_password(p: &str) -> Result<(), ApiError> {
    if p.len() < MIN_PASSWORD {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("a password has at least {MIN_PASSWORD} characters")));
    }
    Ok(())
}

fn no_user(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no user {name}"))
}

#[async_trait]
impl Identity for MemoryNode {
    async fn authenticate(&self, caller: &Caller) -> Result<Access, ApiError> {
        self.lock().who(caller)
    }

    async fn current_user(&self, who: &Access) -> Result<CurrentUser, ApiError> {
        match &who.principal {
            Principal::User { name, superuser } => Ok(CurrentUser {
                username: name.clone(),
                kind: "user".into(),
                super_user: *superuser,
                organizations: vec![],
                scopes: vec![],
                tag_expiration_s: None,
            }),
            _ => Err(ApiError::new(ErrorCode::Unauthorized, "log in first")),
        }
    }

    async fn change_own_password(&self, who: &Access, req: PasswordChange) -> Result<(), ApiError> {
        let Principal::User { name, .. } = &who.principal else { return Err(ApiError::new(ErrorCode::Unauthorized, "log in first")) };
        if req.tag_expiration_s.is_some() {
            return Err(unmodelled("the tag time machine"));
        }
        let Some(password) = req.password else { return Err(ApiError::new(ErrorCode::BadRequest, "give a password")) };
        checked_password(&password)?;
        let mut st = self.lock();
        st.users.get_mut(name).ok_or_else(|| no_user(name))?.password = password;
        Ok(())
    }

    async fn list_users(&self, who: &Access) -> Result<UserList, ApiError> {
        superuser_only(who)?;
        let users = self.lock().users.iter().map(|(n, u)| UserView { username: n.clone(), super_user: u.superuser }).collect();
        Ok(UserList { users })
    }

    async fn create_user(&self, who: &Access, req: UserCreate) -> Result<UserCreated, ApiError> {
        superuser_only(who)?;
        if !berth_common::names::valid_component(&req.username) {
            return Err(ApiError::new(ErrorCode::BadRequest, format!("{:?} is not a valid user name", req.username)));
        }
        let Some(password) = req.password else { return Err(unmodelled("password generator")) };
        checked_password(&password)?;
        let mut st = self.lock();
        if st.users.contains_key(&req.username) {
            return Err(ApiError::new(ErrorCode::Conflict, format!("user {} exists", req.username)));
        }
        st.users.insert(req.username.clone(), User { password, superuser: req.superuser });
        Ok(UserCreated { username: req.username, password: None })
    }

    async fn update_user(&self, who: &Access, name: &str, req: UserUpdate) -> Result<UserView, ApiError> {
        superuser_only(who)?;
        if let Some(p) = &req.password {
            checked_password(p)?;
        }
        let mut st = self.lock();
        let user = st.users.get_mut(name).ok_or_else(|| no_user(name))?;
        if let Some(p) = req.password {
            user.password = p;
        }
        if let Some(s) = req.superuser {
            user.superuser = s;
        }
        Ok(UserView { username: name.to_string(), super_user: user.superuser })
    }

    async fn delete_user(&self, who: &Access, name: &str) -> Result<(), ApiError> {
        superuser_only(who)?;
        if who.principal.performer() == name {
            return Err(ApiError::new(ErrorCode::Conflict, "a superuser does not delete themselves"));
        }
        let mut st = self.lock();
        st.users.remove(name).ok_or_else(|| no_user(name))?;
        // Its tokens go with it.
        st.tokens.retain(|_, t| t.user != name);
        Ok(())
    }

    async fn list_orgs(&self, _who: &Access) -> Result<OrgList, ApiError> {
        Err(unmodelled("organizations"))
    }

    async fn create_org(&self, _who: &Access, _req: OrgCreate) -> Result<OrgView, ApiError> {
        Err(unmodelled("organizations"))
    }

    async fn get_org(&self, _who: &Access, _org: &str) -> Result<OrgView, ApiError> {
        Err(unmodelled("organizations"))
    }

    async fn delete_org(&self, _who: &Access, _org: &str) -> Result<(), ApiError> {
        Err(unmodelled("organizations"))
    }

    async fn list_robots(&self, _who: &Access, _namespace: Option<&str>) -> Result<RobotList, ApiError> {
        Err(unmodelled("robots"))
    }

    async fn put_robot(&self, _who: &Access, _namespace: Option<&str>, _short: &str, _req: RobotCreate) -> Result<RobotView, ApiError> {
        Err(unmodelled("robots"))
    }

    async fn get_robot(&self, _who: &Access, _namespace: Option<&str>, _short: &str) -> Result<RobotView, ApiError> {
        Err(unmodelled("robots"))
    }

    async fn delete_robot(&self, _who: &Access, _namespace: Option<&str>, _short: &str) -> Result<(), ApiError> {
        Err(unmodelled("robots"))
    }

    async fn regenerate_robot(&self, _who: &Access, _namespace: Option<&str>, _short: &str) -> Result<RobotView, ApiError> {
        Err(unmodelled("robots"))
    }

    async fn put_team(&self, _who: &Access, _org: &str, _team: &str, _req: TeamUpdate) -> Result<TeamView, ApiError> {
        Err(unmodelled("teams"))
    }

    async fn delete_team(&self, _who: &Access, _org: &str, _team: &str) -> Result<(), ApiError> {
        Err(unmodelled("teams"))
    }

    async fn team_members(&self, _who: &Access, _org: &str, _team: &str) -> Result<TeamMembers, ApiError> {
        Err(unmodelled("teams"))
    }

    async fn add_team_member(&self, _who: &Access, _org: &str, _team: &str, _member: &str) -> Result<MemberView, ApiError> {
        Err(unmodelled("teams"))
    }

    async fn remove_team_member(&self, _who: &Access, _org: &str, _team: &str, _member: &str) -> Result<(), ApiError> {
        Err(unmodelled("teams"))
    }

    async fn create_repo(&self, _who: &Access, _req: RepoCreate) -> Result<RepoCreated, ApiError> {
        Err(unmodelled("repository settings"))
    }

    async fn list_repos(&self, _who: &Access, _q: RepoListQuery) -> Result<RepoList, ApiError> {
        Err(unmodelled("repository settings"))
    }

    async fn get_repo(&self, _who: &Access, _repo: &str) -> Result<RepoView, ApiError> {
        Err(unmodelled("repository settings"))
    }

    async fn update_repo(&self, _who: &Access, _repo: &str, _description: Option<String>, _visibility: Option<String>) -> Result<(), ApiError> {
        Err(unmodelled("repository settings"))
    }

    async fn delete_repo(&self, _who: &Access, _repo: &str) -> Result<(), ApiError> {
        Err(unmodelled("repository settings"))
    }

    async fn list_permissions(&self, _who: &Access, _repo: &str, _kind: GranteeKind) -> Result<PermissionList, ApiError> {
        Err(unmodelled("permissions"))
    }

    async fn set_permission(
        &self,
        _who: &Access,
        _repo: &str,
        _kind: GranteeKind,
        _name: &str,
        _role: Option<&str>,
    ) -> Result<Option<PermissionView>, ApiError> {
        Err(unmodelled("permissions"))
    }

    async fn list_tokens(&self, _who: &Access) -> Result<AppTokenList, ApiError> {
        Err(unmodelled("application tokens"))
    }

    async fn create_token(&self, _who: &Access, _req: AppTokenCreate) -> Result<AppTokenCreated, ApiError> {
        Err(unmodelled("application tokens"))
    }

    async fn delete_token(&self, _who: &Access, _id: &str) -> Result<(), ApiError> {
        Err(unmodelled("application tokens"))
    }

    async fn logs(&self, _who: &Access, _filter: LogFilter) -> Result<LogPage, ApiError> {
        Err(unmodelled("usage log API (see MemoryNode::audit_log)"))
    }

    async fn rotate_token_key(&self, _who: &Access) -> Result<KeyRotated, ApiError> {
        Err(unmodelled("signing keys"))
    }
}
