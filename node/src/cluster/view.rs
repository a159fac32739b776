//! The metadata as the data plane sees it (berth-replication's
//! `ClusterView`): peers from the node records, placement from the blob
//! records, and holder records written through Raft.

use async_trait::async_trait;
use berth_common::{Digest, NodeId};
use berth_raft::command::{BlobRecord, MetaCommand, MetaResponse, NodeRecord, Placement};
use berth_raft::state::keys;
use berth_raft::{MetaNodeHandle, StateRead};
use berth_replication::{BlobInfo, ClusterView, PeerInfo, ReplicationError};

pub struct NodeView {
    pub meta: MetaNodeHandle,
    pub region: String,
    /// Blob records and placements changed since the reconciler's last pass.
    changes: std::sync::Arc<berth_raft::KeyWatch>,
    /// The node records as last read (`None`: read them again), and the
    /// writes to them since: every copy, fetch and relay asks for the
    /// peers, and a scan each time was 8% of a node's work during pushes.
    nodes: std::sync::Mutex<Option<Vec<NodeRecord>>>,
    node_changes: std::sync::Arc<berth_raft::KeyWatch>,
}

impl NodeView {
    pub fn new(meta: MetaNodeHandle, region: String) -> NodeView {
        let changes = meta.watch(&[keys::BLOB_PREFIX, keys::PLACEMENT_PREFIX]);
        let node_changes = meta.watch(&[keys::NODE_PREFIX]);
        NodeView { meta, region, changes, nodes: std::sync::Mutex::new(None), node_changes }
    }

    /// Whether placement asks nodes of `region` to keep blob `digest`
    /// (whose record is `rec`): some namespace it is linked into wants
    /// that region.
    fn wanted_in(&self, digest: &Digest, rec: &BlobRecord, region: &str) -> bool {
        berth_raft::state::any_blob_repo(&self.meta.state(), digest, rec, |repo| self.repo_wanted_in_region(repo, region)).unwrap_or_else(|e| {
            tracing::error!(digest = %digest, error = %e, "cannot read where a blob is linked");
            false
        })
    }

    fn wanted_here(&self, digest: &Digest, rec: &BlobRecord) -> bool {
        self.wanted_in(digest, rec, &self.region)
    }

    /// Blob `digest`'s record, if the cluster knows the blob.
    fn record(&self, digest: &Digest) -> Option<BlobRecord> {
        self.meta.state().get(&keys::blob(digest)).unwrap_or_else(|e| {
            tracing::error!(digest = %digest, error = %e, "cannot read a blob record");
            None
        })
    }

    /// The node records: read again only when one was written since the
    /// last read (a write that lands during the read is noted for the next).
    fn nodes(&self) -> Vec<NodeRecord> {
        let mut cached = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = matches!(self.node_changes.take(), berth_raft::Changed::Keys(k) if k.is_empty());
        if let (true, Some(nodes)) = (unchanged, cached.as_ref()) {
            return nodes.clone();
        }
        match self.meta.state().scan(keys::NODE_PREFIX) {
            Ok(nodes) => cached.insert(nodes).clone(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read node records");
                *cached = None;
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl ClusterView for NodeView {
    fn self_id(&self) -> NodeId {
        self.meta.id()
    }

    fn self_region(&self) -> String {
        self.region.clone()
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let me = self.meta.id();
        self.nodes().into_iter().filter(|n| !n.removed && n.id != me).map(|n| PeerInfo { id: n.id, region: n.region, addr: n.peer_addr }).collect()
    }

    fn removed(&self, node: NodeId) -> bool {
        self.meta.node_removed(node)
    }

    fn blob(&self, digest: &Digest) -> Option<BlobInfo> {
        let rec = self.record(digest)?;
        Some(BlobInfo { size: rec.size, wanted_here: self.wanted_here(digest, &rec), holders: rec.holders })
    }

    fn holders(&self, digest: &Digest) -> std::collections::BTreeSet<NodeId> {
        self.record(digest).map(|rec| rec.holders).unwrap_or_default()
    }

    fn holders_of(&self, digests: &[&Digest]) -> Vec<std::collections::BTreeSet<NodeId>> {
        let keys: Vec<Vec<u8>> = digests.iter().map(|d| keys::blob(d)).collect();
        let values = self.meta.state().get_many_raw(&keys).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read blob records");
            vec![None; keys.len()]
        });
        values
            .into_iter()
            .map(|v| {
                v.and_then(|v| berth_common::decode_versioned::<BlobRecord>(berth_raft::state::RECORD_VERSION, &v).ok())
                    .map(|rec| rec.holders)
                    .unwrap_or_default()
            })
            .collect()
    }

    fn wanted_in_region(&self, digest: &Digest, region: &str) -> bool {
        self.record(digest).is_some_and(|rec| self.wanted_in(digest, &rec, region))
    }

    fn repo_wanted_in_region(&self, repo: &str, region: &str) -> bool {
        let ns = repo.split('/').next().unwrap_or(repo);
        let placement: Placement = self.meta.state().get(&keys::placement(ns)).ok().flatten().unwrap_or_default();
        placement.wants(region)
    }

    fn missing_blobs(&self) -> Vec<(Digest, BlobInfo)> {
        let me = self.meta.id();
        let mut out = Vec::new();
        // Placement is worked out only for the blobs not held here: on a
        // node that holds everything, the pass is one read of the records.
        let read = berth_raft::state::for_each_blob(&self.meta.state(), |digest, rec| {
            if !rec.holders.contains(&me) && !rec.holders.is_empty() && self.wanted_here(&digest, &rec) {
                out.push((digest, BlobInfo { size: rec.size, wanted_here: true, holders: rec.holders }));
            }
            Ok(())
        });
        if let Err(e) = read {
            tracing::error!(error = %e, "cannot read blob records");
        }
        out
    }

    fn changed_blobs(&self) -> Option<Vec<Digest>> {
        match self.changes.take() {
            berth_raft::Changed::All => None,
            // Placement decides what is wanted of every blob in a namespace.
            berth_raft::Changed::Keys(k) if k.iter().any(|k| k.starts_with(keys::PLACEMENT_PREFIX)) => None,
            berth_raft::Changed::Keys(k) => Some(k.iter().filter_map(|k| keys::blob_digest(k)).collect()),
        }
    }

    async fn drop_holder(&self, digest: &Digest) -> Result<(), ReplicationError> {
        match self.meta.write(berth_raft::Actor::Node, MetaCommand::RemoveBlobHolder { digest: digest.clone(), node: self.meta.id() }).await {
            Ok(MetaResponse::Done | MetaResponse::NotFound) => Ok(()),
            Ok(other) => Err(ReplicationError::Metadata(format!("unexpected outcome {other:?}").into())),
            Err(e) => Err(ReplicationError::Metadata(e.into())),
        }
    }

    async fn record_holder(&self, digest: &Digest, size: u64) -> Result<(), ReplicationError> {
        match self.meta.write(berth_raft::Actor::Node, MetaCommand::AddBlobHolder { digest: digest.clone(), size, node: self.meta.id() }).await {
            Ok(MetaResponse::Done) => Ok(()),
            Ok(MetaResponse::NotFound) => Err(ReplicationError::Forgotten { digest: digest.clone() }),
            Ok(other) => Err(ReplicationError::Metadata(format!("unexpected outcome {other:?}").into())),
            Err(e) => Err(ReplicationError::Metadata(e.into())),
        }
    }
}
