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

/// What a node certificate's common name starts with; the node id follows.
const NODE_CN_PREFIX: &str = "berth node ";

/// The common name of node `id`'s certificate. Peers read the id back with
/// [`node_id_of_cert`] to know who is calling without trusting anything
/// the caller says about itself.
pub fn node_common_name(id: crate::NodeId) -> String {
    format!("{NODE_CN_PREFIX}{id}")
}

/// The node a certificate (DER, as the TLS handshake verified it against
/// the cluster CA) was issued to; `None` for anything but a node certificate.
pub fn node_id_of_cert(der: &[u8]) -> Option<crate::NodeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    cn.strip_prefix(NODE_CN_PREFIX)?.parse().ok()
}
