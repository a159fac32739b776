//! Repository states and mirrors on Quay's paths and in Quay's shapes:
//! `PUT /repository/{r}/changestate`, `POST/GET/PUT /repository/{r}/mirror`,
//! `POST …/mirror/sync-now` and `…/mirror/sync-cancel`.
//!
//! A child of `identity`: the same authenticated caller ([`Who`]), paths
//! and error shapes. The node decides what the caller may do and keeps
//! the upstream password sealed; no view ever carries it.

use super::*;

/// `PUT /repository/{r}/changestate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoStateChange {
    /// `NORMAL`, `READ_ONLY` or `MIRROR`.
    pub state: String,
}

/// Which upstream tags are mirrored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MirrorRootRule {
    /// `tag_glob_csv`, the one kind.
    pub rule_kind: String,
    /// Globs (`*`, `?`, `[…]`); a tag matching any is mirrored.
    pub rule_value: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MirrorProxy {
    #[serde(default)]
    pub http_proxy: Option<String>,
    #[serde(default)]
    pub https_proxy: Option<String>,
    #[serde(default)]
    pub no_proxy: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MirrorRegistryConfig {
    #[serde(default)]
    pub verify_tls: Option<bool>,
    #[serde(default)]
    pub unsigned_images: Option<bool>,
    #[serde(default)]
    pub proxy: Option<MirrorProxy>,
}

/// A mirror configuration as `POST` (every required field) and `PUT` (the
/// fields to change) take it. The password is write-only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MirrorRequest {
    #[serde(default)]
    pub is_enabled: Option<bool>,
    /// `host[:port]/path` of the upstream repository.
    #[serde(default)]
    pub external_reference: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub external_registry_username: Option<Option<String>>,
    /// `null` clears it; stored sealed, never shown.
    #[serde(default, deserialize_with = "present")]
    pub external_registry_password: Option<Option<String>>,
    /// `%Y-%m-%dT%H:%M:%SZ`.
    #[serde(default)]
    pub sync_start_date: Option<String>,
    /// Seconds between syncs.
    #[serde(default)]
    pub sync_interval: Option<u64>,
    /// A robot of the repository's namespace (`ns+short`).
    #[serde(default)]
    pub robot_username: Option<String>,
    #[serde(default)]
    pub root_rule: Option<MirrorRootRule>,
    #[serde(default)]
    pub external_registry_config: Option<MirrorRegistryConfig>,
    /// The longest one sync may run, in seconds.
    #[serde(default)]
    pub skopeo_timeout_interval: Option<u64>,
    /// Architectures kept from an index; `null` keeps all.
    #[serde(default, deserialize_with = "present")]
    pub architecture_filter: Option<Option<Vec<String>>>,
    /// berth's own: the region whose nodes run the sync (close to the
    /// upstream); `null` for any.
    #[serde(default, deserialize_with = "present")]
    pub preferred_region: Option<Option<String>>,
}

/// A mirror as `GET` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MirrorView {
    pub is_enabled: bool,
    /// Always `PULL`.
    pub mirror_type: String,
    pub external_reference: String,
    pub external_registry_username: Option<String>,
    pub external_registry_config: MirrorRegistryConfig,
    pub sync_interval: u64,
    pub sync_start_date: String,
    pub sync_expiration_date: Option<String>,
    pub sync_retries_remaining: u32,
    /// `NEVER_RUN`, `SYNC_NOW`, `SYNCING`, `SUCCESS`, `FAIL` or `CANCEL`.
    pub sync_status: String,
    pub root_rule: MirrorRootRule,
    pub robot_username: String,
    pub skopeo_timeout_interval: u64,
    pub architecture_filter: Option<Vec<String>>,
    /// berth's own: the last sync's outcome, and the node running one.
    pub last_sync_message: Option<String>,
    pub syncing_node: Option<u64>,
    pub preferred_region: Option<String>,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/repository/{namespace}/{repository}/changestate", put(repo_change_state))
        .route("/api/v1/repository/{namespace}/{repository}/mirror", get(mirror_get).post(mirror_create).put(mirror_update))
        .route("/api/v1/repository/{namespace}/{repository}/mirror/sync-now", post(mirror_sync_now))
        .route("/api/v1/repository/{namespace}/{repository}/mirror/sync-cancel", post(mirror_sync_cancel))
}

#[derive(OpenApi)]
#[openapi(
    paths(repo_change_state, mirror_get, mirror_create, mirror_update, mirror_sync_now, mirror_sync_cancel),
    components(schemas(ErrorBody, MirrorRegistryConfig, MirrorProxy, MirrorRootRule))
)]
pub(super) struct MirrorDoc;

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/changestate", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = RepoStateChange,
    responses((status = 200, body = Success), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_change_state(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<RepoStateChange>, JsonRejection>,
) -> Result<Json<Success>, ApiError> {
    id.change_repo_state(&w, &p.name(), body(b)?).await?;
    Ok(Json(Success { success: true }))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/mirror", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = MirrorView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn mirror_get(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<Json<MirrorView>, ApiError> {
    Ok(Json(id.get_mirror(&w, &p.name()).await?))
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/mirror", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = MirrorRequest,
    responses((status = 201, body = MirrorView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn mirror_create(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<MirrorRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<MirrorView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.put_mirror(&w, &p.name(), body(b)?, true).await?)))
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/mirror", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = MirrorRequest,
    responses((status = 201, body = MirrorView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn mirror_update(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<MirrorRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<MirrorView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.put_mirror(&w, &p.name(), body(b)?, false).await?)))
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/mirror/sync-now", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 204, description = "A sync is due at once"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn mirror_sync_now(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.mirror_sync(&w, &p.name(), true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/mirror/sync-cancel", tag = "mirror",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 204, description = "The running or pending sync is cancelled"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn mirror_sync_cancel(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.mirror_sync(&w, &p.name(), false).await?;
    Ok(StatusCode::NO_CONTENT)
}
