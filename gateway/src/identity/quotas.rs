//! Namespace quotas on Quay's paths: one quota per namespace, with
//! Warning and Reject limits as percentages of it, and the namespace's
//! usage (per repository too). Superusers set them; members read them.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{body, Shared, Who, NS};
use crate::error::{ApiError, ErrorBody};

/// A quota's size: `limit_bytes`, or `limit` as text (`10 GiB`, `500 MB`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    #[serde(default)]
    pub limit_bytes: Option<u64>,
    #[serde(default)]
    pub limit: Option<String>,
}

/// A limit of a quota.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimitBody {
    /// `Warning` (recorded) or `Reject` (pushes over it are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 to 100, of the quota.
    pub threshold_percent: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaLimitView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub limit_percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    /// The distinct blob bytes the namespace's manifests reference
    /// (a deleted tag's image counts until it leaves the time machine).
    pub bytes: u64,
    /// Each repository's share (a blob shared by two counts in both).
    pub repositories: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaView {
    /// `default` for the cluster's default quota, which governs a
    /// namespace without one of its own.
    pub id: String,
    pub limit_bytes: u64,
    /// The size as text, in binary units.
    pub limit: String,
    pub limits: Vec<QuotaLimitView>,
    pub usage: QuotaUsage,
}

/// The cluster's default Reject quota, for namespaces without their own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefaultQuota {
    /// None: no default.
    pub limit_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct OrgQuotaPath {
    org: String,
    id: String,
}

#[derive(Deserialize)]
struct OrgLimitPath {
    org: String,
    id: String,
    limit_id: String,
}

/// The quota routes under `/api/v1`.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/user/quota", get(user_quota_list))
        .route("/api/v1/superuser/quota/default", get(default_quota_get).put(default_quota_put).delete(default_quota_delete))
        .route("/api/v1/organization/{org}/quota", get(org_quota_list).post(org_quota_create))
        .route("/api/v1/organization/{org}/quota/{id}", put(org_quota_update).delete(org_quota_delete))
        .route("/api/v1/organization/{org}/quota/{id}/limit", post(org_quota_limit_create))
        .route("/api/v1/organization/{org}/quota/{id}/limit/{limit_id}", delete(org_quota_limit_delete))
}

#[derive(OpenApi)]
#[openapi(paths(
    default_quota_get,
    default_quota_put,
    default_quota_delete,
    user_quota_list,
    org_quota_list,
    org_quota_create,
    org_quota_update,
    org_quota_delete,
    org_quota_limit_create,
    org_quota_limit_delete
))]
pub(super) struct QuotaDoc;

const ID: &str = "Quota id";

#[utoipa::path(get, path = "/api/v1/superuser/quota/default", tag = "quota",
    responses((status = 200, body = DefaultQuota), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn default_quota_get(State(id): State<Shared>, Who(w): Who) -> Result<Json<DefaultQuota>, ApiError> {
    Ok(Json(id.default_quota(&w).await?))
}

#[utoipa::path(put, path = "/api/v1/superuser/quota/default", tag = "quota", request_body = QuotaBody,
    responses((status = 200, body = DefaultQuota), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn default_quota_put(State(id): State<Shared>, Who(w): Who, b: Result<Json<QuotaBody>, JsonRejection>) -> Result<Json<DefaultQuota>, ApiError> {
    Ok(Json(id.set_default_quota(&w, Some(body(b)?)).await?))
}

#[utoipa::path(delete, path = "/api/v1/superuser/quota/default", tag = "quota",
    responses((status = 204, description = "No default any more"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn default_quota_delete(State(id): State<Shared>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.set_default_quota(&w, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/user/quota", tag = "quota",
    responses((status = 200, body = Vec<QuotaView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn user_quota_list(State(id): State<Shared>, Who(w): Who) -> Result<Json<Vec<QuotaView>>, ApiError> {
    Ok(Json(id.list_quotas(&w, None).await?))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/quota", tag = "quota", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = Vec<QuotaView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_quota_list(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<Vec<QuotaView>>, ApiError> {
    Ok(Json(id.list_quotas(&w, Some(&org)).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/quota", tag = "quota", params(("org" = String, Path, description = NS)), request_body = QuotaBody,
    responses((status = 201, body = QuotaView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn org_quota_create(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<QuotaBody>, JsonRejection>,
) -> Result<(StatusCode, Json<QuotaView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_quota(&w, &org, body(b)?).await?)))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/quota/{id}", tag = "quota", params(("org" = String, Path, description = NS), ("id" = String, Path, description = ID)), request_body = QuotaBody,
    responses((status = 200, body = QuotaView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_quota_update(
    State(id): State<Shared>,
    Path(p): Path<OrgQuotaPath>,
    Who(w): Who,
    b: Result<Json<QuotaBody>, JsonRejection>,
) -> Result<Json<QuotaView>, ApiError> {
    Ok(Json(id.update_quota(&w, &p.org, &p.id, body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/quota/{id}", tag = "quota", params(("org" = String, Path, description = NS), ("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_quota_delete(State(id): State<Shared>, Path(p): Path<OrgQuotaPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_quota(&w, &p.org, &p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/quota/{id}/limit", tag = "quota", params(("org" = String, Path, description = NS), ("id" = String, Path, description = ID)),
    request_body = QuotaLimitBody,
    responses((status = 201, body = QuotaView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_quota_limit_create(
    State(id): State<Shared>,
    Path(p): Path<OrgQuotaPath>,
    Who(w): Who,
    b: Result<Json<QuotaLimitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<QuotaView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_quota_limit(&w, &p.org, &p.id, body(b)?).await?)))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/quota/{id}/limit/{limit_id}", tag = "quota",
    params(("org" = String, Path, description = NS), ("id" = String, Path, description = ID), ("limit_id" = String, Path, description = "Limit id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_quota_limit_delete(State(id): State<Shared>, Path(p): Path<OrgLimitPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_quota_limit(&w, &p.org, &p.id, &p.limit_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
