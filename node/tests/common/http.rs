//! A registry client for tests: one node, logged in as admin.

#![allow(dead_code)]

use berth_common::Digest;
use reqwest::{Method, StatusCode};
use serde_json::json;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A client of one node, logged in as admin.
#[derive(Clone)]
pub struct Reg {
    pub base: String,
    pub http: reqwest::Client,
}

impl Reg {
    pub fn new(node: &berth_node::runtime::RunningNode) -> Reg {
        Reg { base: format!("http://{}", node.http_addr), http: reqwest::Client::new() }
    }

    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) };
        self.http.request(method, url).basic_auth("admin", Some("admin-password"))
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
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

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
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

/// A TCP proxy that keeps a copy of every byte its clients send, to see
/// what one node sends another.
pub struct Tap {
    pub addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    target: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
}

impl Tap {
    pub async fn start() -> Tap {
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let target: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::new(Mutex::new(None));
        let (s, t) = (sent.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(to) = *t.lock().unwrap() else { continue };
                let s = s.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = tokio::io::split(server);
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if sw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Tap { addr, sent, target }
    }

    /// Where connections go from now on.
    pub fn point_at(&self, to: std::net::SocketAddr) {
        *self.target.lock().unwrap() = Some(to);
    }

    /// Everything clients sent so far, as text (binary bodies lossily).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).into_owned()
    }
}
