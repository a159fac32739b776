//! The web console: a page at `/`, its script and style sheet, and the
//! session calls that sign a person in and out.
//!
//! The frontend is plain ES modules and CSS in `gateway/console/`,
//! embedded in the binary with `include_bytes!`: no bundler, nothing
//! fetched at build time or at run time. The page talks only to the
//! public admin API (the same calls the CLI makes), authenticated by the
//! session cookie. Assets are named by their digest
//! (`/console/app.<sha256 prefix>.js`), cached for a year as immutable,
//! and sent gzip-compressed to clients that take it; the page itself is
//! never cached, so a new binary's assets are picked up at once.
//!
//! Every response carries a Content-Security-Policy that allows scripts
//! and styles from this origin only (no inline script): a user-provided
//! string that slipped into the page as markup still could not run.
//! The script builds the page with DOM calls and `textContent`, never
//! with markup from data.
//!
//! Sessions: `POST /api/v1/session` checks the password through the
//! node's one password check and sets [`SESSION_COOKIE`] (HttpOnly,
//! SameSite=Lax, Secure under HTTPS, `Path=/`); the answer carries the
//! session's CSRF token ([`csrf_token`]) for the page to send back in
//! [`CSRF_HEADER`]. `GET` tells the page who is signed in (and the CSRF
//! token again, after a reload); `DELETE` signs out. The console never
//! sees or stores a password beyond the sign-in request.

use std::io::Write;
use std::sync::OnceLock;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sha2::Digest;

use crate::access::{csrf_token, Caller, Credentials, SESSION_COOKIE};
use crate::error::{ApiError, ErrorCode};
use crate::identity::{Identity, SessionRequest};

type Shared = std::sync::Arc<dyn Identity>;

/// No script, style, frame or connection but this origin's.
const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Asset {
    /// The name the page links, with the digest: `app.1a2b3c4d5e6f7a8b.js`.
    name: String,
    content_type: &'static str,
    raw: &'static [u8],
    gzip: Vec<u8>,
}

struct Assets {
    index: String,
    index_gzip: Vec<u8>,
    files: Vec<Asset>,
}

/// The sources, each after every module it imports.
const SOURCES: &[(&str, &str, &[u8])] = &[
    ("ui", "js", include_bytes!("../console/ui.js")),
    ("pages", "js", include_bytes!("../console/pages.js")),
    ("cluster", "js", include_bytes!("../console/cluster.js")),
    ("app", "js", include_bytes!("../console/app.js")),
    ("app", "css", include_bytes!("../console/app.css")),
];

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).expect("writing to memory does not fail");
    enc.finish().expect("writing to memory does not fail")
}

/// The assets, named and compressed once, on first use. The modules import
/// each other by their plain names (`./ui.js`); those imports are rewritten
/// to the digest names here, so a module's cached copy never outlives it.
fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let named = |stem: &str, ext: &str, bytes: &[u8]| format!("{stem}.{}.{ext}", &hex::encode(sha2::Sha256::digest(bytes))[..16]);
        // In order, so a module's name covers the names it imports.
        let mut renames: Vec<(String, String)> = Vec::new();
        let mut files = Vec::new();
        for (stem, ext, raw) in SOURCES {
            let mut text = String::from_utf8_lossy(raw).into_owned();
            for (plain, hashed) in &renames {
                text = text.replace(&format!("'./{plain}'"), &format!("'./{hashed}'"));
            }
            let body: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
            let name = named(stem, ext, body);
            renames.push((format!("{stem}.{ext}"), name.clone()));
            let content_type = if *ext == "js" { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
            files.push(Asset { name, content_type, raw: body, gzip: gzip(body) });
        }
        let find = |plain: &str| renames.iter().find(|(p, _)| p == plain).map(|(_, h)| h.clone()).expect("every source is named");
        let index = include_str!("../console/index.html").replace("{{app.js}}", &find("app.js")).replace("{{app.css}}", &find("app.css"));
        let index_gzip = gzip(index.as_bytes());
        Assets { index, index_gzip, files }
    })
}

fn takes_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|e| {
        let mut parts = e.trim().split(';');
        parts.next() == Some("gzip") && !parts.any(|q| q.trim() == "q=0")
    })
}

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn send(headers: &HeaderMap, content_type: &'static str, raw: &[u8], gz: &[u8], cache: &'static str) -> Response {
    let (body, encoded) = if takes_gzip(headers) { (gz.to_vec(), true) } else { (raw.to_vec(), false) };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    secure_headers(&mut resp);
    resp
}

async fn handle_index(headers: HeaderMap) -> Response {
    let a = assets();
    send(&headers, "text/html; charset=utf-8", a.index.as_bytes(), &a.index_gzip, "no-cache")
}

async fn handle_asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match assets().files.iter().find(|f| f.name == file) {
        Some(f) => send(&headers, f.content_type, f.raw, &f.gzip, "public, max-age=31536000, immutable"),
        None => ApiError::new(ErrorCode::NotFound, "no such console asset").into_response(),
    }
}

/// What the page learns about its session.
#[derive(Debug, Serialize)]
struct SessionView {
    username: String,
    super_user: bool,
    /// The value to send in `X-Berth-CSRF` with every unsafe call.
    csrf_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
}

fn session_cookie(value: &str, max_age: u64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"))
        .expect("a session cookie is header text")
}

#[derive(Clone)]
struct ConsoleState {
    identity: Shared,
    tls: bool,
}

async fn handle_sign_in(
    State(s): State<ConsoleState>,
    parts: axum::http::request::Parts,
    body: Result<Json<SessionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let issued = s.identity.sign_in(ip, req).await?;
    let view =
        SessionView { username: issued.username, super_user: issued.super_user, csrf_token: csrf_token(&issued.token), expires_in: Some(issued.expires_in) };
    let mut resp = (StatusCode::OK, Json(view)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie(&issued.token, issued.expires_in, s.tls));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn handle_session(State(s): State<ConsoleState>, caller: Caller) -> Result<Response, ApiError> {
    let Credentials::Session(token) = &caller.creds else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "not signed in"));
    };
    let who = s.identity.authenticate(&caller).await?;
    let user = s.identity.current_user(&who).await?;
    let csrf = csrf_token(token);
    let mut resp = Json(SessionView { username: user.username, super_user: user.super_user, csrf_token: csrf, expires_in: None }).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Signs out: the cookie is cleared. Refused without the CSRF token
/// (through [`Caller`], which checks it against the session cookie), so
/// another site cannot sign a person out.
async fn handle_sign_out(State(s): State<ConsoleState>, parts: axum::http::request::Parts) -> Result<Response, ApiError> {
    let mut parts = parts;
    Caller::from_request_parts(&mut parts, &()).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session_cookie("", 0, s.tls));
    Ok(resp)
}

/// The header the console sends with each of its API calls.
pub const CONSOLE_HEADER: &str = "x-berth-console";

/// Drops the `WWW-Authenticate` challenge from 401s answered to the
/// console's own calls: a browser meeting `Basic` on a fetch opens its
/// password dialog (and a headless one waits for it forever), while the
/// console shows its sign-in page instead. Everyone else still gets the
/// challenge docker and curl rely on.
pub async fn quiet_challenges(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let console = req.headers().contains_key(CONSOLE_HEADER);
    let mut resp = next.run(req).await;
    if console && resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    resp
}

/// The console's routes; `tls`: served over HTTPS (the cookie is Secure).
pub fn routes(identity: Shared, tls: bool) -> Router {
    Router::new()
        .route("/", get(handle_index))
        .route("/console/{file}", get(handle_asset))
        // No icon: answered empty rather than as a missing endpoint.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/session", get(handle_session).post(handle_sign_in).delete(handle_sign_out))
        .with_state(ConsoleState { identity, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_named_by_digest_and_imports_follow() {
        let a = assets();
        assert_eq!(a.files.len(), SOURCES.len());
        let app = a.files.iter().find(|f| f.name.starts_with("app.") && f.name.ends_with(".js")).unwrap();
        assert!(a.index.contains(&format!("/console/{}", app.name)), "the page links the digest name");
        for f in &a.files {
            let text = std::str::from_utf8(f.raw).unwrap();
            for import in text.split("from './").skip(1) {
                let target = &import[..import.find('\'').unwrap()];
                assert!(a.files.iter().any(|g| g.name == target), "{} imports {target}, which is served", f.name);
            }
        }
        let digest = &hex::encode(sha2::Sha256::digest(app.raw))[..16];
        assert!(app.name.contains(digest));
        assert!(a.index_gzip.len() < a.index.len());
    }

    #[test]
    fn the_session_cookie_is_http_only_lax_and_secure_under_https() {
        let plain = session_cookie("t", 60, false);
        let tls = session_cookie("t", 60, true);
        for c in [&plain, &tls] {
            let c = c.to_str().unwrap();
            assert!(c.contains("; HttpOnly") && c.contains("; SameSite=Lax") && c.contains("; Path=/"), "{c}");
        }
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!takes_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip;q=0"));
        assert!(!takes_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate, br"));
        assert!(takes_gzip(&h));
    }
}
