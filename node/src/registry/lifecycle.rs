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

use berth_raft::command::{MetaCommand, MetaResponse, TagCommand};
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

/// A lifetime as Quay writes it (`quay.expires-after`, the time machine
/// options): an integer and a unit, `s`, `m`, `h`, `d`, `w` or `y`; in
/// seconds. `None` for anything else, or what does not fit.
pub fn parse_lifetime_s(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 24 * 3600,
        'w' => 7 * 24 * 3600,
        'y' => 365 * 24 * 3600,
        _ => return None,
    };
    n.checked_mul(per)
}

#[cfg(test)]
mod tests {
    use super::*;

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
