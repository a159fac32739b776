//! Who is asking: credentials checked against the users in the metadata.
//!
//! argon2 is slow on purpose, so a verified (user, password) pair is
//! remembered for a few minutes, keyed by a hash of the password and tied
//! to the stored hash it was checked against: a changed password or a
//! deleted user invalidates it at the next request. Secrets are never
//! logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_gateway::{ApiError, Credentials, ErrorCode};
use berth_raft::command::UserRecord;
use berth_raft::state::keys;
use berth_raft::{MetaNodeHandle, StateRead};
use sha2::Digest as _;

const CACHE_TTL: Duration = Duration::from_secs(300);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The holder of this node's operator token (root on the node's host).
    Operator,
    User {
        name: String,
        superuser: bool,
    },
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Operator | Principal::User { superuser: true, .. })
    }
}

pub struct Authenticator {
    meta: MetaNodeHandle,
    operator_token: String,
    /// (user, sha256(password)) → (stored hash it matched, when).
    verified: Mutex<HashMap<(String, [u8; 32]), (String, Instant)>>,
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    pub fn new(meta: MetaNodeHandle, operator_token: String) -> Authenticator {
        Authenticator { meta, operator_token, verified: Mutex::new(HashMap::new()) }
    }

    /// Who `creds` are; `None` for anonymous. Wrong credentials are an error.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Option<Principal>, ApiError> {
        let denied = || ApiError::new(ErrorCode::Unauthorized, "invalid credentials");
        match creds {
            Credentials::None => Ok(None),
            Credentials::Bearer(t) if same_secret(t.as_bytes(), self.operator_token.as_bytes()) => Ok(Some(Principal::Operator)),
            Credentials::Bearer(_) => Err(denied()),
            Credentials::Basic { user, password } => {
                let rec: Option<UserRecord> =
                    self.meta.state().get(&keys::user(user)).map_err(|e| ApiError::new(ErrorCode::Internal, format!("user lookup: {e}")))?;
                let Some(rec) = rec else { return Err(denied()) };
                let key = (user.clone(), <[u8; 32]>::from(sha2::Sha256::digest(password.as_bytes())));
                let cached =
                    self.verified.lock().expect("auth cache lock").get(&key).is_some_and(|(hash, at)| *hash == rec.password_hash && at.elapsed() < CACHE_TTL);
                if !cached {
                    let password = password.clone();
                    let hash = rec.password_hash.clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        use argon2::password_hash::{PasswordHash, PasswordVerifier};
                        PasswordHash::new(&hash).map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false);
                    if !ok {
                        tracing::info!(user = %user, "failed login");
                        return Err(denied());
                    }
                    let mut cache = self.verified.lock().expect("auth cache lock");
                    cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                    cache.insert(key, (rec.password_hash.clone(), Instant::now()));
                }
                Ok(Some(Principal::User { name: rec.name, superuser: rec.superuser }))
            }
        }
    }

    /// Requires a cluster administrator.
    pub async fn require_admin(&self, creds: &Credentials) -> Result<Principal, ApiError> {
        match self.authenticate(creds).await? {
            None => Err(ApiError::new(ErrorCode::Unauthorized, "authentication required")),
            Some(p) if p.is_admin() => Ok(p),
            Some(Principal::User { name, .. }) => Err(ApiError::new(ErrorCode::Denied, format!("user {name} is not a cluster administrator"))),
            Some(Principal::Operator) => unreachable!("the operator is an administrator"),
        }
    }
}
