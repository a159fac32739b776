//! Notifications on Quay's paths: a repository's (its admins') and an
//! organization's (its admins'). What may be created is `crate::notify`'s
//! rule; the records and their outbox are the state machine's
//! (`berth_raft::state::notifications`). The signing secret is shown in
//! the answer to the creation only; header values are never shown.

use berth_gateway::notifications::*;
use berth_raft::command::{NotificationCommand, NotificationRecord, NotificationScope};
use berth_raft::state::notifications as stored;

use super::*;

fn scope_of(target: &NotificationTarget) -> NotificationScope {
    match target {
        NotificationTarget::Repository(r) => NotificationScope::Repository(r.clone()),
        NotificationTarget::Namespace(n) => NotificationScope::Namespace(n.clone()),
    }
}

fn view(n: &NotificationRecord, pending: u64, secret: Option<String>) -> NotificationView {
    NotificationView {
        uuid: n.uuid.clone(),
        title: n.title.clone(),
        event: n.event.clone(),
        method: n.method.clone(),
        config: crate::notify::shown_config(&n.config_json),
        event_config: serde_json::from_str(&n.event_config_json).unwrap_or(serde_json::Value::Null),
        number_of_failures: n.number_of_failures,
        pending,
        signing_secret: secret,
    }
}

impl NodeIdentity {
    /// The caller must administer the target; answers the scope and the
    /// usage log's namespace and repository.
    fn notification_admin(&self, who: &Access, target: &NotificationTarget) -> Result<(NotificationScope, String, Option<String>), ApiError> {
        require_scope(who, "repo:admin", "manage notifications")?;
        match target {
            NotificationTarget::Repository(r) => {
                self.repo_with(who, r, Role::Admin)?;
                Ok((scope_of(target), namespace_of(r).unwrap_or("").to_string(), Some(r.clone())))
            }
            NotificationTarget::Namespace(org) => {
                self.require_org_admin(who, org)?;
                Ok((scope_of(target), org.clone(), None))
            }
        }
    }

    fn pending_of(&self, uuid: &str) -> Result<u64, ApiError> {
        Ok(stored::outbox(&self.state(), uuid).map_err(state_err)?.len() as u64)
    }

    /// Notification `uuid` of the target, or 404.
    fn notification_of(&self, scope: &NotificationScope, uuid: &str) -> Result<NotificationRecord, ApiError> {
        let n: Option<NotificationRecord> = self.state().get(&stored::keys::notification(uuid)).map_err(state_err)?;
        n.filter(|n| n.scope == *scope).ok_or_else(|| not_found(format!("no notification {uuid} here")))
    }

    async fn notification_write(&self, who: &Access, cmd: NotificationCommand, uuid: &str) -> Result<(), ApiError> {
        match self.meta.write(actor_of(&who.principal), MetaCommand::Notification(cmd)).await.map_err(meta_err)? {
            MetaResponse::Done => Ok(()),
            MetaResponse::NotFound => Err(not_found(format!("no notification {uuid} here"))),
            MetaResponse::Refused(why) => Err(ApiError::new(ErrorCode::Conflict, why)),
            other => Err(ApiError::new(ErrorCode::Internal, format!("unexpected outcome {other:?}"))),
        }
    }

    pub(super) async fn notifications_list(&self, who: &Access, target: &NotificationTarget) -> Result<NotificationList, ApiError> {
        let (scope, _, _) = self.notification_admin(who, target)?;
        let mut notifications = Vec::new();
        for n in stored::of_scope(&self.state(), &scope).map_err(state_err)? {
            notifications.push(view(&n, self.pending_of(&n.uuid)?, None));
        }
        Ok(NotificationList { notifications })
    }

    pub(super) async fn notification_create(&self, who: &Access, target: &NotificationTarget, req: NotificationCreate) -> Result<NotificationView, ApiError> {
        let (scope, ns, repo) = self.notification_admin(who, target)?;
        if let NotificationTarget::Namespace(org) = target {
            // Organizations only, as Quay: a user's own repositories take
            // notifications one by one.
            self.org_record(org)?;
        }
        let title = req.title.unwrap_or_default();
        if title.chars().count() > 255 || title.chars().any(char::is_control) {
            return Err(bad("title must be at most 255 printable characters"));
        }
        let checked = crate::notify::check(&self.notify, &req.event, &req.method, &req.config, &req.event_config).await.map_err(|e| bad(e.to_string()))?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let rec = NotificationRecord {
            uuid: uuid_v4(),
            scope,
            title,
            event: req.event.clone(),
            method: req.method.clone(),
            config_json: checked.config.to_string(),
            event_config_json: checked.event_config.to_string(),
            secret: secret.clone(),
            created_at_ms: now_ms(),
            number_of_failures: 0,
            next_seq: 0,
            delivered: 0,
            failed: 0,
            dropped: 0,
        };
        self.notification_write(who, NotificationCommand::Create(rec.clone()), &rec.uuid).await?;
        let meta = vec![("event", rec.event.clone()), ("method", rec.method.clone()), ("notification_id", rec.uuid.clone())];
        self.log(who, "add_repo_notification", Some(&ns), repo.as_deref(), meta).await;
        Ok(view(&rec, 0, Some(secret)))
    }

    pub(super) async fn notification_get(&self, who: &Access, target: &NotificationTarget, uuid: &str) -> Result<NotificationView, ApiError> {
        let (scope, _, _) = self.notification_admin(who, target)?;
        let n = self.notification_of(&scope, uuid)?;
        Ok(view(&n, self.pending_of(uuid)?, None))
    }

    pub(super) async fn notification_delete(&self, who: &Access, target: &NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        let (scope, ns, repo) = self.notification_admin(who, target)?;
        let n = self.notification_of(&scope, uuid)?;
        self.notification_write(who, NotificationCommand::Delete { uuid: uuid.to_string() }, uuid).await?;
        let meta = vec![("event", n.event.clone()), ("method", n.method.clone()), ("notification_id", n.uuid.clone())];
        self.log(who, "delete_repo_notification", Some(&ns), repo.as_deref(), meta).await;
        Ok(())
    }

    pub(super) async fn notification_reset(&self, who: &Access, target: &NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        let (scope, ns, repo) = self.notification_admin(who, target)?;
        let n = self.notification_of(&scope, uuid)?;
        self.notification_write(who, NotificationCommand::Reset { uuid: uuid.to_string() }, uuid).await?;
        let meta = vec![("event", n.event.clone()), ("method", n.method.clone()), ("notification_id", n.uuid.clone())];
        self.log(who, "reset_repo_notification", Some(&ns), repo.as_deref(), meta).await;
        Ok(())
    }

    pub(super) async fn notification_test(&self, who: &Access, target: &NotificationTarget, uuid: &str) -> Result<(), ApiError> {
        let (scope, _, _) = self.notification_admin(who, target)?;
        self.notification_of(&scope, uuid)?;
        self.notification_write(who, NotificationCommand::Test { uuid: uuid.to_string(), now_ms: now_ms() }, uuid).await
    }
}

/// A random (version 4) UUID, as Quay names notifications.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
