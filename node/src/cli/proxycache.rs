//! `berth proxycache`: an organization's proxy cache of an upstream
//! registry, over the admin API on Quay's path. A child of `identity`,
//! whose helpers (targets, tables) it shares.

use super::*;
use berth_gateway::identity::{ProxyCacheRequest, ProxyCacheView};

#[derive(Subcommand)]
pub enum ProxyCacheCommand {
    /// Make an organization a proxy cache: a pull of ORG/a/b fetches
    /// UPSTREAM/a/b on a miss; pushes into ORG are refused.
    Set {
        org: String,
        /// The upstream registry, host[:port] with an optional path prefix.
        #[arg(long)]
        upstream: String,
        /// Upstream user name.
        #[arg(long)]
        username: Option<String>,
        /// File holding the upstream password (stored sealed, never shown).
        #[arg(long)]
        upstream_password_file: Option<PathBuf>,
        /// How long a cached tag is served before the upstream is asked
        /// again, e.g. 1h (default 24h).
        #[arg(long, value_parser = humantime::parse_duration)]
        expiration: Option<Duration>,
        /// Do not verify the upstream's TLS certificate (plain HTTP allowed).
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show an organization's proxy cache.
    Show {
        org: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the organization an ordinary one again (what was cached stays).
    Delete {
        org: String,
        #[command(flatten)]
        target: Target,
    },
}

fn proxycache_path(org: &str) -> anyhow::Result<String> {
    if org.is_empty() || org.contains('/') {
        anyhow::bail!("{org:?} is not an organization name");
    }
    Ok(format!("/api/v1/organization/{org}/proxycache"))
}

pub async fn run_proxycache(command: ProxyCacheCommand) -> anyhow::Result<()> {
    match command {
        ProxyCacheCommand::Set { org, upstream, username, upstream_password_file, expiration, insecure, target } => {
            let password = upstream_password_file.as_deref().map(read_file_trimmed).transpose()?;
            let req = ProxyCacheRequest {
                upstream_registry: Some(upstream),
                upstream_registry_username: username,
                upstream_registry_password: password,
                expiration_s: expiration.map(|d| d.as_secs() as i64),
                insecure: Some(insecure),
            };
            let v: ProxyCacheView = AdminClient::new(&target)?.post(&proxycache_path(&org)?, &req).await?;
            println!("{org} is a proxy cache of {} (tags re-checked after {} s)", v.upstream_registry, v.expiration_s);
        }
        ProxyCacheCommand::Show { org, target, json } => {
            let v: ProxyCacheView = AdminClient::new(&target)?.get(&proxycache_path(&org)?).await?;
            if json {
                return print_json(&v);
            }
            let rows = vec![
                ["upstream".to_string(), v.upstream_registry.clone()],
                ["username".into(), v.upstream_registry_username.clone().unwrap_or_else(|| "-".into())],
                ["expiration".into(), humantime::format_duration(Duration::from_secs(v.expiration_s)).to_string()],
                ["insecure".into(), yes_no(v.insecure)],
            ];
            print_table(["FIELD", "VALUE"], rows);
        }
        ProxyCacheCommand::Delete { org, target } => {
            AdminClient::new(&target)?.delete(&proxycache_path(&org)?).await?;
            println!("{org} is no longer a proxy cache");
        }
    }
    Ok(())
}
