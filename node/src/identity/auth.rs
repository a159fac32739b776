//! Who is asking: credentials checked against the identities in the
//! metadata, so a robot made on one node logs in on every node at once and
//! a deleted one stops everywhere.
//!
//! Accepted:
//! - basic auth as a user (argon2), a robot (`ns+short` + its secret) or an
//!   application token (user `$app`, or its owner, + the token);
//! - bearer: a registry token (JWT, [`crate::identity::jwt`]), an application token,
//!   or the node's operator token.
//!
//! argon2 is slow on purpose, so a verified (user, password) pair is
//! remembered for a few minutes, tied to the stored hash it was checked
//! against: a changed password or a deleted user invalidates it at the next
//! request. Failed logins are slowed down per (account, source address)
//! and per source address, never per account alone ([`Throttle`]).
//! Secrets are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_gateway::{ApiError, Caller, Credentials, ErrorCode, Principal};
use berth_raft::command::{AppTokenRecord, RobotRecord, TokenKey, TokenScope, INITIAL_KID};
use berth_raft::command::{ClusterRecord, IdentityCommand, MetaCommand, MetaResponse, TeamRecord, UserRecord};
use berth_raft::state::{keys, StateError};
use berth_raft::{Actor, ClientAccount, MetaNodeHandle, StateRead};
use sha2::Digest as _;

use crate::errors::state_err;
use crate::identity::audit::AuditLog;
use crate::identity::jwt::{self, Claims, SigningKey};
use crate::identity::ldap::{Directory, Verdict};
use crate::util::now_ms;

const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long registry tokens live.
pub const TOKEN_TTL_SECS: u64 = 300;
/// Prefix of application tokens (`bat_<id>_<secret>`).
pub const APP_TOKEN_PREFIX: &str = "bat_";

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The actor a write made for `p` names: the account the leader looks up
/// again before proposing it ([`crate::cluster::write_gate`]).
pub fn actor_of(p: &Principal) -> Actor {
    Actor::Client(match p {
        Principal::Anonymous => ClientAccount::Anonymous,
        Principal::Operator => ClientAccount::Operator,
        Principal::User { name, .. } => ClientAccount::User(name.clone()),
        Principal::Robot { name } => ClientAccount::Robot(name.clone()),
        Principal::App { id, .. } => ClientAccount::AppToken(id.clone()),
    })
}

/// The principal `account` stands for in `state` at `now_ms`, or `None`
/// when it stands for none any more: a deleted user or robot, an
/// application token deleted, expired or whose owner is gone. Secrets are
/// not checked here: the account was authenticated when it was named.
/// The operator is whoever holds a member's operator token (a removed
/// member is refused before this is asked).
pub fn principal_in(state: &impl StateRead, account: &ClientAccount, now_ms: u64) -> Result<Option<Principal>, StateError> {
    Ok(match account {
        ClientAccount::Anonymous => Some(Principal::Anonymous),
        ClientAccount::Operator => Some(Principal::Operator),
        ClientAccount::User(name) => state.get::<UserRecord>(&keys::user(name))?.map(|r| Principal::User { name: r.name, superuser: r.superuser }),
        ClientAccount::Robot(name) => match name.split_once('+') {
            Some((ns, short)) => state.get::<RobotRecord>(&keys::robot(ns, short))?.map(|r| Principal::Robot { name: r.full_name() }),
            None => None,
        },
        ClientAccount::AppToken(id) => match state.get::<AppTokenRecord>(&keys::app_token(id))? {
            Some(rec) if rec.expires_at_ms.is_none_or(|e| e > now_ms) => app_principal_in(state, rec)?,
            _ => None,
        },
    })
}

/// An application token's principal: its owner's rights within its
/// scopes; `None` once the owner is gone.
fn app_principal_in(state: &impl StateRead, rec: AppTokenRecord) -> Result<Option<Principal>, StateError> {
    let Some(owner) = state.get::<UserRecord>(&keys::user(&rec.owner))? else { return Ok(None) };
    Ok(Some(Principal::App {
        id: rec.id,
        owner: rec.owner,
        owner_superuser: owner.superuser,
        scopes: rec.scopes.iter().map(|s: &TokenScope| s.as_str().to_string()).collect(),
    }))
}

/// A principal, and for a registry token, what the token grants.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    pub grants: Option<Vec<jwt::Grant>>,
}

/// Slows down guessing: after [`Throttle::FREE`] failures for an account
/// from one source address (or [`Throttle::FREE_PER_SOURCE`] from an
/// address, whatever the accounts), each further attempt from that address
/// must wait twice as long as the one before, up to a minute.
///
/// Never per account alone: the count is checked before the password, so
/// a count shared by every source would let anyone who knows a name keep
/// its owner out (two wrong robot secrets a second from one address kept
/// the robot, with its right secret, at 429 everywhere). A success clears
/// the (account, source) count, not the source's: an attacker cannot reset
/// its budget with an account of its own.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    const FREE: u32 = 5;
    const FREE_PER_SOURCE: u32 = 20;
    const MAX_WAIT: Duration = Duration::from_secs(60);
    const FORGET_AFTER: Duration = Duration::from_secs(900);

    /// The (account, source) key; callers without a known address share
    /// one source.
    fn pair(account: &str, ip: Option<IpAddr>) -> String {
        match ip {
            Some(ip) => format!("account:{account}@{ip}"),
            None => format!("account:{account}@?"),
        }
    }

    fn keys(account: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
        let mut k = vec![(Self::pair(account, ip), Self::FREE)];
        if let Some(ip) = ip {
            k.push((format!("source:{ip}"), Self::FREE_PER_SOURCE));
        }
        k
    }

    /// How long the caller must still wait, if at all.
    pub fn wait(&self, account: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let map = self.failures.lock().expect("throttle lock");
        Self::keys(account, ip)
            .into_iter()
            .filter_map(|(k, free)| {
                let (n, last) = map.get(&k)?;
                let over = n.checked_sub(free)?;
                let wait = Duration::from_secs(1u64 << over.min(6)).min(Self::MAX_WAIT);
                wait.checked_sub(last.elapsed())
            })
            .max()
    }

    pub fn failed(&self, account: &str, ip: Option<IpAddr>) {
        let mut map = self.failures.lock().expect("throttle lock");
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| last.elapsed() < Self::FORGET_AFTER);
        }
        for (k, _) in Self::keys(account, ip) {
            let e = map.entry(k).or_insert((0, Instant::now()));
            if e.1.elapsed() > Self::FORGET_AFTER {
                e.0 = 0;
            }
            e.0 += 1;
            e.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, account: &str, ip: Option<IpAddr>) {
        self.failures.lock().expect("throttle lock").remove(&Self::pair(account, ip));
    }
}

pub struct Authenticator {
    meta: MetaNodeHandle,
    operator_token: String,
    audit: AuditLog,
    throttle: Throttle,
    /// (user, sha256(password)) → (stored hash it matched, when).
    verified: Mutex<HashMap<(String, [u8; 32]), (String, Instant)>>,
    /// Parsed signing keys by kid.
    keys: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// Registry tokens whose signature this node checked already.
    verified_tokens: jwt::VerifiedTokens,
    /// `[auth.ldap]`: checks the passwords of users without a local one.
    directory: Option<Arc<Directory>>,
}

/// The `password_hash` of a user whose password lives in the LDAP
/// directory. An argon2 PHC string starts with `$`, so no password ever
/// verifies against it, and records written before LDAP existed decode
/// unchanged.
pub const FEDERATED_LDAP: &str = "!federated:ldap";

pub fn is_federated(rec: &UserRecord) -> bool {
    rec.password_hash == FEDERATED_LDAP
}

fn denied() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "invalid credentials")
}

impl Authenticator {
    pub fn new(meta: MetaNodeHandle, operator_token: String, audit: AuditLog) -> Authenticator {
        Authenticator {
            meta,
            operator_token,
            audit,
            throttle: Throttle::default(),
            verified: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            verified_tokens: jwt::VerifiedTokens::new(),
            directory: None,
        }
    }

    pub fn with_directory(mut self, directory: Option<Arc<Directory>>) -> Authenticator {
        self.directory = directory;
        self
    }

    /// The service name in challenges and the audience of tokens: the cluster id.
    pub fn service(&self) -> String {
        self.cluster().map(|c| c.cluster_id).unwrap_or_default()
    }

    fn cluster(&self) -> Option<ClusterRecord> {
        self.meta.state().get(keys::CLUSTER).ok().flatten()
    }

    /// Who the caller is; `Anonymous` without credentials. Wrong
    /// credentials are a 401, a throttled account a 429.
    pub async fn authenticate(&self, caller: &Caller) -> Result<Authenticated, ApiError> {
        let plain = |principal| Ok(Authenticated { principal, grants: None });
        match &caller.creds {
            Credentials::None => plain(Principal::Anonymous),
            Credentials::Bearer(t) if same_secret(t.as_bytes(), self.operator_token.as_bytes()) => {
                self.check_still_member()?;
                plain(Principal::Operator)
            }
            Credentials::Bearer(t) if t.starts_with(APP_TOKEN_PREFIX) => plain(self.app_token(t, None, caller.ip).await?),
            Credentials::Bearer(t) => self.registry_token(t, &self.service()).await,
            Credentials::Session(t) => plain(self.session(t).await?),
            Credentials::Basic { user, password } if user == "$app" || password.starts_with(APP_TOKEN_PREFIX) => {
                plain(self.app_token(password, Some(user), caller.ip).await?)
            }
            Credentials::Basic { user, password } if user.contains('+') => plain(self.robot(user, password, caller.ip).await?),
            Credentials::Basic { user, password } => plain(self.user(user, password, caller.ip).await?),
        }
    }

    /// The operator token stands for root on a member of the cluster: once
    /// its node is removed, it is nobody's credential any more (a removed
    /// node must not mint join tokens, change placement or read the
    /// cluster's state). The node learns it was removed from its own
    /// record, which the removal marks before the membership drops it.
    fn check_still_member(&self) -> Result<(), ApiError> {
        if berth_raft::state::node_removed(&self.meta.state(), self.meta.id()).map_err(state_err)? {
            return Err(ApiError::new(ErrorCode::Unauthorized, "this node was removed from the cluster; its operator token is no longer a credential"));
        }
        Ok(())
    }

    /// A record, read locally; when it is missing or `ok` rejects it, read
    /// again after catching up with the leader, so an identity made or
    /// changed through another node a moment ago is known here.
    async fn lookup<T: serde::de::DeserializeOwned>(&self, key: &[u8], ok: impl Fn(&T) -> bool) -> Result<Option<T>, ApiError> {
        let local: Option<T> = self.meta.state().get(key).map_err(state_err)?;
        if local.as_ref().is_some_and(&ok) {
            return Ok(local);
        }
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; checking credentials against local state");
            return Ok(local);
        }
        self.meta.state().get(key).map_err(state_err)
    }

    fn throttled(&self, account: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match self.throttle.wait(account, ip) {
            Some(wait) => Err(ApiError::new(ErrorCode::TooManyRequests, format!("too many failed logins; retry in {} s", wait.as_secs().max(1)))),
            None => Ok(()),
        }
    }

    fn fail(&self, account: &str, ip: Option<IpAddr>, why: &'static str) -> ApiError {
        tracing::info!(account, ?ip, why, "failed login");
        self.throttle.failed(account, ip);
        self.audit.login(false, account, ip, why);
        denied()
    }

    async fn user(&self, user: &str, password: &str, ip: Option<IpAddr>) -> Result<Principal, ApiError> {
        // Before the cache: a guess that happens to be right waits like any other.
        self.throttled(user, ip)?;
        let mut rec: Option<UserRecord> = self.lookup(&keys::user(user), |_: &UserRecord| true).await?;
        if let Some(dir) = &self.directory {
            // A local password wins: local superusers sign in with the directory down.
            if rec.as_ref().is_none_or(is_federated) {
                return self.directory_user(dir, user, password, ip, rec).await;
            }
        }
        let key = (user.to_string(), <[u8; 32]>::from(sha2::Sha256::digest(password.as_bytes())));
        let cached = |rec: &UserRecord| {
            self.verified.lock().expect("auth cache lock").get(&key).is_some_and(|(hash, at)| *hash == rec.password_hash && at.elapsed() < CACHE_TTL)
        };
        let Some(mut rec) = rec.take() else { return Err(self.fail(user, ip, "no such user")) };
        if cached(&rec) {
            return Ok(Principal::User { name: rec.name, superuser: rec.superuser });
        }
        // A check takes argon2's 19 MiB for tens of milliseconds: a burst of
        // logins (a CI fleet starting) or of guesses waits its turn instead
        // of taking that memory all at once. Once its turn comes, a guess
        // the throttle now refuses costs nothing, and a request whose
        // credentials were verified ahead of it uses the cache.
        let _turn = password_turn().await;
        self.throttled(user, ip)?;
        if cached(&rec) {
            return Ok(Principal::User { name: rec.name, superuser: rec.superuser });
        }
        if !verify_password(password, &rec.password_hash).await {
            // The password may have changed through another node a moment ago.
            let fresh = self.lookup(&keys::user(user), |_: &UserRecord| false).await?;
            match fresh {
                Some(f) if f.password_hash != rec.password_hash && verify_password(password, &f.password_hash).await => rec = f,
                _ => return Err(self.fail(user, ip, "wrong password")),
            }
        }
        self.throttle.succeeded(user, ip);
        let mut cache = self.verified.lock().expect("auth cache lock");
        cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        cache.insert(key, (rec.password_hash.clone(), Instant::now()));
        Ok(Principal::User { name: rec.name, superuser: rec.superuser })
    }

    /// A login checked by binding as the user in the directory; the first
    /// one creates the berth user (federated, no local password), and each
    /// one brings the user's teams in line with their groups.
    async fn directory_user(&self, dir: &Directory, user: &str, password: &str, ip: Option<IpAddr>, rec: Option<UserRecord>) -> Result<Principal, ApiError> {
        let found = match dir.login(user, password).await {
            Ok(Verdict::Valid(found)) => found,
            Ok(Verdict::Refused(why)) => return Err(self.fail(user, ip, why)),
            Err(e) => {
                tracing::warn!(account = user, error = %e, "directory login not checked");
                metrics::counter!("berth_ldap_unavailable_total").increment(1);
                return Err(ApiError::new(ErrorCode::Unavailable, "the user directory (LDAP) is unavailable, so this login cannot be checked; retry later"));
            }
        };
        self.throttle.succeeded(user, ip);
        let superuser = match rec {
            Some(rec) => rec.superuser,
            None => {
                let rec = UserRecord { name: user.to_string(), password_hash: FEDERATED_LDAP.to_string(), superuser: false, created_at_ms: now_ms() };
                match self.meta.write(Actor::Client(ClientAccount::Operator), MetaCommand::Identity(IdentityCommand::CreateUser(rec))).await {
                    Ok(MetaResponse::Done) => tracing::info!(account = user, dn = %found.dn, "created federated user on first directory login"),
                    // Another node created it a moment ago, or the name is an organization's.
                    Ok(other) => {
                        let now: Option<UserRecord> = self.lookup(&keys::user(user), |_: &UserRecord| true).await?;
                        if !now.as_ref().is_some_and(is_federated) {
                            tracing::warn!(account = user, outcome = ?other, "directory user not created");
                            return Err(self.fail(user, ip, "name taken by a local account or organization"));
                        }
                    }
                    Err(e) => return Err(ApiError::new(ErrorCode::Unavailable, format!("cannot record the directory user: {e}"))),
                }
                false
            }
        };
        sync_teams(&self.meta, dir, user, &found.groups).await;
        self.audit.login_via(user, ip, "ldap");
        Ok(Principal::User { name: user.to_string(), superuser })
    }

    async fn robot(&self, name: &str, secret: &str, ip: Option<IpAddr>) -> Result<Principal, ApiError> {
        self.throttled(name, ip)?;
        let (ns, short) = name.split_once('+').expect("caller checked the '+'");
        let secret_hash = sha256_hex(secret);
        let rec: Option<RobotRecord> =
            self.lookup(&keys::robot(ns, short), |r: &RobotRecord| same_secret(secret_hash.as_bytes(), r.secret_sha256.as_bytes())).await?;
        match rec {
            Some(r) if same_secret(secret_hash.as_bytes(), r.secret_sha256.as_bytes()) => {
                self.throttle.succeeded(name, ip);
                Ok(Principal::Robot { name: r.full_name() })
            }
            Some(_) => Err(self.fail(name, ip, "wrong robot token")),
            None => Err(self.fail(name, ip, "no such robot")),
        }
    }

    async fn app_token(&self, token: &str, user: Option<&str>, ip: Option<IpAddr>) -> Result<Principal, ApiError> {
        let (id, secret) = token.strip_prefix(APP_TOKEN_PREFIX).and_then(|t| t.split_once('_')).unwrap_or(("", ""));
        let account = format!("$app:{id}");
        self.throttled(&account, ip)?;
        let secret_hash = sha256_hex(secret);
        let matches = |r: &AppTokenRecord| same_secret(secret_hash.as_bytes(), r.secret_sha256.as_bytes());
        let rec: Option<AppTokenRecord> = if id.is_empty() { None } else { self.lookup(&keys::app_token(id), matches).await? };
        let Some(rec) = rec.filter(matches) else {
            return Err(self.fail(&account, ip, "unknown application token"));
        };
        if rec.expires_at_ms.is_some_and(|e| e <= now_ms()) {
            return Err(self.fail(&account, ip, "expired application token"));
        }
        if user.is_some_and(|u| u != "$app" && u != rec.owner) {
            return Err(self.fail(&account, ip, "application token of another user"));
        }
        app_principal_in(&self.meta.state(), rec).map_err(state_err)?.ok_or_else(denied)
    }

    /// [`principal_in`] on this node's state; when the account stands for
    /// nobody here, once more after catching up with the leader, so an
    /// account made through another node a moment ago is known.
    async fn fresh_principal(&self, account: &ClientAccount) -> Result<Option<Principal>, ApiError> {
        let local = principal_in(&self.meta.state(), account, now_ms()).map_err(state_err)?;
        if local.is_some() {
            return Ok(local);
        }
        if let Err(e) = self.meta.read_barrier().await {
            tracing::debug!(error = %e, "read barrier failed; checking the account against local state");
            return Ok(None);
        }
        principal_in(&self.meta.state(), account, now_ms()).map_err(state_err)
    }

    /// The cluster's token keys: the ring after a rotation, else the key `init` made.
    fn ring(&self) -> Result<Vec<TokenKey>, ApiError> {
        let state = self.meta.state();
        if let Some(ring) = state.get::<Vec<TokenKey>>(keys::TOKEN_KEYS).map_err(state_err)? {
            return Ok(ring);
        }
        let c = self.cluster().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the cluster is not initialized"))?;
        Ok(vec![TokenKey { kid: INITIAL_KID.into(), pkcs8_pem: c.token_signing_key_pem, created_at_ms: c.created_at_ms, retired_at_ms: None }])
    }

    fn key(&self, k: &TokenKey) -> Result<Arc<SigningKey>, ApiError> {
        if let Some(key) = self.keys.lock().expect("key cache lock").get(&k.kid) {
            return Ok(key.clone());
        }
        let key = Arc::new(SigningKey::from_pem(&k.kid, &k.pkcs8_pem).map_err(|e| ApiError::new(ErrorCode::Internal, format!("token key {}: {e}", k.kid)))?);
        self.keys.lock().expect("key cache lock").insert(k.kid.clone(), key.clone());
        Ok(key)
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>, ApiError> {
        let ring = self.ring()?;
        let active = ring.iter().rev().find(|k| k.retired_at_ms.is_none()).ok_or_else(|| ApiError::new(ErrorCode::Internal, "no active token key"))?;
        self.key(active)
    }

    /// Signs a registry token.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        Ok(self.signing_key()?.sign(claims))
    }

    /// The credential generation a registry token for `p` carries (see
    /// [`berth_raft::identity`]): users' and robots' only, application
    /// tokens are revoked by deleting them.
    pub fn credential_generation(&self, p: &Principal) -> Result<u64, ApiError> {
        match p {
            Principal::User { name, .. } | Principal::Robot { name } => self.generation_of(name),
            _ => Ok(0),
        }
    }

    fn generation_of(&self, account: &str) -> Result<u64, ApiError> {
        Ok(self.meta.state().get::<u64>(&keys::credential_generation(account)).map_err(state_err)?.unwrap_or(0))
    }

    /// Refuses a token issued before the account's password or secret
    /// last changed.
    async fn check_generation(&self, account: &str, issued_under: u64) -> Result<(), ApiError> {
        let mut current = self.generation_of(account)?;
        if issued_under > current {
            // Issued by a node that has applied a change this one has not yet.
            if let Err(e) = self.meta.read_barrier().await {
                tracing::debug!(error = %e, "read barrier failed; checking the token against local state");
            }
            current = self.generation_of(account)?;
        }
        if issued_under != current {
            return Err(ApiError::new(ErrorCode::Unauthorized, "the token's account has changed its credentials since; log in again"));
        }
        Ok(())
    }

    /// Refuses a registry token issued before this node lost touch with
    /// the cluster, once it has been out of touch for two election
    /// timeouts. Such a node cannot learn that the token's account was
    /// deleted or its secret changed meanwhile; without this a deleted
    /// robot's tokens would work there for their whole lifetime. The
    /// bound: a token is trusted on a cut-off node for at most two election
    /// timeouts (4.8 s with the defaults) past the cut, and a token issued
    /// after the cut (by a node that had fresher state) still works.
    /// Credentials themselves (basic auth, logins) are checked against the
    /// node's state as of its last contact, so a cut-off region keeps
    /// serving pulls.
    fn check_fresh_enough(&self, claims: &jwt::Claims) -> Result<(), ApiError> {
        let Some(since) = self.meta.out_of_touch_since() else { return Ok(()) };
        let since_s = since.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if claims.iat < since_s {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!(
                    "this node has been cut off from the cluster for {} s and cannot check a token issued before that; log in again",
                    now_ms() / 1000 - since_s
                ),
            ));
        }
        Ok(())
    }

    /// A console session cookie: a token for the session audience,
    /// naming a user whose credential generation has not moved since
    /// (a new password ends every session at once, on every node). It
    /// stands for the user on the admin API, without grants.
    async fn session(&self, token: &str) -> Result<Principal, ApiError> {
        let a = self.registry_token(token, &jwt::session_audience(&self.service())).await?;
        match a.principal {
            p @ Principal::User { .. } => Ok(p),
            _ => Err(ApiError::new(ErrorCode::Unauthorized, "a console session names a user")),
        }
    }

    /// The password check of a login, for the console's sign-in: the
    /// same throttling and usage-log rows as basic auth.
    pub async fn check_password(&self, user: &str, password: &str, ip: Option<IpAddr>) -> Result<Principal, ApiError> {
        let p = self.user(user, password, ip).await?;
        self.audit.login(true, user, ip, "console sign-in");
        Ok(p)
    }

    /// A grant another node signed for one upload request it forwarded
    /// here: checked like a registry token, for an audience no registry
    /// token has ([`jwt::upload_grant_audience`]).
    pub async fn upload_grant(&self, token: &str) -> Result<Authenticated, ApiError> {
        self.registry_token(token, &jwt::upload_grant_audience(&self.service())).await
    }

    async fn registry_token(&self, token: &str, audience: &str) -> Result<Authenticated, ApiError> {
        let bad = |e: jwt::JwtError| ApiError::new(ErrorCode::Unauthorized, e.to_string());
        let header = jwt::peek_header(token).map_err(bad)?;
        let now = now_ms();
        // A retired key still verifies the tokens it signed before it retired.
        let find = |ring: Vec<TokenKey>| {
            ring.into_iter()
                .filter(|k| k.retired_at_ms.is_none_or(|r| r + (TOKEN_TTL_SECS + jwt::LEEWAY_SECS) * 1000 > now))
                .find(|k| Some(&k.kid) == header.kid.as_ref())
        };
        let k = match find(self.ring()?) {
            Some(k) => k,
            // Perhaps a key rotated in through another node a moment ago.
            None => {
                if let Err(e) = self.meta.read_barrier().await {
                    tracing::debug!(error = %e, "read barrier failed; verifying against local keys");
                }
                find(self.ring()?).ok_or(bad(jwt::JwtError::UnknownKey))?
            }
        };
        let key = self.key(&k)?;
        let claims = self.verified_tokens.verify(token, key.public_key(), audience, now / 1000).map_err(bad)?;
        self.check_fresh_enough(&claims)?;
        let gone = || ApiError::new(ErrorCode::Unauthorized, "the token's account no longer exists");
        let account = match claims.berth_kind.as_str() {
            "anonymous" => ClientAccount::Anonymous,
            "user" => ClientAccount::User(claims.sub.clone()),
            "robot" => ClientAccount::Robot(claims.sub.clone()),
            "app_token" => ClientAccount::AppToken(claims.berth_app.clone().ok_or_else(gone)?),
            // Only in upload grants, which nodes sign for each other: the
            // token endpoint never issues one for the operator.
            "operator" if audience != self.service() => ClientAccount::Operator,
            // Operator tokens are not exchanged for registry tokens.
            _ => return Err(ApiError::new(ErrorCode::Unauthorized, "token names an unknown kind of account")),
        };
        let principal = self.fresh_principal(&account).await?.ok_or_else(gone)?;
        if let Principal::User { name, .. } | Principal::Robot { name } = &principal {
            self.check_generation(name, claims.berth_gen).await?;
        }
        Ok(Authenticated { principal, grants: Some(claims.access) })
    }

    /// Requires a cluster administrator, for the cluster and placement API.
    /// A registry token is refused even for a superuser: it is a short
    /// grant of `/v2` actions that a client may hand to other software,
    /// not a login (one chained into a join token made a rogue node).
    pub async fn require_admin(&self, caller: &Caller) -> Result<Principal, ApiError> {
        let a = self.authenticate(caller).await?;
        if a.grants.is_some() {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "registry tokens are for /v2 only; the admin API takes a login, an application token or the operator token",
            ));
        }
        match a.principal {
            Principal::Anonymous => Err(ApiError::new(ErrorCode::Unauthorized, "authentication required")),
            p if p.is_superuser() => Ok(p),
            p => Err(ApiError::new(ErrorCode::Denied, format!("{} is not a cluster administrator", p.performer()))),
        }
    }
}

/// Makes `user` a member of exactly the mapped teams whose LDAP group they
/// are in (`groups`), through Raft with the identity commands; teams that
/// do not exist are skipped with a warning. Failures are logged, not
/// returned: a login does not fail because a team could not be changed.
pub async fn sync_teams(meta: &MetaNodeHandle, dir: &Directory, user: &str, groups: &std::collections::BTreeSet<String>) {
    for (group, target) in &dir.config().teams {
        let Some((org, team)) = target.split_once('/') else { continue };
        let want = groups.contains(group);
        let rec: Option<TeamRecord> = match meta.state().get(&keys::team(org, team)) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, org, team, "team sync: cannot read team");
                continue;
            }
        };
        let Some(rec) = rec else {
            tracing::warn!(org, team, group = %group, "team sync: the mapped team does not exist");
            continue;
        };
        if rec.members.contains(user) == want {
            continue;
        }
        let cmd = IdentityCommand::SetTeamMember { org: org.to_string(), team: team.to_string(), member: user.to_string(), present: want };
        match meta.write(Actor::Client(ClientAccount::Operator), MetaCommand::Identity(cmd)).await {
            Ok(MetaResponse::Done) => tracing::info!(account = user, org, team, present = want, "team sync from directory group"),
            other => tracing::warn!(account = user, org, team, outcome = ?other, "team sync failed"),
        }
    }
}

/// The leader's periodic pass: every federated user's teams follow their
/// groups as the directory has them now (a user gone from the directory
/// leaves every mapped team).
pub async fn sync_all_teams(meta: MetaNodeHandle, dir: Arc<Directory>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if dir.config().teams.is_empty() {
        return;
    }
    let every = Duration::from_secs(dir.config().sync_interval_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if !meta.is_leader() {
            continue;
        }
        let users: Vec<UserRecord> = match meta.state().scan(keys::USER_PREFIX) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "team sync: cannot list users");
                continue;
            }
        };
        for u in users.iter().filter(|u| is_federated(u)) {
            match dir.lookup(&u.name).await {
                Ok(found) => sync_teams(&meta, &dir, &u.name, &found.map(|f| f.groups).unwrap_or_default()).await,
                Err(e) => {
                    // Nothing is removed while the directory cannot be read.
                    tracing::warn!(error = %e, "team sync pass skipped");
                    break;
                }
            }
        }
    }
}

/// A turn at checking a password: as many at once as there are cores,
/// since argon2 is bound by the CPU and each check holds 19 MiB while it
/// runs (64 clients signing in at once took a node from 190 to 447 MiB).
async fn password_turn() -> tokio::sync::SemaphorePermit<'static> {
    static TURNS: std::sync::LazyLock<tokio::sync::Semaphore> =
        std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));
    TURNS.acquire().await.expect("the password semaphore is never closed")
}

/// argon2 verification, off the async threads (it is slow on purpose).
async fn verify_password(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&hash).map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// [`hash_password`] in a turn (see [`password_turn`]), off the async
/// threads: a request that sets a password does not stall the requests
/// sharing its worker, nor take 19 MiB beside every other check.
pub async fn hash_password_in_turn(password: &str) -> anyhow::Result<String> {
    let _turn = password_turn().await;
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_password(&password)).await?
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hash password: {e}"))?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_backs_off_after_free_attempts_and_success_clears_it() {
        let t = Throttle::default();
        let ip = Some("10.9.8.7".parse().unwrap());
        for _ in 0..Throttle::FREE {
            assert_eq!(t.wait("eve", ip), None);
            t.failed("eve", ip);
        }
        let w = t.wait("eve", ip).expect("slowed down after the free attempts");
        assert!(w <= Duration::from_secs(1) && w > Duration::from_millis(500), "{w:?}");
        t.failed("eve", ip);
        assert!(t.wait("eve", ip).unwrap() > Duration::from_millis(1500));
        // Another account from the same source is not yet slowed down.
        assert_eq!(t.wait("bob", ip), None);
        t.succeeded("eve", ip);
        assert_eq!(t.wait("eve", ip), None);
    }

    #[test]
    fn failures_from_one_source_do_not_slow_down_another() {
        let t = Throttle::default();
        let (a, b) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        for _ in 0..Throttle::FREE + 3 {
            t.failed("robot+ci", a);
        }
        assert!(t.wait("robot+ci", a).is_some(), "the guessing source is slowed down");
        assert_eq!(t.wait("robot+ci", b), None, "the account from elsewhere is not");
        // A success from elsewhere does not lift the guesser's wait.
        t.succeeded("robot+ci", b);
        assert!(t.wait("robot+ci", a).is_some());
        // Many accounts from one source: the source itself is slowed down.
        for i in 0..Throttle::FREE_PER_SOURCE {
            t.failed(&format!("user{i}"), b);
        }
        assert!(t.wait("someone-else", b).is_some(), "a source spraying accounts");
        assert_eq!(t.wait("someone-else", a), None);
    }
}
