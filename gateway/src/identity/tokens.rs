//! The caller's application tokens on Quay's paths (`/user/apptoken`):
//! listing, creating (the secret is shown once), reading and revoking.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::*;
use crate::error::{ApiError, ErrorBody};

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/api/v1/user/apptoken", get(token_list).post(token_create)).route("/api/v1/user/apptoken/{uuid}", get(token_get).delete(token_delete))
}

#[derive(OpenApi)]
#[openapi(paths(token_list, token_create, token_get, token_delete))]
pub(super) struct TokenDoc;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppTokenCreate {
    pub title: String,
    /// Quay scopes (`repo:read`, `repo:write`, `repo:admin`, `repo:create`,
    /// `user:read`, `user:admin`, `org:admin`, `super:user`); default: all
    /// but `super:user`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Lifetime in seconds; none: until deleted.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppTokenView {
    pub uuid: String,
    pub title: String,
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; absent: never.
    pub expiration: Option<String>,
    /// The secret, only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppTokenCreated {
    pub token: AppTokenView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppTokenList {
    pub tokens: Vec<AppTokenView>,
}

#[utoipa::path(get, path = "/api/v1/user/apptoken", tag = "token", responses((status = 200, body = AppTokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn token_list(State(id): State<Shared>, Who(w): Who) -> Result<Json<AppTokenList>, ApiError> {
    Ok(Json(id.list_tokens(&w).await?))
}

#[utoipa::path(post, path = "/api/v1/user/apptoken", tag = "token", request_body = AppTokenCreate,
    responses((status = 201, body = AppTokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn token_create(
    State(id): State<Shared>,
    Who(w): Who,
    b: Result<Json<AppTokenCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<AppTokenCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_token(&w, body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/user/apptoken/{uuid}", tag = "token", params(("uuid" = String, Path, description = "Token id")),
    responses((status = 200, body = AppTokenView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn token_get(State(id): State<Shared>, Path(uuid): Path<String>, Who(w): Who) -> Result<Json<AppTokenView>, ApiError> {
    let list = id.list_tokens(&w).await?;
    list.tokens.into_iter().find(|t| t.uuid == uuid).map(Json).ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no token {uuid}")))
}

#[utoipa::path(delete, path = "/api/v1/user/apptoken/{uuid}", tag = "token", params(("uuid" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn token_delete(State(id): State<Shared>, Path(uuid): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_token(&w, &uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
