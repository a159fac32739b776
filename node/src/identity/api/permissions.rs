//! A repository's permissions on Quay's paths: the role of a user (or
//! robot) or of a team on it. The caller administers the repository.

use super::*;

impl NodeIdentity {
    pub(super) async fn list_repo_permissions(&self, who: &Access, repo: &str, kind: GranteeKind) -> Result<PermissionList, ApiError> {
        let (rec, _) = self.repo_with(who, repo, Role::Admin)?;
        let map = match kind {
            GranteeKind::User => &rec.users,
            GranteeKind::Team => &rec.teams,
        };
        let permissions = map
            .iter()
            .map(|(n, r)| {
                let is_robot = (kind == GranteeKind::User).then(|| n.contains('+'));
                (n.clone(), PermissionView { name: n.clone(), role: r.as_str().into(), is_robot })
            })
            .collect();
        Ok(PermissionList { permissions })
    }

    pub(super) async fn set_repo_permission(
        &self,
        who: &Access,
        repo: &str,
        kind: GranteeKind,
        name: &str,
        role: Option<&str>,
    ) -> Result<Option<PermissionView>, ApiError> {
        self.repo_with(who, repo, Role::Admin)?;
        let parsed = match role {
            None => None,
            Some(r) => Some(Role::parse(r).ok_or_else(|| bad(format!("role {r:?} is not read, write or admin")))?),
        };
        let grantee = match kind {
            GranteeKind::User => Grantee::User(name.to_string()),
            GranteeKind::Team => Grantee::Team(name.to_string()),
        };
        let missing = || match (kind, parsed) {
            (_, None) => format!("{name} has no permission on {repo}"),
            (GranteeKind::User, _) => format!("no user or robot {name}"),
            (GranteeKind::Team, _) => format!("no team {name} in the repository's organization"),
        };
        self.write(who, IdentityCommand::SetPermission { repo: repo.to_string(), grantee, role: parsed }, missing).await?;
        let (log_kind, what) = match (kind, parsed) {
            (GranteeKind::User, Some(_)) => ("change_repo_permission", "user"),
            (GranteeKind::Team, Some(_)) => ("change_repo_permission", "team"),
            (GranteeKind::User, None) => ("delete_repo_permission", "user"),
            (GranteeKind::Team, None) => ("delete_repo_permission", "team"),
        };
        let mut meta = vec![(what, name.to_string())];
        if let Some(r) = parsed {
            meta.push(("role", r.as_str().to_string()));
        }
        self.log(who, log_kind, namespace_of(repo), Some(repo), meta).await;
        Ok(parsed.map(|r| PermissionView {
            name: name.to_string(),
            role: r.as_str().into(),
            is_robot: (kind == GranteeKind::User).then(|| name.contains('+')),
        }))
    }
}
