//! `berth notify`: repository and organization notifications (Quay's
//! `/repository/{r}/notification/` and `/organization/{org}/notifications`).

use std::path::PathBuf;

use crate::client::{AdminClient, Target};
use crate::identity::{enc, print_table, repo_path};
use crate::print_json;
use anyhow::{bail, Context};
use berth_gateway::notifications::{NotificationCreate, NotificationList, NotificationView};
use clap::Subcommand;
use serde_json::{json, Map, Value};

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Deliver a repository's (NAMESPACE/NAME) or an organization's (ORG)
    /// events to a receiver. The signing secret is printed once.
    Add {
        /// NAMESPACE/NAME for one repository, ORG for all of an organization's.
        target: String,
        /// repo_push, repo_image_expiry, repo_mirror_sync_started,
        /// repo_mirror_sync_success, repo_mirror_sync_failed,
        /// vulnerability_found, quota_warning or quota_error.
        #[arg(long)]
        event: String,
        /// webhook, slack, email or cloudevents.
        #[arg(long)]
        method: String,
        /// The receiver (webhook, slack, cloudevents): an http(s) URL.
        #[arg(long)]
        url: Option<String>,
        /// The address to mail (email).
        #[arg(long)]
        email: Option<String>,
        /// A JSON file with `${field}` placeholders to send instead of the payload (webhook).
        #[arg(long)]
        template: Option<PathBuf>,
        /// An extra request header, NAME=VALUE (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// repo_image_expiry: tags expiring within this many days.
        #[arg(long)]
        days: Option<u64>,
        /// vulnerability_found: the lowest level reported.
        #[arg(long)]
        level: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[command(flatten)]
        target_node: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the notifications of a repository or organization.
    List {
        target: String,
        #[command(flatten)]
        target_node: Target,
        #[arg(long)]
        json: bool,
    },
    /// Send the event's sample payload now.
    Test {
        target: String,
        uuid: String,
        #[command(flatten)]
        target_node: Target,
    },
    /// Set the failure count back to 0: a skipped notification delivers again.
    Reset {
        target: String,
        uuid: String,
        #[command(flatten)]
        target_node: Target,
    },
    /// Delete a notification and its waiting events.
    Delete {
        target: String,
        uuid: String,
        #[command(flatten)]
        target_node: Target,
    },
}

/// The notifications collection of `target`, with `/` (repository) or without.
fn base(target: &str) -> anyhow::Result<(String, &'static str)> {
    if target.contains('/') {
        Ok((format!("{}/notification", repo_path(target)?), "/"))
    } else if target.is_empty() {
        bail!("give NAMESPACE/NAME for a repository or ORG for an organization")
    } else {
        Ok((format!("/api/v1/organization/{}/notifications", enc(target)), ""))
    }
}

fn one(target: &str, uuid: &str) -> anyhow::Result<String> {
    Ok(format!("{}/{}", base(target)?.0, enc(uuid)))
}

pub async fn run_notify(command: NotifyCommand) -> anyhow::Result<()> {
    match command {
        NotifyCommand::Add { target, event, method, url, email, template, headers, days, level, title, target_node, json } => {
            let mut config = Map::new();
            if let Some(u) = url {
                config.insert("url".into(), json!(u));
            }
            if let Some(e) = email {
                config.insert("email".into(), json!(e));
            }
            if let Some(f) = template {
                let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
                let t: Value = serde_json::from_str(&text).with_context(|| format!("{} is not a JSON document", f.display()))?;
                config.insert("template".into(), t);
            }
            if !headers.is_empty() {
                let mut h = Map::new();
                for kv in headers {
                    let Some((k, v)) = kv.split_once('=') else { bail!("--header {kv:?} is not NAME=VALUE") };
                    h.insert(k.trim().to_string(), json!(v));
                }
                config.insert("headers".into(), Value::Object(h));
            }
            let mut event_config = Map::new();
            if let Some(d) = days {
                event_config.insert("days".into(), json!(d));
            }
            if let Some(l) = level {
                event_config.insert("level".into(), json!(l));
            }
            let req = NotificationCreate { event, method, config: Value::Object(config), event_config: Value::Object(event_config), title };
            let (path, slash) = base(&target)?;
            let created: NotificationView = AdminClient::new(&target_node)?.post(&format!("{path}{slash}"), &req).await?;
            if json {
                return print_json(&created);
            }
            println!("notification {} added to {target}: {} by {}", created.uuid, created.event, created.method);
            if let Some(s) = &created.signing_secret {
                println!("signing secret (shown once; X-Berth-Signature is sha256=HMAC-SHA256 of the body under it):");
                println!("{s}");
            }
        }
        NotifyCommand::List { target, target_node, json } => {
            let (path, slash) = base(&target)?;
            let list: NotificationList = AdminClient::new(&target_node)?.get(&format!("{path}{slash}")).await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .notifications
                .into_iter()
                .map(|n| {
                    let to = n.config.get("url").or_else(|| n.config.get("email")).and_then(Value::as_str).unwrap_or("-").to_string();
                    let state = if n.number_of_failures >= 3 { "skipped (reset it)".to_string() } else { "active".to_string() };
                    [n.uuid, n.event, n.method, to, n.pending.to_string(), n.number_of_failures.to_string(), state]
                })
                .collect();
            print_table(["UUID", "EVENT", "METHOD", "TO", "PENDING", "FAILURES", "STATE"], rows);
        }
        NotifyCommand::Test { target, uuid, target_node } => {
            AdminClient::new(&target_node)?.post_empty(&format!("{}/test", one(&target, &uuid)?)).await?;
            println!("sample event queued for notification {uuid}");
        }
        NotifyCommand::Reset { target, uuid, target_node } => {
            AdminClient::new(&target_node)?.post_empty(&one(&target, &uuid)?).await?;
            println!("notification {uuid} reset: it delivers again");
        }
        NotifyCommand::Delete { target, uuid, target_node } => {
            AdminClient::new(&target_node)?.delete(&one(&target, &uuid)?).await?;
            println!("deleted notification {uuid}");
        }
    }
    Ok(())
}
