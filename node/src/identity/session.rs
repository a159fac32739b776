//! Console sessions: a person signs in once with a password and the
//! browser then holds a session cookie instead of the password.
//!
//! A session is a token signed with the cluster's token key (the same
//! ring as registry tokens, ES256), for an audience of its own
//! ([`jwt::session_audience`]) and carrying the user's credential
//! generation. So it is stateless: every node verifies a cookie any node
//! issued, with nothing written to Raft at sign-in. It ends when it
//! expires ([`SESSION_TTL_SECS`]), when the browser drops the cookie at
//! sign-out, when the user's password changes or the user is deleted
//! (checked on every request, as for registry tokens), or when the token
//! key that signed it has been retired for longer than a registry
//! token's lifetime. The gateway puts it in an HttpOnly cookie and checks
//! the CSRF token derived from it on every unsafe request; the OAuth
//! consent page can sign people in through [`sign_in`] the same way.

use std::net::IpAddr;

use berth_gateway::identity::{SessionIssued, SessionRequest};
use berth_gateway::{ApiError, ErrorCode, Principal};
use rand::Rng;

use crate::identity::auth::Authenticator;
use crate::identity::jwt::{self, Claims};
use crate::util::now_ms;

/// How long a console session lasts from sign-in: a working day.
pub const SESSION_TTL_SECS: u64 = 8 * 3600;

/// Checks the password (throttled and logged as any login) and signs a
/// session for the user.
pub async fn sign_in(auth: &Authenticator, ip: Option<IpAddr>, req: SessionRequest) -> Result<SessionIssued, ApiError> {
    if req.username.is_empty() || req.password.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "enter a user name and a password"));
    }
    if req.username.contains('+') || req.username.starts_with('$') {
        return Err(ApiError::new(ErrorCode::Unauthorized, "robot accounts and tokens cannot sign in to the console"));
    }
    let principal = auth.check_password(&req.username, &req.password, ip).await?;
    let Principal::User { name, superuser } = &principal else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid credentials"));
    };
    let now = now_ms() / 1000;
    let jti: String = {
        let mut rng = rand::rng();
        (0..16).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
    };
    let claims = Claims {
        iss: jwt::ISSUER.into(),
        sub: name.clone(),
        aud: jwt::session_audience(&auth.service()),
        exp: now + SESSION_TTL_SECS,
        nbf: now,
        iat: now,
        jti,
        access: vec![],
        berth_kind: "user".into(),
        berth_app: None,
        berth_gen: auth.credential_generation(&principal)?,
    };
    Ok(SessionIssued { token: auth.sign(&claims)?, username: name.clone(), super_user: *superuser, expires_in: SESSION_TTL_SECS })
}
