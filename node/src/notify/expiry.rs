//! `repo_image_expiry`: on the leader, finds the tags that expire within
//! each such notification's `days` and queues one event per tag and
//! expiration. The `Emit` command carries a once-key (repository, tag,
//! expiration), which the state machine refuses the second time, so a
//! repeated pass or a new leader's pass queues nothing twice; a tag given
//! a new expiration is announced again.

use berth_raft::command::{MetaCommand, MetaResponse, NotificationCommand, NotificationEvent, NotificationScope, RepositoryRecord, TagLifeRecord};
use berth_raft::state::{decode_record, keys, notifications, tags, StateRead};
use berth_raft::{Actor, MetaNodeHandle};

const DAY_MS: u64 = 86_400_000;

/// One pass as if the clock read `now_ms`: the number of events queued
/// (none unless this node leads).
pub async fn emit_expiring_once(meta: &MetaNodeHandle, now_ms: u64) -> u64 {
    if !meta.is_leader() {
        return 0;
    }
    let state = meta.state();
    let found = match expiring(&state, now_ms) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "notifications: state unreadable");
            return 0;
        }
    };
    let mut queued = 0;
    for (uuid, once, event) in found {
        let cmd = MetaCommand::Notification(NotificationCommand::Emit { uuid, event, once: Some(once), now_ms });
        match meta.write(Actor::Node, cmd).await {
            Ok(MetaResponse::Done) => queued += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "expiry notifications pass stopped: metadata unavailable");
                break;
            }
        }
    }
    queued
}

type Found = (String, String, NotificationEvent);

fn expiring(state: &impl StateRead, now_ms: u64) -> Result<Vec<Found>, berth_raft::state::StateError> {
    let mut out = Vec::new();
    for n in notifications::all(state)? {
        if n.event != "repo_image_expiry" || n.skipped() {
            continue;
        }
        let days = serde_json::from_str::<serde_json::Value>(&n.event_config_json).ok().and_then(|v| v.get("days").and_then(|d| d.as_u64())).unwrap_or(0);
        if days == 0 {
            continue;
        }
        let repos = match &n.scope {
            NotificationScope::Repository(r) => vec![r.clone()],
            NotificationScope::Namespace(ns) => state.scan::<RepositoryRecord>(&keys::repos_in(ns))?.into_iter().map(|r| r.name).collect(),
        };
        for repo in repos {
            let prefix = keys::tag_lives_of(&repo);
            for (k, v) in state.scan_raw(&prefix)? {
                let life: TagLifeRecord = decode_record(&k, &v)?;
                let Some(exp) = life.expiration_ms else { continue };
                if exp <= now_ms || exp > now_ms + days * DAY_MS {
                    continue;
                }
                let tag = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let Some(live) = tags::visible_tag(state, &repo, &tag, now_ms)? else { continue };
                let once = format!("{repo}:{tag}@{exp}");
                let event = NotificationEvent::ImageExpiry { repo: repo.clone(), tags: vec![tag], digest: live.digest, expiration_ms: exp, days };
                out.push((n.uuid.clone(), once, event));
            }
        }
    }
    Ok(out)
}
