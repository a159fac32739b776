//! `berth app`: an organization's OAuth applications, over the admin API
//! on Quay's paths. A child of `identity`, whose helpers it shares.

use super::*;
use berth_gateway::identity::{ApplicationList, ApplicationRequest, ApplicationTokenList, ApplicationTokenView, ApplicationView, GenerateTokenRequest};

#[derive(Subcommand)]
pub enum AppCommand {
    /// List an organization's applications.
    List {
        org: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register an application; prints its client id and secret (shown once).
    Create {
        org: String,
        name: String,
        /// Where the flows send the browser back (a URI under this one).
        #[arg(long)]
        redirect_uri: String,
        #[arg(long)]
        application_uri: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        avatar_email: Option<String>,
        /// A client that cannot keep a secret: it must use PKCE.
        #[arg(long)]
        public: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an application and every token it holds.
    Delete {
        org: String,
        client_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give an application a new client secret (printed once); the old one stops working.
    ResetSecret {
        org: String,
        client_id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tokens an application holds.
    Tokens {
        org: String,
        client_id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mint a token for the application acting for you, with these scopes
    /// (e.g. "repo:read repo:write"); printed once.
    Token {
        org: String,
        client_id: String,
        scope: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one token an application holds.
    Revoke {
        org: String,
        client_id: String,
        token_id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn apps_path(org: &str) -> String {
    format!("/api/v1/organization/{org}/applications")
}

fn show_app(a: &ApplicationView) {
    println!("client id:     {}", a.client_id);
    if let Some(s) = &a.client_secret {
        println!("client secret: {s}   (shown once)");
    }
    println!("redirect uri:  {}", a.redirect_uri);
}

pub async fn run_app(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::List { org, target, json } => {
            let l: ApplicationList = AdminClient::new(&target)?.get(&apps_path(&org)).await?;
            if json {
                return print_json(&l);
            }
            let rows = l.applications.iter().map(|a| [a.client_id.clone(), a.name.clone(), a.redirect_uri.clone(), yes_no(a.public_client)]).collect();
            print_table(["CLIENT ID", "NAME", "REDIRECT URI", "PUBLIC"], rows);
        }
        AppCommand::Create { org, name, redirect_uri, application_uri, description, avatar_email, public, target, json } => {
            let req = ApplicationRequest {
                name: Some(name),
                redirect_uri: Some(redirect_uri),
                application_uri,
                description,
                avatar_email,
                public_client: Some(public),
            };
            let a: ApplicationView = AdminClient::new(&target)?.post(&apps_path(&org), &req).await?;
            if json {
                return print_json(&a);
            }
            show_app(&a);
        }
        AppCommand::Delete { org, client_id, target } => {
            AdminClient::new(&target)?.delete(&format!("{}/{client_id}", apps_path(&org))).await?;
            println!("application {client_id} deleted, with its tokens");
        }
        AppCommand::ResetSecret { org, client_id, target, json } => {
            let a: ApplicationView = AdminClient::new(&target)?.post(&format!("{}/{client_id}/resetclientsecret", apps_path(&org)), &()).await?;
            if json {
                return print_json(&a);
            }
            show_app(&a);
        }
        AppCommand::Tokens { org, client_id, target, json } => {
            let l: ApplicationTokenList = AdminClient::new(&target)?.get(&format!("{}/{client_id}/tokens", apps_path(&org))).await?;
            if json {
                return print_json(&l);
            }
            let rows = l
                .tokens
                .iter()
                .map(|t| [t.uuid.clone(), t.user.clone(), t.scopes.join(" "), t.created.clone(), t.expiration.clone().unwrap_or_else(|| "never".into())])
                .collect();
            print_table(["ID", "USER", "SCOPES", "CREATED", "EXPIRES"], rows);
        }
        AppCommand::Token { org, client_id, scope, target, json } => {
            let path = format!("{}/{client_id}/generatetoken", apps_path(&org));
            let t: ApplicationTokenView = AdminClient::new(&target)?.post(&path, &GenerateTokenRequest { scope }).await?;
            if json {
                return print_json(&t);
            }
            println!("token id: {}", t.uuid);
            println!("{}", t.access_token.unwrap_or_default());
        }
        AppCommand::Revoke { org, client_id, token_id, target } => {
            AdminClient::new(&target)?.delete(&format!("{}/{client_id}/tokens/{token_id}", apps_path(&org))).await?;
            println!("token {token_id} revoked");
        }
    }
    Ok(())
}
