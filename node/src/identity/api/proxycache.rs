//! Proxy-cache organizations on Quay's path. The caller administers the
//! organization; the rules that must hold under races (a configuration
//! exists once, only the fill writes into the organization) are the state
//! machine's (`berth_raft::state::proxycache`). Every refusal here happens
//! before any write: a bad request changes nothing.

use berth_gateway::identity::{ProxyCacheRequest, ProxyCacheView};
use berth_raft::proxycache::DEFAULT_EXPIRATION_S;
use berth_raft::state::proxycache as rules;
use berth_raft::{ProxyCacheCommand, ProxyCacheConfig};

use super::*;

fn view(c: &ProxyCacheConfig) -> ProxyCacheView {
    ProxyCacheView {
        upstream_registry: c.upstream_registry.clone(),
        upstream_registry_username: c.username.clone(),
        expiration_s: c.expiration_s,
        insecure: c.insecure,
    }
}

/// `host[:port]`, optionally followed by `/path` (a prefix of the
/// upstream's repositories).
pub(crate) fn check_upstream(r: &str) -> Result<(), crate::mirror_config::ConfigError> {
    let bad = |why: &'static str| Err(crate::mirror_config::ConfigError::Upstream { upstream: r.to_string(), why });
    if r.contains("://") {
        return bad("no scheme");
    }
    let (host, path) = match r.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Err(why) = crate::mirror_config::check_host_port(host) {
        return bad(why);
    }
    if let Some(p) = path {
        if p.contains('@') || p.contains(':') || p.parse::<berth_common::RepoName>().is_err() {
            return bad("bad path");
        }
    }
    Ok(())
}

impl NodeIdentity {
    fn proxy_cache_of(&self, org: &str) -> Result<ProxyCacheConfig, ApiError> {
        rules::config(&self.state(), org).map_err(state_err)?.ok_or_else(|| not_found(format!("organization {org} is not a proxy cache")))
    }

    pub(super) async fn proxy_cache_view(&self, who: &Access, org: &str) -> Result<ProxyCacheView, ApiError> {
        require_scope(who, "org:admin", "see an organization's proxy cache")?;
        self.require_org_admin(who, org)?;
        Ok(view(&self.proxy_cache_of(org)?))
    }

    /// The configuration `req` makes, checked whole before anything is written.
    fn proxy_cache_config(&self, org: &str, req: ProxyCacheRequest) -> Result<ProxyCacheConfig, ApiError> {
        let upstream_registry =
            req.upstream_registry.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).ok_or_else(|| bad("upstream_registry is required"))?;
        check_upstream(&upstream_registry).map_err(|e| bad(e.to_string()))?;
        let username = req.upstream_registry_username.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let password = req.upstream_registry_password.filter(|p| !p.is_empty());
        if password.is_some() && username.is_none() {
            return Err(bad("upstream_registry_password needs upstream_registry_username"));
        }
        let expiration_s = match req.expiration_s {
            None => DEFAULT_EXPIRATION_S,
            Some(e) if e < 1 => return Err(bad(format!("expiration_s must be a positive number of seconds, not {e}"))),
            Some(e) => e as u64,
        };
        let sealed_password = match password {
            Some(p) => Some(
                crate::mirror_config::seal(&self.state(), &crate::mirror_config::proxy_cache_seal_scope(org), &p)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
            ),
            None => None,
        };
        Ok(ProxyCacheConfig { upstream_registry, username, sealed_password, expiration_s, insecure: req.insecure.unwrap_or(false), created_at_ms: now_ms() })
    }

    pub(super) async fn proxy_cache_put(&self, who: &Access, org: &str, req: ProxyCacheRequest) -> Result<ProxyCacheView, ApiError> {
        require_scope(who, "org:admin", "configure an organization's proxy cache")?;
        self.require_org_admin(who, org)?;
        if rules::config(&self.state(), org).map_err(state_err)?.is_some() {
            return Err(bad(format!("organization {org} is a proxy cache already: delete its configuration first")));
        }
        let config = self.proxy_cache_config(org, req)?;
        let upstream = config.upstream_registry.clone();
        match self
            .meta
            .write(actor_of(&who.principal), MetaCommand::ProxyCache(ProxyCacheCommand::Put { org: org.to_string(), config }))
            .await
            .map_err(meta_err)?
        {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("no organization {org}"))),
            MetaResponse::Refused(why) => return Err(bad(why)),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, "create_proxy_cache_config", Some(org), None, vec![("upstream_registry", upstream)]).await;
        Ok(view(&self.proxy_cache_of(org)?))
    }

    pub(super) async fn proxy_cache_delete(&self, who: &Access, org: &str) -> Result<(), ApiError> {
        require_scope(who, "org:admin", "remove an organization's proxy cache")?;
        self.require_org_admin(who, org)?;
        let old = self.proxy_cache_of(org)?;
        match self.meta.write(actor_of(&who.principal), MetaCommand::ProxyCache(ProxyCacheCommand::Delete { org: org.to_string() })).await.map_err(meta_err)? {
            MetaResponse::Done => {}
            MetaResponse::NotFound => return Err(not_found(format!("organization {org} is not a proxy cache"))),
            other => return Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
        self.log(who, "delete_proxy_cache_config", Some(org), None, vec![("upstream_registry", old.upstream_registry)]).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_upstream;

    #[test]
    fn upstreams() {
        for ok in ["localhost:5000", "quay.io", "quay.io/org", "127.0.0.1:5000/a/b"] {
            assert!(check_upstream(ok).is_ok(), "{ok}");
        }
        for bad in ["", "https://quay.io", "host:port", "quay.io/Org", "quay.io/a:1", "bad host"] {
            assert!(check_upstream(bad).is_err(), "{bad}");
        }
    }
}
