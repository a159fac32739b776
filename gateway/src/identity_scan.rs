//! Vulnerability scanning on Quay's paths: `GET
//! /repository/{r}/manifest/{digest}/security` (Quay's shape, readable by
//! whoever can pull), and berth's own feed import and scanner status for
//! superusers.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;

use super::*;

/// The largest feed file taken in one request (the Debian tracker's full
/// JSON is tens of MB).
pub const FEED_BODY_MAX: usize = 1 << 30;

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecurityQuery {
    /// Include each feature's vulnerabilities (Quay's `vulnerabilities=true`).
    #[serde(default)]
    pub vulnerabilities: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The feed's name (its source); a later import of the same name
    /// replaces it.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedView {
    pub name: String,
    /// `debian-tracker`, ...
    pub kind: String,
    /// The snapshot's blob.
    pub digest: String,
    pub size: u64,
    pub advisories: u64,
    pub imported_at: String,
    /// The feeds' generation this import started; every scanned manifest
    /// is matched again against it.
    pub generation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScanCounts {
    pub queued: u64,
    pub scanned: u64,
    pub failed: u64,
    pub unsupported: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScannerStatus {
    pub feeds: Vec<FeedView>,
    pub generation: u64,
    pub scans: ScanCounts,
    /// Scanned manifests not yet matched against the newest generation.
    pub rematch_pending: u64,
    /// Feeds fetched from URLs on a schedule.
    #[serde(default)]
    pub sources: Vec<FeedSourceView>,
}

/// `PUT /api/v1/superuser/scanner/sources/{name}`: fetch `url` every
/// `interval_secs` (conditionally, with the last answer's `ETag` and
/// `Last-Modified`) and import it as feed `name` when it changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedSourceRequest {
    /// An http:// or https:// URL of a feed file in a format `import` takes.
    pub url: String,
    /// Seconds between fetches (default 21600, six hours).
    #[serde(default)]
    pub interval_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedSourceView {
    pub name: String,
    pub url: String,
    pub interval_secs: u64,
    /// When the next fetch is due.
    pub next_fetch_at: String,
    /// The node fetching it now, if any.
    pub fetching_node: Option<u64>,
    pub last_checked_at: Option<String>,
    pub last_checked_by: Option<u64>,
    /// "imported sha256:…", "not modified", "unchanged", or "error: …".
    pub last_outcome: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Deserialize)]
struct ManifestPath {
    namespace: String,
    repository: String,
    digest: String,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/repository/{namespace}/{repository}/manifest/{digest}/security", get(manifest_security))
        .route("/api/v1/repository/{namespace}/{repository}/manifest/{digest}/sbom", get(manifest_sbom))
        .route("/api/v1/superuser/scanner/feeds", post(feed_import).layer(DefaultBodyLimit::max(FEED_BODY_MAX)))
        .route("/api/v1/superuser/scanner/status", get(scanner_status))
        .route("/api/v1/superuser/scanner/sources/{name}", put(feed_source_put).delete(feed_source_delete))
}

#[derive(OpenApi)]
#[openapi(
    paths(manifest_security, manifest_sbom, feed_import, scanner_status, feed_source_put, feed_source_delete),
    components(schemas(ErrorBody, FeedView, ScanCounts, ScannerStatus, FeedSourceRequest, FeedSourceView))
)]
pub(super) struct ScanDoc;

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/manifest/{digest}/security", tag = "scanning",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("digest" = String, Path, description = "The manifest's digest"), SecurityQuery),
    responses((status = 200, description = "Quay's security report: `{status, data: {Layer: {Name, ParentName, NamespaceName, IndexedByVersion, Features}}}`", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn manifest_security(
    State(id): State<Shared>,
    Path(p): Path<ManifestPath>,
    Query(q): Query<SecurityQuery>,
    Who(w): Who,
) -> Result<Json<serde_json::Value>, ApiError> {
    let repo = repo_name(&p.namespace, &p.repository);
    Ok(Json(id.manifest_security(&w, &repo, &p.digest, q.vulnerabilities.unwrap_or(false)).await?))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/manifest/{digest}/sbom", tag = "scanning",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("digest" = String, Path, description = "The manifest's digest")),
    responses((status = 200, description = "The image's packages as a CycloneDX 1.5 JSON document (`application/vnd.cyclonedx+json`), also attached to the image as an OCI referrer", body = Object, content_type = "application/vnd.cyclonedx+json"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Not scanned (yet): queued, failed or unsupported", body = ErrorBody)))]
async fn manifest_sbom(State(id): State<Shared>, Path(p): Path<ManifestPath>, Who(w): Who) -> Result<Response, ApiError> {
    let repo = repo_name(&p.namespace, &p.repository);
    let doc = id.manifest_sbom(&w, &repo, &p.digest).await?;
    let body = serde_json::to_vec(&doc).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/vnd.cyclonedx+json")], body).into_response())
}

#[utoipa::path(post, path = "/api/v1/superuser/scanner/feeds", tag = "scanning", params(FeedQuery),
    request_body(content = String, description = "The feed file as it is published (the Debian security tracker's JSON)", content_type = "application/octet-stream"),
    responses((status = 201, body = FeedView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn feed_import(State(id): State<Shared>, Query(q): Query<FeedQuery>, Who(w): Who, bytes: Bytes) -> Result<(StatusCode, Json<FeedView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.import_feed(&w, &q.name, bytes).await?)))
}

#[utoipa::path(get, path = "/api/v1/superuser/scanner/status", tag = "scanning",
    responses((status = 200, body = ScannerStatus), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn scanner_status(State(id): State<Shared>, Who(w): Who) -> Result<Json<ScannerStatus>, ApiError> {
    Ok(Json(id.scanner_status(&w).await?))
}

#[utoipa::path(put, path = "/api/v1/superuser/scanner/sources/{name}", tag = "scanning",
    params(("name" = String, Path, description = "The feed's name: the source's imports replace the feed of that name")),
    request_body = FeedSourceRequest,
    responses((status = 200, body = FeedSourceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn feed_source_put(
    State(id): State<Shared>,
    Path(name): Path<String>,
    Who(w): Who,
    body: Result<Json<FeedSourceRequest>, JsonRejection>,
) -> Result<Json<FeedSourceView>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    Ok(Json(id.put_feed_source(&w, &name, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/superuser/scanner/sources/{name}", tag = "scanning",
    params(("name" = String, Path, description = "The feed source's name")),
    responses((status = 204, description = "Removed; the feed it imported stays"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn feed_source_delete(State(id): State<Shared>, Path(name): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_feed_source(&w, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
