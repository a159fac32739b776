//! The rules of scanning (records and commands in [`crate::scan`]).
//!
//! Keys: `S` + digest [`ScanRecord`], `k` + layer digest
//! [`LayerIndexRecord`], `F` + feed name [`FeedRecord`], `J` the
//! [`FeedGeneration`].
//!
//! A manifest is queued in the same command that stores it
//! ([`on_manifest_stored`]), so a crash never loses a scan. A scan runs
//! under a lease; a lapsed lease lets another node take it, and after
//! [`SCAN_ATTEMPTS_MAX`] leases the manifest is `failed`, never left
//! `queued`.

use super::{Changes, StateError, StateRead};
use crate::command::*;
use berth_common::{Digest, NodeId};

pub const SCAN_PREFIX: &[u8] = b"S";
pub const LAYER_INDEX_PREFIX: &[u8] = b"k";
pub const FEED_PREFIX: &[u8] = b"F";
pub const GENERATION_KEY: &[u8] = b"J";
pub const SOURCE_PREFIX: &[u8] = b"f";
/// An index of the queued scans (`j` + digest, the time queued), kept
/// beside the records so a scan worker's pass reads the queue, not every
/// scan record with its image index.
pub const QUEUED_PREFIX: &[u8] = b"j";

pub fn queued_key(digest: &Digest) -> Vec<u8> {
    let mut k = QUEUED_PREFIX.to_vec();
    k.extend_from_slice(digest.to_string().as_bytes());
    k
}

/// The digests of the queued scans, from the index. A state written
/// before the index existed may hold queued records it lacks: workers
/// also sweep every record now and then ([`scans`]).
pub fn queued(state: &impl StateRead) -> Result<Vec<Digest>, StateError> {
    Ok(state.scan_raw(QUEUED_PREFIX)?.into_iter().filter_map(|(k, _)| String::from_utf8_lossy(&k[QUEUED_PREFIX.len()..]).parse::<Digest>().ok()).collect())
}

pub fn scan_key(digest: &Digest) -> Vec<u8> {
    let mut k = SCAN_PREFIX.to_vec();
    k.extend_from_slice(digest.to_string().as_bytes());
    k
}

pub fn layer_index_key(digest: &Digest) -> Vec<u8> {
    let mut k = LAYER_INDEX_PREFIX.to_vec();
    k.extend_from_slice(digest.to_string().as_bytes());
    k
}

pub fn feed_key(name: &str) -> Vec<u8> {
    let mut k = FEED_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn source_key(name: &str) -> Vec<u8> {
    let mut k = SOURCE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The scheduled feed sources, by name.
pub fn sources(state: &impl StateRead) -> Result<Vec<FeedSourceRecord>, StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(SOURCE_PREFIX)? {
        out.push(super::decode(&k, &v)?);
    }
    Ok(out)
}

/// Whether `node` may fetch the source at `now_ms`: due, and no other
/// node holds a live lease.
pub fn source_takeable(src: &FeedSourceRecord, node: NodeId, now_ms: u64) -> bool {
    src.due_at_ms <= now_ms && src.lease.as_ref().is_none_or(|l| l.node == node || l.until_ms <= now_ms)
}

pub fn scan(state: &impl StateRead, digest: &Digest) -> Result<Option<ScanRecord>, StateError> {
    state.get::<ScanRecord>(&scan_key(digest))
}

pub fn layer_index(state: &impl StateRead, digest: &Digest) -> Result<Option<LayerIndexRecord>, StateError> {
    state.get::<LayerIndexRecord>(&layer_index_key(digest))
}

/// Every scan record, with its manifest's digest.
pub fn scans(state: &impl StateRead) -> Result<Vec<(Digest, ScanRecord)>, StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(SCAN_PREFIX)? {
        let Ok(d) = String::from_utf8_lossy(&k[SCAN_PREFIX.len()..]).parse::<Digest>() else { continue };
        out.push((d, super::decode(&k, &v)?));
    }
    Ok(out)
}

pub fn feeds(state: &impl StateRead) -> Result<Vec<FeedRecord>, StateError> {
    let mut out = Vec::new();
    for (k, v) in state.scan_raw(FEED_PREFIX)? {
        out.push(super::decode(&k, &v)?);
    }
    Ok(out)
}

pub fn generation(state: &impl StateRead) -> Result<u64, StateError> {
    Ok(state.get::<FeedGeneration>(GENERATION_KEY)?.unwrap_or_default().0)
}

/// Whether a node may take the scan at `now_ms`.
pub fn takeable(rec: &ScanRecord, now_ms: u64) -> bool {
    rec.status == ScanStatus::Queued && rec.lease.as_ref().is_none_or(|l| l.until_ms <= now_ms)
}

/// Queues a stored image manifest (not an index: its children are
/// queued themselves) unless it is known already.
pub(super) fn on_manifest_stored(state: &impl StateRead, ch: &mut Changes, record: &ManifestRecord) -> Result<(), StateError> {
    if !record.children.is_empty() || record.blobs.is_empty() {
        return Ok(());
    }
    let key = scan_key(&record.digest);
    let known = state.get::<ScanRecord>(&key)?;
    if known.is_none() {
        ch.put(queued_key(&record.digest), &record.pushed_at_ms);
    }
    let rec = match known {
        Some(mut rec) => {
            if rec.repos.contains(&record.repo) {
                return Ok(());
            }
            rec.repos.push(record.repo.clone());
            rec
        }
        None => ScanRecord {
            repos: vec![record.repo.clone()],
            status: ScanStatus::Queued,
            reason: None,
            queued_at_ms: record.pushed_at_ms,
            finished_at_ms: None,
            lease: None,
            attempts: 0,
            index_json: Vec::new(),
            matched_generation: 0,
            findings: Vec::new(),
        },
    };
    ch.put(key, &rec);
    Ok(())
}

pub(super) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &ScanCommand) -> Result<MetaResponse, StateError> {
    match cmd {
        ScanCommand::Acquire { digest, node, now_ms, until_ms } => {
            let Some(mut rec) = scan(state, digest)? else { return Ok(MetaResponse::NotFound) };
            if !takeable(&rec, *now_ms) {
                return Ok(MetaResponse::Refused("not queued, or another node holds the scan".into()));
            }
            if rec.attempts >= SCAN_ATTEMPTS_MAX {
                rec.status = ScanStatus::Failed;
                rec.reason = Some(format!("gave up after {} attempts: every node that took the scan stopped", rec.attempts));
                rec.lease = None;
                rec.finished_at_ms = Some(*now_ms);
                ch.put(scan_key(digest), &rec);
                ch.delete(queued_key(digest));
                return Ok(MetaResponse::Refused("given up".into()));
            }
            rec.attempts += 1;
            rec.lease = Some(ScanLease { node: *node, until_ms: *until_ms });
            ch.put(scan_key(digest), &rec);
            Ok(MetaResponse::Done)
        }
        ScanCommand::Renew { digest, node, until_ms } => {
            let Some(mut rec) = scan(state, digest)? else { return Ok(MetaResponse::NotFound) };
            match &mut rec.lease {
                Some(l) if l.node == *node && rec.status == ScanStatus::Queued => l.until_ms = (*until_ms).max(l.until_ms),
                _ => return Ok(MetaResponse::Refused("the scan is not this node's any more".into())),
            }
            ch.put(scan_key(digest), &rec);
            Ok(MetaResponse::Done)
        }
        ScanCommand::PutLayerIndex { layer, record } => {
            ch.put(layer_index_key(layer), record);
            Ok(MetaResponse::Done)
        }
        ScanCommand::Finish { digest, node, status, reason, index_json, findings, generation, now_ms } => {
            let Some(mut rec) = scan(state, digest)? else { return Ok(MetaResponse::NotFound) };
            if rec.status != ScanStatus::Queued || rec.lease.as_ref().map(|l| l.node) != Some(*node) {
                return Ok(MetaResponse::Refused("the scan is not this node's any more".into()));
            }
            if *status == ScanStatus::Queued {
                return Ok(MetaResponse::Refused("a scan finishes scanned, failed or unsupported".into()));
            }
            rec.status = *status;
            rec.reason = reason.clone();
            rec.lease = None;
            rec.finished_at_ms = Some(*now_ms);
            rec.index_json = index_json.clone();
            rec.findings = findings.clone();
            rec.matched_generation = *generation;
            ch.put(scan_key(digest), &rec);
            ch.delete(queued_key(digest));
            Ok(MetaResponse::Done)
        }
        ScanCommand::ImportFeed { feed, node } => import_feed(state, ch, feed, *node),
        ScanCommand::Rematched { digest, generation, findings } => {
            let Some(mut rec) = scan(state, digest)? else { return Ok(MetaResponse::NotFound) };
            if rec.status != ScanStatus::Scanned || rec.matched_generation >= *generation {
                return Ok(MetaResponse::Conflict { current: None });
            }
            rec.matched_generation = *generation;
            rec.findings = findings.clone();
            ch.put(scan_key(digest), &rec);
            Ok(MetaResponse::Done)
        }
        ScanCommand::Requeue { digest, now_ms } => {
            let Some(mut rec) = scan(state, digest)? else { return Ok(MetaResponse::NotFound) };
            if rec.status == ScanStatus::Queued {
                return Ok(MetaResponse::Done);
            }
            rec.status = ScanStatus::Queued;
            rec.reason = None;
            rec.attempts = 0;
            rec.lease = None;
            rec.queued_at_ms = *now_ms;
            ch.put(scan_key(digest), &rec);
            ch.put(queued_key(digest), now_ms);
            Ok(MetaResponse::Done)
        }
        ScanCommand::PutSource { name, url, interval_secs, now_ms } => {
            if name.is_empty() || url.is_empty() || *interval_secs == 0 {
                return Ok(MetaResponse::Refused("a feed source has a name, a URL and an interval".into()));
            }
            let old = state.get::<FeedSourceRecord>(&source_key(name))?;
            let keep = old.filter(|o| o.url == *url);
            let src = FeedSourceRecord {
                name: name.clone(),
                url: url.clone(),
                interval_secs: *interval_secs,
                due_at_ms: *now_ms,
                lease: keep.as_ref().and_then(|o| o.lease.clone()),
                etag: keep.as_ref().and_then(|o| o.etag.clone()),
                last_modified: keep.as_ref().and_then(|o| o.last_modified.clone()),
                checked_at_ms: keep.as_ref().map_or(0, |o| o.checked_at_ms),
                checked_by: keep.as_ref().and_then(|o| o.checked_by),
                outcome: keep.map(|o| o.outcome).unwrap_or_default(),
            };
            ch.put(source_key(name), &src);
            Ok(MetaResponse::Done)
        }
        ScanCommand::RemoveSource { name } => {
            if state.get::<FeedSourceRecord>(&source_key(name))?.is_none() {
                return Ok(MetaResponse::NotFound);
            }
            ch.delete(source_key(name));
            Ok(MetaResponse::Done)
        }
        ScanCommand::AcquireSource { name, node, now_ms, until_ms } => {
            let Some(mut src) = state.get::<FeedSourceRecord>(&source_key(name))? else { return Ok(MetaResponse::NotFound) };
            if !source_takeable(&src, *node, *now_ms) {
                return Ok(MetaResponse::Refused("not due, or another node is fetching it".into()));
            }
            src.lease = Some(ScanLease { node: *node, until_ms: *until_ms });
            ch.put(source_key(name), &src);
            Ok(MetaResponse::Done)
        }
        ScanCommand::SourceFetched { name, node, now_ms, due_at_ms, etag, last_modified, outcome, feed } => {
            let Some(mut src) = state.get::<FeedSourceRecord>(&source_key(name))? else { return Ok(MetaResponse::NotFound) };
            if src.lease.as_ref().map(|l| l.node) != Some(*node) {
                return Ok(MetaResponse::Refused("the fetch is not this node's any more".into()));
            }
            if let Some(feed) = feed {
                if feed.name != *name {
                    return Ok(MetaResponse::Refused("a source imports the feed of its own name".into()));
                }
                import_feed(state, ch, feed, *node)?;
            }
            src.lease = None;
            src.due_at_ms = *due_at_ms;
            src.etag = etag.clone();
            src.last_modified = last_modified.clone();
            src.checked_at_ms = *now_ms;
            src.checked_by = Some(*node);
            src.outcome = outcome.clone();
            ch.put(source_key(name), &src);
            Ok(MetaResponse::Done)
        }
    }
}

/// Records a feed snapshot (its blob stored on `node`): bumps the
/// generation and keeps the blob from garbage collection.
fn import_feed(state: &impl StateRead, ch: &mut Changes, feed: &FeedRecord, node: NodeId) -> Result<MetaResponse, StateError> {
    let next = generation(state)? + 1;
    let mut feed = feed.clone();
    feed.generation = next;
    // The snapshot's blob: recorded with its holder and one reference per
    // feed name, so garbage collection keeps it.
    let bkey = super::keys::blob(&feed.digest);
    let mut blob = state.get::<BlobRecord>(&bkey)?.unwrap_or_else(|| BlobRecord::new(feed.size));
    blob.holders.insert(node);
    let old = state.get::<FeedRecord>(&feed_key(&feed.name))?;
    if old.as_ref().map(|o| &o.digest) != Some(&feed.digest) {
        blob.refs += 1;
        if let Some(old) = old {
            let okey = super::keys::blob(&old.digest);
            if let Some(mut ob) = state.get::<BlobRecord>(&okey)? {
                ob.refs = ob.refs.saturating_sub(1);
                ch.put(okey, &ob);
            }
        }
    }
    ch.put(bkey, &blob);
    ch.put(feed_key(&feed.name), &feed);
    ch.put(GENERATION_KEY.to_vec(), &FeedGeneration(next));
    Ok(MetaResponse::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;

    fn push(s: &MemState, repo: &str, d: &Digest) {
        let org = OrgRecord { name: repo.split('/').next().unwrap().into(), email: None, created_at_ms: 0 };
        s.run(MetaCommand::Identity(IdentityCommand::CreateOrg { org, owner: Some("admin".into()) }));
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new(repo, 0))));
        s.run(MetaCommand::LinkBlob { repo: repo.into(), digest: Digest::sha256_of(b"layer"), size: 1, node: 1, now_ms: 1 });
        let record = ManifestRecord {
            repo: repo.into(),
            digest: d.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: b"{}".to_vec(),
            blobs: vec![Digest::sha256_of(b"layer")],
            children: vec![],
            subject: None,
            pushed_at_ms: 5,
        };
        assert_eq!(s.run(MetaCommand::PutManifest { record, tag: Some("t".into()) }), MetaResponse::Done);
    }

    #[test]
    fn a_push_queues_its_scan_and_leases_take_over() {
        let s = MemState::default();
        let d = Digest::sha256_of(b"m");
        push(&s, "a/b", &d);
        let rec = scan(&s, &d).unwrap().unwrap();
        assert_eq!((rec.status, rec.queued_at_ms), (ScanStatus::Queued, 5));
        assert_eq!(queued(&s).unwrap(), vec![d.clone()], "the queue index has it");
        let acq = |node, now_ms| s.run(MetaCommand::Scan(ScanCommand::Acquire { digest: d.clone(), node, now_ms, until_ms: now_ms + 100 }));
        assert_eq!(acq(1, 10), MetaResponse::Done);
        assert!(matches!(acq(2, 50), MetaResponse::Refused(_)));
        assert_eq!(acq(2, 110), MetaResponse::Done, "lapsed: taken over");
        let finish = |node| {
            s.run(MetaCommand::Scan(ScanCommand::Finish {
                digest: d.clone(),
                node,
                status: ScanStatus::Scanned,
                reason: None,
                index_json: b"{}".to_vec(),
                findings: vec![("CVE-1".into(), "p".into())],
                generation: 0,
                now_ms: 120,
            }))
        };
        assert!(matches!(finish(1), MetaResponse::Refused(_)), "the old holder's result is refused");
        assert_eq!(finish(2), MetaResponse::Done);
        assert_eq!(scan(&s, &d).unwrap().unwrap().status, ScanStatus::Scanned);
        assert!(queued(&s).unwrap().is_empty(), "finished: out of the queue");
        assert_eq!(s.run(MetaCommand::Scan(ScanCommand::Requeue { digest: d.clone(), now_ms: 200 })), MetaResponse::Done);
        assert_eq!(queued(&s).unwrap(), vec![d.clone()], "a rescan queues it again");
        push(&s, "a/c", &d);
        assert_eq!(queued(&s).unwrap(), vec![d], "one entry whatever the repositories");
    }

    #[test]
    fn a_scan_is_given_up_after_its_attempts() {
        let s = MemState::default();
        let d = Digest::sha256_of(b"m");
        push(&s, "a/b", &d);
        for i in 0..SCAN_ATTEMPTS_MAX as u64 {
            let now_ms = i * 1000;
            assert_eq!(s.run(MetaCommand::Scan(ScanCommand::Acquire { digest: d.clone(), node: 1, now_ms, until_ms: now_ms + 100 })), MetaResponse::Done);
        }
        let r = s.run(MetaCommand::Scan(ScanCommand::Acquire { digest: d.clone(), node: 1, now_ms: 99_000, until_ms: 99_100 }));
        assert!(matches!(r, MetaResponse::Refused(_)));
        let rec = scan(&s, &d).unwrap().unwrap();
        assert_eq!(rec.status, ScanStatus::Failed);
        assert!(rec.reason.unwrap().contains("gave up"));
        assert!(queued(&s).unwrap().is_empty(), "given up: out of the queue");
    }

    #[test]
    fn feed_imports_bump_the_generation_and_hold_the_blob() {
        let s = MemState::default();
        let feed = |digest: Digest| FeedRecord {
            name: "debian".into(),
            kind: "debian-tracker".into(),
            digest,
            size: 3,
            advisories: 1,
            imported_at_ms: 1,
            generation: 0,
        };
        let (d1, d2) = (Digest::sha256_of(b"f1"), Digest::sha256_of(b"f2"));
        assert_eq!(s.run(MetaCommand::Scan(ScanCommand::ImportFeed { feed: feed(d1.clone()), node: 1 })), MetaResponse::Done);
        assert_eq!(s.run(MetaCommand::Scan(ScanCommand::ImportFeed { feed: feed(d2.clone()), node: 1 })), MetaResponse::Done);
        assert_eq!(generation(&s).unwrap(), 2);
        let refs = |d: &Digest| s.get::<BlobRecord>(&crate::state::keys::blob(d)).unwrap().unwrap().refs;
        assert_eq!((refs(&d1), refs(&d2)), (0, 1), "the older snapshot may be collected");
        assert_eq!(feeds(&s).unwrap()[0].generation, 2);
    }

    #[test]
    fn a_source_is_fetched_by_one_node_at_a_time_and_imports_under_its_lease() {
        let s = MemState::default();
        let put = |url: &str, now_ms| s.run(MetaCommand::Scan(ScanCommand::PutSource { name: "deb".into(), url: url.into(), interval_secs: 60, now_ms }));
        assert_eq!(put("http://a/feed.json", 1_000), MetaResponse::Done);
        assert!(matches!(
            s.run(MetaCommand::Scan(ScanCommand::PutSource { name: "x".into(), url: "".into(), interval_secs: 60, now_ms: 0 })),
            MetaResponse::Refused(_)
        ));
        let acq = |node, now_ms| s.run(MetaCommand::Scan(ScanCommand::AcquireSource { name: "deb".into(), node, now_ms, until_ms: now_ms + 100 }));
        assert_eq!(acq(1, 999), MetaResponse::Refused("not due, or another node is fetching it".into()));
        assert_eq!(acq(1, 1_000), MetaResponse::Done);
        assert!(matches!(acq(2, 1_050), MetaResponse::Refused(_)), "node 1 holds it");
        assert_eq!(acq(1, 1_050), MetaResponse::Done, "the holder extends its lease");
        assert_eq!(acq(2, 1_151), MetaResponse::Done, "lapsed: taken over");
        let d = Digest::sha256_of(b"feed");
        let feed = FeedRecord { name: "deb".into(), kind: "osv".into(), digest: d.clone(), size: 4, advisories: 1, imported_at_ms: 1_200, generation: 0 };
        let fetched = |node, feed: Option<FeedRecord>| {
            s.run(MetaCommand::Scan(ScanCommand::SourceFetched {
                name: "deb".into(),
                node,
                now_ms: 1_200,
                due_at_ms: 61_200,
                etag: Some("\"v1\"".into()),
                last_modified: None,
                outcome: "imported".into(),
                feed,
            }))
        };
        assert!(matches!(fetched(1, Some(feed.clone())), MetaResponse::Refused(_)), "node 1's lease lapsed: its result is not recorded");
        assert_eq!(generation(&s).unwrap(), 0);
        assert_eq!(fetched(2, Some(feed)), MetaResponse::Done);
        assert_eq!(generation(&s).unwrap(), 1);
        assert_eq!(feeds(&s).unwrap()[0].digest, d);
        let src = sources(&s).unwrap().remove(0);
        assert_eq!((src.lease, src.due_at_ms, src.etag.as_deref(), src.checked_by), (None, 61_200, Some("\"v1\""), Some(2)));
        assert!(matches!(acq(1, 2_000), MetaResponse::Refused(_)), "not due until the interval passed");
        // The same URL keeps its validators; another forgets them.
        put("http://a/feed.json", 3_000);
        assert_eq!(sources(&s).unwrap()[0].etag.as_deref(), Some("\"v1\""));
        put("http://b/feed.json", 3_000);
        assert_eq!(sources(&s).unwrap()[0].etag, None);
        assert_eq!(s.run(MetaCommand::Scan(ScanCommand::RemoveSource { name: "deb".into() })), MetaResponse::Done);
        assert!(sources(&s).unwrap().is_empty());
        assert_eq!(feeds(&s).unwrap().len(), 1, "the imported feed stays");
    }
}
