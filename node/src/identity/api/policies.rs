//! Tag policies of a namespace or repository on Quay's paths: who may
//! see and change them (the namespace's or repository's administrators),
//! the bodies' checks, and the usage log. What the policies do is the
//! state machine's (`berth_raft::state::tag_policies`).

use berth_raft::command::{AutoPrunePolicyRecord, ImmutabilityPolicyRecord, PruneMethod, TagCommand, TagPattern};
use berth_raft::state::tag_policies::{self, compile};

use super::*;
use crate::util::parse_lifetime_s;

/// The scope's name as the state keys it.
fn scope_name(scope: &PolicyScope) -> &str {
    match scope {
        PolicyScope::Namespace(ns) | PolicyScope::Repository(ns) => ns,
    }
}

/// A new policy id, shaped as a UUID.
fn new_uuid() -> String {
    let h = crate::util::random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn pattern(p: &str, matches: bool) -> Result<TagPattern, ApiError> {
    compile(p).map_err(|e| bad(e.to_string()))?;
    Ok(TagPattern { pattern: p.to_string(), matches })
}

fn immutability_view(p: ImmutabilityPolicyRecord) -> ImmutabilityPolicyView {
    ImmutabilityPolicyView { uuid: p.uuid, tag_pattern: p.pattern.pattern, tag_pattern_matches: p.pattern.matches }
}

fn autoprune_view(p: AutoPrunePolicyRecord) -> AutoPrunePolicyView {
    let (method, value) = match p.method {
        PruneMethod::NumberOfTags(n) => ("number_of_tags", n),
        PruneMethod::CreationDate(s) => ("creation_date", s),
    };
    AutoPrunePolicyView {
        uuid: p.uuid,
        method: method.into(),
        value,
        tag_pattern_matches: p.pattern.as_ref().is_none_or(|t| t.matches),
        tag_pattern: p.pattern.map(|t| t.pattern),
    }
}

/// An auto-prune body as a method and an optional pattern.
fn prune_rule(req: &AutoPrunePolicyBody) -> Result<(PruneMethod, Option<TagPattern>), ApiError> {
    let method = match req.method.as_str() {
        "number_of_tags" => {
            let n = req.value.as_u64().or_else(|| req.value.as_str().and_then(|s| s.trim().parse().ok()));
            PruneMethod::NumberOfTags(n.filter(|n| *n > 0).ok_or_else(|| bad(format!("number_of_tags needs a positive integer value, not {}", req.value)))?)
        }
        "creation_date" => {
            let s = req.value.as_u64().or_else(|| req.value.as_str().and_then(parse_lifetime_s));
            PruneMethod::CreationDate(
                s.filter(|s| *s > 0).ok_or_else(|| bad(format!("creation_date needs a positive age (7d, 12h, … or seconds), not {}", req.value)))?,
            )
        }
        m => return Err(bad(format!("method {m:?} is not number_of_tags or creation_date"))),
    };
    let pattern = match (&req.tag_pattern, req.tag_pattern_matches) {
        (Some(p), matches) => Some(pattern(p, matches.unwrap_or(true))?),
        (None, Some(_)) => return Err(bad("tagPatternMatches needs a tagPattern")),
        (None, None) => None,
    };
    Ok((method, pattern))
}

impl NodeIdentity {
    /// A record as this node has it, or, when it has none, as it is once
    /// this node caught up with the leader: a policy created through
    /// another node a moment ago is found.
    pub(super) async fn fresh_record<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ApiError> {
        if let Some(v) = self.state().get(key).map_err(state_err)? {
            return Ok(Some(v));
        }
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; answering from local state");
        }
        self.state().get(key).map_err(state_err)
    }

    /// The caller administers `scope`: an organization's admin, the user
    /// of a user namespace, a repository's admin, or a superuser.
    fn require_scope_admin(&self, who: &Access, scope: &PolicyScope) -> Result<(), ApiError> {
        match scope {
            PolicyScope::Repository(repo) => self.repo_with(who, repo, Role::Admin).map(|_| ()),
            PolicyScope::Namespace(ns) => {
                if self.state().get_raw(&keys::org(ns)).map_err(state_err)?.is_some() {
                    return self.require_org_admin(who, ns);
                }
                let is_user = self.user_record(ns)?.is_some();
                let own = matches!(&who.principal, Principal::User { name, .. } | Principal::App { owner: name, .. } if name == ns);
                match (is_user, own || who.principal.is_superuser()) {
                    (true, true) => Ok(()),
                    (true, false) => Err(denied(&who.principal, &format!("administer namespace {ns}"))),
                    (false, _) => Err(not_found(format!("no organization or user {ns}"))),
                }
            }
        }
    }

    async fn policy_write(&self, who: &Access, scope: &PolicyScope, cmd: TagCommand, kind: &str, uuid: &str) -> Result<(), ApiError> {
        match self.meta.write(actor_of(&who.principal), MetaCommand::Tag(cmd)).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("no policy {uuid} of {}", scope_name(scope)))),
            MetaResponse::Refused(why) => return Err(bad(why)),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        let name = scope_name(scope);
        let repo = matches!(scope, PolicyScope::Repository(_)).then_some(name);
        self.log(who, kind, namespace_of(name).or(Some(name)), repo, vec![("uuid", uuid.to_string())]).await;
        Ok(())
    }

    pub(super) async fn list_immutability(&self, who: &Access, scope: &PolicyScope) -> Result<ImmutabilityPolicyList, ApiError> {
        self.require_scope_admin(who, scope)?;
        let policies = tag_policies::immutability_policies(&self.state(), scope_name(scope)).map_err(state_err)?;
        Ok(ImmutabilityPolicyList { policies: policies.into_iter().map(immutability_view).collect() })
    }

    pub(super) async fn get_immutability(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<ImmutabilityPolicyView, ApiError> {
        self.require_scope_admin(who, scope)?;
        let rec: Option<ImmutabilityPolicyRecord> = self.fresh_record(&keys::immutability_policy(scope_name(scope), uuid)).await?;
        rec.map(immutability_view).ok_or_else(|| not_found(format!("no immutability policy {uuid}")))
    }

    pub(super) async fn put_immutability(
        &self,
        who: &Access,
        scope: &PolicyScope,
        uuid: Option<&str>,
        req: ImmutabilityPolicyBody,
    ) -> Result<ImmutabilityPolicyView, ApiError> {
        let pattern = pattern(&req.tag_pattern, req.tag_pattern_matches)?;
        self.require_scope_admin(who, scope)?;
        let (uuid, kind) = match uuid {
            Some(u) => {
                self.get_immutability(who, scope, u).await?;
                (u.to_string(), "update_immutability_policy")
            }
            None => (new_uuid(), "create_immutability_policy"),
        };
        let policy = ImmutabilityPolicyRecord { uuid: uuid.clone(), pattern };
        let cmd = TagCommand::PutImmutabilityPolicy { scope: scope_name(scope).to_string(), policy: policy.clone(), now_ms: now_ms() };
        self.policy_write(who, scope, cmd, kind, &uuid).await?;
        Ok(immutability_view(policy))
    }

    pub(super) async fn delete_immutability(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<(), ApiError> {
        self.require_scope_admin(who, scope)?;
        let cmd = TagCommand::DeleteImmutabilityPolicy { scope: scope_name(scope).to_string(), uuid: uuid.to_string() };
        self.policy_write(who, scope, cmd, "delete_immutability_policy", uuid).await
    }

    pub(super) async fn list_autoprune(&self, who: &Access, scope: &PolicyScope) -> Result<AutoPrunePolicyList, ApiError> {
        self.require_scope_admin(who, scope)?;
        let policies = tag_policies::autoprune_policies(&self.state(), scope_name(scope)).map_err(state_err)?;
        Ok(AutoPrunePolicyList { policies: policies.into_iter().map(autoprune_view).collect() })
    }

    pub(super) async fn get_autoprune(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<AutoPrunePolicyView, ApiError> {
        self.require_scope_admin(who, scope)?;
        let rec: Option<AutoPrunePolicyRecord> = self.fresh_record(&keys::autoprune_policy(scope_name(scope), uuid)).await?;
        rec.map(autoprune_view).ok_or_else(|| not_found(format!("no auto-prune policy {uuid}")))
    }

    pub(super) async fn put_autoprune(
        &self,
        who: &Access,
        scope: &PolicyScope,
        uuid: Option<&str>,
        req: AutoPrunePolicyBody,
    ) -> Result<AutoPrunePolicyView, ApiError> {
        let (method, pattern) = prune_rule(&req)?;
        self.require_scope_admin(who, scope)?;
        let (uuid, kind) = match uuid {
            Some(u) => {
                self.get_autoprune(who, scope, u).await?;
                (u.to_string(), "update_autoprune_policy")
            }
            None => (new_uuid(), "create_autoprune_policy"),
        };
        let policy = AutoPrunePolicyRecord { uuid: uuid.clone(), method, pattern };
        let cmd = TagCommand::PutAutoPrunePolicy { scope: scope_name(scope).to_string(), policy: policy.clone() };
        self.policy_write(who, scope, cmd, kind, &uuid).await?;
        Ok(autoprune_view(policy))
    }

    pub(super) async fn delete_autoprune(&self, who: &Access, scope: &PolicyScope, uuid: &str) -> Result<(), ApiError> {
        self.require_scope_admin(who, scope)?;
        let cmd = TagCommand::DeleteAutoPrunePolicy { scope: scope_name(scope).to_string(), uuid: uuid.to_string() };
        self.policy_write(who, scope, cmd, "delete_autoprune_policy", uuid).await
    }
}
