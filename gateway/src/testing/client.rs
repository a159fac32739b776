//! A registry client for tests, and the checks of the spec's text that
//! hold for any registry: the gateway's tests run them against the
//! in-memory node, the node's against a real cluster.

use berth_common::Digest;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub type Resp = (StatusCode, reqwest::header::HeaderMap, Vec<u8>);

/// A client of one registry, logged in with a user's password.
#[derive(Clone)]
pub struct Reg {
    pub base: String,
    pub http: reqwest::Client,
    user: String,
    password: String,
}

impl Reg {
    /// A client of the registry at `base` (`http://host:port`).
    pub fn at(base: impl Into<String>, user: &str, password: &str) -> Reg {
        Reg { base: base.into(), http: reqwest::Client::new(), user: user.into(), password: password.into() }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) };
        self.http.request(method, url).basic_auth(&self.user, Some(&self.password))
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, h, r.bytes().await.unwrap().to_vec())
    }

    /// Pushes a blob in one request; returns its digest.
    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let (s, h, _) = self.send(self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}")).body(bytes.to_vec())).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(h["docker-content-digest"], d.to_string().as_str());
        d
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.send(self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}")).header("content-type", media_type).body(body.to_vec())).await
    }

    /// A config and one layer pushed, and an OCI manifest for them.
    pub async fn image(&self, repo: &str, seed: &str) -> Vec<u8> {
        let config = self.blob(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes()).await;
        let layer = self.blob(repo, format!("layer {seed}").as_bytes()).await;
        manifest_json(&config, 2 + seed.len() as u64 + 10, &[(layer, 6 + seed.len() as u64)], None, None)
    }

    pub async fn status_of(&self, method: Method, path: &str) -> StatusCode {
        self.send(self.req(method, path)).await.0
    }
}

pub fn manifest_json(config: &Digest, config_size: u64, layers: &[(Digest, u64)], subject: Option<(&Digest, u64)>, artifact_type: Option<&str>) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        v["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s});
    }
    if let Some(a) = artifact_type {
        v["artifactType"] = json!(a);
        v["annotations"] = json!({"org.example.kind": a});
    }
    serde_json::to_vec(&v).unwrap()
}

/// A HEAD response carries no body: only the status tells.
pub fn assert_head_error(resp: &Resp, status: StatusCode) {
    assert_eq!(resp.0, status);
    assert!(resp.2.is_empty());
}

/// Asserts an error response: status and the spec's JSON with `code`.
pub fn assert_error(resp: &Resp, status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "body: {}", String::from_utf8_lossy(&resp.2));
    let v: Value = serde_json::from_slice(&resp.2).unwrap_or_else(|e| panic!("error body is JSON ({e}): {}", String::from_utf8_lossy(&resp.2)));
    assert_eq!(v["errors"][0]["code"], code, "{v}");
    assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {v}");
}
