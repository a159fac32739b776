//! Fault injection at the transport: which directed links between nodes are
//! cut. Both network layers (Raft's gRPC and the blob transport) consult the
//! same filter before every call, so a test partitions a node with one line
//! instead of killing tasks or sleeping.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::NodeId;

/// Which directed links are cut. Shared by every node of an in-process
/// cluster in tests; a real node's filter is always empty.
#[derive(Clone, Default)]
pub struct LinkFilter {
    cut: Arc<Mutex<BTreeSet<(NodeId, NodeId)>>>,
}

impl LinkFilter {
    pub fn allows(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.lock().expect("link filter lock").contains(&(from, to))
    }

    /// Cuts `from → to` only.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.cut.lock().expect("link filter lock").insert((from, to));
    }

    /// Restores `from → to`.
    pub fn restore(&self, from: NodeId, to: NodeId) {
        self.cut.lock().expect("link filter lock").remove(&(from, to));
    }

    /// Cuts every link between `node` and `others`, both ways.
    pub fn isolate(&self, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
        let mut cut = self.cut.lock().expect("link filter lock");
        for o in others {
            cut.insert((node, o));
            cut.insert((o, node));
        }
    }

    pub fn heal(&self) {
        self.cut.lock().expect("link filter lock").clear();
    }
}
