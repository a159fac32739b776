//! Who a write is for, and the check the leader makes before proposing it.
//!
//! Trust model. Nodes terminate client authentication: the node a client
//! talks to checks its password, robot secret or token and decides what it
//! may do. A member is therefore trusted with the identities of the clients
//! that talk to it, and a node that is taken over can act as any client
//! that talks to it while it is. What it cannot do any more is write
//! anything at all: every write names its [`Actor`] (the node itself, for
//! its own work, or the client it authenticated), and the leader judges the
//! command against its own state before proposing it ([`WriteGate`]):
//!
//! - a command no client could make is refused: a bootstrap is never
//!   forwarded, a node's own work (blob holders, sweeps, audit batches,
//!   registrations under a join token) must come from the node itself and
//!   name no other node, and a client's command must come from a client;
//! - a principal deleted on the leader (a user, a robot, a revoked or
//!   expired application token) cannot write through a node that has not
//!   applied the deletion yet;
//! - cluster commands (node roles and removal, join tokens, placement,
//!   probes) and whatever grants superuser need a superuser the leader
//!   knows, or the operator of a member;
//! - a removed node is refused by name before any of this
//!   ([`crate::server`]).
//!
//! The same gate judges a write the leader proposes for its own clients, so
//! a command is judged identically wherever it was submitted. The rules
//! themselves live in the node crate, which knows what a principal is; this
//! crate only carries the actor and asks.

use berth_common::NodeId;
use serde::{Deserialize, Serialize};

use crate::command::{MetaCommand, MetaRequest};
use crate::store::MetaState;

/// Who a write is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The node that submitted it, for its own work (which node: the
    /// leader knows it from the caller's certificate, not from this).
    Node,
    /// A client, as the submitting node authenticated it.
    Client(ClientAccount),
}

/// A client's account, by the name the leader looks it up under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAccount {
    Anonymous,
    /// The holder of the submitting node's operator token.
    Operator,
    User(String),
    /// `namespace+short`.
    Robot(String),
    /// An application token, by its id.
    AppToken(String),
}

impl Actor {
    /// The submitting node's operator: what bootstrap-time writes and
    /// tools running as root on a member's host act as.
    pub const OPERATOR: Actor = Actor::Client(ClientAccount::Operator);

    /// A short name for logs; never the account's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Node => "node",
            Actor::Client(ClientAccount::Anonymous) => "anonymous",
            Actor::Client(ClientAccount::Operator) => "operator",
            Actor::Client(ClientAccount::User(_)) => "user",
            Actor::Client(ClientAccount::Robot(_)) => "robot",
            Actor::Client(ClientAccount::AppToken(_)) => "app_token",
        }
    }
}

/// What a follower sends the leader for a write: the command and whom it
/// is for. The variant is the format version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardedWrite {
    V1 { actor: Actor, request: MetaRequest },
}

/// Where a write was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The submitting node: the leader itself, or the member whose
    /// certificate the forward came with.
    pub node: NodeId,
    /// Whether it came from another node over the peer service.
    pub forwarded: bool,
    /// Whether the submitting node is a voter in the leader's membership
    /// as the write is judged (only voters administer the cluster: they
    /// alone keep the CA key).
    pub voter: bool,
}

/// Judges a write on the leader before it is proposed; the node crate
/// implements it. `state` is the leader's applied state. A refusal is a
/// one-line reason for the client (no secrets: the command is not echoed).
pub trait WriteGate: Send + Sync + 'static {
    fn check(&self, state: &MetaState, origin: Origin, actor: &Actor, cmd: &MetaCommand) -> Result<(), String>;
}
