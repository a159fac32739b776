//! The cluster's certificates: its CA, node certificates, and the pinned
//! first contact of a joining node.
//!
//! Trust is rooted in the CA that `cluster init` creates. A join token
//! carries the SHA-256 fingerprint of that CA's certificate; a joining node
//! accepts the seed only if the seed's chain contains a CA with exactly that
//! fingerprint and the seed's certificate verifies against it. From then on
//! every peer connection is mutual TLS against the CA.

use std::sync::{Arc, Mutex};

use berth_raft::PEER_TLS_NAME;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SubjectPublicKeyInfo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("PEM is unreadable: {0}")]
    Pem(String),
    #[error("cannot reach seed {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the seed's CA does not match the token: the token expects CA sha256:{expected}, the seed presented {presented}")]
    CaMismatch { expected: String, presented: String },
    #[error("TLS handshake with seed {addr} failed: {message}")]
    Handshake { addr: String, message: String },
}

pub struct CaKeys {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates the cluster CA.
pub fn new_ca(cluster_id: &str) -> Result<CaKeys, PkiError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(cluster_id, 0)?.self_signed(&key)?;
    Ok(CaKeys { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The certificate of the CA of generation `generation` (0 is the one
/// `cluster init` makes, each rotation adds one): the name tells them apart.
fn ca_params(cluster_id: &str, generation: u64) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let name = match generation {
        0 => format!("berth cluster {cluster_id} CA"),
        g => format!("berth cluster {cluster_id} CA {g}"),
    };
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// A CA to rotate to, and its cross certificate: the same name and key,
/// signed by `previous`, so a certificate from the new CA verifies up to
/// the previous one for whoever trusts only that one.
pub fn next_ca(previous: &CaKeys, cluster_id: &str, generation: u64) -> Result<(CaKeys, String), PkiError> {
    let key = KeyPair::generate()?;
    let params = ca_params(cluster_id, generation)?;
    let cert = params.self_signed(&key)?;
    let issuer = Issuer::from_ca_cert_pem(&previous.cert_pem, KeyPair::from_pem(&previous.key_pem)?)?;
    let cross = params.signed_by(&key, &issuer)?;
    Ok((CaKeys { cert_pem: cert.pem(), key_pem: key.serialize_pem() }, cross.pem()))
}

/// A fresh private key for a node; only its public half leaves the node.
pub fn new_node_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate()?)
}

/// Whether `spki_der` is a public key [`sign_node_cert`] can certify.
pub fn check_node_key(spki_der: &[u8]) -> Result<(), PkiError> {
    SubjectPublicKeyInfo::from_der(spki_der)?;
    Ok(())
}

/// Signs node `node_id`'s certificate for `spki_der` (its public key);
/// returns the certificate alone, PEM (see `ca::Trust::chain` for the
/// chain a node presents).
pub fn sign_node_cert(ca: &CaKeys, node_id: u64, spki_der: &[u8]) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let public = SubjectPublicKeyInfo::from_der(spki_der)?;
    let mut params = CertificateParams::new(vec![PEER_TLS_NAME.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, berth_common::node_common_name(node_id));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    Ok(params.signed_by(&public, &issuer)?.pem())
}

/// A new key and certificate for node `node_id`, signed by `ca`: the TLS
/// material its peer links present (leaf, then the CA).
pub fn new_node_tls(ca: &CaKeys, node_id: u64) -> Result<berth_raft::PeerTls, PkiError> {
    let key = new_node_key()?;
    let leaf = sign_node_cert(ca, node_id, &rcgen::PublicKeyData::subject_public_key_info(&key))?;
    Ok(berth_raft::PeerTls { ca_pem: ca.cert_pem.clone(), cert_pem: format!("{leaf}{}", ca.cert_pem), key_pem: key.serialize_pem() })
}

/// An HTTPS server certificate for `names` (DNS names or IPs) and the
/// public key `spki_der`, from the CA; the certificate alone, PEM.
pub fn sign_server_cert(ca: &CaKeys, names: &[String], spki_der: &[u8]) -> Result<String, PkiError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
    let public = SubjectPublicKeyInfo::from_der(spki_der)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "berth".into()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(SERVER_CERT_DAYS as i64);
    Ok(params.signed_by(&public, &issuer)?.pem())
}

/// Life of a cluster-signed HTTPS certificate.
pub const SERVER_CERT_DAYS: u64 = 90;

/// The first certificate of `pem`, alone, PEM.
pub fn first_cert_pem(pem: &str) -> Result<String, PkiError> {
    Ok(der_to_pem(first_cert_der(pem)?.as_ref()))
}

fn parsed<T>(der: &[u8], read: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T) -> Result<T, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Pem(format!("not X.509: {e}")))?;
    Ok(read(&cert))
}

/// The issuer name (DER) of the first certificate of `pem`.
fn issuer_name(pem: &str) -> Result<Vec<u8>, PkiError> {
    parsed(first_cert_der(pem)?.as_ref(), |c| c.issuer().as_raw().to_vec())
}

/// The fingerprint of the self-signed CA in `chain` that issued the
/// chain's first certificate.
pub fn fingerprint_of_issuer_in(chain: &str) -> Option<String> {
    let issuer = issuer_name(chain).ok()?;
    CertificateDer::pem_slice_iter(chain.as_bytes()).skip(1).flatten().find_map(|der| {
        let self_signed_issuer = parsed(der.as_ref(), |c| c.subject().as_raw() == issuer.as_slice() && c.issuer().as_raw() == issuer.as_slice()).ok()?;
        self_signed_issuer.then(|| hex::encode(sha2::Sha256::digest(der.as_ref())))
    })
}

/// Hex SHA-256 of every certificate in `pem`.
pub fn fingerprints(pem: &str) -> Vec<String> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).flatten().map(|der| hex::encode(sha2::Sha256::digest(der.as_ref()))).collect()
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next().ok_or_else(|| PkiError::Pem("no certificate".into()))?.map_err(|e| PkiError::Pem(e.to_string()))
}

/// Hex SHA-256 of the first certificate in `pem`.
pub fn fingerprint(pem: &str) -> Result<String, PkiError> {
    Ok(hex::encode(sha2::Sha256::digest(first_cert_der(pem)?.as_ref())))
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// What the pinned verifier saw during the handshake.
#[derive(Debug, Default)]
enum Seen {
    #[default]
    Nothing,
    Matched(Vec<u8>),
    Mismatch(Vec<String>),
}

/// Accepts the server only if its chain holds the CA with the pinned
/// fingerprint and its certificate verifies against that CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let prints: Vec<String> = intermediates.iter().map(|c| hex::encode(sha2::Sha256::digest(c.as_ref()))).collect();
        let Some(pos) = prints.iter().position(|p| *p == self.fingerprint) else {
            *self.seen.lock().expect("seen lock") = Seen::Mismatch(prints);
            return Err(rustls::Error::General("CA fingerprint mismatch".into()));
        };
        let ca = intermediates[pos].clone().into_owned();
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone()).build().map_err(|e| rustls::Error::General(e.to_string()))?;
        // The rest of the chain may be needed to reach the pinned CA: during
        // a rotation a seed's certificate is from the new CA, which the
        // cross certificate links to the previous one.
        let others: Vec<CertificateDer<'_>> = intermediates.iter().enumerate().filter(|(i, _)| *i != pos).map(|(_, c)| c.clone()).collect();
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)?;
        *self.seen.lock().expect("seen lock") = Seen::Matched(ca.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects to the seed's peer port and returns its CA certificate (PEM),
/// provided it matches `fingerprint`.
pub async fn fetch_pinned_ca(addr: &str, fingerprint: &str) -> Result<String, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(Mutex::new(Seen::Nothing));
    let verifier = PinnedCaVerifier { fingerprint: fingerprint.to_string(), provider: provider.clone(), seen: seen.clone() };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Handshake { addr: addr.into(), message: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| PkiError::Connect { addr: addr.into(), message: "timed out".into() })?
        .map_err(|e| PkiError::Connect { addr: addr.into(), message: e.to_string() })?;
    let name = ServerName::try_from(PEER_TLS_NAME).expect("static name is valid");
    let handshake = connector.connect(name, tcp).await;
    let seen = std::mem::take(&mut *seen.lock().expect("seen lock"));
    match (handshake, seen) {
        (Ok(_), Seen::Matched(der)) => Ok(der_to_pem(&der)),
        (_, Seen::Mismatch(prints)) => Err(PkiError::CaMismatch {
            expected: fingerprint.to_string(),
            presented: if prints.is_empty() { "no CA certificate".into() } else { prints.iter().map(|p| format!("sha256:{p}")).collect::<Vec<_>>().join(", ") },
        }),
        (Err(e), _) => Err(PkiError::Handshake { addr: addr.into(), message: e.to_string() }),
        (Ok(_), Seen::Nothing) => Err(PkiError::Handshake { addr: addr.into(), message: "the seed's certificate was not checked".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_read_the_node_id_back_from_a_node_certificate() {
        let ca = new_ca("c0ffee").unwrap();
        let key = new_node_key().unwrap();
        let chain = sign_node_cert(&ca, 42, &rcgen::PublicKeyData::subject_public_key_info(&key)).unwrap();
        assert_eq!(berth_common::node_id_of_cert(first_cert_der(&chain).unwrap().as_ref()), Some(42));
        assert_eq!(berth_common::node_id_of_cert(first_cert_der(&ca.cert_pem).unwrap().as_ref()), None, "the CA is no node");
        assert_eq!(berth_common::node_id_of_cert(b"not a certificate"), None);
    }
}
