//! Tag policies on Quay's paths: immutability policies and auto-prune
//! policies of an organization (`/organization/{org}/…`) or of a
//! repository (`/repository/{r}/…`). The rules (full-match patterns,
//! locking existing tags, which tags a prune takes) are the state
//! machine's; the node checks the caller administers the scope.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{body, Shared, Who, NS, REPO};
use crate::error::{ApiError, ErrorBody};

/// Whose policies: a namespace's, or a repository's (`ns/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyScope {
    Namespace(String),
    Repository(String),
}

fn yes() -> bool {
    true
}

/// An immutability policy as created or changed: tags whose whole name
/// the pattern matches (or, with `tagPatternMatches: false`, does not
/// match) are immutable, the live ones at once and new ones as pushed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImmutabilityPolicyBody {
    /// A regular expression matched against the whole tag name.
    #[serde(rename = "tagPattern")]
    pub tag_pattern: String,
    /// Default true: the policy covers the names the pattern matches.
    #[serde(rename = "tagPatternMatches", default = "yes")]
    pub tag_pattern_matches: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImmutabilityPolicyView {
    pub uuid: String,
    #[serde(rename = "tagPattern")]
    pub tag_pattern: String,
    #[serde(rename = "tagPatternMatches")]
    pub tag_pattern_matches: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImmutabilityPolicyList {
    pub policies: Vec<ImmutabilityPolicyView>,
}

/// An auto-prune policy as created or changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoPrunePolicyBody {
    /// `number_of_tags` (keep the newest `value` tags) or `creation_date`
    /// (delete tags pushed longer than `value` ago).
    pub method: String,
    /// A positive integer for `number_of_tags`; for `creation_date` a
    /// lifetime (`7d`: an integer and s, m, h, d, w or y) or seconds.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Only tags whose whole name this regular expression matches (or,
    /// with `tagPatternMatches: false`, does not match).
    #[serde(rename = "tagPattern", default)]
    pub tag_pattern: Option<String>,
    #[serde(rename = "tagPatternMatches", default)]
    pub tag_pattern_matches: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AutoPrunePolicyView {
    pub uuid: String,
    pub method: String,
    /// The number of tags, or the age in seconds.
    pub value: u64,
    #[serde(rename = "tagPattern", skip_serializing_if = "Option::is_none")]
    pub tag_pattern: Option<String>,
    #[serde(rename = "tagPatternMatches")]
    pub tag_pattern_matches: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AutoPrunePolicyList {
    pub policies: Vec<AutoPrunePolicyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyCreated {
    pub uuid: String,
}

#[derive(Deserialize)]
struct OrgUuidPath {
    org: String,
    uuid: String,
}

#[derive(Deserialize)]
struct RepoPolicyPath {
    namespace: String,
    repository: String,
}

#[derive(Deserialize)]
struct RepoUuidPath {
    namespace: String,
    repository: String,
    uuid: String,
}

fn repo_scope(namespace: &str, repository: &str) -> PolicyScope {
    PolicyScope::Repository(format!("{namespace}/{repository}"))
}

/// The policy routes under `/api/v1`.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/organization/{org}/immutabilitypolicy/", get(org_immutability_list).post(org_immutability_create))
        .route("/api/v1/organization/{org}/immutabilitypolicy/{uuid}", get(org_immutability_get).put(org_immutability_put).delete(org_immutability_delete))
        .route("/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/", get(repo_immutability_list).post(repo_immutability_create))
        .route(
            "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/{uuid}",
            get(repo_immutability_get).put(repo_immutability_put).delete(repo_immutability_delete),
        )
        .route("/api/v1/organization/{org}/autoprunepolicy/", get(org_autoprune_list).post(org_autoprune_create))
        .route("/api/v1/organization/{org}/autoprunepolicy/{uuid}", get(org_autoprune_get).put(org_autoprune_put).delete(org_autoprune_delete))
        .route("/api/v1/repository/{namespace}/{repository}/autoprunepolicy/", get(repo_autoprune_list).post(repo_autoprune_create))
        .route(
            "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/{uuid}",
            get(repo_autoprune_get).put(repo_autoprune_put).delete(repo_autoprune_delete),
        )
}

#[derive(OpenApi)]
#[openapi(paths(
    org_immutability_list,
    org_immutability_create,
    org_immutability_get,
    org_immutability_put,
    org_immutability_delete,
    repo_immutability_list,
    repo_immutability_create,
    repo_immutability_get,
    repo_immutability_put,
    repo_immutability_delete,
    org_autoprune_list,
    org_autoprune_create,
    org_autoprune_get,
    org_autoprune_put,
    org_autoprune_delete,
    repo_autoprune_list,
    repo_autoprune_create,
    repo_autoprune_get,
    repo_autoprune_put,
    repo_autoprune_delete
))]
pub(super) struct PolicyDoc;

#[utoipa::path(get, path = "/api/v1/organization/{org}/immutabilitypolicy/", tag = "policy", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = ImmutabilityPolicyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_immutability_list(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<ImmutabilityPolicyList>, ApiError> {
    Ok(Json(id.list_immutability_policies(&w, &PolicyScope::Namespace(org)).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/immutabilitypolicy/", tag = "policy", params(("org" = String, Path, description = NS)), request_body = ImmutabilityPolicyBody,
    responses((status = 201, body = PolicyCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_immutability_create(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<ImmutabilityPolicyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<PolicyCreated>), ApiError> {
    let view = id.put_immutability_policy(&w, &PolicyScope::Namespace(org), None, body(b)?).await?;
    Ok((StatusCode::CREATED, Json(PolicyCreated { uuid: view.uuid })))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/immutabilitypolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 200, body = ImmutabilityPolicyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_immutability_get(State(id): State<Shared>, Path(p): Path<OrgUuidPath>, Who(w): Who) -> Result<Json<ImmutabilityPolicyView>, ApiError> {
    Ok(Json(id.get_immutability_policy(&w, &PolicyScope::Namespace(p.org), &p.uuid).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/immutabilitypolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")), request_body = ImmutabilityPolicyBody,
    responses((status = 200, body = ImmutabilityPolicyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_immutability_put(
    State(id): State<Shared>,
    Path(p): Path<OrgUuidPath>,
    Who(w): Who,
    b: Result<Json<ImmutabilityPolicyBody>, JsonRejection>,
) -> Result<Json<ImmutabilityPolicyView>, ApiError> {
    Ok(Json(id.put_immutability_policy(&w, &PolicyScope::Namespace(p.org), Some(&p.uuid), body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/immutabilitypolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_immutability_delete(State(id): State<Shared>, Path(p): Path<OrgUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_immutability_policy(&w, &PolicyScope::Namespace(p.org), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = ImmutabilityPolicyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_immutability_list(State(id): State<Shared>, Path(p): Path<RepoPolicyPath>, Who(w): Who) -> Result<Json<ImmutabilityPolicyList>, ApiError> {
    Ok(Json(id.list_immutability_policies(&w, &repo_scope(&p.namespace, &p.repository)).await?))
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = ImmutabilityPolicyBody,
    responses((status = 201, body = PolicyCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_immutability_create(
    State(id): State<Shared>,
    Path(p): Path<RepoPolicyPath>,
    Who(w): Who,
    b: Result<Json<ImmutabilityPolicyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<PolicyCreated>), ApiError> {
    let view = id.put_immutability_policy(&w, &repo_scope(&p.namespace, &p.repository), None, body(b)?).await?;
    Ok((StatusCode::CREATED, Json(PolicyCreated { uuid: view.uuid })))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 200, body = ImmutabilityPolicyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_immutability_get(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<Json<ImmutabilityPolicyView>, ApiError> {
    Ok(Json(id.get_immutability_policy(&w, &repo_scope(&p.namespace, &p.repository), &p.uuid).await?))
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")), request_body = ImmutabilityPolicyBody,
    responses((status = 200, body = ImmutabilityPolicyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_immutability_put(
    State(id): State<Shared>,
    Path(p): Path<RepoUuidPath>,
    Who(w): Who,
    b: Result<Json<ImmutabilityPolicyBody>, JsonRejection>,
) -> Result<Json<ImmutabilityPolicyView>, ApiError> {
    Ok(Json(id.put_immutability_policy(&w, &repo_scope(&p.namespace, &p.repository), Some(&p.uuid), body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/immutabilitypolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_immutability_delete(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_immutability_policy(&w, &repo_scope(&p.namespace, &p.repository), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/autoprunepolicy/", tag = "policy", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = AutoPrunePolicyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_autoprune_list(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<AutoPrunePolicyList>, ApiError> {
    Ok(Json(id.list_autoprune_policies(&w, &PolicyScope::Namespace(org)).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/autoprunepolicy/", tag = "policy", params(("org" = String, Path, description = NS)), request_body = AutoPrunePolicyBody,
    responses((status = 201, body = PolicyCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_autoprune_create(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<AutoPrunePolicyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<PolicyCreated>), ApiError> {
    let view = id.put_autoprune_policy(&w, &PolicyScope::Namespace(org), None, body(b)?).await?;
    Ok((StatusCode::CREATED, Json(PolicyCreated { uuid: view.uuid })))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/autoprunepolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 200, body = AutoPrunePolicyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_autoprune_get(State(id): State<Shared>, Path(p): Path<OrgUuidPath>, Who(w): Who) -> Result<Json<AutoPrunePolicyView>, ApiError> {
    Ok(Json(id.get_autoprune_policy(&w, &PolicyScope::Namespace(p.org), &p.uuid).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/autoprunepolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")), request_body = AutoPrunePolicyBody,
    responses((status = 200, body = AutoPrunePolicyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_autoprune_put(
    State(id): State<Shared>,
    Path(p): Path<OrgUuidPath>,
    Who(w): Who,
    b: Result<Json<AutoPrunePolicyBody>, JsonRejection>,
) -> Result<Json<AutoPrunePolicyView>, ApiError> {
    Ok(Json(id.put_autoprune_policy(&w, &PolicyScope::Namespace(p.org), Some(&p.uuid), body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/autoprunepolicy/{uuid}", tag = "policy", params(("org" = String, Path, description = NS), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_autoprune_delete(State(id): State<Shared>, Path(p): Path<OrgUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_autoprune_policy(&w, &PolicyScope::Namespace(p.org), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = AutoPrunePolicyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_autoprune_list(State(id): State<Shared>, Path(p): Path<RepoPolicyPath>, Who(w): Who) -> Result<Json<AutoPrunePolicyList>, ApiError> {
    Ok(Json(id.list_autoprune_policies(&w, &repo_scope(&p.namespace, &p.repository)).await?))
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = AutoPrunePolicyBody,
    responses((status = 201, body = PolicyCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_autoprune_create(
    State(id): State<Shared>,
    Path(p): Path<RepoPolicyPath>,
    Who(w): Who,
    b: Result<Json<AutoPrunePolicyBody>, JsonRejection>,
) -> Result<(StatusCode, Json<PolicyCreated>), ApiError> {
    let view = id.put_autoprune_policy(&w, &repo_scope(&p.namespace, &p.repository), None, body(b)?).await?;
    Ok((StatusCode::CREATED, Json(PolicyCreated { uuid: view.uuid })))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 200, body = AutoPrunePolicyView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_autoprune_get(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<Json<AutoPrunePolicyView>, ApiError> {
    Ok(Json(id.get_autoprune_policy(&w, &repo_scope(&p.namespace, &p.repository), &p.uuid).await?))
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")), request_body = AutoPrunePolicyBody,
    responses((status = 200, body = AutoPrunePolicyView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_autoprune_put(
    State(id): State<Shared>,
    Path(p): Path<RepoUuidPath>,
    Who(w): Who,
    b: Result<Json<AutoPrunePolicyBody>, JsonRejection>,
) -> Result<Json<AutoPrunePolicyView>, ApiError> {
    Ok(Json(id.put_autoprune_policy(&w, &repo_scope(&p.namespace, &p.repository), Some(&p.uuid), body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}/autoprunepolicy/{uuid}", tag = "policy", params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO), ("uuid" = String, Path, description = "Policy id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_autoprune_delete(State(id): State<Shared>, Path(p): Path<RepoUuidPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_autoprune_policy(&w, &repo_scope(&p.namespace, &p.repository), &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}
