//! Join tokens and the join handshake.
//!
//! A token reads `berth1.<ca-sha256>.<id>.<secret>`: the CA fingerprint
//! lets the joiner authenticate the seed before sending the secret; the id
//! names the token record (expiry, revocation, uses) and the secret proves
//! possession. Only the secret's SHA-256 is stored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use berth_raft::command::{JoinTokenRecord, MetaCommand, MetaResponse, NodeRegistration, NodeRole, TokenProof};
use berth_raft::state::keys;
use berth_raft::wire::PeerResult;
use berth_raft::{MetaNodeHandle, StateRead};
use sha2::Digest as _;

use berth_common::CodecError;
use berth_raft::command::RegistrationError;
use berth_raft::state::StateError;
use berth_raft::MetaError;

use crate::cluster::ca::{unexpected, Authority, CaError, CaReply, CaRequest};
use crate::cluster::pki::{self, PkiError};
use crate::util::{now_ms, random_hex};

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
        let hexy = lower_hex;
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

/// `s` is `n` lowercase hex digits, as every part of a token is.
fn lower_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub use super::join_wire::{JoinReply, JoinRequest};

/// The largest public key a joiner may send: an RSA-4096 key is about
/// 550 bytes of SubjectPublicKeyInfo, berth's own P-256 keys 91.
const MAX_PUBLIC_KEY_DER: usize = 2048;

/// Why a join is refused: one line, shown to the joining operator.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    #[error("too many join attempts from {ip}; try again in {} s", JoinLimits::REFILL.as_secs())]
    TooManyAttempts { ip: std::net::IpAddr },
    #[error("this node is busy with other joins; try again")]
    Busy,
    #[error("unreadable join request: {0}")]
    UnreadableRequest(CodecError),
    #[error("join token is malformed")]
    MalformedToken,
    #[error("public key is larger than {MAX_PUBLIC_KEY_DER} bytes")]
    KeyTooLarge,
    #[error("public key is unusable: {0}")]
    UnusableKey(PkiError),
    #[error("join token is not known to this cluster")]
    UnknownToken,
    /// The token record's refusal, or the state machine's.
    #[error("{0}")]
    Refused(String),
}

/// The seed side of a join.
///
/// `Join` is the one peer call an outsider can make (a joining node has no
/// certificate yet), so a wrong join must cost the cluster nothing: the
/// request is checked against this node's copy of the token record before
/// anything is proposed, and only a join that would be admitted becomes a
/// log entry. The state machine checks the token again, atomically with
/// counting its use, so two joiners cannot race past a one-use token.
/// Joins are rate-limited per source address, and only a few are handled
/// at once. A seed without the CA key (a learner) relays an admissible
/// join to a voter, which checks it again and does the rest.
#[derive(Default)]
pub struct Joins {
    limits: JoinLimits,
}

impl Joins {
    /// Handles a `Join` call's bytes from `from`.
    pub async fn join(&self, authority: &Authority, from: Option<std::net::IpAddr>, request: Vec<u8>) -> PeerResult<Vec<u8>> {
        let reply = self.admit_and_handle(authority, from, &request).await;
        if let Err(why) = &reply {
            tracing::warn!(source = ?from, %why, "join refused");
        }
        berth_raft::wire::to_payload(&reply.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
    }

    async fn admit_and_handle(&self, authority: &Authority, from: Option<std::net::IpAddr>, request: &[u8]) -> Result<JoinReply, JoinError> {
        let _slot = self.limits.admit(from)?;
        let req: JoinRequest = berth_raft::wire::from_payload(request).map_err(JoinError::UnreadableRequest)?;
        self.handle(authority, from, req).await
    }

    async fn handle(&self, authority: &Authority, from: Option<std::net::IpAddr>, req: JoinRequest) -> Result<JoinReply, JoinError> {
        check_request(&authority.meta, &req).await?;
        if authority.signer(&authority.trust()?).is_some() {
            return self.handle_here(req, authority).await;
        }
        match authority.ask_holders(&CaRequest::Join { from, request: req }).await? {
            CaReply::Joined(reply) => Ok(reply),
            other => Err(unexpected("unexpected answer to a relayed join", other).into()),
        }
    }

    /// Registers the joiner and signs its certificate; this node must hold
    /// the signing CA's key.
    pub async fn handle_here(&self, req: JoinRequest, authority: &Authority) -> Result<JoinReply, JoinError> {
        let proof = check_request(&authority.meta, &req).await?;
        let trust = authority.trust()?;
        let ca = authority.signer(&trust).ok_or(CaError::NoKey(authority.meta.id()))?;
        let registration = registration_of(&req);
        let (region, peer_addr) = (registration.region.clone(), registration.peer_addr.clone());
        let cmd = MetaCommand::RegisterNode { registration, token: Some(proof.clone()), now_ms: now_ms() };
        let node_id = match authority.meta.write(berth_raft::Actor::Node, cmd).await? {
            MetaResponse::NodeId(id) => id,
            MetaResponse::Refused(why) => return Err(JoinError::Refused(why)),
            other => return Err(unexpected("unexpected registration outcome", other).into()),
        };
        let leaf = pki::sign_node_cert(&ca, node_id, &req.public_key_der)?;
        tracing::info!(node_id, region = %region, peer_addr = %peer_addr, token_id = %proof.id, "node joined");
        Ok(JoinReply { node_id, cluster_id: trust.cluster_id.clone(), cert_pem: trust.chain(&leaf), ca_pem: trust.bundle() })
    }
}

fn registration_of(req: &JoinRequest) -> NodeRegistration {
    NodeRegistration {
        region: req.region.clone(),
        peer_addr: req.peer_addr.clone(),
        http_addr: req.http_addr.clone(),
        role: if req.learner { NodeRole::Learner } else { NodeRole::Auto },
    }
}

/// Everything about a join request that can be checked without writing:
/// its shape, its key, and its token against this node's state.
async fn check_request(meta: &MetaNodeHandle, req: &JoinRequest) -> Result<TokenProof, JoinError> {
    if !lower_hex(&req.token_id, 12) || !lower_hex(&req.secret, 48) {
        return Err(JoinError::MalformedToken);
    }
    if req.public_key_der.len() > MAX_PUBLIC_KEY_DER {
        return Err(JoinError::KeyTooLarge);
    }
    registration_of(req).validate()?;
    let token = JoinToken { ca_fingerprint: String::new(), id: req.token_id.clone(), secret: req.secret.clone() };
    let proof = TokenProof { id: token.id.clone(), secret_sha256: token.secret_sha256() };
    check_token(meta, &proof).await?;
    // The key must be one the CA can certify before the node is registered.
    pki::check_node_key(&req.public_key_der).map_err(JoinError::UnusableKey)?;
    Ok(proof)
}

/// Checks the token against this node's state; a token this node does not
/// know yet (made a moment ago through another node) is looked up again
/// after catching up with the leader, which costs a round trip but no log
/// entry.
async fn check_token(meta: &MetaNodeHandle, proof: &TokenProof) -> Result<(), JoinError> {
    let lookup = || meta.state().get::<JoinTokenRecord>(&keys::token(&proof.id));
    let record = match lookup()? {
        Some(r) => r,
        None => {
            meta.read_barrier().await?;
            lookup()?.ok_or(JoinError::UnknownToken)?
        }
    };
    match record.refusal(proof, now_ms()) {
        Some(why) => Err(JoinError::Refused(why.into())),
        None => Ok(()),
    }
}

/// Per-source and whole-node limits on join attempts.
///
/// Each source address has a bucket of [`JoinLimits::BURST`] attempts that
/// refills one every [`JoinLimits::REFILL`]; a node joins once, and an
/// operator retrying a typo stays well inside. At most
/// [`JoinLimits::CONCURRENT`] joins are handled at once whatever their
/// sources, so many addresses together still cannot queue work.
pub struct JoinLimits {
    buckets: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for JoinLimits {
    fn default() -> Self {
        JoinLimits { buckets: Default::default(), slots: Arc::new(tokio::sync::Semaphore::new(Self::CONCURRENT)) }
    }
}

impl JoinLimits {
    const BURST: f64 = 10.0;
    const REFILL: Duration = Duration::from_secs(3);
    const CONCURRENT: usize = 4;
    /// Past this many remembered sources, full buckets are forgotten.
    const MAX_SOURCES: usize = 10_000;

    /// Takes one attempt from `from`'s bucket and a handling slot, or says
    /// why not.
    fn admit(&self, from: Option<std::net::IpAddr>) -> Result<tokio::sync::OwnedSemaphorePermit, JoinError> {
        if let Some(ip) = from {
            let now = std::time::Instant::now();
            let mut buckets = self.buckets.lock().expect("join limits lock");
            let refill =
                |(tokens, at): (f64, std::time::Instant)| (tokens + now.duration_since(at).as_secs_f64() / Self::REFILL.as_secs_f64()).min(Self::BURST);
            if buckets.len() >= Self::MAX_SOURCES {
                buckets.retain(|_, b| refill(*b) < Self::BURST);
            }
            let bucket = buckets.entry(ip).or_insert((Self::BURST, now));
            let tokens = refill(*bucket);
            if tokens < 1.0 {
                return Err(JoinError::TooManyAttempts { ip });
            }
            *bucket = (tokens - 1.0, now);
        }
        self.slots.clone().try_acquire_owned().map_err(|_| JoinError::Busy)
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
    let reply = berth_raft::network::call_join(seed, &ca_pem, &req).await.with_context(|| format!("cannot reach seed {seed}"))?;
    let reply = reply.map_err(|why| anyhow::anyhow!("the cluster refused to join this node: {why}"))?;
    let reply: JoinReply = berth_raft::wire::from_payload(&reply).context("unreadable join reply")?;
    let returned = pki::fingerprints(&reply.ca_pem);
    if !returned.contains(&token.ca_fingerprint) {
        bail!("the seed returned CA(s) sha256:{}, but the token names CA sha256:{}", returned.join(", sha256:"), token.ca_fingerprint);
    }
    Ok(JoinOutcome { reply, key_pem: key.serialize_pem() })
}

pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub fn token_record(token: &JoinToken, ttl: Duration, max_uses: Option<u32>) -> MetaCommand {
    let now = now_ms();
    MetaCommand::CreateJoinToken(JoinTokenRecord {
        id: token.id.clone(),
        secret_sha256: token.secret_sha256(),
        created_at_ms: now,
        expires_at_ms: now + ttl.as_millis() as u64,
        revoked: false,
        uses: 0,
        max_uses,
    })
}

/// The node's answer to the peer service's CA calls: the CA's own, and
/// joins relayed by a node without the CA key.
pub struct CaService {
    authority: Arc<Authority>,
    joins: Joins,
}

impl CaService {
    pub fn handler(authority: Arc<Authority>) -> Arc<dyn berth_raft::CaHandler> {
        Arc::new(CaService { authority, joins: Default::default() })
    }
}

#[async_trait::async_trait]
impl berth_raft::CaHandler for CaService {
    async fn join(&self, from: Option<std::net::IpAddr>, request: Vec<u8>) -> PeerResult<Vec<u8>> {
        self.joins.join(&self.authority, from, request).await
    }

    async fn member_call(&self, caller: u64, request: Vec<u8>) -> PeerResult<Vec<u8>> {
        let req: CaRequest = berth_raft::wire::from_payload(&request).map_err(|e| format!("unreadable CA request: {e}"))?;
        let reply = match req {
            CaRequest::Join { from, request } => {
                tracing::info!(via = caller, source = ?from, "taking a join relayed by a node without the CA key");
                CaReply::Joined(self.joins.handle_here(request, &self.authority).await.map_err(|e| e.to_string())?)
            }
            other => self.authority.answer(caller, other).await.map_err(|e| e.to_string())?,
        };
        berth_raft::wire::to_payload(&reply).map_err(|e| e.to_string())
    }
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

    #[test]
    fn joins_are_limited_per_source_and_in_flight() {
        let limits = JoinLimits::default();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..JoinLimits::BURST as usize {
            drop(limits.admit(Some(a)).expect("within the burst"));
        }
        let refused = limits.admit(Some(a)).unwrap_err().to_string();
        assert!(refused.contains("too many join attempts"), "{refused}");
        // Another source is not held back by the first one.
        let held: Vec<_> = (0..JoinLimits::CONCURRENT).map(|_| limits.admit(Some(b)).expect("b has its own bucket")).collect();
        // ...but only CONCURRENT joins are handled at once.
        assert!(limits.admit(Some(b)).unwrap_err().to_string().contains("busy"));
        drop(held);
        assert!(limits.admit(Some(b)).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn any_text_is_a_token_or_refused_without_panicking(raw in ".{0,200}", near in "berth1(\\.[0-9a-fA-F]{0,70}){0,5}") {
                for s in [&raw, &near] {
                    if let Ok(t) = JoinToken::parse(s) {
                        prop_assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
                    }
                }
            }

            #[test]
            fn tokens_round_trip(fp in "[0-9a-f]{64}", id in "[0-9a-f]{12}", secret in "[0-9a-f]{48}", pad in "[ \t\n]{0,3}") {
                let t = JoinToken { ca_fingerprint: fp, id, secret };
                // Pasted with stray whitespace around it: still the same token.
                prop_assert_eq!(JoinToken::parse(&format!("{pad}{t}{pad}")).unwrap(), t);
            }
        }
    }
}
