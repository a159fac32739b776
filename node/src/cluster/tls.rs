//! HTTPS on the registry/API listener.
//!
//! Two ways to get a certificate, chosen in `[tls]` or by `node start` flags:
//! - `files`: the operator's PEM certificate (a chain is fine) and key,
//!   re-read when the files change or on SIGHUP; a bad new pair is logged
//!   and the old one kept;
//! - `cluster`: a server certificate signed by the cluster CA for the
//!   node's advertised names and addresses, renewed when two thirds of its
//!   life have passed. Clients trust it through `berth cluster ca export`.
//!
//! Either way the certificate sits behind a resolver that is swapped
//! atomically: new connections get the new certificate, open ones finish
//! with theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Checks a PEM pair and makes it usable: readable, parseable, the key
/// matches the certificate, and the certificate is valid now.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("{what}: certificate PEM is unreadable: {e}"))?;
    let Some(leaf) = chain.first() else { bail!("{what}: no certificate in the certificate file") };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| anyhow::anyhow!("{what}: private key PEM is unreadable: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| anyhow::anyhow!("{what}: certificate is not valid X.509: {e}"))?;
    let now = x509_parser::time::ASN1Time::now();
    if cert.validity().not_after < now {
        bail!("{what}: certificate expired on {}", cert.validity().not_after);
    }
    if cert.validity().not_before > now {
        bail!("{what}: certificate is not valid before {}", cert.validity().not_before);
    }
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| anyhow::anyhow!("{what}: private key is not usable: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|_| anyhow::anyhow!("{what}: the private key does not match the certificate"))?;
    Ok(ck)
}

/// Reads and checks the operator's files.
pub fn load_files(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let c = std::fs::read(cert).with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
    let k = std::fs::read(key).with_context(|| format!("cannot read TLS key {}", key.display()))?;
    certified_key(&c, &k, &format!("{} / {}", cert.display(), key.display()))
}

/// The certificate currently served; swapped in place.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn new(ck: CertifiedKey) -> Arc<ReloadingCert> {
        Arc::new(ReloadingCert { current: RwLock::new(Arc::new(ck)) })
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("certificate lock").clone()
    }

    pub fn swap(&self, ck: CertifiedKey) {
        *self.current.write().expect("certificate lock") = Arc::new(ck);
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// A server configuration over the resolver, offering HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: Arc<ReloadingCert>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// SIGHUP, the reload request (`systemctl reload`). A node listens for it
/// in every TLS mode, so a reload never ends the process (SIGHUP's default).
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// The next SIGHUP (never, if the handler could not be installed).
pub async fn next_hangup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup.as_mut() {
        Some(h) => {
            h.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Without TLS there is nothing to reload: SIGHUP is noted and ignored.
pub async fn ignore_reloads(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut hup = hangups();
    loop {
        tokio::select! {
            _ = next_hangup(&mut hup) => tracing::info!("SIGHUP: nothing to reload (no TLS on the registry listener)"),
            _ = shutdown.changed() => return,
        }
    }
}

/// Re-reads the operator's files when they change or on SIGHUP.
pub async fn watch_files(resolver: Arc<ReloadingCert>, cert: PathBuf, key: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut hup = hangups();
    let mut seen = (mtime(&cert), mtime(&key));
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => false,
            _ = next_hangup(&mut hup) => true,
            _ = shutdown.changed() => return,
        };
        let now = (mtime(&cert), mtime(&key));
        if !forced && now == seen {
            continue;
        }
        // A rotation writes two files: read them once both have settled.
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = (mtime(&cert), mtime(&key));
        match load_files(&cert, &key) {
            Ok(ck) => {
                resolver.swap(ck);
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "new TLS certificate refused; still serving the previous one"),
        }
    }
}

/// The names a node's HTTPS certificate covers: its advertised host, its
/// listen address when specific, and the loopback names.
pub fn names_for(http_advertise: &str, http_listen: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(rest) = http_advertise.split_once("://").map(|(_, r)| r) {
        let host = rest.split('/').next().unwrap_or(rest);
        let host = if host.starts_with('[') {
            host.split(']').next().unwrap_or(host).trim_start_matches('[')
        } else {
            host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
        };
        names.push(host.to_string());
    }
    if let Ok(addr) = http_listen.parse::<std::net::SocketAddr>() {
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
    }
    for n in ["localhost", "127.0.0.1"] {
        names.push(n.to_string());
    }
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}
