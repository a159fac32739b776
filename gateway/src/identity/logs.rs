//! Usage logs on Quay's paths: the caller's own, an organization's, a
//! repository's, and (for superusers) everyone's.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::*;
use crate::access::Access;
use crate::error::{ApiError, ErrorBody};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/user/logs", get(user_logs))
        .route("/api/v1/superuser/logs", get(all_logs))
        .route("/api/v1/organization/{org}/logs", get(org_logs))
        .route("/api/v1/repository/{namespace}/{repository}/logs", get(repo_logs))
}

#[derive(OpenApi)]
#[openapi(paths(user_logs, all_logs, org_logs, repo_logs))]
pub(super) struct LogDoc;

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Start of the window: RFC 3339, `MM/DD/YYYY` (Quay) or ms since the epoch. Default: 7 days ago.
    pub starttime: Option<String>,
    /// End of the window (exclusive), same forms. Default: now.
    pub endtime: Option<String>,
    /// Only records of this kind (`push_repo`, …).
    pub kind: Option<String>,
    /// The `next_page` of the previous answer (pages go back in time).
    pub next_page: Option<String>,
}

/// Which records a log query covers, resolved from the path.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub namespace: Option<String>,
    pub repo: Option<String>,
    /// The caller's own actions (`/user/logs`).
    pub performer_is_caller: bool,
    pub query: LogQuery,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Performer {
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogView {
    pub kind: String,
    /// RFC 3339.
    pub datetime: String,
    pub performer: Performer,
    pub namespace: Option<String>,
    pub repository: Option<String>,
    pub ip: Option<String>,
    pub node: u64,
    pub region: String,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub start_time: String,
    pub end_time: String,
    pub logs: Vec<LogView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
}

async fn logs(id: &Shared, w: &Access, filter: LogFilter) -> Result<Json<LogPage>, ApiError> {
    Ok(Json(id.logs(w, filter).await?))
}

#[utoipa::path(get, path = "/api/v1/user/logs", tag = "logs", params(LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn user_logs(State(id): State<Shared>, Query(q): Query<LogQuery>, Who(w): Who) -> Result<Json<LogPage>, ApiError> {
    logs(&id, &w, LogFilter { performer_is_caller: true, query: q, ..Default::default() }).await
}

#[utoipa::path(get, path = "/api/v1/superuser/logs", tag = "logs", params(LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn all_logs(State(id): State<Shared>, Query(q): Query<LogQuery>, Who(w): Who) -> Result<Json<LogPage>, ApiError> {
    logs(&id, &w, LogFilter { query: q, ..Default::default() }).await
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/logs", tag = "logs", params(("org" = String, Path, description = NS), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn org_logs(State(id): State<Shared>, Path(org): Path<String>, Query(q): Query<LogQuery>, Who(w): Who) -> Result<Json<LogPage>, ApiError> {
    logs(&id, &w, LogFilter { namespace: Some(org), query: q, ..Default::default() }).await
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/logs", tag = "logs",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn repo_logs(State(id): State<Shared>, Path(p): Path<RepoPath>, Query(q): Query<LogQuery>, Who(w): Who) -> Result<Json<LogPage>, ApiError> {
    logs(&id, &w, LogFilter { namespace: Some(p.namespace.clone()), repo: Some(p.name()), query: q, ..Default::default() }).await
}
