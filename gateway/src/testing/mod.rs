//! An in-memory node for tests of the HTTP edge: one [`MemoryNode`]
//! implements [`Registry`](crate::Registry), [`Identity`](crate::identity::Identity)
//! and [`Backend`], so the gateway's own tests check status
//! codes, headers and error JSON in milliseconds, without RocksDB, Raft or
//! a second process.
//!
//! It is a small real implementation, not canned answers: blobs are
//! content-addressed and their digests checked, upload sessions keep their
//! bytes and refuse chunks that do not follow, manifests are parsed and
//! must name blobs the repository holds, tags move and go, users log in
//! with passwords and tokens carry only what their holder may do. What it
//! does not model (organizations, robots, teams, application tokens, usage
//! logs, cluster administration) it refuses with 501 and says so, rather
//! than pretending.
//!
//! Its access rule is deliberately plain: a superuser may do anything; any
//! other user may pull everything and push or delete under the namespace
//! of their own name; anonymous callers may do nothing (401).
//!
//! Built for the crate's tests and behind the `testing` feature for
//! others'.

pub mod client;
mod identity;
mod registry;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use axum::http::StatusCode;
use berth_common::{Digest, RepoName};
use bytes::Bytes;
use futures::StreamExt;

use crate::access::{Access, Caller, Credentials, Principal, ResourceScope};
use crate::api::{
    Backend, CaStatus, CaStep, ClusterStatus, CreatedToken, DrainReport, DrillReport, DrillReportRequest, IsolateRequest, Isolation, NodeChange, PlacementDoc,
    TokenCreateRequest, TokenInfo, TransferLeaderReply,
};
use crate::error::{ApiError, ErrorCode};
use crate::registry::{ByteStream, StoredManifest};
use crate::{HttpLimits, Services};

/// The service name tokens are issued for.
pub const SERVICE: &str = "berth-memory";

/// Lifetime the double writes into its tokens (it never expires them).
const TOKEN_TTL_SECS: u64 = 300;

/// A node whose state lives in memory. Cheap to make; clone the `Arc`.
pub struct MemoryNode {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    /// Registry tokens issued: token → what it grants, to whom.
    tokens: HashMap<String, TokenGrant>,
    /// Every blob, once, by digest: the content-addressed store.
    blobs: HashMap<Digest, Bytes>,
    repos: BTreeMap<RepoName, Repo>,
    uploads: HashMap<String, Upload>,
    /// Source of token and upload ids (unique within this node).
    next_id: u64,
    audit: Vec<AuditRecord>,
}

struct User {
    password: String,
    superuser: bool,
}

struct TokenGrant {
    user: String,
    grants: Vec<ResourceScope>,
}

/// A repository exists from its first successful write on.
#[derive(Default)]
struct Repo {
    /// Blobs linked into it (stored, mounted or finished uploads).
    blobs: BTreeSet<Digest>,
    manifests: HashMap<Digest, Manifest>,
    tags: BTreeMap<String, Digest>,
}

struct Manifest {
    stored: StoredManifest,
    /// For the referrers API.
    artifact_type: Option<String>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

struct Upload {
    repo: RepoName,
    bytes: Vec<u8>,
}

/// One usage-log entry, as the gateway asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub kind: &'static str,
    pub repo: String,
    pub performer: String,
    pub metadata: Vec<(&'static str, String)>,
}

impl MemoryNode {
    /// An empty node with one superuser, `admin`. Installs the process's
    /// TLS crypto provider (ring, as the node does) if none is yet: the
    /// HTTP clients of the services and of tests need one.
    pub fn new(admin_password: &str) -> Arc<MemoryNode> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let node = MemoryNode { state: Mutex::new(State::default()) };
        node.lock().users.insert("admin".into(), User { password: admin_password.into(), superuser: true });
        Arc::new(node)
    }

    /// Adds an ordinary user (or replaces one).
    pub fn add_user(&self, name: &str, password: &str) {
        self.lock().users.insert(name.into(), User { password: password.into(), superuser: false });
    }

    /// The usage-log entries recorded so far.
    pub fn audit_log(&self) -> Vec<AuditRecord> {
        self.lock().audit.clone()
    }

    /// Repositories that exist (written to at least once).
    pub fn repositories(&self) -> Vec<String> {
        self.lock().repos.keys().map(|r| r.to_string()).collect()
    }

    /// The gateway's services over this node.
    pub fn services(self: &Arc<Self>) -> Services {
        Services { backend: self.clone(), registry: self.clone(), identity: self.clone(), http: reqwest::Client::new(), public_url: None }
    }

    /// Serves the whole router on a loopback port until the runtime ends;
    /// returns the base URL (`http://127.0.0.1:port`).
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(crate::serve(listener, self.services(), HttpLimits::default(), std::future::pending()));
        Ok(base)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a failed test already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn fresh_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("mem-{kind}-{}", self.next_id)
    }

    /// Who presented these credentials; a registry token comes back with
    /// its grants. Wrong credentials are a 401.
    fn authenticate(&self, caller: &Caller) -> Result<(Principal, Option<&[ResourceScope]>), ApiError> {
        match &caller.creds {
            Credentials::None => Ok((Principal::Anonymous, None)),
            Credentials::Basic { user, password } => match self.users.get(user) {
                Some(u) if u.password == *password => Ok((Principal::User { name: user.clone(), superuser: u.superuser }, None)),
                _ => Err(ApiError::new(ErrorCode::Unauthorized, "wrong user name or password")),
            },
            Credentials::Session(_) => Err(ApiError::new(ErrorCode::Unauthorized, "the memory node issues no console sessions")),
            Credentials::Bearer(token) => {
                let t = self.tokens.get(token).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the token is not one this registry issued"))?;
                let u = self.users.get(&t.user).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the token's user no longer exists"))?;
                Ok((Principal::User { name: t.user.clone(), superuser: u.superuser }, Some(&t.grants)))
            }
        }
    }

    /// Authenticates for the identity and admin APIs, which take
    /// credentials, never registry tokens.
    fn who(&self, caller: &Caller) -> Result<Access, ApiError> {
        match self.authenticate(caller)? {
            (_, Some(_)) => Err(ApiError::new(ErrorCode::Unauthorized, "registry tokens are for /v2; present credentials here")),
            (principal, None) => Ok(Access { principal, ip: caller.ip }),
        }
    }
}

/// May `p` do `action` (`pull`, `push`, `delete`) on repository `name`?
fn may(p: &Principal, name: &str, action: &str) -> bool {
    match p {
        Principal::Anonymous => false,
        _ if p.is_superuser() => true,
        Principal::User { name: user, .. } => action == "pull" || name.split('/').next() == Some(user.as_str()),
        _ => false,
    }
}

/// The refusal of everything the double does not model.
fn unmodelled(what: &str) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, format!("the in-memory node has no {what}")).with_status(StatusCode::NOT_IMPLEMENTED)
}

/// Reads a whole request body; a broken body is BLOB_UPLOAD_INVALID.
async fn collect(mut body: ByteStream) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::BlobUploadInvalid, format!("reading the request body: {e}")))?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The digest check every stored blob passes.
fn verified(digest: &Digest, bytes: &[u8]) -> Result<(), ApiError> {
    if digest.matches(bytes) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::DigestInvalid, format!("the content does not have digest {digest}")))
    }
}

/// RFC 3339 (UTC, seconds) of `secs` since the epoch.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3_600, rem / 60 % 60, rem % 60)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[async_trait]
impl Backend for MemoryNode {
    async fn ready(&self) -> Result<(), crate::api::NotReady> {
        Ok(())
    }

    async fn authorize_admin(&self, caller: &Caller) -> Result<Principal, ApiError> {
        let who = self.lock().who(caller)?;
        match who.principal {
            Principal::Anonymous => Err(ApiError::new(ErrorCode::Unauthorized, "the cluster API needs credentials")),
            p if p.is_superuser() => Ok(p),
            _ => Err(ApiError::new(ErrorCode::Denied, "the cluster API is for superusers")),
        }
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, ApiError> {
        Err(unmodelled("cluster"))
    }

    async fn create_join_token(&self, _who: &Principal, _req: TokenCreateRequest) -> Result<CreatedToken, ApiError> {
        Err(unmodelled("join tokens"))
    }

    async fn list_join_tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        Err(unmodelled("join tokens"))
    }

    async fn revoke_join_token(&self, _who: &Principal, _id: &str) -> Result<(), ApiError> {
        Err(unmodelled("join tokens"))
    }

    async fn set_node(&self, _who: &Principal, _node: u64, _change: NodeChange) -> Result<(), ApiError> {
        Err(unmodelled("cluster membership"))
    }

    async fn transfer_leader(&self, _to: Option<u64>) -> Result<TransferLeaderReply, ApiError> {
        Err(unmodelled("leader"))
    }

    async fn drain_node(&self, _who: &Principal, _node: u64) -> Result<DrainReport, ApiError> {
        Err(unmodelled("draining"))
    }

    async fn backup(&self, _who: &Principal) -> Result<Vec<u8>, ApiError> {
        Err(unmodelled("backups"))
    }

    async fn get_placement(&self, _namespace: &str) -> Result<PlacementDoc, ApiError> {
        Err(unmodelled("placement"))
    }

    async fn probe_write(&self, _who: &Principal) -> Result<(), ApiError> {
        Ok(())
    }

    async fn record_drill(&self, _who: &Principal, _report: DrillReportRequest) -> Result<(), ApiError> {
        Err(unmodelled("drill reports"))
    }

    async fn drill_reports(&self) -> Result<Vec<DrillReport>, ApiError> {
        Err(unmodelled("drill reports"))
    }

    async fn ca_pem(&self) -> Result<String, ApiError> {
        Err(unmodelled("certificate authority"))
    }

    async fn ca_status(&self) -> Result<CaStatus, ApiError> {
        Err(unmodelled("certificate authority"))
    }

    async fn rotate_ca(&self, _who: &Principal, _step: CaStep) -> Result<CaStatus, ApiError> {
        Err(unmodelled("certificate authority"))
    }

    async fn metrics_text(&self) -> String {
        String::new()
    }

    async fn set_placement(&self, _who: &Principal, _namespace: &str, _doc: PlacementDoc) -> Result<(), ApiError> {
        Err(unmodelled("placement"))
    }

    async fn isolate(&self, _req: IsolateRequest) -> Result<Isolation, ApiError> {
        Err(unmodelled("peers to cut off"))
    }

    async fn end_isolation(&self) -> Result<(), ApiError> {
        Err(unmodelled("peers to cut off"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_access_rule() {
        let user = Principal::User { name: "ann".into(), superuser: false };
        assert!(may(&user, "bob/app", "pull") && may(&user, "ann/app", "push") && may(&user, "ann/x/y", "delete"));
        assert!(!may(&user, "bob/app", "push") && !may(&user, "annex/app", "push"));
        assert!(!may(&Principal::Anonymous, "ann/app", "pull"));
        assert!(may(&Principal::User { name: "root".into(), superuser: true }, "bob/app", "delete"));
    }
}
