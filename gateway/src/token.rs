//! `/v2/auth`: the Docker token endpoint.
//!
//! A client refused on `/v2` with a `Bearer` challenge comes here with its
//! credentials and the scopes it needs, and leaves with a token granting
//! what it asked for that it may do (the registry decides). It sits above
//! `access` (the types) and `registry` (the state it is served with), so
//! neither of those imports it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::access::{caller_of, Credentials, IssuedToken, ResourceScope};
use crate::error::{ApiError, ErrorCode};
use crate::registry::V2State;

/// Scopes one token request may ask for. Each costs an authorization
/// check and a grant in the token: 2,000 took 4.2 s and made a 280 KB
/// token. A client asks for a few (a pull and a push of a mount's source).
pub const MAX_TOKEN_SCOPES: usize = 32;

/// Bytes of query string a token request may have: room for
/// [`MAX_TOKEN_SCOPES`] long scopes, refused before any parsing.
pub const MAX_TOKEN_QUERY_BYTES: usize = 8 << 10;

#[derive(Debug, Default)]
struct OAuthForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    scope: Option<String>,
}

/// `GET|POST /v2/auth`: the Docker token endpoint.
///
/// GET takes basic credentials (or none) and `scope=` parameters; POST is
/// the OAuth2 password grant some clients (containerd) try first. What is
/// granted is what was asked for intersected with what the caller may do;
/// a partial or empty grant is a token, not an error. Wrong credentials are
/// a 401.
pub async fn handle_token(State(st): State<V2State>, req: axum::extract::Request) -> Response {
    match token(&st, req).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn token(st: &V2State, req: axum::extract::Request) -> Result<IssuedToken, ApiError> {
    let (parts, body) = req.into_parts();
    let mut caller = caller_of(&parts.headers, &parts.extensions)?;
    let query = parts.uri.query().unwrap_or("");
    if query.len() > MAX_TOKEN_QUERY_BYTES {
        return Err(ApiError::too_large(
            ErrorCode::BadRequest,
            StatusCode::URI_TOO_LONG,
            format!("the token request's query is {} bytes, more than the {MAX_TOKEN_QUERY_BYTES} allowed", query.len()),
        ));
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut scopes: Vec<String> = params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
    if parts.method == Method::POST {
        let bytes = axum::body::to_bytes(body, 64 << 10).await.map_err(|_| ApiError::new(ErrorCode::BadRequest, "token request body is too large"))?;
        let form = OAuthForm::parse(&bytes);
        match form.grant_type.as_deref() {
            Some("password") => {
                let (Some(user), Some(password)) = (form.username, form.password) else {
                    return Err(ApiError::new(ErrorCode::BadRequest, "the password grant needs username and password"));
                };
                caller.creds = Credentials::Basic { user, password };
            }
            Some(other) => {
                return Err(ApiError::new(ErrorCode::Unsupported, format!("grant_type {other} is not supported")).with_status(StatusCode::BAD_REQUEST))
            }
            None => return Err(ApiError::new(ErrorCode::BadRequest, "grant_type is required")),
        }
        scopes.extend(form.scope);
    } else if parts.method != Method::GET {
        return Err(ApiError::method_not_allowed("the token endpoint takes GET or POST"));
    }
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
        if *service != st.registry.service() {
            return Err(ApiError::new(ErrorCode::Denied, format!("this cluster issues tokens for service {:?}, not {service:?}", st.registry.service())));
        }
    }
    let asked = scopes.iter().flat_map(|v| v.split(' ')).filter(|s| !s.is_empty()).count();
    if asked > MAX_TOKEN_SCOPES {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("a token request may ask for at most {MAX_TOKEN_SCOPES} scopes; this one asks for {asked}"))
            .with_detail(serde_json::json!({ "max_scopes": MAX_TOKEN_SCOPES })));
    }
    let scopes = ResourceScope::parse_all(scopes.iter().map(String::as_str));
    st.registry.issue_token(&caller, &scopes).await
}

impl OAuthForm {
    fn parse(bytes: &[u8]) -> OAuthForm {
        let mut fields: BTreeMap<String, String> = url::form_urlencoded::parse(bytes).into_owned().collect();
        OAuthForm {
            grant_type: fields.remove("grant_type"),
            username: fields.remove("username"),
            password: fields.remove("password"),
            scope: fields.remove("scope"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
    proptest! {
        /// The token endpoint's form body: any bytes, no panic; the
        /// fields it knows are read back.
        #[test]
        fn oauth_forms_parse_any_body(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
            user in "[a-z0-9+]{1,20}",
            scope in "[a-z]{1,12}:[a-z0-9][a-z0-9:/._-]{0,40}:(pull|push|\\*|pull,push)",
        ) {
            let _ = OAuthForm::parse(&raw);
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "password")
                .append_pair("username", &user)
                .append_pair("scope", &scope)
                .finish();
            let f = OAuthForm::parse(body.as_bytes());
            prop_assert_eq!(f.username.as_deref(), Some(user.as_str()));
            prop_assert_eq!(f.scope, Some(scope));
            prop_assert_eq!(f.grant_type.as_deref(), Some("password"));
        }
    }
}
