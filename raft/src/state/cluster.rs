//! The rules of the cluster's own records: its identity, its nodes and
//! their roles, and join tokens.

use berth_common::NodeId;

use super::{keys, Changes, StateError, StateRead};
use crate::command::*;

pub(super) fn bootstrap(state: &impl StateRead, ch: &mut Changes, rec: &ClusterRecord) -> Result<MetaResponse, StateError> {
    if state.get_raw(keys::CLUSTER)?.is_some() {
        return Ok(MetaResponse::Refused("the cluster is already initialized".into()));
    }
    ch.put(keys::CLUSTER.to_vec(), rec);
    // Every member of a new cluster runs this release or a later one.
    super::registry::index_blob_repos(ch)?;
    Ok(MetaResponse::Done)
}

pub(super) fn register_node(
    state: &impl StateRead,
    ch: &mut Changes,
    reg: &NodeRegistration,
    token: Option<&TokenProof>,
    now_ms: u64,
) -> Result<MetaResponse, StateError> {
    if let Err(why) = reg.validate() {
        return Ok(MetaResponse::Refused(why.to_string()));
    }
    if let Some(proof) = token {
        let Some(mut rec) = state.get::<JoinTokenRecord>(&keys::token(&proof.id))? else {
            return Ok(MetaResponse::Refused("join token is not known to this cluster".into()));
        };
        if let Some(why) = rec.refusal(proof, now_ms) {
            return Ok(MetaResponse::Refused(why.into()));
        }
        rec.uses += 1;
        ch.put(keys::token(&proof.id), &rec);
    }
    let nodes: Vec<NodeRecord> = state.scan(keys::NODE_PREFIX)?;
    if let Some(n) = nodes.iter().find(|n| !n.removed && n.peer_addr == reg.peer_addr) {
        return Ok(MetaResponse::Refused(format!("node {} is already registered at peer address {}", n.id, reg.peer_addr)));
    }
    let id: u64 = state.get(keys::NEXT_NODE_ID)?.unwrap_or(1);
    ch.put(keys::NEXT_NODE_ID.to_vec(), &(id + 1));
    ch.put(
        keys::node(id),
        &NodeRecord {
            id,
            region: reg.region.clone(),
            peer_addr: reg.peer_addr.clone(),
            http_addr: reg.http_addr.clone(),
            role: reg.role,
            removed: false,
            joined_at_ms: now_ms,
        },
    );
    Ok(MetaResponse::NodeId(id))
}

pub(super) fn set_node_role(state: &impl StateRead, ch: &mut Changes, node: NodeId, role: NodeRole) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<NodeRecord>(&keys::node(node))?.filter(|r| !r.removed) else { return Ok(MetaResponse::NotFound) };
    // Promoted nodes always vote (see `membership`), so more than
    // MAX_VOTERS of them could never be honoured. Counted here, so two
    // promotes racing cannot both pass.
    let others = state.scan::<NodeRecord>(keys::NODE_PREFIX)?.into_iter().filter(|n| !n.removed && n.role == NodeRole::Voter && n.id != node).count();
    if role == NodeRole::Voter && others >= MAX_VOTERS {
        return Ok(MetaResponse::Refused(format!(
            "node {node} not promoted: {others} nodes are promoted already and a cluster has at most {MAX_VOTERS} voters; demote one first"
        )));
    }
    rec.role = role;
    ch.put(keys::node(node), &rec);
    Ok(MetaResponse::Done)
}

pub(super) fn remove_node(state: &impl StateRead, ch: &mut Changes, node: NodeId) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<NodeRecord>(&keys::node(node))?.filter(|r| !r.removed) else { return Ok(MetaResponse::NotFound) };
    rec.removed = true;
    ch.put(keys::node(node), &rec);
    Ok(MetaResponse::Done)
}

pub(super) fn create_join_token(state: &impl StateRead, ch: &mut Changes, rec: &JoinTokenRecord) -> Result<MetaResponse, StateError> {
    if state.get_raw(&keys::token(&rec.id))?.is_some() {
        return Ok(MetaResponse::Refused(format!("token {} exists", rec.id)));
    }
    ch.put(keys::token(&rec.id), rec);
    Ok(MetaResponse::Done)
}

pub(super) fn revoke_join_token(state: &impl StateRead, ch: &mut Changes, id: &str) -> Result<MetaResponse, StateError> {
    let Some(mut rec) = state.get::<JoinTokenRecord>(&keys::token(id))? else { return Ok(MetaResponse::NotFound) };
    rec.revoked = true;
    ch.put(keys::token(id), &rec);
    Ok(MetaResponse::Done)
}
