//! Proxy-cache organizations on Quay's path and in Quay's shapes:
//! `GET/POST/DELETE /organization/{org}/proxycache`.
//!
//! A child of `identity`: the same authenticated caller ([`Who`]), paths
//! and error shapes. The node decides what the caller may do and keeps
//! the upstream password sealed; no view ever carries it.

use super::*;

/// A proxy-cache configuration as `POST` takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProxyCacheRequest {
    /// `host[:port]`, optionally with a path prefix (`quay.io/org`): a pull
    /// of `org/library/alpine` fetches `upstream_registry/library/alpine`.
    #[serde(default)]
    pub upstream_registry: Option<String>,
    #[serde(default)]
    pub upstream_registry_username: Option<String>,
    /// Stored sealed, never shown; needs a username.
    #[serde(default)]
    pub upstream_registry_password: Option<String>,
    /// Seconds a cached tag is served before the upstream is asked again
    /// (default 86400).
    #[serde(default)]
    pub expiration_s: Option<i64>,
    /// TLS verification off (plain HTTP allowed) toward the upstream.
    #[serde(default)]
    pub insecure: Option<bool>,
}

/// A proxy-cache configuration as `GET` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProxyCacheView {
    pub upstream_registry: String,
    pub upstream_registry_username: Option<String>,
    pub expiration_s: u64,
    pub insecure: bool,
}

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/api/v1/organization/{org}/proxycache", get(proxycache_get).post(proxycache_create).delete(proxycache_delete))
}

#[derive(OpenApi)]
#[openapi(paths(proxycache_get, proxycache_create, proxycache_delete), components(schemas(ErrorBody, ProxyCacheRequest, ProxyCacheView)))]
pub(super) struct ProxyCacheDoc;

#[utoipa::path(get, path = "/api/v1/organization/{org}/proxycache", tag = "proxycache", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = ProxyCacheView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn proxycache_get(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<ProxyCacheView>, ApiError> {
    Ok(Json(id.get_proxy_cache(&w, &org).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/proxycache", tag = "proxycache", params(("org" = String, Path, description = NS)),
    request_body = ProxyCacheRequest,
    responses((status = 201, body = ProxyCacheView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn proxycache_create(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<ProxyCacheRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ProxyCacheView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.put_proxy_cache(&w, &org, body(b)?).await?)))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/proxycache", tag = "proxycache", params(("org" = String, Path, description = NS)),
    responses((status = 204, description = "The organization is an ordinary one again; what was cached stays"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn proxycache_delete(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_proxy_cache(&w, &org).await?;
    Ok(StatusCode::NO_CONTENT)
}
