//! The permission rules, in one place, over the replicated state.
//!
//! - Superusers (and the node operator) may do anything.
//! - A user administers the repositories of their own namespace.
//! - In an organization, members of a team with role `admin` administer
//!   every repository; `creator` teams may create repositories (and their
//!   creator administers what they created); beyond that, users, robots
//!   and teams get what each repository grants them: read, write or admin.
//! - Public repositories can be pulled by anyone, anonymous included.
//! - An application token acts for its owner, capped by its scopes
//!   (`repo:read` → read, `repo:write` → write, `repo:admin` → admin,
//!   `repo:create` to create).
//!
//! Pull needs read; push and delete need write (as in Quay); changing
//! permissions, visibility or deleting a repository needs admin.

use berth_gateway::Principal;
use berth_raft::command::RepositoryRecord;
use berth_raft::command::{namespace_of, Role, TeamRecord, TeamRole};
use berth_raft::state::{keys, StateError};
use berth_raft::StateRead;

/// The name a principal has as a grantee (users and robots), if any.
fn member_name(p: &Principal) -> Option<&str> {
    match p {
        Principal::User { name, .. } | Principal::Robot { name } => Some(name),
        Principal::App { owner, .. } => Some(owner),
        Principal::Anonymous | Principal::Operator => None,
    }
}

/// The teams of `org` the principal is in.
fn teams_in(state: &impl StateRead, p: &Principal, org: &str) -> Result<Vec<TeamRecord>, StateError> {
    let Some(name) = member_name(p) else { return Ok(Vec::new()) };
    Ok(state.scan::<TeamRecord>(&keys::teams_of(org))?.into_iter().filter(|t| t.members.contains(name)).collect())
}

/// The most a token's scopes allow on a repository.
fn scope_cap(p: &Principal) -> Option<Role> {
    match p {
        Principal::App { .. } => {
            if p.has_scope("repo:admin") {
                Some(Role::Admin)
            } else if p.has_scope("repo:write") {
                Some(Role::Write)
            } else if p.has_scope("repo:read") {
                Some(Role::Read)
            } else {
                None
            }
        }
        _ => Some(Role::Admin),
    }
}

/// Does the principal administer organization `org`?
pub fn is_org_admin(state: &impl StateRead, p: &Principal, org: &str) -> Result<bool, StateError> {
    if p.is_superuser() {
        return Ok(true);
    }
    if matches!(p, Principal::Robot { .. }) || !p.has_scope("org:admin") {
        return Ok(false);
    }
    Ok(teams_in(state, p, org)?.iter().any(|t| t.role == TeamRole::Admin))
}

/// Is the principal in any team of `org`?
pub fn is_org_member(state: &impl StateRead, p: &Principal, org: &str) -> Result<bool, StateError> {
    Ok(p.is_superuser() || !teams_in(state, p, org)?.is_empty())
}

/// The principal's role on repository `repo` (`rec`: its record, if it
/// exists). `None`: no access at all.
pub fn repo_role(state: &impl StateRead, p: &Principal, repo: &str, rec: Option<&RepositoryRecord>) -> Result<Option<Role>, StateError> {
    if p.is_superuser() {
        return Ok(Some(Role::Admin));
    }
    let public = rec.is_some_and(|r| r.public).then_some(Role::Read);
    let Some(cap) = scope_cap(p) else { return Ok(public) };
    let mut best: Option<Role> = None;
    if let Some(name) = member_name(p) {
        let ns = namespace_of(repo);
        if matches!(p, Principal::User { .. } | Principal::App { .. }) && ns == Some(name) {
            best = Some(Role::Admin);
        }
        if let Some(rec) = rec {
            best = best.max(rec.users.get(name).copied());
        }
        if let Some(ns) = ns {
            for team in teams_in(state, p, ns)? {
                if team.role == TeamRole::Admin && !matches!(p, Principal::Robot { .. }) {
                    best = Some(Role::Admin);
                }
                if let Some(rec) = rec {
                    best = best.max(rec.teams.get(&team.name).copied());
                }
            }
        }
    }
    Ok(best.map(|r| r.min(cap)).max(public))
}

/// May the principal create a repository named `repo`?
pub fn may_create(state: &impl StateRead, p: &Principal, repo: &str) -> Result<bool, StateError> {
    if p.is_superuser() {
        return Ok(true);
    }
    if !p.has_scope("repo:create") {
        return Ok(false);
    }
    let (Some(ns), Some(name)) = (namespace_of(repo), member_name(p)) else { return Ok(false) };
    if ns == name && !matches!(p, Principal::Robot { .. }) {
        return Ok(true);
    }
    Ok(teams_in(state, p, ns)?.iter().any(|t| t.role >= TeamRole::Creator))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use berth_raft::state::{keys, MemState};

    use super::*;

    fn user(n: &str) -> Principal {
        Principal::User { name: n.into(), superuser: false }
    }

    #[test]
    fn roles_combine_and_tokens_cap_them() {
        let s = MemState::default();
        let team = |name: &str, role, members: &[&str]| TeamRecord {
            org: "acme".into(),
            name: name.into(),
            role,
            description: String::new(),
            members: members.iter().map(|m| m.to_string()).collect::<BTreeSet<_>>(),
        };
        s.put(keys::team("acme", "owners"), &team("owners", TeamRole::Admin, &["olga"]));
        s.put(keys::team("acme", "devs"), &team("devs", TeamRole::Member, &["dan", "acme+ci"]));
        s.put(keys::team("acme", "builders"), &team("builders", TeamRole::Creator, &["cara"]));
        let mut rec = RepositoryRecord::new("acme/app", 0);
        rec.teams.insert("devs".into(), Role::Write);
        rec.users.insert("rita".into(), Role::Read);
        let r = Some(&rec);
        assert_eq!(repo_role(&s, &user("olga"), "acme/app", r).unwrap(), Some(Role::Admin));
        assert_eq!(repo_role(&s, &user("dan"), "acme/app", r).unwrap(), Some(Role::Write));
        assert_eq!(repo_role(&s, &Principal::Robot { name: "acme+ci".into() }, "acme/app", r).unwrap(), Some(Role::Write));
        assert_eq!(repo_role(&s, &user("rita"), "acme/app", r).unwrap(), Some(Role::Read));
        assert_eq!(repo_role(&s, &user("cara"), "acme/app", r).unwrap(), None);
        assert_eq!(repo_role(&s, &Principal::Anonymous, "acme/app", r).unwrap(), None);
        assert_eq!(repo_role(&s, &user("zed"), "zed/own", None).unwrap(), Some(Role::Admin));
        let app = |scopes: &[&str]| Principal::App {
            id: "t".into(),
            owner: "olga".into(),
            owner_superuser: false,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(repo_role(&s, &app(&["repo:read"]), "acme/app", r).unwrap(), Some(Role::Read));
        assert_eq!(repo_role(&s, &app(&["user:read"]), "acme/app", r).unwrap(), None);
        assert!(may_create(&s, &user("cara"), "acme/new").unwrap());
        assert!(!may_create(&s, &user("dan"), "acme/new").unwrap());
        assert!(!may_create(&s, &user("dan"), "single").unwrap());
        assert!(!may_create(&s, &app(&["repo:write"]), "acme/new").unwrap());
        assert!(may_create(&s, &app(&["repo:create"]), "acme/new").unwrap());
        rec.public = true;
        assert_eq!(repo_role(&s, &Principal::Anonymous, "acme/app", Some(&rec)).unwrap(), Some(Role::Read));
        assert!(is_org_admin(&s, &user("olga"), "acme").unwrap());
        assert!(!is_org_admin(&s, &user("dan"), "acme").unwrap());
    }
}
