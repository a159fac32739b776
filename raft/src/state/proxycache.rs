//! The rules of proxy-cache organizations (records and commands in
//! [`crate::proxycache`]).
//!
//! Keys: `B` + org holds an organization's [`ProxyCacheConfig`]; `H` +
//! repo + `\0` + reference the [`FetchRecord`] of one cached reference.
//!
//! [`guard`] runs before every content write is applied (see
//! `state::apply`): a proxy-cache organization takes content only from
//! the fill ([`ProxyCacheCommand::Fill`]), so no push races past a
//! configuration made a moment before.

use super::{Changes, StateError, StateRead};
use crate::command::*;
use crate::proxycache::{FetchLease, FetchRecord};

pub const CONFIG_PREFIX: &[u8] = b"B";
pub const FETCH_PREFIX: &[u8] = b"H";

pub fn config_key(org: &str) -> Vec<u8> {
    let mut k = CONFIG_PREFIX.to_vec();
    k.extend_from_slice(org.as_bytes());
    k
}

pub fn fetch_key(repo: &str, reference: &str) -> Vec<u8> {
    let mut k = FETCH_PREFIX.to_vec();
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k.extend_from_slice(reference.as_bytes());
    k
}

fn fetches_of(repo: &str) -> Vec<u8> {
    let mut k = FETCH_PREFIX.to_vec();
    k.extend_from_slice(repo.as_bytes());
    k.push(0);
    k
}

/// The proxy-cache configuration of `org`, if it is one.
pub fn config(state: &impl StateRead, org: &str) -> Result<Option<ProxyCacheConfig>, StateError> {
    state.get::<ProxyCacheConfig>(&config_key(org))
}

/// The proxy-cache configuration of the organization `repo` is in.
pub fn config_of_repo(state: &impl StateRead, repo: &str) -> Result<Option<ProxyCacheConfig>, StateError> {
    match namespace_of(repo) {
        Some(org) => config(state, org),
        None => Ok(None),
    }
}

pub fn fetch(state: &impl StateRead, repo: &str, reference: &str) -> Result<FetchRecord, StateError> {
    Ok(state.get::<FetchRecord>(&fetch_key(repo, reference))?.unwrap_or_default())
}

/// The words a refused write into a proxy-cache organization carries.
pub fn refusal(org: &str, upstream: &str) -> String {
    format!("organization {org} is a proxy cache of {upstream}: pushes, tag changes and deletes are refused")
}

/// The refusal of `cmd` by its organization's proxy cache, unless the
/// fill makes it (`fill`); `None` when allowed.
pub(super) fn guard(state: &impl StateRead, cmd: &MetaCommand, fill: bool) -> Result<Option<MetaResponse>, StateError> {
    if fill {
        return Ok(None);
    }
    let Some(repo) = super::mirror::content_repo(cmd) else { return Ok(None) };
    let Some(org) = namespace_of(repo) else { return Ok(None) };
    Ok(config(state, org)?.map(|c| MetaResponse::ProxyCache { org: org.to_string(), upstream: c.upstream_registry }))
}

/// Drops a deleted repository's fetch records.
pub(super) fn forget_repository(state: &impl StateRead, ch: &mut Changes, repo: &str) -> Result<(), StateError> {
    for (k, _) in state.scan_raw(&fetches_of(repo))? {
        ch.delete(k);
    }
    Ok(())
}

pub(super) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &ProxyCacheCommand) -> Result<MetaResponse, StateError> {
    match cmd {
        ProxyCacheCommand::Put { org, config: c } => {
            if state.get_raw(&super::keys::org(org))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            if config(state, org)?.is_some() {
                return Ok(MetaResponse::Refused(format!("organization {org} is a proxy cache already: delete its configuration first")));
            }
            ch.put(config_key(org), c);
            Ok(MetaResponse::Done)
        }
        ProxyCacheCommand::Delete { org } => {
            if config(state, org)?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            ch.delete(config_key(org));
            Ok(MetaResponse::Done)
        }
        ProxyCacheCommand::AcquireFetch { repo, reference, node, now_ms, until_ms } => {
            if config_of_repo(state, repo)?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            let mut rec = fetch(state, repo, reference)?;
            if rec.lease.as_ref().is_some_and(|l| l.until_ms > *now_ms) {
                return Ok(MetaResponse::Refused("another fetch of this reference is running".into()));
            }
            rec.lease = Some(FetchLease { node: *node, until_ms: *until_ms });
            ch.put(fetch_key(repo, reference), &rec);
            Ok(MetaResponse::Done)
        }
        ProxyCacheCommand::FinishFetch { repo, reference, node, now_ms, error } => {
            let mut rec = fetch(state, repo, reference)?;
            if rec.lease.as_ref().map(|l| l.node) != Some(*node) {
                return Ok(MetaResponse::Refused("the fetch lease is not this node's any more".into()));
            }
            rec.lease = None;
            match error {
                None => {
                    rec.checked_ms = Some(*now_ms);
                    rec.failed = None;
                }
                Some(why) => rec.failed = Some((*now_ms, why.clone())),
            }
            ch.put(fetch_key(repo, reference), &rec);
            Ok(MetaResponse::Done)
        }
        ProxyCacheCommand::RenewFetch { repo, reference, node, until_ms } => {
            let mut rec = fetch(state, repo, reference)?;
            match &mut rec.lease {
                Some(l) if l.node == *node => l.until_ms = l.until_ms.max(*until_ms),
                _ => return Ok(MetaResponse::Refused("the fetch lease is not this node's any more".into())),
            }
            ch.put(fetch_key(repo, reference), &rec);
            Ok(MetaResponse::Done)
        }
        ProxyCacheCommand::Fill(_) => unreachable!("unwrapped in state::apply"),
    }
}

#[cfg(test)]
mod tests {
    use berth_common::Digest;

    use super::*;
    use crate::state::MemState;

    fn setup() -> MemState {
        let s = MemState::default();
        let org = OrgRecord { name: "cache".into(), email: None, created_at_ms: 0 };
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: Some("admin".into()) })), MetaResponse::Done);
        s
    }

    fn cfg() -> ProxyCacheConfig {
        ProxyCacheConfig {
            upstream_registry: "localhost:5000".into(),
            username: None,
            sealed_password: None,
            expiration_s: 60,
            insecure: true,
            created_at_ms: 0,
        }
    }

    fn link(repo: &str) -> MetaCommand {
        MetaCommand::LinkBlob { repo: repo.into(), digest: Digest::sha256_of(b"b"), size: 1, node: 1, now_ms: 1 }
    }

    fn pc(cmd: ProxyCacheCommand) -> MetaCommand {
        MetaCommand::ProxyCache(cmd)
    }

    /// A proxy-cache organization takes content from its fill only.
    #[test]
    fn only_the_fill_writes_into_a_proxy_cache() {
        let s = setup();
        assert_eq!(s.run(pc(ProxyCacheCommand::Put { org: "nope".into(), config: cfg() })), MetaResponse::NotFound);
        assert_eq!(s.run(pc(ProxyCacheCommand::Put { org: "cache".into(), config: cfg() })), MetaResponse::Done);
        assert!(matches!(s.run(pc(ProxyCacheCommand::Put { org: "cache".into(), config: cfg() })), MetaResponse::Refused(_)));
        let refused = MetaResponse::ProxyCache { org: "cache".into(), upstream: cfg().upstream_registry };
        assert_eq!(s.run(link("cache/library/alpine")), refused);
        let as_robot = MetaCommand::AsRobot { robot: "cache+r".into(), cmd: Box::new(link("cache/library/alpine")) };
        assert_eq!(s.run(as_robot), refused, "a robot neither");
        assert_eq!(s.run(pc(ProxyCacheCommand::Fill(Box::new(link("cache/library/alpine"))))), MetaResponse::Done);
        assert_eq!(s.run(pc(ProxyCacheCommand::Delete { org: "cache".into() })), MetaResponse::Done);
        assert_eq!(s.run(link("cache/library/alpine")), MetaResponse::Done, "an ordinary organization again");
    }

    /// One fetch of a reference at a time, cluster-wide; a lapsed lease is
    /// taken over; the holder's finish records the confirmation.
    #[test]
    fn fetch_leases() {
        let s = setup();
        assert_eq!(s.run(pc(ProxyCacheCommand::Put { org: "cache".into(), config: cfg() })), MetaResponse::Done);
        let acquire =
            |node, now_ms| s.run(pc(ProxyCacheCommand::AcquireFetch { repo: "cache/a".into(), reference: "1".into(), node, now_ms, until_ms: now_ms + 100 }));
        assert_eq!(acquire(1, 0), MetaResponse::Done);
        assert!(matches!(acquire(1, 50), MetaResponse::Refused(_)), "not twice, not even by the holder");
        assert!(matches!(acquire(2, 50), MetaResponse::Refused(_)));
        assert_eq!(acquire(2, 101), MetaResponse::Done, "taken over after it lapsed");
        let renew = |node, until_ms| s.run(pc(ProxyCacheCommand::RenewFetch { repo: "cache/a".into(), reference: "1".into(), node, until_ms }));
        assert!(matches!(renew(1, 500), MetaResponse::Refused(_)), "the old holder renews nothing");
        assert_eq!(renew(2, 400), MetaResponse::Done);
        assert!(matches!(acquire(1, 300), MetaResponse::Refused(_)), "renewed past 201");
        let finish = |node, error: Option<&str>| {
            s.run(pc(ProxyCacheCommand::FinishFetch { repo: "cache/a".into(), reference: "1".into(), node, now_ms: 150, error: error.map(str::to_string) }))
        };
        assert!(matches!(finish(1, None), MetaResponse::Refused(_)), "the old holder's finish changes nothing");
        assert_eq!(finish(2, None), MetaResponse::Done);
        let rec = fetch(&s, "cache/a", "1").unwrap();
        assert_eq!((rec.lease, rec.checked_ms), (None, Some(150)));
        assert!(matches!(
            s.run(pc(ProxyCacheCommand::AcquireFetch { repo: "other/a".into(), reference: "1".into(), node: 1, now_ms: 0, until_ms: 1 })),
            MetaResponse::NotFound
        ));
    }
}
