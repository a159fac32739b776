//! Policies over a namespace's or a repository's tags: immutability
//! policies (names that lock a tag) and auto-prune policies (which tags
//! the lifecycle worker deletes).
//!
//! A policy's scope is a namespace (`ns`) or a repository (`ns/name`);
//! a repository is covered by its own policies and its namespace's. Both
//! kinds are applied inside the commands that write tags: a pushed tag
//! whose name an immutability policy covers is locked in the push's own
//! command, and an `AutoPrune` re-selects its tags when applied, so no
//! race between nodes gets a tag past either.

use std::collections::BTreeSet;

pub use super::policy_rules::{autoprune_policies, compile, immutability_policies};
use super::policy_rules::{covers, scopes_of};
use super::{decode, keys, tags, Changes, StateError, StateRead};
use crate::command::*;

/// Whether `scope` names a namespace (a user or an organization) or a
/// repository that exists.
fn scope_exists(state: &impl StateRead, scope: &str) -> Result<bool, StateError> {
    if scope.contains('/') {
        return Ok(state.get_raw(&keys::repo(scope))?.is_some());
    }
    Ok(state.get_raw(&keys::org(scope))?.is_some() || state.get_raw(&keys::user(scope))?.is_some())
}

/// The repositories `scope` covers.
fn repos_of_scope(state: &impl StateRead, scope: &str) -> Result<Vec<String>, StateError> {
    if scope.contains('/') {
        return Ok(vec![scope.to_string()]);
    }
    let prefix = keys::repos_in(scope);
    Ok(state.scan_raw(&prefix)?.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[keys::REPO_PREFIX.len()..]).into_owned()).collect())
}

pub(super) fn put_immutability_policy(
    state: &impl StateRead,
    ch: &mut Changes,
    scope: &str,
    policy: &ImmutabilityPolicyRecord,
    now_ms: u64,
) -> Result<MetaResponse, StateError> {
    if let Err(why) = compile(&policy.pattern.pattern) {
        return Ok(MetaResponse::Refused(why.to_string()));
    }
    if !scope_exists(state, scope)? {
        return Ok(MetaResponse::NotFound);
    }
    ch.put(keys::immutability_policy(scope, &policy.uuid), policy);
    for repo in repos_of_scope(state, scope)? {
        for tag in tags::visible_tag_names(state, &repo, now_ms)? {
            if covers(&policy.pattern, &tag) {
                tags::lock(state, ch, &repo, &tag)?;
            }
        }
    }
    Ok(MetaResponse::Done)
}

pub(super) fn put_autoprune_policy(state: &impl StateRead, ch: &mut Changes, scope: &str, policy: &AutoPrunePolicyRecord) -> Result<MetaResponse, StateError> {
    if let Some(p) = &policy.pattern {
        if let Err(why) = compile(&p.pattern) {
            return Ok(MetaResponse::Refused(why.to_string()));
        }
    }
    if matches!(policy.method, PruneMethod::NumberOfTags(0) | PruneMethod::CreationDate(0)) {
        return Ok(MetaResponse::Refused("an auto-prune policy's value must be positive".into()));
    }
    if !scope_exists(state, scope)? {
        return Ok(MetaResponse::NotFound);
    }
    ch.put(keys::autoprune_policy(scope, &policy.uuid), policy);
    Ok(MetaResponse::Done)
}

pub(super) fn delete_policy(state: &impl StateRead, ch: &mut Changes, key: Vec<u8>) -> Result<MetaResponse, StateError> {
    if state.get_raw(&key)?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    ch.delete(key);
    Ok(MetaResponse::Done)
}

/// The tags of `repo` the auto-prune policies select as of `now_ms`:
/// first those older than a `creation_date` policy allows, then, of the
/// rest, those beyond the newest N of a `number_of_tags` policy. Only
/// live, unexpired, mutable tags the policy's pattern covers are
/// counted or selected.
pub fn autoprune_selection(state: &impl StateRead, repo: &str, now_ms: u64) -> Result<Vec<String>, StateError> {
    let mut policies = Vec::new();
    for scope in scopes_of(repo) {
        policies.extend(autoprune_policies(state, scope)?);
    }
    if policies.is_empty() {
        return Ok(vec![]);
    }
    let mut candidates = Vec::new();
    for tag in tags::visible_tag_names(state, repo, now_ms)? {
        let life = state.get::<TagLifeRecord>(&keys::tag_life(repo, &tag))?.unwrap_or_default();
        if life.immutable {
            continue;
        }
        let Some(rec) = state.get::<TagRecord>(&keys::tag(repo, &tag))? else { continue };
        candidates.push((tag, rec.pushed_at_ms));
    }
    // Newest first; names keep ties in one order on every node.
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let covered = |p: &AutoPrunePolicyRecord, tag: &str| p.pattern.as_ref().is_none_or(|pat| covers(pat, tag));
    let mut selected = BTreeSet::new();
    for p in &policies {
        if let PruneMethod::CreationDate(s) = p.method {
            let cutoff = now_ms.saturating_sub(s.saturating_mul(1000));
            selected.extend(candidates.iter().filter(|(t, at)| *at < cutoff && covered(p, t)).map(|(t, _)| t.clone()));
        }
    }
    for p in &policies {
        if let PruneMethod::NumberOfTags(n) = p.method {
            let rest: Vec<&String> = candidates.iter().filter(|(t, _)| !selected.contains(t) && covered(p, t)).map(|(t, _)| t).collect();
            let beyond: Vec<String> = rest.into_iter().skip(n as usize).cloned().collect();
            selected.extend(beyond);
        }
    }
    Ok(selected.into_iter().collect())
}

/// Every repository some auto-prune policy covers.
pub fn autoprune_repos(state: &impl StateRead) -> Result<Vec<String>, StateError> {
    let mut scopes = BTreeSet::new();
    for (k, v) in state.scan_raw(keys::AUTOPRUNE_POLICY_PREFIX)? {
        let _: AutoPrunePolicyRecord = decode(&k, &v)?;
        let rest = &k[keys::AUTOPRUNE_POLICY_PREFIX.len()..];
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        scopes.insert(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    let mut repos = BTreeSet::new();
    for scope in scopes {
        repos.extend(repos_of_scope(state, &scope)?);
    }
    Ok(repos.into_iter().filter(|r| state.get_raw(&keys::repo(r)).is_ok_and(|v| v.is_some())).collect())
}

pub(super) fn autoprune(state: &impl StateRead, ch: &mut Changes, repo: &str, asked: &[String], now_ms: u64) -> Result<MetaResponse, StateError> {
    let selected: BTreeSet<String> = autoprune_selection(state, repo, now_ms)?.into_iter().collect();
    let mut removed = Vec::new();
    for tag in asked.iter().collect::<BTreeSet<_>>() {
        if selected.contains(tag) && tags::delete_tag(state, ch, repo, tag, None, Some(now_ms))? == MetaResponse::Done {
            removed.push(tag.clone());
        }
    }
    Ok(MetaResponse::Removed(removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use berth_common::Digest;

    fn d(i: u8) -> Digest {
        Digest::sha256_of(&[i])
    }

    /// Namespace `ns` with repositories `ns/a` and `ns/b`, manifests `d(1..=12)` in each.
    fn state() -> MemState {
        let s = MemState::default();
        let org = OrgRecord { name: "ns".into(), email: None, created_at_ms: 0 };
        s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None }));
        for repo in ["ns/a", "ns/b"] {
            s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new(repo, 0))));
            for i in 1..=12 {
                let record = ManifestRecord {
                    repo: repo.into(),
                    digest: d(i),
                    media_type: "m".into(),
                    bytes: vec![],
                    blobs: vec![],
                    children: vec![],
                    subject: None,
                    pushed_at_ms: 0,
                };
                s.run(MetaCommand::PutManifest { record, tag: None });
            }
        }
        s
    }

    fn tag(s: &MemState, repo: &str, tag: &str, i: u8, at: u64) -> MetaResponse {
        s.run(MetaCommand::SetTag { repo: repo.into(), tag: tag.into(), digest: d(i), pushed_at_ms: at, if_current: None })
    }

    fn life(s: &MemState, repo: &str, t: &str) -> TagLifeRecord {
        s.get::<TagLifeRecord>(&keys::tag_life(repo, t)).unwrap().unwrap_or_default()
    }

    fn pattern(p: &str, matches: bool) -> TagPattern {
        TagPattern { pattern: p.into(), matches }
    }

    #[test]
    fn patterns_match_whole_names_and_bad_ones_are_refused() {
        assert!(compile("v[0-9]+").unwrap().is_match("v12"));
        assert!(!compile("v[0-9]+").unwrap().is_match("v12-rc"), "a full match");
        assert!(!compile("v1|v2").unwrap().is_match("v12"), "alternatives are grouped");
        for bad in ["v[0-9", "", "(", &"a".repeat(MAX_TAG_PATTERN_LEN + 1)] {
            assert!(compile(bad).is_err(), "{bad:?}");
        }
        let s = state();
        let policy = ImmutabilityPolicyRecord { uuid: "u".into(), pattern: pattern("v[0-9", true) };
        let before = s.scan_raw(b"").unwrap();
        let cmd = MetaCommand::Tag(TagCommand::PutImmutabilityPolicy { scope: "ns".into(), policy, now_ms: 0 });
        assert!(matches!(s.run(cmd), MetaResponse::Refused(why) if why.contains("regular expression")));
        let prune = AutoPrunePolicyRecord { uuid: "p".into(), method: PruneMethod::NumberOfTags(3), pattern: Some(pattern("(", true)) };
        assert!(matches!(s.run(MetaCommand::Tag(TagCommand::PutAutoPrunePolicy { scope: "ns".into(), policy: prune })), MetaResponse::Refused(_)));
        let zero = AutoPrunePolicyRecord { uuid: "p".into(), method: PruneMethod::NumberOfTags(0), pattern: None };
        assert!(matches!(s.run(MetaCommand::Tag(TagCommand::PutAutoPrunePolicy { scope: "ns".into(), policy: zero })), MetaResponse::Refused(_)));
        let policy = ImmutabilityPolicyRecord { uuid: "u".into(), pattern: pattern("v.*", true) };
        let cmd = MetaCommand::Tag(TagCommand::PutImmutabilityPolicy { scope: "ns/nope".into(), policy, now_ms: 0 });
        assert_eq!(s.run(cmd), MetaResponse::NotFound, "no such repository");
        assert_eq!(s.scan_raw(b"").unwrap(), before, "refusals store nothing");
    }

    #[test]
    fn immutability_policies_lock_existing_and_new_tags() {
        let s = state();
        tag(&s, "ns/a", "v1", 1, 10);
        tag(&s, "ns/a", "latest", 1, 10);
        tag(&s, "ns/b", "v1", 1, 10);
        let expire = MetaCommand::Tag(TagCommand::SetExpiration { repo: "ns/b".into(), tag: "v1".into(), expiration_ms: Some(u64::MAX), now_ms: 20 });
        assert_eq!(s.run(expire), MetaResponse::Done);
        // A namespace policy on v*: existing tags of both repositories lock, expirations go.
        let policy = ImmutabilityPolicyRecord { uuid: "u1".into(), pattern: pattern("v[0-9]+", true) };
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::PutImmutabilityPolicy { scope: "ns".into(), policy, now_ms: 30 })), MetaResponse::Done);
        assert!(life(&s, "ns/a", "v1").immutable && !life(&s, "ns/a", "latest").immutable);
        assert_eq!(life(&s, "ns/b", "v1"), TagLifeRecord { immutable: true, ..Default::default() });
        // New tags: locked in the same command that writes them.
        assert_eq!(tag(&s, "ns/a", "v2", 2, 40), MetaResponse::Done);
        assert!(life(&s, "ns/a", "v2").immutable);
        assert_eq!(tag(&s, "ns/a", "v2", 3, 50), MetaResponse::TagImmutable { tag: "v2".into() });
        let record = s.get::<ManifestRecord>(&keys::manifest("ns/a", &d(4))).unwrap().unwrap();
        let labeled =
            MetaCommand::PutManifestFrom { record, tag: Some("v3".into()), origin: Default::default(), expiration_ms: Some(u64::MAX), immutable: false };
        assert_eq!(s.run(labeled), MetaResponse::Done);
        assert_eq!(life(&s, "ns/a", "v3"), TagLifeRecord { immutable: true, ..Default::default() }, "the policy wins over the label's expiration");
        // A repository policy with tagPatternMatches false: everything but `dev`.
        let policy = ImmutabilityPolicyRecord { uuid: "u2".into(), pattern: pattern("dev", false) };
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::PutImmutabilityPolicy { scope: "ns/b".into(), policy, now_ms: 60 })), MetaResponse::Done);
        tag(&s, "ns/b", "dev", 1, 70);
        tag(&s, "ns/b", "prod", 1, 70);
        assert!(!life(&s, "ns/b", "dev").immutable && life(&s, "ns/b", "prod").immutable);
        assert!(!life(&s, "ns/a", "latest").immutable, "a repository's policy stays in it");
        // Deleting a policy unlocks nothing, and stops locking.
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::DeleteImmutabilityPolicy { scope: "ns".into(), uuid: "u1".into() })), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::DeleteImmutabilityPolicy { scope: "ns".into(), uuid: "u1".into() })), MetaResponse::NotFound);
        assert!(life(&s, "ns/a", "v1").immutable);
        tag(&s, "ns/a", "v9", 1, 80);
        assert!(!life(&s, "ns/a", "v9").immutable);
    }

    #[test]
    fn autoprune_keeps_the_newest_and_never_an_immutable_tag() {
        let s = state();
        for i in 1..=10u8 {
            tag(&s, "ns/a", &format!("t{i:02}"), i, u64::from(i) * 100);
        }
        tag(&s, "ns/a", "keep", 11, 1);
        let lock = MetaCommand::Tag(TagCommand::SetImmutable { repo: "ns/a".into(), tag: "t02".into(), immutable: true, now_ms: 2000 });
        assert_eq!(s.run(lock), MetaResponse::Done);
        let policy = AutoPrunePolicyRecord { uuid: "p1".into(), method: PruneMethod::NumberOfTags(3), pattern: Some(pattern("t.*", true)) };
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::PutAutoPrunePolicy { scope: "ns".into(), policy })), MetaResponse::Done);
        assert_eq!(autoprune_repos(&s).unwrap(), vec!["ns/a".to_string(), "ns/b".to_string()]);
        let selected = autoprune_selection(&s, "ns/a", 2000).unwrap();
        let want: Vec<String> = [1, 3, 4, 5, 6, 7].iter().map(|i| format!("t{i:02}")).collect();
        assert_eq!(selected, want, "the newest three stay; the locked one and the uncovered one are not counted");
        // Applied: only what is still selected goes, into history.
        let cmd = MetaCommand::Tag(TagCommand::AutoPrune { repo: "ns/a".into(), tags: vec!["t01".into(), "t09".into(), "keep".into()], now_ms: 2000 });
        assert_eq!(s.run(cmd), MetaResponse::Removed(vec!["t01".into()]));
        assert!(s.get_raw(&keys::tag("ns/a", "t01")).unwrap().is_none());
        assert_eq!(s.scan::<TagHistoryRecord>(&keys::tag_history("ns/a", "t01")).unwrap().len(), 1, "into the time machine");
        // creation_date first: tags older than 0.5 s at 1000 ms go, then the newest 3 of the rest stay.
        let policy = AutoPrunePolicyRecord { uuid: "p0".into(), method: PruneMethod::CreationDate(1), pattern: None };
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::PutAutoPrunePolicy { scope: "ns/a".into(), policy })), MetaResponse::Done);
        let selected = autoprune_selection(&s, "ns/a", 1000 + 750).unwrap();
        let want: Vec<String> = ["keep", "t03", "t04", "t05", "t06", "t07"].iter().map(|t| t.to_string()).collect();
        assert_eq!(selected, want);
        assert_eq!(s.run(MetaCommand::Tag(TagCommand::DeleteAutoPrunePolicy { scope: "ns".into(), uuid: "p1".into() })), MetaResponse::Done);
        assert_eq!(autoprune_repos(&s).unwrap(), vec!["ns/a".to_string()]);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "ns/a".into() })), MetaResponse::TagImmutable { tag: "t02".into() });
    }
}
