//! `berth login`, `logout`, `user`, `org`, `team`, `robot`, `token`, `repo`
//! and `logs`: the identity part of the admin API (`/api/v1/…`, on Quay's
//! paths) from the command line.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::{read_password, AdminClient, SavedLogin, Target};
use anyhow::{bail, Context};
use berth_gateway::identity::{
    AppTokenCreate, AppTokenCreated, AppTokenList, CurrentUser, LogPage, OrgCreate, OrgList, OrgView, Performer, PermissionList, RepoCreate, RepoList,
    RepoView, RobotCreate, RobotList, RobotView, RoleRequest, TeamMembers, TeamUpdate, TeamView, UserCreate, UserCreated, UserList, UserUpdate,
    VisibilityChange,
};
use clap::Subcommand;

use crate::print_json;

#[path = "mirror.rs"]
pub mod mirror;
#[path = "proxycache.rs"]
pub mod proxycache;

#[path = "app.rs"]
pub mod app;

const SCOPES: [&str; 8] = ["repo:read", "repo:write", "repo:admin", "repo:create", "user:read", "user:admin", "org:admin", "super:user"];

/// Prints rows as aligned columns under an upper-case header.
pub(crate) fn print_table<const N: usize>(header: [&str; N], rows: Vec<[String; N]>) {
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// Percent-encodes one path segment or query value (all but RFC 3986's unreserved characters).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `ns/name` → (`ns`, `name`); the name may have more components (`org/team/app`).
fn split_repo(repo: &str) -> anyhow::Result<(&str, &str)> {
    match repo.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => bail!("repository {repo:?} is not NAMESPACE/NAME"),
    }
}

/// `/api/v1/repository/{namespace}/{repository}` for `ns/name[/more]`: every `/` after the first as `%2F`.
pub(crate) fn repo_path(repo: &str) -> anyhow::Result<String> {
    let (ns, name) = split_repo(repo)?;
    Ok(format!("/api/v1/repository/{}/{}", enc(ns), enc(name)))
}

/// `ns+short` → (`ns`, `short`).
fn split_robot(robot: &str) -> anyhow::Result<(&str, &str)> {
    match robot.split_once('+') {
        Some((ns, short)) if !ns.is_empty() && !short.is_empty() && !short.contains('+') => Ok((ns, short)),
        _ => bail!("robot {robot:?} is not NAMESPACE+SHORT (e.g. acme+ci)"),
    }
}

pub(crate) fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_string()
}

fn dash(s: &str) -> String {
    (if s.is_empty() { "-" } else { s }).to_string()
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A time the command line does not read, with an example of one it does.
#[derive(Debug, thiserror::Error)]
#[error("{0} (e.g. 2025-06-01T12:00:00Z)")]
pub(crate) struct BadTime(humantime::TimestampError);

pub(crate) fn parse_rfc3339(s: &str) -> Result<SystemTime, BadTime> {
    humantime::parse_rfc3339_weak(s).map_err(BadTime)
}

fn read_file_trimmed(f: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?.trim_end_matches(['\n', '\r']).to_string())
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// URL of any node's HTTP endpoint, e.g. https://registry.example.com.
    #[arg(long, env = "BERTH_ENDPOINT")]
    endpoint: String,
    /// User to log in as.
    #[arg(long, default_value = "admin")]
    user: String,
    /// File holding the password (else BERTH_PASSWORD); never stored.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// endpoint; its path is saved with the login.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|h| h.trim().to_string())
        .chain(std::env::var("HOSTNAME").ok())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

pub async fn run_login(args: LoginArgs) -> anyhow::Result<()> {
    let endpoint = args.endpoint.trim_end_matches('/').to_string();
    let password = read_password(args.password_file.as_deref())?.context("give --password-file or set BERTH_PASSWORD (berth login does not prompt)")?;
    let ca_cert = match &args.ca_cert {
        Some(f) => Some(std::path::absolute(f).with_context(|| format!("cannot resolve {}", f.display()))?),
        None => None,
    };
    if let Some(f) = ca_cert.as_ref().filter(|f| !f.exists()) {
        bail!("no CA certificate at {}", f.display());
    }
    let client = AdminClient::with_password(&endpoint, &args.user, &password, ca_cert.as_deref())?;
    let me: CurrentUser = client.get("/api/v1/user/").await?;
    // A superuser's CLI login keeps the superuser's powers.
    let scopes = me.super_user.then(|| berth_raft::command::TokenScope::ALL.iter().map(|s| s.as_str().to_string()).collect());
    let req = AppTokenCreate { title: format!("berth CLI on {}", hostname()), scopes, expires_in: None };
    let created: AppTokenCreated = client.post("/api/v1/user/apptoken", &req).await?;
    let token = created.token.token_code.context("the server created a token but did not return it")?;
    let login = SavedLogin { endpoint: endpoint.clone(), user: me.username.clone(), token, uuid: created.token.uuid, ca_cert };
    let path = match login.save() {
        Ok(p) => p,
        Err(e) => {
            // Do not leave an orphan token behind.
            let _ = AdminClient::from_login(&login, None)?.delete(&format!("/api/v1/user/apptoken/{}", enc(&login.uuid))).await;
            return Err(e);
        }
    };
    println!("logged in to {endpoint} as {}", me.username);
    eprintln!("token {:?} saved in {}", req.title, path.display());
    Ok(())
}

pub async fn run_logout() -> anyhow::Result<()> {
    let path = SavedLogin::path()?;
    let login = SavedLogin::load()?.with_context(|| format!("not logged in (no {})", path.display()))?;
    let revoked = match AdminClient::from_login(&login, None) {
        Ok(c) => c.delete(&format!("/api/v1/user/apptoken/{}", enc(&login.uuid))).await,
        Err(e) => Err(e),
    };
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    if let Err(e) = revoked {
        eprintln!(
            "berth: warning: could not revoke token {} on {}: {e:#}; if it still exists, delete it with `berth token delete {}`",
            login.uuid, login.endpoint, login.uuid
        );
    }
    println!("logged out of {} ({} removed)", login.endpoint, path.display());
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// List users.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a user; without --new-password-file a password is generated and printed once.
    Create {
        name: String,
        /// File holding the new user's password (at least 8 characters).
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Make the user a superuser (a cluster administrator).
        #[arg(long)]
        superuser: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        /// File holding the new password (at least 8 characters).
        #[arg(long)]
        new_password_file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Who the server takes you for.
    Whoami {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::List { target, json } => {
            let list: UserList = AdminClient::new(&target)?.get("/api/v1/superuser/users/").await?;
            if json {
                return print_json(&list);
            }
            print_table(["NAME", "SUPERUSER"], list.users.into_iter().map(|u| [u.username, yes_no(u.super_user)]).collect());
        }
        UserCommand::Create { name, new_password_file, superuser, target, json } => {
            let password = new_password_file.as_deref().map(read_file_trimmed).transpose()?;
            let req = UserCreate { username: name, password, superuser };
            let created: UserCreated = AdminClient::new(&target)?.post("/api/v1/superuser/users/", &req).await?;
            if json {
                return print_json(&created);
            }
            println!("created {} {}", if superuser { "superuser" } else { "user" }, created.username);
            if let Some(p) = created.password {
                println!("password (shown once): {p}");
            }
        }
        UserCommand::Delete { name, target } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/superuser/users/{}", enc(&name))).await?;
            println!("deleted user {name}");
        }
        UserCommand::Passwd { name, new_password_file, target } => {
            let req = UserUpdate { password: Some(read_file_trimmed(&new_password_file)?), superuser: None };
            AdminClient::new(&target)?.put(&format!("/api/v1/superuser/users/{}", enc(&name)), &req).await?;
            println!("password of {name} changed");
        }
        UserCommand::Whoami { target, json } => {
            let me: CurrentUser = AdminClient::new(&target)?.get("/api/v1/user/").await?;
            if json {
                return print_json(&me);
            }
            println!("{} ({}{})", me.username, me.kind, if me.super_user { ", superuser" } else { "" });
            println!("organizations: {}", dash(&me.organizations.join(", ")));
            if !me.scopes.is_empty() {
                println!("scopes: {}", me.scopes.join(" "));
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum OrgCommand {
    /// List every organization (superusers).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create an organization (you administer it).
    Create {
        name: String,
        /// Contact address.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show an organization and its teams.
    Show {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an organization.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

fn print_teams<'a>(teams: impl Iterator<Item = &'a TeamView>) {
    print_table(
        ["NAME", "ROLE", "MEMBERS", "DESCRIPTION"],
        teams.map(|t| [t.name.clone(), t.role.clone(), t.member_count.to_string(), dash(&t.description)]).collect(),
    );
}

pub async fn run_org(command: OrgCommand) -> anyhow::Result<()> {
    match command {
        OrgCommand::List { target, json } => {
            let list: OrgList = AdminClient::new(&target)?.get("/api/v1/superuser/organizations/").await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .organizations
                .into_iter()
                .map(|o| [o.name, dash(o.email.as_deref().unwrap_or("")), o.teams.len().to_string(), yes_no(o.is_admin)])
                .collect();
            print_table(["NAME", "EMAIL", "TEAMS", "ADMIN"], rows);
        }
        OrgCommand::Create { name, email, target } => {
            let org: OrgView = AdminClient::new(&target)?.post("/api/v1/organization/", &OrgCreate { name, email }).await?;
            println!("created organization {}", org.name);
        }
        OrgCommand::Show { name, target, json } => {
            let org: OrgView = AdminClient::new(&target)?.get(&format!("/api/v1/organization/{}", enc(&name))).await?;
            if json {
                return print_json(&org);
            }
            let you = match (org.is_admin, org.is_member) {
                (true, _) => "you administer it",
                (false, true) => "you are a member",
                (false, false) => "you are not a member",
            };
            println!("organization {}{} ({you})", org.name, org.email.as_deref().map(|e| format!(" <{e}>")).unwrap_or_default());
            println!();
            print_teams(org.teams.values());
        }
        OrgCommand::Delete { name, target } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/organization/{}", enc(&name))).await?;
            println!("deleted organization {name}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create a team, or change its role or description.
    Create {
        org: String,
        team: String,
        /// member: read what the team is granted; creator: also create repositories; admin: administer the organization.
        #[arg(long, default_value = "member", value_parser = ["member", "creator", "admin"])]
        role: String,
        /// What the team is for.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a team.
    Delete {
        org: String,
        team: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a team's members.
    Members {
        org: String,
        team: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a user, or a robot of the organization (org+short), to a team.
    Add {
        org: String,
        team: String,
        member: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a member from a team.
    Remove {
        org: String,
        team: String,
        member: String,
        #[command(flatten)]
        target: Target,
    },
}

fn team_path(org: &str, team: &str) -> String {
    format!("/api/v1/organization/{}/team/{}", enc(org), enc(team))
}

pub async fn run_team(command: TeamCommand) -> anyhow::Result<()> {
    match command {
        TeamCommand::Create { org, team, role, description, target } => {
            AdminClient::new(&target)?.put(&team_path(&org, &team), &TeamUpdate { role: role.clone(), description }).await?;
            println!("team {team} of {org}: role {role}");
        }
        TeamCommand::Delete { org, team, target } => {
            AdminClient::new(&target)?.delete(&team_path(&org, &team)).await?;
            println!("deleted team {team} of {org}");
        }
        TeamCommand::Members { org, team, target, json } => {
            let m: TeamMembers = AdminClient::new(&target)?.get(&format!("{}/members", team_path(&org, &team))).await?;
            if json {
                return print_json(&m);
            }
            print_table(["NAME", "KIND"], m.members.into_iter().map(|m| [m.name, if m.is_robot { "robot" } else { "user" }.to_string()]).collect());
        }
        TeamCommand::Add { org, team, member, target } => {
            AdminClient::new(&target)?.put(&format!("{}/members/{}", team_path(&org, &team), enc(&member)), &serde_json::Map::new()).await?;
            println!("added {member} to team {team} of {org}");
        }
        TeamCommand::Remove { org, team, member, target } => {
            AdminClient::new(&target)?.delete(&format!("{}/members/{}", team_path(&org, &team), enc(&member))).await?;
            println!("removed {member} from team {team} of {org}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create a robot and print its token (shown once).
    Create {
        /// NAMESPACE+SHORT: an organization you administer, or your own user name.
        robot: String,
        /// What the robot is for.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the robots of a namespace.
    List {
        namespace: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a robot.
    Delete {
        /// NAMESPACE+SHORT.
        robot: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give a robot a new token (the old one stops working) and print it.
    Regenerate {
        /// NAMESPACE+SHORT.
        robot: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the robots of `ns` live: the caller's own (`/user/robots`) or an organization's.
async fn robots_path(client: &AdminClient, ns: &str) -> anyhow::Result<String> {
    let me: CurrentUser = client.get("/api/v1/user/").await?;
    Ok(if me.username == ns { "/api/v1/user/robots".to_string() } else { format!("/api/v1/organization/{}/robots", enc(ns)) })
}

fn print_robot_token(client: &AdminClient, robot: &RobotView, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(robot);
    }
    let token = robot.token.as_deref().context("the server did not return the robot's token")?;
    println!("robot {}", robot.name);
    println!("token (shown once): {token}");
    let host = client.base().trim_start_matches("http://").trim_start_matches("https://");
    eprintln!("log in with: docker login -u '{}' {host}   (password: the token)", robot.name);
    Ok(())
}

pub async fn run_robot(command: RobotCommand) -> anyhow::Result<()> {
    match command {
        RobotCommand::Create { robot, description, target, json } => {
            let (ns, short) = split_robot(&robot)?;
            let client = AdminClient::new(&target)?;
            let path = format!("{}/{}", robots_path(&client, ns).await?, enc(short));
            let created: RobotView = client.put_json(&path, &RobotCreate { description }).await?;
            print_robot_token(&client, &created, json)?;
        }
        RobotCommand::List { namespace, target, json } => {
            let client = AdminClient::new(&target)?;
            let list: RobotList = client.get(&robots_path(&client, &namespace).await?).await?;
            if json {
                return print_json(&list);
            }
            print_table(["NAME", "CREATED", "DESCRIPTION"], list.robots.into_iter().map(|r| [r.name, r.created, dash(&r.description)]).collect());
        }
        RobotCommand::Delete { robot, target } => {
            let (ns, short) = split_robot(&robot)?;
            let client = AdminClient::new(&target)?;
            client.delete(&format!("{}/{}", robots_path(&client, ns).await?, enc(short))).await?;
            println!("deleted robot {robot}");
        }
        RobotCommand::Regenerate { robot, target, json } => {
            let (ns, short) = split_robot(&robot)?;
            let client = AdminClient::new(&target)?;
            let path = format!("{}/{}/regenerate", robots_path(&client, ns).await?, enc(short));
            let view: RobotView = client.post(&path, &serde_json::Map::new()).await?;
            print_robot_token(&client, &view, json)?;
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an application token and print it (shown once).
    Create {
        /// What the token is for.
        #[arg(long)]
        title: String,
        /// A scope to grant (repeatable); default: all but super:user.
        #[arg(long = "scope", value_name = "SCOPE", value_parser = SCOPES)]
        scopes: Vec<String>,
        /// Lifetime, e.g. 30d (default: until deleted).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your application tokens (never their secrets).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete (revoke) an application token.
    Delete {
        uuid: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { title, scopes, expires_in, target, json } => {
            let req = AppTokenCreate { title, scopes: (!scopes.is_empty()).then_some(scopes), expires_in: expires_in.map(|d| d.as_secs().max(1)) };
            let created: AppTokenCreated = AdminClient::new(&target)?.post("/api/v1/user/apptoken", &req).await?;
            if json {
                return print_json(&created);
            }
            let t = created.token;
            println!("token {} ({}), expires {}, scopes {}", t.uuid, t.title, t.expiration.as_deref().unwrap_or("never"), t.scopes.join(" "));
            println!("{}", t.token_code.context("the server did not return the token")?);
        }
        TokenCommand::List { target, json } => {
            let list: AppTokenList = AdminClient::new(&target)?.get("/api/v1/user/apptoken").await?;
            if json {
                return print_json(&list);
            }
            let rows =
                list.tokens.into_iter().map(|t| [t.uuid, t.created, t.expiration.unwrap_or_else(|| "never".into()), t.scopes.join(","), t.title]).collect();
            print_table(["UUID", "CREATED", "EXPIRES", "SCOPES", "TITLE"], rows);
        }
        TokenCommand::Delete { uuid, target } => {
            AdminClient::new(&target)?.delete(&format!("/api/v1/user/apptoken/{}", enc(&uuid))).await?;
            println!("deleted token {uuid}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
#[group(id = "grantee", required = true, multiple = false)]
pub struct Grantee {
    /// A user or robot (ns+short).
    #[arg(long)]
    account: Option<String>,
    /// A team of the repository's organization.
    #[arg(long)]
    team: Option<String>,
}

impl Grantee {
    /// The permission path below the repository, and who it is for.
    fn path(&self) -> (String, &str) {
        match (&self.account, &self.team) {
            (Some(a), _) => (format!("permissions/user/{}", enc(a)), a),
            (None, Some(t)) => (format!("permissions/team/{}", enc(t)), t),
            (None, None) => unreachable!("clap requires one of --account and --team"),
        }
    }
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create an (empty) repository; pushing creates one too.
    Create {
        /// NAMESPACE/NAME.
        repo: String,
        /// Anyone may pull it, without logging in.
        #[arg(long)]
        public: bool,
        /// What is in it.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the repositories you can read.
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a repository and its tags.
    Show {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a repository with its tags and manifests.
    Delete {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
    },
    /// Make a repository public or private.
    Visibility {
        /// NAMESPACE/NAME.
        repo: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
        #[command(flatten)]
        target: Target,
    },
    /// Grant a user, robot or team a role on a repository.
    Grant {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        grantee: Grantee,
        #[arg(value_parser = ["read", "write", "admin"])]
        role: String,
        #[command(flatten)]
        target: Target,
    },
    /// Take a user's, robot's or team's role on a repository away.
    Revoke {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        grantee: Grantee,
        #[command(flatten)]
        target: Target,
    },
    /// List who has which role on a repository.
    Permissions {
        /// NAMESPACE/NAME.
        repo: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run_repo(command: RepoCommand) -> anyhow::Result<()> {
    match command {
        RepoCommand::Create { repo, public, description, target } => {
            let (ns, name) = split_repo(&repo)?;
            let visibility = if public { "public" } else { "private" };
            let req = RepoCreate { repository: name.to_string(), namespace: ns.to_string(), visibility: visibility.into(), description };
            let _: serde_json::Value = AdminClient::new(&target)?.post("/api/v1/repository", &req).await?;
            println!("created {visibility} repository {repo}");
        }
        RepoCommand::List { namespace, target, json } => {
            let query = namespace.map(|ns| format!("?namespace={}", enc(&ns))).unwrap_or_default();
            let list: RepoList = AdminClient::new(&target)?.get(&format!("/api/v1/repository{query}")).await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .repositories
                .into_iter()
                .map(|r| {
                    let vis = if r.is_public { "public" } else { "private" };
                    [format!("{}/{}", r.namespace, r.name), vis.to_string(), r.tags.len().to_string(), dash(&r.description)]
                })
                .collect();
            print_table(["NAME", "VISIBILITY", "TAGS", "DESCRIPTION"], rows);
        }
        RepoCommand::Show { repo, target, json } => {
            let r: RepoView = AdminClient::new(&target)?.get(&repo_path(&repo)?).await?;
            if json {
                return print_json(&r);
            }
            let you = match (r.can_admin, r.can_write) {
                (true, _) => "admin",
                (false, true) => "write",
                (false, false) => "read",
            };
            println!("{}/{}: {}, you may {you}", r.namespace, r.name, if r.is_public { "public" } else { "private" });
            println!("description: {}", dash(&r.description));
            println!("tags ({}): {}", r.tags.len(), dash(&r.tags.join(" ")));
        }
        RepoCommand::Delete { repo, target } => {
            AdminClient::new(&target)?.delete(&repo_path(&repo)?).await?;
            println!("deleted repository {repo}");
        }
        RepoCommand::Visibility { repo, visibility, target } => {
            let path = format!("{}/changevisibility", repo_path(&repo)?);
            let _: serde_json::Value = AdminClient::new(&target)?.post(&path, &VisibilityChange { visibility: visibility.clone() }).await?;
            println!("{repo} is {visibility}");
        }
        RepoCommand::Grant { repo, grantee, role, target } => {
            let (sub, who) = grantee.path();
            AdminClient::new(&target)?.put(&format!("{}/{sub}", repo_path(&repo)?), &RoleRequest { role: role.clone() }).await?;
            println!("{who} may {role} {repo}");
        }
        RepoCommand::Revoke { repo, grantee, target } => {
            let (sub, who) = grantee.path();
            AdminClient::new(&target)?.delete(&format!("{}/{sub}", repo_path(&repo)?)).await?;
            println!("{who} has no role on {repo} any more");
        }
        RepoCommand::Permissions { repo, target, json } => {
            let client = AdminClient::new(&target)?;
            let base = repo_path(&repo)?;
            let users: PermissionList = client.get(&format!("{base}/permissions/user/")).await?;
            let teams: PermissionList = client.get(&format!("{base}/permissions/team/")).await?;
            if json {
                return print_json(&serde_json::json!({ "users": users, "teams": teams }));
            }
            let users = users.permissions.into_values().map(|p| [if p.is_robot == Some(true) { "robot" } else { "user" }.to_string(), p.name, p.role]);
            let teams = teams.permissions.into_values().map(|p| ["team".to_string(), p.name, p.role]);
            print_table(["KIND", "NAME", "ROLE"], users.chain(teams).collect());
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Only this user or organization.
    #[arg(long, conflicts_with = "repo")]
    namespace: Option<String>,
    /// Only this repository (NAMESPACE/NAME).
    #[arg(long)]
    repo: Option<String>,
    /// How far back from --until, e.g. 1h, 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// End of the window, RFC 3339 (default: now).
    #[arg(long, value_parser = parse_rfc3339)]
    until: Option<SystemTime>,
    /// Only records of this kind, e.g. push_repo, create_robot.
    #[arg(long)]
    kind: Option<String>,
    /// Follow every page (default: the newest 500 records).
    #[arg(long)]
    all_pages: bool,
    #[command(flatten)]
    target: Target,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run_logs(args: LogsArgs) -> anyhow::Result<()> {
    let path = match (&args.repo, &args.namespace) {
        (Some(repo), _) => format!("{}/logs", repo_path(repo)?),
        (None, Some(ns)) => format!("/api/v1/organization/{}/logs", enc(ns)),
        (None, None) => "/api/v1/superuser/logs".to_string(),
    };
    let end = args.until.map(ms_since_epoch);
    let start = end.unwrap_or_else(|| ms_since_epoch(SystemTime::now())).saturating_sub(args.since.as_millis() as u64);
    let mut query = format!("?starttime={start}");
    if let Some(end) = end {
        query.push_str(&format!("&endtime={end}"));
    }
    if let Some(kind) = &args.kind {
        query.push_str(&format!("&kind={}", enc(kind)));
    }
    let client = AdminClient::new(&args.target)?;
    let mut page: LogPage = client.get(&format!("{path}{query}")).await?;
    let mut logs = std::mem::take(&mut page.logs);
    while let Some(next) = page.next_page.clone().filter(|_| args.all_pages) {
        let mut more: LogPage = client.get(&format!("{path}{query}&next_page={}", enc(&next))).await?;
        if more.next_page.as_ref() == Some(&next) {
            bail!("the server sent next_page {next} twice; stopping after {} records", logs.len() + more.logs.len());
        }
        logs.append(&mut more.logs);
        page = more;
    }
    if args.json {
        page.logs = logs;
        return print_json(&page);
    }
    let more = page.next_page.is_some();
    let rows = logs
        .into_iter()
        .map(|l| {
            let Performer { name, kind } = l.performer;
            // `alice (app_token)`, `acme+ci (robot)`; plain users and `(operator)` as they are.
            let performer = if kind.is_empty() || kind == "user" || name == format!("({kind})") { name } else { format!("{name} ({kind})") };
            [l.datetime, l.kind, performer, dash(l.repository.as_deref().unwrap_or("")), l.node.to_string(), l.region, dash(l.ip.as_deref().unwrap_or(""))]
        })
        .collect();
    print_table(["TIME", "KIND", "PERFORMER", "REPOSITORY", "NODE", "REGION", "IP"], rows);
    if more {
        eprintln!("older records in the window: add --all-pages");
    }
    Ok(())
}
