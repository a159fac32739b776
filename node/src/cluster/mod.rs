//! Being a member of the cluster.
//!
//! - [`join`]: join tokens, and a join from both sides (with the peer
//!   service's CA calls, which relay joins); [`join_wire`]: its messages;
//! - [`pki`]: certificates: the CA, node and HTTPS certificates, the pinned
//!   first contact of a joining node;
//! - [`ca`]: custody of the CA's key (voters only), signing for nodes that
//!   lack it, and CA rotation;
//! - [`tls`]: HTTPS on the registry listener;
//! - [`write_gate`]: the leader's rules for which actor may make which write;
//! - [`view`]: the blob plane's view of the cluster (holders, peers);
//! - [`backup`]: a consistent copy of the metadata, its blob inventory,
//!   and a new cluster made from it;
//! - [`drain`]: readying a node for removal (leadership off it, a second
//!   copy of every blob only it holds);
//! - [`api`]: the admin API (cluster status, tokens, nodes, placement,
//!   drills) as the gateway's `Backend`.

pub mod api;
pub mod backup;
pub mod ca;
pub mod drain;
pub mod join;
pub mod join_wire;
pub mod pki;
pub mod tls;
pub mod view;
pub mod write_gate;
