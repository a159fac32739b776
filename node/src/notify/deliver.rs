//! The deliverer: on the leader (it moves with leadership), sends every
//! waiting event and records the outcome in Raft.
//!
//! At least once: an event leaves the outbox only by a `Delivered` or
//! `GaveUp` command, written after the attempt; a leader that dies between
//! the receiver's 2xx and that command leaves the event to the next
//! leader, which sends it again with the same id. Failed attempts are
//! retried with exponential backoff and jitter until
//! `retry_total_secs` after the event was queued; then it is given up on,
//! which counts towards the notification's `number_of_failures`. Retry
//! timing is kept in memory: a new leader starts each waiting event again
//! at its first attempt, but the total is measured from the queueing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_raft::command::{MetaCommand, MetaResponse, NotificationCommand, NotificationRecord, NotificationScope, OutboxRecord, NOTIFICATION_MAX_FAILURES};
use berth_raft::state::notifications::{all, pending};
use berth_raft::StateRead;
use berth_raft::{Actor, MetaNodeHandle};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::{cloudevents_type, fill_template, render, signature, Policy, Rendered, Site, EVENT_ID_HEADER, SIGNATURE_HEADER};
use crate::config::{NotificationsConfig, SmtpConfig, SmtpTls};
use crate::util::{now_ms, rfc3339};

/// Attempts in flight at once, over all notifications.
const CONCURRENT_ATTEMPTS: usize = 16;
/// The first retry's wait; each next one doubles, up to the configured cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where the deliverer's usage-log records go: kind, namespace,
/// repository, metadata (the runtime wires the node's usage log).
pub type UsageLog = Arc<dyn Fn(&str, Option<&str>, Option<&str>, Vec<(&'static str, String)>) + Send + Sync>;

#[derive(Debug, Default)]
struct Attempts {
    tries: u32,
    next: Option<Instant>,
    in_flight: bool,
}

pub struct Deliverer {
    meta: MetaNodeHandle,
    usage_log: UsageLog,
    policy: Policy,
    cfg: NotificationsConfig,
    site: Site,
    smtp_password: Option<String>,
    attempts: Mutex<HashMap<String, Attempts>>,
    slots: Arc<Semaphore>,
}

impl Deliverer {
    pub fn new(meta: MetaNodeHandle, usage_log: UsageLog, cfg: NotificationsConfig, site: Site) -> anyhow::Result<Arc<Deliverer>> {
        let smtp_password = match cfg.smtp.as_ref() {
            Some(SmtpConfig { password_file: Some(f), .. }) => {
                Some(std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("smtp password_file {}: {e}", f.display()))?.trim_end().to_string())
            }
            Some(s) => s.password.clone(),
            None => None,
        };
        Ok(Arc::new(Deliverer {
            meta,
            usage_log,
            policy: Policy::new(&cfg),
            cfg,
            site,
            smtp_password,
            attempts: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(CONCURRENT_ATTEMPTS)),
        }))
    }

    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.cfg.poll_interval_ms)) => self.pass(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Starts an attempt for every waiting event that is due.
    fn pass(self: &Arc<Self>) {
        if !self.meta.is_leader() {
            self.attempts.lock().expect("attempts lock").clear();
            return;
        }
        let state = self.meta.state();
        let (events, notifications) = match (pending(&state), all(&state)) {
            (Ok(e), Ok(n)) => (e, n.into_iter().map(|n| (n.uuid.clone(), n)).collect::<BTreeMap<_, _>>()),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "notifications: state unreadable");
                return;
            }
        };
        let now = Instant::now();
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let waiting: HashSet<String> = events.iter().map(OutboxRecord::id).collect();
        attempts.retain(|id, _| waiting.contains(id));
        for ev in events {
            let Some(n) = notifications.get(&ev.notification) else { continue };
            if n.skipped() && !matches!(ev.event, berth_raft::command::NotificationEvent::Test { .. }) {
                continue;
            }
            let a = attempts.entry(ev.id()).or_default();
            if a.in_flight || a.next.is_some_and(|t| t > now) {
                continue;
            }
            let Ok(slot) = self.slots.clone().try_acquire_owned() else { break };
            a.in_flight = true;
            let me = self.clone();
            let n = n.clone();
            tokio::spawn(async move {
                let _slot = slot;
                me.attempt(n, ev).await;
            });
        }
    }

    async fn attempt(&self, n: NotificationRecord, ev: OutboxRecord) {
        let id = ev.id();
        let sent = self.send(&n, &ev).await;
        let cmd = match &sent {
            Ok(()) => {
                tracing::info!(notification = %n.uuid, event = %id, method = %n.method, "notification delivered");
                Some(NotificationCommand::Delivered { uuid: n.uuid.clone(), seq: ev.seq })
            }
            Err(e) => {
                let tries = {
                    let mut attempts = self.attempts.lock().expect("attempts lock");
                    let a = attempts.entry(id.clone()).or_default();
                    a.tries += 1;
                    a.tries
                };
                let waited = now_ms().saturating_sub(ev.created_at_ms);
                if waited >= self.cfg.retry_total_secs * 1000 {
                    tracing::warn!(notification = %n.uuid, event = %id, method = %n.method, tries, error = %e, "notification given up on");
                    Some(NotificationCommand::GaveUp { uuid: n.uuid.clone(), seq: ev.seq })
                } else {
                    tracing::info!(notification = %n.uuid, event = %id, method = %n.method, tries, error = %e, "notification attempt failed; retrying");
                    None
                }
            }
        };
        let tries = self.attempts.lock().expect("attempts lock").get(&id).map_or(0, |a| a.tries);
        if let Some(cmd) = cmd {
            let gave_up = matches!(cmd, NotificationCommand::GaveUp { .. });
            match self.meta.write(Actor::Node, MetaCommand::Notification(cmd)).await {
                Ok(MetaResponse::Done | MetaResponse::NotFound) => {
                    self.attempts.lock().expect("attempts lock").remove(&id);
                    if gave_up {
                        self.log_give_up(&n.uuid, &id);
                    }
                    return;
                }
                // Sent but not recorded: the next pass (here or on the next
                // leader) sends it again, with the same id.
                Ok(other) => tracing::warn!(event = %id, outcome = ?other, "notification outcome not recorded"),
                Err(e) => tracing::warn!(event = %id, error = %e, "notification outcome not recorded"),
            }
        }
        let wait = self.backoff(tries.max(1));
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let a = attempts.entry(id).or_default();
        a.in_flight = false;
        a.next = Some(Instant::now() + wait);
    }

    /// The usage log shows every event given up on, and a notification
    /// that is skipped from now on.
    fn log_give_up(&self, uuid: &str, event: &str) {
        let state = self.meta.state();
        let Ok(Some(n)) = state.get::<NotificationRecord>(&berth_raft::state::notifications::keys::notification(uuid)) else { return };
        let (ns, repo) = match &n.scope {
            NotificationScope::Repository(r) => (r.split_once('/').map_or("", |(ns, _)| ns).to_string(), Some(r.as_str())),
            NotificationScope::Namespace(ns) => (ns.clone(), None),
        };
        let meta = |extra: Vec<(&'static str, String)>| {
            let mut m = vec![("notification_id", n.uuid.clone()), ("event", n.event.clone()), ("method", n.method.clone())];
            m.extend(extra);
            m
        };
        (self.usage_log)("notification_failed", Some(&ns), repo, meta(vec![("event_id", event.to_string())]));
        if n.number_of_failures == NOTIFICATION_MAX_FAILURES {
            tracing::warn!(notification = %n.uuid, method = %n.method, "notification skipped after {NOTIFICATION_MAX_FAILURES} events given up on in a row, until reset");
            (self.usage_log)("notification_skipped", Some(&ns), repo, meta(vec![("number_of_failures", n.number_of_failures.to_string())]));
        }
    }

    /// The wait after the `tries`-th failed attempt: doubling from
    /// [`FIRST_RETRY`] up to the cap, each with ±25 % jitter so receivers
    /// that come back are not hit by every retry at once.
    fn backoff(&self, tries: u32) -> Duration {
        let cap = Duration::from_secs(self.cfg.retry_max_interval_secs);
        let base = FIRST_RETRY.saturating_mul(1u32 << (tries - 1).min(20)).min(cap);
        base.mul_f64(rand::rng().random_range(0.75..1.25))
    }

    async fn send(&self, n: &NotificationRecord, ev: &OutboxRecord) -> Result<(), SendError> {
        let r = render(ev, n, &self.site);
        let config: Value = serde_json::from_str(&n.config_json).map_err(SendError::StoredConfig)?;
        let (body, content_type) = match n.method.as_str() {
            "email" => return self.send_email(&config, &r).await,
            "slack" => (slack(n, &r), "application/json"),
            "cloudevents" => (cloudevent(ev, &r), "application/cloudevents+json"),
            _ => match config.get("template") {
                Some(t) => (fill_template(t, &r.payload), "application/json"),
                None => (r.payload.clone(), "application/json"),
            },
        };
        let body = serde_json::to_vec(&body).map_err(SendError::Encode)?;
        let url = config.get("url").and_then(Value::as_str).ok_or(SendError::NoUrl)?;
        let (url, addrs) = self.policy.check_url(url).await?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        // The request goes only to the addresses just checked, and a
        // redirect is an answer, not a new target.
        let client = reqwest::Client::builder()
            .resolve_to_addrs(&host, &addrs)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(self.cfg.attempt_timeout_secs))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SendError::Client)?;
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(EVENT_ID_HEADER, ev.id())
            .header(SIGNATURE_HEADER, signature(&n.secret, &body));
        if let Some(Value::Object(h)) = config.get("headers") {
            for (k, v) in h {
                if let Some(v) = v.as_str() {
                    req = req.header(k.as_str(), v);
                }
            }
        }
        let resp = req.body(body).send().await.map_err(|e| SendError::Request(without_url(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Answered(resp.status()))
        }
    }

    async fn send_email(&self, config: &Value, r: &Rendered) -> Result<(), SendError> {
        use lettre::message::{Mailbox, MultiPart};
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
        let smtp = self.cfg.smtp.as_ref().ok_or(SendError::NoSmtp)?;
        let to: Mailbox = config.get("email").and_then(Value::as_str).unwrap_or_default().parse().map_err(SendError::To)?;
        let from: Mailbox = smtp.from.parse().map_err(SendError::From)?;
        let details = serde_json::to_string_pretty(&r.payload).unwrap_or_default();
        let text = format!("{}\n\n{}\n\n{details}\n", r.summary, r.homepage);
        let html = format!(
            "<html><body><p><b>{}</b></p><p><a href=\"{}\">{}</a></p><pre>{}</pre></body></html>",
            escape(&r.summary),
            escape(&r.homepage),
            escape(&r.subject),
            escape(&details)
        );
        let msg = Message::builder()
            .from(from)
            .to(to)
            .subject(format!("[berth] {}: {}", r.kind, r.summary))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(SendError::Message)?;
        let builder = match smtp.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host).port(smtp.port.unwrap_or(25)),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host).map_err(SendError::Relay)?.port(smtp.port.unwrap_or(587)),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(SendError::Relay)?.port(smtp.port.unwrap_or(465)),
        };
        let mut builder = builder.timeout(Some(Duration::from_secs(self.cfg.attempt_timeout_secs)));
        if let Some(user) = &smtp.user {
            builder = builder.credentials(Credentials::new(user.clone(), self.smtp_password.clone().unwrap_or_default()));
        }
        builder.build().send(msg).await.map(|_| ()).map_err(SendError::Smtp)
    }
}

/// Why one delivery attempt failed (logged, and the event retried).
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("stored config unreadable: {0}")]
    StoredConfig(serde_json::Error),
    #[error("{0}")]
    Encode(serde_json::Error),
    #[error("no url")]
    NoUrl,
    #[error(transparent)]
    Target(#[from] super::ConfigError),
    #[error("http client: {0}")]
    Client(reqwest::Error),
    /// The request's error, without its URL (see [`without_url`]).
    #[error("request failed: {0}")]
    Request(String),
    #[error("receiver answered {0}")]
    Answered(reqwest::StatusCode),
    #[error("no SMTP server is configured")]
    NoSmtp,
    #[error("address: {0}")]
    To(lettre::address::AddressError),
    #[error("from address: {0}")]
    From(lettre::address::AddressError),
    #[error("message: {0}")]
    Message(lettre::error::Error),
    #[error("{0}")]
    Relay(lettre::transport::smtp::Error),
    #[error("smtp: {0}")]
    Smtp(lettre::transport::smtp::Error),
}

/// A request error without its URL, which may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "(url)");
    }
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A Slack message (incoming webhook): a line with a link, and the
/// details as an attachment.
fn slack(n: &NotificationRecord, r: &Rendered) -> Value {
    let title = if n.title.is_empty() { r.kind.clone() } else { n.title.clone() };
    let fields: Vec<Value> = r
        .payload
        .as_object()
        .map(|m| {
            ["updated_tags", "tags", "digest", "pushed_by", "node", "region", "expiration", "message"]
                .iter()
                .filter_map(|k| m.get(*k).map(|v| json!({ "title": k, "value": match v { Value::String(s) => s.clone(), v => v.to_string() }, "short": true })))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "text": format!("<{}|{}>: {}", r.homepage, r.subject, r.summary),
        "attachments": [{ "color": "good", "title": title, "title_link": r.homepage, "fields": fields, "fallback": r.summary }],
        "event": r.kind,
        "id": r.payload.get("id"),
    })
}

/// A CloudEvents 1.0 structured event; `id` is the event's, the same on
/// every retry.
fn cloudevent(ev: &OutboxRecord, r: &Rendered) -> Value {
    let source = r.payload.get("docker_url").and_then(Value::as_str).map(|d| format!("//{d}")).unwrap_or_else(|| format!("/{}", r.subject));
    json!({
        "specversion": "1.0",
        "id": ev.id(),
        "type": cloudevents_type(&r.kind),
        "source": source,
        "subject": r.subject,
        "time": rfc3339(ev.created_at_ms),
        "datacontenttype": "application/json",
        "data": r.payload,
    })
}
