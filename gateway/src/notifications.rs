//! The shapes of repository notifications on Quay's paths
//! (`/repository/{r}/notification/…`, and namespace-wide ones at
//! `/organization/{org}/notifications…`). The routes are `identity`'s; the
//! rules (which events, methods and targets) are the node's.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a notification listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationTarget {
    /// `namespace/name`.
    Repository(String),
    /// Every repository of the organization.
    Namespace(String),
}

/// `POST …/notification/`: Quay's request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationCreate {
    /// `repo_push`, `repo_image_expiry`, `repo_mirror_sync_started`,
    /// `repo_mirror_sync_success`, `repo_mirror_sync_failed`,
    /// `vulnerability_found`, `quota_warning` or `quota_error`.
    pub event: String,
    /// `webhook`, `slack`, `email` or `cloudevents`.
    pub method: String,
    /// The method's settings: `url` (webhook, slack, cloudevents),
    /// `template` (webhook, a JSON document with `${field}` placeholders),
    /// `email` (email); `headers` (extra request headers) for any HTTP method.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The event's settings: `days` for `repo_image_expiry`, `level` for
    /// `vulnerability_found`.
    #[serde(default, rename = "eventConfig", alias = "event_config")]
    #[schema(value_type = Object)]
    pub event_config: serde_json::Value,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    pub uuid: String,
    pub title: String,
    pub event: String,
    pub method: String,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[schema(value_type = Object)]
    pub event_config: serde_json::Value,
    /// Events given up on in a row; at 3 the notification is skipped until reset.
    pub number_of_failures: u32,
    /// Events waiting for delivery.
    pub pending: u64,
    /// The key of the `X-Berth-Signature` HMAC-SHA256 over each body:
    /// shown once, in the answer to the creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<NotificationView>,
}
