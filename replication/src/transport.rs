//! QUIC between nodes (quinn): mutual TLS under the cluster CA, one
//! connection per peer reused for many streams, windows sized for long fat
//! links.
//!
//! Why the windows: a stream can have at most one window in flight per
//! round trip, so throughput ≤ window / RTT. quinn's defaults cap one
//! stream near 6 MB/s at 200 ms; 64 MiB per stream allows about 330 MB/s at
//! 200 ms. The UDP socket buffers are raised for the same reason.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use berth_common::{LinkFilter, NodeId, PeerTls, PEER_TLS_NAME};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::protocol::ALPN;

/// Knobs of the blob transport; the defaults suit 100–250 ms between regions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Flow-control window of one stream, bytes.
    pub stream_window_bytes: u64,
    /// Flow-control window of one connection (all its streams), bytes.
    pub connection_window_bytes: u64,
    /// Requested kernel UDP send and receive buffer, bytes.
    pub udp_buffer_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig { stream_window_bytes: 64 << 20, connection_window_bytes: 256 << 20, udp_buffer_bytes: 8 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS material: {0}")]
    Tls(String),
    #[error("cannot bind the blob transport on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("link from node {from} to node {to} is cut")]
    Cut { from: NodeId, to: NodeId },
    #[error("cannot reach node {node} at {addr}: {message}")]
    Connect { node: NodeId, addr: String, message: String },
}

/// How long a connection may go without sending anything before QUIC
/// pings the peer. Each ping costs a packet and its acknowledgement: next
/// to nothing, and it keeps every live connection answering.
const KEEP_ALIVE: Duration = Duration::from_millis(500);

/// A peer whose connection has received nothing for this long, three
/// keep-alives, is silent: its path drops what is sent (a partition, a
/// hung host), which QUIC would otherwise notice only at its idle timeout.
pub const SILENT_AFTER: Duration = Duration::from_millis(1500);

/// The largest UDP payload this node sends or takes, and the ceiling of
/// quinn's path MTU discovery (its default ceiling is 1,452). Every QUIC
/// packet costs a header, a seal, an open and an acknowledgement range, so
/// on paths that carry larger datagrams (loopback, jumbo-frame LANs) larger
/// packets cut that work per byte; a path with a 1,500-byte MTU loses the
/// larger probes and stays at what it carries. The ceiling is 6,500, not
/// 65,507, because quinn hands the kernel up to 10 packets per GSO send and
/// one send must fit an IP datagram's 65,535 bytes: with larger packets
/// those sends fail, the packets in them count as lost, and quinn's black
/// hole detection falls back to 1,200 bytes (measured: loopback replication
/// at 1,200-byte packets, slower than with the default).
pub const MAX_DATAGRAM: u16 = 6_500;

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn transport_config(cfg: &TransportConfig) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    let stream = quinn::VarInt::from_u64(cfg.stream_window_bytes).unwrap_or(quinn::VarInt::MAX);
    let conn = quinn::VarInt::from_u64(cfg.connection_window_bytes).unwrap_or(quinn::VarInt::MAX);
    t.stream_receive_window(stream).receive_window(conn).send_window(cfg.connection_window_bytes);
    t.max_concurrent_bidi_streams(256u32.into());
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("30 s is a valid idle timeout")));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

fn configs(tls: &PeerTls, cfg: &TransportConfig) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<_, _>>().map_err(tls_err)?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(tls_err)?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(ca.map_err(tls_err)?).map_err(tls_err)?;
    }
    let roots = Arc::new(roots);

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().map_err(tls_err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server).map_err(tls_err)?));
    server.transport_config(transport_config(cfg));

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).map_err(tls_err)?));
    client.transport_config(transport_config(cfg));
    Ok((server, client))
}

/// The node at the other end of `conn`, by its certificate; `None` when it
/// presented no node certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    berth_common::node_id_of_cert(certs.first()?.as_ref())
}

/// The endpoint's stateless-reset key and connection-id key are derived
/// from the node's private key, so they are the same after a restart. A
/// restarted node then recognises packets of its previous life's
/// connections as its own and answers them with a reset its peers accept:
/// they reconnect within a round trip instead of waiting out the idle
/// timeout (30 s) on a connection that silently died. With quinn's random
/// defaults the restarted node drops those packets as foreign.
fn endpoint_config(tls: &PeerTls) -> quinn::EndpointConfig {
    use sha2::Digest as _;
    let secret = sha2::Sha256::new().chain_update(b"berth quic stateless reset v1\0").chain_update(tls.key_pem.as_bytes()).finalize();
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_slice())));
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&secret[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    config.max_udp_payload_size(MAX_DATAGRAM).expect("MAX_DATAGRAM is within QUIC's bounds");
    config
}

type Conns = Mutex<HashMap<NodeId, quinn::Connection>>;

/// When a connection last received something: its datagram count then.
#[derive(Clone, Copy)]
struct Heard {
    datagrams: u64,
    at: Instant,
}

/// This node's QUIC endpoint and its connections to peers.
pub struct Transport {
    self_id: NodeId,
    endpoint: quinn::Endpoint,
    filter: LinkFilter,
    conns: Arc<Conns>,
    heard: Arc<Mutex<HashMap<NodeId, Heard>>>,
}

/// Notes, four times per keep-alive, which connections received anything
/// since the last look. Ends with the transport.
async fn watch_for_silence(conns: Weak<Conns>, heard: Arc<Mutex<HashMap<NodeId, Heard>>>) {
    loop {
        tokio::time::sleep(KEEP_ALIVE / 4).await;
        let Some(conns) = conns.upgrade() else { return };
        let counts: Vec<(NodeId, u64)> = conns
            .lock()
            .expect("connection pool lock")
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(id, c)| (*id, c.stats().udp_rx.datagrams))
            .collect();
        let now = Instant::now();
        let mut heard = heard.lock().expect("heard lock");
        heard.retain(|id, _| counts.iter().any(|(open, _)| open == id));
        for (id, datagrams) in counts {
            let h = heard.entry(id).or_insert(Heard { datagrams, at: now });
            if h.datagrams != datagrams {
                *h = Heard { datagrams, at: now };
            }
        }
    }
}

impl Transport {
    pub fn bind(self_id: NodeId, addr: SocketAddr, tls: &PeerTls, cfg: &TransportConfig, filter: LinkFilter) -> Result<Transport, TransportError> {
        let (server, client) = configs(tls, cfg)?;
        // A node restarted in the same process may find its old socket still
        // closing for a moment.
        let mut tries = 0;
        let socket = loop {
            match std::net::UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 30 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(source) => return Err(TransportError::Bind { addr, source }),
            }
        };
        let sock = socket2::SockRef::from(&socket);
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = sock.set_recv_buffer_size(cfg.udp_buffer_bytes);
        let _ = sock.set_send_buffer_size(cfg.udp_buffer_bytes);
        let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Bind { addr, source: std::io::Error::other("no async runtime") })?;
        let mut endpoint = quinn::Endpoint::new(endpoint_config(tls), Some(server), socket, runtime).map_err(|source| TransportError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let heard = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(watch_for_silence(Arc::downgrade(&conns), heard.clone()));
        Ok(Transport { self_id, endpoint, filter, conns, heard })
    }

    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn allows(&self, to: NodeId) -> bool {
        self.filter.allows(self.self_id, to)
    }

    /// Whether a request arriving on `conn` may be heard: a partitioned
    /// node hears nobody it may not talk to. The caller is known by the node
    /// id in its certificate (verified against the cluster CA in the
    /// handshake); the certificate is only parsed while something is cut.
    pub fn admits(&self, conn: &quinn::Connection) -> bool {
        self.filter.is_clear() || self.filter.admits(peer_node_id(conn), self.self_id)
    }

    /// A live connection to `node` at `addr`, reused when there is one.
    pub async fn connect(&self, node: NodeId, addr: &str) -> Result<quinn::Connection, TransportError> {
        if !self.allows(node) {
            return Err(TransportError::Cut { from: self.self_id, to: node });
        }
        if let Some(c) = self.conns.lock().expect("connection pool lock").get(&node) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let err = |m: &dyn std::fmt::Display| TransportError::Connect { node, addr: addr.to_string(), message: m.to_string() };
        let sock = tokio::net::lookup_host(addr).await.map_err(|e| err(&e))?.next().ok_or_else(|| err(&"no address"))?;
        let connecting = self.endpoint.connect(sock, PEER_TLS_NAME).map_err(|e| err(&e))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting).await.map_err(|_| err(&"timed out"))?.map_err(|e| err(&e))?;
        self.conns.lock().expect("connection pool lock").insert(node, conn.clone());
        Ok(conn)
    }

    /// Smoothed RTT to each connected peer, as QUIC measures it (not to a
    /// peer whose link is cut or who is silent: its last RTT says nothing
    /// about now).
    pub fn rtts(&self) -> HashMap<NodeId, Duration> {
        let silent = self.silent();
        let conns = self.conns.lock().expect("connection pool lock");
        conns.iter().filter(|(id, c)| c.close_reason().is_none() && self.allows(**id) && !silent.contains(id)).map(|(id, c)| (*id, c.rtt())).collect()
    }

    /// Peers whose open connection has received nothing, not even the
    /// answer to a keep-alive, for [`SILENT_AFTER`]. Work that can go to
    /// another peer asks these last: a request to one would wait for the
    /// heal or QUIC's idle timeout.
    pub fn silent(&self) -> BTreeSet<NodeId> {
        let heard = self.heard.lock().expect("heard lock");
        heard.iter().filter(|(_, h)| h.at.elapsed() > SILENT_AFTER).map(|(id, _)| *id).collect()
    }

    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }
}
