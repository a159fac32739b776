//! Custody of the cluster CA's key, and everything it signs.
//!
//! The key signs the certificates that make a node a member, so it is kept
//! where the cluster's trust already is: on the voters, which decide what
//! the cluster agrees on anyway. Each voter keeps it in its data directory
//! (`tls/ca-keys/<fingerprint>.key`, readable by the node's user only); the
//! replicated state holds only certificates, so a learner, which receives
//! every record, never learns it. A node that becomes a voter fetches the
//! key from a voter that holds it ([`CaRequest::FetchKey`], answered only to
//! a caller that is a voter in the answering node's membership); a node
//! that becomes a learner deletes its copy.
//!
//! A node without the key asks a holder to sign for it, over the peer
//! channel (mutual TLS, the caller known by its certificate):
//! - a join arriving at a learner is relayed whole to a holder, which checks
//!   the token again, registers the node and signs its certificate, so a
//!   learner can sign nothing a join token would not have got anyway;
//! - a node's own certificate is re-issued (CA rotation) for the node id
//!   in the caller's certificate only;
//! - a learner's HTTPS certificate (`--tls-cluster`) names what the node
//!   registered (its advertised host) and the loopback names only.
//!
//! Rotation (`berth cluster ca rotate`) is in [`berth_raft::ca`]: a voter
//! makes the next CA and its cross certificate, keeps the key, and commits
//! the start; every node then writes a certificate from the new CA and the
//! two-CA trust bundle to disk ([`Custody::tend`]), which take effect when
//! the node restarts; `--finish` drops the previous CA once every node
//! reports running on the new one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_common::NodeId;
use berth_raft::command::{CaCert, CaCommand, CaTrust};
use berth_raft::command::{ClusterRecord, MetaCommand, MetaResponse, NodeRecord};
use berth_raft::network::PeerRpc;
use berth_raft::state::keys;
use berth_raft::state::StateError;
use berth_raft::{Actor, MetaError, MetaNodeHandle, StateRead};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use berth_gateway::{ApiError, ErrorCode};

use crate::cluster::join_wire::{JoinReply, JoinRequest};
use crate::cluster::pki::{self, CaKeys, PkiError};
use crate::config::{write_private, Layout};

/// Why a CA step failed: its words go to the operator's log or, over the
/// peer service, to the node that asked.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("this node has not caught up with the cluster yet; try again")]
    NotCaughtUp,
    #[error("node {0} does not hold the key of the signing CA")]
    NoKey(NodeId),
    #[error("node {0} is not a voter; only voters keep the CA key")]
    NotAVoter(NodeId),
    #[error("CA sha256:{0} is not trusted by the cluster")]
    Untrusted(String),
    #[error("public key is unusable: {0}")]
    UnusableKey(PkiError),
    /// This node's own key file does not parse.
    #[error(transparent)]
    Key(rcgen::Error),
    #[error("no such node")]
    NoSuchNode,
    #[error("a relayed join is taken by the join service")]
    RelayedJoin,
    /// What the last holder asked answered, or why none could be asked.
    #[error("{0}")]
    Holders(String),
    #[error("unreadable answer from node {node}: {source}")]
    UnreadableAnswer { node: NodeId, source: berth_common::CodecError },
    /// A holder's or the state machine's answer that fits no question;
    /// `what` says which.
    #[error("{what}: {answer}")]
    Unexpected { what: &'static str, answer: String },
    /// Reading or writing a key or certificate file; the words say which.
    #[error("{0}")]
    Files(String),
}

pub type Result<T, E = CaError> = std::result::Result<T, E>;

/// The cluster's CAs as this node's state knows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Trust {
    pub cluster_id: String,
    /// The CA that signs now.
    pub signing: CaCert,
    /// During a rotation: the CA before, and the signing CA's certificate
    /// signed by it.
    pub previous: Option<(CaCert, String)>,
    /// The CA key in the cluster record (fingerprint, key), in clusters
    /// made before the voters kept it.
    legacy_key: Option<(String, String)>,
}

impl Trust {
    /// `None` until the cluster record has reached this node.
    pub fn read(state: &impl StateRead) -> Result<Option<Trust>> {
        let Some(cluster) = state.get::<ClusterRecord>(keys::CLUSTER)? else {
            return Ok(None);
        };
        let first = CaCert { fingerprint: pki::fingerprint(&cluster.ca_cert_pem)?, pem: cluster.ca_cert_pem };
        let legacy_key = Some(cluster.ca_key_pem).filter(|k| !k.is_empty()).map(|k| (first.fingerprint.clone(), k));
        let (signing, previous) = match berth_raft::state::ca::trust(state)? {
            Some(CaTrust { signing, rotation }) => (signing, rotation.map(|r| (r.previous, r.cross_pem))),
            None => (first, None),
        };
        Ok(Some(Trust { cluster_id: cluster.cluster_id, signing, previous, legacy_key }))
    }

    /// Every CA a node must trust now.
    pub fn trusted(&self) -> Vec<&CaCert> {
        std::iter::once(&self.signing).chain(self.previous.as_ref().map(|(p, _)| p)).collect()
    }

    /// The trust bundle, PEM: what `tls/ca.pem` holds and clients trust.
    pub fn bundle(&self) -> String {
        self.trusted().iter().map(|c| c.pem.as_str()).collect()
    }

    /// The chain a node presents with `leaf` (from the signing CA): during
    /// a rotation the cross certificate links it to the previous CA, and
    /// both CAs ride along, so a joining node can find the one its token
    /// pins.
    pub fn chain(&self, leaf: &str) -> String {
        match &self.previous {
            Some((previous, cross)) => format!("{leaf}{cross}{}{}", self.signing.pem, previous.pem),
            None => format!("{leaf}{}", self.signing.pem),
        }
    }

    /// The CA a join token pins: one every node's chain leads to, whether
    /// or not the node has restarted on the new CA yet.
    pub fn pin(&self) -> &CaCert {
        self.previous.as_ref().map(|(p, _)| p).unwrap_or(&self.signing)
    }
}

/// The CA keys this node holds, one file per CA.
#[derive(Debug, Clone)]
pub struct Keyring {
    dir: PathBuf,
}

impl Keyring {
    pub fn new(layout: &Layout) -> Keyring {
        Keyring { dir: layout.ca_keys() }
    }

    fn path(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{fingerprint}.key"))
    }

    pub fn get(&self, fingerprint: &str) -> Option<String> {
        std::fs::read_to_string(self.path(fingerprint)).ok()
    }

    /// Whether the key is held, without reading it.
    pub fn has(&self, fingerprint: &str) -> bool {
        self.path(fingerprint).exists()
    }

    pub fn put(&self, fingerprint: &str, key_pem: &str) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        write_private(&self.path(fingerprint), key_pem)
    }

    /// Fingerprints of the keys held, with when each was written.
    fn held(&self) -> Vec<(String, SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let fp = name.strip_suffix(".key")?.to_string();
                Some((fp, e.metadata().and_then(|m| m.modified()).ok()?))
            })
            .collect()
    }

    fn remove(&self, fingerprint: &str) {
        match std::fs::remove_file(self.path(fingerprint)) {
            Ok(()) => tracing::info!(ca = %fingerprint, "deleted a CA key this node no longer keeps"),
            Err(e) => tracing::warn!(ca = %fingerprint, error = %e, "cannot delete a CA key"),
        }
    }
}

/// A call about the CA between members (`Ca` on the peer service).
#[derive(Debug, Serialize, Deserialize)]
pub enum CaRequest {
    /// A voter asks for the key of a trusted CA.
    FetchKey { fingerprint: String },
    /// A node asks for its own certificate from the signing CA.
    SignNode { public_key_der: Vec<u8> },
    /// A node asks for its HTTPS certificate from the signing CA.
    SignServer { public_key_der: Vec<u8> },
    /// A join that reached a node without the key.
    Join { from: Option<std::net::IpAddr>, request: JoinRequest },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum CaReply {
    Key(String),
    /// A certificate, PEM, without its chain.
    Cert(String),
    Joined(JoinReply),
}

/// A key a rotation made stays this long even before the rotation is
/// committed, so tidying up never races the commit.
const FRESH_KEY_GRACE: Duration = Duration::from_secs(600);

/// How often a node checks its keys, certificate and report.
const TEND_EVERY: Duration = Duration::from_secs(2);

/// The node's side of the CA: holding keys, signing or asking a holder.
pub struct Authority {
    pub meta: MetaNodeHandle,
    keys: Keyring,
    layout: Layout,
}

impl Authority {
    pub fn new(meta: MetaNodeHandle, layout: &Layout) -> Arc<Authority> {
        Arc::new(Authority { meta, keys: Keyring::new(layout), layout: layout.clone() })
    }

    pub fn trust(&self) -> Result<Trust> {
        Trust::read(&self.meta.state())?.ok_or(CaError::NotCaughtUp)
    }

    /// The signing CA with its key, when this node holds it.
    pub fn signer(&self, trust: &Trust) -> Option<CaKeys> {
        let key = self.keys.get(&trust.signing.fingerprint)?;
        Some(CaKeys { cert_pem: trust.signing.pem.clone(), key_pem: key })
    }

    /// Asks the nodes that may hold the key, the leader first, until one
    /// answers; the last refusal otherwise.
    pub async fn ask_holders(&self, req: &CaRequest) -> Result<CaReply> {
        let me = self.meta.id();
        let mut order: Vec<u64> = self.meta.leader().into_iter().collect();
        order.extend(self.meta.voters().into_iter().filter(|v| Some(*v) != self.meta.leader()));
        order.retain(|n| *n != me);
        let mut last = "no voter is reachable".to_string();
        for node in order {
            match self.meta.call_member::<_, berth_raft::wire::PeerResult<Vec<u8>>>(node, PeerRpc::Ca, req, Duration::from_secs(30)).await {
                Ok(Ok(bytes)) => return berth_raft::wire::from_payload(&bytes).map_err(|source| CaError::UnreadableAnswer { node, source }),
                Ok(Err(why)) => last = format!("node {node}: {why}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(CaError::Holders(last))
    }

    /// This node's own certificate from the signing CA, for its key.
    async fn own_cert(&self, trust: &Trust, public_key_der: Vec<u8>) -> Result<String> {
        match self.signer(trust) {
            Some(ca) => Ok(pki::sign_node_cert(&ca, self.meta.id(), &public_key_der)?),
            None => match self.ask_holders(&CaRequest::SignNode { public_key_der }).await? {
                CaReply::Cert(pem) => Ok(pem),
                other => Err(unexpected("unexpected answer", other)),
            },
        }
    }

    /// An HTTPS certificate (the chain, PEM) for `key` and `names`; from a
    /// holder when this node is not one, which certifies the names this
    /// node registered instead.
    pub async fn server_cert(&self, key: &rcgen::KeyPair, names: &[String]) -> Result<String> {
        let trust = self.trust()?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(key);
        let leaf = match self.signer(&trust) {
            Some(ca) => pki::sign_server_cert(&ca, names, &spki)?,
            None => match self.ask_holders(&CaRequest::SignServer { public_key_der: spki }).await? {
                CaReply::Cert(pem) => pem,
                other => return Err(unexpected("unexpected answer", other)),
            },
        };
        Ok(trust.chain(&leaf))
    }

    /// Makes the next CA and commits the start of a rotation to it; this
    /// node must hold the key of the CA that signs now. The new key is on
    /// this node's disk before the rotation is committed, so the cluster
    /// never trusts a CA whose key nobody has.
    pub async fn start_rotation(&self, actor: Actor) -> Result<(), ApiError> {
        let trust = self.trust().map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
        if let Some((previous, _)) = &trust.previous {
            let why = format!("a rotation from CA sha256:{} is under way; finish it first (`berth cluster ca rotate --finish`)", previous.fingerprint);
            return Err(ApiError::new(ErrorCode::Conflict, why));
        }
        let current = self.signer(&trust).ok_or_else(|| {
            let why =
                format!("node {} holds no key of the cluster CA (voters do, a few seconds after they become voters); run this against a voter", self.meta.id());
            ApiError::new(ErrorCode::Conflict, why)
        })?;
        let generation = crate::util::now_ms() / 1000;
        let internal = |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::Internal, format!("new CA: {e}"));
        let (next, cross_pem) = pki::next_ca(&current, &trust.cluster_id, generation).map_err(|e| internal(&e))?;
        let next_cert = CaCert { fingerprint: pki::fingerprint(&next.cert_pem).map_err(|e| internal(&e))?, pem: next.cert_pem };
        self.keys.put(&next_cert.fingerprint, &next.key_pem).map_err(|e| internal(&e))?;
        let to = next_cert.fingerprint.clone();
        let cmd = CaCommand::StartRotation { current: trust.signing.clone(), next: next_cert, cross_pem, now_ms: crate::util::now_ms() };
        self.commit(actor, cmd).await?;
        tracing::warn!(from = %trust.signing.fingerprint, to = %to, "cluster CA rotation started");
        Ok(())
    }

    /// Commits the end of a rotation (refused while a node runs on the
    /// previous CA).
    pub async fn finish_rotation(&self, actor: Actor) -> Result<(), ApiError> {
        self.commit(actor, CaCommand::FinishRotation).await?;
        tracing::warn!("cluster CA rotation finished; the previous CA is trusted no more");
        Ok(())
    }

    async fn commit(&self, actor: Actor, cmd: CaCommand) -> Result<(), ApiError> {
        match self.meta.write(actor, MetaCommand::Ca(cmd)).await.map_err(crate::errors::meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::Conflict, why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
    }

    /// Answers a member's [`CaRequest`] (a relayed join is the join
    /// service's: `cluster::join::CaService`).
    pub async fn answer(&self, caller: u64, req: CaRequest) -> Result<CaReply> {
        let trust = self.trust()?;
        let no_key = || CaError::NoKey(self.meta.id());
        match req {
            CaRequest::FetchKey { fingerprint } => {
                if !self.meta.voters().contains(&caller) {
                    tracing::warn!(node_id = caller, "refused the CA key to a node that is not a voter");
                    return Err(CaError::NotAVoter(caller));
                }
                if !trust.trusted().iter().any(|c| c.fingerprint == fingerprint) {
                    return Err(CaError::Untrusted(fingerprint));
                }
                self.keys.get(&fingerprint).map(CaReply::Key).ok_or_else(no_key)
            }
            CaRequest::SignNode { public_key_der } => {
                let ca = self.signer(&trust).ok_or_else(no_key)?;
                pki::check_node_key(&public_key_der).map_err(CaError::UnusableKey)?;
                tracing::info!(node_id = caller, ca = %trust.signing.fingerprint, "re-issued a node certificate");
                Ok(pki::sign_node_cert(&ca, caller, &public_key_der).map(CaReply::Cert)?)
            }
            CaRequest::SignServer { public_key_der } => {
                let ca = self.signer(&trust).ok_or_else(no_key)?;
                let record: NodeRecord = self.meta.state().get(&keys::node(caller))?.ok_or(CaError::NoSuchNode)?;
                let names = crate::cluster::tls::names_for(&record.http_addr, "");
                Ok(pki::sign_server_cert(&ca, &names, &public_key_der).map(CaReply::Cert)?)
            }
            CaRequest::Join { .. } => Err(CaError::RelayedJoin),
        }
    }
}

/// A server certificate from the cluster CA for `names` (DNS names or
/// IPs), signed by this node or by a voter holding the CA key.
pub async fn cluster_server_cert(authority: &Authority, names: &[String]) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let key = rcgen::KeyPair::generate()?;
    let chain = authority.server_cert(&key, names).await.map_err(|e| anyhow::anyhow!("cluster certificate: {e}"))?;
    crate::cluster::tls::certified_key(chain.as_bytes(), key.serialize_pem().as_bytes(), "cluster certificate")
}

/// The background work of [`Authority`]: keys where they belong, this
/// node's certificate from the signing CA, and a report of what it runs on.
pub struct Custody {
    authority: Arc<Authority>,
    /// The CA that signed the certificate this process presents.
    running: String,
    signing: watch::Sender<String>,
    /// The CAs this node's certificate and bundle on disk were last made
    /// for: until they change, there is nothing to read or write.
    settled: std::sync::Mutex<Option<Trust>>,
}

impl Custody {
    /// `running_chain` is the certificate chain this process loaded.
    pub fn new(authority: Arc<Authority>, running_chain: &str) -> Custody {
        let running = pki::fingerprint_of_issuer_in(running_chain).unwrap_or_default();
        Custody { authority, running, signing: watch::channel(String::new()).0, settled: Default::default() }
    }

    /// Changes whenever the signing CA does (its fingerprint).
    pub fn signing_changes(&self) -> watch::Receiver<String> {
        self.signing.subscribe()
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.tend().await;
            tokio::select! {
                _ = tokio::time::sleep(TEND_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One round of upkeep. Every step is idempotent, and a step that
    /// fails (a voter out of reach, say) does not hold the others back.
    pub async fn tend(&self) {
        let a = &self.authority;
        let trust = match Trust::read(&a.meta.state()) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "cluster CA upkeep: cannot read the CA records"),
        };
        self.signing.send_if_modified(|fp| std::mem::replace(fp, trust.signing.fingerprint.clone()) != trust.signing.fingerprint);
        let voters = a.meta.voters();
        let keys = if voters.is_empty() { Ok(()) } else { self.keep_keys(&trust, voters.contains(&a.meta.id())).await };
        let cert = self.renew_own_certificate(&trust).await;
        let report = self.report_running(&trust).await;
        for (step, outcome) in [("keys", keys), ("certificate", cert), ("report", report)] {
            if let Err(e) = outcome {
                tracing::warn!(step, error = %e, "cluster CA upkeep failed; will retry");
            }
        }
    }

    async fn keep_keys(&self, trust: &Trust, voter: bool) -> Result<()> {
        let a = &self.authority;
        if !voter {
            for (fp, _) in a.keys.held() {
                a.keys.remove(&fp);
            }
            return Ok(());
        }
        if let Some((fp, key)) = trust.legacy_key.as_ref().filter(|(fp, _)| !a.keys.has(fp)) {
            a.keys.put(fp, key).map_err(|e| CaError::Files(e.to_string()))?;
            tracing::info!(ca = %fp, "kept the CA key from the cluster record on this voter");
        }
        for ca in trust.trusted() {
            if !a.keys.has(&ca.fingerprint) {
                match a.ask_holders(&CaRequest::FetchKey { fingerprint: ca.fingerprint.clone() }).await? {
                    CaReply::Key(pem) => {
                        a.keys.put(&ca.fingerprint, &pem).map_err(|e| CaError::Files(e.to_string()))?;
                        tracing::info!(ca = %ca.fingerprint, "fetched the CA key from a voter");
                    }
                    other => return Err(unexpected("unexpected answer", other)),
                }
            }
        }
        let trusted: BTreeSet<&str> = trust.trusted().iter().map(|c| c.fingerprint.as_str()).collect();
        for (fp, written) in a.keys.held() {
            if !trusted.contains(fp.as_str()) && written.elapsed().unwrap_or_default() > FRESH_KEY_GRACE {
                a.keys.remove(&fp);
            }
        }
        if trust.legacy_key.as_ref().is_some_and(|(fp, _)| a.keys.has(fp)) && a.meta.is_leader() {
            match a.meta.write(Actor::Node, MetaCommand::Ca(CaCommand::ForgetLegacyKey)).await? {
                MetaResponse::Done => tracing::info!("the CA key is off the replicated cluster record; voters keep it"),
                other => return Err(unexpected("forgetting the legacy CA key", other)),
            }
        }
        Ok(())
    }

    /// Writes this node's certificate from the signing CA and the trust
    /// bundle to disk when they differ from what is there; they take
    /// effect when the node restarts.
    async fn renew_own_certificate(&self, trust: &Trust) -> Result<()> {
        if self.settled.lock().expect("settled lock").as_ref() == Some(trust) {
            return Ok(());
        }
        let a = &self.authority;
        let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|e| CaError::Files(format!("cannot read {}: {e}", p.display())));
        let chain = read(a.layout.node_cert())?;
        let leaf = match pki::fingerprint_of_issuer_in(&chain) {
            Some(fp) if fp == trust.signing.fingerprint => pki::first_cert_pem(&chain)?,
            _ => {
                let key = rcgen::KeyPair::from_pem(&read(a.layout.node_key())?).map_err(CaError::Key)?;
                a.own_cert(trust, rcgen::PublicKeyData::subject_public_key_info(&key)).await?
            }
        };
        let (chain_now, bundle_now) = (trust.chain(&leaf), trust.bundle());
        let mut changed = false;
        // The bundle first: a node restarting in between trusts the new CA
        // before it presents a certificate from it.
        for (path, want, have) in [(a.layout.ca_cert(), &bundle_now, read(a.layout.ca_cert())?), (a.layout.node_cert(), &chain_now, chain)] {
            if *want != have {
                write_private(&path, want).map_err(|e| CaError::Files(format!("{e:#}")))?;
                changed = true;
            }
        }
        if changed {
            tracing::warn!(ca = %trust.signing.fingerprint, "wrote this node's certificate and trust bundle for the cluster CA; restart the node to use them");
        }
        *self.settled.lock().expect("settled lock") = Some(trust.clone());
        Ok(())
    }

    async fn report_running(&self, trust: &Trust) -> Result<()> {
        let a = &self.authority;
        let reported = berth_raft::state::ca::node_ca(&a.meta.state(), a.meta.id())?;
        if self.running.is_empty() || reported.as_deref() == Some(self.running.as_str()) || !trust.trusted().iter().any(|c| c.fingerprint == self.running) {
            return Ok(());
        }
        let cmd = MetaCommand::Ca(CaCommand::ReportNodeCa { node: a.meta.id(), fingerprint: self.running.clone() });
        a.meta.write(Actor::Node, cmd).await?;
        Ok(())
    }
}

/// An answer that fits no question, for the log.
pub(crate) fn unexpected(what: &'static str, answer: impl std::fmt::Debug) -> CaError {
    CaError::Unexpected { what, answer: format!("{answer:?}") }
}
