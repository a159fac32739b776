//! The tag lifecycle worker: on the leader, closes into history every tag
//! row whose expiration has passed.
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
use berth_raft::state::tags::expired_tags;
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
