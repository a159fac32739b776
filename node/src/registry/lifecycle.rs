//! The tag lifecycle worker: on the leader, closes into history every tag
//! row whose expiration has passed, and prunes the history rows that
//! ended before their namespace's time machine window (garbage
//! collection then forgets the manifests only those rows held).
//!
//! Readers never wait for it: every node checks expiry when it reads a tag
//! (`berth_raft::state::tags::visible_tag`), so an expired tag is absent
//! everywhere at its moment, whether or not a pass has run. The pass only
//! makes the history show the row as closed. Each close is one
//! `CloseExpired` command, which the state machine re-checks when it
//! applies it: a tag moved, deleted or given a later expiration meanwhile
//! is left alone, so a pass racing a write, or a new leader's pass
//! repeating one, changes nothing twice.

use std::collections::BTreeMap;

use berth_common::Digest;
use berth_raft::command::{namespace_of, MetaCommand, MetaResponse, TagCommand};
use berth_raft::state::tag_policies::{autoprune_repos, autoprune_selection};

use crate::identity::audit::AuditLog;
use berth_raft::state::tags::{expired_tags, prunable_history};
use berth_raft::MetaNodeHandle;

/// One pass on this node as if the clock read `now_ms`: the number of rows
/// closed (none unless this node leads).
pub async fn close_expired_once(meta: &MetaNodeHandle, now_ms: u64) -> u64 {
    if !meta.is_leader() {
        return 0;
    }
    let expired = match expired_tags(&meta.state(), now_ms) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "tag lifecycle: state unreadable");
            return 0;
        }
    };
    let mut closed = 0;
    for (repo, tag) in expired {
        let cmd = MetaCommand::Tag(TagCommand::CloseExpired { repo: repo.clone(), tag: tag.clone(), now_ms });
        match meta.write(berth_raft::Actor::Node, cmd).await {
            Ok(MetaResponse::Done) => {
                closed += 1;
                tracing::info!(%repo, %tag, "expired tag closed into history");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "tag lifecycle pass stopped: metadata unavailable");
                break;
            }
        }
    }
    closed
}

/// One pruning pass on this node as if the clock read `now_ms`: the
/// repositories whose history lost rows (none unless this node leads).
/// Each is one `PruneHistory` command, which re-reads the window when
/// applied, so a window widened meanwhile keeps its rows.
pub async fn prune_history_once(meta: &MetaNodeHandle, now_ms: u64) -> u64 {
    if !meta.is_leader() {
        return 0;
    }
    let repos = match prunable_history(&meta.state(), now_ms) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "tag lifecycle: state unreadable");
            return 0;
        }
    };
    let mut pruned = 0;
    for repo in repos {
        let cmd = MetaCommand::Tag(TagCommand::PruneHistory { repo: repo.clone(), now_ms });
        match meta.write(berth_raft::Actor::Node, cmd).await {
            Ok(MetaResponse::Done) => {
                pruned += 1;
                tracing::info!(%repo, "tag history outside the time machine window pruned");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "tag history pruning stopped: metadata unavailable");
                break;
            }
        }
    }
    pruned
}

/// The performer the usage log names for the auto-prune worker (Quay's).
pub const AUTOPRUNE_PERFORMER: &str = "autoprune worker";

/// One auto-prune pass on this node as if the clock read `now_ms`: the
/// tags deleted (none unless this node leads). Each repository is one
/// `AutoPrune` command, which selects again when applied, so a tag
/// pushed, locked or deleted meanwhile is judged as it is then. Deleted
/// tags go into the time machine, and each is in the usage log as
/// `autoprune_tag_delete` by the "autoprune worker".
pub async fn autoprune_once(meta: &MetaNodeHandle, audit: &AuditLog, now_ms: u64) -> u64 {
    if !meta.is_leader() {
        return 0;
    }
    let repos = match autoprune_repos(&meta.state()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "auto-prune: state unreadable");
            return 0;
        }
    };
    let mut deleted = 0;
    for repo in repos {
        let tags = match autoprune_selection(&meta.state(), &repo, now_ms) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(%repo, error = %e, "auto-prune: state unreadable");
                continue;
            }
        };
        let cmd = MetaCommand::Tag(TagCommand::AutoPrune { repo: repo.clone(), tags, now_ms });
        match meta.write(berth_raft::Actor::Node, cmd).await {
            Ok(MetaResponse::Removed(removed)) => {
                for tag in &removed {
                    tracing::info!(%repo, %tag, "tag deleted by auto-prune");
                    audit.record_worker("autoprune_tag_delete", AUTOPRUNE_PERFORMER, namespace_of(&repo), Some(&repo), vec![("tag", tag.clone())]);
                }
                deleted += removed.len() as u64;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "auto-prune stopped: metadata unavailable");
                break;
            }
        }
    }
    deleted
}

pub use crate::util::parse_lifetime_s;

/// The label that gives a pushed tag its lifetime (Quay's).
pub const EXPIRES_AFTER_LABEL: &str = "quay.expires-after";
/// The label that makes a pushed tag immutable, when `true`.
pub const IMMUTABLE_LABEL: &str = "quay.immutable";
/// The largest image config whose labels are read; a larger one is
/// pushed as if it had none.
const MAX_CONFIG_BYTES: usize = 4 << 20;

/// What an image's labels ask of the tag it is pushed to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LabelLife {
    /// From `quay.expires-after`: the tag ends this long after its push.
    pub expires_after_s: Option<u64>,
    /// `quay.immutable=true`.
    pub immutable: bool,
    /// A `quay.expires-after` that is not a lifetime: ignored, and noted.
    pub malformed: Option<String>,
}

impl LabelLife {
    /// Reads the lifecycle labels out of `labels` (the ones an image
    /// carries, or all the children of an index agree on).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> LabelLife {
        let mut life = LabelLife { immutable: labels.get(IMMUTABLE_LABEL).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")), ..LabelLife::default() };
        if let Some(v) = labels.get(EXPIRES_AFTER_LABEL) {
            match parse_lifetime_s(v) {
                Some(s) if s > 0 => life.expires_after_s = Some(s),
                _ => life.malformed = Some(v.clone()),
            }
        }
        life
    }

    /// The new row's expiration for a push at `pushed_at_ms`: at most the
    /// longest lifetime a tag may have. None for an immutable tag, which
    /// never expires.
    pub fn expiration_ms(&self, pushed_at_ms: u64) -> Option<u64> {
        let after = self.expires_after_s.filter(|_| !self.immutable)?;
        Some(pushed_at_ms.saturating_add(after.saturating_mul(1000).min(berth_raft::command::MAX_TAG_LIFETIME_MS)))
    }
}

/// The labels of an image config (`config.Labels`, in OCI's and Docker's
/// formats alike); none when it is not JSON or has none.
pub fn config_labels(config: &[u8]) -> BTreeMap<String, String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else { return BTreeMap::new() };
    let Some(labels) = v.get("config").and_then(|c| c.get("Labels")).and_then(|l| l.as_object()) else { return BTreeMap::new() };
    labels.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

/// The labels every one of `sets` carries with the same value (an
/// index's children); none for no sets.
pub fn agreed_labels(sets: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = sets.split_first() else { return BTreeMap::new() };
    first.iter().filter(|(k, v)| rest.iter().all(|s| s.get(*k) == Some(*v))).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Reads a whole image config from the blob store (this node's disk, or
/// the nearest holder); none when no node has it or it is too large.
pub async fn read_config(replicator: &berth_replication::Replicator, digest: &Digest) -> Option<Vec<u8>> {
    use futures::StreamExt;
    let body = match replicator.open(digest, None).await {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(%digest, error = %e, "image config unreadable: its labels are not applied");
            return None;
        }
    };
    if body.size > MAX_CONFIG_BYTES as u64 {
        return None;
    }
    let mut out = Vec::with_capacity(body.size as usize);
    let mut stream = body.stream;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if out.len() + c.len() <= MAX_CONFIG_BYTES => out.extend_from_slice(&c),
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "image config unreadable: its labels are not applied");
                return None;
            }
        }
    }
    Some(out)
}

/// Image configs whose lifecycle labels are kept at most (a few hundred
/// bytes each, mostly the digest: few configs carry these labels).
const CONFIG_LABELS_KEPT: usize = 16_384;
/// A config's lifecycle labels larger than this (keys and values) are not kept.
const CONFIG_LABELS_MAX_BYTES: usize = 1024;
/// The labels a push reads ([`LabelLife::from_labels`]).
const LIFECYCLE_LABELS: [&str; 2] = [EXPIRES_AFTER_LABEL, IMMUTABLE_LABEL];

/// The lifecycle labels of image configs read lately, by digest. Every tag
/// pushed for an image reads its config's labels, and the node may hold no
/// copy of the config: then each read streamed it from a peer. A digest
/// names one content for good, so what was read once is the answer.
#[derive(Default)]
pub struct ConfigLabels {
    kept: std::sync::Mutex<KeptLabels>,
}

#[derive(Default)]
struct KeptLabels {
    labels: std::collections::HashMap<Digest, std::sync::Arc<BTreeMap<String, String>>>,
    /// Digests in the order they were kept, the oldest dropped first.
    order: std::collections::VecDeque<Digest>,
}

impl ConfigLabels {
    /// The lifecycle labels of config `digest`, from `load` (its bytes)
    /// unless kept; none when it cannot be read, which is not kept.
    pub async fn of<F>(&self, digest: &Digest, load: impl FnOnce() -> F) -> Option<std::sync::Arc<BTreeMap<String, String>>>
    where
        F: std::future::Future<Output = Option<Vec<u8>>>,
    {
        if let Some(l) = self.kept.lock().expect("config labels lock").labels.get(digest) {
            return Some(l.clone());
        }
        let mut labels = config_labels(&load().await?);
        labels.retain(|k, _| LIFECYCLE_LABELS.contains(&k.as_str()));
        let labels = std::sync::Arc::new(labels);
        if labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= CONFIG_LABELS_MAX_BYTES {
            let mut kept = self.kept.lock().expect("config labels lock");
            if kept.labels.insert(digest.clone(), labels.clone()).is_none() {
                kept.order.push_back(digest.clone());
            }
            while kept.order.len() > CONFIG_LABELS_KEPT {
                if let Some(old) = kept.order.pop_front() {
                    kept.labels.remove(&old);
                }
            }
        }
        Some(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_config_is_read_once_and_the_kept_labels_stay_bounded() {
        let cache = ConfigLabels::default();
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let config = |n: usize| format!(r#"{{"config":{{"Labels":{{"{EXPIRES_AFTER_LABEL}":"{n}h","other":"x"}}}}}}"#).into_bytes();
        let read = |n: usize| {
            loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::future::ready(Some(config(n)))
        };
        let d0 = Digest::sha256_of(&config(0));
        for _ in 0..3 {
            let labels = cache.of(&d0, || read(0)).await.expect("labels");
            assert_eq!(*labels, BTreeMap::from([(EXPIRES_AFTER_LABEL.to_string(), "0h".to_string())]), "the lifecycle labels only");
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1, "read once, then kept");
        // Unreadable: no answer, and nothing kept that would hide a later read.
        let d1 = Digest::sha256_of(&config(1));
        assert!(cache.of(&d1, || std::future::ready(None)).await.is_none());
        assert!(cache.of(&d1, || read(1)).await.is_some());
        // Past the bound the oldest go first.
        for n in 2..CONFIG_LABELS_KEPT + 2 {
            cache.of(&Digest::sha256_of(&config(n)), || read(n)).await;
        }
        let kept = cache.kept.lock().unwrap();
        assert_eq!((kept.labels.len(), kept.order.len()), (CONFIG_LABELS_KEPT, CONFIG_LABELS_KEPT));
        assert!(!kept.labels.contains_key(&d0) && !kept.labels.contains_key(&d1), "the two oldest went first");
        drop(kept);
        // Labels too large to keep are answered, not kept.
        let big = format!(r#"{{"config":{{"Labels":{{"{IMMUTABLE_LABEL}":"{}"}}}}}}"#, "x".repeat(CONFIG_LABELS_MAX_BYTES));
        let db = Digest::sha256_of(big.as_bytes());
        assert!(cache.of(&db, || std::future::ready(Some(big.clone().into_bytes()))).await.is_some());
        assert!(!cache.kept.lock().unwrap().labels.contains_key(&db));
    }

    #[test]
    fn labels_give_a_lifetime_or_a_lock() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let life = LabelLife::from_labels(&labels(&[(EXPIRES_AFTER_LABEL, "5s")]));
        assert_eq!((life.expires_after_s, life.expiration_ms(1000), life.malformed.clone()), (Some(5), Some(6000), None));
        let life = LabelLife::from_labels(&labels(&[(EXPIRES_AFTER_LABEL, "soon")]));
        assert_eq!((life.expires_after_s, life.malformed.as_deref()), (None, Some("soon")));
        assert_eq!(LabelLife::from_labels(&labels(&[(EXPIRES_AFTER_LABEL, "0s")])).malformed.as_deref(), Some("0s"), "a tag gone at its push is no lifetime");
        let life = LabelLife::from_labels(&labels(&[(EXPIRES_AFTER_LABEL, "1d"), (IMMUTABLE_LABEL, "True")]));
        assert!(life.immutable);
        assert_eq!(life.expiration_ms(0), None, "a lock never expires");
        assert_eq!(LabelLife::from_labels(&labels(&[(EXPIRES_AFTER_LABEL, "500y")])).expiration_ms(0), Some(berth_raft::command::MAX_TAG_LIFETIME_MS));
        assert!(!LabelLife::from_labels(&labels(&[(IMMUTABLE_LABEL, "yes")])).immutable);
        let config = br#"{"architecture":"amd64","config":{"Labels":{"quay.expires-after":"2h","n":7}}}"#;
        assert_eq!(config_labels(config), labels(&[(EXPIRES_AFTER_LABEL, "2h")]), "string values only");
        assert!(config_labels(b"not json").is_empty() && config_labels(br#"{"config":{}}"#).is_empty());
        let a = labels(&[(EXPIRES_AFTER_LABEL, "2h"), ("x", "1")]);
        let b = labels(&[(EXPIRES_AFTER_LABEL, "2h"), ("x", "2")]);
        assert_eq!(agreed_labels(&[a.clone(), b.clone()]), labels(&[(EXPIRES_AFTER_LABEL, "2h")]));
        assert!(agreed_labels(&[a, labels(&[])]).is_empty() && agreed_labels(&[]).is_empty());
    }

    #[test]
    fn lifetimes_are_an_integer_and_a_unit() {
        for (text, s) in [("5s", 5), ("20h", 72_000), ("0s", 0), ("2w", 1_209_600), ("1y", 31_536_000), ("3m", 180), (" 1d ", 86_400)] {
            assert_eq!(parse_lifetime_s(text), Some(s), "{text}");
        }
        for bad in ["", "s", "5", "5x", "-5s", "1.5h", "5 s", "99999999999999999999y", "18446744073709551615y", "5S", "５s"] {
            assert_eq!(parse_lifetime_s(bad), None, "{bad:?}");
        }
    }
}
