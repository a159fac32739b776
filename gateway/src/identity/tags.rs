//! Tags on Quay's paths: the tag history, moving, expiring, locking,
//! deleting and restoring a tag, and where a manifest's blobs are held.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::*;
use crate::error::{ApiError, ErrorBody, ErrorCode};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/repository/{namespace}/{repository}/tag/", get(tag_list))
        .route("/api/v1/repository/{namespace}/{repository}/tag/{tag}", put(tag_update).delete(tag_delete))
        .route("/api/v1/repository/{namespace}/{repository}/tag/{tag}/restore", post(tag_restore))
        .route("/api/v1/repository/{namespace}/{repository}/manifest/{digest}/placement", get(manifest_placement))
}

#[derive(OpenApi)]
#[openapi(paths(tag_list, tag_update, tag_delete, tag_restore, manifest_placement))]
pub(super) struct TagDoc;

/// `GET /repository/{r}/tag/`: Quay's tag history query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TagListQuery {
    /// Only the live rows (default: history too).
    #[serde(rename = "onlyActiveTags", default)]
    pub only_active_tags: bool,
    /// Only the rows of this tag.
    #[serde(rename = "specificTag")]
    pub specific_tag: Option<String>,
    /// `like:TEXT` (the name contains it) or `eq:NAME`.
    pub filter_tag_name: Option<String>,
    /// Rows per page, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// From 1 (default).
    pub page: Option<u32>,
}

/// One row of a tag's history (times in seconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagView {
    pub name: String,
    pub manifest_digest: String,
    pub is_manifest_list: bool,
    /// The image's bytes (config and layers), when the manifest is still stored.
    pub size: Option<u64>,
    pub start_ts: u64,
    /// When the row ended, or will end by its expiration; none while live without one.
    pub end_ts: Option<u64>,
    pub last_modified: u64,
    pub expiration: Option<u64>,
    /// The row was brought back by a restore.
    pub reversion: bool,
    pub immutable: bool,
    /// The manifest's vulnerability scan: its status and, once scanned,
    /// how many vulnerabilities of each severity it has. `null` when this
    /// node has no scanner or the manifest was never queued.
    pub security: Option<SecuritySummary>,
}

/// A manifest's scan in the tag list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecuritySummary {
    /// `queued`, `scanned`, `failed` or `unsupported`.
    pub status: String,
    /// Vulnerabilities found by severity (`Critical`, `High`, `Medium`,
    /// `Low`, `Negligible`, `Unknown`); only severities present.
    pub counts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagList {
    pub tags: Vec<TagView>,
    pub page: u32,
    pub has_additional: bool,
}

/// `PUT /repository/{r}/tag/{tag}`: exactly one of the fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagUpdate {
    /// Seconds since the epoch, or `null` to clear.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub expiration: Option<Option<u64>>,
    /// Lock (needs write) or unlock (needs admin) the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Create the tag, or move it, to this manifest of the repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
}

/// `POST /repository/{r}/tag/{tag}/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagRestore {
    pub manifest_digest: String,
}

/// `GET /repository/{r}/manifest/{digest}/placement`: where each blob of
/// an image is held, from the blob records every node has.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ManifestPlacement {
    pub manifest_digest: String,
    /// Each blob once (an index's children's blobs included).
    pub blobs: Vec<BlobPlacement>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlobPlacement {
    pub digest: String,
    /// `config` or `layer`.
    pub kind: String,
    pub size: u64,
    /// Nodes with a verified copy, by id.
    pub holders: Vec<BlobHolder>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlobHolder {
    pub node: u64,
    /// Empty for a node that has since been removed from the cluster.
    pub region: String,
}

#[derive(Deserialize)]
struct RepoTagPath {
    namespace: String,
    repository: String,
    tag: String,
}

impl RepoTagPath {
    fn name(&self) -> String {
        repo_name(&self.namespace, &self.repository)
    }

    /// The tag, if it is a well-formed one.
    fn tag(&self) -> Result<&str, ApiError> {
        if crate::endpoint::valid_tag(&self.tag) {
            Ok(&self.tag)
        } else {
            Err(ApiError::new(ErrorCode::BadRequest, format!("tag {:?} is invalid", self.tag)))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/tag/", tag = "tag",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), TagListQuery),
    responses((status = 200, body = TagList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tag_list(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    ApiQuery(q): ApiQuery<TagListQuery>,
    WhoForTags(w): WhoForTags,
) -> Result<Json<TagList>, ApiError> {
    Ok(Json(id.list_tags(&w, &p.name(), q).await?))
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/tag/{tag}", tag = "tag",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("tag" = String, Path, description = "Tag")),
    request_body = TagUpdate,
    responses((status = 201, description = "Changed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn tag_update(
    State(id): State<Shared>,
    Path(p): Path<RepoTagPath>,
    WhoForTags(w): WhoForTags,
    b: Result<Json<TagUpdate>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    id.update_tag(&w, &p.name(), p.tag()?, body(b)?).await?;
    Ok(StatusCode::CREATED)
}

/// Quay's tag delete: the tag stops resolving at once, and its row moves
/// to the history, from where a restore brings it back.
#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/tag/{tag}", tag = "tag",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("tag" = String, Path, description = "Tag")),
    responses((status = 204, description = "Deleted (kept in the history)"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn tag_delete(State(id): State<Shared>, Path(p): Path<RepoTagPath>, WhoForTags(w): WhoForTags) -> Result<StatusCode, ApiError> {
    id.delete_tag(&w, &p.name(), p.tag()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/tag/{tag}/restore", tag = "tag",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("tag" = String, Path, description = "Tag")),
    request_body = TagRestore,
    responses((status = 200, body = Success), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn tag_restore(
    State(id): State<Shared>,
    Path(p): Path<RepoTagPath>,
    WhoForTags(w): WhoForTags,
    b: Result<Json<TagRestore>, JsonRejection>,
) -> Result<Json<Success>, ApiError> {
    id.restore_tag(&w, &p.name(), p.tag()?, body(b)?).await?;
    Ok(Json(Success { success: true }))
}

#[derive(Deserialize)]
struct RepoDigestPath {
    namespace: String,
    repository: String,
    digest: String,
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/manifest/{digest}/placement", tag = "tag",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("digest" = String, Path, description = "Manifest digest")),
    responses((status = 200, body = ManifestPlacement), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn manifest_placement(State(id): State<Shared>, Path(p): Path<RepoDigestPath>, Who(w): Who) -> Result<Json<ManifestPlacement>, ApiError> {
    Ok(Json(id.manifest_placement(&w, &repo_name(&p.namespace, &p.repository), &p.digest).await?))
}
