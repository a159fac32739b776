//! The HTTP edge of a berth node (axum).
//!
//! It parses requests, authenticates them through the node's traits,
//! calls them, and turns every failure into the one error shape berth
//! speaks: `{"errors":[{"code","message","detail"}]}` with the matching
//! status. It knows nothing of Raft, RocksDB or QUIC (a test,
//! `tests/structure.rs`, holds it to that): the node implements the three
//! traits, and [`testing::MemoryNode`] implements them in memory for tests.
//!
//! What it owns, by module (each imports only those listed before it):
//!
//! - `error`: [`ApiError`] and [`ErrorCode`], and the one mapping of codes
//!   to statuses and error JSON.
//! - `access`: who is calling: [`Credentials`], [`Caller`], [`Principal`],
//!   token scopes, and the `Bearer` challenge.
//! - `endpoint`: a `/v2` path parsed once into an [`Endpoint`].
//! - `api`: the [`Backend`] trait (health, the cluster and drill admin API)
//!   and its documents, shared with the CLI.
//! - `registry`: the [`Registry`] trait and the OCI distribution API over
//!   it: one catch-all route, a table of `handle_*` functions, uploads
//!   forwarded to the node that owns them.
//! - `token`: `/v2/auth`, the Docker token endpoint.
//! - `identity`: the [`identity::Identity`] trait and the Quay-shaped
//!   admin API (users, organizations, robots, permissions, tokens, logs),
//!   with its OpenAPI document.
//! - `drill`: the region drill's plan (shared with the CLI) and the
//!   region drill the console starts, which calls the region's nodes.
//! - `console`: the web console's page and assets at `/`, and the
//!   session calls (`/api/v1/session`) behind its sign-in; `oauth_page`:
//!   the OAuth consent page; `notifications`: notification documents.
//! - `metrics`, `server`: request metrics, and serving with connection
//!   limits, over TCP or TLS.
//! - `testing` (tests, or the `testing` feature): the in-memory node.
//!
//! This file builds the router (health, metrics, the cluster admin API
//! under `/api/v1/cluster/…` and `/api/v1/drill/…`, `/v2` and the identity
//! API) and serves it.

pub mod access;
pub mod api;
pub mod console;
pub mod drill;
pub mod endpoint;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod notifications;
pub mod oauth_page;
pub mod registry;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;

pub use access::{parse_credentials, Access, Caller, Credentials, IssuedToken, Principal, ResourceScope};
pub use api::*;
pub use drill::{RegionDrill, RegionDrillRequest, RegionHealed, RegionPlan};
pub use endpoint::{Endpoint, Reference};
pub use error::{ApiError, ErrorCode};
pub use registry::*;
pub use server::HttpLimits;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

type Shared = Arc<dyn Backend>;

/// Everything a node serves over HTTP.
#[derive(Clone)]
pub struct Services {
    pub backend: Shared,
    pub registry: Arc<dyn Registry>,
    pub identity: Arc<dyn identity::Identity>,
    /// Forwards upload requests to the node that owns the session (it must
    /// trust the other nodes' certificates).
    pub http: reqwest::Client,
    /// The URL clients use to reach this node (its advertised HTTP
    /// address): challenges name the token endpoint there, never on
    /// whatever `Host` a client sent.
    pub public_url: Option<String>,
}

/// Builds the router: the registry API and its token endpoint over
/// `registry`, the identity API over `identity`, health and the cluster
/// admin API over `backend`. `tls`: the router is served over HTTPS;
/// `own_addr`: the listener's address.
pub fn router(services: Services, tls: bool, own_addr: Option<std::net::SocketAddr>) -> Router {
    let Services { backend, registry, identity, http, public_url } = services;
    let drills = drill::routes(drill::DrillState::new(backend.clone(), http.clone()));
    let v2 = Router::new()
        .route("/v2", any(handle_v2))
        .route("/v2/", any(handle_v2))
        .route("/v2/auth", any(token::handle_token))
        .route("/v2/{*rest}", any(handle_v2))
        .with_state(V2State { registry, http, tls, public_url, own_addr });
    Router::new()
        .route("/health", get(handle_health))
        .route("/health/ready", get(handle_ready))
        .route("/metrics", get(handle_metrics))
        .route("/api/v1/cluster/ca", get(handle_ca))
        .route("/api/v1/cluster/ca/status", get(handle_ca_status))
        .route("/api/v1/cluster/ca/rotate", post(handle_ca_rotate))
        .route("/api/v1/cluster/ca/rotate/finish", post(handle_ca_finish))
        .route("/api/v1/drill/probe", post(handle_probe))
        .route("/api/v1/drill/isolate", post(handle_isolate).delete(handle_isolate_end))
        .route("/api/v1/cluster/status", get(handle_cluster_status))
        .route("/api/v1/cluster/tokens", post(handle_token_create).get(handle_token_list))
        .route("/api/v1/cluster/tokens/{id}", delete(handle_token_revoke))
        .route("/api/v1/cluster/nodes/{id}", delete(handle_node_remove))
        .route("/api/v1/cluster/nodes/{id}/promote", post(handle_node_promote))
        .route("/api/v1/cluster/nodes/{id}/demote", post(handle_node_demote))
        .route("/api/v1/cluster/nodes/{id}/drain", post(handle_node_drain))
        .route("/api/v1/cluster/backup", get(handle_backup))
        .route("/api/v1/cluster/transfer-leader", post(handle_transfer_leader))
        .route("/api/v1/placement/{namespace}", get(handle_placement_get).put(handle_placement_set))
        .fallback(handle_not_found)
        .with_state(backend)
        .merge(v2)
        .merge(drills)
        .merge(console::routes(identity.clone(), tls))
        .merge(identity::routes(identity))
        .layer(axum::middleware::from_fn(console::quiet_challenges))
        .layer(axum::middleware::from_fn(metrics::track))
}

async fn handle_probe(State(b): State<Shared>, Admin(who): Admin) -> Result<StatusCode, ApiError> {
    b.probe_write(&who).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cuts this node off from its peers for a while (`berth drill region`).
/// Not in the OpenAPI document, like the rest of the cluster and drill
/// API: a fuzzer holding the operator token must not partition the node.
async fn handle_isolate(
    State(b): State<Shared>,
    _: Admin,
    body: Result<Json<IsolateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Isolation>, ApiError> {
    let Json(req) = body?;
    req.validate().map_err(|m| ApiError::new(ErrorCode::BadRequest, m.to_string()))?;
    Ok(Json(b.isolate(req).await?))
}

/// Heals this node's isolation now, before its deadline.
async fn handle_isolate_end(State(b): State<Shared>, _: Admin) -> Result<StatusCode, ApiError> {
    b.end_isolation().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The cluster CA certificate: public, so clients can be told to trust it.
async fn handle_ca(State(b): State<Shared>) -> Result<Response, ApiError> {
    let pem = b.ca_pem().await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

async fn handle_ca_status(State(b): State<Shared>, _: Admin) -> Result<Json<CaStatus>, ApiError> {
    Ok(Json(b.ca_status().await?))
}

async fn handle_ca_rotate(State(b): State<Shared>, Admin(who): Admin) -> Result<Json<CaStatus>, ApiError> {
    Ok(Json(b.rotate_ca(&who, CaStep::Start).await?))
}

async fn handle_ca_finish(State(b): State<Shared>, Admin(who): Admin) -> Result<Json<CaStatus>, ApiError> {
    Ok(Json(b.rotate_ca(&who, CaStep::Finish).await?))
}

async fn handle_metrics(State(b): State<Shared>) -> Response {
    let text = b.metrics_text().await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Serves `services` on `listener` within `limits` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, services: Services, limits: HttpLimits, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let own_addr = listener.local_addr().ok();
    server::serve_with_limits(listener, router(services, false, own_addr), None, limits, shutdown).await
}

async fn handle_health() -> &'static str {
    "ok\n"
}

async fn handle_ready(State(b): State<Shared>) -> Response {
    match b.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => ApiError::new(ErrorCode::Unavailable, format!("not ready: {why}")).into_response(),
    }
}

async fn handle_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// A cluster administrator, authenticated before anything else of the
/// request is read; the cluster calls are made for them.
struct Admin(Principal);

impl axum::extract::FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, b: &Shared) -> Result<Admin, ApiError> {
        let caller = Caller::from_request_parts(parts, b).await?;
        Ok(Admin(b.authorize_admin(&caller).await?))
    }
}

async fn handle_cluster_status(State(b): State<Shared>, _: Admin) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(b.cluster_status().await?))
}

async fn handle_token_create(
    State(b): State<Shared>,
    Admin(who): Admin,
    body: Option<Json<TokenCreateRequest>>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(b.create_join_token(&who, req).await?)))
}

async fn handle_token_list(State(b): State<Shared>, _: Admin) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(b.list_join_tokens().await?))
}

async fn handle_token_revoke(State(b): State<Shared>, Admin(who): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    b.revoke_join_token(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn node_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::new(ErrorCode::BadRequest, format!("node id {raw:?} is not a number")))
}

async fn change_node(b: &Shared, who: &Principal, id: &str, change: NodeChange) -> Result<StatusCode, ApiError> {
    b.set_node(who, node_id(id)?, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn handle_node_remove(State(b): State<Shared>, Admin(who): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    change_node(&b, &who, &id, NodeChange::Remove).await
}

async fn handle_node_promote(State(b): State<Shared>, Admin(who): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    change_node(&b, &who, &id, NodeChange::Promote).await
}

async fn handle_node_demote(State(b): State<Shared>, Admin(who): Admin, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    change_node(&b, &who, &id, NodeChange::Demote).await
}

async fn handle_node_drain(State(b): State<Shared>, Admin(who): Admin, Path(id): Path<String>) -> Result<Json<DrainReport>, ApiError> {
    Ok(Json(b.drain_node(&who, node_id(&id)?).await?))
}

async fn handle_backup(State(b): State<Shared>, Admin(who): Admin) -> Result<Response, ApiError> {
    let bytes = b.backup(&who).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn handle_transfer_leader(State(b): State<Shared>, _: Admin, body: Option<Json<TransferLeaderRequest>>) -> Result<Json<TransferLeaderReply>, ApiError> {
    let to = body.and_then(|Json(r)| r.to);
    Ok(Json(b.transfer_leader(to).await?))
}

async fn handle_placement_get(State(b): State<Shared>, _: Admin, Path(ns): Path<String>) -> Result<Json<PlacementDoc>, ApiError> {
    Ok(Json(b.get_placement(&ns).await?))
}

async fn handle_placement_set(
    State(b): State<Shared>,
    Admin(who): Admin,
    Path(ns): Path<String>,
    body: Result<Json<PlacementDoc>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(doc) = body?;
    b.set_placement(&who, &ns, doc).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serves the same API over TLS (HTTP/1.1 and HTTP/2 by ALPN) within
/// `limits` until `shutdown` resolves. The certificate comes from `tls`,
/// whose resolver may swap it at any time: new connections get the new
/// one, open connections keep theirs, so a rotation drops no request.
pub async fn serve_tls(
    listener: TcpListener,
    services: Services,
    tls: Arc<rustls::ServerConfig>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let own_addr = listener.local_addr().ok();
    server::serve_with_limits(listener, router(services, true, own_addr), Some(tokio_rustls::TlsAcceptor::from(tls)), limits, shutdown).await
}
