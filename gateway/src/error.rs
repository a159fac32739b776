//! The one place where failures become HTTP statuses and error JSON.
//!
//! Every refusal the gateway makes is an [`ApiError`]: a code, whose
//! usual status [`ErrorCode::status`] gives, and where the spec wants
//! another status for the same code, one of the constructors below
//! ([`ApiError::method_not_allowed`], [`ApiError::too_large`], ...).
//! axum's own refusals of a body or query become the same JSON through
//! the `From` conversions here, never a plain-text 400.
//!
//! The node maps its own failures into these codes: metadata failures in
//! one place, `node/src/errors.rs` (no quorum and unknown outcomes are 503,
//! a refused write 403, the rest 500), and blob failures where they arise,
//! `blob_err` in `node/src/registry/uploads.rs` (digest mismatch, bad
//! range, a full disk as 503).
//! They are the node's, and stay there: this module owns the wire.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Error codes: the OCI distribution spec's, then berth's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    #[serde(rename = "TOOMANYREQUESTS")]
    TooManyRequests,
    /// A `Range` or `Content-Range` that does not fit (416).
    RangeInvalid,
    NotFound,
    BadRequest,
    Conflict,
    /// A write over an immutable tag (409), refused inside the metadata
    /// command so racing pushes through two nodes cannot get past it.
    TagImmutable,
    /// No quorum, no leader, a peer down: retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown | NotFound => StatusCode::NOT_FOUND,
            BlobUploadInvalid | DigestInvalid | ManifestBlobUnknown | ManifestInvalid | NameInvalid | SizeInvalid | BadRequest => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Denied => StatusCode::FORBIDDEN,
            Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Conflict | TagImmutable => StatusCode::CONFLICT,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: serde_json::Value,
    /// A status other than the code's usual one (e.g. 413 for a manifest
    /// over the size limit, 405 for a method an endpoint lacks).
    pub status: Option<StatusCode>,
    /// `WWW-Authenticate` of a 401 (default: basic auth).
    pub challenge: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), detail: serde_json::Value::Null, status: None, challenge: None }
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = Some(status);
        self
    }

    pub fn with_challenge(mut self, challenge: String) -> ApiError {
        self.challenge = Some(challenge);
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = detail;
        self
    }

    /// 405: a method the endpoint lacks (code UNSUPPORTED).
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::METHOD_NOT_ALLOWED)
    }

    /// 413 (a body) or 414 (a URI) over its limit, with `code`.
    pub fn too_large(code: ErrorCode, status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::new(code, message).with_status(status)
    }
}

/// A JSON body axum could not read or parse: 400 with axum's reason.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, e.body_text())
    }
}

/// A query string axum could not parse: 400 with axum's reason.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, e.body_text())
    }
}

/// The wire shape: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorEntry {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or(self.code.status());
        let body = ErrorBody { errors: vec![ErrorEntry { code: self.code, message: self.message, detail: self.detail }] };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()).unwrap_or(HeaderValue::from_static("Basic realm=\"berth\""));
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write over an immutable tag is a 409 with the code `TAG_IMMUTABLE`
    /// in the OCI error shape.
    #[tokio::test]
    async fn tag_immutable_is_a_409_in_the_oci_shape() {
        let resp = ApiError::new(ErrorCode::TagImmutable, "tag v1 is immutable").into_response();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json, serde_json::json!({"errors": [{"code": "TAG_IMMUTABLE", "message": "tag v1 is immutable", "detail": null}]}));
    }
}
