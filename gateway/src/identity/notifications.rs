//! Repository and organization notifications on Quay's paths (the
//! shapes are `crate::notifications`').

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;

use super::*;
use crate::error::{ApiError, ErrorBody};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/repository/{namespace}/{repository}/notification/", get(repo_notification_list).post(repo_notification_create))
        .route(
            "/api/v1/repository/{namespace}/{repository}/notification/{uuid}",
            get(repo_notification_get).delete(repo_notification_delete).post(repo_notification_reset),
        )
        .route("/api/v1/repository/{namespace}/{repository}/notification/{uuid}/test", post(repo_notification_test))
        .route("/api/v1/organization/{org}/notifications", get(org_notification_list).post(org_notification_create))
        .route("/api/v1/organization/{org}/notifications/{uuid}", get(org_notification_get).delete(org_notification_delete).post(org_notification_reset))
        .route("/api/v1/organization/{org}/notifications/{uuid}/test", post(org_notification_test))
}

#[derive(OpenApi)]
#[openapi(paths(
    repo_notification_list,
    repo_notification_create,
    repo_notification_get,
    repo_notification_delete,
    repo_notification_reset,
    repo_notification_test,
    org_notification_list,
    org_notification_create,
    org_notification_get,
    org_notification_delete,
    org_notification_reset,
    org_notification_test
))]
pub(super) struct NotificationDoc;

#[derive(Deserialize)]
struct RepoUuidPath {
    namespace: String,
    repository: String,
    uuid: String,
}

impl RepoUuidPath {
    fn target(&self) -> NotificationTarget {
        NotificationTarget::Repository(repo_name(&self.namespace, &self.repository))
    }
}

fn repo_target(p: &RepoPath) -> NotificationTarget {
    NotificationTarget::Repository(p.name())
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/notification/", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = NotificationList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_notification_list(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<Json<NotificationList>, ApiError> {
    Ok(Json(id.list_notifications(&w, &repo_target(&p)).await?))
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/notification/", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = NotificationCreate,
    responses((status = 201, body = NotificationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_notification_create(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<NotificationCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<NotificationView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_notification(&w, &repo_target(&p), body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/notification/{uuid}", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 200, body = NotificationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_notification_get(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<Json<NotificationView>, ApiError> {
    Ok(Json(id.get_notification(&w, &p.target(), &p.uuid).await?))
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/notification/{uuid}", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 204, description = "Deleted with its waiting events"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_notification_delete(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_notification(&w, &p.target(), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/notification/{uuid}", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 204, description = "Failure count reset"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_notification_reset(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.reset_notification(&w, &p.target(), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/notification/{uuid}/test", tag = "notification",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 200, body = Object, description = "The sample event is queued"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn repo_notification_test(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<Json<serde_json::Value>, ApiError> {
    id.test_notification(&w, &p.target(), &p.uuid).await?;
    Ok(Json(serde_json::json!({})))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/notifications", tag = "notification", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = NotificationList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_notification_list(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<NotificationList>, ApiError> {
    Ok(Json(id.list_notifications(&w, &NotificationTarget::Namespace(org)).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/notifications", tag = "notification", params(("org" = String, Path, description = NS)),
    request_body = NotificationCreate,
    responses((status = 201, body = NotificationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_notification_create(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<NotificationCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<NotificationView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_notification(&w, &NotificationTarget::Namespace(org), body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/notifications/{uuid}", tag = "notification",
    params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 200, body = NotificationView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_notification_get(State(id): State<Shared>, Path((org, uuid)): Path<(String, String)>, Who(w): Who) -> Result<Json<NotificationView>, ApiError> {
    Ok(Json(id.get_notification(&w, &NotificationTarget::Namespace(org), &uuid).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/notifications/{uuid}", tag = "notification",
    params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 204, description = "Deleted with its waiting events"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_notification_delete(State(id): State<Shared>, Path((org, uuid)): Path<(String, String)>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_notification(&w, &NotificationTarget::Namespace(org), &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/notifications/{uuid}", tag = "notification",
    params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 204, description = "Failure count reset"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_notification_reset(State(id): State<Shared>, Path((org, uuid)): Path<(String, String)>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.reset_notification(&w, &NotificationTarget::Namespace(org), &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/notifications/{uuid}/test", tag = "notification",
    params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Notification id")),
    responses((status = 200, body = Object, description = "The sample event is queued"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn org_notification_test(State(id): State<Shared>, Path((org, uuid)): Path<(String, String)>, Who(w): Who) -> Result<Json<serde_json::Value>, ApiError> {
    id.test_notification(&w, &NotificationTarget::Namespace(org), &uuid).await?;
    Ok(Json(serde_json::json!({})))
}
