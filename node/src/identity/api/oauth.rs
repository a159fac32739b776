//! OAuth applications and Quay's OAuth 2 flows, on the node's side.
//!
//! An application belongs to an organization; its administrators (or a
//! token with `org:admin`) manage it. A token an application gets is an
//! application token of the user who approved it, capped by the scopes
//! approved, so every existing rule of app tokens applies to it.
//!
//! - Client ids are 20 random characters, secrets 40; only the SHA-256 of
//!   a secret is kept, so it is shown at creation and at a reset only.
//! - The consent form carries a CSRF token: an HMAC, under a key derived
//!   from the cluster's token-signing key, over every field of the request
//!   and an expiry. Any node checks it; a form for one request cannot
//!   approve another, and nothing else is needed (no session).
//! - Codes are 256 random bits, kept as their SHA-256 for
//!   `[oauth] code_ttl_secs` (10 minutes) and consumed in the same Raft step that stores the
//!   token (`berth_raft::state::oauth`).
//! - PKCE: `S256` only, required for public clients.
//! - Redirect URIs as Quay checks them: same scheme, host and port as the
//!   registered one, the path under its path, no userinfo, `..` or `@`.

use berth_gateway::identity::{
    ApplicationList, ApplicationRequest, ApplicationTokenList, ApplicationTokenView, ApplicationView, AuthorizeRequest, GenerateTokenRequest, OAuthError,
    OAuthOutcome, OAuthTokenResponse, PublicApplicationView, TokenRequest,
};
use berth_gateway::oauth_page::{ConsentPage, ErrorPage};
use berth_gateway::Credentials;
use berth_raft::command::{ClusterRecord, OAuthAppRecord, OAuthCodeRecord, OAuthCommand};
use berth_raft::state::oauth as rules;
use berth_raft::{Actor, ClientAccount};
use ring::hmac;

use super::*;

/// How long a consent form may be submitted after it was shown.
const CSRF_TTL_MS: u64 = 30 * 60 * 1000;

/// What each of Quay's scopes lets an application do, in words.
fn scope_words(s: TokenScope) -> &'static str {
    match s {
        TokenScope::RepoRead => "View all visible repositories",
        TokenScope::RepoWrite => "Read/Write to any accessible repositories",
        TokenScope::RepoAdmin => "Administer repositories",
        TokenScope::RepoCreate => "Create repositories",
        TokenScope::UserRead => "Read user information",
        TokenScope::UserAdmin => "Administer user",
        TokenScope::OrgAdmin => "Administer organization",
        TokenScope::SuperUser => "Super user",
    }
}

/// A scope list that names no known scope, or none at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope {0:?}")]
    Unknown(String),
    #[error("no scope was asked for")]
    Empty,
}

/// Parses a scope list (space or comma separated, as Quay takes it).
pub fn parse_scopes(s: &str) -> Result<BTreeSet<TokenScope>, ScopeError> {
    let mut out = BTreeSet::new();
    for part in s.split([' ', ',', '+']).filter(|p| !p.is_empty()) {
        out.insert(TokenScope::parse(part).ok_or_else(|| ScopeError::Unknown(part.to_string()))?);
    }
    if out.is_empty() {
        return Err(ScopeError::Empty);
    }
    Ok(out)
}

/// Why a request cannot approve an application; the words are shown on
/// the consent page.
#[derive(Debug, Clone, thiserror::Error)]
enum ConsentError {
    #[error("sign in as a user: robots and tokens cannot approve applications")]
    NotAUser,
    #[error("sign in as a user: registry tokens cannot approve applications")]
    RegistryToken,
    #[error("sign-in is unavailable: {0}")]
    Unavailable(String),
    #[error("wrong user name or password")]
    WrongCredentials,
}

fn scope_string(scopes: &BTreeSet<TokenScope>) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

/// Whether `given` may receive the browser for an application registered
/// with `registered` (Quay's rule; see the module's doc).
pub fn redirect_allowed(registered: &str, given: &str) -> bool {
    if given.contains("..") || given.contains('@') || given.contains('#') {
        return false;
    }
    let (Ok(reg), Ok(url)) = (url::Url::parse(registered), url::Url::parse(given)) else { return false };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    if reg.scheme() != url.scheme() || reg.host_str() != url.host_str() || reg.port_or_known_default() != url.port_or_known_default() {
        return false;
    }
    let base = reg.path().trim_end_matches('/');
    let path = url.path();
    path == base || path.starts_with(&format!("{base}/")) || (base.is_empty() && path.starts_with('/'))
}

/// A registered redirect or application URI: absolute http(s), no
/// userinfo or fragment.
fn check_uri(what: &str, s: &str) -> Result<(), ApiError> {
    let url = url::Url::parse(s).map_err(|e| bad(format!("{what} {s:?} is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!("{what} must be an http or https URL with a host")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() || s.contains("..") {
        return Err(bad(format!("{what} may hold no user name, password, fragment or '..'")));
    }
    Ok(())
}

/// `base64url(SHA-256(verifier)) == challenge` (RFC 7636 `S256`).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use sha2::Digest as _;
    let ok_len = (43..=128).contains(&verifier.len());
    let ok_chars = verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    ok_len && ok_chars && crate::identity::auth::same_secret(computed.as_bytes(), challenge.as_bytes())
}

/// Appends `params` to `uri`: in the query (code flow and errors) or the
/// fragment (implicit flow).
fn with_params(uri: &str, params: &[(&str, &str)], fragment: bool) -> String {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter().filter(|(_, v)| !v.is_empty())).finish();
    let sep = if fragment {
        '#'
    } else if uri.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{uri}{sep}{encoded}")
}

/// A request that passed every check but the user's.
struct Checked {
    app: OAuthAppRecord,
    redirect_uri: String,
    scopes: BTreeSet<TokenScope>,
    implicit: bool,
    state: String,
    challenge: Option<String>,
}

impl Checked {
    fn error_redirect(&self, error: &str, description: &str) -> OAuthOutcome {
        OAuthOutcome::Redirect(with_params(&self.redirect_uri, &[("error", error), ("error_description", description), ("state", &self.state)], self.implicit))
    }

    /// The fields the CSRF token covers, in a fixed order.
    fn signed_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client_id", self.app.client_id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("scope", scope_string(&self.scopes)),
            ("response_type", if self.implicit { "token".into() } else { "code".into() }),
            ("state", self.state.clone()),
            ("code_challenge", self.challenge.clone().unwrap_or_default()),
        ]
    }
}

fn error_page(status: u16, error: &str, message: impl Into<String>) -> OAuthOutcome {
    OAuthOutcome::Error { status, page: ErrorPage { error: error.into(), message: message.into() } }
}

impl NodeIdentity {
    pub(super) fn app_in(&self, who: &Access, org: &str, client_id: &str) -> Result<OAuthAppRecord, ApiError> {
        self.require_org_admin(who, org)?;
        require_scope(who, "org:admin", "manage OAuth applications")?;
        match rules::app(&self.state(), client_id).map_err(state_err)? {
            Some(a) if a.org == org => Ok(a),
            _ => Err(not_found(format!("no application {client_id} in organization {org}"))),
        }
    }

    async fn oauth_write(&self, actor: Actor, cmd: OAuthCommand) -> Result<MetaResponse, ApiError> {
        self.meta.write(actor, MetaCommand::OAuth(cmd)).await.map_err(meta_err)
    }

    async fn oauth_write_for(&self, who: &Access, cmd: OAuthCommand, missing: impl FnOnce() -> String) -> Result<(), ApiError> {
        match self.oauth_write(actor_of(&who.principal), cmd).await? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(not_found(missing())),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::Conflict, why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
    }

    pub(super) fn app_view(a: &OAuthAppRecord, secret: Option<String>) -> ApplicationView {
        ApplicationView {
            name: a.name.clone(),
            description: a.description.clone(),
            application_uri: a.application_uri.clone(),
            client_id: a.client_id.clone(),
            client_secret: secret,
            redirect_uri: a.redirect_uri.clone(),
            avatar_email: a.avatar_email.clone(),
            public_client: a.public_client,
            organization: a.org.clone(),
        }
    }

    fn token_of_app_view(t: &AppTokenRecord, code: Option<String>) -> ApplicationTokenView {
        ApplicationTokenView {
            uuid: t.id.clone(),
            user: t.owner.clone(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            created: rfc3339(t.created_at_ms),
            expiration: t.expires_at_ms.map(rfc3339),
            access_token: code,
        }
    }

    /// Fills and checks an application's fields from a request.
    fn apply_request(a: &mut OAuthAppRecord, req: ApplicationRequest) -> Result<(), ApiError> {
        if let Some(name) = req.name {
            let name = name.trim().to_string();
            if name.is_empty() || name.len() > 255 {
                return Err(bad("an application needs a name of 1-255 characters"));
            }
            a.name = name;
        }
        if let Some(uri) = req.redirect_uri {
            check_uri("redirect_uri", &uri)?;
            a.redirect_uri = uri;
        }
        if let Some(uri) = req.application_uri {
            if !uri.is_empty() {
                check_uri("application_uri", &uri)?;
            }
            a.application_uri = uri;
        }
        if let Some(d) = req.description {
            if d.len() > 4096 {
                return Err(bad("the description may be at most 4096 bytes"));
            }
            a.description = d;
        }
        if let Some(e) = req.avatar_email {
            if e.len() > 255 || (!e.is_empty() && !e.contains('@')) {
                return Err(bad("avatar_email is not an e-mail address"));
            }
            a.avatar_email = (!e.is_empty()).then_some(e);
        }
        if a.name.is_empty() {
            return Err(bad("an application needs a name"));
        }
        if a.redirect_uri.is_empty() {
            return Err(bad("an application needs a redirect_uri"));
        }
        Ok(())
    }

    /// A new token for `user`, held by `app`: its record and its code.
    fn new_token(&self, app: &OAuthAppRecord, user: &str, scopes: BTreeSet<TokenScope>) -> (AppTokenRecord, String) {
        let now = now_ms();
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = secret(40);
        let rec = AppTokenRecord {
            id: id.clone(),
            owner: user.to_string(),
            title: format!("OAuth: {} ({})", app.name, app.org),
            scopes,
            secret_sha256: sha256_hex(&secret),
            created_at_ms: now,
            expires_at_ms: Some(now + self.oauth.token_ttl_secs * 1000),
        };
        (rec, format!("{APP_TOKEN_PREFIX}{id}_{secret}"))
    }

    fn log_token_assigned(&self, user: &Principal, ip: Option<std::net::IpAddr>, app: &OAuthAppRecord, token: &AppTokenRecord, how: &str) {
        self.audit.record(
            "oauth_token_assigned",
            user,
            ip,
            Some(&app.org),
            None,
            vec![
                ("application", app.name.clone()),
                ("client_id", app.client_id.clone()),
                ("token_id", token.id.clone()),
                ("scopes", scope_string(&token.scopes)),
                ("flow", how.to_string()),
            ],
        );
    }

    pub(super) async fn app_list(&self, who: &Access, org: &str) -> Result<ApplicationList, ApiError> {
        self.require_org_admin(who, org)?;
        require_scope(who, "org:admin", "manage OAuth applications")?;
        let apps = rules::apps_of(&self.state(), org).map_err(state_err)?;
        Ok(ApplicationList { applications: apps.iter().map(|a| Self::app_view(a, None)).collect() })
    }

    pub(super) async fn app_create(&self, who: &Access, org: &str, req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        self.require_org_admin(who, org)?;
        require_scope(who, "org:admin", "manage OAuth applications")?;
        let public_client = req.public_client.unwrap_or(false);
        let secret = secret(40);
        let mut a = OAuthAppRecord {
            client_id: super::secret(20),
            org: org.to_string(),
            name: String::new(),
            description: String::new(),
            application_uri: String::new(),
            redirect_uri: String::new(),
            avatar_email: None,
            secret_sha256: sha256_hex(&secret),
            public_client,
            created_at_ms: now_ms(),
        };
        Self::apply_request(&mut a, req)?;
        self.oauth_write_for(who, OAuthCommand::CreateApp(a.clone()), || format!("no organization {org}")).await?;
        self.log(who, "create_application", Some(org), None, vec![("application_name", a.name.clone()), ("client_id", a.client_id.clone())]).await;
        Ok(Self::app_view(&a, Some(secret)))
    }

    pub(super) async fn app_update(&self, who: &Access, org: &str, client_id: &str, req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        let mut a = self.app_in(who, org, client_id)?;
        if req.public_client.is_some_and(|p| p != a.public_client) {
            return Err(bad("public_client is chosen at creation"));
        }
        Self::apply_request(&mut a, req)?;
        self.oauth_write_for(who, OAuthCommand::UpdateApp(a.clone()), || format!("no application {client_id}")).await?;
        self.log(who, "update_application", Some(org), None, vec![("application_name", a.name.clone()), ("client_id", a.client_id.clone())]).await;
        Ok(Self::app_view(&a, None))
    }

    pub(super) async fn app_delete(&self, who: &Access, org: &str, client_id: &str) -> Result<(), ApiError> {
        let a = self.app_in(who, org, client_id)?;
        self.oauth_write_for(who, OAuthCommand::DeleteApp { client_id: client_id.into() }, || format!("no application {client_id}")).await?;
        self.log(who, "delete_application", Some(org), None, vec![("application_name", a.name), ("client_id", a.client_id)]).await;
        Ok(())
    }

    pub(super) async fn app_reset_secret(&self, who: &Access, org: &str, client_id: &str) -> Result<ApplicationView, ApiError> {
        let mut a = self.app_in(who, org, client_id)?;
        let secret = secret(40);
        a.secret_sha256 = sha256_hex(&secret);
        self.oauth_write_for(who, OAuthCommand::UpdateApp(a.clone()), || format!("no application {client_id}")).await?;
        self.log(who, "reset_application_client_secret", Some(org), None, vec![("application_name", a.name.clone()), ("client_id", a.client_id.clone())]).await;
        Ok(Self::app_view(&a, Some(secret)))
    }

    pub(super) async fn app_tokens(&self, who: &Access, org: &str, client_id: &str) -> Result<ApplicationTokenList, ApiError> {
        self.app_in(who, org, client_id)?;
        let tokens = rules::tokens_of(&self.state(), client_id).map_err(state_err)?;
        Ok(ApplicationTokenList { tokens: tokens.iter().map(|t| Self::token_of_app_view(t, None)).collect() })
    }

    pub(super) async fn app_token_revoke(&self, who: &Access, org: &str, client_id: &str, token_id: &str) -> Result<(), ApiError> {
        let a = self.app_in(who, org, client_id)?;
        let cmd = OAuthCommand::RevokeToken { client_id: client_id.into(), token_id: token_id.into() };
        self.oauth_write_for(who, cmd, || format!("application {client_id} holds no token {token_id}")).await?;
        self.log(who, "oauth_token_revoked", Some(org), None, vec![("application_name", a.name), ("client_id", a.client_id), ("token_id", token_id.into())])
            .await;
        Ok(())
    }

    pub(super) async fn app_generate_token(
        &self,
        who: &Access,
        org: &str,
        client_id: &str,
        req: GenerateTokenRequest,
    ) -> Result<ApplicationTokenView, ApiError> {
        let a = self.app_in(who, org, client_id)?;
        // The token acts for the caller, so it must be a user (a token of
        // an app cannot mint wider ones).
        let Principal::User { name, .. } = &who.principal else {
            return Err(denied(&who.principal, "generate a token for an application (a user must sign in)"));
        };
        let scopes = parse_scopes(&req.scope).map_err(|e| bad(e.to_string()))?;
        let (rec, code) = self.new_token(&a, name, scopes);
        self.oauth_write_for(who, OAuthCommand::IssueToken { client_id: client_id.into(), token: rec.clone() }, || "gone".into()).await?;
        self.log_token_assigned(&who.principal, who.ip, &a, &rec, "generate");
        self.audit.flush().await;
        Ok(Self::token_of_app_view(&rec, Some(code)))
    }

    pub(super) async fn app_public(&self, client_id: &str) -> Result<PublicApplicationView, ApiError> {
        match rules::app(&self.state(), client_id).map_err(state_err)? {
            Some(a) => Ok(PublicApplicationView {
                name: a.name,
                description: a.description,
                uri: a.application_uri,
                avatar_email: a.avatar_email,
                organization: a.org,
            }),
            None => Err(not_found(format!("no application {client_id}"))),
        }
    }

    // ---- the flows ----

    fn csrf_key(&self) -> Result<hmac::Key, ApiError> {
        use sha2::Digest as _;
        let cluster: ClusterRecord =
            self.state().get(keys::CLUSTER).map_err(state_err)?.ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no cluster yet"))?;
        let mut h = sha2::Sha256::new();
        h.update(b"berth oauth consent v1\0");
        h.update(cluster.token_signing_key_pem.as_bytes());
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &h.finalize()))
    }

    fn csrf_mac(key: &hmac::Key, c: &Checked, expires_ms: u64) -> String {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&expires_ms.to_be_bytes());
        for (name, value) in c.signed_fields() {
            ctx.update(name.as_bytes());
            ctx.update(&[0]);
            ctx.update(&(value.len() as u64).to_be_bytes());
            ctx.update(value.as_bytes());
        }
        hex::encode(ctx.sign().as_ref())
    }

    fn csrf_token(&self, c: &Checked) -> Result<String, ApiError> {
        let expires = now_ms() + CSRF_TTL_MS;
        Ok(format!("{expires}.{}", Self::csrf_mac(&self.csrf_key()?, c, expires)))
    }

    fn csrf_valid(&self, c: &Checked, token: Option<&str>) -> bool {
        let Some((exp, mac)) = token.and_then(|t| t.split_once('.')) else { return false };
        let Ok(exp) = exp.parse::<u64>() else { return false };
        let Ok(key) = self.csrf_key() else { return false };
        exp > now_ms() && crate::identity::auth::same_secret(Self::csrf_mac(&key, c, exp).as_bytes(), mac.as_bytes())
    }

    /// Checks a request's application, redirect, response type, scopes
    /// and PKCE. An unknown client or a redirect outside the registered
    /// one gets a page (the browser is never sent where the application
    /// did not register); the rest go back to the application.
    fn check_request(&self, req: &AuthorizeRequest) -> Result<Checked, Box<OAuthOutcome>> {
        let Some(client_id) = req.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return Err(Box::new(error_page(400, "invalid_request", "client_id is missing")));
        };
        let app = match rules::app(&self.state(), client_id) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(Box::new(error_page(400, "invalid_client", "no application has this client_id"))),
            Err(e) => return Err(Box::new(error_page(503, "temporarily_unavailable", format!("{e}")))),
        };
        let redirect_uri = req.redirect_uri.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| app.redirect_uri.clone());
        if !redirect_allowed(&app.redirect_uri, &redirect_uri) {
            return Err(Box::new(error_page(400, "invalid_request", "redirect_uri is not under the application's registered redirect URI")));
        }
        let implicit = req.response_type.as_deref() == Some("token");
        let mut c = Checked { app, redirect_uri, scopes: BTreeSet::new(), implicit, state: req.state.clone().unwrap_or_default(), challenge: None };
        match req.response_type.as_deref() {
            Some("code") | Some("token") => {}
            _ => return Err(Box::new(c.error_redirect("unsupported_response_type", "response_type must be code or token"))),
        }
        c.scopes = match parse_scopes(req.scope.as_deref().unwrap_or("")) {
            Ok(s) => s,
            Err(why) => return Err(Box::new(c.error_redirect("invalid_scope", &why.to_string()))),
        };
        if !implicit {
            let challenge = req.code_challenge.clone().filter(|s| !s.is_empty());
            match (req.code_challenge_method.as_deref(), &challenge) {
                (None | Some("S256"), Some(ch)) if ch.len() == 43 => c.challenge = Some(ch.clone()),
                (_, Some(_)) => {
                    return Err(Box::new(c.error_redirect("invalid_request", "code_challenge must be S256: 43 base64url characters, method S256")));
                }
                (Some(_), None) => return Err(Box::new(c.error_redirect("invalid_request", "code_challenge_method without code_challenge"))),
                (None, None) if c.app.public_client => {
                    return Err(Box::new(c.error_redirect("invalid_request", "a public client must use PKCE (code_challenge with S256)")));
                }
                (None, None) => {}
            }
        }
        Ok(c)
    }

    /// The user a request carries (header credentials, or the form's user
    /// name and password); `Ok(None)` when it carries none. Only users
    /// approve: a robot or a token cannot.
    async fn consenting_user(&self, caller: &Caller, form: &AuthorizeRequest) -> Result<Option<Principal>, ConsentError> {
        let caller = match (&caller.creds, &form.username) {
            (Credentials::None, Some(user)) if !user.is_empty() => {
                Caller { creds: Credentials::Basic { user: user.clone(), password: form.password.clone().unwrap_or_default() }, ip: caller.ip }
            }
            (Credentials::None, _) => return Ok(None),
            _ => caller.clone(),
        };
        match self.auth.authenticate(&caller).await {
            Ok(a) if a.grants.is_none() => match a.principal {
                p @ Principal::User { .. } => Ok(Some(p)),
                _ => Err(ConsentError::NotAUser),
            },
            Ok(_) => Err(ConsentError::RegistryToken),
            Err(e) if e.code == ErrorCode::Unavailable => Err(ConsentError::Unavailable(e.message)),
            Err(_) => Err(ConsentError::WrongCredentials),
        }
    }

    fn consent(&self, status: u16, c: &Checked, user: Option<&str>, error: Option<String>) -> OAuthOutcome {
        let csrf = match self.csrf_token(c) {
            Ok(t) => t,
            Err(e) => return error_page(503, "temporarily_unavailable", e.message),
        };
        let mut fields: Vec<(String, String)> = c.signed_fields().into_iter().map(|(k, v)| (k.to_string(), v)).filter(|(_, v)| !v.is_empty()).collect();
        if c.challenge.is_some() {
            fields.push(("code_challenge_method".into(), "S256".into()));
        }
        fields.push(("csrf_token".into(), csrf));
        let page = ConsentPage {
            app_name: c.app.name.clone(),
            app_description: c.app.description.clone(),
            organization: c.app.org.clone(),
            scopes: c.scopes.iter().map(|s| (s.as_str().to_string(), scope_words(*s).to_string())).collect(),
            fields,
            signed_in_as: user.map(str::to_string),
            error,
        };
        OAuthOutcome::Consent { status, page }
    }

    pub(super) async fn authorize_page(&self, caller: &Caller, req: AuthorizeRequest) -> OAuthOutcome {
        let c = match self.check_request(&req) {
            Ok(c) => c,
            Err(o) => return *o,
        };
        match self.consenting_user(caller, &AuthorizeRequest::default()).await {
            Ok(Some(p)) => self.consent(200, &c, Some(&p.performer()), None),
            Ok(None) => self.consent(200, &c, None, None),
            Err(why) => self.consent(401, &c, None, Some(why.to_string())),
        }
    }

    pub(super) async fn authorize_decide(&self, caller: &Caller, form: AuthorizeRequest, approve: bool) -> OAuthOutcome {
        let c = match self.check_request(&form) {
            Ok(c) => c,
            Err(o) => return *o,
        };
        if !self.csrf_valid(&c, form.csrf_token.as_deref()) {
            return error_page(400, "invalid_request", "the form's CSRF token is missing, expired or for another request: open the authorization page again");
        }
        if !approve {
            return c.error_redirect("access_denied", "the user denied the request");
        }
        let user = match self.consenting_user(caller, &form).await {
            Ok(Some(p)) => p,
            Ok(None) => return self.consent(401, &c, None, Some("sign in to approve".into())),
            Err(why) => return self.consent(401, &c, None, Some(why.to_string())),
        };
        let Principal::User { name, .. } = &user else { unreachable!("consenting_user gives users") };
        let actor = Actor::Client(ClientAccount::User(name.clone()));
        if c.implicit {
            let (rec, code) = self.new_token(&c.app, name, c.scopes.clone());
            match self.oauth_write(actor, OAuthCommand::IssueToken { client_id: c.app.client_id.clone(), token: rec.clone() }).await {
                Ok(MetaResponse::Done) => {}
                Ok(other) => return error_page(409, "access_denied", format!("no token was issued: {other:?}")),
                Err(e) => return error_page(e.code.status().as_u16(), "temporarily_unavailable", e.message),
            }
            self.log_token_assigned(&user, caller.ip, &c.app, &rec, "implicit");
            self.audit.flush().await;
            let expires_in = self.oauth.token_ttl_secs.to_string();
            let scope = scope_string(&c.scopes);
            let params = [("access_token", code.as_str()), ("token_type", "Bearer"), ("expires_in", &expires_in), ("scope", &scope), ("state", &c.state)];
            return OAuthOutcome::Redirect(with_params(&c.redirect_uri, &params, true));
        }
        let code = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        };
        let rec = OAuthCodeRecord {
            code_sha256: sha256_hex(&code),
            client_id: c.app.client_id.clone(),
            user: name.clone(),
            scopes: c.scopes.clone(),
            redirect_uri: c.redirect_uri.clone(),
            code_challenge: c.challenge.clone(),
            expires_at_ms: now_ms() + self.oauth.code_ttl_secs * 1000,
        };
        match self.oauth_write(actor, OAuthCommand::IssueCode(rec)).await {
            Ok(MetaResponse::Done) => {}
            Ok(other) => return error_page(409, "access_denied", format!("no code was issued: {other:?}")),
            Err(e) => return error_page(e.code.status().as_u16(), "temporarily_unavailable", e.message),
        }
        OAuthOutcome::Redirect(with_params(&c.redirect_uri, &[("code", &code), ("state", &c.state)], false))
    }

    pub(super) async fn access_token(&self, caller: &Caller, req: TokenRequest) -> Result<OAuthTokenResponse, OAuthError> {
        let e = |code: &str, why: String| OAuthError::new(code, why);
        match req.grant_type.as_deref() {
            None | Some("") => return Err(e("invalid_request", "grant_type is missing".into())),
            Some("authorization_code") => {}
            Some(other) => return Err(e("unsupported_grant_type", format!("grant_type {other:?} is not supported (authorization_code is)"))),
        }
        // The client: HTTP Basic or the form, not two different ones.
        let (client_id, secret) = match (&caller.creds, &req.client_id) {
            (Credentials::Basic { user, password }, form) => {
                if form.as_deref().is_some_and(|f| f != user) || req.client_secret.is_some() {
                    return Err(e("invalid_request", "client credentials are given twice".into()));
                }
                (user.clone(), Some(password.clone()))
            }
            (Credentials::None, Some(id)) => (id.clone(), req.client_secret.clone()),
            (Credentials::None, None) => return Err(e("invalid_client", "client authentication is missing".into())),
            (Credentials::Bearer(_) | Credentials::Session(_), _) => return Err(e("invalid_client", "authenticate the client with its id and secret".into())),
        };
        let state = self.state();
        let app = match rules::app(&state, &client_id) {
            Ok(Some(a)) => a,
            Ok(None) => return Err(e("invalid_client", "unknown client".into())),
            Err(err) => return Err(e("temporarily_unavailable", err.to_string())),
        };
        match secret.as_deref() {
            Some(s) if crate::identity::auth::same_secret(sha256_hex(s).as_bytes(), app.secret_sha256.as_bytes()) => {}
            None if app.public_client => {}
            _ => return Err(e("invalid_client", "wrong client secret".into())),
        }
        let Some(code) = req.code.as_deref().filter(|c| !c.is_empty()) else { return Err(e("invalid_request", "code is missing".into())) };
        let code_sha256 = sha256_hex(code);
        let rec: OAuthCodeRecord = match state.get(&keys::oauth_code(&code_sha256)) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(e("invalid_grant", "the code is unknown, used or expired".into())),
            Err(err) => return Err(e("temporarily_unavailable", err.to_string())),
        };
        if rec.client_id != app.client_id {
            return Err(e("invalid_grant", "the code was issued to another client".into()));
        }
        if rec.expires_at_ms <= now_ms() {
            return Err(e("invalid_grant", "the code has expired".into()));
        }
        if req.redirect_uri.as_deref().is_some_and(|r| r != rec.redirect_uri) {
            return Err(e("invalid_grant", "redirect_uri differs from the authorization request's".into()));
        }
        match (&rec.code_challenge, req.code_verifier.as_deref()) {
            (Some(ch), Some(v)) if pkce_matches(v, ch) => {}
            (Some(_), Some(_)) => return Err(e("invalid_grant", "code_verifier does not match the code_challenge".into())),
            (Some(_), None) => return Err(e("invalid_grant", "code_verifier is missing".into())),
            (None, _) if app.public_client => return Err(e("invalid_grant", "a public client must use PKCE".into())),
            (None, _) => {}
        }
        let scopes = match req.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            None => rec.scopes.clone(),
            Some(s) => match parse_scopes(s) {
                Ok(asked) if asked.is_subset(&rec.scopes) => asked,
                Ok(_) => return Err(e("invalid_scope", "the scope asked for is wider than the user approved".into())),
                Err(why) => return Err(e("invalid_scope", why.to_string())),
            },
        };
        let (token, access_token) = self.new_token(&app, &rec.user, scopes.clone());
        let cmd = OAuthCommand::ExchangeCode { code_sha256, client_id: app.client_id.clone(), token: token.clone(), now_ms: now_ms() };
        match self.oauth_write(Actor::Client(ClientAccount::User(rec.user.clone())), cmd).await {
            Ok(MetaResponse::Done) => {}
            Ok(MetaResponse::NotFound) => return Err(e("invalid_grant", "the code is unknown, used or expired".into())),
            Ok(MetaResponse::Refused(why)) => return Err(e("invalid_grant", why)),
            Ok(other) => return Err(e("server_error", format!("unexpected outcome {other:?}"))),
            Err(err) => return Err(e("temporarily_unavailable", err.message)),
        }
        let user = Principal::User { name: rec.user.clone(), superuser: false };
        self.log_token_assigned(&user, caller.ip, &app, &token, "authorization_code");
        self.audit.flush().await;
        Ok(OAuthTokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.oauth.token_ttl_secs,
            refresh_token: None,
            scope: scope_string(&scopes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_under_the_registered_uri() {
        let reg = "https://ci.example:8443/oauth/cb";
        assert!(redirect_allowed(reg, "https://ci.example:8443/oauth/cb"));
        assert!(redirect_allowed(reg, "https://ci.example:8443/oauth/cb/more?x=1"));
        for bad in [
            "http://ci.example:8443/oauth/cb",
            "https://ci.example/oauth/cb",
            "https://evil.example:8443/oauth/cb",
            "https://ci.example:8443/oauth/cbx",
            "https://ci.example:8443/oauth/",
            "https://ci.example:8443/oauth/cb/../../x",
            "https://user@ci.example:8443/oauth/cb",
            "https://ci.example:8443@evil.example/oauth/cb",
            "https://ci.example:8443/oauth/cb#frag",
            "not a url",
        ] {
            assert!(!redirect_allowed(reg, bad), "{bad}");
        }
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert!(pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn scopes_are_quays_eight() {
        assert_eq!(parse_scopes("repo:read repo:write").unwrap().len(), 2);
        assert_eq!(parse_scopes("repo:read,org:admin").unwrap().len(), 2);
        assert!(parse_scopes("repo:read repo:everything").is_err());
        assert!(parse_scopes("").is_err());
    }
}
