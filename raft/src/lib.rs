//! The metadata plane of berth: one Raft group (openraft) whose log and state
//! machine live in RocksDB and whose members talk gRPC (tonic) over mutual TLS.
//!
//! Layout:
//! - [`records`]: what the state machine stores (a leaf: it names nothing else);
//! - [`command`]: what is agreed on (`MetaCommand`, with the identity and CA
//!   commands);
//! - [`state`]: the state machine's rules, independent of storage, with
//!   [`state::identity`] and [`state::ca`] for those commands;
//! - [`mirror`]: repository states and mirrors (records and commands, a leaf);
//! - [`membership`]: the leader's choice of voters;
//! - [`store`]: RocksDB log store and state machine;
//! - [`network`]: the gRPC client side, with a link filter for fault tests;
//! - [`server`]: the gRPC service every node runs;
//! - [`forward`]: whom a write is for, and the leader's check of it
//!   ([`forward::WriteGate`], implemented by the node);
//! - [`meta`]: [`meta::MetaNodeHandle`], what the node uses: writes from any node
//!   with forwarding to the leader, local and linearizable reads, membership.
//!
//! This crate never sees QUIC, blobs or HTTP.

pub mod command;
pub mod forward;
pub mod group;
pub mod membership;
pub mod meta;
pub mod mirror;
pub mod network;
pub mod pb;
pub mod proxycache;
pub mod records;
pub mod scan;
pub mod server;
mod snapshot_file;
pub mod state;
pub mod store;
pub mod types;
pub mod watch;
pub mod wire;

pub use berth_common::LinkFilter;
pub use berth_common::{PeerTls, PEER_TLS_NAME};
pub use command::*;
pub use forward::{Actor, ClientAccount, Origin, WriteGate};
pub use meta::{GroupView, MetaConfig, MetaError, MetaNodeHandle};
pub use server::CaHandler;
pub use state::StateRead;
pub use store::{MetaState, RocksStore};
pub use types::*;
pub use watch::{Changed, KeyWatch};
