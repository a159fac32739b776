//! A client of the upstream registry a mirror copies from: the OCI
//! distribution API over reqwest, with the Docker token flow (a 401's
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` answered at the
//! realm, with the upstream credentials if any) or basic auth, TLS
//! verification as configured (plus the operator's CA bundle), and the
//! configured HTTP proxy.

use std::time::Duration;

use berth_common::Digest;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::{header, Method, StatusCode};

/// What a manifest fetch asks for: every kind the registry stores.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The most tags one listing page may ask for.
const TAG_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0}")]
    Http(String),
    #[error("upstream refused {what}: {status}{detail}")]
    Status { what: String, status: StatusCode, detail: String },
    #[error("upstream manifest {reference} has digest {got}, not {want}")]
    DigestMismatch { reference: String, got: Digest, want: String },
    #[error("upstream configuration: {0}")]
    Config(String),
}

type Result<T> = std::result::Result<T, UpstreamError>;

/// How to reach the upstream.
pub struct UpstreamSpec {
    /// `host[:port]/path`.
    pub reference: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub verify_tls: bool,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    /// Extra CAs (PEM) trusted for the upstream.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

pub struct Upstream {
    http: reqwest::Client,
    /// `https://host[:port]` or, for an upstream without TLS reached with
    /// verification off, `http://host[:port]`.
    base: tokio::sync::RwLock<String>,
    host: String,
    path: String,
    creds: Option<(String, String)>,
    /// The bearer token of the last challenge answered.
    token: tokio::sync::RwLock<Option<String>>,
    may_fall_back_to_http: bool,
}

pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: Option<String>,
    pub digest: Digest,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Result<Upstream> {
        let (host, path) = spec.reference.split_once('/').ok_or_else(|| UpstreamError::Config(format!("reference {} has no path", spec.reference)))?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(spec.timeout)
            .user_agent(concat!("berth-mirror/", env!("CARGO_PKG_VERSION")));
        if !spec.verify_tls {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &spec.ca_pem {
            b = b.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem).map_err(|e| UpstreamError::Config(format!("CA bundle: {e}")))?);
        }
        let no_proxy = spec.no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
        if let Some(p) = &spec.http_proxy {
            b = b.proxy(reqwest::Proxy::http(p).map_err(|e| UpstreamError::Config(format!("http_proxy: {e}")))?.no_proxy(no_proxy.clone()));
        }
        if let Some(p) = &spec.https_proxy {
            b = b.proxy(reqwest::Proxy::https(p).map_err(|e| UpstreamError::Config(format!("https_proxy: {e}")))?.no_proxy(no_proxy.clone()));
        }
        if spec.http_proxy.is_none() && spec.https_proxy.is_none() {
            b = b.no_proxy();
        }
        let http = b.build().map_err(|e| UpstreamError::Config(format!("http client: {e}")))?;
        let creds = match (spec.username, spec.password) {
            (Some(u), p) => Some((u, p.unwrap_or_default())),
            _ => None,
        };
        Ok(Upstream {
            http,
            base: tokio::sync::RwLock::new(format!("https://{host}")),
            host: host.to_string(),
            path: path.to_string(),
            creds,
            token: tokio::sync::RwLock::new(None),
            may_fall_back_to_http: !spec.verify_tls,
        })
    }

    /// One request with the auth the upstream asks for: the current token,
    /// else none; on a 401, its challenge answered once.
    async fn send(&self, method: Method, path: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        let mut answered = false;
        loop {
            let base = self.base.read().await.clone();
            let token = self.token.read().await.clone();
            let request = || {
                let mut rb = self.http.request(method.clone(), format!("{base}{path}"));
                if let Some(a) = accept {
                    rb = rb.header(header::ACCEPT, a);
                }
                if let Some(t) = &token {
                    rb = rb.header(header::AUTHORIZATION, t);
                }
                rb
            };
            let resp = match self.idempotent(request).await {
                Ok(r) => r,
                // An upstream without TLS, reached with verification off
                // (as skopeo's --tls-verify=false does): plain HTTP from now on.
                Err(e) if self.may_fall_back_to_http && base.starts_with("https://") && (e.is_connect() || e.is_request()) => {
                    tracing::info!(host = %self.host, error = %e, "upstream has no TLS; using http");
                    *self.base.write().await = format!("http://{}", self.host);
                    continue;
                }
                Err(e) => return Err(UpstreamError::Http(format!("{method} {path}: {}", chain(&e)))),
            };
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(resp);
            }
            answered = true;
            let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let auth = self.answer(&challenge).await?;
            *self.token.write().await = Some(auth);
        }
    }

    /// Sends a GET or HEAD (every request this client makes), and again,
    /// up to twice, when the connection it went out on was closed under
    /// it. A proxy or upstream that closes a kept-alive connection after
    /// its answer without saying so (tinyproxy does) races the next
    /// request on that connection, which then fails with no answer;
    /// these requests change nothing upstream, so a resend is safe.
    async fn idempotent(&self, request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let mut resent = 0;
        loop {
            match request().send().await {
                Err(e) if resent < 2 && closed_under_it(&e) => {
                    resent += 1;
                    tracing::debug!(host = %self.host, error = %chain(&e), "the connection closed under a request; sending it again");
                }
                done => return done,
            }
        }
    }

    /// The `Authorization` value a challenge asks for.
    async fn answer(&self, challenge: &str) -> Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (u, p) = self.creds.as_ref().ok_or_else(|| UpstreamError::Http("asks for credentials and the mirror has none".into()))?;
            use base64::Engine;
            return Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(UpstreamError::Http(format!("asks for auth scheme {scheme:?}, which berth does not speak")));
        }
        let params = challenge_params(params);
        let realm =
            params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).ok_or_else(|| UpstreamError::Http("bearer challenge without realm".into()))?;
        let mut url = reqwest::Url::parse(&realm).map_err(|e| UpstreamError::Http(format!("bearer realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                q.append_pair("service", s);
            }
            let scope = params.iter().find(|(k, _)| k == "scope").map(|(_, v)| v.clone()).unwrap_or_else(|| format!("repository:{}:pull", self.path));
            q.append_pair("scope", &scope);
        }
        let request = || {
            let rb = self.http.get(url.clone());
            match &self.creds {
                Some((u, p)) => rb.basic_auth(u, Some(p)),
                None => rb,
            }
        };
        let resp = self.idempotent(request).await.map_err(|e| UpstreamError::Http(format!("token request: {}", chain(&e))))?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status { what: "the token request".into(), status: resp.status(), detail: String::new() });
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| UpstreamError::Http(format!("token answer: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| UpstreamError::Http("token answer without a token".into()))?;
        Ok(format!("Bearer {token}"))
    }

    async fn checked(&self, what: &str, resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let detail = if text.is_empty() { String::new() } else { format!(" ({})", text.chars().take(300).collect::<String>().trim()) };
        Err(UpstreamError::Status { what: what.to_string(), status, detail })
    }

    /// Every tag of the upstream repository, following `Link` pages.
    pub async fn tags(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{}/tags/list?n={TAG_PAGE}", self.path));
        while let Some(path) = next.take() {
            let resp = self.send(Method::GET, &path, None).await?;
            let resp = self.checked("the tag list", resp).await?;
            next = resp
                .headers()
                .get(header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(u, _)| u.to_string()))
                .map(|u| match reqwest::Url::parse(&u) {
                    Ok(abs) => format!("{}{}", abs.path(), abs.query().map(|q| format!("?{q}")).unwrap_or_default()),
                    Err(_) => u,
                });
            let body: serde_json::Value = resp.json().await.map_err(|e| UpstreamError::Http(format!("tag list: {e}")))?;
            if let Some(tags) = body.get("tags").and_then(|t| t.as_array()) {
                out.extend(tags.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
        }
        Ok(out)
    }

    /// A manifest, checked against its digest (`reference` when it is
    /// one, else the upstream's `Docker-Content-Digest` when it sends one).
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let resp = self.send(Method::GET, &format!("/v2/{}/manifests/{reference}", self.path), Some(MANIFEST_ACCEPT)).await?;
        let resp = self.checked(&format!("manifest {reference}"), resp).await?;
        let media_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let claimed = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| UpstreamError::Http(format!("manifest {reference}: {e}")))?;
        if bytes.len() > berth_gateway::MAX_MANIFEST_BYTES {
            return Err(UpstreamError::Http(format!("manifest {reference} is over {} bytes", berth_gateway::MAX_MANIFEST_BYTES)));
        }
        let digest = Digest::sha256_of(&bytes);
        let want = if reference.starts_with("sha256:") { Some(reference.to_string()) } else { claimed.filter(|c| c.starts_with("sha256:")) };
        if let Some(want) = want {
            if want != digest.to_string() {
                return Err(UpstreamError::DigestMismatch { reference: reference.to_string(), got: digest, want });
            }
        }
        Ok(FetchedManifest { bytes, media_type, digest })
    }

    /// The digest the upstream serves for `reference` now, from a `HEAD`
    /// (no body); `None` when it does not say.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>> {
        let resp = self.send(Method::HEAD, &format!("/v2/{}/manifests/{reference}", self.path), Some(MANIFEST_ACCEPT)).await?;
        let resp = self.checked(&format!("manifest {reference}"), resp).await?;
        Ok(resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|d| d.parse::<Digest>().ok()))
    }

    /// A blob's bytes, streamed; the caller checks the digest as it stores them.
    pub async fn blob(&self, digest: &Digest) -> Result<impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static> {
        let resp = self.send(Method::GET, &format!("/v2/{}/blobs/{digest}", self.path), None).await?;
        let resp = self.checked(&format!("blob {digest}"), resp).await?;
        Ok(resp.bytes_stream().map_err(std::io::Error::other))
    }
}

/// An error with its causes: reqwest's own message alone ("error sending
/// request") does not say that a certificate was refused.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Whether a request failed on a connection that closed (or was reset)
/// before its answer came: not a refused or timed-out connection, which a
/// resend would not mend.
fn closed_under_it(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() {
        return false;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_incomplete_message() || h.is_canceled()) {
            return true;
        }
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::BrokenPipe))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// `k="v",k2=v2` of a challenge (quoted values may hold commas).
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, after) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((k, v));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's head, lowercased; None at the end of the connection or
    /// when it is not HTTP (the TLS hello of the first try).
    async fn head(conn: &mut tokio::net::TcpStream) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.ok()? == 0 || (buf.is_empty() && !byte[0].is_ascii_uppercase()) {
                return None;
            }
            buf.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&buf).to_ascii_lowercase())
    }

    /// An upstream behind a proxy like tinyproxy: one answer per
    /// connection, which it keeps open without saying it will close it,
    /// then drops when the next request arrives. Answers 401 (basic)
    /// without credentials and a tag list with them. Counts the requests
    /// it dropped.
    async fn one_answer_per_connection() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = dropped.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let dropped = counted.clone();
                tokio::spawn(async move {
                    let Some(request) = head(&mut conn).await else { return };
                    let answer = if request.contains("authorization: basic") {
                        let body = r#"{"name":"lib/app","tags":["a","b"]}"#;
                        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"up\"\r\nContent-Length: 0\r\n\r\n".to_string()
                    };
                    conn.write_all(answer.as_bytes()).await.unwrap();
                    if head(&mut conn).await.is_some() {
                        dropped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        (addr, dropped)
    }

    #[tokio::test]
    async fn a_request_whose_connection_closes_under_it_is_sent_again() {
        crate::install_crypto_provider();
        let (addr, dropped) = one_answer_per_connection().await;
        let up = Upstream::new(UpstreamSpec {
            reference: format!("{addr}/lib/app"),
            username: Some("puller".into()),
            password: Some("secret".into()),
            verify_tls: false,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            ca_pem: None,
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        assert_eq!(up.tags().await.unwrap(), ["a", "b"]);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the answered challenge went out on the connection the upstream then dropped");
    }

    #[test]
    fn challenges_parse() {
        let p = challenge_params(r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#);
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        assert_eq!(challenge_params("realm=x, service=y"), vec![("realm".into(), "x".into()), ("service".into(), "y".into())]);
    }
}
