//! Shared vocabulary of berth.
//!
//! Everything here is used by more than one layer and depends on nothing of
//! ours: node identities and regions, content digests, repository names, and
//! the versioned codec every stored or wire record goes through.
//!
//! Invariant: a value of one of these types has been validated. Code that
//! holds a `Digest` or a `Region` never re-checks its shape.

pub mod codec;
pub mod digest;
pub mod links;
pub mod names;
pub mod peer_tls;

pub use codec::{decode_versioned, encode_versioned, CodecError};
pub use digest::{Digest, DigestAlgorithm, DigestError};
pub use links::{Island, LinkFilter};
pub use names::{NameError, Region, RepoName};
pub use peer_tls::{node_common_name, node_id_of_cert, PeerTls, PEER_TLS_NAME};

/// A node's identity in the cluster. Assigned once, by the cluster, when the
/// node registers; never reused after the node is removed.
pub type NodeId = u64;
