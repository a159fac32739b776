//! Proxy-cache organizations' fill: a manifest read in an organization
//! configured as a proxy cache (`berth_raft::state::proxycache`) that
//! misses, or that names a tag the upstream has not confirmed for
//! `expiration_s`, is answered from the upstream first.
//!
//! One node fetches a given (repository, reference) at a time,
//! cluster-wide: it takes the fetch lease through Raft; every other read
//! of it, on any node, waits for the lease to end and then serves what
//! the fetch stored. The fetch copies blobs, then manifests bottom-up by
//! digest, then the tag, through the registry's normal push path as the
//! node's operator (a [`berth_raft::ProxyCacheCommand::Fill`]), so the
//! cache replicates and obeys `min_copies` like any push, and the manifest
//! is visible only once its blobs are stored. A tag due a re-check costs
//! one `HEAD` upstream when it has not moved; an upstream that cannot be
//! reached leaves the cached copy served.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_common::{Digest, RepoName};
use berth_gateway::{Access, ApiError, ErrorCode, Principal, Reference, Registry};
use berth_raft::command::{namespace_of, BlobRecord, ProxyCacheCommand, ProxyCacheConfig};
use berth_raft::state::{keys, proxycache as rules, tags};
use berth_raft::{Actor, MetaCommand, MetaNodeHandle, MetaResponse, StateRead};
use bytes::Bytes;

use super::api::PullThrough;
use super::manifest::{self, Kind};
use super::mirror::upstream::{Upstream, UpstreamError, UpstreamSpec};
use crate::errors::{meta_err, state_err};
use crate::util::now_ms;

/// How long a fetch lease lasts unless renewed (every third of it while
/// the fetch runs): a node that dies mid-fetch holds up the reads of that
/// reference this long.
const FETCH_LEASE: Duration = Duration::from_secs(30);
/// How long a read waits for another node's fetch.
const WAIT_MAX: Duration = Duration::from_secs(180);
/// How often a waiting read looks at the lease.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// How long a re-check of a cached tag may take before the cached copy
/// is served: an upstream that hangs must not hold up pulls of what is here.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, a cached tag is served without asking the
/// upstream again for this long (one attempt, not one per pull, while it
/// is down).
const FAILED_BACKOFF_MS: u64 = 10_000;
/// How deep an index may nest indexes.
const MAX_DEPTH: usize = 4;

type CopyFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Digest, Bytes, String), ApiError>> + Send + 'a>>;

pub struct ProxyCache {
    meta: MetaNodeHandle,
    /// The node's registry, whose push path stores what is fetched (weak:
    /// the registry holds this fill, and must not be kept alive by it
    /// after the node stops).
    registry: Weak<dyn Registry>,
    /// `[mirror] ca_file`: CAs the operator trusts for upstream registries,
    /// beside the system's.
    ca_file: Option<std::path::PathBuf>,
}

impl ProxyCache {
    pub fn new(meta: MetaNodeHandle, registry: Weak<dyn Registry>, ca_file: Option<std::path::PathBuf>) -> Arc<ProxyCache> {
        Arc::new(ProxyCache { meta, registry, ca_file })
    }

    fn registry(&self) -> Result<Arc<dyn Registry>, ApiError> {
        self.registry.upgrade().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the node is stopping"))
    }

    fn access() -> Access {
        Access { principal: Principal::Operator, ip: None }
    }

    /// Whether `reference` is held here (a tag: visible now).
    fn cached(&self, repo: &RepoName, reference: &Reference) -> Result<Option<Digest>, ApiError> {
        let state = self.meta.state();
        match reference {
            Reference::Digest(d) => Ok(state.get_raw(&keys::manifest(repo.as_str(), d)).map_err(state_err)?.map(|_| d.clone())),
            Reference::Tag(t) => Ok(tags::visible_tag(&state, repo.as_str(), t, now_ms()).map_err(state_err)?.map(|t| t.digest)),
        }
    }

    /// Whether `reference` may be served without asking the upstream: a
    /// digest once held, a tag until `expiration_s` after its last check.
    fn fresh(&self, repo: &RepoName, reference: &Reference, cfg: &ProxyCacheConfig) -> Result<bool, ApiError> {
        if self.cached(repo, reference)?.is_none() {
            return Ok(false);
        }
        match reference {
            Reference::Digest(_) => Ok(true),
            Reference::Tag(t) => {
                let rec = rules::fetch(&self.meta.state(), repo.as_str(), t).map_err(state_err)?;
                let now = now_ms();
                let confirmed = rec.checked_ms.is_some_and(|at| at + cfg.expiration_s * 1000 > now);
                let failed_lately = rec.failed.as_ref().is_some_and(|(at, _)| at + FAILED_BACKOFF_MS > now);
                Ok(confirmed || failed_lately)
            }
        }
    }

    async fn write(&self, cmd: ProxyCacheCommand) -> Result<MetaResponse, ApiError> {
        self.meta.write(Actor::Node, MetaCommand::ProxyCache(cmd)).await.map_err(meta_err)
    }

    /// Fetches under the lease this node holds, records the outcome, and
    /// says whether the read may go on (a failed re-check of a cached tag
    /// serves the cached copy).
    async fn fetch_under_lease(&self, repo: &RepoName, reference: &Reference, cfg: &ProxyCacheConfig) -> Result<(), ApiError> {
        let started = Instant::now();
        let renewer = {
            let (meta, repo, reference) = (self.meta.clone(), repo.to_string(), reference.to_string());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FETCH_LEASE / 3).await;
                    let until_ms = now_ms() + FETCH_LEASE.as_millis() as u64;
                    let renew = ProxyCacheCommand::RenewFetch { repo: repo.clone(), reference: reference.clone(), node: meta.id(), until_ms };
                    match meta.write(Actor::Node, MetaCommand::ProxyCache(renew)).await {
                        Ok(MetaResponse::Done) => {}
                        // Taken over: the fetch goes on (its writes are idempotent), unrenewed.
                        Ok(other) => {
                            tracing::info!(repo = %repo, reference = %reference, outcome = ?other, "proxy cache fetch lease lost");
                            return;
                        }
                        Err(e) => tracing::debug!(repo = %repo, error = %e, "proxy cache fetch lease not renewed"),
                    }
                }
            })
        };
        let outcome = self.fetch(repo, reference, cfg).await;
        renewer.abort();
        let error = outcome.as_ref().err().map(|e| e.message.clone());
        let finish = ProxyCacheCommand::FinishFetch {
            repo: repo.to_string(),
            reference: reference.to_string(),
            node: self.meta.id(),
            now_ms: now_ms(),
            error: error.clone(),
        };
        if let Err(e) = self.write(finish).await {
            tracing::warn!(repo = %repo, reference = %reference, error = %e.message, "proxy cache fetch outcome not recorded; its lease will lapse");
        }
        let count = |outcome: &'static str| metrics::counter!("berth_proxy_cache_fetches_total", "outcome" => outcome).increment(1);
        match outcome {
            Ok(None) => {
                count("confirmed");
                tracing::debug!(repo = %repo, reference = %reference, "proxy cache tag confirmed upstream");
                Ok(())
            }
            Ok(Some(copied)) => {
                count("filled");
                tracing::info!(repo = %repo, reference = %reference, copied, ms = started.elapsed().as_millis() as u64, "proxy cache filled");
                Ok(())
            }
            Err(e) if self.cached(repo, reference)?.is_some() => {
                count("stale");
                tracing::warn!(repo = %repo, reference = %reference, error = %e.message, "proxy cache upstream failed; serving the cached copy");
                Ok(())
            }
            Err(e) => {
                count("failed");
                Err(e)
            }
        }
    }

    fn upstream(&self, repo: &RepoName, cfg: &ProxyCacheConfig) -> Result<Upstream, ApiError> {
        let org = namespace_of(repo.as_str()).unwrap_or_default();
        let rest = repo.as_str().strip_prefix(&format!("{org}/")).ok_or_else(|| {
            ApiError::new(ErrorCode::NameInvalid, format!("{repo}: a proxy cache serves repositories under its organization, {org}/<upstream path>"))
        })?;
        let password = match &cfg.sealed_password {
            Some(sealed) => Some(
                crate::mirror_config::open(&self.meta.state(), &crate::mirror_config::proxy_cache_seal_scope(org), sealed)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
            ),
            None => None,
        };
        let ca_pem = match &self.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("upstream CA bundle {}: {e}", p.display())))?),
            None => None,
        };
        Upstream::new(UpstreamSpec {
            reference: format!("{}/{rest}", cfg.upstream_registry.trim_end_matches('/')),
            username: cfg.username.clone(),
            password,
            verify_tls: !cfg.insecure,
            http_proxy: None,
            https_proxy: None,
            no_proxy: None,
            ca_pem,
            timeout: Duration::from_secs(600),
        })
        .map_err(upstream_err)
    }

    /// Copies `reference` from the upstream: the number of blobs copied,
    /// or `None` when a re-checked tag had not moved.
    async fn fetch(&self, repo: &RepoName, reference: &Reference, cfg: &ProxyCacheConfig) -> Result<Option<usize>, ApiError> {
        let upstream = self.upstream(repo, cfg)?;
        let mut copied = 0;
        match reference {
            Reference::Digest(d) => {
                self.copy_manifest(&upstream, repo, &d.to_string(), 0, &mut copied).await?;
            }
            Reference::Tag(t) => {
                let current = self.cached(repo, reference)?;
                if let Some(local) = &current {
                    // Re-validation: a tag that has not moved costs one HEAD.
                    let head = tokio::time::timeout(RECHECK_TIMEOUT, upstream.manifest_digest(t)).await.map_err(|_| {
                        ApiError::new(ErrorCode::Unavailable, format!("proxy cache: the upstream did not answer within {} s", RECHECK_TIMEOUT.as_secs()))
                    })?;
                    if head.map_err(upstream_err)?.as_ref() == Some(local) {
                        return Ok(None);
                    }
                }
                let (digest, bytes, media_type) = self.copy_manifest(&upstream, repo, t, 0, &mut copied).await?;
                if current.as_ref() != Some(&digest) {
                    self.registry()?.manifest_put(&Self::access(), repo, reference, Some(&media_type), bytes).await?;
                }
            }
        }
        Ok(Some(copied))
    }

    /// Copies the manifest at `reference` with everything it names, and
    /// stores it by digest.
    fn copy_manifest<'a>(&'a self, upstream: &'a Upstream, repo: &'a RepoName, reference: &'a str, depth: usize, copied: &'a mut usize) -> CopyFuture<'a> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(ApiError::new(ErrorCode::ManifestInvalid, format!("{reference}: indexes nested deeper than {MAX_DEPTH}")));
            }
            let fetched = upstream.manifest(reference).await.map_err(upstream_err)?;
            let parsed = manifest::parse(&fetched.bytes, fetched.media_type.as_deref())?;
            if parsed.kind == Kind::Index {
                for child in &parsed.children {
                    self.copy_manifest(upstream, repo, &child.to_string(), depth + 1, copied).await?;
                }
            }
            for blob in &parsed.blobs {
                if self.copy_blob(upstream, repo, blob).await? {
                    *copied += 1;
                }
            }
            let held = self.meta.state().get_raw(&keys::manifest(repo.as_str(), &fetched.digest)).map_err(state_err)?.is_some();
            if !held {
                let r = Reference::Digest(fetched.digest.clone());
                self.registry()?.manifest_put(&Self::access(), repo, &r, Some(&parsed.media_type), fetched.bytes.clone()).await?;
            }
            Ok((fetched.digest, fetched.bytes, parsed.media_type))
        })
    }

    /// Copies one blob unless the repository holds it with a copy on
    /// this node; whether it was copied.
    async fn copy_blob(&self, upstream: &Upstream, repo: &RepoName, digest: &Digest) -> Result<bool, ApiError> {
        let state = self.meta.state();
        let linked = state.get_raw(&keys::link(repo.as_str(), digest)).map_err(state_err)?.is_some();
        let here = state.get::<BlobRecord>(&keys::blob(digest)).map_err(state_err)?.is_some_and(|b| b.holders.contains(&self.meta.id()));
        if linked && here {
            return Ok(false);
        }
        let stream = upstream.blob(digest).await.map_err(upstream_err)?;
        self.registry()?.blob_put(&Self::access(), repo, digest, Box::pin(stream)).await?;
        Ok(true)
    }
}

/// An upstream's failure as the puller sees it: what it does not have
/// is unknown here too; anything else is a 502-like unavailability.
fn upstream_err(e: UpstreamError) -> ApiError {
    match &e {
        UpstreamError::Status { status, .. } if *status == reqwest::StatusCode::NOT_FOUND => {
            ApiError::new(ErrorCode::ManifestUnknown, format!("proxy cache: {e}"))
        }
        _ => ApiError::new(ErrorCode::Unavailable, format!("proxy cache: {e}")),
    }
}

#[async_trait]
impl PullThrough for ProxyCache {
    async fn before_manifest_read(&self, repo: &RepoName, reference: &Reference) -> Result<(), ApiError> {
        let state = self.meta.state();
        let Some(cfg) = rules::config_of_repo(&state, repo.as_str()).map_err(state_err)? else { return Ok(()) };
        let began_ms = now_ms();
        let deadline = Instant::now() + WAIT_MAX;
        let key = reference.to_string();
        loop {
            if self.fresh(repo, reference, &cfg)? {
                return Ok(());
            }
            let now = now_ms();
            let acquire = ProxyCacheCommand::AcquireFetch {
                repo: repo.to_string(),
                reference: key.clone(),
                node: self.meta.id(),
                now_ms: now,
                until_ms: now + FETCH_LEASE.as_millis() as u64,
            };
            match self.write(acquire).await {
                Ok(MetaResponse::Done) => return self.fetch_under_lease(repo, reference, &cfg).await,
                // The configuration went meanwhile: an ordinary read.
                Ok(MetaResponse::NotFound) => return Ok(()),
                Ok(_) => {}
                // No quorum: what is here is served; a miss cannot be filled.
                Err(e) if self.cached(repo, reference)?.is_some() => {
                    tracing::debug!(repo = %repo, error = %e.message, "proxy cache lease not taken; serving the cached copy");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            // Another fetch of this reference runs (on this node or
            // another): wait for its end, then serve what it stored.
            loop {
                tokio::time::sleep(WAIT_POLL).await;
                let rec = rules::fetch(&self.meta.state(), repo.as_str(), &key).map_err(state_err)?;
                if rec.lease.as_ref().is_some_and(|l| l.until_ms > now_ms()) {
                    if Instant::now() > deadline {
                        return Err(ApiError::new(
                            ErrorCode::Unavailable,
                            format!("proxy cache: waited {} s for the fetch of {repo}:{key}", WAIT_MAX.as_secs()),
                        ));
                    }
                    continue;
                }
                if let Some((at, why)) = rec.failed.filter(|(at, _)| *at >= began_ms) {
                    if self.cached(repo, reference)?.is_some() {
                        return Ok(());
                    }
                    let _ = at;
                    return Err(ApiError::new(ErrorCode::Unavailable, why));
                }
                break;
            }
        }
    }
}
