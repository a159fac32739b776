//! A tag's lifecycle: its live row ([`TagRecord`] under `g`, with its
//! [`TagLifeRecord`] under `e`) and the closed rows of its history (`h`).
//!
//! Every write that moves or removes a tag closes the live row into
//! history here, in the same command, and checks here the rules that must
//! hold under races: an immutable tag refuses every such write, and a tag
//! expired at the command's time is absent (readers check the same
//! [`TagLifeRecord::expired_at`], so no node serves it meanwhile).
//! Commands older than tag history carry no time (`at_ms: None`): for
//! them a tag never counts as expired, and a row they close ends where it
//! started.

use berth_common::Digest;

use super::{decode, keys, policy_rules, Changes, StateError, StateRead};
use crate::command::*;
use crate::records::namespace_of;

/// A tag's live row.
#[derive(Debug, Clone)]
struct Live {
    rec: TagRecord,
    life: TagLifeRecord,
}

impl Live {
    fn expired(&self, at_ms: Option<u64>) -> bool {
        at_ms.is_some_and(|t| self.life.expired_at(t))
    }
}

/// The live row of `tag`, expired or not.
fn live(state: &impl StateRead, repo: &str, tag: &str) -> Result<Option<Live>, StateError> {
    let Some(rec) = state.get::<TagRecord>(&keys::tag(repo, tag))? else { return Ok(None) };
    let life = state.get::<TagLifeRecord>(&keys::tag_life(repo, tag))?.unwrap_or_default();
    Ok(Some(Live { rec, life }))
}

/// Where `tag` points as every reader sees it at `now_ms`: nowhere once
/// it has expired, whether or not the row is closed yet.
pub fn visible_tag(state: &impl StateRead, repo: &str, tag: &str, now_ms: u64) -> Result<Option<TagRecord>, StateError> {
    Ok(live(state, repo, tag)?.filter(|l| !l.expired(Some(now_ms))).map(|l| l.rec))
}

/// The names of `repo`'s tags visible at `now_ms`, in key order.
pub fn visible_tag_names(state: &impl StateRead, repo: &str, now_ms: u64) -> Result<Vec<String>, StateError> {
    let lives = keys::tag_lives_of(repo);
    let mut expired = std::collections::BTreeSet::new();
    for (k, v) in state.scan_raw(&lives)? {
        if decode::<TagLifeRecord>(&k, &v)?.expired_at(now_ms) {
            expired.insert(k[lives.len()..].to_vec());
        }
    }
    let prefix = keys::tags_of(repo);
    Ok(state
        .scan_raw(&prefix)?
        .into_iter()
        .map(|(k, _)| k[prefix.len()..].to_vec())
        .filter(|name| !expired.contains(name))
        .map(|name| String::from_utf8_lossy(&name).into_owned())
        .collect())
}

/// Up to `n` of `repo`'s live tags after `last`, in name order (the
/// order of [`visible_tag_names`]), and whether more follow. It reads the
/// tags from `last` on, in batches, so a page of a repository with a
/// million tags costs about what a page of a small one does.
pub fn visible_tag_page(state: &impl StateRead, repo: &str, now_ms: u64, last: Option<&str>, n: usize) -> Result<(Vec<String>, bool), StateError> {
    let prefix = keys::tags_of(repo);
    let lives = keys::tag_lives_of(repo);
    super::page_filtered(state, &prefix, last.map(str::as_bytes), n, |batch, after| {
        let Some((last_key, _)) = batch.last() else { return Ok(Vec::new()) };
        // The expirations of this batch's names only: the same range of
        // names, under the live-row prefix.
        let mut to = lives.clone();
        to.extend_from_slice(&last_key[prefix.len()..]);
        to.push(0);
        let mut from = lives.clone();
        if let Some(a) = after {
            from.extend_from_slice(a);
            from.push(0);
        }
        let mut expired = std::collections::BTreeSet::new();
        for (k, v) in state.range_raw(&from, &to, usize::MAX)? {
            if decode::<TagLifeRecord>(&k, &v)?.expired_at(now_ms) {
                expired.insert(k[lives.len()..].to_vec());
            }
        }
        Ok(batch
            .iter()
            .map(|(k, _)| &k[prefix.len()..])
            .filter(|name| !expired.contains(*name))
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect())
    })
}

/// Keeps `live` as a closed row of `tag`'s history, ended at `at_ms` (or
/// at its expiration, if that came first). The caller replaces or removes
/// the live row.
fn close(ch: &mut Changes, repo: &str, tag: &str, live: &Live, at_ms: Option<u64>) {
    let start_ms = live.rec.pushed_at_ms;
    let end_ms = match (at_ms, live.life.expiration_ms) {
        (None, _) => start_ms,
        (Some(t), Some(e)) => t.min(e),
        (Some(t), None) => t,
    }
    .max(start_ms);
    let row = TagHistoryRecord {
        digest: live.rec.digest.clone(),
        start_ms,
        end_ms,
        expiration_ms: live.life.expiration_ms,
        immutable: live.life.immutable,
        reverted: live.life.reverted,
    };
    ch.put(keys::tag_history_row(repo, tag, end_ms, start_ms, &row.digest), &row);
}

/// Writes the live row; a default [`TagLifeRecord`] is kept as no record.
fn write_live(ch: &mut Changes, repo: &str, tag: &str, rec: &TagRecord, life: &TagLifeRecord) {
    ch.put(keys::tag(repo, tag), rec);
    if *life == TagLifeRecord::default() {
        ch.delete(keys::tag_life(repo, tag));
    } else {
        ch.put(keys::tag_life(repo, tag), life);
    }
}

fn remove_live(ch: &mut Changes, repo: &str, tag: &str) {
    ch.delete(keys::tag(repo, tag));
    ch.delete(keys::tag_life(repo, tag));
}

/// Points `tag` at `digest` from `at_ms` with `life`, closing the row it
/// replaces. A tag that already points there (and has not expired) keeps
/// its row: a push retried changes nothing. Refused over an immutable tag.
pub(super) fn point(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    tag: &str,
    digest: &Digest,
    at_ms: u64,
    life: TagLifeRecord,
) -> Result<Option<MetaResponse>, StateError> {
    let current = live(state, repo, tag)?;
    if let Some(cur) = &current {
        if !cur.expired(Some(at_ms)) {
            if cur.rec.digest == *digest && !life.reverted {
                return Ok(None);
            }
            if cur.life.immutable {
                return Ok(Some(MetaResponse::TagImmutable { tag: tag.to_string() }));
            }
        }
        close(ch, repo, tag, cur, Some(at_ms));
    }
    let mut life = life;
    if !life.immutable && policy_rules::locked_by_policy(state, repo, tag)? {
        // A policy's lock wins over an expiration: a locked tag never expires.
        life.immutable = true;
        life.expiration_ms = None;
    }
    write_live(ch, repo, tag, &TagRecord { digest: digest.clone(), pushed_at_ms: at_ms }, &life);
    Ok(None)
}

/// Locks the live row of `tag` (an immutability policy's), clearing its
/// expiration.
pub(super) fn lock(state: &impl StateRead, ch: &mut Changes, repo: &str, tag: &str) -> Result<(), StateError> {
    if let Some(mut cur) = live(state, repo, tag)? {
        if !cur.life.immutable || cur.life.expiration_ms.is_some() {
            cur.life.immutable = true;
            cur.life.expiration_ms = None;
            write_live(ch, repo, tag, &cur.rec, &cur.life);
        }
    }
    Ok(())
}

/// Where `tag` points at `at_ms`, as a conditional write compares it.
fn current_digest(state: &impl StateRead, repo: &str, tag: &str, at_ms: Option<u64>) -> Result<Option<Digest>, StateError> {
    Ok(live(state, repo, tag)?.filter(|l| !l.expired(at_ms)).map(|l| l.rec.digest))
}

pub(super) fn set_tag(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    tag: &str,
    digest: &Digest,
    pushed_at_ms: u64,
    if_current: Option<&Option<Digest>>,
) -> Result<MetaResponse, StateError> {
    let current = current_digest(state, repo, tag, Some(pushed_at_ms))?;
    if if_current.is_some_and(|expected| *expected != current) {
        return Ok(MetaResponse::Conflict { current });
    }
    if state.get_raw(&keys::manifest(repo, digest))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    Ok(point(state, ch, repo, tag, digest, pushed_at_ms, TagLifeRecord::default())?.unwrap_or(MetaResponse::Done))
}

pub(crate) fn delete_tag(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    tag: &str,
    if_current: Option<&Digest>,
    at_ms: Option<u64>,
) -> Result<MetaResponse, StateError> {
    let Some(cur) = live(state, repo, tag)?.filter(|l| !l.expired(at_ms)) else { return Ok(MetaResponse::NotFound) };
    if if_current.is_some_and(|d| *d != cur.rec.digest) {
        return Ok(MetaResponse::Conflict { current: Some(cur.rec.digest) });
    }
    if cur.life.immutable {
        return Ok(MetaResponse::TagImmutable { tag: tag.to_string() });
    }
    close(ch, repo, tag, &cur, at_ms);
    remove_live(ch, repo, tag);
    Ok(MetaResponse::Done)
}

/// Closes every tag of `repo` pointing at `digest`, for the manifest's
/// delete; refused (and nothing closed) if one of them is immutable.
pub(super) fn close_tags_of_manifest(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    digest: &Digest,
    at_ms: Option<u64>,
) -> Result<Option<MetaResponse>, StateError> {
    let prefix = keys::tags_of(repo);
    let mut closing = Vec::new();
    for (k, v) in state.scan_raw(&prefix)? {
        let rec: TagRecord = decode(&k, &v)?;
        if rec.digest != *digest {
            continue;
        }
        let tag = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let life = state.get::<TagLifeRecord>(&keys::tag_life(repo, &tag))?.unwrap_or_default();
        let cur = Live { rec, life };
        if cur.life.immutable && !cur.expired(at_ms) {
            return Ok(Some(MetaResponse::TagImmutable { tag: tag.to_string() }));
        }
        closing.push((tag, cur));
    }
    for (tag, cur) in closing {
        close(ch, repo, &tag, &cur, at_ms);
        remove_live(ch, repo, &tag);
    }
    Ok(None)
}

/// The time machine window of `repo`'s namespace, in ms (a repository
/// outside any namespace has the default).
pub fn time_machine_ms(state: &impl StateRead, repo: &str) -> Result<u64, StateError> {
    let rec = match namespace_of(repo) {
        Some(ns) => state.get::<NamespaceLifeRecord>(&keys::namespace_life(ns))?.unwrap_or_default(),
        None => NamespaceLifeRecord::default(),
    };
    Ok(rec.tag_expiration_s.saturating_mul(1000))
}

/// The window of namespace `ns` as its settings show it, in seconds.
pub fn namespace_time_machine_s(state: &impl StateRead, ns: &str) -> Result<u64, StateError> {
    Ok(state.get::<NamespaceLifeRecord>(&keys::namespace_life(ns))?.unwrap_or_default().tag_expiration_s)
}

pub(super) fn set_time_machine(state: &impl StateRead, ch: &mut Changes, namespace: &str, tag_expiration_s: u64) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::org(namespace))?.is_none() && state.get_raw(&keys::user(namespace))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    let rec = NamespaceLifeRecord { tag_expiration_s };
    if rec == NamespaceLifeRecord::default() {
        ch.delete(keys::namespace_life(namespace));
    } else {
        ch.put(keys::namespace_life(namespace), &rec);
    }
    Ok(MetaResponse::Done)
}

/// The repository and tag a history key (`h` + repo + `\0` + tag + `\0` + …)
/// belongs to.
fn history_key_names(k: &[u8]) -> Option<(String, String)> {
    let rest = &k[keys::TAG_HISTORY_PREFIX.len()..];
    let a = rest.iter().position(|b| *b == 0)?;
    let b = rest[a + 1..].iter().position(|b| *b == 0)? + a + 1;
    Some((String::from_utf8_lossy(&rest[..a]).into_owned(), String::from_utf8_lossy(&rest[a + 1..b]).into_owned()))
}

/// Every repository with history rows that ended before its namespace's
/// window, as of `now_ms`: what the lifecycle worker prunes.
pub fn prunable_history(state: &impl StateRead, now_ms: u64) -> Result<Vec<String>, StateError> {
    let mut windows = std::collections::BTreeMap::<String, u64>::new();
    let mut out = std::collections::BTreeSet::new();
    for (k, v) in state.scan_raw(keys::TAG_HISTORY_PREFIX)? {
        let Some((repo, _)) = history_key_names(&k) else { continue };
        if out.contains(&repo) {
            continue;
        }
        let window = match windows.get(&repo) {
            Some(w) => *w,
            None => {
                let w = time_machine_ms(state, &repo)?;
                windows.insert(repo.clone(), w);
                w
            }
        };
        if decode::<TagHistoryRecord>(&k, &v)?.end_ms < now_ms.saturating_sub(window) {
            out.insert(repo);
        }
    }
    Ok(out.into_iter().collect())
}

pub(super) fn prune_history(state: &impl StateRead, ch: &mut Changes, repo: &str, now_ms: u64) -> Result<MetaResponse, StateError> {
    let cutoff = now_ms.saturating_sub(time_machine_ms(state, repo)?);
    let mut pruned = false;
    for (k, v) in state.scan_raw(&keys::tag_histories_of(repo))? {
        if decode::<TagHistoryRecord>(&k, &v)?.end_ms < cutoff {
            ch.delete(k);
            pruned = true;
        }
    }
    Ok(if pruned { MetaResponse::Done } else { MetaResponse::NotFound })
}

/// The manifests of `repo` that nothing keeps any more as of `now_ms`,
/// which garbage collection forgets. A manifest is kept while
/// - a live tag row points at it (expired or not: the worker closes an
///   expired one into a history row, which then keeps it),
/// - a history row that ended inside the namespace's time machine window
///   points at it (so a restore finds it, with its blobs),
/// - it was pushed inside the window, or within `min_age_ms` (a manifest
///   pushed by digest, about to be tagged or referred to),
/// - another manifest of the repository lists it (an index's child), or
/// - it refers to a manifest the repository still has (a signature or
///   other referrer of its subject).
///
/// The last two are judged against every stored manifest, collectable or
/// not: a child outlives its index by one collection.
pub fn collectable_manifests(state: &impl StateRead, repo: &str, now_ms: u64, min_age_ms: u64) -> Result<Vec<Digest>, StateError> {
    let window = time_machine_ms(state, repo)?;
    let history_cutoff = now_ms.saturating_sub(window);
    let pushed_cutoff = now_ms.saturating_sub(window.max(min_age_ms));
    let mut kept = std::collections::BTreeSet::new();
    for rec in state.scan::<TagRecord>(&keys::tags_of(repo))? {
        kept.insert(rec.digest);
    }
    for row in state.scan::<TagHistoryRecord>(&keys::tag_histories_of(repo))? {
        if row.end_ms >= history_cutoff {
            kept.insert(row.digest);
        }
    }
    let manifests = state.scan::<ManifestRecord>(&keys::manifests_of(repo))?;
    let stored: std::collections::BTreeSet<&Digest> = manifests.iter().map(|m| &m.digest).collect();
    for m in &manifests {
        kept.extend(m.children.iter().cloned());
    }
    Ok(manifests
        .iter()
        .filter(|m| !kept.contains(&m.digest) && m.pushed_at_ms < pushed_cutoff && m.subject.as_ref().is_none_or(|s| !stored.contains(s)))
        .map(|m| m.digest.clone())
        .collect())
}

/// Forgets the manifests of `digests` still collectable when applied
/// (`NotFound` when none is); their blobs lose a reference each, and go
/// with the next sweep once no manifest references them.
pub(super) fn collect_manifests(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    digests: &[Digest],
    now_ms: u64,
    min_age_ms: u64,
) -> Result<MetaResponse, StateError> {
    let collectable: std::collections::BTreeSet<Digest> = collectable_manifests(state, repo, now_ms, min_age_ms)?.into_iter().collect();
    // Blob records touched by more than one manifest of the batch count
    // every decrement.
    let mut blobs = std::collections::BTreeMap::<Digest, BlobRecord>::new();
    let mut usage = super::quotas::Usage::of(state, repo)?;
    let mut collected = false;
    for d in digests.iter().collect::<std::collections::BTreeSet<_>>() {
        if !collectable.contains(d) {
            continue;
        }
        let Some(rec) = state.get::<ManifestRecord>(&keys::manifest(repo, d))? else { continue };
        usage.remove(state, &rec.blobs)?;
        for b in rec.blobs.iter().collect::<std::collections::BTreeSet<_>>() {
            let blob = match blobs.remove(b) {
                Some(blob) => Some(blob),
                None => state.get::<BlobRecord>(&keys::blob(b))?,
            };
            if let Some(mut blob) = blob {
                blob.refs = blob.refs.saturating_sub(1);
                blobs.insert(b.clone(), blob);
            }
        }
        if let Some(subject) = &rec.subject {
            ch.delete(keys::referrer(repo, subject, d));
        }
        ch.delete(keys::manifest(repo, d));
        collected = true;
    }
    for (b, blob) in blobs {
        ch.put(keys::blob(&b), &blob);
    }
    usage.write(ch);
    Ok(if collected { MetaResponse::Done } else { MetaResponse::NotFound })
}

pub(super) fn close_expired(state: &impl StateRead, ch: &mut Changes, repo: &str, tag: &str, now_ms: u64) -> Result<MetaResponse, StateError> {
    let Some(cur) = live(state, repo, tag)?.filter(|l| l.expired(Some(now_ms))) else { return Ok(MetaResponse::NotFound) };
    close(ch, repo, tag, &cur, Some(now_ms));
    remove_live(ch, repo, tag);
    Ok(MetaResponse::Done)
}

/// Every (repository, tag) whose live row has expired by `now_ms`: what
/// the lifecycle worker closes.
pub fn expired_tags(state: &impl StateRead, now_ms: u64) -> Result<Vec<(String, String)>, StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(keys::TAG_LIFE_PREFIX)? {
        if !decode::<TagLifeRecord>(&k, &v)?.expired_at(now_ms) {
            continue;
        }
        let rest = &k[keys::TAG_LIFE_PREFIX.len()..];
        // Neither a repository nor a tag name holds a NUL.
        let Some(split) = rest.iter().position(|b| *b == 0) else { continue };
        out.push((String::from_utf8_lossy(&rest[..split]).into_owned(), String::from_utf8_lossy(&rest[split + 1..]).into_owned()));
    }
    Ok(out)
}

pub(super) fn set_expiration(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    tag: &str,
    expiration_ms: Option<u64>,
    now_ms: u64,
) -> Result<MetaResponse, StateError> {
    let Some(mut cur) = live(state, repo, tag)?.filter(|l| !l.expired(Some(now_ms))) else { return Ok(MetaResponse::NotFound) };
    if cur.life.immutable {
        return Ok(MetaResponse::TagImmutable { tag: tag.to_string() });
    }
    cur.life.expiration_ms = match expiration_ms {
        None => None,
        Some(e) if e <= now_ms => return Ok(MetaResponse::Refused("the expiration must be in the future".into())),
        Some(e) => {
            let start = cur.rec.pushed_at_ms;
            let clamped = e.clamp(start.saturating_add(MIN_TAG_LIFETIME_MS), start.saturating_add(MAX_TAG_LIFETIME_MS));
            if clamped <= now_ms {
                return Ok(MetaResponse::Refused("the tag is older than the longest lifetime a tag may have (104 weeks from its start)".into()));
            }
            Some(clamped)
        }
    };
    write_live(ch, repo, tag, &cur.rec, &cur.life);
    Ok(MetaResponse::Done)
}

pub(super) fn set_immutable(state: &impl StateRead, ch: &mut Changes, repo: &str, tag: &str, immutable: bool, now_ms: u64) -> Result<MetaResponse, StateError> {
    let Some(mut cur) = live(state, repo, tag)?.filter(|l| !l.expired(Some(now_ms))) else { return Ok(MetaResponse::NotFound) };
    if immutable && cur.life.expiration_ms.is_some() {
        return Ok(MetaResponse::Refused(format!("tag {tag} has an expiration; clear it before making the tag immutable")));
    }
    cur.life.immutable = immutable;
    write_live(ch, repo, tag, &cur.rec, &cur.life);
    Ok(MetaResponse::Done)
}

/// The tag must have held `digest` in a closed row, or in its live row
/// expired by `now_ms` but not closed yet (else `NotFound`), and the
/// manifest must still exist.
pub(super) fn restore(state: &impl StateRead, ch: &mut Changes, repo: &str, tag: &str, digest: &Digest, now_ms: u64) -> Result<MetaResponse, StateError> {
    // When each row that held `digest` ended: an expired live row at its expiration.
    let mut ends: Vec<u64> =
        live(state, repo, tag)?.filter(|l| l.expired(Some(now_ms)) && l.rec.digest == *digest).and_then(|l| l.life.expiration_ms).into_iter().collect();
    ends.extend(state.scan::<TagHistoryRecord>(&keys::tag_history(repo, tag))?.iter().filter(|row| row.digest == *digest).map(|row| row.end_ms));
    let Some(last_end) = ends.into_iter().max() else { return Ok(MetaResponse::NotFound) };
    let window = time_machine_ms(state, repo)?;
    if last_end < now_ms.saturating_sub(window) {
        return Ok(MetaResponse::Refused(format!(
            "tag {tag} last held {digest} {} s ago, outside the namespace's time machine window of {} s",
            (now_ms - last_end) / 1000,
            window / 1000
        )));
    }
    if state.get_raw(&keys::manifest(repo, digest))?.is_none() {
        return Ok(MetaResponse::Refused(format!("manifest {digest} no longer exists")));
    }
    let life = TagLifeRecord { reverted: true, ..TagLifeRecord::default() };
    Ok(point(state, ch, repo, tag, digest, now_ms, life)?.unwrap_or(MetaResponse::Done))
}

/// A live immutable tag of `repo`, if it has one: a repository that holds
/// one is not deleted (that would delete the tag).
pub(super) fn an_immutable_tag(state: &impl StateRead, repo: &str) -> Result<Option<String>, StateError> {
    let prefix = keys::tag_lives_of(repo);
    for (k, v) in state.scan_raw(&prefix)? {
        let life: TagLifeRecord = super::decode(&k, &v)?;
        if life.immutable {
            return Ok(Some(String::from_utf8_lossy(&k[prefix.len()..]).into_owned()));
        }
    }
    Ok(None)
}

/// Every tag row of `repo`, live or closed, and its tag policies, for a
/// repository's delete.
pub(super) fn forget_repository(state: &impl StateRead, ch: &mut Changes, repo: &str) -> Result<(), StateError> {
    policy_rules::forget_scope(state, ch, repo)?;
    for prefix in [keys::tags_of(repo), keys::tag_lives_of(repo), keys::tag_histories_of(repo)] {
        for (k, _) in state.scan_raw(&prefix)? {
            ch.delete(k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;

    const HOUR: u64 = MIN_TAG_LIFETIME_MS;

    /// A repository `r` with manifests `d(1)`, `d(2)`, `d(3)`.
    fn state() -> MemState {
        let s = MemState::default();
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("r", 0))));
        for i in 1..=3 {
            let record = ManifestRecord {
                repo: "r".into(),
                digest: d(i),
                media_type: "m".into(),
                bytes: vec![],
                blobs: vec![],
                children: vec![],
                subject: None,
                pushed_at_ms: 0,
            };
            assert_eq!(s.run(MetaCommand::PutManifest { record, tag: None }), MetaResponse::Done);
        }
        s
    }

    fn d(i: u8) -> Digest {
        Digest::sha256_of(&[i])
    }

    fn set(s: &MemState, i: u8, at: u64) -> MetaResponse {
        s.run(MetaCommand::SetTag { repo: "r".into(), tag: "t".into(), digest: d(i), pushed_at_ms: at, if_current: None })
    }

    fn tag_cmd(s: &MemState, c: TagCommand) -> MetaResponse {
        s.run(MetaCommand::Tag(c))
    }

    fn expire(s: &MemState, at: Option<u64>, now: u64) -> MetaResponse {
        tag_cmd(s, TagCommand::SetExpiration { repo: "r".into(), tag: "t".into(), expiration_ms: at, now_ms: now })
    }

    fn lock(s: &MemState, immutable: bool) -> MetaResponse {
        tag_cmd(s, TagCommand::SetImmutable { repo: "r".into(), tag: "t".into(), immutable, now_ms: 10 })
    }

    fn restore(s: &MemState, i: u8, now: u64) -> MetaResponse {
        tag_cmd(s, TagCommand::Restore { repo: "r".into(), tag: "t".into(), digest: d(i), now_ms: now })
    }

    fn history(s: &MemState) -> Vec<(Digest, u64, u64)> {
        s.scan::<TagHistoryRecord>(&keys::tag_history("r", "t")).unwrap().into_iter().map(|h| (h.digest, h.start_ms, h.end_ms)).collect()
    }

    fn live_row(s: &MemState) -> Option<(Digest, u64, TagLifeRecord)> {
        live(s, "r", "t").unwrap().map(|l| (l.rec.digest, l.rec.pushed_at_ms, l.life))
    }

    #[test]
    fn tag_pages_skip_expired_tags_and_end_where_the_full_list_does() {
        let s = state();
        let name = |i: usize| format!("t{i:03}");
        for i in 0..300 {
            s.run(MetaCommand::SetTag { repo: "r".into(), tag: name(i), digest: d(1), pushed_at_ms: 0, if_current: None });
            // Every third tag expires in an hour, a run of 40 in a row too.
            if i % 3 == 0 || (100..140).contains(&i) {
                let c = TagCommand::SetExpiration { repo: "r".into(), tag: name(i), expiration_ms: Some(HOUR), now_ms: 0 };
                assert_eq!(s.run(MetaCommand::Tag(c)), MetaResponse::Done);
            }
        }
        // A tag in another repository whose name sorts right after `r`'s.
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("r2", 0))));
        let now = 2 * HOUR;
        let all = visible_tag_names(&s, "r", now).unwrap();
        assert_eq!(all.len(), 300 - 100 - 40 + 13, "every third expired, and the run of 40 (13 of them every third)");
        for n in [1, 7, 50, 1000] {
            let (mut got, mut last) = (Vec::new(), None::<String>);
            loop {
                let (page, more) = visible_tag_page(&s, "r", now, last.as_deref(), n).unwrap();
                assert!(page.len() <= n);
                got.extend(page.iter().cloned());
                last = page.last().cloned();
                if !more {
                    break;
                }
                assert_eq!(page.len(), n, "a page with more after it is full");
            }
            assert_eq!(got, all, "pages of {n} add up to the whole list");
        }
        // `last` may name an expired tag or none at all.
        assert_eq!(visible_tag_page(&s, "r", now, Some("t099"), 2).unwrap(), (vec!["t140".to_string(), "t142".to_string()], true));
        assert_eq!(visible_tag_page(&s, "r", now, Some("t2995"), 5).unwrap(), (vec![], false));
        assert_eq!(visible_tag_page(&s, "r", now, Some("t298"), 5).unwrap(), (vec!["t299".to_string()], false));
    }

    #[test]
    fn moves_and_deletes_close_the_row_into_history() {
        let s = state();
        assert_eq!(set(&s, 1, 10), MetaResponse::Done);
        assert_eq!(set(&s, 1, 15), MetaResponse::Done);
        assert!(history(&s).is_empty(), "pointing a tag where it points keeps its row");
        assert_eq!(set(&s, 2, 20), MetaResponse::Done);
        let record = s.get::<ManifestRecord>(&keys::manifest("r", &d(3))).unwrap().unwrap();
        let record = ManifestRecord { pushed_at_ms: 30, ..record };
        assert_eq!(s.run(MetaCommand::PutManifest { record, tag: Some("t".into()) }), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::DeleteTagAt { repo: "r".into(), tag: "t".into(), if_current: None, now_ms: 40 }), MetaResponse::Done);
        assert_eq!(live_row(&s), None);
        assert_eq!(history(&s), vec![(d(1), 10, 20), (d(2), 20, 30), (d(3), 30, 40)]);
        // A manifest's delete closes the rows of its tags.
        assert_eq!(set(&s, 1, 50), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::DeleteManifestAt { repo: "r".into(), digest: d(1), now_ms: 60 }), MetaResponse::Done);
        assert_eq!(live_row(&s), None);
        assert_eq!(history(&s).last(), Some(&(d(1), 50, 60)));
        // The older commands, without a time, close a row where it started.
        assert_eq!(set(&s, 2, 70), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::DeleteTag { repo: "r".into(), tag: "t".into(), if_current: None }), MetaResponse::Done);
        assert!(history(&s).contains(&(d(2), 70, 70)));
    }

    #[test]
    fn expiration_is_checked_clamped_and_ends_the_tag() {
        let s = state();
        assert_eq!(expire(&s, Some(HOUR), 0), MetaResponse::NotFound, "no tag");
        set(&s, 1, 1000);
        assert!(matches!(expire(&s, Some(1000), 1000), MetaResponse::Refused(why) if why.contains("future")));
        assert!(matches!(expire(&s, Some(999), 1000), MetaResponse::Refused(_)));
        assert_eq!(live_row(&s).unwrap().2, TagLifeRecord::default(), "a refusal changes nothing");
        assert_eq!(expire(&s, Some(1001), 1000), MetaResponse::Done);
        assert_eq!(live_row(&s).unwrap().2.expiration_ms, Some(1000 + HOUR), "at least an hour after the start");
        assert_eq!(expire(&s, Some(u64::MAX), 1000), MetaResponse::Done);
        assert_eq!(live_row(&s).unwrap().2.expiration_ms, Some(1000 + MAX_TAG_LIFETIME_MS), "at most 104 weeks");
        assert_eq!(expire(&s, None, 1000), MetaResponse::Done);
        assert_eq!(live_row(&s).unwrap().2, TagLifeRecord::default(), "cleared");
        assert!(matches!(expire(&s, Some(u64::MAX), 2000 + MAX_TAG_LIFETIME_MS), MetaResponse::Refused(_)), "a tag older than that");
        assert_eq!(expire(&s, Some(1000 + 2 * HOUR), 1000), MetaResponse::Done);
        // Readers see it until the moment, and not from then on.
        assert_eq!(visible_tag(&s, "r", "t", 999 + 2 * HOUR).unwrap().map(|t| t.digest), Some(d(1)));
        assert_eq!(visible_tag_names(&s, "r", 999 + 2 * HOUR).unwrap(), vec!["t".to_string()]);
        assert_eq!(visible_tag(&s, "r", "t", 1000 + 2 * HOUR).unwrap(), None);
        assert!(visible_tag_names(&s, "r", 1000 + 2 * HOUR).unwrap().is_empty());
        // Once the moment passed the tag is absent for every command that
        // carries a time: a conditional write sees no tag, a delete finds
        // none, and a push makes a new row whose predecessor ended at the
        // expiration.
        let after = 1000 + 2 * HOUR;
        assert_eq!(expire(&s, None, after), MetaResponse::NotFound);
        assert_eq!(s.run(MetaCommand::DeleteTagAt { repo: "r".into(), tag: "t".into(), if_current: None, now_ms: after }), MetaResponse::NotFound);
        let cond = MetaCommand::SetTag { repo: "r".into(), tag: "t".into(), digest: d(1), pushed_at_ms: after + 5, if_current: Some(None) };
        assert_eq!(s.run(cond), MetaResponse::Done, "an expired tag counts as absent");
        assert_eq!(history(&s), vec![(d(1), 1000, after)]);
        assert_eq!(live_row(&s), Some((d(1), after + 5, TagLifeRecord::default())));
    }

    #[test]
    fn the_worker_closes_only_expired_rows() {
        let s = state();
        set(&s, 1, 1000);
        s.run(MetaCommand::SetTag { repo: "r".into(), tag: "keep".into(), digest: d(2), pushed_at_ms: 1000, if_current: None });
        assert_eq!(expire(&s, Some(1000 + HOUR), 1000), MetaResponse::Done);
        let close = |now_ms| tag_cmd(&s, TagCommand::CloseExpired { repo: "r".into(), tag: "t".into(), now_ms });
        assert!(expired_tags(&s, 999 + HOUR).unwrap().is_empty());
        assert_eq!(close(999 + HOUR), MetaResponse::NotFound, "not yet");
        assert_eq!(live_row(&s).map(|l| l.0), Some(d(1)));
        assert_eq!(expired_tags(&s, 1000 + HOUR).unwrap(), vec![("r".to_string(), "t".to_string())]);
        assert_eq!(close(5000 + HOUR), MetaResponse::Done);
        assert_eq!(live_row(&s), None);
        assert!(s.get_raw(&keys::tag_life("r", "t")).unwrap().is_none());
        assert_eq!(history(&s), vec![(d(1), 1000, 1000 + HOUR)], "closed at its expiration, not at the pass");
        assert!(expired_tags(&s, 5000 + HOUR).unwrap().is_empty());
        assert_eq!(close(5000 + HOUR), MetaResponse::NotFound, "a second pass changes nothing");
        assert!(visible_tag(&s, "r", "keep", u64::MAX).unwrap().is_some(), "a tag without an expiration stays");
    }

    #[test]
    fn an_expired_row_not_closed_yet_can_be_restored() {
        let s = state();
        set(&s, 1, 1000);
        assert_eq!(expire(&s, Some(1000 + HOUR), 1000), MetaResponse::Done);
        assert_eq!(restore(&s, 2, 1000 + HOUR), MetaResponse::NotFound, "it never held that one");
        assert_eq!(restore(&s, 1, 999 + HOUR), MetaResponse::NotFound, "not expired yet, and no history");
        assert_eq!(restore(&s, 1, 1000 + HOUR), MetaResponse::Done);
        assert_eq!(history(&s), vec![(d(1), 1000, 1000 + HOUR)], "the expired row closed at its expiration");
        assert_eq!(live_row(&s), Some((d(1), 1000 + HOUR, TagLifeRecord { reverted: true, ..Default::default() })));
    }

    #[test]
    fn restore_brings_a_history_row_back() {
        let s = state();
        set(&s, 1, 10);
        set(&s, 2, 20);
        assert_eq!(restore(&s, 3, 30), MetaResponse::NotFound, "the tag never held it");
        assert_eq!(restore(&s, 1, 30), MetaResponse::Done);
        assert_eq!(live_row(&s), Some((d(1), 30, TagLifeRecord { reverted: true, ..Default::default() })));
        assert_eq!(history(&s), vec![(d(1), 10, 20), (d(2), 20, 30)]);
        // After a delete, the tag comes back from history.
        s.run(MetaCommand::DeleteTagAt { repo: "r".into(), tag: "t".into(), if_current: None, now_ms: 40 });
        assert_eq!(restore(&s, 2, 50), MetaResponse::Done);
        assert_eq!(live_row(&s).map(|l| l.0), Some(d(2)));
        // A manifest gone is refused, and nothing changes.
        s.run(MetaCommand::DeleteManifestAt { repo: "r".into(), digest: d(1), now_ms: 60 });
        let before = (live_row(&s), history(&s));
        assert!(matches!(restore(&s, 1, 70), MetaResponse::Refused(why) if why.contains("no longer exists")));
        assert_eq!((live_row(&s), history(&s)), before);
    }

    #[test]
    fn an_immutable_tag_refuses_every_change() {
        let s = state();
        assert_eq!(lock(&s, true), MetaResponse::NotFound);
        set(&s, 1, 10);
        set(&s, 2, 11);
        assert_eq!(expire(&s, Some(HOUR * 2), 12), MetaResponse::Done);
        assert!(matches!(lock(&s, true), MetaResponse::Refused(why) if why.contains("expiration")), "an immutable tag never expires");
        assert_eq!(expire(&s, None, 12), MetaResponse::Done);
        assert_eq!(lock(&s, true), MetaResponse::Done);
        let before = (live_row(&s), history(&s));
        let immutable = MetaResponse::TagImmutable { tag: "t".to_string() };
        assert_eq!(set(&s, 3, 20), immutable, "moved");
        assert_eq!(set(&s, 2, 20), MetaResponse::Done, "pointed where it points: nothing changes");
        let record = s.get::<ManifestRecord>(&keys::manifest("r", &d(3))).unwrap().unwrap();
        assert_eq!(s.run(MetaCommand::PutManifest { record, tag: Some("t".into()) }), immutable, "pushed over");
        let new = ManifestRecord { digest: d(9), ..s.get::<ManifestRecord>(&keys::manifest("r", &d(3))).unwrap().unwrap() };
        assert_eq!(s.run(MetaCommand::PutManifest { record: new, tag: Some("t".into()) }), immutable, "a new manifest pushed over");
        assert_eq!(s.get_raw(&keys::manifest("r", &d(9))).unwrap(), None, "the refused push stored nothing");
        assert_eq!(s.run(MetaCommand::DeleteTagAt { repo: "r".into(), tag: "t".into(), if_current: None, now_ms: 20 }), immutable, "deleted");
        assert_eq!(s.run(MetaCommand::DeleteTag { repo: "r".into(), tag: "t".into(), if_current: None }), immutable, "deleted, old form");
        assert_eq!(s.run(MetaCommand::DeleteManifestAt { repo: "r".into(), digest: d(2), now_ms: 20 }), immutable, "its manifest deleted");
        assert!(s.get_raw(&keys::manifest("r", &d(2))).unwrap().is_some());
        assert_eq!(expire(&s, Some(HOUR * 2), 20), immutable, "expired");
        assert_eq!(restore(&s, 1, 20), immutable, "restored over");
        assert_eq!((live_row(&s), history(&s)), before, "nothing changed");
        assert_eq!(lock(&s, false), MetaResponse::Done);
        assert_eq!(set(&s, 3, 30), MetaResponse::Done, "unlocked");
    }

    const DAY_S: u64 = 24 * 3600;

    /// `r` in namespace `ns`, with manifests `d(1)` … `d(3)` pushed at 0.
    fn ns_state() -> MemState {
        let s = MemState::default();
        let org = OrgRecord { name: "ns".into(), email: None, created_at_ms: 0 };
        s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: None }));
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("ns/r", 0))));
        for i in 1..=3 {
            s.run(MetaCommand::PutManifest { record: manifest("ns/r", i, vec![], None), tag: None });
        }
        s
    }

    fn manifest(repo: &str, i: u8, children: Vec<Digest>, subject: Option<Digest>) -> ManifestRecord {
        ManifestRecord { repo: repo.into(), digest: d(i), media_type: "m".into(), bytes: vec![], blobs: vec![], children, subject, pushed_at_ms: 0 }
    }

    fn window(s: &MemState, seconds: u64) -> MetaResponse {
        tag_cmd(s, TagCommand::SetTimeMachine { namespace: "ns".into(), tag_expiration_s: seconds })
    }

    #[test]
    fn restore_only_inside_the_time_machine_window() {
        let s = ns_state();
        let day = DAY_S * 1000;
        assert_eq!(time_machine_ms(&s, "ns/r").unwrap(), DEFAULT_TAG_EXPIRATION_S * 1000, "two weeks unless set");
        assert_eq!(tag_cmd(&s, TagCommand::SetTimeMachine { namespace: "nobody".into(), tag_expiration_s: 0 }), MetaResponse::NotFound);
        assert_eq!(window(&s, DAY_S), MetaResponse::Done);
        let at = |i: u8, t: u64| s.run(MetaCommand::SetTag { repo: "ns/r".into(), tag: "t".into(), digest: d(i), pushed_at_ms: t, if_current: None });
        let restore = |i: u8, now: u64| tag_cmd(&s, TagCommand::Restore { repo: "ns/r".into(), tag: "t".into(), digest: d(i), now_ms: now });
        at(1, 10);
        at(2, 20);
        // d(1)'s row ended at 20: restorable a day after, not later.
        let before = s.scan_raw(b"").unwrap();
        assert!(matches!(restore(1, 21 + day), MetaResponse::Refused(why) if why.contains("time machine")));
        assert_eq!(s.scan_raw(b"").unwrap(), before, "the refusal changed nothing");
        assert_eq!(restore(1, 20 + day), MetaResponse::Done);
        // A zero window restores nothing closed.
        assert_eq!(window(&s, 0), MetaResponse::Done);
        assert!(matches!(restore(2, 21 + day), MetaResponse::Refused(_)));
        assert_eq!(window(&s, DEFAULT_TAG_EXPIRATION_S), MetaResponse::Done);
        assert!(s.get_raw(&keys::namespace_life("ns")).unwrap().is_none(), "the default is kept as no record");
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "ns/r".into() })), MetaResponse::Done);
        assert_eq!(window(&s, 0), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteOrg { name: "ns".into() })), MetaResponse::Done);
        assert!(s.get_raw(&keys::namespace_life("ns")).unwrap().is_none(), "the setting goes with its namespace");
    }

    #[test]
    fn history_outside_the_window_is_pruned() {
        let s = ns_state();
        let day = DAY_S * 1000;
        assert_eq!(window(&s, DAY_S), MetaResponse::Done);
        let at = |i: u8, t: u64| s.run(MetaCommand::SetTag { repo: "ns/r".into(), tag: "t".into(), digest: d(i), pushed_at_ms: t, if_current: None });
        at(1, 10);
        at(2, 20);
        at(3, 30);
        let prune = |now| tag_cmd(&s, TagCommand::PruneHistory { repo: "ns/r".into(), now_ms: now });
        assert!(prunable_history(&s, 20 + day).unwrap().is_empty());
        assert_eq!(prune(20 + day), MetaResponse::NotFound);
        assert_eq!(prunable_history(&s, 21 + day).unwrap(), vec!["ns/r".to_string()]);
        assert_eq!(prune(21 + day), MetaResponse::Done);
        let rows: Vec<TagHistoryRecord> = s.scan(&keys::tag_history("ns/r", "t")).unwrap();
        assert_eq!(rows.iter().map(|r| r.end_ms).collect::<Vec<_>>(), vec![30], "only the row that ended inside the window stays");
        assert!(live(&s, "ns/r", "t").unwrap().is_some(), "the live row is not history");
    }

    #[test]
    fn collection_keeps_what_the_time_machine_and_indexes_hold() {
        let s = ns_state();
        let day = DAY_S * 1000;
        assert_eq!(window(&s, DAY_S), MetaResponse::Done);
        // d(4): an index of d(3); d(5): a referrer of d(1); d(6): pushed by digest only.
        s.run(MetaCommand::PutManifest { record: manifest("ns/r", 4, vec![d(3)], None), tag: None });
        s.run(MetaCommand::PutManifest { record: manifest("ns/r", 5, vec![], Some(d(1))), tag: None });
        s.run(MetaCommand::PutManifest { record: ManifestRecord { pushed_at_ms: 5 * day, ..manifest("ns/r", 6, vec![], None) }, tag: None });
        let at = |i: u8, t: u64| s.run(MetaCommand::SetTag { repo: "ns/r".into(), tag: "t".into(), digest: d(i), pushed_at_ms: t, if_current: None });
        at(1, 10);
        at(2, 20);
        s.run(MetaCommand::DeleteTagAt { repo: "ns/r".into(), tag: "t".into(), if_current: None, now_ms: 2 * day });
        let collectable = |now| collectable_manifests(&s, "ns/r", now, 0).unwrap();
        // d(1) ended at 20, d(2) at two days; d(4) was never tagged and is old.
        assert_eq!(collectable(20 + day), vec![d(4)]);
        assert_eq!(collectable(21 + day), vec![d(1), d(4)]);
        assert_eq!(collectable(2 * day + day + 1), vec![d(1), d(2), d(4)]);
        assert!(collectable_manifests(&s, "ns/r", 21 + day, 30 * day).unwrap().is_empty(), "nothing younger than the minimum age");
        let collect = |digests: Vec<Digest>, now| tag_cmd(&s, TagCommand::CollectManifests { repo: "ns/r".into(), digests, now_ms: now, min_age_ms: 0 });
        assert_eq!(collect(vec![d(2)], 21 + day), MetaResponse::NotFound, "re-checked when applied: d(2) is still in the window");
        assert_eq!(collect(vec![d(1), d(4)], 21 + day), MetaResponse::Done);
        for (i, present) in [(1, false), (2, true), (3, true), (4, false), (5, true), (6, true)] {
            assert_eq!(s.get_raw(&keys::manifest("ns/r", &d(i))).unwrap().is_some(), present, "manifest {i}");
        }
        // Its index gone, d(3) goes next; its subject gone, the referrer d(5) too.
        assert_eq!(collectable(21 + day), vec![d(3), d(5)]);
    }

    #[test]
    fn a_labeled_push_sets_the_new_rows_life() {
        let s = ns_state();
        let push = |i: u8, tag: &str, expiration_ms, immutable| {
            let record = ManifestRecord { pushed_at_ms: 100, ..manifest("ns/r", i, vec![], None) };
            s.run(MetaCommand::PutManifestFrom { record, tag: Some(tag.into()), origin: Default::default(), expiration_ms, immutable })
        };
        assert_eq!(push(1, "a", Some(5_100), false), MetaResponse::Done);
        assert_eq!(live(&s, "ns/r", "a").unwrap().unwrap().life.expiration_ms, Some(5_100), "not clamped: the label decides");
        assert_eq!(visible_tag(&s, "ns/r", "a", 5_100).unwrap(), None);
        assert_eq!(push(2, "b", Some(5_100), true), MetaResponse::Done);
        assert_eq!(live(&s, "ns/r", "b").unwrap().unwrap().life, TagLifeRecord { immutable: true, ..Default::default() }, "a lock never expires");
        assert_eq!(push(3, "b", None, false), MetaResponse::TagImmutable { tag: "b".into() });
    }

    #[test]
    fn a_deleted_repository_forgets_its_tag_rows() {
        let s = state();
        set(&s, 1, 10);
        set(&s, 2, 20);
        assert_eq!(expire(&s, Some(HOUR * 2), 20), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "r".into() })), MetaResponse::Done);
        for prefix in [keys::tags_of("r"), keys::tag_lives_of("r"), keys::tag_histories_of("r")] {
            assert!(s.scan_raw(&prefix).unwrap().is_empty());
        }
    }

    #[test]
    fn a_repository_holding_an_immutable_tag_is_not_deleted() {
        let s = state();
        set(&s, 1, 10);
        assert_eq!(lock(&s, true), MetaResponse::Done);
        let delete = || s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "r".into() }));
        assert_eq!(delete(), MetaResponse::TagImmutable { tag: "t".into() });
        assert!(s.get_raw(&keys::repo("r")).unwrap().is_some() && live_row(&s).is_some(), "nothing changed");
        assert_eq!(lock(&s, false), MetaResponse::Done);
        assert_eq!(delete(), MetaResponse::Done);
    }
}
