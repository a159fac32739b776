//! `berth mirror`: a repository's mirror of an upstream registry, and its
//! state (`NORMAL`, `READ_ONLY`, `MIRROR`), over the admin API on Quay's
//! paths. A child of `identity`, whose helpers (paths, tables) it shares.

use super::*;
use berth_gateway::identity::{MirrorProxy, MirrorRegistryConfig, MirrorRequest, MirrorRootRule, MirrorView, RepoStateChange};

#[derive(Subcommand)]
pub enum MirrorCommand {
    /// Create or change a repository's mirror (the repository becomes a
    /// mirror: only the robot's sync writes to it).
    Set {
        /// NAMESPACE/NAME.
        repo: String,
        /// The upstream repository, host[:port]/path (e.g. quay.io/coreos/etcd).
        #[arg(long)]
        upstream: Option<String>,
        /// Tag globs, comma-separated (e.g. "1-*,latest").
        #[arg(long)]
        tags: Option<String>,
        /// The robot the sync writes as (NAMESPACE+SHORT, of the repository's namespace).
        #[arg(long)]
        robot: Option<String>,
        /// Time between syncs, e.g. 1h, 30m.
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<Duration>,
        /// First sync, RFC 3339 (default: now, when creating).
        #[arg(long)]
        start: Option<String>,
        /// Upstream user name.
        #[arg(long)]
        username: Option<String>,
        /// File holding the upstream password (stored sealed, never shown).
        #[arg(long)]
        upstream_password_file: Option<PathBuf>,
        /// Do not verify the upstream's TLS certificate.
        #[arg(long)]
        no_verify_tls: bool,
        /// Proxy for http:// and https:// upstream requests.
        #[arg(long)]
        http_proxy: Option<String>,
        #[arg(long)]
        https_proxy: Option<String>,
        #[arg(long)]
        no_proxy: Option<String>,
        /// Keep only these architectures of an index (repeat the flag).
        #[arg(long = "arch")]
        architectures: Vec<String>,
        /// The longest one sync may run, e.g. 10m.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Keep the configuration but stop syncing.
        #[arg(long)]
        disabled: bool,
        /// Run the sync on a node of this region (close to the upstream).
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show a repository's mirror and its last sync.
    Show {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sync now.
    Sync {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel the running or pending sync.
    Cancel {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a repository's state: NORMAL, READ_ONLY or MIRROR.
    State {
        /// NAMESPACE/NAME.
        repo: String,
        #[arg(value_parser = ["NORMAL", "READ_ONLY", "MIRROR"])]
        state: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Quay's date form, `%Y-%m-%dT%H:%M:%SZ`.
fn quay_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub async fn run_mirror(command: MirrorCommand) -> anyhow::Result<()> {
    match command {
        MirrorCommand::Set {
            repo,
            upstream,
            tags,
            robot,
            interval,
            start,
            username,
            upstream_password_file,
            no_verify_tls,
            http_proxy,
            https_proxy,
            no_proxy,
            architectures,
            timeout,
            disabled,
            region,
            target,
        } => {
            let client = AdminClient::new(&target)?;
            let path = format!("{}/mirror", repo_path(&repo)?);
            let exists = client.status_of(&path).await? == reqwest::StatusCode::OK;
            let start = match start {
                Some(s) => Some(quay_date(parse_rfc3339(&s).map_err(|e| anyhow::anyhow!("--start: {e}"))?)),
                None if !exists => Some(quay_date(SystemTime::now())),
                None => None,
            };
            let password = upstream_password_file.as_deref().map(read_file_trimmed).transpose()?;
            let proxy_given = http_proxy.is_some() || https_proxy.is_some() || no_proxy.is_some();
            let req = MirrorRequest {
                is_enabled: Some(!disabled),
                external_reference: upstream,
                external_registry_username: username.map(Some),
                external_registry_password: password.map(Some),
                sync_start_date: start,
                sync_interval: interval.map(|d| d.as_secs()),
                robot_username: robot,
                root_rule: tags.map(|t| MirrorRootRule { rule_kind: "tag_glob_csv".into(), rule_value: t.split(',').map(|g| g.trim().to_string()).collect() }),
                external_registry_config: Some(MirrorRegistryConfig {
                    verify_tls: no_verify_tls.then_some(false).or((!exists).then_some(true)),
                    unsigned_images: None,
                    proxy: proxy_given.then_some(MirrorProxy { http_proxy, https_proxy, no_proxy }),
                }),
                skopeo_timeout_interval: timeout.map(|d| d.as_secs()),
                architecture_filter: (!architectures.is_empty()).then_some(Some(architectures)),
                preferred_region: region.map(Some),
            };
            let view: MirrorView = if exists { client.put_json(&path, &req).await? } else { client.post(&path, &req).await? };
            println!("{repo} mirrors {} ({}), status {}", view.external_reference, view.root_rule.rule_value.join(","), view.sync_status);
        }
        MirrorCommand::Show { repo, target, json } => {
            let v: MirrorView = AdminClient::new(&target)?.get(&format!("{}/mirror", repo_path(&repo)?)).await?;
            if json {
                return print_json(&v);
            }
            let proxy = v.external_registry_config.proxy.as_ref();
            let rows = vec![
                ["upstream".to_string(), v.external_reference.clone()],
                ["tags".into(), v.root_rule.rule_value.join(",")],
                ["robot".into(), v.robot_username.clone()],
                ["enabled".into(), yes_no(v.is_enabled)],
                ["interval".into(), humantime::format_duration(Duration::from_secs(v.sync_interval)).to_string()],
                ["next sync".into(), v.sync_start_date.clone()],
                ["status".into(), v.sync_status.clone()],
                ["retries left".into(), v.sync_retries_remaining.to_string()],
                ["syncing node".into(), v.syncing_node.map(|n| n.to_string()).unwrap_or_else(|| "-".into())],
                ["last sync".into(), v.last_sync_message.clone().unwrap_or_else(|| "-".into())],
                ["username".into(), v.external_registry_username.clone().unwrap_or_else(|| "-".into())],
                ["verify tls".into(), yes_no(v.external_registry_config.verify_tls.unwrap_or(true))],
                ["proxy".into(), proxy.and_then(|p| p.https_proxy.clone().or(p.http_proxy.clone())).unwrap_or_else(|| "-".into())],
                ["region".into(), v.preferred_region.clone().unwrap_or_else(|| "any".into())],
                ["architectures".into(), v.architecture_filter.as_ref().map(|a| a.join(",")).unwrap_or_else(|| "all".into())],
            ];
            print_table(["FIELD", "VALUE"], rows);
        }
        MirrorCommand::Sync { repo, target } => {
            AdminClient::new(&target)?.post_empty(&format!("{}/mirror/sync-now", repo_path(&repo)?)).await?;
            println!("{repo}: sync requested");
        }
        MirrorCommand::Cancel { repo, target } => {
            AdminClient::new(&target)?.post_empty(&format!("{}/mirror/sync-cancel", repo_path(&repo)?)).await?;
            println!("{repo}: sync cancelled");
        }
        MirrorCommand::State { repo, state, target } => {
            AdminClient::new(&target)?.put(&format!("{}/changestate", repo_path(&repo)?), &RepoStateChange { state: state.clone() }).await?;
            println!("{repo} is {state}");
        }
    }
    Ok(())
}
