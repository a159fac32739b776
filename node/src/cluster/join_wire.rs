//! What a joining node and its seed say to each other: the join request
//! and its answer. A leaf, shared by the join service (`join`) and the
//! CA's relay of a join to a node holding the key (`ca`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    pub secret: String,
    pub region: String,
    pub peer_addr: String,
    pub http_addr: String,
    pub learner: bool,
    /// The joiner's public key (SubjectPublicKeyInfo DER) to certify.
    pub public_key_der: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinReply {
    pub node_id: u64,
    pub cluster_id: String,
    /// The joiner's certificate chain, PEM.
    pub cert_pem: String,
    /// The CAs to trust, PEM (two during a CA rotation).
    pub ca_pem: String,
}
