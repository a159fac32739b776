//! `berth tag`, `berth policy` and `berth quota`: a repository's tags with
//! their history (expiration, restore, locks), the immutability and
//! auto-prune policies of a namespace or repository, and namespace
//! quotas, over the admin API's Quay paths.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use berth_gateway::identity::{
    AutoPrunePolicyBody, AutoPrunePolicyList, AutoPrunePolicyView, DefaultQuota, ImmutabilityPolicyBody, ImmutabilityPolicyList, ImmutabilityPolicyView,
    PolicyCreated, QuotaBody, QuotaLimitBody, QuotaView, Success, TagList, TagRestore, TagUpdate, TagView,
};
use clap::Subcommand;

use crate::client::{AdminClient, Target};
use crate::identity::{enc, parse_rfc3339, print_table, repo_path, yes_no};
use crate::print_json;

#[derive(Subcommand)]
pub enum TagCommand {
    /// The live tags of a repository.
    List {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every row of a tag, newest first: where it pointed, from when until when.
    History {
        /// NAMESPACE/NAME.
        repo: String,
        tag: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set or clear when a tag expires (at least an hour, at most 104 weeks after it was pushed).
    Expire {
        /// NAMESPACE/NAME.
        repo: String,
        tag: String,
        /// This long from now: an integer and s, m, h, d, w or y (e.g. 20h).
        #[arg(long = "in", group = "when")]
        in_: Option<String>,
        /// At this time (RFC 3339, e.g. 2026-01-31T12:00:00Z).
        #[arg(long, group = "when")]
        at: Option<String>,
        /// Never: clear the expiration.
        #[arg(long, group = "when")]
        never: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Point a tag again at a manifest it held (inside the namespace's time machine window).
    Restore {
        /// NAMESPACE/NAME.
        repo: String,
        tag: String,
        /// The manifest digest (sha256:…), as `berth tag history` shows it.
        digest: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make a tag immutable: no push, move, delete or expiry (needs write).
    Lock {
        /// NAMESPACE/NAME.
        repo: String,
        tag: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make a tag mutable again (needs admin).
    Unlock {
        /// NAMESPACE/NAME.
        repo: String,
        tag: String,
        #[command(flatten)]
        target: Target,
    },
}

fn fmt_s(s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

fn size(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(b) if b < 10 << 10 => format!("{b} B"),
        Some(b) if b < 10 << 20 => format!("{} KiB", b >> 10),
        Some(b) => format!("{} MiB", b >> 20),
    }
}

/// Every row the listing answers for `query`, through all pages.
async fn all_rows(client: &AdminClient, repo: &str, query: &str) -> anyhow::Result<Vec<TagView>> {
    let mut rows = Vec::new();
    for page in 1.. {
        let list: TagList = client.get(&format!("{}/tag/?limit=100&page={page}{query}", repo_path(repo)?)).await?;
        rows.extend(list.tags);
        if !list.has_additional {
            break;
        }
    }
    Ok(rows)
}

fn tag_path(repo: &str, tag: &str) -> anyhow::Result<String> {
    Ok(format!("{}/tag/{}", repo_path(repo)?, enc(tag)))
}

pub async fn run_tag(command: TagCommand) -> anyhow::Result<()> {
    match command {
        TagCommand::List { repo, target, json } => {
            let rows = all_rows(&AdminClient::new(&target)?, &repo, "&onlyActiveTags=true").await?;
            if json {
                return print_json(&rows);
            }
            let rows = rows
                .into_iter()
                .map(|t| [t.name, short(&t.manifest_digest), size(t.size), fmt_s(t.start_ts), t.expiration.map_or("-".into(), fmt_s), yes_no(t.immutable)])
                .collect();
            print_table(["TAG", "DIGEST", "SIZE", "PUSHED", "EXPIRES", "IMMUTABLE"], rows);
        }
        TagCommand::History { repo, tag, target, json } => {
            let rows = all_rows(&AdminClient::new(&target)?, &repo, &format!("&specificTag={}", enc(&tag))).await?;
            if json {
                return print_json(&rows);
            }
            let rows = rows
                .into_iter()
                .map(|t| {
                    let end = match (t.end_ts, t.expiration) {
                        (None, _) => "live".to_string(),
                        (Some(e), Some(x)) if e == x => format!("{} (expires)", fmt_s(e)),
                        (Some(e), _) => fmt_s(e),
                    };
                    [t.manifest_digest, fmt_s(t.start_ts), end, yes_no(t.reversion), yes_no(t.immutable)]
                })
                .collect();
            print_table(["DIGEST", "START", "END", "RESTORED", "IMMUTABLE"], rows);
        }
        TagCommand::Expire { repo, tag, in_, at, never, target } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let expiration = match (in_, at, never) {
                (Some(d), _, _) => match berth_node::registry::lifecycle::parse_lifetime_s(&d) {
                    Some(s) => Some(now.saturating_add(s)),
                    None => bail!("--in {d:?} is not an integer and a unit (s, m, h, d, w, y)"),
                },
                (None, Some(t), _) => Some(parse_rfc3339(&t).map_err(anyhow::Error::msg)?.duration_since(UNIX_EPOCH)?.as_secs()),
                (None, None, true) => None,
                (None, None, false) => bail!("say when: --in 20h, --at TIME or --never"),
            };
            let req = TagUpdate { expiration: Some(expiration), ..TagUpdate::default() };
            AdminClient::new(&target)?.put(&tag_path(&repo, &tag)?, &req).await?;
            match expiration {
                Some(e) => println!("{repo}:{tag} expires at {} (at least an hour after it was pushed)", fmt_s(e)),
                None => println!("{repo}:{tag} does not expire"),
            }
        }
        TagCommand::Restore { repo, tag, digest, target } => {
            let path = format!("{}/restore", tag_path(&repo, &tag)?);
            let _: Success = AdminClient::new(&target)?.post(&path, &TagRestore { manifest_digest: digest.clone() }).await?;
            println!("{repo}:{tag} points at {digest} again");
        }
        TagCommand::Lock { repo, tag, target } => {
            AdminClient::new(&target)?.put(&tag_path(&repo, &tag)?, &TagUpdate { immutable: Some(true), ..TagUpdate::default() }).await?;
            println!("{repo}:{tag} is immutable");
        }
        TagCommand::Unlock { repo, tag, target } => {
            AdminClient::new(&target)?.put(&tag_path(&repo, &tag)?, &TagUpdate { immutable: Some(false), ..TagUpdate::default() }).await?;
            println!("{repo}:{tag} is mutable again");
        }
    }
    Ok(())
}

/// Whose policies: `--org NAME` or `--repo NS/NAME`.
#[derive(clap::Args)]
#[group(id = "scope", required = true, multiple = false)]
pub struct Scope {
    /// An organization's (or user's) policies.
    #[arg(long)]
    org: Option<String>,
    /// A repository's policies (NAMESPACE/NAME).
    #[arg(long)]
    repo: Option<String>,
}

impl Scope {
    fn path(&self, kind: &str) -> anyhow::Result<String> {
        match (&self.org, &self.repo) {
            (Some(o), _) => Ok(format!("/api/v1/organization/{}/{kind}/", enc(o))),
            (None, Some(r)) => Ok(format!("{}/{kind}/", repo_path(r)?)),
            (None, None) => unreachable!("clap requires one of --org and --repo"),
        }
    }
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// List the immutability and auto-prune policies.
    List {
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tags whose whole name matches PATTERN (a regular expression) are immutable, now and when pushed.
    Immutable {
        #[command(flatten)]
        scope: Scope,
        pattern: String,
        /// The policy covers the names the pattern does NOT match.
        #[arg(long)]
        not_matching: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete tags automatically: keep the newest N (--keep) or those younger than an age (--older-than 30d).
    Prune {
        #[command(flatten)]
        scope: Scope,
        /// Keep the newest this many tags.
        #[arg(long, group = "method")]
        keep: Option<u64>,
        /// Delete tags pushed longer ago than this (an integer and s, m, h, d, w or y).
        #[arg(long, group = "method")]
        older_than: Option<String>,
        /// Only tags whose whole name matches this regular expression.
        #[arg(long)]
        pattern: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a policy (a lock it made stays).
    Delete {
        #[command(flatten)]
        scope: Scope,
        uuid: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run_policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::List { scope, target, json } => {
            let client = AdminClient::new(&target)?;
            let immutable: ImmutabilityPolicyList = client.get(&scope.path("immutabilitypolicy")?).await?;
            let prune: AutoPrunePolicyList = client.get(&scope.path("autoprunepolicy")?).await?;
            if json {
                return print_json(&serde_json::json!({ "immutability": immutable.policies, "autoprune": prune.policies }));
            }
            let covers = |p: &str, m: bool| if m { p.to_string() } else { format!("not {p}") };
            let rows = immutable
                .policies
                .into_iter()
                .map(|p: ImmutabilityPolicyView| [p.uuid, "immutable".into(), covers(&p.tag_pattern, p.tag_pattern_matches)])
                .chain(prune.policies.into_iter().map(|p: AutoPrunePolicyView| {
                    let what = if p.method == "number_of_tags" { format!("keep newest {}", p.value) } else { format!("delete older than {} s", p.value) };
                    [p.uuid, what, p.tag_pattern.map_or("every tag".into(), |t| covers(&t, p.tag_pattern_matches))]
                }))
                .collect();
            print_table(["UUID", "POLICY", "TAGS"], rows);
        }
        PolicyCommand::Immutable { scope, pattern, not_matching, target } => {
            let body = ImmutabilityPolicyBody { tag_pattern: pattern, tag_pattern_matches: !not_matching };
            let made: PolicyCreated = AdminClient::new(&target)?.post(&scope.path("immutabilitypolicy")?, &body).await?;
            println!("immutability policy {} created", made.uuid);
        }
        PolicyCommand::Prune { scope, keep, older_than, pattern, target } => {
            let (method, value) = match (keep, older_than) {
                (Some(n), _) => ("number_of_tags", serde_json::json!(n)),
                (None, Some(age)) => ("creation_date", serde_json::json!(age)),
                (None, None) => bail!("say what to prune: --keep N or --older-than AGE"),
            };
            let body = AutoPrunePolicyBody { method: method.into(), value, tag_pattern_matches: pattern.as_ref().map(|_| true), tag_pattern: pattern };
            let made: PolicyCreated = AdminClient::new(&target)?.post(&scope.path("autoprunepolicy")?, &body).await?;
            println!("auto-prune policy {} created", made.uuid);
        }
        PolicyCommand::Delete { scope, uuid, target } => {
            // The id says which kind it is only to the node: try both.
            let client = AdminClient::new(&target)?;
            let id = enc(&uuid);
            if client.delete(&format!("{}{id}", scope.path("immutabilitypolicy")?)).await.is_err() {
                client.delete(&format!("{}{id}", scope.path("autoprunepolicy")?)).await?;
            }
            println!("policy {uuid} deleted");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// A namespace's quota, its limits and usage (members may read it).
    Show {
        /// The organization (or user); default: your own namespace.
        namespace: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a namespace's quota, e.g. "10 GiB" (superusers).
    Set {
        namespace: String,
        /// The size: bytes, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB).
        size: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a limit: Warning (recorded) or Reject (pushes over it are refused), at a percentage of the quota.
    Limit {
        namespace: String,
        #[arg(value_parser = ["Warning", "Reject"])]
        kind: String,
        /// 1 to 100.
        percent: u64,
        #[command(flatten)]
        target: Target,
    },
    /// The cluster's default Reject quota for namespaces without their own (superusers).
    Default {
        /// The size (e.g. "50 GiB"); without one, show the default.
        size: Option<String>,
        /// Remove the default.
        #[arg(long, conflicts_with = "size")]
        none: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a namespace's quota (and stop counting its usage).
    Remove {
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

fn quota_path(ns: &str) -> String {
    format!("/api/v1/organization/{}/quota", enc(ns))
}

async fn the_quota(client: &AdminClient, ns: &str) -> anyhow::Result<QuotaView> {
    let list: Vec<QuotaView> = client.get(&quota_path(ns)).await?;
    list.into_iter().next().ok_or_else(|| anyhow::anyhow!("namespace {ns} has no quota"))
}

pub async fn run_quota(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Show { namespace, target, json } => {
            let client = AdminClient::new(&target)?;
            let list: Vec<QuotaView> = match &namespace {
                Some(ns) => client.get(&quota_path(ns)).await?,
                None => client.get("/api/v1/user/quota").await?,
            };
            if json {
                return print_json(&list);
            }
            let Some(q) = list.into_iter().next() else {
                println!("no quota");
                return Ok(());
            };
            let pct = q.usage.bytes as f64 * 100.0 / q.limit_bytes.max(1) as f64;
            println!("quota {}: {} used of {} ({pct:.1}%)", q.id, size(Some(q.usage.bytes)), q.limit);
            for l in &q.limits {
                println!("  {} at {}%  (id {})", l.kind, l.limit_percent, l.id);
            }
            print_table(["REPOSITORY", "USAGE"], q.usage.repositories.into_iter().map(|(r, b)| [r, size(Some(b))]).collect());
        }
        QuotaCommand::Set { namespace, size: limit, target } => {
            let client = AdminClient::new(&target)?;
            let body = QuotaBody { limit: Some(limit.clone()), limit_bytes: None };
            let list: Vec<QuotaView> = client.get(&quota_path(&namespace)).await?;
            match list.first() {
                Some(q) => {
                    let _: QuotaView = client.put_json(&format!("{}/{}", quota_path(&namespace), enc(&q.id)), &body).await?;
                }
                None => {
                    let _: QuotaView = client.post(&quota_path(&namespace), &body).await?;
                }
            }
            println!("quota of {namespace}: {limit}");
        }
        QuotaCommand::Limit { namespace, kind, percent, target } => {
            let client = AdminClient::new(&target)?;
            let q = the_quota(&client, &namespace).await?;
            let body = QuotaLimitBody { kind: kind.clone(), threshold_percent: percent };
            let _: QuotaView = client.post(&format!("{}/{}/limit", quota_path(&namespace), enc(&q.id)), &body).await?;
            println!("{kind} limit at {percent}% of {namespace}'s quota");
        }
        QuotaCommand::Default { size: limit, none, target } => {
            let client = AdminClient::new(&target)?;
            let path = "/api/v1/superuser/quota/default";
            match (limit, none) {
                (Some(limit), _) => {
                    let _: DefaultQuota = client.put_json(path, &QuotaBody { limit: Some(limit.clone()), limit_bytes: None }).await?;
                    println!("default quota: {limit}");
                }
                (None, true) => {
                    client.delete(path).await?;
                    println!("no default quota");
                }
                (None, false) => {
                    let d: DefaultQuota = client.get(path).await?;
                    println!("default quota: {}", d.limit_bytes.map_or("none".into(), |b| size(Some(b))));
                }
            }
        }
        QuotaCommand::Remove { namespace, target } => {
            let client = AdminClient::new(&target)?;
            let q = the_quota(&client, &namespace).await?;
            client.delete(&format!("{}/{}", quota_path(&namespace), enc(&q.id))).await?;
            println!("{namespace} has no quota any more");
        }
    }
    Ok(())
}
