//! Repository notifications: what a notification may be (events, methods,
//! targets), what its events look like on the wire, and the worker that
//! delivers them (`deliver`) and the one that finds tags about to expire
//! (`expiry`).
//!
//! The events themselves are state in Raft (`berth_raft::state::notifications`):
//! queued in the command that causes them, delivered by the leader, marked
//! there once a receiver took them. Delivery is at least once; every event
//! carries an id that is the same on every retry and every deliverer.
//!
//! Targets are checked twice: when a notification is created (so a bad
//! one is a 400 and nothing is stored) and before every attempt, against
//! the addresses the name resolves to then, and the request goes to the
//! checked addresses only, without following redirects. Loopback,
//! link-local and private addresses are refused unless the operator
//! allows their network (`[notifications] allowed_networks`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use berth_common::Digest;
use berth_raft::command::{NotificationEvent, NotificationRecord, OutboxRecord, PushOrigin};
use serde_json::{json, Value};

use crate::config::NotificationsConfig;

pub mod deliver;
pub mod expiry;

pub const METHODS: &[&str] = &["webhook", "slack", "email", "cloudevents"];

/// Header carrying `sha256=<hex>`, the HMAC-SHA256 of the body under the
/// notification's secret.
pub const SIGNATURE_HEADER: &str = "x-berth-signature";
/// Header carrying the event's id (stable across retries).
pub const EVENT_ID_HEADER: &str = "x-berth-event-id";

/// Headers a notification's `headers` may not set: the request's framing
/// and the signature are the sender's.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "content-type", "transfer-encoding", "connection", SIGNATURE_HEADER, EVENT_ID_HEADER];

/// Where notifications may go, and whether e-mail can be sent.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allowed: Vec<ipnet::IpNet>,
    pub smtp: bool,
}

impl Policy {
    pub fn new(cfg: &NotificationsConfig) -> Policy {
        // Validated with the configuration.
        Policy { allowed: cfg.allowed_networks.iter().filter_map(|n| n.parse().ok()).collect(), smtp: cfg.smtp.is_some() }
    }

    /// Why `ip` may not be a target, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        // An IPv4 address inside IPv6 (mapped `::ffff:a.b.c.d`, or the old
        // compatible `::a.b.c.d`) is judged as the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_loopback() {
                    Some("loopback")
                } else if v4.is_link_local() {
                    Some("link-local")
                } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                    Some("private")
                } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
                    Some("not a unicast")
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                if v6.is_loopback() {
                    Some("loopback")
                } else if (s[0] & 0xffc0) == 0xfe80 {
                    Some("link-local")
                } else if (s[0] & 0xfe00) == 0xfc00 {
                    Some("private")
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Some("not a unicast")
                } else {
                    None
                }
            }
        }
    }

    /// Checks an http(s) target: its scheme, and every address its host
    /// resolves to now. The addresses are what a request may go to.
    pub async fn check_url(&self, raw: &str) -> Result<(reqwest::Url, Vec<SocketAddr>), ConfigError> {
        let url = reqwest::Url::parse(raw).map_err(|source| ConfigError::NotAUrl { raw: raw.to_string(), source })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ConfigError::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::Credentials);
        }
        let host = url.host_str().ok_or_else(|| ConfigError::NoHost(raw.to_string()))?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((bare, port))).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(source)) => return Err(ConfigError::Unresolved { host: host.clone(), source }),
                Err(_) => return Err(ConfigError::ResolveTimeout(host.clone())),
            },
        };
        if addrs.is_empty() {
            return Err(ConfigError::NoAddress(host));
        }
        for a in &addrs {
            if let Some(why) = self.refusal(a.ip()) {
                return Err(ConfigError::NotAllowed { raw: raw.to_string(), ip: a.ip(), why });
            }
        }
        Ok((url, addrs))
    }
}

/// Why a notification's request is refused (a 400's message), or its
/// target no longer allowed when an event is delivered.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("url {raw:?} is not a URL: {source}")]
    NotAUrl { raw: String, source: url::ParseError },
    #[error("url scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("url may not carry credentials: use headers")]
    Credentials,
    #[error("url {0:?} has no host")]
    NoHost(String),
    #[error("host {host} does not resolve: {source}")]
    Unresolved { host: String, source: std::io::Error },
    #[error("host {0} did not resolve within 5 s")]
    ResolveTimeout(String),
    #[error("host {0} resolves to no address")]
    NoAddress(String),
    #[error("url {raw:?} reaches {ip} ({why}), which the operator has not allowed ([notifications] allowed_networks)")]
    NotAllowed { raw: String, ip: IpAddr, why: &'static str },
    #[error("unknown event {0:?}: one of {events}", events = berth_raft::command::NOTIFICATION_EVENTS.join(", "))]
    UnknownEvent(String),
    #[error("unknown method {0:?}: one of {methods}", methods = METHODS.join(", "))]
    UnknownMethod(String),
    /// `config` or `eventConfig` is not a JSON object.
    #[error("{0} must be an object")]
    NotAnObject(&'static str),
    #[error("config field {field:?} is not one of {method}'s: {allowed}", allowed = allowed.join(", "))]
    UnknownField { field: String, method: String, allowed: &'static [&'static str] },
    /// A field the method or event needs, described.
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{what} is required for {event}")]
    RequiredFor { what: &'static str, event: &'static str },
    #[error("config.email {to:?} is not an e-mail address: {source}")]
    NotAnAddress { to: String, source: lettre::address::AddressError },
    #[error("e-mail notifications need an SMTP server in berth.toml ([notifications.smtp])")]
    NoSmtp,
    #[error("config.headers must be an object of header names to values")]
    HeadersNotAnObject,
    #[error("header {0:?} must have a string value")]
    HeaderNotText(String),
    #[error("header name {0:?} is invalid")]
    HeaderName(String),
    #[error("header {0:?} is set by berth")]
    HeaderReserved(String),
    #[error("header {0:?} has an invalid value")]
    HeaderValue(String),
    #[error("config.template is not a JSON document: {0}")]
    TemplateNotJson(serde_json::Error),
    #[error("config.template must be a JSON document (object, array, or a string holding one)")]
    TemplateShape,
}

/// A notification's request, checked: what is stored.
pub struct Checked {
    pub config: Value,
    pub event_config: Value,
}

/// Checks a request to create a notification; every refusal is a message
/// for a 400.
pub async fn check(policy: &Policy, event: &str, method: &str, config: &Value, event_config: &Value) -> Result<Checked, ConfigError> {
    if !berth_raft::command::NOTIFICATION_EVENTS.contains(&event) {
        return Err(ConfigError::UnknownEvent(event.to_string()));
    }
    if !METHODS.contains(&method) {
        return Err(ConfigError::UnknownMethod(method.to_string()));
    }
    let config = match config {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(ConfigError::NotAnObject("config")),
    };
    let event_config = match event_config {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(ConfigError::NotAnObject("eventConfig")),
    };
    let allowed: &'static [&'static str] = match method {
        "webhook" => &["url", "template", "headers"],
        "slack" | "cloudevents" => &["url", "headers"],
        _ => &["email"],
    };
    if let Some(k) = config.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ConfigError::UnknownField { field: k.clone(), method: method.to_string(), allowed });
    }
    let mut out = config.clone();
    if method == "email" {
        let Some(Value::String(to)) = config.get("email") else { return Err(ConfigError::Required("config.email (the address to send to)")) };
        to.parse::<lettre::message::Mailbox>().map_err(|source| ConfigError::NotAnAddress { to: to.clone(), source })?;
        if !policy.smtp {
            return Err(ConfigError::NoSmtp);
        }
    } else {
        let Some(Value::String(url)) = config.get("url") else { return Err(ConfigError::Required("config.url (the receiver's http or https URL)")) };
        policy.check_url(url).await?;
        if let Some(h) = config.get("headers") {
            let Value::Object(h) = h else { return Err(ConfigError::HeadersNotAnObject) };
            for (name, v) in h {
                let Value::String(v) = v else { return Err(ConfigError::HeaderNotText(name.clone())) };
                let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| ConfigError::HeaderName(name.clone()))?;
                if RESERVED_HEADERS.contains(&parsed.as_str()) {
                    return Err(ConfigError::HeaderReserved(name.clone()));
                }
                reqwest::header::HeaderValue::from_str(v).map_err(|_| ConfigError::HeaderValue(name.clone()))?;
            }
        }
        if let Some(t) = config.get("template") {
            let t = match t {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(serde_json::from_str::<Value>(s).map_err(ConfigError::TemplateNotJson)?),
                Value::Object(_) | Value::Array(_) => Some(t.clone()),
                _ => return Err(ConfigError::TemplateShape),
            };
            match t {
                Some(t) => out.insert("template".into(), t),
                None => out.remove("template"),
            };
        }
    }
    match event {
        "repo_image_expiry" => match event_config.get("days").and_then(Value::as_u64) {
            Some(d) if (1..=730).contains(&d) => {}
            _ => return Err(ConfigError::RequiredFor { what: "eventConfig.days (1 to 730: tags expiring within that many days)", event: "repo_image_expiry" }),
        },
        "vulnerability_found" => match event_config.get("level").and_then(Value::as_str) {
            Some(l) if ["critical", "high", "medium", "low", "negligible", "unknown"].contains(&l) => {}
            _ => {
                return Err(ConfigError::RequiredFor {
                    what: "eventConfig.level (critical, high, medium, low, negligible or unknown)",
                    event: "vulnerability_found",
                })
            }
        },
        _ => {}
    }
    Ok(Checked { config: Value::Object(out), event_config: Value::Object(event_config) })
}

/// The configuration as the API shows it: header values may be
/// credentials, and are not shown.
pub fn shown_config(config_json: &str) -> Value {
    let mut v: Value = serde_json::from_str(config_json).unwrap_or(Value::Null);
    if let Some(Value::Object(h)) = v.get_mut("headers") {
        for val in h.values_mut() {
            *val = Value::String("(hidden)".into());
        }
    }
    v
}

/// How this node names the registry in payloads: a base URL.
#[derive(Debug, Clone)]
pub struct Site {
    pub node: u64,
    pub region: String,
    /// `scheme://host[:port]`.
    pub registry: String,
}

impl Site {
    pub fn new(node: u64, region: &str, cfg: &NotificationsConfig, http_advertise: &str) -> Site {
        let name = cfg.registry_name.clone().unwrap_or_else(|| http_advertise.to_string());
        let registry = if name.contains("://") { name } else { format!("https://{name}") };
        Site { node, region: region.to_string(), registry: registry.trim_end_matches('/').to_string() }
    }

    pub fn origin(&self, pushed_by: &str) -> PushOrigin {
        PushOrigin { pushed_by: pushed_by.to_string(), node: self.node, region: self.region.clone(), registry: self.registry.clone() }
    }
}

fn host_of(registry: &str) -> &str {
    registry.split_once("://").map_or(registry, |(_, h)| h)
}

/// The repository fields every payload starts with (Quay's).
fn repo_fields(registry: &str, repo: &str) -> serde_json::Map<String, Value> {
    let (ns, name) = repo.split_once('/').unwrap_or(("", repo));
    let mut m = serde_json::Map::new();
    m.insert("repository".into(), json!(repo));
    m.insert("namespace".into(), json!(ns));
    m.insert("name".into(), json!(name));
    m.insert("docker_url".into(), json!(format!("{}/{repo}", host_of(registry))));
    m.insert("homepage".into(), json!(format!("{registry}/repository/{repo}")));
    m
}

/// The sample event of `kind` for notification `n`, for `test`.
fn sample(kind: &str, n: &NotificationRecord, site: &Site) -> NotificationEvent {
    let repo = match &n.scope {
        berth_raft::command::NotificationScope::Repository(r) => r.clone(),
        berth_raft::command::NotificationScope::Namespace(ns) => format!("{ns}/repository"),
    };
    let digest = Digest::sha256_of(b"berth sample manifest");
    let tags = vec!["latest".to_string(), "sample".to_string()];
    match kind {
        "repo_image_expiry" => NotificationEvent::ImageExpiry { repo, tags, digest, expiration_ms: crate::util::now_ms() + 86_400_000, days: 1 },
        "repo_mirror_sync_started" => NotificationEvent::MirrorSyncStarted { repo, message: "sample".into() },
        "repo_mirror_sync_success" => NotificationEvent::MirrorSyncSuccess { repo, tags, message: "sample".into() },
        "repo_mirror_sync_failed" => NotificationEvent::MirrorSyncFailed { repo, tags, message: "sample".into() },
        "vulnerability_found" => NotificationEvent::VulnerabilityFound {
            repo,
            digest,
            tags,
            id: "CVE-0000-0000".into(),
            level: "high".into(),
            description: "sample vulnerability".into(),
        },
        "quota_warning" => NotificationEvent::QuotaWarning { namespace: repo.split('/').next().unwrap_or("").into(), used_bytes: 80, limit_bytes: 100 },
        "quota_error" => NotificationEvent::QuotaError { namespace: repo.split('/').next().unwrap_or("").into(), used_bytes: 100, limit_bytes: 100 },
        _ => NotificationEvent::RepoPush { repo, tags, digest, origin: site.origin("(test)"), at_ms: crate::util::now_ms() },
    }
}

/// An event as receivers see it.
pub struct Rendered {
    pub kind: String,
    /// The repository (or namespace) it is about.
    pub subject: String,
    /// Quay's payload with berth's fields.
    pub payload: Value,
    /// One line for people (Slack, the mail's subject).
    pub summary: String,
    pub homepage: String,
}

/// Renders `ev` of notification `n`; `site` names the registry for events
/// that do not carry where they happened.
pub fn render(ev: &OutboxRecord, n: &NotificationRecord, site: &Site) -> Rendered {
    let test = matches!(ev.event, NotificationEvent::Test { .. });
    let event = match &ev.event {
        NotificationEvent::Test { event } => sample(event, n, site),
        e => e.clone(),
    };
    let kind = event.kind().to_string();
    let (mut m, subject, summary) = match &event {
        NotificationEvent::RepoPush { repo, tags, digest, origin, at_ms } => {
            let mut m = repo_fields(&origin.registry, repo);
            m.insert("updated_tags".into(), json!(tags));
            m.insert("digest".into(), json!(digest.to_string()));
            m.insert("pushed_by".into(), json!(origin.pushed_by));
            m.insert("node".into(), json!(origin.node));
            m.insert("region".into(), json!(origin.region));
            m.insert("pushed_at".into(), json!(crate::util::rfc3339(*at_ms)));
            let s = format!("{repo}: {} pushed by {} (node {}, region {})", tags.join(", "), origin.pushed_by, origin.node, origin.region);
            (m, repo.clone(), s)
        }
        NotificationEvent::ImageExpiry { repo, tags, digest, expiration_ms, days } => {
            let mut m = repo_fields(&site.registry, repo);
            m.insert("tags".into(), json!(tags));
            m.insert("digest".into(), json!(digest.to_string()));
            m.insert("expiration".into(), json!(crate::util::rfc3339(*expiration_ms)));
            m.insert("days".into(), json!(days));
            let s = format!("{repo}: {} expires at {}", tags.join(", "), crate::util::rfc3339(*expiration_ms));
            (m, repo.clone(), s)
        }
        NotificationEvent::MirrorSyncStarted { repo, message } => {
            let mut m = repo_fields(&site.registry, repo);
            m.insert("message".into(), json!(message));
            (m, repo.clone(), format!("{repo}: mirror sync started"))
        }
        NotificationEvent::MirrorSyncSuccess { repo, tags, message } | NotificationEvent::MirrorSyncFailed { repo, tags, message } => {
            let mut m = repo_fields(&site.registry, repo);
            m.insert("tags".into(), json!(tags));
            m.insert("message".into(), json!(message));
            let outcome = if kind.ends_with("success") { "succeeded" } else { "failed" };
            (m, repo.clone(), format!("{repo}: mirror sync {outcome}"))
        }
        NotificationEvent::VulnerabilityFound { repo, digest, tags, id, level, description } => {
            let mut m = repo_fields(&site.registry, repo);
            m.insert("tags".into(), json!(tags));
            m.insert("digest".into(), json!(digest.to_string()));
            m.insert("vulnerability".into(), json!({ "id": id, "priority": level, "description": description }));
            (m, repo.clone(), format!("{repo}: {level} vulnerability {id}"))
        }
        NotificationEvent::QuotaWarning { namespace, used_bytes, limit_bytes } | NotificationEvent::QuotaError { namespace, used_bytes, limit_bytes } => {
            let mut m = serde_json::Map::new();
            m.insert("namespace".into(), json!(namespace));
            m.insert("used_bytes".into(), json!(used_bytes));
            m.insert("limit_bytes".into(), json!(limit_bytes));
            (m, namespace.clone(), format!("{namespace}: {used_bytes} of {limit_bytes} bytes used"))
        }
        NotificationEvent::Test { .. } => unreachable!("a sample is never a test"),
    };
    m.insert("event".into(), json!(kind));
    m.insert("id".into(), json!(ev.id()));
    if test {
        m.insert("test".into(), json!(true));
    }
    let homepage = m.get("homepage").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| site.registry.clone());
    Rendered { kind, subject, payload: Value::Object(m), summary, homepage }
}

/// Fills a webhook template: a string that is exactly `${field}` takes the
/// field's value (of any type); other strings have each `${field}`
/// replaced by the field's text. Fields are the payload's, `a.b` reaching
/// into objects; an unknown field is empty (`null` alone).
pub fn fill_template(template: &Value, payload: &Value) -> Value {
    let lookup = |path: &str| path.split('.').try_fold(payload, |v, k| v.get(k)).cloned();
    match template {
        Value::String(s) => {
            if let Some(path) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')).filter(|p| !p.contains("${") && !p.contains('}')) {
                return lookup(path).unwrap_or(Value::Null);
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                match rest[start + 2..].find('}') {
                    Some(end) => {
                        let path = &rest[start + 2..start + 2 + end];
                        match lookup(path) {
                            Some(Value::String(v)) => out.push_str(&v),
                            Some(Value::Null) | None => {}
                            Some(v) => out.push_str(&v.to_string()),
                        }
                        rest = &rest[start + 3 + end..];
                    }
                    None => {
                        out.push_str(&rest[start..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_template(v, payload)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), fill_template(v, payload))).collect()),
        other => other.clone(),
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

/// The CloudEvents `type` of an event kind: `repo_push` is `io.berth.repo.push`.
pub fn cloudevents_type(kind: &str) -> String {
    format!("io.berth.{}", kind.replacen('_', ".", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        let p = Policy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(p.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert_eq!(p.refusal(ip.parse().unwrap()), None, "{ip}");
        }
        let cfg = NotificationsConfig { allowed_networks: vec!["127.0.0.0/8".into()], ..Default::default() };
        let p = Policy::new(&cfg);
        assert_eq!(p.refusal("127.0.0.1".parse().unwrap()), None);
        assert!(p.refusal("10.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn templates_fill_fields_by_type_and_in_text() {
        let payload = json!({ "repository": "a/b", "updated_tags": ["v1"], "node": 2, "o": { "x": "y" } });
        let t = json!({ "repo": "${repository}", "tags": "${updated_tags}", "text": "pushed ${repository} on ${node} (${o.x}) ${missing}.", "n": 5 });
        assert_eq!(fill_template(&t, &payload), json!({ "repo": "a/b", "tags": ["v1"], "text": "pushed a/b on 2 (y) .", "n": 5 }));
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(cloudevents_type("repo_push"), "io.berth.repo.push");
        assert_eq!(cloudevents_type("quota_warning"), "io.berth.quota.warning");
    }
}
