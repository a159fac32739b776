//! The rules of what is pushed: manifests, blobs and the links between
//! blobs and repositories, and where a namespace's blobs live. Tags, which
//! a push and a manifest's delete move too, are `tags`'.

use std::collections::{BTreeMap, BTreeSet};

use berth_common::{Digest, NodeId};

use super::{keys, quotas, tags, Changes, StateError, StateRead};
use crate::command::*;

/// Stores a manifest. Every blob it names must still be linked into its
/// repository (checked here, in the same step, so a concurrent sweep and
/// a push cannot both win); the blobs' reference counts go up once per
/// new manifest.
pub(super) fn put_manifest(
    state: &impl StateRead,
    ch: &mut Changes,
    rec: &ManifestRecord,
    tag: Option<&str>,
    life: TagLifeRecord,
) -> Result<MetaResponse, StateError> {
    // Never creates the repository: that is `identity::create_repository`'s
    // alone, which checks the namespace.
    if state.get_raw(&keys::repo(&rec.repo))?.is_none() {
        return Ok(MetaResponse::Refused(format!("repository {} does not exist", rec.repo)));
    }
    // The tag first: a refusal (an immutable tag) must leave nothing.
    let mut tag_changes = Changes::default();
    if let Some(tag) = tag {
        if let Some(refused) = tags::point(state, &mut tag_changes, &rec.repo, tag, &rec.digest, rec.pushed_at_ms, life)? {
            return Ok(refused);
        }
    }
    // Whether each blob is still linked into the repository: its link
    // says so (written and removed with the blob record's entry for the
    // repository), and a repository's links sit side by side where the
    // blob records are spread over the key space (read in one batch).
    let links: Vec<Vec<u8>> = rec.blobs.iter().map(|b| keys::link(&rec.repo, b)).collect();
    if let Some((b, _)) = rec.blobs.iter().zip(state.get_many_raw(&links)?).find(|(_, link)| link.is_none()) {
        return Ok(MetaResponse::Refused(format!("blob {b} is not in repository {}", rec.repo)));
    }
    // A manifest pushed again (under another tag, say) changes no blob
    // record; only a new one reads them, to count its references.
    if state.get_raw(&keys::manifest(&rec.repo, &rec.digest))?.is_none() {
        let mut blobs = Vec::with_capacity(rec.blobs.len());
        for b in &rec.blobs {
            let Some(blob) = state.get::<BlobRecord>(&keys::blob(b))? else {
                return Ok(MetaResponse::Refused(format!("blob {b} is not in repository {}", rec.repo)));
            };
            blobs.push((b, blob));
        }
        // The namespace's quota, checked before anything is written.
        let mut usage = quotas::Usage::of(state, &rec.repo)?;
        usage.add(state, &rec.blobs)?;
        if let Some(refused) = usage.refusal() {
            return Ok(refused);
        }
        usage.write(ch);
        // One reference per manifest, however often it names the blob; the
        // delete subtracts the same way.
        let unique: BTreeMap<&Digest, BlobRecord> = blobs.into_iter().collect();
        for (b, mut blob) in unique {
            blob.refs += 1;
            ch.put(keys::blob(b), &blob);
        }
    }
    ch.put(keys::manifest(&rec.repo, &rec.digest), rec);
    if let Some(subject) = &rec.subject {
        ch.put(keys::referrer(&rec.repo, subject, &rec.digest), &());
    }
    ch.puts.extend(tag_changes.puts);
    ch.deletes.extend(tag_changes.deletes);
    Ok(MetaResponse::Done)
}

/// [`put_manifest`], queueing `repo_push` for the matching notifications
/// in the same step when the push moves its tag.
pub(super) fn put_manifest_from(
    state: &impl StateRead,
    ch: &mut Changes,
    rec: &ManifestRecord,
    tag: Option<&str>,
    origin: &PushOrigin,
    life: TagLifeRecord,
) -> Result<MetaResponse, StateError> {
    let moved = match tag {
        Some(t) => super::notifications::push_moves(state, &rec.repo, t, &rec.digest, rec.pushed_at_ms)?,
        None => false,
    };
    let resp = put_manifest(state, ch, rec, tag, life)?;
    if let (MetaResponse::Done, Some(t), true) = (&resp, tag, moved) {
        super::notifications::on_push(state, ch, rec, t, origin)?;
    }
    Ok(resp)
}

/// Deletes a manifest and every tag pointing at it (their rows closed at
/// `at_ms`); refused if one of them is immutable.
pub(super) fn delete_manifest(state: &impl StateRead, ch: &mut Changes, repo: &str, digest: &Digest, at_ms: Option<u64>) -> Result<MetaResponse, StateError> {
    let Some(rec) = state.get::<ManifestRecord>(&keys::manifest(repo, digest))? else { return Ok(MetaResponse::NotFound) };
    if let Some(refused) = tags::close_tags_of_manifest(state, ch, repo, digest, at_ms)? {
        return Ok(refused);
    }
    let mut usage = quotas::Usage::of(state, repo)?;
    usage.remove(state, &rec.blobs)?;
    usage.write(ch);
    let unique: BTreeSet<&Digest> = rec.blobs.iter().collect();
    for b in unique {
        if let Some(mut blob) = state.get::<BlobRecord>(&keys::blob(b))? {
            blob.refs = blob.refs.saturating_sub(1);
            ch.put(keys::blob(b), &blob);
        }
    }
    if let Some(subject) = &rec.subject {
        ch.delete(keys::referrer(repo, subject, digest));
    }
    ch.delete(keys::manifest(repo, digest));
    Ok(MetaResponse::Done)
}

pub(super) fn set_placement(ch: &mut Changes, namespace: &str, placement: &Placement) -> Result<MetaResponse, StateError> {
    ch.put(keys::placement(namespace), placement);
    Ok(MetaResponse::Done)
}

/// A copy of a blob the cluster has forgotten (swept) is not recorded: the
/// node's sweeper deletes it.
pub(super) fn add_blob_holder(state: &impl StateRead, ch: &mut Changes, digest: &Digest, node: NodeId) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<BlobRecord>(&keys::blob(digest))? else { return Ok(MetaResponse::NotFound) };
    rec.holders.insert(node);
    ch.put(keys::blob(digest), &rec);
    Ok(MetaResponse::Done)
}

/// The record stays even with no holder left: what references the blob is
/// still known, and a new upload restores a copy.
pub(super) fn remove_blob_holder(state: &impl StateRead, ch: &mut Changes, digest: &Digest, node: NodeId) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<BlobRecord>(&keys::blob(digest))? else { return Ok(MetaResponse::NotFound) };
    rec.holders.remove(&node);
    ch.put(keys::blob(digest), &rec);
    Ok(MetaResponse::Done)
}

pub(super) fn link_blob(
    state: &impl StateRead,
    ch: &mut Changes,
    repo: &str,
    digest: &Digest,
    size: u64,
    node: NodeId,
    now_ms: u64,
) -> Result<MetaResponse, StateError> {
    ch.put(keys::link(repo, digest), &BlobLink { size, linked_at_ms: now_ms });
    let key = keys::blob(digest);
    let mut rec = state.get::<BlobRecord>(&key)?.unwrap_or_else(|| BlobRecord::new(size));
    rec.holders.insert(node);
    if repos_indexed(state)? {
        index_listed_repos(ch, digest, &mut rec, None);
        ch.put(keys::blob_repo(digest, repo), &now_ms);
    } else {
        rec.repos.insert(repo.to_string(), now_ms);
    }
    ch.put(key, &rec);
    Ok(MetaResponse::Done)
}

pub(super) fn unlink_blob(state: &impl StateRead, ch: &mut Changes, repo: &str, digest: &Digest) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::link(repo, digest))?.is_none() {
        return Ok(MetaResponse::NotFound);
    }
    ch.delete(keys::link(repo, digest));
    let indexed = repos_indexed(state)?;
    match state.get::<BlobRecord>(&keys::blob(digest))? {
        Some(mut rec) => {
            if unlist_repo(ch, indexed, digest, &mut rec, repo) {
                ch.put(keys::blob(digest), &rec);
            }
        }
        None if indexed => ch.delete(keys::blob_repo(digest, repo)),
        None => {}
    }
    Ok(MetaResponse::Done)
}

/// Whether blob records leave their repositories to [`keys::blob_repo`]
/// keys ([`keys::BLOB_REPO_INDEX`]). Before, every link rewrote a record
/// listing every repository that links the blob: a base layer in 100,000
/// repositories made each new link a megabyte write. A release that reads
/// only the list must not read this state, so an upgraded cluster turns it
/// on once every member reads the keys (`crate::meta`); a record written
/// before keeps its list until a link or unlink of the blob moves it.
pub(super) fn repos_indexed(state: &impl StateRead) -> Result<bool, StateError> {
    Ok(state.get_raw(keys::BLOB_REPO_INDEX)?.is_some())
}

/// Turns the index on (idempotent).
pub(super) fn index_blob_repos(ch: &mut Changes) -> Result<MetaResponse, StateError> {
    ch.put(keys::BLOB_REPO_INDEX.to_vec(), &());
    Ok(MetaResponse::Done)
}

/// Moves the repositories `rec` still lists to index keys, all but `except`.
fn index_listed_repos(ch: &mut Changes, digest: &Digest, rec: &mut BlobRecord, except: Option<&str>) {
    for (repo, at) in std::mem::take(&mut rec.repos) {
        if Some(repo.as_str()) != except {
            ch.put(keys::blob_repo(digest, &repo), &at);
        }
    }
}

/// Removes `repo` from blob `digest`'s repositories: from its index key,
/// or from `rec`'s list before the index. Whether `rec` changed (the
/// caller writes it back).
pub(super) fn unlist_repo(ch: &mut Changes, indexed: bool, digest: &Digest, rec: &mut BlobRecord, repo: &str) -> bool {
    if !indexed {
        return rec.repos.remove(repo).is_some();
    }
    ch.delete(keys::blob_repo(digest, repo));
    let listed = !rec.repos.is_empty();
    index_listed_repos(ch, digest, rec, Some(repo));
    listed
}

/// The repositories blob `digest` (whose record is `rec`) is linked into,
/// with when each last linked it: those its record lists and those of the
/// index, in name order.
pub fn blob_repos(state: &impl StateRead, digest: &Digest, rec: &BlobRecord) -> Result<Vec<(String, u64)>, StateError> {
    let mut out: BTreeMap<String, u64> = rec.repos.clone();
    let prefix = keys::blob_repos_of(digest);
    for (k, v) in state.scan_raw(&prefix)? {
        let repo = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        out.insert(repo, super::decode(&k, &v)?);
    }
    Ok(out.into_iter().collect())
}

/// Whether `wanted` holds for some repository blob `digest` is linked
/// into; stops at the first, reading the index a page at a time.
pub fn any_blob_repo(state: &impl StateRead, digest: &Digest, rec: &BlobRecord, mut wanted: impl FnMut(&str) -> bool) -> Result<bool, StateError> {
    if rec.repos.keys().any(|r| wanted(r)) {
        return Ok(true);
    }
    const PAGE: usize = 256;
    let prefix = keys::blob_repos_of(digest);
    let end = super::prefix_end(&prefix);
    let mut from = prefix.clone();
    loop {
        let page = state.range_raw(&from, &end, PAGE)?;
        if page.iter().any(|(k, _)| wanted(&String::from_utf8_lossy(&k[prefix.len()..]))) {
            return Ok(true);
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(false),
        }
    }
}

/// Garbage collection: forgets a blob no manifest references and no
/// repository linked after `cutoff_ms`.
pub(super) fn sweep_blob(state: &impl StateRead, ch: &mut Changes, digest: &Digest, cutoff_ms: u64) -> Result<MetaResponse, StateError> {
    let Some(rec) = state.get::<BlobRecord>(&keys::blob(digest))? else { return Ok(MetaResponse::NotFound) };
    if rec.refs > 0 {
        return Ok(MetaResponse::Refused(format!("{} manifests reference it", rec.refs)));
    }
    let repos = blob_repos(state, digest, &rec)?;
    if repos.iter().any(|(_, t)| *t >= cutoff_ms) {
        return Ok(MetaResponse::Refused("linked too recently".into()));
    }
    for (repo, _) in &repos {
        ch.delete(keys::link(repo, digest));
        ch.delete(keys::blob_repo(digest, repo));
    }
    ch.delete(keys::blob(digest));
    Ok(MetaResponse::Done)
}
