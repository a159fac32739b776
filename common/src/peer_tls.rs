//! The TLS identity a node uses on every peer link: Raft (gRPC over TCP)
//! and blobs (QUIC) present the same certificate and trust the same CA.

/// The DNS name every node certificate carries and every peer connection
/// verifies: membership in the cluster is what a certificate proves, not a
/// host name, since nodes move between addresses.
pub const PEER_TLS_NAME: &str = "peer.berth.internal";

/// A node's TLS material, all PEM.
#[derive(Clone)]
pub struct PeerTls {
    /// The cluster CA certificate.
    pub ca_pem: String,
    /// This node's certificate chain (leaf first, then the CA).
    pub cert_pem: String,
    pub key_pem: String,
}
