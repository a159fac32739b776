//! The identity part of the admin API, on Quay's paths and in Quay's
//! shapes where Quay has them, so scripts written for Quay carry over:
//! organizations, teams and members, robot accounts, repositories and
//! their permissions, users, application tokens, usage logs.
//!
//! Handlers parse and authenticate; the node's [`Identity`] decides what
//! the caller may do. The OpenAPI document at `/api/v1/openapi.json` is
//! generated from the annotations here, so it cannot drift from the code.
//!
//! Repository names with more than two components (`org/team/app`) go in
//! the `{repository}` segment with `/` encoded as `%2F`.
//!
//! This file holds the shapes the topics share, the [`Identity`] trait, the
//! extractors, and the routes of users, organizations, robots, teams and
//! repositories. Each other topic is a module with its shapes, handlers,
//! routes and OpenAPI paths: `tokens`, `logs`, `permissions`, `tags`,
//! `notifications`, `policies`, `quotas` (under `identity/`), and
//! `mirror`, `proxycache`, `oauth`, `scan` (`identity_*.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::access::{Access, Caller};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::notifications::*;

mod logs;
mod notifications;
mod permissions;
mod policies;
mod quotas;
mod tags;
mod tokens;
pub use logs::*;
pub use permissions::*;
pub use policies::*;
pub use quotas::*;
pub use tags::*;
pub use tokens::*;

#[path = "identity_mirror.rs"]
mod mirror;
pub use mirror::{MirrorProxy, MirrorRegistryConfig, MirrorRequest, MirrorRootRule, MirrorView, RepoStateChange};
#[path = "identity_proxycache.rs"]
mod proxycache;
pub use proxycache::{ProxyCacheRequest, ProxyCacheView};

#[path = "identity_oauth.rs"]
mod oauth;
pub use oauth::{
    ApplicationList, ApplicationRequest, ApplicationTokenList, ApplicationTokenView, ApplicationView, AuthorizeRequest, GenerateTokenRequest, OAuthError,
    OAuthOutcome, OAuthTokenResponse, PublicApplicationView, TokenRequest,
};

#[path = "identity_scan.rs"]
mod scan;
pub use scan::{FeedSourceRequest, FeedSourceView, FeedView, ScanCounts, ScannerStatus};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgCreate {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgView {
    pub name: String,
    pub email: Option<String>,
    /// The caller administers the organization.
    pub is_admin: bool,
    /// The caller is in one of its teams.
    pub is_member: bool,
    pub teams: BTreeMap<String, TeamView>,
    /// The time machine window, s: how long a deleted, moved or expired
    /// tag can be restored (and its images are kept).
    pub tag_expiration_s: u64,
}

/// `PUT /organization/{org}`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgUpdate {
    /// Only the current one: an organization's email is set at creation.
    #[serde(default)]
    pub email: Option<String>,
    /// The time machine window, s: one of the options the cluster allows
    /// (by default 0 s, 1 day, 1, 2 or 4 weeks).
    #[serde(default)]
    pub tag_expiration_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgList {
    pub organizations: Vec<OrgView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RobotCreate {
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RobotView {
    /// `namespace+short`: the login name.
    pub name: String,
    pub description: String,
    /// RFC 3339.
    pub created: String,
    /// The secret, only when just created or regenerated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RobotList {
    pub robots: Vec<RobotView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamUpdate {
    /// `member`, `creator` or `admin`.
    pub role: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamView {
    pub name: String,
    pub description: String,
    pub role: String,
    pub member_count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub name: String,
    /// Always `user` (robots are users with `is_robot`).
    pub kind: String,
    pub is_robot: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamMembers {
    pub name: String,
    pub members: Vec<MemberView>,
    pub can_edit: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoCreate {
    pub repository: String,
    pub namespace: String,
    /// `public` or `private`.
    pub visibility: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoCreated {
    pub namespace: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoView {
    pub namespace: String,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    pub kind: String,
    pub is_organization: bool,
    pub can_write: bool,
    pub can_admin: bool,
    /// Tag names.
    pub tags: Vec<String>,
    /// `NORMAL`, `READ_ONLY` or `MIRROR`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoList {
    pub repositories: Vec<RepoView>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepoListQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only public repositories.
    pub public: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepoUpdate {
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VisibilityChange {
    /// `public` or `private`.
    pub visibility: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Success {
    pub success: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CurrentUser {
    pub username: String,
    /// `user`, `robot`, `app_token`, `operator` or `anonymous`.
    pub kind: String,
    pub super_user: bool,
    pub organizations: Vec<String>,
    /// For an application token: its scopes.
    pub scopes: Vec<String>,
    /// For a user (or a token of one): the time machine window of the
    /// user's namespace, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_expiration_s: Option<u64>,
}

/// `PUT /user/`: the caller's own settings; at least one field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[serde(default)]
    pub password: Option<String>,
    /// The time machine window of the user's namespace, s: one of the
    /// options the cluster allows.
    #[serde(default)]
    pub tag_expiration_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub super_user: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserCreate {
    pub username: String,
    /// Generated (and returned once) when absent.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub superuser: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserCreated {
    pub username: String,
    /// Only when berth generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UserUpdate {
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub superuser: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyRotated {
    /// The new signing key's id (`kid` in token headers).
    pub kid: String,
}

/// `POST /api/v1/session`: the console's sign-in form.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub username: String,
    pub password: String,
}

/// A console session the node issued: the token goes into the HttpOnly
/// cookie, never into the page.
#[derive(Debug, Clone)]
pub struct SessionIssued {
    pub token: String,
    pub username: String,
    pub super_user: bool,
    pub expires_in: u64,
}

/// What the identity API needs from a node.
#[async_trait]
pub trait Identity: Send + Sync + 'static {
    /// Who the caller is; wrong credentials are a 401, none is anonymous.
    async fn authenticate(&self, caller: &Caller) -> Result<Access, ApiError>;
    /// Checks a user's password (the same check, throttling and usage
    /// log as a login) and issues a console session for them; a backend
    /// without sessions answers 405.
    async fn sign_in(&self, _ip: Option<std::net::IpAddr>, _req: SessionRequest) -> Result<SessionIssued, ApiError> {
        Err(ApiError::method_not_allowed("this backend has no console sessions"))
    }
    async fn current_user(&self, who: &Access) -> Result<CurrentUser, ApiError>;
    async fn change_own_password(&self, who: &Access, req: PasswordChange) -> Result<(), ApiError>;
    async fn list_users(&self, who: &Access) -> Result<UserList, ApiError>;
    async fn create_user(&self, who: &Access, req: UserCreate) -> Result<UserCreated, ApiError>;
    async fn update_user(&self, who: &Access, name: &str, req: UserUpdate) -> Result<UserView, ApiError>;
    async fn delete_user(&self, who: &Access, name: &str) -> Result<(), ApiError>;
    async fn list_orgs(&self, who: &Access) -> Result<OrgList, ApiError>;
    async fn create_org(&self, who: &Access, req: OrgCreate) -> Result<OrgView, ApiError>;
    async fn get_org(&self, who: &Access, org: &str) -> Result<OrgView, ApiError>;
    /// Changes an organization's settings; a backend without them answers 405.
    async fn update_org(&self, _who: &Access, _org: &str, _req: OrgUpdate) -> Result<OrgView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no organization settings"))
    }
    async fn delete_org(&self, who: &Access, org: &str) -> Result<(), ApiError>;
    /// Robots of an organization, or of the caller (`namespace: None`).
    async fn list_robots(&self, who: &Access, namespace: Option<&str>) -> Result<RobotList, ApiError>;
    async fn put_robot(&self, who: &Access, namespace: Option<&str>, short: &str, req: RobotCreate) -> Result<RobotView, ApiError>;
    async fn get_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<RobotView, ApiError>;
    async fn delete_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<(), ApiError>;
    async fn regenerate_robot(&self, who: &Access, namespace: Option<&str>, short: &str) -> Result<RobotView, ApiError>;
    async fn put_team(&self, who: &Access, org: &str, team: &str, req: TeamUpdate) -> Result<TeamView, ApiError>;
    async fn delete_team(&self, who: &Access, org: &str, team: &str) -> Result<(), ApiError>;
    async fn team_members(&self, who: &Access, org: &str, team: &str) -> Result<TeamMembers, ApiError>;
    async fn add_team_member(&self, who: &Access, org: &str, team: &str, member: &str) -> Result<MemberView, ApiError>;
    async fn remove_team_member(&self, who: &Access, org: &str, team: &str, member: &str) -> Result<(), ApiError>;
    async fn create_repo(&self, who: &Access, req: RepoCreate) -> Result<RepoCreated, ApiError>;
    async fn list_repos(&self, who: &Access, q: RepoListQuery) -> Result<RepoList, ApiError>;
    async fn get_repo(&self, who: &Access, repo: &str) -> Result<RepoView, ApiError>;
    async fn update_repo(&self, who: &Access, repo: &str, description: Option<String>, visibility: Option<String>) -> Result<(), ApiError>;
    async fn delete_repo(&self, who: &Access, repo: &str) -> Result<(), ApiError>;
    async fn list_permissions(&self, who: &Access, repo: &str, kind: GranteeKind) -> Result<PermissionList, ApiError>;
    /// `role: None` removes the grant.
    async fn set_permission(&self, who: &Access, repo: &str, kind: GranteeKind, name: &str, role: Option<&str>) -> Result<Option<PermissionView>, ApiError>;
    async fn list_tokens(&self, who: &Access) -> Result<AppTokenList, ApiError>;
    async fn create_token(&self, who: &Access, req: AppTokenCreate) -> Result<AppTokenCreated, ApiError>;
    async fn delete_token(&self, who: &Access, id: &str) -> Result<(), ApiError>;
    async fn logs(&self, who: &Access, filter: LogFilter) -> Result<LogPage, ApiError>;
    async fn rotate_token_key(&self, who: &Access) -> Result<KeyRotated, ApiError>;
    /// Tag history; a backend without it answers 405.
    async fn list_tags(&self, _who: &Access, _repo: &str, _q: TagListQuery) -> Result<TagList, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag history"))
    }
    async fn update_tag(&self, _who: &Access, _repo: &str, _tag: &str, _req: TagUpdate) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag history"))
    }
    async fn restore_tag(&self, _who: &Access, _repo: &str, _tag: &str, _req: TagRestore) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag history"))
    }
    /// Where the blobs of one of `repo`'s manifests are held (superusers
    /// and the repository's administrators).
    async fn manifest_placement(&self, _who: &Access, _repo: &str, _digest: &str) -> Result<ManifestPlacement, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no blob placement"))
    }
    /// Ends a tag's live row; it stays in the history, restorable.
    async fn delete_tag(&self, _who: &Access, _repo: &str, _tag: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag history"))
    }
    /// Notifications; a backend without them answers 501.
    async fn list_notifications(&self, _who: &Access, _target: &NotificationTarget) -> Result<NotificationList, ApiError> {
        Err(no_notifications())
    }
    async fn create_notification(&self, _who: &Access, _target: &NotificationTarget, _req: NotificationCreate) -> Result<NotificationView, ApiError> {
        Err(no_notifications())
    }
    async fn get_notification(&self, _who: &Access, _target: &NotificationTarget, _uuid: &str) -> Result<NotificationView, ApiError> {
        Err(no_notifications())
    }
    async fn delete_notification(&self, _who: &Access, _target: &NotificationTarget, _uuid: &str) -> Result<(), ApiError> {
        Err(no_notifications())
    }
    /// Sets the failure count back to 0.
    async fn reset_notification(&self, _who: &Access, _target: &NotificationTarget, _uuid: &str) -> Result<(), ApiError> {
        Err(no_notifications())
    }
    /// Queues the event's sample payload for delivery.
    async fn test_notification(&self, _who: &Access, _target: &NotificationTarget, _uuid: &str) -> Result<(), ApiError> {
        Err(no_notifications())
    }
    /// [`Identity::authenticate`] for the tag calls of `/repository/{r}/tag/…`,
    /// which robots may make too (within their role on the repository).
    async fn authenticate_for_tags(&self, caller: &Caller) -> Result<Access, ApiError> {
        self.authenticate(caller).await
    }
    async fn list_immutability_policies(&self, _who: &Access, _scope: &PolicyScope) -> Result<ImmutabilityPolicyList, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    /// Creates (`uuid: None`) or replaces a policy.
    async fn put_immutability_policy(
        &self,
        _who: &Access,
        _scope: &PolicyScope,
        _uuid: Option<&str>,
        _req: ImmutabilityPolicyBody,
    ) -> Result<ImmutabilityPolicyView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    async fn get_immutability_policy(&self, _who: &Access, _scope: &PolicyScope, _uuid: &str) -> Result<ImmutabilityPolicyView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    async fn delete_immutability_policy(&self, _who: &Access, _scope: &PolicyScope, _uuid: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    async fn list_autoprune_policies(&self, _who: &Access, _scope: &PolicyScope) -> Result<AutoPrunePolicyList, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    /// Creates (`uuid: None`) or replaces a policy.
    async fn put_autoprune_policy(
        &self,
        _who: &Access,
        _scope: &PolicyScope,
        _uuid: Option<&str>,
        _req: AutoPrunePolicyBody,
    ) -> Result<AutoPrunePolicyView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    async fn get_autoprune_policy(&self, _who: &Access, _scope: &PolicyScope, _uuid: &str) -> Result<AutoPrunePolicyView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    async fn delete_autoprune_policy(&self, _who: &Access, _scope: &PolicyScope, _uuid: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no tag policies"))
    }
    /// The quota of namespace `ns` (none: the caller's own), as a list of at most one.
    async fn list_quotas(&self, _who: &Access, _ns: Option<&str>) -> Result<Vec<QuotaView>, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn create_quota(&self, _who: &Access, _ns: &str, _req: QuotaBody) -> Result<QuotaView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn update_quota(&self, _who: &Access, _ns: &str, _id: &str, _req: QuotaBody) -> Result<QuotaView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn delete_quota(&self, _who: &Access, _ns: &str, _id: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn create_quota_limit(&self, _who: &Access, _ns: &str, _id: &str, _req: QuotaLimitBody) -> Result<QuotaView, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn delete_quota_limit(&self, _who: &Access, _ns: &str, _id: &str, _limit_id: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    async fn default_quota(&self, _who: &Access) -> Result<DefaultQuota, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    /// Sets (`Some`) or removes the cluster's default Reject quota.
    async fn set_default_quota(&self, _who: &Access, _req: Option<QuotaBody>) -> Result<DefaultQuota, ApiError> {
        Err(ApiError::method_not_allowed("this backend keeps no quotas"))
    }
    /// Repository states and mirrors; a backend without them answers 405.
    async fn change_repo_state(&self, _who: &Access, _repo: &str, _req: RepoStateChange) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend has no repository states"))
    }
    async fn get_mirror(&self, _who: &Access, _repo: &str) -> Result<MirrorView, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not mirror"))
    }
    /// `create`: `POST` (refused if one exists), else `PUT` (the fields given).
    async fn put_mirror(&self, _who: &Access, _repo: &str, _req: MirrorRequest, _create: bool) -> Result<MirrorView, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not mirror"))
    }
    /// `now`: `sync-now`, else `sync-cancel`.
    async fn mirror_sync(&self, _who: &Access, _repo: &str, _now: bool) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend does not mirror"))
    }
    /// Proxy-cache organizations; a backend without them answers 405.
    async fn get_proxy_cache(&self, _who: &Access, _org: &str) -> Result<ProxyCacheView, ApiError> {
        Err(ApiError::method_not_allowed("this backend has no proxy caches"))
    }
    async fn put_proxy_cache(&self, _who: &Access, _org: &str, _req: ProxyCacheRequest) -> Result<ProxyCacheView, ApiError> {
        Err(ApiError::method_not_allowed("this backend has no proxy caches"))
    }
    async fn delete_proxy_cache(&self, _who: &Access, _org: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend has no proxy caches"))
    }
    /// OAuth applications of organization `org` (its administrators').
    async fn list_applications(&self, _who: &Access, _org: &str) -> Result<ApplicationList, ApiError> {
        Err(no_oauth())
    }
    async fn create_application(&self, _who: &Access, _org: &str, _req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        Err(no_oauth())
    }
    async fn get_application(&self, _who: &Access, _org: &str, _client_id: &str) -> Result<ApplicationView, ApiError> {
        Err(no_oauth())
    }
    async fn update_application(&self, _who: &Access, _org: &str, _client_id: &str, _req: ApplicationRequest) -> Result<ApplicationView, ApiError> {
        Err(no_oauth())
    }
    async fn delete_application(&self, _who: &Access, _org: &str, _client_id: &str) -> Result<(), ApiError> {
        Err(no_oauth())
    }
    /// A new client secret, shown in the answer only.
    async fn reset_application_secret(&self, _who: &Access, _org: &str, _client_id: &str) -> Result<ApplicationView, ApiError> {
        Err(no_oauth())
    }
    async fn application_tokens(&self, _who: &Access, _org: &str, _client_id: &str) -> Result<ApplicationTokenList, ApiError> {
        Err(no_oauth())
    }
    async fn revoke_application_token(&self, _who: &Access, _org: &str, _client_id: &str, _token_id: &str) -> Result<(), ApiError> {
        Err(no_oauth())
    }
    async fn generate_application_token(
        &self,
        _who: &Access,
        _org: &str,
        _client_id: &str,
        _req: GenerateTokenRequest,
    ) -> Result<ApplicationTokenView, ApiError> {
        Err(no_oauth())
    }
    /// Anyone may see an application's name, description and organization.
    async fn public_application(&self, _client_id: &str) -> Result<PublicApplicationView, ApiError> {
        Err(no_oauth())
    }
    /// `GET /oauth/authorize`: the consent page, or an error page.
    async fn oauth_authorize(&self, _caller: &Caller, _req: AuthorizeRequest) -> OAuthOutcome {
        OAuthOutcome::Error { status: 404, page: crate::oauth_page::ErrorPage { error: "unsupported".into(), message: "this backend has no OAuth".into() } }
    }
    /// `POST /oauth/authorizeapp` (`approve`) or `/oauth/denyapp`.
    async fn oauth_decide(&self, _caller: &Caller, _form: AuthorizeRequest, _approve: bool) -> OAuthOutcome {
        OAuthOutcome::Error { status: 404, page: crate::oauth_page::ErrorPage { error: "unsupported".into(), message: "this backend has no OAuth".into() } }
    }
    /// `POST /oauth/access_token`.
    async fn oauth_access_token(&self, _caller: &Caller, _req: TokenRequest) -> Result<OAuthTokenResponse, OAuthError> {
        Err(OAuthError::new("unsupported_grant_type", "this backend has no OAuth"))
    }
    /// Quay's security report of a manifest; a backend without a scanner
    /// answers 405.
    async fn manifest_security(&self, _who: &Access, _repo: &str, _digest: &str, _vulnerabilities: bool) -> Result<serde_json::Value, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
    /// The image's SBOM (CycloneDX 1.5 JSON) once it is scanned; a
    /// backend without a scanner answers 405.
    async fn manifest_sbom(&self, _who: &Access, _repo: &str, _digest: &str) -> Result<serde_json::Value, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
    /// Imports an advisory feed snapshot (superusers).
    async fn import_feed(&self, _who: &Access, _name: &str, _bytes: bytes::Bytes) -> Result<FeedView, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
    async fn scanner_status(&self, _who: &Access) -> Result<ScannerStatus, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
    /// Adds or changes a feed fetched on a schedule (superusers).
    async fn put_feed_source(&self, _who: &Access, _name: &str, _req: FeedSourceRequest) -> Result<FeedSourceView, ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
    async fn delete_feed_source(&self, _who: &Access, _name: &str) -> Result<(), ApiError> {
        Err(ApiError::method_not_allowed("this backend does not scan"))
    }
}

fn no_oauth() -> ApiError {
    ApiError::method_not_allowed("this backend has no OAuth applications")
}

fn no_notifications() -> ApiError {
    ApiError::new(ErrorCode::Unsupported, "this backend delivers no notifications").with_status(StatusCode::NOT_IMPLEMENTED)
}

type Shared = Arc<dyn Identity>;

/// The identity routes under `/api/v1`, and the OpenAPI document.
pub fn routes(identity: Shared) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/user/", get(user_get).put(user_password))
        .route("/api/v1/user/robots", get(user_robot_list))
        .route("/api/v1/user/robots/{short}", put(user_robot_put).get(user_robot_get).delete(user_robot_delete))
        .route("/api/v1/user/robots/{short}/regenerate", post(user_robot_regenerate))
        .route("/api/v1/superuser/users/", get(users_list).post(user_create))
        .route("/api/v1/superuser/users/{username}", put(user_update).delete(user_delete))
        .route("/api/v1/superuser/organizations/", get(orgs_list))
        .route("/api/v1/superuser/keys/rotate", post(rotate_key))
        .route("/api/v1/organization/", post(org_create))
        .route("/api/v1/organization/{org}", get(org_get).put(org_update).delete(org_delete))
        .route("/api/v1/organization/{org}/robots", get(robot_list))
        .route("/api/v1/organization/{org}/robots/{short}", put(robot_put).get(robot_get).delete(robot_delete))
        .route("/api/v1/organization/{org}/robots/{short}/regenerate", post(robot_regenerate))
        .route("/api/v1/organization/{org}/team/{team}", put(team_put).delete(team_delete))
        .route("/api/v1/organization/{org}/team/{team}/members", get(team_members))
        .route("/api/v1/organization/{org}/team/{team}/members/{member}", put(team_member_add).delete(team_member_remove))
        .route("/api/v1/repository", get(repo_list).post(repo_create))
        .route("/api/v1/repository/{namespace}/{repository}", get(repo_get).put(repo_update).delete(repo_delete))
        .route("/api/v1/repository/{namespace}/{repository}/changevisibility", post(repo_visibility))
        .merge(tokens::routes())
        .merge(logs::routes())
        .merge(permissions::routes())
        .merge(tags::routes())
        .merge(notifications::routes())
        .merge(policies::routes())
        .merge(quotas::routes())
        .merge(mirror::routes())
        .merge(proxycache::routes())
        .merge(oauth::routes())
        .merge(scan::routes())
        .with_state(identity)
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "berth admin API", description = "Organizations, teams, robots, repositories, permissions, users, tokens and usage logs, on Quay's paths."),
    paths(
        user_get, user_password, user_robot_list, user_robot_put, user_robot_get, user_robot_delete, user_robot_regenerate,
        users_list, user_create, user_update, user_delete, orgs_list, rotate_key,
        org_create, org_get, org_update, org_delete, robot_list, robot_put, robot_get, robot_delete, robot_regenerate,
        team_put, team_delete, team_members, team_member_add, team_member_remove,
        repo_list, repo_create, repo_get, repo_update, repo_delete, repo_visibility,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

/// The OpenAPI document, as JSON.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(tokens::TokenDoc::openapi());
    doc.merge(logs::LogDoc::openapi());
    doc.merge(permissions::PermissionDoc::openapi());
    doc.merge(tags::TagDoc::openapi());
    doc.merge(notifications::NotificationDoc::openapi());
    doc.merge(policies::PolicyDoc::openapi());
    doc.merge(quotas::QuotaDoc::openapi());
    doc.merge(mirror::MirrorDoc::openapi());
    doc.merge(proxycache::ProxyCacheDoc::openapi());
    doc.merge(oauth::OAuthDoc::openapi());
    doc.merge(scan::ScanDoc::openapi());
    doc
}

async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(ApiError::from)
}

/// The caller, authenticated. Handlers name it (after their path and
/// query, before their body) instead of each repeating "who is calling":
/// credentials are parsed, then [`Identity::authenticate`] runs, once.
struct Who(Access);

impl FromRequestParts<Shared> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, id: &Shared) -> Result<Who, ApiError> {
        let caller = Caller::from_request_parts(parts, id).await?;
        Ok(Who(id.authenticate(&caller).await?))
    }
}

/// [`Who`] for the tag calls, which robots may make too.
struct WhoForTags(Access);

impl FromRequestParts<Shared> for WhoForTags {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, id: &Shared) -> Result<WhoForTags, ApiError> {
        let caller = Caller::from_request_parts(parts, id).await?;
        Ok(WhoForTags(id.authenticate_for_tags(&caller).await?))
    }
}

/// A query string whose refusal is the API's 400, taken before the caller
/// is authenticated (as a malformed query always was).
struct ApiQuery<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(q))
    }
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn repo_name(ns: &str, repo: &str) -> String {
    format!("{ns}/{repo}")
}

/// Path parameters: one name segment.
#[derive(Deserialize)]
struct RepoPath {
    namespace: String,
    repository: String,
}

impl RepoPath {
    fn name(&self) -> String {
        repo_name(&self.namespace, &self.repository)
    }
}

const NS: &str = "Namespace (user or organization)";
const REPO: &str = "Repository name within the namespace (`/` as `%2F`)";

#[utoipa::path(get, path = "/api/v1/user/", tag = "user", responses((status = 200, body = CurrentUser), (status = 401, body = ErrorBody)))]
async fn user_get(State(id): State<Shared>, Who(w): Who) -> Result<Json<CurrentUser>, ApiError> {
    Ok(Json(id.current_user(&w).await?))
}

#[utoipa::path(put, path = "/api/v1/user/", tag = "user", request_body = PasswordChange,
    responses((status = 204, description = "Password or time machine window changed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn user_password(State(id): State<Shared>, Who(w): Who, b: Result<Json<PasswordChange>, JsonRejection>) -> Result<StatusCode, ApiError> {
    id.change_own_password(&w, body(b)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/user/robots", tag = "robot", responses((status = 200, body = RobotList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn user_robot_list(State(id): State<Shared>, Who(w): Who) -> Result<Json<RobotList>, ApiError> {
    Ok(Json(id.list_robots(&w, None).await?))
}

#[utoipa::path(put, path = "/api/v1/user/robots/{short}", tag = "robot", params(("short" = String, Path, description = "Robot short name")),
    request_body(content = Option<RobotCreate>), responses((status = 201, body = RobotView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn user_robot_put(
    State(id): State<Shared>,
    Path(short): Path<String>,
    Who(w): Who,
    b: Option<Json<RobotCreate>>,
) -> Result<(StatusCode, Json<RobotView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.put_robot(&w, None, &short, b.map(|Json(r)| r).unwrap_or_default()).await?)))
}

#[utoipa::path(get, path = "/api/v1/user/robots/{short}", tag = "robot", params(("short" = String, Path, description = "Robot short name")),
    responses((status = 200, body = RobotView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn user_robot_get(State(id): State<Shared>, Path(short): Path<String>, Who(w): Who) -> Result<Json<RobotView>, ApiError> {
    Ok(Json(id.get_robot(&w, None, &short).await?))
}

#[utoipa::path(delete, path = "/api/v1/user/robots/{short}", tag = "robot", params(("short" = String, Path, description = "Robot short name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn user_robot_delete(State(id): State<Shared>, Path(short): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_robot(&w, None, &short).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/user/robots/{short}/regenerate", tag = "robot", params(("short" = String, Path, description = "Robot short name")),
    responses((status = 200, body = RobotView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn user_robot_regenerate(State(id): State<Shared>, Path(short): Path<String>, Who(w): Who) -> Result<Json<RobotView>, ApiError> {
    Ok(Json(id.regenerate_robot(&w, None, &short).await?))
}

#[utoipa::path(get, path = "/api/v1/superuser/users/", tag = "user", responses((status = 200, body = UserList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn users_list(State(id): State<Shared>, Who(w): Who) -> Result<Json<UserList>, ApiError> {
    Ok(Json(id.list_users(&w).await?))
}

#[utoipa::path(post, path = "/api/v1/superuser/users/", tag = "user", request_body = UserCreate,
    responses((status = 201, body = UserCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn user_create(State(id): State<Shared>, Who(w): Who, b: Result<Json<UserCreate>, JsonRejection>) -> Result<(StatusCode, Json<UserCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_user(&w, body(b)?).await?)))
}

#[utoipa::path(put, path = "/api/v1/superuser/users/{username}", tag = "user", params(("username" = String, Path, description = "User name")),
    request_body = UserUpdate, responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn user_update(
    State(id): State<Shared>,
    Path(username): Path<String>,
    Who(w): Who,
    b: Result<Json<UserUpdate>, JsonRejection>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(id.update_user(&w, &username, body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/superuser/users/{username}", tag = "user", params(("username" = String, Path, description = "User name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn user_delete(State(id): State<Shared>, Path(username): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_user(&w, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/superuser/organizations/", tag = "organization",
    responses((status = 200, body = OrgList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn orgs_list(State(id): State<Shared>, Who(w): Who) -> Result<Json<OrgList>, ApiError> {
    Ok(Json(id.list_orgs(&w).await?))
}

#[utoipa::path(post, path = "/api/v1/superuser/keys/rotate", tag = "cluster",
    responses((status = 200, body = KeyRotated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn rotate_key(State(id): State<Shared>, Who(w): Who) -> Result<Json<KeyRotated>, ApiError> {
    Ok(Json(id.rotate_token_key(&w).await?))
}

#[utoipa::path(post, path = "/api/v1/organization/", tag = "organization", request_body = OrgCreate,
    responses((status = 201, body = OrgView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn org_create(State(id): State<Shared>, Who(w): Who, b: Result<Json<OrgCreate>, JsonRejection>) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_org(&w, body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}", tag = "organization", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = OrgView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_get(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<OrgView>, ApiError> {
    Ok(Json(id.get_org(&w, &org).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}", tag = "organization", params(("org" = String, Path, description = NS)), request_body = OrgUpdate,
    responses((status = 200, body = OrgView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn org_update(
    State(id): State<Shared>,
    Path(org): Path<String>,
    Who(w): Who,
    b: Result<Json<OrgUpdate>, JsonRejection>,
) -> Result<Json<OrgView>, ApiError> {
    Ok(Json(id.update_org(&w, &org, body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}", tag = "organization", params(("org" = String, Path, description = NS)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn org_delete(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_org(&w, &org).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/robots", tag = "robot", params(("org" = String, Path, description = NS)),
    responses((status = 200, body = RobotList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn robot_list(State(id): State<Shared>, Path(org): Path<String>, Who(w): Who) -> Result<Json<RobotList>, ApiError> {
    Ok(Json(id.list_robots(&w, Some(&org)).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/robots/{short}", tag = "robot",
    params(("org" = String, Path, description = NS), ("short" = String, Path, description = "Robot short name")),
    request_body(content = Option<RobotCreate>),
    responses((status = 201, body = RobotView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn robot_put(
    State(id): State<Shared>,
    Path((org, short)): Path<(String, String)>,
    Who(w): Who,
    b: Option<Json<RobotCreate>>,
) -> Result<(StatusCode, Json<RobotView>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.put_robot(&w, Some(&org), &short, b.map(|Json(r)| r).unwrap_or_default()).await?)))
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/robots/{short}", tag = "robot",
    params(("org" = String, Path, description = NS), ("short" = String, Path, description = "Robot short name")),
    responses((status = 200, body = RobotView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn robot_get(State(id): State<Shared>, Path((org, short)): Path<(String, String)>, Who(w): Who) -> Result<Json<RobotView>, ApiError> {
    Ok(Json(id.get_robot(&w, Some(&org), &short).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/robots/{short}", tag = "robot",
    params(("org" = String, Path, description = NS), ("short" = String, Path, description = "Robot short name")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn robot_delete(State(id): State<Shared>, Path((org, short)): Path<(String, String)>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_robot(&w, Some(&org), &short).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/organization/{org}/robots/{short}/regenerate", tag = "robot",
    params(("org" = String, Path, description = NS), ("short" = String, Path, description = "Robot short name")),
    responses((status = 200, body = RobotView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn robot_regenerate(State(id): State<Shared>, Path((org, short)): Path<(String, String)>, Who(w): Who) -> Result<Json<RobotView>, ApiError> {
    Ok(Json(id.regenerate_robot(&w, Some(&org), &short).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/team/{team}", tag = "team",
    params(("org" = String, Path, description = NS), ("team" = String, Path, description = "Team name")), request_body = TeamUpdate,
    responses((status = 200, body = TeamView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_put(
    State(id): State<Shared>,
    Path((org, team)): Path<(String, String)>,
    Who(w): Who,
    b: Result<Json<TeamUpdate>, JsonRejection>,
) -> Result<Json<TeamView>, ApiError> {
    Ok(Json(id.put_team(&w, &org, &team, body(b)?).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/team/{team}", tag = "team",
    params(("org" = String, Path, description = NS), ("team" = String, Path, description = "Team name")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_delete(State(id): State<Shared>, Path((org, team)): Path<(String, String)>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_team(&w, &org, &team).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/organization/{org}/team/{team}/members", tag = "team",
    params(("org" = String, Path, description = NS), ("team" = String, Path, description = "Team name")),
    responses((status = 200, body = TeamMembers), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_members(State(id): State<Shared>, Path((org, team)): Path<(String, String)>, Who(w): Who) -> Result<Json<TeamMembers>, ApiError> {
    Ok(Json(id.team_members(&w, &org, &team).await?))
}

#[utoipa::path(put, path = "/api/v1/organization/{org}/team/{team}/members/{member}", tag = "team",
    params(("org" = String, Path, description = NS), ("team" = String, Path, description = "Team name"), ("member" = String, Path, description = "User or robot (`ns+short`)")),
    responses((status = 200, body = MemberView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_member_add(
    State(id): State<Shared>,
    Path((org, team, member)): Path<(String, String, String)>,
    Who(w): Who,
) -> Result<Json<MemberView>, ApiError> {
    Ok(Json(id.add_team_member(&w, &org, &team, &member).await?))
}

#[utoipa::path(delete, path = "/api/v1/organization/{org}/team/{team}/members/{member}", tag = "team",
    params(("org" = String, Path, description = NS), ("team" = String, Path, description = "Team name"), ("member" = String, Path, description = "User or robot")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn team_member_remove(State(id): State<Shared>, Path((org, team, member)): Path<(String, String, String)>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.remove_team_member(&w, &org, &team, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/repository", tag = "repository", params(RepoListQuery),
    responses((status = 200, body = RepoList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn repo_list(State(id): State<Shared>, ApiQuery(q): ApiQuery<RepoListQuery>, Who(w): Who) -> Result<Json<RepoList>, ApiError> {
    Ok(Json(id.list_repos(&w, q).await?))
}

#[utoipa::path(post, path = "/api/v1/repository", tag = "repository", request_body = RepoCreate,
    responses((status = 201, body = RepoCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn repo_create(State(id): State<Shared>, Who(w): Who, b: Result<Json<RepoCreate>, JsonRejection>) -> Result<(StatusCode, Json<RepoCreated>), ApiError> {
    Ok((StatusCode::CREATED, Json(id.create_repo(&w, body(b)?).await?)))
}

#[utoipa::path(get, path = "/api/v1/repository/{namespace}/{repository}", tag = "repository",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 200, body = RepoView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_get(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<Json<RepoView>, ApiError> {
    Ok(Json(id.get_repo(&w, &p.name()).await?))
}

#[utoipa::path(put, path = "/api/v1/repository/{namespace}/{repository}", tag = "repository",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = RepoUpdate,
    responses((status = 200, body = Success), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_update(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<RepoUpdate>, JsonRejection>,
) -> Result<Json<Success>, ApiError> {
    id.update_repo(&w, &p.name(), Some(body(b)?.description), None).await?;
    Ok(Json(Success { success: true }))
}

#[utoipa::path(delete, path = "/api/v1/repository/{namespace}/{repository}", tag = "repository",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)),
    responses((status = 204, description = "Deleted with its tags and manifests"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_delete(State(id): State<Shared>, Path(p): Path<RepoPath>, Who(w): Who) -> Result<StatusCode, ApiError> {
    id.delete_repo(&w, &p.name()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/repository/{namespace}/{repository}/changevisibility", tag = "repository",
    params(("namespace" = String, Path, description = NS), ("repository" = String, Path, description = REPO)), request_body = VisibilityChange,
    responses((status = 200, body = Success), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn repo_visibility(
    State(id): State<Shared>,
    Path(p): Path<RepoPath>,
    Who(w): Who,
    b: Result<Json<VisibilityChange>, JsonRejection>,
) -> Result<Json<Success>, ApiError> {
    id.update_repo(&w, &p.name(), None, Some(body(b)?.visibility)).await?;
    Ok(Json(Success { success: true }))
}
