//! Join tokens and the join handshake.
//!
//! A token reads `berth1.<ca-sha256>.<id>.<secret>`: the CA fingerprint
//! lets the joiner authenticate the seed before sending the secret; the id
//! names the token record (expiry, revocation, uses) and the secret proves
//! possession. Only the secret's SHA-256 is stored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use berth_raft::command::{ClusterRecord, MetaCommand, MetaResponse, NodeRegistration, NodeRole, TokenProof};
use berth_raft::network::{call, PeerRpc};
use berth_raft::state::keys;
use berth_raft::{JoinHandler, MetaNodeHandle, StateRead, PEER_TLS_NAME};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::pki;

const TOKEN_PREFIX: &str = "berth1";

#[derive(Debug, Clone, PartialEq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl JoinToken {
    pub fn generate(ca_fingerprint: &str) -> JoinToken {
        JoinToken { ca_fingerprint: ca_fingerprint.to_string(), id: random_hex(6), secret: random_hex(24) }
    }

    pub fn secret_sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.secret.as_bytes()))
    }

    pub fn parse(s: &str) -> anyhow::Result<JoinToken> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let hexy = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        match parts.as_slice() {
            [TOKEN_PREFIX, fp, id, secret] if hexy(fp, 64) && hexy(id, 12) && hexy(secret, 48) => {
                Ok(JoinToken { ca_fingerprint: fp.to_string(), id: id.to_string(), secret: secret.to_string() })
            }
            _ => {
                bail!("join token is malformed (expected berth1.<ca-sha256>.<id>.<secret>, as printed by `berth cluster init` or `berth cluster token create`)")
            }
        }
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", self.ca_fingerprint, self.id, self.secret)
    }
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

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
    pub ca_pem: String,
}

/// The seed side of a join: checks the token (atomically with the
/// registration, in the state machine), registers the node, certifies it.
pub struct Joins {
    pub meta: MetaNodeHandle,
}

#[async_trait]
impl JoinHandler for Joins {
    async fn join(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        let req: JoinRequest = berth_raft::wire::from_payload(&request).map_err(|e| format!("unreadable join request: {e}"))?;
        let reply = self.handle(req).await?;
        berth_raft::wire::to_payload(&reply).map_err(|e| e.to_string())
    }
}

impl Joins {
    async fn handle(&self, req: JoinRequest) -> Result<JoinReply, String> {
        let region: berth_common::Region = req.region.parse().map_err(|e: berth_common::NameError| e.to_string())?;
        let cluster: ClusterRecord =
            self.meta.state().get(keys::CLUSTER).map_err(|e| e.to_string())?.ok_or("this node has not caught up with the cluster yet; try again")?;
        let token = JoinToken { ca_fingerprint: String::new(), id: req.token_id, secret: req.secret };
        let cmd = MetaCommand::RegisterNode {
            registration: NodeRegistration {
                region: region.to_string(),
                peer_addr: req.peer_addr.clone(),
                http_addr: req.http_addr,
                role: if req.learner { NodeRole::Learner } else { NodeRole::Auto },
            },
            token: Some(TokenProof { id: token.id.clone(), secret_sha256: token.secret_sha256() }),
            now_ms: now_ms(),
        };
        let node_id = match self.meta.write(cmd).await.map_err(|e| e.to_string())? {
            MetaResponse::NodeId(id) => id,
            MetaResponse::Refused(why) => return Err(why),
            other => return Err(format!("unexpected registration outcome: {other:?}")),
        };
        let ca = pki::CaKeys { cert_pem: cluster.ca_cert_pem.clone(), key_pem: cluster.ca_key_pem };
        let cert_pem = pki::sign_node_cert(&ca, node_id, &req.public_key_der).map_err(|e| e.to_string())?;
        tracing::info!(node_id, region = %region, peer_addr = %req.peer_addr, token_id = %token.id, "node joined");
        Ok(JoinReply { node_id, cluster_id: cluster.cluster_id, cert_pem, ca_pem: cluster.ca_cert_pem })
    }
}

pub struct JoinOutcome {
    pub reply: JoinReply,
    pub key_pem: String,
}

/// The joiner's side: authenticate the seed by the token's CA fingerprint,
/// then present the token and a public key.
pub async fn request_join(seed: &str, token: &JoinToken, region: &str, peer_addr: &str, http_addr: &str, learner: bool) -> anyhow::Result<JoinOutcome> {
    let ca_pem = pki::fetch_pinned_ca(seed, &token.ca_fingerprint).await?;
    let key = pki::new_node_key()?;
    let req = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        region: region.to_string(),
        peer_addr: peer_addr.to_string(),
        http_addr: http_addr.to_string(),
        learner,
        public_key_der: rcgen::PublicKeyData::subject_public_key_info(&key),
    };
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem)).domain_name(PEER_TLS_NAME);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{seed}"))
        .context("seed address")?
        .tls_config(tls)
        .context("seed TLS")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach seed {seed}"))?;
    // The peer service frames the handler's own (versioned) reply bytes.
    let reply: Result<Vec<u8>, String> = call(channel, seed, PeerRpc::Join, &req, Duration::from_secs(30)).await?;
    let reply = reply.map_err(|why| anyhow::anyhow!("the cluster refused to join this node: {why}"))?;
    let reply: JoinReply = berth_raft::wire::from_payload(&reply).context("unreadable join reply")?;
    let returned = pki::fingerprint(&reply.ca_pem)?;
    if returned != token.ca_fingerprint {
        bail!("the seed returned CA sha256:{returned}, but the token names CA sha256:{}", token.ca_fingerprint);
    }
    Ok(JoinOutcome { reply, key_pem: key.serialize_pem() })
}

/// The handler as the raft crate wants it.
pub fn handler(meta: MetaNodeHandle) -> Arc<dyn JoinHandler> {
    Arc::new(Joins { meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_refusals() {
        let t = JoinToken::generate(&"ab".repeat(32));
        assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
        for bad in ["", "berth1", "berth2.x.y.z", &t.to_string().replace("berth1.", "berth1.0"), &t.to_string().to_uppercase()] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }
}
