//! Notifications and their replicated outbox.
//!
//! An event is queued in the same command as the change that causes it
//! (a push that moves a tag queues `repo_push` for every matching
//! notification), so a crash, a leader change or a cut-off region delays
//! a notification but never loses it. One node (the leader) delivers what
//! waits and records the outcome here: delivered events leave the outbox,
//! and so do events given up on after their retries, which count towards
//! the notification's `number_of_failures`. At
//! [`NOTIFICATION_MAX_FAILURES`] in a row the notification is skipped: new
//! events are not queued (counted in `dropped`) and waiting ones wait,
//! until a reset. Each outbox is bounded ([`NOTIFICATION_OUTBOX_MAX`]).
//!
//! Keys (see the table in `state`):
//!
//! | key | value |
//! |---|---|
//! | `W` + uuid | [`NotificationRecord`] |
//! | `V` + `r`/`n` + repo or namespace + `\0` + uuid | `()`: the notifications of a scope |
//! | `w` + uuid + `\0` + seq (u64 BE) | [`OutboxRecord`] |
//! | `x` + uuid + `\0` + once-key | until when (ms, u64): a worker's event already queued |

use super::{decode, Changes, StateError, StateRead};
use crate::command::*;

pub mod keys {
    use crate::command::NotificationScope;

    pub const NOTIFICATION_PREFIX: &[u8] = b"W";
    pub const SCOPE_PREFIX: &[u8] = b"V";
    pub const OUTBOX_PREFIX: &[u8] = b"w";
    pub const ONCE_PREFIX: &[u8] = b"x";

    pub fn notification(uuid: &str) -> Vec<u8> {
        let mut k = NOTIFICATION_PREFIX.to_vec();
        k.extend_from_slice(uuid.as_bytes());
        k
    }
    /// Prefix of the notifications of `scope`.
    pub fn scope(scope: &NotificationScope) -> Vec<u8> {
        let mut k = SCOPE_PREFIX.to_vec();
        match scope {
            NotificationScope::Repository(r) => {
                k.push(b'r');
                k.extend_from_slice(r.as_bytes());
            }
            NotificationScope::Namespace(n) => {
                k.push(b'n');
                k.extend_from_slice(n.as_bytes());
            }
        }
        k.push(0);
        k
    }
    pub fn scope_entry(scope: &NotificationScope, uuid: &str) -> Vec<u8> {
        let mut k = self::scope(scope);
        k.extend_from_slice(uuid.as_bytes());
        k
    }
    /// Prefix of notification `uuid`'s waiting events, oldest first.
    pub fn outbox_of(uuid: &str) -> Vec<u8> {
        let mut k = OUTBOX_PREFIX.to_vec();
        k.extend_from_slice(uuid.as_bytes());
        k.push(0);
        k
    }
    pub fn outbox(uuid: &str, seq: u64) -> Vec<u8> {
        let mut k = outbox_of(uuid);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }
    pub fn once_of(uuid: &str) -> Vec<u8> {
        let mut k = ONCE_PREFIX.to_vec();
        k.extend_from_slice(uuid.as_bytes());
        k.push(0);
        k
    }
    pub fn once(uuid: &str, key: &str) -> Vec<u8> {
        let mut k = once_of(uuid);
        k.extend_from_slice(key.as_bytes());
        k
    }
}

/// The notifications of `scope`, in uuid order.
pub fn of_scope(state: &impl StateRead, scope: &NotificationScope) -> Result<Vec<NotificationRecord>, StateError> {
    let prefix = keys::scope(scope);
    let mut out = Vec::new();
    for (k, _) in state.scan_raw(&prefix)? {
        let uuid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        if let Some(n) = state.get::<NotificationRecord>(&keys::notification(&uuid))? {
            out.push(n);
        }
    }
    Ok(out)
}

/// Every notification, in uuid order.
pub fn all(state: &impl StateRead) -> Result<Vec<NotificationRecord>, StateError> {
    state.scan(keys::NOTIFICATION_PREFIX)
}

/// Notification `uuid`'s waiting events, oldest first.
pub fn outbox(state: &impl StateRead, uuid: &str) -> Result<Vec<OutboxRecord>, StateError> {
    state.scan(&keys::outbox_of(uuid))
}

/// The notifications an event of `repo` of kind `kind` goes to: the
/// repository's own, then its namespace's.
fn matching(state: &impl StateRead, repo: &str, kind: &str) -> Result<Vec<NotificationRecord>, StateError> {
    let mut out = of_scope(state, &NotificationScope::Repository(repo.to_string()))?;
    if let Some((ns, _)) = repo.split_once('/') {
        out.extend(of_scope(state, &NotificationScope::Namespace(ns.to_string()))?);
    }
    out.retain(|n| n.event == kind);
    Ok(out)
}

/// Queues `event` for `n` (whose record the caller writes back), unless
/// it is skipped or its outbox is full; then the event is counted in
/// `dropped`. Test events are queued even for a skipped notification.
fn enqueue(state: &impl StateRead, ch: &mut Changes, n: &mut NotificationRecord, event: NotificationEvent, now_ms: u64) -> Result<bool, StateError> {
    let is_test = matches!(event, NotificationEvent::Test { .. });
    let waiting = state.scan_raw(&keys::outbox_of(&n.uuid))?.len();
    if (n.skipped() && !is_test) || waiting >= NOTIFICATION_OUTBOX_MAX {
        n.dropped += 1;
        return Ok(false);
    }
    let seq = n.next_seq;
    n.next_seq += 1;
    ch.put(keys::outbox(&n.uuid, seq), &OutboxRecord { notification: n.uuid.clone(), seq, event, created_at_ms: now_ms });
    Ok(true)
}

/// After a push was applied: `repo_push` for every matching notification,
/// when the push moved `tag` (`moved`, decided against the state before it).
pub(super) fn on_push(state: &impl StateRead, ch: &mut Changes, rec: &ManifestRecord, tag: &str, origin: &PushOrigin) -> Result<(), StateError> {
    for mut n in matching(state, &rec.repo, "repo_push")? {
        let event = NotificationEvent::RepoPush {
            repo: rec.repo.clone(),
            tags: vec![tag.to_string()],
            digest: rec.digest.clone(),
            origin: origin.clone(),
            at_ms: rec.pushed_at_ms,
        };
        enqueue(state, ch, &mut n, event, rec.pushed_at_ms)?;
        ch.put(keys::notification(&n.uuid), &n);
    }
    Ok(())
}

/// `event` (of `repo`) for every matching notification, in the command
/// that caused it (a mirror's sync start and outcome).
pub(super) fn on_event(state: &impl StateRead, ch: &mut Changes, repo: &str, event: NotificationEvent, now_ms: u64) -> Result<(), StateError> {
    for mut n in matching(state, repo, event.kind())? {
        enqueue(state, ch, &mut n, event.clone(), now_ms)?;
        ch.put(keys::notification(&n.uuid), &n);
    }
    Ok(())
}

/// Whether a push of `digest` as `tag` at `at_ms` moves the tag.
pub(super) fn push_moves(state: &impl StateRead, repo: &str, tag: &str, digest: &berth_common::Digest, at_ms: u64) -> Result<bool, StateError> {
    Ok(super::tags::visible_tag(state, repo, tag, at_ms)?.is_none_or(|t| t.digest != *digest))
}

fn scope_exists(state: &impl StateRead, scope: &NotificationScope) -> Result<bool, StateError> {
    Ok(match scope {
        NotificationScope::Repository(r) => state.get_raw(&super::keys::repo(r))?.is_some(),
        NotificationScope::Namespace(ns) => state.get_raw(&super::keys::org(ns))?.is_some() || state.get_raw(&super::keys::user(ns))?.is_some(),
    })
}

fn remove(state: &impl StateRead, ch: &mut Changes, n: &NotificationRecord) -> Result<(), StateError> {
    ch.delete(keys::notification(&n.uuid));
    ch.delete(keys::scope_entry(&n.scope, &n.uuid));
    for prefix in [keys::outbox_of(&n.uuid), keys::once_of(&n.uuid)] {
        for (k, _) in state.scan_raw(&prefix)? {
            ch.delete(k);
        }
    }
    Ok(())
}

/// With a repository go its own notifications and their outboxes.
pub(super) fn forget_scope(state: &impl StateRead, ch: &mut Changes, scope: &NotificationScope) -> Result<(), StateError> {
    for n in of_scope(state, scope)? {
        remove(state, ch, &n)?;
    }
    Ok(())
}

pub(super) fn apply(state: &impl StateRead, ch: &mut Changes, cmd: &NotificationCommand) -> Result<MetaResponse, StateError> {
    use NotificationCommand as C;
    let get = |uuid: &str| state.get::<NotificationRecord>(&keys::notification(uuid));
    match cmd {
        C::Create(rec) => {
            if !scope_exists(state, &rec.scope)? {
                let what = match &rec.scope {
                    NotificationScope::Repository(r) => format!("repository {r}"),
                    NotificationScope::Namespace(n) => format!("namespace {n}"),
                };
                return Ok(MetaResponse::Refused(format!("{what} does not exist")));
            }
            if get(&rec.uuid)?.is_some() {
                return Ok(MetaResponse::Refused(format!("notification {} exists", rec.uuid)));
            }
            if state.scan_raw(&keys::scope(&rec.scope))?.len() >= NOTIFICATIONS_PER_SCOPE_MAX {
                return Ok(MetaResponse::Refused(format!("at most {NOTIFICATIONS_PER_SCOPE_MAX} notifications per repository or namespace")));
            }
            ch.put(keys::notification(&rec.uuid), rec);
            ch.put(keys::scope_entry(&rec.scope, &rec.uuid), &());
            Ok(MetaResponse::Done)
        }
        C::Delete { uuid } => {
            let Some(n) = get(uuid)? else { return Ok(MetaResponse::NotFound) };
            remove(state, ch, &n)?;
            Ok(MetaResponse::Done)
        }
        C::Reset { uuid } => {
            let Some(mut n) = get(uuid)? else { return Ok(MetaResponse::NotFound) };
            n.number_of_failures = 0;
            ch.put(keys::notification(uuid), &n);
            Ok(MetaResponse::Done)
        }
        C::Test { uuid, now_ms } => {
            let Some(mut n) = get(uuid)? else { return Ok(MetaResponse::NotFound) };
            let event = NotificationEvent::Test { event: n.event.clone() };
            if !enqueue(state, ch, &mut n, event, *now_ms)? {
                return Ok(MetaResponse::Refused(format!("notification {uuid} has {NOTIFICATION_OUTBOX_MAX} events waiting")));
            }
            ch.put(keys::notification(uuid), &n);
            Ok(MetaResponse::Done)
        }
        C::Delivered { uuid, seq } | C::GaveUp { uuid, seq } => {
            let Some(mut n) = get(uuid)? else { return Ok(MetaResponse::NotFound) };
            let key = keys::outbox(uuid, *seq);
            let Some(ev) = state.get::<OutboxRecord>(&key)? else { return Ok(MetaResponse::NotFound) };
            ch.delete(key);
            let is_test = matches!(ev.event, NotificationEvent::Test { .. });
            if matches!(cmd, C::Delivered { .. }) {
                n.delivered += 1;
                n.number_of_failures = 0;
            } else {
                n.failed += 1;
                // A failed test says nothing about the events' stream.
                if !is_test {
                    n.number_of_failures = n.number_of_failures.saturating_add(1);
                }
            }
            ch.put(keys::notification(uuid), &n);
            Ok(MetaResponse::Done)
        }
        C::Emit { uuid, event, once, now_ms } => {
            let Some(mut n) = get(uuid)? else { return Ok(MetaResponse::NotFound) };
            if event.kind() != n.event {
                return Ok(MetaResponse::Refused(format!("notification {uuid} takes {} events, not {}", n.event, event.kind())));
            }
            if let Some(once) = once {
                let key = keys::once(uuid, once);
                if state.get_raw(&key)?.is_some() {
                    return Ok(MetaResponse::Conflict { current: None });
                }
                // Kept until what it announced has passed (an expiry's
                // moment; a day for other events), then forgotten here.
                let until_ms = match event {
                    NotificationEvent::ImageExpiry { expiration_ms, .. } => *expiration_ms,
                    _ => now_ms.saturating_add(86_400_000),
                };
                for (k, v) in state.scan_raw(&keys::once_of(uuid))? {
                    if decode::<u64>(&k, &v).is_ok_and(|t| t < *now_ms) {
                        ch.delete(k);
                    }
                }
                ch.put(key, &until_ms);
            }
            enqueue(state, ch, &mut n, event.clone(), *now_ms)?;
            ch.put(keys::notification(uuid), &n);
            Ok(MetaResponse::Done)
        }
    }
}

/// Every waiting event of every notification, oldest of each first.
pub fn pending(state: &impl StateRead) -> Result<Vec<OutboxRecord>, StateError> {
    state.scan_raw(keys::OUTBOX_PREFIX)?.iter().map(|(k, v)| decode(k, v)).collect()
}

#[cfg(test)]
mod tests {
    use berth_common::Digest;

    use super::*;
    use crate::state::MemState;

    fn org(s: &MemState, name: &str) {
        let cmd = MetaCommand::Identity(IdentityCommand::CreateOrg {
            org: OrgRecord { name: name.into(), email: None, created_at_ms: 0 },
            owner: Some("admin".into()),
        });
        assert_eq!(s.run(cmd), MetaResponse::Done);
    }

    fn notification(uuid: &str, scope: NotificationScope, event: &str) -> NotificationRecord {
        NotificationRecord {
            uuid: uuid.into(),
            scope,
            title: String::new(),
            event: event.into(),
            method: "webhook".into(),
            config_json: "{}".into(),
            event_config_json: "{}".into(),
            secret: "s".into(),
            created_at_ms: 0,
            number_of_failures: 0,
            next_seq: 0,
            delivered: 0,
            failed: 0,
            dropped: 0,
        }
    }

    fn origin() -> PushOrigin {
        PushOrigin { pushed_by: "tom".into(), node: 2, region: "eu".into(), registry: "reg:5000".into() }
    }

    fn push(s: &MemState, repo: &str, tag: &str, body: &[u8], at_ms: u64) -> MetaResponse {
        let record = ManifestRecord {
            repo: repo.into(),
            digest: Digest::sha256_of(body),
            media_type: "m".into(),
            bytes: body.to_vec(),
            blobs: vec![],
            children: vec![],
            subject: None,
            pushed_at_ms: at_ms,
        };
        s.run(MetaCommand::PutManifestFrom { record, tag: Some(tag.into()), origin: origin(), expiration_ms: None, immutable: false })
    }

    fn notify(s: &MemState, cmd: NotificationCommand) -> MetaResponse {
        s.run(MetaCommand::Notification(cmd))
    }

    fn rec(s: &MemState, uuid: &str) -> NotificationRecord {
        s.get(&keys::notification(uuid)).unwrap().unwrap()
    }

    /// A push that moves a tag queues one event for each notification of
    /// the repository and of its namespace, in the same command; a push
    /// that moves nothing queues nothing.
    #[test]
    fn pushes_that_move_tags_queue_events() {
        let s = MemState::default();
        org(&s, "team");
        let repo_scope = NotificationScope::Repository("team/app".into());
        assert!(matches!(notify(&s, NotificationCommand::Create(notification("a", repo_scope.clone(), "repo_push"))), MetaResponse::Refused(_)));
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("team/app", 0))));
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("team/other", 0))));
        assert_eq!(notify(&s, NotificationCommand::Create(notification("a", repo_scope.clone(), "repo_push"))), MetaResponse::Done);
        assert!(matches!(notify(&s, NotificationCommand::Create(notification("a", repo_scope.clone(), "repo_push"))), MetaResponse::Refused(_)));
        let ns = NotificationScope::Namespace("team".into());
        assert_eq!(notify(&s, NotificationCommand::Create(notification("b", ns, "repo_push"))), MetaResponse::Done);
        assert_eq!(notify(&s, NotificationCommand::Create(notification("c", repo_scope, "repo_image_expiry"))), MetaResponse::Done);

        assert_eq!(push(&s, "team/app", "v1", b"one", 10), MetaResponse::Done);
        assert_eq!(push(&s, "team/app", "v1", b"one", 11), MetaResponse::Done, "the same again moves nothing");
        assert_eq!(push(&s, "team/other", "v1", b"x", 12), MetaResponse::Done);
        let a = outbox(&s, "a").unwrap();
        assert_eq!(a.len(), 1);
        assert!(matches!(&a[0].event, NotificationEvent::RepoPush { repo, tags, origin: o, .. } if repo == "team/app" && tags == &["v1"] && *o == origin()));
        assert_eq!(a[0].id(), "a-0");
        assert_eq!(outbox(&s, "b").unwrap().len(), 2, "the namespace's sees both repositories");
        assert!(outbox(&s, "c").unwrap().is_empty(), "another event kind");
        assert_eq!(pending(&s).unwrap().len(), 3);

        // Delivered leaves the outbox; an unknown seq is NotFound.
        assert_eq!(notify(&s, NotificationCommand::Delivered { uuid: "a".into(), seq: 0 }), MetaResponse::Done);
        assert_eq!(notify(&s, NotificationCommand::Delivered { uuid: "a".into(), seq: 0 }), MetaResponse::NotFound);
        assert_eq!(rec(&s, "a").delivered, 1);
        // A deleted repository takes its notifications and their events.
        s.run(MetaCommand::Identity(IdentityCommand::DeleteRepository { name: "team/app".into() }));
        assert_eq!(s.get_raw(&keys::notification("a")).unwrap(), None);
        assert_eq!(outbox(&s, "b").unwrap().len(), 2, "the namespace's stay");
    }

    /// Three events given up on in a row skip the notification: new
    /// events are dropped (counted) until a reset; a delivery in between
    /// starts the count again.
    #[test]
    fn three_failures_in_a_row_skip_until_reset() {
        let s = MemState::default();
        org(&s, "team");
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("team/app", 0))));
        notify(&s, NotificationCommand::Create(notification("a", NotificationScope::Repository("team/app".into()), "repo_push")));
        for i in 0..5u64 {
            push(&s, "team/app", &format!("t{i}"), format!("m{i}").as_bytes(), i);
        }
        let give_up = |seq| notify(&s, NotificationCommand::GaveUp { uuid: "a".into(), seq });
        give_up(0);
        give_up(1);
        notify(&s, NotificationCommand::Delivered { uuid: "a".into(), seq: 2 });
        assert_eq!(rec(&s, "a").number_of_failures, 0, "a delivery ends the streak");
        give_up(3);
        give_up(4);
        push(&s, "team/app", "t5", b"m5", 5);
        give_up(5);
        assert_eq!(rec(&s, "a").number_of_failures, 3);
        assert!(rec(&s, "a").skipped());
        push(&s, "team/app", "t6", b"m6", 6);
        assert!(outbox(&s, "a").unwrap().is_empty(), "skipped: nothing queued");
        assert_eq!(rec(&s, "a").dropped, 1);
        assert_eq!(notify(&s, NotificationCommand::Test { uuid: "a".into(), now_ms: 7 }), MetaResponse::Done, "a test is queued even so");
        assert_eq!(notify(&s, NotificationCommand::Reset { uuid: "a".into() }), MetaResponse::Done);
        push(&s, "team/app", "t7", b"m7", 8);
        let ids: Vec<String> = outbox(&s, "a").unwrap().iter().map(|e| e.id()).collect();
        assert_eq!(ids, ["a-6", "a-7"]);
    }

    /// A worker's event is queued once for its once-key; the kind must be
    /// the notification's; the outbox holds at most its bound.
    #[test]
    fn emits_are_once_and_the_outbox_is_bounded() {
        let s = MemState::default();
        org(&s, "team");
        s.run(MetaCommand::Identity(IdentityCommand::CreateRepository(RepositoryRecord::new("team/app", 0))));
        let scope = NotificationScope::Repository("team/app".into());
        notify(&s, NotificationCommand::Create(notification("e", scope.clone(), "repo_image_expiry")));
        let expiry =
            NotificationEvent::ImageExpiry { repo: "team/app".into(), tags: vec!["v1".into()], digest: Digest::sha256_of(b"x"), expiration_ms: 9, days: 1 };
        let emit = |once: &str, event: NotificationEvent| notify(&s, NotificationCommand::Emit { uuid: "e".into(), event, once: Some(once.into()), now_ms: 1 });
        assert_eq!(emit("v1@9", expiry.clone()), MetaResponse::Done);
        assert_eq!(emit("v1@9", expiry.clone()), MetaResponse::Conflict { current: None });
        assert!(matches!(emit("v2", NotificationEvent::Test { event: "repo_push".into() }), MetaResponse::Refused(_)));
        assert_eq!(outbox(&s, "e").unwrap().len(), 1);
        // Once its moment has passed, a once-key is forgotten by the next emit.
        let later =
            NotificationEvent::ImageExpiry { repo: "team/app".into(), tags: vec!["v2".into()], digest: Digest::sha256_of(b"y"), expiration_ms: 99, days: 1 };
        let emit_at = |now_ms| notify(&s, NotificationCommand::Emit { uuid: "e".into(), event: later.clone(), once: Some("v2@99".into()), now_ms });
        assert_eq!(emit_at(10), MetaResponse::Done);
        assert_eq!(s.scan_raw(&keys::once_of("e")).unwrap().len(), 1, "v1@9 was forgotten at 10");

        notify(&s, NotificationCommand::Create(notification("p", scope, "repo_push")));
        for i in 0..NOTIFICATION_OUTBOX_MAX as u64 + 2 {
            push(&s, "team/app", "t", format!("m{i}").as_bytes(), i);
        }
        assert_eq!(outbox(&s, "p").unwrap().len(), NOTIFICATION_OUTBOX_MAX);
        assert_eq!(rec(&s, "p").dropped, 2);
        assert_eq!(notify(&s, NotificationCommand::Delete { uuid: "p".into() }), MetaResponse::Done);
        assert!(outbox(&s, "p").unwrap().is_empty());
    }
}
