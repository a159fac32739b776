//! The CLI's client for a node's admin API.
//!
//! On a node's own host, `--data-dir D` finds the node's address and its
//! operator token in D. From elsewhere, `--endpoint URL` with an admin
//! login (`--user`, and the password from `--password-file` or
//! `BERTH_PASSWORD`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_gateway::error::ErrorBody;
use serde::{de::DeserializeOwned, Serialize};

use crate::config::Layout;

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Data directory of a node on this host (uses its operator token).
    #[arg(long, env = "BERTH_DATA_DIR", conflicts_with = "endpoint")]
    pub data_dir: Option<PathBuf>,
    /// URL of any node's HTTP endpoint, e.g. http://10.0.0.5:5000.
    #[arg(long, env = "BERTH_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Administrator to log in as with --endpoint.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// File holding the administrator's password (else BERTH_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// endpoint, e.g. the
    /// output of `berth cluster ca export`.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
}

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(target: &Target) -> anyhow::Result<AdminClient> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        let ca_file = match (&target.ca_cert, &target.data_dir) {
            (Some(f), _) => Some(f.clone()),
            (None, Some(dir)) => Some(Layout::new(dir).ca_cert()),
            _ => None,
        };
        if let Some(f) = ca_file.filter(|f| f.exists()) {
            let pem = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(|| format!("{} is not a PEM certificate", f.display()))?);
        }
        let http = builder.build().context("http client")?;
        let (base, auth) = match (&target.data_dir, &target.endpoint) {
            (Some(dir), _) => {
                let layout = Layout::new(dir);
                let cfg = layout.load()?;
                (cfg.http_advertise.clone(), Auth::Bearer(layout.read_operator_token()?))
            }
            (None, Some(url)) => {
                let password = match &target.password_file {
                    Some(f) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?.trim_end_matches(['\n', '\r']).to_string(),
                    None => std::env::var("BERTH_PASSWORD").context("give --password-file or set BERTH_PASSWORD for --endpoint")?,
                };
                (url.trim_end_matches('/').to_string(), Auth::Basic(target.user.clone(), password))
            }
            (None, None) => bail!("say which node to ask: --data-dir D on the node's host, or --endpoint URL with an admin login"),
        };
        Ok(AdminClient { base, auth, http })
    }

    /// The same login against another node, when the login is valid there
    /// (an admin login is; a node's operator token is not).
    pub fn for_node(&self, base: &str) -> Option<AdminClient> {
        match &self.auth {
            Auth::Basic(..) => Some(AdminClient { base: base.trim_end_matches('/').to_string(), auth: self.auth.clone(), http: self.http.clone() }),
            Auth::Bearer(_) => (base.trim_end_matches('/') == self.base).then(|| self.clone()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`, only the status: for probes.
    pub async fn status_of(&self, path: &str) -> Result<reqwest::StatusCode, reqwest::Error> {
        let req = self.http.get(format!("{}{}", self.base, path)).timeout(std::time::Duration::from_secs(5));
        let req = match &self.auth {
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        Ok(req.send().await?.status())
    }

    async fn send<T: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<Option<T>> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        req = match &self.auth {
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(|b| b.errors.into_iter().next())
                .map(|e| e.message)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
            bail!("{} ({})", msg, status.as_u16());
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("unreadable answer from {url}"))?))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(reqwest::Method::GET, path, None::<&()>).await?.context("empty answer")
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.send(reqwest::Method::POST, path, Some(body)).await?.context("empty answer")
    }

    pub async fn put(&self, path: &str, body: &impl Serialize) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::PUT, path, Some(body)).await.map(|_| ())
    }

    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::POST, path, None::<&()>).await.map(|_| ())
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::DELETE, path, None::<&()>).await.map(|_| ())
    }
}
