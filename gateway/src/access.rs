//! Who is calling: credentials, principals, scopes and challenges.
//!
//! Every request becomes a [`Caller`] (its credentials and address); the
//! node turns that into a [`Principal`]. Everything else in the crate
//! builds on these types, so this module imports none of its siblings but
//! `error` (the token endpoint that uses them is in `token`). On `/v2`, a
//! refusal of an
//! anonymous caller is a 401 whose `WWW-Authenticate: Bearer` challenge
//! names the token endpoint (`/v2/auth` on the node that answered, at its
//! advertised URL: see [`realm`]), the
//! cluster as the service, and the scope the request needed, so docker,
//! podman, skopeo and containerd log in by themselves.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// What a request carried in `Authorization`.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// A console session cookie ([`SESSION_COOKIE`]), taken only on the
    /// admin API and only when no `Authorization` header was sent; for an
    /// unsafe method the request also carried the session's CSRF token.
    Session(String),
}

/// The console's session cookie (HttpOnly, SameSite=Lax, Secure under
/// HTTPS): a signed session token the node issued at sign-in.
pub const SESSION_COOKIE: &str = "berth_session";
/// The header a cookie-authenticated unsafe request must carry, holding
/// [`csrf_token`] of its session.
pub const CSRF_HEADER: &str = "x-berth-csrf";

/// The CSRF token of a session: derived from the session token, which a
/// page on another site can neither read (HttpOnly, and no CORS) nor
/// guess, so it can never send the matching header. Being derived, it
/// needs no state on any node and every node checks it alike.
pub fn csrf_token(session: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("berth-csrf\0{session}").as_bytes()))
}

/// The value of cookie `name` in `headers`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The admin API's credentials: the `Authorization` header, or else the
/// console's session cookie. A cookie comes with every request the
/// browser sends, whichever site made it send it, so a request that
/// changes something must prove it came from the console: it carries
/// the session's CSRF token in [`CSRF_HEADER`], or it is refused and
/// nothing happens.
fn admin_credentials(parts: &Parts) -> Result<Credentials, ApiError> {
    let creds = parse_credentials(&parts.headers)?;
    if !matches!(creds, Credentials::None) {
        return Ok(creds);
    }
    let Some(session) = cookie(&parts.headers, SESSION_COOKIE).filter(|s| !s.is_empty()) else {
        return Ok(Credentials::None);
    };
    let safe = matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS);
    if !safe {
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        let want = csrf_token(session);
        if sent.len() != want.len() || !sent.bytes().zip(want.bytes()).fold(true, |ok, (a, b)| ok & (a == b)) {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "missing or wrong CSRF token: a request authenticated by the session cookie must come from the console",
            ));
        }
    }
    Ok(Credentials::Session(session.to_string()))
}

/// A request's credentials and where it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub creds: Credentials,
    pub ip: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// The admin API's caller: `Authorization`, or the console's session
    /// cookie with its CSRF check. `/v2` and the token endpoint use
    /// [`caller_of`], which never reads cookies.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        let creds = admin_credentials(parts)?;
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        Ok(Caller { creds, ip })
    }
}

pub fn caller_of(headers: &HeaderMap, ext: &axum::http::Extensions) -> Result<Caller, ApiError> {
    let creds = parse_credentials(headers)?;
    let ip = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    Ok(Caller { creds, ip })
}

/// Credentials as they arrived; the backend decides what they are worth.
pub fn parse_credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let value = value.to_str().map_err(|_| ApiError::new(ErrorCode::Unauthorized, "authorization header is not text"))?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Ok(Credentials::Bearer(token.trim().to_string()));
    }
    if let Some(b64) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "basic credentials are not base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| ApiError::new(ErrorCode::Unauthorized, "basic credentials are not UTF-8"))?;
        let (user, password) = raw.split_once(':').ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "basic credentials lack a ':'"))?;
        return Ok(Credentials::Basic { user: user.to_string(), password: password.to_string() });
    }
    Err(ApiError::new(ErrorCode::Unauthorized, "unsupported authorization scheme"))
}

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// The holder of a node's operator token (root on the node's host).
    Operator,
    User {
        name: String,
        superuser: bool,
    },
    /// A robot account, `namespace+short`.
    Robot {
        name: String,
    },
    /// An application token acting for its owner within its scopes
    /// (`repo:read`, …).
    App {
        id: String,
        owner: String,
        owner_superuser: bool,
        scopes: Vec<String>,
    },
}

impl Principal {
    /// The name audit records and tokens carry.
    pub fn performer(&self) -> String {
        match self {
            Principal::Anonymous => "(anonymous)".into(),
            Principal::Operator => "(operator)".into(),
            Principal::User { name, .. } | Principal::Robot { name } => name.clone(),
            Principal::App { owner, .. } => owner.clone(),
        }
    }

    /// `user`, `robot`, `app_token`, `operator` or `anonymous`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Operator => "operator",
            Principal::User { .. } => "user",
            Principal::Robot { .. } => "robot",
            Principal::App { .. } => "app_token",
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            Principal::App { scopes, .. } => scopes.iter().any(|s| s == scope),
            _ => true,
        }
    }

    /// Cluster-wide administrator: the operator, a superuser, or a
    /// superuser's token with `super:user`.
    pub fn is_superuser(&self) -> bool {
        match self {
            Principal::Operator | Principal::User { superuser: true, .. } => true,
            Principal::App { owner_superuser: true, scopes, .. } => scopes.iter().any(|s| s == "super:user"),
            _ => false,
        }
    }
}

/// What an authorized request may do, as far as the gateway needs to know.
#[derive(Debug, Clone)]
pub struct Access {
    pub principal: Principal,
    pub ip: Option<IpAddr>,
}

/// One `scope` of a token request: `repository:<name>:<actions>` or
/// `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceScope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceScope {
    /// Parses one scope. The name may hold `host:port/…`, so the type ends
    /// at the first colon and the actions start after the last.
    pub fn parse(s: &str) -> Option<ResourceScope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        Some(ResourceScope { kind: kind.to_string(), name: name.to_string(), actions })
    }

    /// Every scope in `values` (each may hold several, space-separated).
    /// Unparseable ones are skipped: they are granted nothing.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<ResourceScope> {
        values.into_iter().flat_map(|v| v.split(' ')).filter_map(ResourceScope::parse).collect()
    }
}

impl std::fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What the token endpoint answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
}

/// Builds the `WWW-Authenticate` value for a refused `/v2` request.
pub fn bearer_challenge(realm: &str, service: &str, scope: Option<&str>) -> String {
    match scope {
        Some(s) => format!("Bearer realm=\"{realm}\",service=\"{service}\",scope=\"{s}\""),
        None => format!("Bearer realm=\"{realm}\",service=\"{service}\""),
    }
}

/// The token endpoint's URL for a challenge: on the node's public URL
/// when one is configured; else on the host the client asked for, if the
/// `Host` header is a plain `host[:port]`; else on this listener's own
/// address. Never the `Host` header as it came: the client chooses it, and
/// it lands inside a quoted parameter (`Host: evil",service="x` rewrote the
/// challenge).
pub fn realm(public_url: Option<&str>, headers: &HeaderMap, tls: bool, own_addr: Option<SocketAddr>) -> String {
    if let Some(url) = public_url {
        return format!("{}/v2/auth", url.trim_end_matches('/'));
    }
    let asked = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| plain_host(h)).map(str::to_string);
    let host = asked.or_else(|| own_addr.map(|a| a.to_string())).unwrap_or_else(|| "localhost".into());
    format!("{}://{host}/v2/auth", if tls { "https" } else { "http" })
}

/// `name[:port]` (letters, digits, `.`, `-`) or `[ipv6][:port]`, nothing else.
fn plain_host(h: &str) -> bool {
    let (host, port) = if h.starts_with('[') {
        match h.find(']') {
            Some(i) => (&h[..=i], &h[i + 1..]),
            None => return false,
        }
    } else {
        match h.find(':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, ""),
        }
    };
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(ip6) => ip6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = axum::http::Request::builder().method(method).uri("/api/v1/organization/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_session_cookie_needs_its_csrf_token_to_change_anything() {
        let cookie = format!("{SESSION_COOKIE}=tok.en.sig");
        let csrf = csrf_token("tok.en.sig");
        // Reading: the cookie is enough.
        assert!(matches!(admin_credentials(&parts("GET", &[("cookie", &cookie)])), Ok(Credentials::Session(t)) if t == "tok.en.sig"));
        // Changing: without, or with a wrong or another session's token, refused.
        for bad in [None, Some("0".repeat(64)), Some(csrf_token("other")), Some(csrf[..63].to_string())] {
            let mut h = vec![("cookie", cookie.as_str())];
            if let Some(b) = &bad {
                h.push((CSRF_HEADER, b.as_str()));
            }
            let e = admin_credentials(&parts("POST", &h)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Denied, "{bad:?}");
        }
        assert!(matches!(admin_credentials(&parts("DELETE", &[("cookie", &cookie), (CSRF_HEADER, &csrf)])), Ok(Credentials::Session(_))));
        // Among other cookies, and an Authorization header wins over it.
        let mixed = format!("theme=dark; {SESSION_COOKIE}=tok.en.sig; x=1");
        assert!(matches!(admin_credentials(&parts("GET", &[("cookie", &mixed)])), Ok(Credentials::Session(_))));
        assert!(matches!(admin_credentials(&parts("POST", &[("cookie", &cookie), ("authorization", "Bearer abc")])), Ok(Credentials::Bearer(_))));
        // No cookie: anonymous, as before; /v2's parser never reads cookies.
        assert!(matches!(admin_credentials(&parts("POST", &[])), Ok(Credentials::None)));
        assert!(matches!(parse_credentials(&parts("GET", &[("cookie", &cookie)]).headers), Ok(Credentials::None)));
    }

    #[test]
    fn scopes_with_ports_and_lists() {
        let s = ResourceScope::parse("repository:localhost:5000/team/app:pull,push").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "localhost:5000/team/app");
        assert_eq!(s.actions, vec!["pull", "push"]);
        let c = ResourceScope::parse("registry:catalog:*").unwrap();
        assert_eq!((c.kind.as_str(), c.name.as_str(), c.actions.clone()), ("registry", "catalog", vec!["*".to_string()]));
        assert_eq!(ResourceScope::parse_all(["repository:a/b:pull repository:c:push", "junk"]).len(), 2);
        assert!(ResourceScope::parse("repository").is_none());
        assert!(ResourceScope::parse("repository::pull").is_none());
    }

    #[test]
    fn realm_never_copies_a_hostile_host() {
        let host = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, axum::http::HeaderValue::from_str(v).unwrap());
            m
        };
        let own: Option<SocketAddr> = Some("10.0.0.5:5000".parse().unwrap());
        assert_eq!(realm(Some("https://eu.registry.example/"), &host("evil.example"), true, own), "https://eu.registry.example/v2/auth");
        assert_eq!(realm(None, &host("registry.example:5000"), false, own), "http://registry.example:5000/v2/auth");
        assert_eq!(realm(None, &host("[::1]:5000"), true, own), "https://[::1]:5000/v2/auth");
        for evil in ["evil.example\",service=\"x", "a b", "host:port", "user@host", "[zz]:1", "h:123456", "h:", ""] {
            assert_eq!(realm(None, &host(evil), false, own), "http://10.0.0.5:5000/v2/auth", "{evil:?}");
        }
        assert_eq!(realm(None, &HeaderMap::new(), false, own), "http://10.0.0.5:5000/v2/auth");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn scope() -> impl Strategy<Value = ResourceScope> {
            (
                "[a-z]{1,12}",
                // Names may hold `host:port/…`: colons and slashes.
                "[a-z0-9][a-z0-9:/._-]{0,40}",
                proptest::collection::vec(prop_oneof![Just("pull".to_string()), Just("push".to_string()), Just("*".to_string()), "[a-z_]{1,8}"], 0..4),
            )
                .prop_map(|(kind, name, actions)| ResourceScope { kind, name, actions })
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn any_scope_text_parses_or_is_skipped_without_panicking(raw in ".{0,200}", near in "[a-z:/,* ]{0,60}") {
                for v in [&raw, &near] {
                    if let Some(s) = ResourceScope::parse(v) {
                        // What it accepts names a type and a resource.
                        prop_assert!(!s.kind.is_empty() && !s.name.is_empty() && !s.kind.contains(':'));
                        prop_assert!(s.actions.iter().all(|a| !a.is_empty() && !a.contains(',') && !a.contains(':')));
                    }
                    prop_assert!(ResourceScope::parse_all([v.as_str()]).len() <= v.split(' ').count());
                }
            }

            /// A scope printed (as a client writes it) and parsed again is
            /// the same scope.
            #[test]
            fn scopes_round_trip(s in scope()) {
                prop_assert_eq!(ResourceScope::parse(&s.to_string()), Some(s.clone()));
                let two = format!("{s} {s}");
                prop_assert_eq!(ResourceScope::parse_all([two.as_str()]), vec![s.clone(), s]);
            }
        }
    }
}
