//! The OCI distribution API (`/v2/…`) over the [`Registry`] trait.
//!
//! One catch-all route; the path is parsed once into an [`Endpoint`] and
//! dispatched on (endpoint, method). Bodies stream in both directions: a
//! blob never sits whole in memory here. Every response carries
//! `Docker-Distribution-API-Version: registry/2.0`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_common::{Digest, RepoName};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::access::{bearer_challenge, realm, Access, Caller, IssuedToken, ResourceScope};
use crate::endpoint::{Endpoint, Reference};
use crate::error::{ApiError, ErrorCode};

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// Manifests larger than this are refused (the spec's recommended floor).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The smallest chunk berth asks clients to send, beside the last one.
pub const CHUNK_MIN_LENGTH: u64 = 0;

pub const HDR_API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const HDR_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const HDR_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const HDR_OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const HDR_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const HDR_CHUNK_MIN: HeaderName = HeaderName::from_static("oci-chunk-min-length");
/// Set on a request one node forwards to another, so it is never forwarded twice.
pub const HDR_FORWARDED: HeaderName = HeaderName::from_static("x-berth-forwarded");
/// On a forwarded upload request: what the forwarding node vouches for (who
/// asked, for which upload, to do what), signed with the cluster's token
/// key and short-lived. The client's own credentials do not travel over
/// plain HTTP to another host; this does, and it is worth one request of
/// one upload session for a minute.
pub const HDR_UPLOAD_GRANT: HeaderName = HeaderName::from_static("x-berth-upload-grant");
/// `X-Berth-Consistency: linearizable` on a tag or manifest read: the node
/// first catches up with the leader, so the answer reflects every write
/// acknowledged before the request (one round trip to the leader; 503 when
/// there is no quorum). Without it a node answers from its own copy, which
/// may lag by up to a heartbeat, or for as long as it is cut off.
pub const HDR_CONSISTENCY: HeaderName = HeaderName::from_static("x-berth-consistency");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `GET /v2/`: who is asking, no repository.
    Base,
    Catalog,
    Repo {
        name: &'a RepoName,
        action: Action,
    },
}

/// An inclusive byte range: `start-` or `start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: Option<u64>,
}

pub struct BlobBody {
    /// Size of the whole blob.
    pub size: u64,
    pub start: u64,
    pub len: u64,
    pub stream: ByteStream,
}

#[derive(Debug, Clone)]
pub struct UploadState {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Bytes,
    pub subject: Option<Digest>,
}

#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

pub enum UploadOwner {
    Local,
    /// Base URL of the node that owns the session.
    Remote(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

pub struct Page {
    pub items: Vec<String>,
    /// More items follow the last one returned.
    pub more: bool,
}

/// What the registry API needs from a node.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// The name tokens are issued for (`service=` in challenges).
    fn service(&self) -> String;
    /// May `caller` do what `scope` says? A pull or a push to a repository
    /// that does not exist yet is allowed where the caller may create it.
    /// Authorizing changes nothing: the repository is created by the first
    /// write that succeeds (a blob stored, a mount, a manifest committed),
    /// so a refused or read-only request leaves no repository behind.
    async fn authorize(&self, caller: &Caller, scope: Scope<'_>) -> Result<Access, ApiError>;
    /// The token endpoint: a JWT granting what was asked that the caller may do.
    async fn issue_token(&self, caller: &Caller, scopes: &[ResourceScope]) -> Result<IssuedToken, ApiError>;
    /// Records a usage-log entry (`pull_repo`, `push_repo`, `delete_tag`, …).
    async fn audit(&self, access: &Access, kind: &'static str, repo: &RepoName, metadata: Vec<(&'static str, String)>);
    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> Result<u64, ApiError>;
    async fn blob_read(&self, repo: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobBody, ApiError>;
    async fn blob_delete(&self, access: &Access, repo: &RepoName, digest: &Digest) -> Result<(), ApiError>;
    /// Links a blob of `from` into `repo`; false when it cannot.
    async fn blob_mount(&self, access: &Access, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool, ApiError>;
    /// A whole blob in one request (`POST ?digest=`).
    async fn blob_put(&self, access: &Access, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<(), ApiError>;
    fn upload_owner(&self, id: &str) -> Result<UploadOwner, ApiError>;
    /// A grant for the node that owns upload `id` to act on one forwarded
    /// request for `access`'s principal ([`HDR_UPLOAD_GRANT`]).
    async fn upload_grant(&self, access: &Access, repo: &RepoName, id: &str, action: Action) -> Result<String, ApiError>;
    /// [`Registry::authorize`] for a forwarded upload request carrying a
    /// grant: the grant must be valid, for upload `id` and `action`, and
    /// its principal must still be allowed.
    async fn authorize_upload_grant(&self, grant: &str, caller: &Caller, repo: &RepoName, id: &str, action: Action) -> Result<Access, ApiError>;
    /// Opens an upload session for `access`'s account (sessions are capped
    /// per account).
    async fn upload_start(&self, access: &Access, repo: &RepoName) -> Result<UploadState, ApiError>;
    async fn upload_patch(&self, repo: &RepoName, id: &str, range: Option<(u64, u64)>, body: ByteStream) -> Result<UploadState, ApiError>;
    async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadState, ApiError>;
    async fn upload_finish(&self, access: &Access, repo: &RepoName, id: &str, digest: &Digest, body: ByteStream) -> Result<(), ApiError>;
    async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<(), ApiError>;
    async fn manifest_get(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest, ApiError>;
    async fn manifest_put(
        &self,
        access: &Access,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutOutcome, ApiError>;
    async fn manifest_delete(&self, access: &Access, repo: &RepoName, reference: &Reference) -> Result<(), ApiError>;
    async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError>;
    /// Waits until this node has applied every write the cluster had
    /// acknowledged when the call began (a linearizable read barrier).
    async fn catch_up(&self) -> Result<(), ApiError>;
    /// The repositories `access` may pull from.
    async fn catalog(&self, access: &Access, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError>;
    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>, ApiError>;
}

type Shared = Arc<dyn Registry>;

/// The state the `/v2` handler needs: the registry and an HTTP client for
/// forwarding upload requests to the node that owns the session.
#[derive(Clone)]
pub struct V2State {
    pub registry: Shared,
    pub http: reqwest::Client,
    /// Served over TLS: the token realm is `https://…`.
    pub tls: bool,
    /// How clients reach this node; the token realm is built on it.
    pub public_url: Option<String>,
    /// The listener's own address: the realm's host without a public URL
    /// and a plain `Host` header.
    pub own_addr: Option<std::net::SocketAddr>,
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let q = query?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn location(path: String) -> (HeaderName, HeaderValue) {
    (header::LOCATION, hv(&path))
}

fn parse_n(query: Option<&str>) -> Result<Option<usize>, ApiError> {
    match query_param(query, "n") {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("n={v:?} is not a number"))),
    }
}

/// What a blob GET's `Range` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// `bytes=a-b` or `bytes=a-`.
    Span(ByteRange),
    /// `bytes=-n`: the last n bytes, wherever they start.
    Suffix(u64),
}

/// `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` on a blob GET.
fn parse_range(headers: &HeaderMap) -> Result<Option<RangeAsk>, ApiError> {
    let Some(v) = headers.get(header::RANGE) else { return Ok(None) };
    let bad = || ApiError::new(ErrorCode::RangeInvalid, "Range must be bytes=<start>-[<end>] or bytes=-<length>");
    let s = v.to_str().map_err(|_| bad())?.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    if a.trim().is_empty() {
        return Ok(Some(RangeAsk::Suffix(b.trim().parse().map_err(|_| bad())?)));
    }
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = if b.trim().is_empty() { None } else { Some(b.trim().parse().map_err(|_| bad())?) };
    Ok(Some(RangeAsk::Span(ByteRange { start, end })))
}

/// `Content-Range: <start>-<end>` on a PATCH (with or without `bytes `).
fn parse_content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let bad = || ApiError::new(ErrorCode::RangeInvalid, "Content-Range must be <start>-<end>");
    let s = v.to_str().map_err(|_| bad())?;
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if end < start {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn upload_headers(repo: &RepoName, st: &UploadState) -> [(HeaderName, HeaderValue); 4] {
    let range = if st.offset == 0 { "0-0".to_string() } else { format!("0-{}", st.offset - 1) };
    [
        location(format!("/v2/{repo}/blobs/uploads/{}", st.id)),
        (header::RANGE, hv(&range)),
        (HDR_UPLOAD_UUID, hv(&st.id)),
        (HDR_CHUNK_MIN, hv(&CHUNK_MIN_LENGTH.to_string())),
    ]
}

fn method_not_allowed(ep: &Endpoint, method: &Method) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not supported on {ep:?}"))
}

/// `/v2/*`: the whole distribution API.
pub async fn handle_v2(State(st): State<V2State>, req: Request) -> Response {
    let mut resp = match dispatch(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(HDR_API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// One authorized `/v2` request, as a handler sees it.
struct V2Request {
    reg: Shared,
    /// The credentials as they came: a mount checks the caller may read
    /// its source too.
    caller: Caller,
    access: Access,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
}

impl V2Request {
    fn query_param(&self, key: &str) -> Option<String> {
        query_param(self.query.as_deref(), key)
    }
}

/// Parses the path once, authorizes, sends an upload request to the node
/// that owns its session, and hands the rest to [`route`].
async fn dispatch(st: &V2State, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let rest = path.strip_prefix("/v2/").or_else(|| (path == "/v2").then_some("")).unwrap_or("");
    let ep = Endpoint::parse(rest)?;
    let method = parts.method.clone();
    let caller = crate::access::caller_of(&parts.headers, &parts.extensions)?;
    let headers = parts.headers;
    let scope = scope_of(&ep, &method);
    let grant = headers.get(HDR_UPLOAD_GRANT).map(|v| v.to_str().unwrap_or_default().to_string());
    let access = authorize(st, &ep, &caller, &headers, scope, grant.as_deref()).await?;

    // An upload session lives on the node that started it.
    if let (Endpoint::Upload(name, id), Scope::Repo { action, .. }) = (&ep, scope) {
        if let UploadOwner::Remote(base) = st.registry.upload_owner(id)? {
            if headers.contains_key(HDR_FORWARDED) || grant.is_some() {
                return Err(ApiError::new(ErrorCode::BlobUploadUnknown, format!("upload {id} is not on this node")));
            }
            let grant = st.registry.upload_grant(&access, name, id, action).await?;
            return forward(&st.http, &base, &method, &path, query.as_deref(), &headers, &grant, body).await;
        }
    }

    if matches!(ep, Endpoint::Tags(_) | Endpoint::Manifest(..)) && matches!(method, Method::GET | Method::HEAD) {
        read_consistency(&st.registry, &headers).await?;
    }
    route(V2Request { reg: st.registry.clone(), caller, access, headers, query, body }, ep, method).await
}

/// What a request needs follows its method, as in distribution: reads
/// (an upload's status included) need pull, so a client holding a pull
/// token for a read gets its answer; everything else needs push, and
/// deletes of content need delete.
fn scope_of<'a>(ep: &'a Endpoint, method: &Method) -> Scope<'a> {
    let read = matches!(method, &Method::GET | &Method::HEAD);
    match (ep, method) {
        (Endpoint::Base, _) => Scope::Base,
        (Endpoint::Catalog, _) => Scope::Catalog,
        (Endpoint::Tags(n) | Endpoint::Referrers(n, _), _) => Scope::Repo { name: n, action: Action::Pull },
        (Endpoint::Manifest(n, _) | Endpoint::InvalidReference(n, _) | Endpoint::Blob(n, _), &Method::DELETE) => {
            Scope::Repo { name: n, action: Action::Delete }
        }
        (Endpoint::Manifest(n, _) | Endpoint::InvalidReference(n, _) | Endpoint::Blob(n, _) | Endpoint::UploadStart(n) | Endpoint::Upload(n, _), _) => {
            Scope::Repo { name: n, action: if read { Action::Pull } else { Action::Push } }
        }
    }
}

/// The `scope` of a challenge for `scope`: what to ask the token endpoint for.
fn challenge_scope(scope: Scope<'_>) -> Option<String> {
    match scope {
        Scope::Base => None,
        Scope::Catalog => Some("registry:catalog:*".to_string()),
        Scope::Repo { name, action: Action::Pull } => Some(format!("repository:{name}:pull")),
        Scope::Repo { name, action: Action::Push } => Some(format!("repository:{name}:pull,push")),
        Scope::Repo { name, action: Action::Delete } => Some(format!("repository:{name}:delete")),
    }
}

/// Authorizes the caller for `scope`, or by the upload grant a forwarded
/// request carries. A 401 names the token endpoint and the scope to ask for.
async fn authorize(st: &V2State, ep: &Endpoint, caller: &Caller, headers: &HeaderMap, scope: Scope<'_>, grant: Option<&str>) -> Result<Access, ApiError> {
    let reg = &st.registry;
    let authorized = match (ep, grant, scope) {
        (Endpoint::Upload(_, id), Some(g), Scope::Repo { name, action }) => reg.authorize_upload_grant(g, caller, name, id, action).await,
        (_, Some(_), _) => Err(ApiError::new(ErrorCode::Unauthorized, format!("{HDR_UPLOAD_GRANT} is only for requests of an upload session"))),
        (_, None, _) => reg.authorize(caller, scope).await,
    };
    authorized.map_err(|e| match e.code {
        ErrorCode::Unauthorized => {
            let realm = realm(st.public_url.as_deref(), headers, st.tls, st.own_addr);
            e.with_challenge(bearer_challenge(&realm, &reg.service(), challenge_scope(scope).as_deref()))
        }
        _ => e,
    })
}

/// `X-Berth-Consistency` on a tag or manifest read.
async fn read_consistency(reg: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(HDR_CONSISTENCY).map(|v| v.as_bytes()) {
        None => Ok(()),
        Some(b"linearizable") => reg.catch_up().await,
        Some(other) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{HDR_CONSISTENCY}: {} is not a consistency level (use linearizable)", String::from_utf8_lossy(other)),
        )),
    }
}

/// The table: which handler serves which endpoint and method.
async fn route(req: V2Request, ep: Endpoint, method: Method) -> Result<Response, ApiError> {
    match (ep, method) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()),
        (Endpoint::Catalog, Method::GET) => handle_catalog(req).await,
        (Endpoint::Tags(repo), Method::GET) => handle_tags(req, repo).await,
        (Endpoint::Manifest(repo, reference), m @ (Method::GET | Method::HEAD)) => handle_manifest_get(req, repo, reference, m == Method::HEAD).await,
        (Endpoint::Manifest(repo, reference), Method::PUT) => handle_manifest_put(req, repo, reference).await,
        (Endpoint::Manifest(repo, reference), Method::DELETE) => handle_manifest_delete(req, repo, reference).await,
        (Endpoint::InvalidReference(repo, raw), Method::GET | Method::HEAD | Method::DELETE) => {
            Err(ApiError::new(ErrorCode::ManifestUnknown, format!("{raw:?} is neither a tag nor a digest: no manifest of {repo} has it")))
        }
        (Endpoint::InvalidReference(_, raw), Method::PUT) => {
            Err(ApiError::new(ErrorCode::ManifestInvalid, format!("{raw:?} is neither a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}) nor a digest")))
        }
        (Endpoint::Blob(repo, digest), Method::HEAD) => handle_blob_head(req, repo, digest).await,
        (Endpoint::Blob(repo, digest), Method::GET) => handle_blob_get(req, repo, digest).await,
        (Endpoint::Blob(repo, digest), Method::DELETE) => handle_blob_delete(req, repo, digest).await,
        (Endpoint::UploadStart(repo), Method::POST) => handle_upload_start(req, repo).await,
        (Endpoint::Upload(repo, id), Method::PATCH) => handle_upload_patch(req, repo, id).await,
        (Endpoint::Upload(repo, id), Method::PUT) => handle_upload_finish(req, repo, id).await,
        (Endpoint::Upload(repo, id), Method::GET | Method::HEAD) => handle_upload_status(req, repo, id).await,
        (Endpoint::Upload(repo, id), Method::DELETE) => handle_upload_cancel(req, repo, id).await,
        (Endpoint::Referrers(repo, subject), Method::GET) => handle_referrers(req, repo, subject).await,
        (ep, m) => Err(method_not_allowed(&ep, &m)),
    }
}

/// A list answer with `Link: <path?n=…&last=…>; rel="next"` when more follow.
fn paged(body: serde_json::Value, page: &Page, n: Option<usize>, path: &str) -> Response {
    let mut resp = axum::Json(body).into_response();
    if page.more {
        if let (Some(n), Some(l)) = (n, page.items.last()) {
            resp.headers_mut().insert(header::LINK, hv(&format!("<{path}?n={n}&last={l}>; rel=\"next\"")));
        }
    }
    resp
}

async fn handle_catalog(req: V2Request) -> Result<Response, ApiError> {
    let n = parse_n(req.query.as_deref())?;
    let last = req.query_param("last");
    let page = req.reg.catalog(&req.access, n, last.as_deref()).await?;
    Ok(paged(serde_json::json!({ "repositories": page.items }), &page, n, "/v2/_catalog"))
}

async fn handle_tags(req: V2Request, repo: RepoName) -> Result<Response, ApiError> {
    let n = parse_n(req.query.as_deref())?;
    let last = req.query_param("last");
    let page = req.reg.tags(&repo, n, last.as_deref()).await?;
    Ok(paged(serde_json::json!({ "name": repo.as_str(), "tags": page.items }), &page, n, &format!("/v2/{repo}/tags/list")))
}

async fn handle_manifest_get(req: V2Request, repo: RepoName, reference: Reference, head: bool) -> Result<Response, ApiError> {
    let man = req.reg.manifest_get(&repo, &reference).await?;
    let hdrs = [
        (header::CONTENT_TYPE, hv(&man.media_type)),
        (header::CONTENT_LENGTH, hv(&man.bytes.len().to_string())),
        (HDR_CONTENT_DIGEST, hv(&man.digest.to_string())),
        (header::ETAG, hv(&format!("\"{}\"", man.digest))),
    ];
    let body = if head {
        Body::empty()
    } else {
        req.reg.audit(&req.access, "pull_repo", &repo, vec![("manifest_digest", man.digest.to_string()), ("reference", reference.to_string())]).await;
        Body::from(man.bytes)
    };
    Ok((StatusCode::OK, hdrs, body).into_response())
}

async fn handle_manifest_put(req: V2Request, repo: RepoName, reference: Reference) -> Result<Response, ApiError> {
    let content_type = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let bytes = read_limited(req.body, MAX_MANIFEST_BYTES).await?;
    let out = req.reg.manifest_put(&req.access, &repo, &reference, content_type.as_deref(), bytes).await?;
    req.reg.audit(&req.access, "push_repo", &repo, vec![("manifest_digest", out.digest.to_string()), ("reference", reference.to_string())]).await;
    let mut resp =
        (StatusCode::CREATED, [location(format!("/v2/{repo}/manifests/{}", out.digest)), (HDR_CONTENT_DIGEST, hv(&out.digest.to_string()))]).into_response();
    if let Some(s) = out.subject {
        resp.headers_mut().insert(HDR_OCI_SUBJECT, hv(&s.to_string()));
    }
    Ok(resp)
}

async fn handle_manifest_delete(req: V2Request, repo: RepoName, reference: Reference) -> Result<Response, ApiError> {
    req.reg.manifest_delete(&req.access, &repo, &reference).await?;
    let kind = if matches!(reference, Reference::Tag(_)) { "delete_tag" } else { "delete_manifest" };
    req.reg.audit(&req.access, kind, &repo, vec![("reference", reference.to_string())]).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn handle_blob_head(req: V2Request, repo: RepoName, digest: Digest) -> Result<Response, ApiError> {
    let size = req.reg.blob_stat(&repo, &digest).await?;
    let hdrs = [
        (header::CONTENT_LENGTH, hv(&size.to_string())),
        (HDR_CONTENT_DIGEST, hv(&digest.to_string())),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    Ok((StatusCode::OK, hdrs).into_response())
}

async fn handle_blob_get(req: V2Request, repo: RepoName, digest: Digest) -> Result<Response, ApiError> {
    let range = match parse_range(&req.headers)? {
        None => None,
        Some(RangeAsk::Span(r)) => Some(r),
        Some(RangeAsk::Suffix(n)) => {
            // Where the last n bytes start depends on the size,
            // which only the backend knows.
            let size = req.reg.blob_stat(&repo, &digest).await?;
            if n == 0 || size == 0 {
                return Err(ApiError::new(ErrorCode::RangeInvalid, format!("the last {n} bytes of a blob of {size} bytes are no bytes")));
            }
            Some(ByteRange { start: size.saturating_sub(n), end: None })
        }
    };
    let blob = req.reg.blob_read(&repo, &digest, range).await?;
    let mut hdrs = vec![
        (header::CONTENT_LENGTH, hv(&blob.len.to_string())),
        (HDR_CONTENT_DIGEST, hv(&digest.to_string())),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::ETAG, hv(&format!("\"{digest}\""))),
    ];
    let status = if range.is_some() {
        let end = blob.start + blob.len.saturating_sub(1);
        hdrs.push((header::CONTENT_RANGE, hv(&format!("bytes {}-{}/{}", blob.start, end, blob.size))));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(Body::from_stream(blob.stream));
    *resp.status_mut() = status;
    resp.headers_mut().extend(hdrs);
    Ok(resp)
}

async fn handle_blob_delete(req: V2Request, repo: RepoName, digest: Digest) -> Result<Response, ApiError> {
    req.reg.blob_delete(&req.access, &repo, &digest).await?;
    req.reg.audit(&req.access, "delete_blob", &repo, vec![("digest", digest.to_string())]).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The answer to a blob that is now in `repo`.
fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    (StatusCode::CREATED, [location(format!("/v2/{repo}/blobs/{digest}")), (HDR_CONTENT_DIGEST, hv(&digest.to_string()))]).into_response()
}

fn parse_digest(raw: &str) -> Result<Digest, ApiError> {
    raw.parse().map_err(|e: berth_common::DigestError| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// `POST …/blobs/uploads/`: a mount (`?mount=&from=`), a whole blob
/// (`?digest=`), or a new session.
async fn handle_upload_start(req: V2Request, repo: RepoName) -> Result<Response, ApiError> {
    if let Some(mount) = req.query_param("mount") {
        let digest = parse_digest(&mount)?;
        if let Some(from) = req.query_param("from") {
            let from: RepoName = from.parse().map_err(|e: berth_common::NameError| ApiError::new(ErrorCode::NameInvalid, e.to_string()))?;
            let may_read = req.reg.authorize(&req.caller, Scope::Repo { name: &from, action: Action::Pull }).await.is_ok();
            if may_read && req.reg.blob_mount(&req.access, &repo, &from, &digest).await? {
                return Ok(blob_created(&repo, &digest));
            }
        }
        // Cannot mount: fall back to a fresh upload session, as the spec says.
    } else if let Some(d) = req.query_param("digest") {
        let digest = parse_digest(&d)?;
        req.reg.blob_put(&req.access, &repo, &digest, body_stream(req.body)).await?;
        return Ok(blob_created(&repo, &digest));
    }
    let st = req.reg.upload_start(&req.access, &repo).await?;
    Ok((StatusCode::ACCEPTED, upload_headers(&repo, &st)).into_response())
}

async fn handle_upload_patch(req: V2Request, repo: RepoName, id: String) -> Result<Response, ApiError> {
    let range = parse_content_range(&req.headers)?;
    let st = req.reg.upload_patch(&repo, &id, range, body_stream(req.body)).await?;
    Ok((StatusCode::ACCEPTED, upload_headers(&repo, &st)).into_response())
}

async fn handle_upload_finish(req: V2Request, repo: RepoName, id: String) -> Result<Response, ApiError> {
    let d = req.query_param("digest").ok_or_else(|| ApiError::new(ErrorCode::DigestInvalid, "the final PUT of an upload needs ?digest="))?;
    let digest = parse_digest(&d)?;
    req.reg.upload_finish(&req.access, &repo, &id, &digest, body_stream(req.body)).await?;
    Ok(blob_created(&repo, &digest))
}

async fn handle_upload_status(req: V2Request, repo: RepoName, id: String) -> Result<Response, ApiError> {
    let st = req.reg.upload_status(&repo, &id).await?;
    Ok((StatusCode::NO_CONTENT, upload_headers(&repo, &st)).into_response())
}

async fn handle_upload_cancel(req: V2Request, repo: RepoName, id: String) -> Result<Response, ApiError> {
    req.reg.upload_cancel(&repo, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn handle_referrers(req: V2Request, repo: RepoName, subject: Digest) -> Result<Response, ApiError> {
    let filter = req.query_param("artifactType");
    let manifests = req.reg.referrers(&repo, &subject, filter.as_deref()).await?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let mut resp = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.oci.image.index.v1+json"))], axum::Json(index)).into_response();
    if filter.is_some() {
        resp.headers_mut().insert(HDR_FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

/// Reads at most `limit` bytes of a body; more is SIZE_INVALID (413).
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(ErrorCode::SizeInvalid, StatusCode::PAYLOAD_TOO_LARGE, format!("manifest is larger than {limit} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Hop-by-hop headers, never forwarded.
const HOP_BY_HOP: [&str; 8] = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// Sends an upload request to the node that owns the session and relays
/// its answer, streaming the body both ways. The owner authorizes it by
/// `grant`. The client's credentials go along only over HTTPS (where an
/// owner too old to know grants still needs them): over plain HTTP anyone
/// on the path between the nodes would read them.
#[allow(clippy::too_many_arguments)]
async fn forward(
    http: &reqwest::Client,
    base: &str,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    grant: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let url = match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    };
    let private = base.starts_with("https://");
    let mut req = http.request(method.clone(), &url).body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (k, v) in headers {
        let credential = k == header::AUTHORIZATION || k == header::COOKIE;
        if !HOP_BY_HOP.contains(&k.as_str()) && k != header::HOST && k != HDR_UPLOAD_GRANT && (private || !credential) {
            req = req.header(k, v);
        }
    }
    req = req.header(HDR_FORWARDED, "1").header(HDR_UPLOAD_GRANT, grant);
    let resp = req.send().await.map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("the node that owns this upload ({base}) is unreachable: {e}")))?;
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    out.body(Body::from_stream(resp.bytes_stream())).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

#[cfg(test)]
mod range_properties {
    use super::*;
    use proptest::prelude::*;

    fn headers(name: HeaderName, value: &str) -> Option<HeaderMap> {
        let v = HeaderValue::from_str(value).ok()?;
        Some(HeaderMap::from_iter([(name, v)]))
    }

    /// Header values near the grammar: numbers at the edges of u64 and
    /// past them, missing or doubled parts, odd spacing.
    fn range_text() -> impl Strategy<Value = String> {
        let num = prop_oneof![any::<u64>().prop_map(|n| n.to_string()), Just("18446744073709551616".to_string()), Just(String::new()), "[0-9 +-]{1,24}",];
        let prefix = prop_oneof![Just("bytes="), Just("bytes "), Just(""), Just("bytes=bytes=")];
        let suffix = prop_oneof![Just(String::new()), any::<u64>().prop_map(|n| format!("/{n}")), Just("/*".to_string()), Just(",0-1".to_string())];
        (prefix, num.clone(), prop_oneof![Just("-"), Just(""), Just("--")], num, suffix).prop_map(|(p, a, dash, b, s)| format!("{p}{a}{dash}{b}{s}"))
    }

    // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
    proptest! {
        #[test]
        fn any_range_header_parses_or_is_refused_without_panicking(raw in ".{0,64}", near in range_text()) {
            for v in [&raw, &near] {
                if let Some(h) = headers(header::RANGE, v) {
                    let _ = parse_range(&h);
                }
                if let Some(h) = headers(header::CONTENT_RANGE, v) {
                    // What it accepts is an ordered pair: a chunk of end - start + 1 bytes.
                    if let Ok(Some((start, end))) = parse_content_range(&h) {
                        prop_assert!(start <= end);
                    }
                }
            }
        }

        #[test]
        fn well_formed_ranges_are_read_as_written(a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = (a.min(b), a.max(b));
            let range = |text: String| parse_range(&headers(header::RANGE, &text).unwrap()).unwrap();
            prop_assert_eq!(range(format!("bytes={start}-{end}")), Some(RangeAsk::Span(ByteRange { start, end: Some(end) })));
            prop_assert_eq!(range(format!("bytes={start}-")), Some(RangeAsk::Span(ByteRange { start, end: None })));
            prop_assert_eq!(range(format!("bytes=-{end}")), Some(RangeAsk::Suffix(end)));
            for text in [format!("{start}-{end}"), format!("bytes {start}-{end}"), format!("bytes {start}-{end}/*")] {
                prop_assert_eq!(parse_content_range(&headers(header::CONTENT_RANGE, &text).unwrap()).unwrap(), Some((start, end)));
            }
            if start < end {
                let backwards = headers(header::CONTENT_RANGE, &format!("{end}-{start}")).unwrap();
                prop_assert_eq!(parse_content_range(&backwards).unwrap_err().code, ErrorCode::RangeInvalid);
            }
        }
    }
}
