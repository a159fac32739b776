//! OAuth applications and Quay's OAuth 2 flows:
//!
//! - `GET/POST /api/v1/organization/{org}/applications`,
//!   `GET/PUT/DELETE …/applications/{client_id}`,
//!   `POST …/applications/{client_id}/resetclientsecret`, the tokens an
//!   application holds (`GET …/tokens`, `DELETE …/tokens/{id}`) and
//!   `POST …/generatetoken` (Quay's "Generate Token" tab); the public
//!   `GET /api/v1/app/{client_id}`;
//! - `GET /oauth/authorize` (the consent page, [`crate::oauth_page`]),
//!   `POST /oauth/authorizeapp`, `POST /oauth/denyapp` and
//!   `POST /oauth/access_token`.
//!
//! Handlers parse; the node decides. The flow endpoints answer with pages,
//! redirects and OAuth error JSON (`{error, error_description}`), never
//! with the admin API's error shape.

use axum::body::Bytes;
use axum::http::header;
use axum::routing::delete;

use super::*;
use crate::access::caller_of;
use crate::oauth_page::{ConsentPage, ErrorPage};

/// `POST`/`PUT …/applications`: Quay's fields, and berth's `public_client`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ApplicationRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub application_uri: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub avatar_email: Option<String>,
    /// berth's own: a client that cannot keep a secret; it exchanges codes
    /// with PKCE (`S256`) instead of the secret. Set at creation.
    #[serde(default)]
    pub public_client: Option<bool>,
}

/// An application. `client_secret` is there only in the answers to the
/// creation and to a reset: berth keeps the secret hashed (Quay shows it
/// to the organization's administrators at any time).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationView {
    pub name: String,
    pub description: String,
    pub application_uri: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
    pub avatar_email: Option<String>,
    pub public_client: bool,
    pub organization: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationList {
    pub applications: Vec<ApplicationView>,
}

/// What anyone may know of an application (`GET /app/{client_id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublicApplicationView {
    pub name: String,
    pub description: String,
    pub uri: String,
    pub avatar_email: Option<String>,
    pub organization: String,
}

/// A token an application holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationTokenView {
    pub uuid: String,
    /// The user it acts for.
    pub user: String,
    pub scopes: Vec<String>,
    pub created: String,
    pub expiration: Option<String>,
    /// Only when the token was just generated.
    pub access_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplicationTokenList {
    pub tokens: Vec<ApplicationTokenView>,
}

/// `POST …/applications/{client_id}/generatetoken`: a token for the
/// caller, held by the application, without the redirect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GenerateTokenRequest {
    /// Space-separated Quay scopes (`repo:read repo:write`).
    pub scope: String,
}

/// The query of `GET /oauth/authorize`, and the form of `authorizeapp`
/// and `denyapp` (which add the CSRF token and, when the request carries
/// no credentials, the user name and password).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub response_type: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub csrf_token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl AuthorizeRequest {
    pub fn parse(bytes: &[u8]) -> AuthorizeRequest {
        let mut r = AuthorizeRequest::default();
        for (k, v) in url::form_urlencoded::parse(bytes) {
            let slot = match &*k {
                "client_id" => &mut r.client_id,
                "redirect_uri" => &mut r.redirect_uri,
                "scope" => &mut r.scope,
                "response_type" => &mut r.response_type,
                "state" => &mut r.state,
                "code_challenge" => &mut r.code_challenge,
                "code_challenge_method" => &mut r.code_challenge_method,
                "csrf_token" => &mut r.csrf_token,
                "username" => &mut r.username,
                "password" => &mut r.password,
                _ => continue,
            };
            // A repeated field is ambiguous; the first one counts.
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        r
    }
}

/// The form of `POST /oauth/access_token`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub code_verifier: Option<String>,
    pub scope: Option<String>,
}

impl TokenRequest {
    pub fn parse(bytes: &[u8]) -> TokenRequest {
        let mut r = TokenRequest::default();
        for (k, v) in url::form_urlencoded::parse(bytes) {
            let slot = match &*k {
                "grant_type" => &mut r.grant_type,
                "code" => &mut r.code,
                "redirect_uri" => &mut r.redirect_uri,
                "client_id" => &mut r.client_id,
                "client_secret" => &mut r.client_secret,
                "code_verifier" => &mut r.code_verifier,
                "scope" => &mut r.scope,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        r
    }
}

/// The form of `POST /oauth/access_token`, as the OpenAPI document
/// describes it (parsed as [`TokenRequest`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `authorization_code`.
    pub grant_type: String,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    /// Or HTTP Basic.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// PKCE.
    pub code_verifier: Option<String>,
    /// At most the scopes approved.
    pub scope: Option<String>,
}

/// `POST /oauth/access_token`'s answer (RFC 6749 §5.1, as Quay shapes it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthTokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: Option<String>,
    pub scope: String,
}

/// An OAuth error (RFC 6749 §5.2): `invalid_client`, `invalid_grant`,
/// `invalid_scope`, `unsupported_grant_type`, `invalid_request`, …
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
    #[serde(skip)]
    pub status: u16,
}

impl OAuthError {
    pub fn new(error: &str, description: impl Into<String>) -> OAuthError {
        let status = match error {
            "invalid_client" => 401,
            "server_error" => 500,
            "temporarily_unavailable" => 503,
            _ => 400,
        };
        OAuthError { error: error.into(), error_description: description.into(), status }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = (status, [(header::CACHE_CONTROL, "no-store")], Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Basic realm=\"oauth\""));
        }
        r
    }
}

/// What the authorize endpoints answer: a page, or the browser sent back
/// to the application.
#[derive(Debug, Clone)]
pub enum OAuthOutcome {
    Consent { status: u16, page: ConsentPage },
    Error { status: u16, page: ErrorPage },
    Redirect(String),
}

impl IntoResponse for OAuthOutcome {
    fn into_response(self) -> Response {
        let headers = || {
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
                (header::REFERRER_POLICY, "no-referrer"),
            ]
        };
        let html = |status: u16, body: String| {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, headers(), [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        };
        match self {
            OAuthOutcome::Consent { status, page } => html(status, page.render()),
            OAuthOutcome::Error { status, page } => html(status, page.render()),
            OAuthOutcome::Redirect(url) => match axum::http::HeaderValue::from_str(&url) {
                Ok(loc) => (StatusCode::FOUND, headers(), [(header::LOCATION, loc)]).into_response(),
                Err(_) => html(400, ErrorPage { error: "invalid_request".into(), message: "the redirect is not a valid header value".into() }.render()),
            },
        }
    }
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/organization/{org}/applications", get(app_list).post(app_create))
        .route("/api/v1/organization/{org}/applications/{client_id}", get(app_get).put(app_update).delete(app_delete))
        .route("/api/v1/organization/{org}/applications/{client_id}/resetclientsecret", post(app_reset_secret))
        .route("/api/v1/organization/{org}/applications/{client_id}/tokens", get(app_tokens))
        .route("/api/v1/organization/{org}/applications/{client_id}/tokens/{uuid}", delete(app_token_revoke))
        .route("/api/v1/organization/{org}/applications/{client_id}/generatetoken", post(app_generate_token))
        .route("/api/v1/app/{client_id}", get(app_public))
        .route("/oauth/authorize", get(oauth_authorize))
        .route("/oauth/authorizeapp", post(oauth_authorize_app))
        .route("/oauth/denyapp", post(oauth_deny_app))
        .route("/oauth/access_token", post(oauth_access_token))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        app_list,
        app_create,
        app_get,
        app_update,
        app_delete,
        app_reset_secret,
        app_tokens,
        app_token_revoke,
        app_generate_token,
        app_public,
        oauth_access_token
    ),
    components(schemas(
        ErrorBody,
        ApplicationView,
        ApplicationRequest,
        PublicApplicationView,
        ApplicationTokenView,
        OAuthTokenResponse,
        OAuthError,
        TokenForm
    ))
)]
pub(super) struct OAuthDoc;

#[derive(Deserialize)]
struct OrgPath {
    org: String,
}

#[derive(Deserialize)]
struct AppPath {
    org: String,
    client_id: String,
}

#[derive(Deserialize)]
struct AppTokenPath {
    org: String,
    client_id: String,
    uuid: String,
}

#[derive(Deserialize)]
struct ClientPath {
    client_id: String,
}

const ORG: &str = "Organization name";
const CLIENT: &str = "The application's client id";

#[utoipa::path(get, path = "/api/v1/organization/{org}/applications", tag = "applications", params(("org" = String, Path, description = ORG)),
    responses((status = 200, body = ApplicationList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_list(State(id): State<Shared>, Path(p): Path<OrgPath>, Who(w): Who) -> Result<Json<ApplicationList>, ApiError> {
    Ok(Json(id.list_applications(&w, &p.org).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/applications", tag = "applications", params(("org" = String, Path, description = ORG)),
    request_body = ApplicationRequest,
    responses((status = 201, body = ApplicationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_create(
    State(id): State<Shared>,
    Path(p): Path<OrgPath>,
    Who(w): Who,
    b: Result<Json<ApplicationRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplicationView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_application(&w, &p.org, body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/applications/{client_id}", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)),
    responses((status = 200, body = ApplicationView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_get(State(id): State<Shared>, Path(p): Path<AppPath>, Who(w): Who) -> Result<Json<ApplicationView>, ApiError> {
    Ok(Json(id.get_application(&w, &p.org, &p.client_id).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/applications/{client_id}", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)), request_body = ApplicationRequest,
    responses((status = 200, body = ApplicationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_update(
    State(id): State<Shared>,
    Path(p): Path<AppPath>,
    Who(w): Who,
    b: Result<Json<ApplicationRequest>, JsonRejection>,
) -> Result<Json<ApplicationView>, ApiError> {
    Ok(Json(id.update_application(&w, &p.org, &p.client_id, body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/applications/{client_id}", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_delete(State(id): State<Shared>, Path(p): Path<AppPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_application(&w, &p.org, &p.client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/applications/{client_id}/resetclientsecret", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)),
    responses((status = 200, body = ApplicationView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_reset_secret(State(id): State<Shared>, Path(p): Path<AppPath>, Who(w): Who) -> Result<Json<ApplicationView>, ApiError> {
    Ok(Json(id.reset_application_secret(&w, &p.org, &p.client_id).await?))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/applications/{client_id}/tokens", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)),
    responses((status = 200, body = ApplicationTokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_tokens(State(id): State<Shared>, Path(p): Path<AppPath>, Who(w): Who) -> Result<Json<ApplicationTokenList>, ApiError> {
    Ok(Json(id.application_tokens(&w, &p.org, &p.client_id).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/applications/{client_id}/tokens/{uuid}", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT), ("uuid" = String, Path, description = "The token's id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_token_revoke(State(id): State<Shared>, Path(p): Path<AppTokenPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.revoke_application_token(&w, &p.org, &p.client_id, &p.uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/applications/{client_id}/generatetoken", tag = "applications",
    params(("org" = String, Path, description = ORG), ("client_id" = String, Path, description = CLIENT)), request_body = GenerateTokenRequest,
    responses((status = 201, body = ApplicationTokenView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn app_generate_token(
    State(id): State<Shared>,
    Path(p): Path<AppPath>,
    Who(w): Who,
    b: Result<Json<GenerateTokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ApplicationTokenView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.generate_application_token(&w, &p.org, &p.client_id, body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/app/{client_id}", tag = "applications", params(("client_id" = String, Path, description = CLIENT)), security(()),
    responses((status = 200, body = PublicApplicationView), (status = 404, body = ErrorBody)))]
async fn app_public(State(id): State<Shared>, Path(p): Path<ClientPath>) -> Result<Json<PublicApplicationView>, ApiError> {
    Ok(Json(id.public_application(&p.client_id).await?))
}

async fn oauth_authorize(State(id): State<Shared>, parts: Parts) -> Response {
    let req = AuthorizeRequest::parse(parts.uri.query().unwrap_or("").as_bytes());
    match caller_of(&parts.headers, &parts.extensions) {
        Ok(caller) => id.oauth_authorize(&caller, req).await.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn oauth_authorize_app(State(id): State<Shared>, parts: Parts, b: Bytes) -> Response {
    decide(id, parts, b, true).await
}

async fn oauth_deny_app(State(id): State<Shared>, parts: Parts, b: Bytes) -> Response {
    decide(id, parts, b, false).await
}

async fn decide(id: Shared, parts: Parts, b: Bytes, approve: bool) -> Response {
    let form = AuthorizeRequest::parse(&b);
    match caller_of(&parts.headers, &parts.extensions) {
        Ok(caller) => id.oauth_decide(&caller, form, approve).await.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Exchanges an authorization code for a token. Client credentials in
/// the form (`client_id`, `client_secret`) or as HTTP Basic.
#[utoipa::path(post, path = "/oauth/access_token", tag = "oauth", security(()),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = OAuthTokenResponse), (status = 400, body = OAuthError), (status = 401, body = OAuthError)))]
async fn oauth_access_token(State(id): State<Shared>, parts: Parts, b: Bytes) -> Response {
    let form = TokenRequest::parse(&b);
    let caller = match caller_of(&parts.headers, &parts.extensions) {
        Ok(c) => c,
        Err(_) => return OAuthError::new("invalid_client", "the Authorization header is malformed").into_response(),
    };
    match id.oauth_access_token(&caller, form).await {
        Ok(t) => ([(header::CACHE_CONTROL, "no-store")], Json(t)).into_response(),
        Err(e) => e.into_response(),
    }
}
