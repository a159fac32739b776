//! The CLI's client for a node's admin API.
//!
//! On a node's own host, `--data-dir D` finds the node's address and its
//! operator token in D. From elsewhere, `--endpoint URL` with an admin
//! login (`--user`, and the password from `--password-file` or
//! `BERTH_PASSWORD`), or the application token `berth login` saved.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_gateway::error::{ErrorBody, ErrorEntry};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use berth_node::config::Layout;

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
    /// A node's operator token: valid on that node only.
    Bearer(String),
    Basic(String, String),
    /// An application token: valid on every node.
    AppToken(String),
}

/// What `berth login` keeps (never the password): an application token
/// for one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedLogin {
    pub endpoint: String,
    pub user: String,
    /// The application token's secret (`token_code`).
    pub token: String,
    /// The application token's id, to revoke it at `berth logout`.
    pub uuid: String,
    pub ca_cert: Option<PathBuf>,
}

impl SavedLogin {
    /// `$BERTH_CONFIG_DIR/login.json`, else `$HOME/.config/berth/login.json`.
    pub fn path() -> anyhow::Result<PathBuf> {
        let dir = match std::env::var_os("BERTH_CONFIG_DIR").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty()).context("set HOME or BERTH_CONFIG_DIR")?).join(".config/berth"),
        };
        Ok(dir.join("login.json"))
    }

    /// The saved login, if there is one.
    pub fn load() -> anyhow::Result<Option<SavedLogin>> {
        let path = Self::path()?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let login = serde_json::from_slice(&bytes).with_context(|| format!("{} is unreadable; run `berth login` again", path.display()))?;
        Ok(Some(login))
    }

    /// Writes the login (mode 0600, its directory created 0700); returns where.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = Self::path()?;
        let dir = path.parent().context("the login file has no directory")?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = dir.join(".login.json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// The password from `file`, else from `BERTH_PASSWORD`; none if neither.
pub fn read_password(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    match file {
        Some(f) => Ok(Some(std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?.trim_end_matches(['\n', '\r']).to_string())),
        None => Ok(std::env::var("BERTH_PASSWORD").ok()),
    }
}

/// What one probe request saw.
#[derive(Debug)]
pub enum Answer {
    /// The node answered; for an error, with the first entry of its error JSON.
    Status { status: reqwest::StatusCode, error: Option<ErrorEntry> },
    /// No answer within the probe's time limit.
    TimedOut,
    /// No answer at all: connection refused or reset.
    NoAnswer(String),
}

impl Answer {
    pub fn is_success(&self) -> bool {
        matches!(self, Answer::Status { status, .. } if status.is_success())
    }

    /// What answers are grouped by in a report: `503 UNAVAILABLE`, `timeout`, ...
    pub fn label(&self) -> String {
        match self {
            Answer::Status { status, error: Some(e) } => {
                let code = serde_json::to_value(e.code).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                format!("{} {code}", status.as_u16())
            }
            Answer::Status { status, error: None } => status.as_u16().to_string(),
            Answer::TimedOut => "timeout".into(),
            Answer::NoAnswer(_) => "no answer".into(),
        }
    }

    /// The error message the node gave, or why nothing came back.
    pub fn message(&self) -> Option<String> {
        match self {
            Answer::Status { error, .. } => error.as_ref().map(|e| e.message.clone()),
            Answer::TimedOut => None,
            Answer::NoAnswer(why) => Some(why.clone()),
        }
    }
}

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    auth: Auth,
    http: reqwest::Client,
}

impl AdminClient {
    /// The client `target` says, else the saved login of `berth login`.
    pub fn new(target: &Target) -> anyhow::Result<AdminClient> {
        let ca = target.ca_cert.as_deref();
        match (&target.data_dir, &target.endpoint) {
            (Some(dir), _) => {
                let layout = Layout::new(dir);
                let cfg = layout.load()?;
                let token = layout.read_operator_token()?;
                Self::build(&cfg.http_advertise, Auth::Bearer(token), Some(ca.map(Path::to_path_buf).unwrap_or_else(|| layout.ca_cert()).as_path()))
            }
            (None, Some(url)) => match read_password(target.password_file.as_deref())? {
                Some(password) => Self::with_password(url, &target.user, &password, ca),
                None => match SavedLogin::load()?.filter(|l| l.endpoint.trim_end_matches('/') == url.trim_end_matches('/')) {
                    Some(login) => Self::from_login(&login, ca),
                    None => bail!("give --password-file or set BERTH_PASSWORD for --endpoint (or log in once with `berth login --endpoint {url}`)"),
                },
            },
            (None, None) => match SavedLogin::load()? {
                Some(login) => Self::from_login(&login, ca),
                None => bail!("say which node to ask: --data-dir D on the node's host, --endpoint URL with an admin login, or log in once with `berth login`"),
            },
        }
    }

    /// A user's password login (what `berth login` checks before asking for a token).
    pub fn with_password(endpoint: &str, user: &str, password: &str, ca_cert: Option<&Path>) -> anyhow::Result<AdminClient> {
        Self::build(endpoint, Auth::Basic(user.to_string(), password.to_string()), ca_cert)
    }

    /// The saved login's token; `ca_cert` overrides the saved CA.
    pub fn from_login(login: &SavedLogin, ca_cert: Option<&Path>) -> anyhow::Result<AdminClient> {
        Self::build(&login.endpoint, Auth::AppToken(login.token.clone()), ca_cert.or(login.ca_cert.as_deref()))
    }

    fn build(base: &str, auth: Auth, ca_file: Option<&Path>) -> anyhow::Result<AdminClient> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(f) = ca_file.filter(|f| f.exists()) {
            let pem = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            // A bundle: during a CA rotation, the new CA and the previous one.
            builder =
                builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("{} is not a PEM certificate", f.display()))?);
        }
        let http = builder.build().context("http client")?;
        Ok(AdminClient { base: base.trim_end_matches('/').to_string(), auth, http })
    }

    /// The same login against another node, when the login is valid there
    /// (an admin login is; a node's operator token is not).
    pub fn for_node(&self, base: &str) -> Option<AdminClient> {
        match &self.auth {
            Auth::Basic(..) | Auth::AppToken(_) => {
                Some(AdminClient { base: base.trim_end_matches('/').to_string(), auth: self.auth.clone(), http: self.http.clone() })
            }
            Auth::Bearer(_) => (base.trim_end_matches('/') == self.base).then(|| self.clone()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Bearer(t) | Auth::AppToken(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        }
    }

    /// GET `path`, only the status: for probes.
    pub async fn status_of(&self, path: &str) -> Result<reqwest::StatusCode, reqwest::Error> {
        let req = self.authed(self.http.get(format!("{}{}", self.base, path)).timeout(std::time::Duration::from_secs(5)));
        Ok(req.send().await?.status())
    }

    /// `method path` without a body, as a probe: what came back (the
    /// status and, for an error, its code and message), or that nothing
    /// did within `timeout`. Never an error: every outcome is a finding.
    pub async fn probe(&self, method: reqwest::Method, path: &str, timeout: std::time::Duration) -> Answer {
        let req = self.authed(self.http.request(method, format!("{}{}", self.base, path)).timeout(timeout));
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Answer::TimedOut,
            Err(e) => return Answer::NoAnswer(e.to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            // Read the body so the connection is reused.
            return match resp.bytes().await {
                Ok(_) => Answer::Status { status, error: None },
                Err(e) if e.is_timeout() => Answer::TimedOut,
                Err(e) => Answer::NoAnswer(e.to_string()),
            };
        }
        let error = resp.bytes().await.ok().and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok()).and_then(|b| b.errors.into_iter().next());
        Answer::Status { status, error }
    }

    /// GET `path` and the answer's bytes; an error answer is an error.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.get_ok(path, std::time::Duration::from_secs(600)).await?;
        Ok(resp.bytes().await.with_context(|| format!("reading the answer of {path}"))?.to_vec())
    }

    /// GET `path` into the file `dest` as it arrives, refusing (and
    /// removing) it unless its bytes hash to `digest`; returns the size.
    pub async fn download_verified(&self, path: &str, dest: &Path, digest: &str) -> anyhow::Result<u64> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt;
        let mut resp = self.get_ok(path, std::time::Duration::from_secs(3600)).await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let part = dest.with_extension("part");
        let mut file = tokio::fs::File::create(&part).await.with_context(|| format!("cannot create {}", part.display()))?;
        let (mut hasher, mut size) = (sha2::Sha256::new(), 0u64);
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {path}"))? {
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            size += chunk.len() as u64;
        }
        file.sync_all().await?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        if got != digest {
            let _ = tokio::fs::remove_file(&part).await;
            anyhow::bail!("{path} answered bytes with digest {got}, not {digest}");
        }
        tokio::fs::rename(&part, dest).await?;
        Ok(size)
    }

    async fn get_ok(&self, path: &str, timeout: std::time::Duration) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{}", self.base, path);
        let resp = self.authed(self.http.get(&url)).timeout(timeout).send().await.with_context(|| format!("cannot reach {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{}", refusal(status, &resp.bytes().await.unwrap_or_default()));
        }
        Ok(resp)
    }

    async fn send<T: DeserializeOwned>(&self, method: reqwest::Method, path: &str, body: Option<&impl Serialize>) -> anyhow::Result<Option<T>> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.authed(self.http.request(method, &url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            bail!("{}", refusal(status, &bytes));
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

    /// PUT `body`, and the answer.
    pub async fn put_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.send(reqwest::Method::PUT, path, Some(body)).await?.context("empty answer")
    }

    /// POST raw bytes (a file as it is), and the JSON answer.
    pub async fn post_bytes<T: DeserializeOwned>(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<T> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .authed(self.http.post(&url))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let answer = resp.bytes().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            bail!("{}", refusal(status, &answer));
        }
        serde_json::from_slice(&answer).with_context(|| format!("unreadable answer from {url}"))
    }

    /// POST `body`, expecting no answer worth reading.
    pub async fn post_only(&self, path: &str, body: &impl Serialize) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::POST, path, Some(body)).await.map(|_| ())
    }

    pub async fn post_empty(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::POST, path, None::<&()>).await.map(|_| ())
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send::<serde_json::Value>(reqwest::Method::DELETE, path, None::<&()>).await.map(|_| ())
    }
}

/// A refusal as one line: the error body's first message (or its text)
/// and the status.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.errors.into_iter().next())
        .map(|e| e.message)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("{} ({})", msg, status.as_u16())
}
