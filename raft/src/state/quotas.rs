//! Namespace quotas: the quota record (`Q`), and while it exists the
//! namespace's exact usage: the bytes (`W`) of the distinct blobs its
//! manifests reference, with how many of its manifests reference each
//! (`V`). Every command that stores or forgets manifests updates them
//! through [`Usage`], in the same step; a manifest that would take the
//! usage over a Reject limit is refused there, so racing pushes through
//! different nodes cannot both get past it.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::Digest;

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

/// The quota of namespace `ns`, if it has one.
pub fn quota_of(state: &impl StateRead, ns: &str) -> Result<Option<QuotaRecord>, StateError> {
    state.get(&keys::quota(ns))
}

/// The id the cluster's default quota is shown with.
pub const DEFAULT_QUOTA_ID: &str = "default";

/// The cluster's default quota: a Reject limit at its size.
pub fn default_quota(state: &impl StateRead) -> Result<Option<QuotaRecord>, StateError> {
    Ok(state.get::<u64>(keys::DEFAULT_QUOTA)?.map(|limit_bytes| QuotaRecord {
        id: DEFAULT_QUOTA_ID.into(),
        limit_bytes,
        limits: vec![QuotaLimit { id: DEFAULT_QUOTA_ID.into(), kind: QuotaLimitKind::Reject, threshold_percent: 100 }],
    }))
}

/// The quota that governs namespace `ns`: its own, else the default.
pub fn effective_quota(state: &impl StateRead, ns: &str) -> Result<Option<QuotaRecord>, StateError> {
    match quota_of(state, ns)? {
        Some(q) => Ok(Some(q)),
        None => default_quota(state),
    }
}

/// The counted usage of namespace `ns` (0 without a quota).
pub fn usage_of(state: &impl StateRead, ns: &str) -> Result<u64, StateError> {
    Ok(state.get::<u64>(&keys::quota_usage(ns))?.unwrap_or(0))
}

/// Whether blob `digest` already counts in the usage of `ns`.
pub fn counted(state: &impl StateRead, ns: &str, digest: &Digest) -> Result<bool, StateError> {
    Ok(state.get::<u64>(&keys::quota_blob(ns, digest))?.is_some_and(|n| n > 0))
}

/// The distinct-blob bytes of `repo`'s manifests, counted now (for
/// showing a repository's share; the namespace's is kept).
pub fn repository_usage(state: &impl StateRead, repo: &str) -> Result<u64, StateError> {
    let mut blobs = BTreeSet::new();
    for m in state.scan::<ManifestRecord>(&keys::manifests_of(repo))? {
        blobs.extend(m.blobs);
    }
    let mut total = 0u64;
    for b in blobs {
        total = total.saturating_add(state.get::<BlobRecord>(&keys::blob(&b))?.map_or(0, |r| r.size));
    }
    Ok(total)
}

/// A namespace's usage as one command changes it.
pub(super) struct Usage {
    /// None: the namespace has no quota, and nothing is counted.
    ns: Option<String>,
    quota: Option<QuotaRecord>,
    before: u64,
    bytes: u64,
    counts: BTreeMap<Digest, u64>,
}

impl Usage {
    /// The usage of `repo`'s namespace.
    pub(super) fn of(state: &impl StateRead, repo: &str) -> Result<Usage, StateError> {
        let ns = namespace_of(repo).map(str::to_string);
        let quota = match &ns {
            Some(ns) => effective_quota(state, ns)?,
            None => None,
        };
        let bytes = match (&ns, &quota) {
            (Some(ns), Some(_)) => usage_of(state, ns)?,
            _ => 0,
        };
        Ok(Usage { ns: ns.filter(|_| quota.is_some()), quota, before: bytes, bytes, counts: BTreeMap::new() })
    }

    fn count(&mut self, state: &impl StateRead, d: &Digest) -> Result<&mut u64, StateError> {
        if !self.counts.contains_key(d) {
            let n = match &self.ns {
                Some(ns) => state.get::<u64>(&keys::quota_blob(ns, d))?.unwrap_or(0),
                None => 0,
            };
            self.counts.insert(d.clone(), n);
        }
        Ok(self.counts.get_mut(d).expect("inserted above"))
    }

    /// A manifest referencing `blobs` is stored.
    pub(super) fn add(&mut self, state: &impl StateRead, blobs: &[Digest]) -> Result<(), StateError> {
        if self.ns.is_none() {
            return Ok(());
        }
        for b in blobs.iter().collect::<BTreeSet<_>>() {
            let n = self.count(state, b)?;
            *n += 1;
            if *n == 1 {
                let size = state.get::<BlobRecord>(&keys::blob(b))?.map_or(0, |r| r.size);
                self.bytes = self.bytes.saturating_add(size);
            }
        }
        Ok(())
    }

    /// A manifest referencing `blobs` is forgotten.
    pub(super) fn remove(&mut self, state: &impl StateRead, blobs: &[Digest]) -> Result<(), StateError> {
        if self.ns.is_none() {
            return Ok(());
        }
        for b in blobs.iter().collect::<BTreeSet<_>>() {
            let n = self.count(state, b)?;
            if *n == 0 {
                continue;
            }
            *n -= 1;
            if *n == 0 {
                let size = state.get::<BlobRecord>(&keys::blob(b))?.map_or(0, |r| r.size);
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
        Ok(())
    }

    /// The refusal, when this command grows the usage past a Reject limit.
    pub(super) fn refusal(&self) -> Option<MetaResponse> {
        let limit = self.quota.as_ref()?.threshold(QuotaLimitKind::Reject)?;
        (self.bytes > self.before && self.bytes > limit).then(|| MetaResponse::QuotaExceeded { namespace: self.ns.clone().unwrap_or_default() })
    }

    pub(super) fn write(self, ch: &mut Changes) {
        let Some(ns) = self.ns else { return };
        for (d, n) in self.counts {
            if n == 0 {
                ch.delete(keys::quota_blob(&ns, &d));
            } else {
                ch.put(keys::quota_blob(&ns, &d), &n);
            }
        }
        ch.put(keys::quota_usage(&ns), &self.bytes);
    }
}

pub(super) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &QuotaCommand) -> Result<MetaResponse, StateError> {
    match cmd {
        QuotaCommand::Set { namespace, quota } => set(state, ch, namespace, quota.as_ref()),
        QuotaCommand::SetDefault { limit_bytes } => set_default(state, ch, *limit_bytes),
    }
}

/// Counts namespace `ns`'s usage from its manifests (a namespace that
/// starts being governed by a quota).
fn count_namespace(state: &impl StateRead, ch: &mut Changes, ns: &str) -> Result<(), StateError> {
    let mut counts: BTreeMap<Digest, u64> = BTreeMap::new();
    for (k, _) in state.scan_raw(&keys::repos_in(ns))? {
        let repo = String::from_utf8_lossy(&k[keys::REPO_PREFIX.len()..]).into_owned();
        for m in state.scan::<ManifestRecord>(&keys::manifests_of(&repo))? {
            for b in m.blobs.into_iter().collect::<BTreeSet<_>>() {
                *counts.entry(b).or_default() += 1;
            }
        }
    }
    let mut bytes = 0u64;
    for (d, n) in counts {
        bytes = bytes.saturating_add(state.get::<BlobRecord>(&keys::blob(&d))?.map_or(0, |r| r.size));
        ch.put(keys::quota_blob(ns, &d), &n);
    }
    ch.put(keys::quota_usage(ns), &bytes);
    Ok(())
}

/// Every namespace (organization or user) by name.
fn namespaces(state: &impl StateRead) -> Result<BTreeSet<String>, StateError> {
    let mut out = BTreeSet::new();
    for prefix in [keys::ORG_PREFIX, keys::USER_PREFIX] {
        for (k, _) in state.scan_raw(prefix)? {
            out.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
    }
    Ok(out)
}

fn set_default(state: &impl StateRead, ch: &mut Changes, limit_bytes: Option<u64>) -> Result<MetaResponse, StateError> {
    let had = state.get_raw(keys::DEFAULT_QUOTA)?.is_some();
    match limit_bytes {
        Some(0) => return Ok(MetaResponse::Refused("a quota needs a positive size".into())),
        Some(b) => {
            if !had {
                for ns in namespaces(state)? {
                    if quota_of(state, &ns)?.is_none() {
                        count_namespace(state, ch, &ns)?;
                    }
                }
            }
            ch.put(keys::DEFAULT_QUOTA.to_vec(), &b);
        }
        None => {
            if !had {
                return Ok(MetaResponse::NotFound);
            }
            for ns in namespaces(state)? {
                if quota_of(state, &ns)?.is_none() {
                    forget(state, ch, &ns)?;
                }
            }
            ch.delete(keys::DEFAULT_QUOTA.to_vec());
        }
    }
    Ok(MetaResponse::Done)
}

fn set(state: &impl StateRead, ch: &mut Changes, ns: &str, quota: Option<&QuotaRecord>) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::org(ns))?.is_none() && state.get_raw(&keys::user(ns))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    let existing = quota_of(state, ns)?;
    match quota {
        None => {
            if existing.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            if default_quota(state)?.is_some() {
                // Still governed, by the default: the counts stay.
                ch.delete(keys::quota(ns));
            } else {
                forget(state, ch, ns)?;
            }
        }
        Some(q) => {
            if q.limit_bytes == 0 || q.limits.iter().any(|l| !(1..=100).contains(&l.threshold_percent)) {
                return Ok(MetaResponse::Refused("a quota needs a positive size and limits of 1 to 100 percent".into()));
            }
            if existing.is_none() && default_quota(state)?.is_none() {
                // The first quota governing it: count what the namespace holds now.
                count_namespace(state, ch, ns)?;
            }
            ch.put(keys::quota(ns), q);
        }
    }
    Ok(MetaResponse::Done)
}

/// A namespace's quota and counts go (with the quota, or with the namespace).
pub(super) fn forget(state: &impl StateRead, ch: &mut Changes, ns: &str) -> Result<(), StateError> {
    ch.delete(keys::quota(ns));
    ch.delete(keys::quota_usage(ns));
    for (k, _) in state.scan_raw(&keys::quota_blobs_of(ns))? {
        ch.delete(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    /// `ns/r` with blobs a (8 bytes), b (4), c (1), e (1) linked.
    fn state() -> MemState {
        let s = MemState::default();
        let org = OrgRecord { name: "ns".into(), email: None, created_at_ms: 0 };
        s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None }));
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("ns/r", 0))));
        for (b, size) in [("a", 8), ("b", 4), ("c", 1), ("e", 1)] {
            s.run(MetaCommand::LinkBlob { repo: "ns/r".into(), digest: d(b), size, node: 1, now_ms: 0 });
        }
        s
    }

    fn put(s: &MemState, name: &str, blobs: &[&str]) -> MetaResponse {
        let record = ManifestRecord {
            repo: "ns/r".into(),
            digest: d(name),
            media_type: "m".into(),
            bytes: vec![],
            blobs: blobs.iter().map(|b| d(b)).collect(),
            children: vec![],
            subject: None,
            pushed_at_ms: 0,
        };
        s.run(MetaCommand::PutManifest { record, tag: Some(name.into()) })
    }

    fn quota(s: &MemState, q: Option<QuotaRecord>) -> MetaResponse {
        s.run(MetaCommand::Quota(QuotaCommand::Set { namespace: "ns".into(), quota: q }))
    }

    fn ten(reject: u8) -> QuotaRecord {
        QuotaRecord { id: "q".into(), limit_bytes: 10, limits: vec![QuotaLimit { id: "l".into(), kind: QuotaLimitKind::Reject, threshold_percent: reject }] }
    }

    #[test]
    fn usage_is_exact_and_a_reject_limit_refuses_in_the_command() {
        let s = state();
        assert_eq!(put(&s, "m0", &["c"]), MetaResponse::Done, "before any quota");
        assert_eq!(
            quota(&s, Some(QuotaRecord { limit_bytes: 0, ..ten(100) })),
            MetaResponse::Refused("a quota needs a positive size and limits of 1 to 100 percent".into())
        );
        assert!(matches!(quota(&s, Some(ten(0))), MetaResponse::Refused(_)));
        assert_eq!(s.run(MetaCommand::Quota(QuotaCommand::Set { namespace: "nobody".into(), quota: Some(ten(100)) })), MetaResponse::NotFound);
        assert_eq!(quota(&s, Some(ten(100))), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 1, "counted from what was there");
        assert_eq!(put(&s, "m1", &["a", "c", "a"]), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 9, "a once, c once");
        assert_eq!(put(&s, "m2", &["a", "e"]), MetaResponse::Done, "exactly at the limit");
        assert_eq!(usage_of(&s, "ns").unwrap(), 10);
        let before = s.scan_raw(b"").unwrap();
        assert_eq!(put(&s, "m3", &["b"]), MetaResponse::QuotaExceeded { namespace: "ns".into() });
        assert_eq!(s.scan_raw(b"").unwrap(), before, "the refused push stored nothing, not even its tag");
        assert_eq!(put(&s, "m4", &["a", "c"]), MetaResponse::Done, "nothing new: it adds no bytes");
        // Forgetting manifests lowers it once nothing references a blob.
        assert_eq!(s.run(MetaCommand::DeleteManifestAt { repo: "ns/r".into(), digest: d("m1"), now_ms: 1 }), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 10, "a, c and e are still referenced");
        assert_eq!(s.run(MetaCommand::DeleteManifestAt { repo: "ns/r".into(), digest: d("m2"), now_ms: 1 }), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 9, "e went");
        assert_eq!(repository_usage(&s, "ns/r").unwrap(), 9);
        // A lower limit refuses growth, not what adds nothing.
        assert_eq!(quota(&s, Some(ten(50))), MetaResponse::Done);
        assert_eq!(put(&s, "m5", &["c"]), MetaResponse::Done);
        assert_eq!(put(&s, "m6", &["e"]), MetaResponse::QuotaExceeded { namespace: "ns".into() });
        // Removed and set again: counted afresh.
        assert_eq!(quota(&s, None), MetaResponse::Done);
        assert_eq!(quota(&s, None), MetaResponse::NotFound);
        assert!(s.scan_raw(&keys::quota_blobs_of("ns")).unwrap().is_empty() && s.get_raw(&keys::quota_usage("ns")).unwrap().is_none());
        assert_eq!(put(&s, "m6", &["e"]), MetaResponse::Done, "no quota, no limit");
        assert_eq!(quota(&s, Some(ten(100))), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 10);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "ns/r".into() })), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 0, "a deleted repository's manifests leave the usage");
    }

    #[test]
    fn the_default_quota_governs_namespaces_without_one() {
        let s = state();
        assert_eq!(put(&s, "m1", &["a"]), MetaResponse::Done);
        let default = |b| s.run(MetaCommand::Quota(QuotaCommand::SetDefault { limit_bytes: b }));
        assert_eq!(default(None), MetaResponse::NotFound);
        assert!(matches!(default(Some(0)), MetaResponse::Refused(_)));
        assert_eq!(default(Some(10)), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 8, "counted when the default came");
        assert_eq!(put(&s, "m2", &["b"]), MetaResponse::QuotaExceeded { namespace: "ns".into() });
        // Its own quota overrides the default; removing it falls back, counts kept.
        assert_eq!(quota(&s, Some(QuotaRecord { limit_bytes: 100, ..ten(100) })), MetaResponse::Done);
        assert_eq!(put(&s, "m2", &["b"]), MetaResponse::Done);
        assert_eq!(quota(&s, None), MetaResponse::Done);
        assert_eq!(usage_of(&s, "ns").unwrap(), 12);
        assert_eq!(put(&s, "m3", &["c"]), MetaResponse::QuotaExceeded { namespace: "ns".into() });
        assert_eq!(default(None), MetaResponse::Done);
        assert!(s.get_raw(&keys::quota_usage("ns")).unwrap().is_none(), "no quota governs it: nothing counted");
        assert_eq!(put(&s, "m3", &["c"]), MetaResponse::Done);
    }
}
