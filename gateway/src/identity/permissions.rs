//! Repository permissions on Quay's paths: a user's or a team's role on
//! a repository.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::*;
use crate::access::Access;
use crate::error::{ApiError, ErrorBody, ErrorCode};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/repository/{namespace}/{repository}/permissions/user/", get(perm_user_list))
        .route("/api/v1/repository/{namespace}/{repository}/permissions/user/{name}", get(perm_user_get).put(perm_user_put).delete(perm_user_delete))
        .route("/api/v1/repository/{namespace}/{repository}/permissions/team/", get(perm_team_list))
        .route("/api/v1/repository/{namespace}/{repository}/permissions/team/{name}", get(perm_team_get).put(perm_team_put).delete(perm_team_delete))
}

#[derive(OpenApi)]
#[openapi(paths(perm_user_list, perm_user_get, perm_user_put, perm_user_delete, perm_team_list, perm_team_get, perm_team_put, perm_team_delete))]
pub(super) struct PermissionDoc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GranteeKind {
    User,
    Team,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// `read`, `write` or `admin`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PermissionView {
    pub name: String,
    pub role: String,
    /// For user permissions: the grantee is a robot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_robot: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PermissionList {
    pub permissions: BTreeMap<String, PermissionView>,
}

#[derive(Deserialize)]
struct RepoGranteePath {
    namespace: String,
    repository: String,
    name: String,
}

async fn perm_list(id: &Shared, w: &Access, p: &RepoPath, kind: GranteeKind) -> Result<Json<PermissionList>, ApiError> {
    Ok(Json(id.list_permissions(w, &p.name(), kind).await?))
}

async fn perm_get(id: &Shared, w: &Access, p: RepoGranteePath, kind: GranteeKind) -> Result<Json<PermissionView>, ApiError> {
    let mut list = id.list_permissions(w, &repo_name(&p.namespace, &p.repository), kind).await?;
    list.permissions.remove(&p.name).map(Json).ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("{} has no permission here", p.name)))
}

async fn perm_put(
    id: &Shared,
    w: &Access,
    p: RepoGranteePath,
    kind: GranteeKind,
    b: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<Json<PermissionView>, ApiError> {
    let role = body(b)?.role;
    let view = id.set_permission(w, &repo_name(&p.namespace, &p.repository), kind, &p.name, Some(&role)).await?;
    view.map(Json).ok_or_else(|| ApiError::new(ErrorCode::Internal, "the permission was set but not returned"))
}

async fn perm_delete(id: &Shared, w: &Access, p: RepoGranteePath, kind: GranteeKind) -> Result<StatusCode, ApiError> {
    id.set_permission(w, &repo_name(&p.namespace, &p.repository), kind, &p.name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/permissions/user/", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = PermissionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_user_list(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<Json<PermissionList>, ApiError> {
    perm_list(&id, &w, &p, GranteeKind::User).await
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/permissions/user/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "User or robot")),
    responses((status = 200, body = PermissionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_user_get(State(id): State<Shared>, Path(p): Path<RepoGranteePath>, Who(w): Who) -> Result<Json<PermissionView>, ApiError> {
    perm_get(&id, &w, p, GranteeKind::User).await
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/permissions/user/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "User or robot")),
    request_body = RoleRequest,
    responses((status = 200, body = PermissionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_user_put(
    State(id): State<Shared>,
    Path(p): Path<RepoGranteePath>,
    Who(w): Who,
    b: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<Json<PermissionView>, ApiError> {
    perm_put(&id, &w, p, GranteeKind::User, b).await
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/permissions/user/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "User or robot")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_user_delete(State(id): State<Shared>, Path(p): Path<RepoGranteePath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    perm_delete(&id, &w, p, GranteeKind::User).await
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/permissions/team/", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = PermissionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_team_list(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<Json<PermissionList>, ApiError> {
    perm_list(&id, &w, &p, GranteeKind::Team).await
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/permissions/team/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "Team")),
    responses((status = 200, body = PermissionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_team_get(State(id): State<Shared>, Path(p): Path<RepoGranteePath>, Who(w): Who) -> Result<Json<PermissionView>, ApiError> {
    perm_get(&id, &w, p, GranteeKind::Team).await
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/permissions/team/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "Team")),
    request_body = RoleRequest,
    responses((status = 200, body = PermissionView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_team_put(
    State(id): State<Shared>,
    Path(p): Path<RepoGranteePath>,
    Who(w): Who,
    b: Result<Json<RoleRequest>, JsonRejection>,
) -> Result<Json<PermissionView>, ApiError> {
    perm_put(&id, &w, p, GranteeKind::Team, b).await
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/permissions/team/{name}", tag = "permission",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("name" = String, Path, description = "Team")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn perm_team_delete(State(id): State<Shared>, Path(p): Path<RepoGranteePath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    perm_delete(&id, &w, p, GranteeKind::Team).await
}
