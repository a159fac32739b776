//! `berth scanner` (advisory feeds, the scanner's status), `berth scan
//! show` (an image's security report) and `berth scan sbom` (its
//! CycloneDX SBOM), over the admin API.

use std::path::Path;

use anyhow::{bail, Context};
use berth_gateway::identity::{FeedSourceRequest, FeedSourceView, FeedView, ScannerStatus, TagList};
use clap::Subcommand;

use crate::client::{AdminClient, Target};
use crate::identity::{enc, print_table, repo_path};
use crate::print_json;

#[derive(Subcommand)]
pub enum ScannerCommand {
    /// Import an advisory feed snapshot from a file or an http(s) URL (the
    /// Debian security tracker's JSON). Every node gets it; every scanned
    /// image is matched again.
    Import {
        /// A file, or an http:// or https:// URL.
        source: String,
        /// The feed's name (default: the file name or URL); an import of
        /// the same name replaces the previous snapshot.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Feeds fetched from a URL on a schedule, by one node at a time.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Feeds, feed sources, scans by status, and re-matches pending.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SourceCommand {
    /// Fetch URL every interval (with If-None-Match / If-Modified-Since)
    /// and import it as feed NAME when it changed; the first fetch is at
    /// once. Setting NAME again changes its URL or interval.
    Set {
        name: String,
        /// An http:// or https:// URL of a feed file.
        url: String,
        /// Seconds between fetches (default 21600, six hours).
        #[arg(long)]
        every: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Stop fetching NAME (the feed it imported stays).
    Rm {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum ScanCommand {
    /// An image's packages and vulnerabilities: NAMESPACE/NAME:TAG or
    /// NAMESPACE/NAME@DIGEST.
    Show {
        image: String,
        #[command(flatten)]
        target: Target,
        /// Print Quay's JSON report.
        #[arg(long)]
        json: bool,
    },
    /// An image's software bill of materials (CycloneDX 1.5 JSON), once
    /// it is scanned: NAMESPACE/NAME:TAG or NAMESPACE/NAME@DIGEST.
    Sbom {
        image: String,
        #[command(flatten)]
        target: Target,
    },
}

/// The repository and manifest digest `image` names, a tag resolved
/// through the tag list.
async fn resolve(client: &AdminClient, image: &str) -> anyhow::Result<(String, String)> {
    if let Some((r, d)) = image.split_once('@') {
        return Ok((r.to_string(), d.to_string()));
    }
    let (r, tag) = image.rsplit_once(':').filter(|(r, _)| r.contains('/')).context("IMAGE is NAMESPACE/NAME:TAG or NAMESPACE/NAME@DIGEST")?;
    let list: TagList = client.get(&format!("{}/tag/?onlyActiveTags=true&specificTag={}", repo_path(r)?, enc(tag))).await?;
    let t = list.tags.into_iter().find(|t| t.name == tag).with_context(|| format!("{r} has no tag {tag}"))?;
    Ok((r.to_string(), t.manifest_digest))
}

async fn read_source(source: &str) -> anyhow::Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let resp = reqwest::get(source).await.with_context(|| format!("cannot fetch {source}"))?;
        if !resp.status().is_success() {
            bail!("{source} answered {}", resp.status());
        }
        return Ok(resp.bytes().await.with_context(|| format!("reading {source}"))?.to_vec());
    }
    std::fs::read(Path::new(source)).with_context(|| format!("cannot read {source}"))
}

pub async fn run_scanner(command: ScannerCommand) -> anyhow::Result<()> {
    match command {
        ScannerCommand::Import { source, name, target, json } => {
            let name = name.unwrap_or_else(|| source.rsplit('/').next().unwrap_or(&source).to_string());
            let bytes = read_source(&source).await?;
            let client = AdminClient::new(&target)?;
            let v: FeedView = client.post_bytes(&format!("/api/v1/superuser/scanner/feeds?name={}", enc(&name)), bytes).await?;
            if json {
                return print_json(&v);
            }
            println!("feed {} imported: {} advisories ({}, {} bytes, {}), generation {}", v.name, v.advisories, v.kind, v.size, v.digest, v.generation);
        }
        ScannerCommand::Source { command: SourceCommand::Set { name, url, every, target } } => {
            let client = AdminClient::new(&target)?;
            let v: FeedSourceView =
                client.put_json(&format!("/api/v1/superuser/scanner/sources/{}", enc(&name)), &FeedSourceRequest { url, interval_secs: every }).await?;
            println!("feed source {} set: {} every {} s, next fetch {}", v.name, v.url, v.interval_secs, v.next_fetch_at);
        }
        ScannerCommand::Source { command: SourceCommand::Rm { name, target } } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/superuser/scanner/sources/{}", enc(&name))).await?;
            println!("feed source {name} removed (its feed stays)");
        }
        ScannerCommand::Status { target, json } => {
            let s: ScannerStatus = AdminClient::new(&target)?.get("/api/v1/superuser/scanner/status").await?;
            if json {
                return print_json(&s);
            }
            println!(
                "scans: {} queued, {} scanned, {} failed, {} unsupported; {} to re-match; feed generation {}",
                s.scans.queued, s.scans.scanned, s.scans.failed, s.scans.unsupported, s.rematch_pending, s.generation
            );
            let rows = s.feeds.iter().map(|f| [f.name.clone(), f.kind.clone(), f.advisories.to_string(), f.imported_at.clone(), f.digest.clone()]).collect();
            print_table(["FEED", "KIND", "ADVISORIES", "IMPORTED", "DIGEST"], rows);
            if !s.sources.is_empty() {
                let rows = s
                    .sources
                    .iter()
                    .map(|x| {
                        [
                            x.name.clone(),
                            x.url.clone(),
                            x.interval_secs.to_string(),
                            x.last_checked_at.clone().unwrap_or_else(|| "never".into()),
                            x.last_outcome.clone(),
                            x.next_fetch_at.clone(),
                        ]
                    })
                    .collect();
                print_table(["SOURCE", "URL", "EVERY (S)", "CHECKED", "OUTCOME", "NEXT"], rows);
            }
        }
    }
    Ok(())
}

pub async fn run_scan(command: ScanCommand) -> anyhow::Result<()> {
    let (image, target, json) = match command {
        ScanCommand::Show { image, target, json } => (image, target, json),
        ScanCommand::Sbom { image, target } => {
            let client = AdminClient::new(&target)?;
            let (repo, digest) = resolve(&client, &image).await?;
            let v: serde_json::Value = client.get(&format!("{}/manifest/{}/sbom", repo_path(&repo)?, enc(&digest))).await?;
            return print_json(&v);
        }
    };
    let client = AdminClient::new(&target)?;
    let (repo, digest) = resolve(&client, &image).await?;
    let v: serde_json::Value = client.get(&format!("{}/manifest/{}/security?vulnerabilities=true", repo_path(&repo)?, enc(&digest))).await?;
    if json {
        return print_json(&v);
    }
    let status = v["status"].as_str().unwrap_or("unknown");
    println!("{repo}@{digest}: {status}");
    if let Some(reason) = v["reason"].as_str() {
        println!("reason: {reason}");
    }
    let Some(features) = v["data"]["Layer"]["Features"].as_array() else { return Ok(()) };
    let mut rows = Vec::new();
    for f in features {
        for x in f["Vulnerabilities"].as_array().into_iter().flatten() {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            rows.push([s(&x["Name"]), s(&x["Severity"]), s(&f["Name"]), s(&f["Version"]), s(&x["FixedBy"])]);
        }
    }
    println!("{} packages, {} vulnerabilities", features.len(), rows.len());
    print_table(["VULNERABILITY", "SEVERITY", "PACKAGE", "VERSION", "FIXED BY"], rows);
    Ok(())
}
