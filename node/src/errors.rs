//! The one mapping of metadata-plane errors to the API's errors: every
//! service of the node answers a failed read or write the same way.

use berth_gateway::{ApiError, ErrorCode};
use berth_raft::MetaError;

/// A failed metadata write or barrier: no quorum, or an outcome not known
/// (the write may yet commit), is a 503 the client may retry; a write the
/// leader refused for its actor is a 403; anything else is a 500.
pub fn meta_err(e: MetaError) -> ApiError {
    match e {
        MetaError::Unavailable(_) | MetaError::Unknown(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        MetaError::Refused(_) => ApiError::new(ErrorCode::Denied, e.to_string()),
        _ => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

/// A failed read of this node's own state: the store is broken, a 500.
pub fn state_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("metadata read failed: {e}"))
}

/// A write refused because it would change an immutable tag: `409
/// TAG_IMMUTABLE`, on `/v2` and the API alike.
pub fn tag_immutable(tag: &str) -> ApiError {
    ApiError::new(ErrorCode::TagImmutable, format!("tag {tag} is immutable: unlock it first (an administrator of the repository may)"))
}

/// A write the repository's state refused (inside the metadata command):
/// `405 UNSUPPORTED`, on `/v2` and the API alike.
pub fn repository_state(state: berth_raft::mirror::RepoState) -> ApiError {
    use berth_raft::mirror::RepoState;
    let message = match state {
        RepoState::ReadOnly => "repository is read-only",
        RepoState::Mirror => "repository is a mirror: only its mirror robot writes to it",
        RepoState::Normal => "repository refused the write",
    };
    ApiError::method_not_allowed(message)
}

/// `cmd` as `principal` makes it: a robot's content write names the robot
/// ([`MetaCommand::AsRobot`]), so a mirror repository can tell its
/// robot's writes from others'; the node operator's is a proxy cache's
/// fill ([`berth_raft::ProxyCacheCommand::Fill`]), the one writer a
/// proxy-cache organization takes.
pub fn as_principal(principal: &berth_gateway::Principal, cmd: berth_raft::MetaCommand) -> berth_raft::MetaCommand {
    let content = berth_raft::state::mirror::content_repo(&cmd).is_some();
    match principal {
        berth_gateway::Principal::Robot { name } if content => berth_raft::MetaCommand::AsRobot { robot: name.clone(), cmd: Box::new(cmd) },
        berth_gateway::Principal::Operator if content => berth_raft::MetaCommand::ProxyCache(berth_raft::ProxyCacheCommand::Fill(Box::new(cmd))),
        _ => cmd,
    }
}

/// A write refused because the repository is in a proxy-cache
/// organization: `405 UNSUPPORTED`, on `/v2` and the API alike.
pub fn proxy_cache(org: &str, upstream: &str) -> ApiError {
    ApiError::method_not_allowed(berth_raft::state::proxycache::refusal(org, upstream))
}
