//! [`Registry`] over the in-memory state: blobs, uploads, manifests, tags
//! and registry tokens.

use async_trait::async_trait;
use berth_common::{Digest, RepoName};
use bytes::Bytes;
use serde_json::Value;

use super::{collect, may, now_secs, rfc3339, verified, AuditRecord, Manifest, MemoryNode, Repo, State, TokenGrant, Upload, SERVICE, TOKEN_TTL_SECS};
use crate::access::{Access, Caller, IssuedToken, Principal, ResourceScope};
use crate::endpoint::Reference;
use crate::error::{ApiError, ErrorCode};
use crate::registry::{Action, BlobBody, ByteRange, ByteStream, Descriptor, Page, PutOutcome, Registry, Scope, StoredManifest, UploadOwner, UploadState};

/// Media types a manifest may have here.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
    }
}

fn name_unknown(repo: &RepoName) -> ApiError {
    ApiError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known"))
}

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(ErrorCode::BlobUploadUnknown, format!("upload {id} is unknown (finished, cancelled or never started)"))
}

/// `items` after `last`, at most `n` of them.
fn page<'a>(items: impl Iterator<Item = &'a str>, n: Option<usize>, last: Option<&str>) -> Page {
    let mut rest = items.filter(|i| last.is_none_or(|l| *i > l)).map(str::to_string);
    let items: Vec<String> = match n {
        Some(n) => rest.by_ref().take(n).collect(),
        None => rest.by_ref().collect(),
    };
    Page { items, more: rest.next().is_some() }
}

impl State {
    fn repo(&self, name: &RepoName) -> Result<&Repo, ApiError> {
        self.repos.get(name).ok_or_else(|| name_unknown(name))
    }

    /// Stores a verified blob and links it into `repo`, creating the
    /// repository: a write that succeeded.
    fn link(&mut self, repo: &RepoName, digest: &Digest, bytes: Bytes) {
        self.blobs.entry(digest.clone()).or_insert(bytes);
        self.repos.entry(repo.clone()).or_default().blobs.insert(digest.clone());
    }

    fn upload(&mut self, repo: &RepoName, id: &str) -> Result<&mut Upload, ApiError> {
        self.uploads.get_mut(id).filter(|u| u.repo == *repo).ok_or_else(|| upload_unknown(id))
    }

    fn manifest_digest(&self, repo: &RepoName, reference: &Reference) -> Result<Digest, ApiError> {
        let r = self.repo(repo)?;
        let unknown = || ApiError::new(ErrorCode::ManifestUnknown, format!("manifest {reference} is not in {repo}"));
        match reference {
            Reference::Tag(t) => r.tags.get(t.as_str()).cloned().ok_or_else(unknown),
            Reference::Digest(d) => r.manifests.contains_key(d).then(|| d.clone()).ok_or_else(unknown),
        }
    }
}

/// What a manifest's JSON says, checked against the repository it goes to.
fn parse_manifest(repo: Option<&Repo>, content_type: Option<&str>, bytes: &[u8]) -> Result<(String, Value), ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::ManifestInvalid, m);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    if v["schemaVersion"] != 2 {
        return Err(invalid("schemaVersion must be 2".into()));
    }
    let media_type = match (content_type, v["mediaType"].as_str()) {
        (Some(c), Some(m)) if c != m => return Err(invalid(format!("Content-Type {c} is not the manifest's mediaType {m}"))),
        (_, Some(m)) | (Some(m), None) => m.to_string(),
        (None, None) => return Err(invalid("the manifest has no media type".into())),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!("media type {media_type} is not a manifest berth stores")));
    }
    let digest_at = |d: &Value| d["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()).ok_or_else(|| invalid("a descriptor lacks a valid digest".into()));
    let missing = |d: &Digest| ApiError::new(ErrorCode::ManifestBlobUnknown, format!("{d} is not in the repository"));
    let layers = v["layers"].as_array().into_iter().flatten();
    for blob in v.get("config").into_iter().chain(layers) {
        let d = digest_at(blob)?;
        if !repo.is_some_and(|r| r.blobs.contains(&d)) {
            return Err(missing(&d));
        }
    }
    for child in v["manifests"].as_array().into_iter().flatten() {
        let d = digest_at(child)?;
        if !repo.is_some_and(|r| r.manifests.contains_key(&d)) {
            return Err(missing(&d));
        }
    }
    Ok((media_type, v))
}

#[async_trait]
impl Registry for MemoryNode {
    fn service(&self) -> String {
        SERVICE.into()
    }

    async fn authorize(&self, caller: &Caller, scope: Scope<'_>) -> Result<Access, ApiError> {
        let st = self.lock();
        let (principal, grants) = st.authenticate(caller)?;
        if principal == Principal::Anonymous {
            return Err(ApiError::new(ErrorCode::Unauthorized, "log in to use this registry"));
        }
        let granted = |kind: &str, name: &str, action: &str| match grants {
            // A registry token holds what it names, and nothing else.
            Some(g) => g.iter().any(|s| s.kind == kind && s.name == name && s.actions.iter().any(|a| a == action || a == "*")),
            None => kind != "repository" || may(&principal, name, action),
        };
        let allowed = match scope {
            Scope::Base => true,
            Scope::Catalog => granted("registry", "catalog", "*"),
            Scope::Repo { name, action } => granted("repository", name.as_str(), action_word(action)),
        };
        if !allowed {
            return Err(ApiError::new(ErrorCode::Denied, format!("{} may not do that", principal.performer())));
        }
        Ok(Access { principal, ip: caller.ip })
    }

    async fn issue_token(&self, caller: &Caller, scopes: &[ResourceScope]) -> Result<IssuedToken, ApiError> {
        let mut st = self.lock();
        let (principal, grants) = st.authenticate(caller)?;
        if grants.is_some() {
            return Err(ApiError::new(ErrorCode::Unauthorized, "present credentials, not a registry token, to get a token"));
        }
        // Asked for, intersected with what the caller may do.
        let grants: Vec<ResourceScope> = scopes
            .iter()
            .map(|s| {
                let actions = s
                    .actions
                    .iter()
                    .filter(|a| match s.kind.as_str() {
                        "repository" => may(&principal, &s.name, a),
                        "registry" => s.name == "catalog" && principal.is_superuser(),
                        _ => false,
                    })
                    .cloned()
                    .collect();
                ResourceScope { actions, ..s.clone() }
            })
            .filter(|s| !s.actions.is_empty())
            .collect();
        let token = st.fresh_id("token");
        let user = match principal {
            Principal::User { name, .. } => name,
            _ => String::new(),
        };
        st.tokens.insert(token.clone(), TokenGrant { user, grants });
        Ok(IssuedToken { access_token: token.clone(), token, expires_in: TOKEN_TTL_SECS, issued_at: rfc3339(now_secs()) })
    }

    async fn audit(&self, access: &Access, kind: &'static str, repo: &RepoName, metadata: Vec<(&'static str, String)>) {
        self.lock().audit.push(AuditRecord { kind, repo: repo.to_string(), performer: access.principal.performer(), metadata });
    }

    async fn blob_stat(&self, repo: &RepoName, digest: &Digest) -> Result<u64, ApiError> {
        let st = self.lock();
        match st.repos.get(repo).filter(|r| r.blobs.contains(digest)) {
            Some(_) => Ok(st.blobs[digest].len() as u64),
            None => Err(ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in {repo}"))),
        }
    }

    async fn blob_read(&self, repo: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobBody, ApiError> {
        let size = self.blob_stat(repo, digest).await?;
        let bytes = self.lock().blobs[digest].clone();
        let (start, end) = match range {
            None => (0, size.saturating_sub(1)),
            Some(ByteRange { start, end }) => {
                let end = end.unwrap_or(u64::MAX).min(size.saturating_sub(1));
                if start >= size || end < start {
                    return Err(ApiError::new(ErrorCode::RangeInvalid, format!("the range starts at {start}, past the blob's {size} bytes")));
                }
                (start, end)
            }
        };
        let len = if size == 0 { 0 } else { end - start + 1 };
        let chunk = bytes.slice(start as usize..(start + len) as usize);
        Ok(BlobBody { size, start, len, stream: Box::pin(futures::stream::once(async move { Ok(chunk) })) })
    }

    async fn blob_delete(&self, _access: &Access, repo: &RepoName, digest: &Digest) -> Result<(), ApiError> {
        let mut st = self.lock();
        if st.repos.get_mut(repo).is_some_and(|r| r.blobs.remove(digest)) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::BlobUnknown, format!("blob {digest} is not in {repo}")))
        }
    }

    async fn blob_mount(&self, _access: &Access, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool, ApiError> {
        let mut st = self.lock();
        if !st.repos.get(from).is_some_and(|r| r.blobs.contains(digest)) {
            return Ok(false);
        }
        let bytes = st.blobs[digest].clone();
        st.link(repo, digest, bytes);
        Ok(true)
    }

    async fn blob_put(&self, _access: &Access, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<(), ApiError> {
        let bytes = collect(body).await?;
        verified(digest, &bytes)?;
        self.lock().link(repo, digest, bytes.into());
        Ok(())
    }

    fn upload_owner(&self, _id: &str) -> Result<UploadOwner, ApiError> {
        Ok(UploadOwner::Local)
    }

    async fn upload_grant(&self, _access: &Access, _repo: &RepoName, _id: &str, _action: Action) -> Result<String, ApiError> {
        Err(super::unmodelled("other nodes to forward uploads to"))
    }

    async fn authorize_upload_grant(&self, _grant: &str, _caller: &Caller, _repo: &RepoName, _id: &str, _action: Action) -> Result<Access, ApiError> {
        Err(ApiError::new(ErrorCode::Unauthorized, "the in-memory node issues no upload grants"))
    }

    async fn upload_start(&self, _access: &Access, repo: &RepoName) -> Result<UploadState, ApiError> {
        let mut st = self.lock();
        let id = st.fresh_id("upload");
        st.uploads.insert(id.clone(), Upload { repo: repo.clone(), bytes: Vec::new() });
        Ok(UploadState { id, offset: 0 })
    }

    async fn upload_patch(&self, repo: &RepoName, id: &str, range: Option<(u64, u64)>, body: ByteStream) -> Result<UploadState, ApiError> {
        // The chunk must follow what the session holds, and announce a
        // length a chunk can have, before any byte is taken.
        let announced = {
            let mut st = self.lock();
            let offset = st.upload(repo, id)?.bytes.len() as u64;
            match range {
                None => None,
                Some((start, _)) if start != offset => {
                    return Err(ApiError::new(ErrorCode::RangeInvalid, format!("chunk starts at {start}, but the upload has {offset} bytes")));
                }
                Some((start, end)) => Some(
                    end.checked_sub(start)
                        .and_then(|n| n.checked_add(1))
                        .ok_or_else(|| ApiError::new(ErrorCode::RangeInvalid, format!("Content-Range {start}-{end} is not a length a chunk can have")))?,
                ),
            }
        };
        let chunk = collect(body).await?;
        let mut st = self.lock();
        if announced.is_some_and(|n| n != chunk.len() as u64) {
            // As on a node: the bytes are taken, the session cannot go on.
            st.uploads.remove(id);
            return Err(ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range announced {} bytes, the body had {}; upload cancelled", announced.unwrap_or(0), chunk.len()),
            ));
        }
        let upload = st.upload(repo, id)?;
        upload.bytes.extend_from_slice(&chunk);
        Ok(UploadState { id: id.to_string(), offset: upload.bytes.len() as u64 })
    }

    async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadState, ApiError> {
        let mut st = self.lock();
        let offset = st.upload(repo, id)?.bytes.len() as u64;
        Ok(UploadState { id: id.to_string(), offset })
    }

    async fn upload_finish(&self, _access: &Access, repo: &RepoName, id: &str, digest: &Digest, body: ByteStream) -> Result<(), ApiError> {
        // The session ends either way.
        let mut upload = {
            let mut st = self.lock();
            st.upload(repo, id)?;
            st.uploads.remove(id).ok_or_else(|| upload_unknown(id))?
        };
        upload.bytes.extend(collect(body).await?);
        verified(digest, &upload.bytes)?;
        self.lock().link(repo, digest, upload.bytes.into());
        Ok(())
    }

    async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<(), ApiError> {
        let mut st = self.lock();
        st.upload(repo, id)?;
        st.uploads.remove(id);
        Ok(())
    }

    async fn manifest_get(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest, ApiError> {
        let st = self.lock();
        let digest = st.manifest_digest(repo, reference)?;
        Ok(st.repos[repo].manifests[&digest].stored.clone())
    }

    async fn manifest_put(
        &self,
        _access: &Access,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutOutcome, ApiError> {
        let mut st = self.lock();
        let (media_type, v) = parse_manifest(st.repos.get(repo), content_type, &bytes)?;
        let digest = Digest::sha256_of(&bytes);
        if let Reference::Digest(d) = reference {
            verified(d, &bytes)?;
            if *d != digest {
                // Stored under the digest it was pushed by.
                return Err(ApiError::new(ErrorCode::DigestInvalid, "manifests are stored by their sha256 digest"));
            }
        }
        let subject = v["subject"]["digest"].as_str().and_then(|s| s.parse().ok());
        let artifact_type = v["artifactType"].as_str().or(v["config"]["mediaType"].as_str()).map(str::to_string);
        let annotations = v["annotations"].as_object().cloned();
        let stored = StoredManifest { media_type, digest: digest.clone(), bytes, subject: subject.clone() };
        let r = st.repos.entry(repo.clone()).or_default();
        r.manifests.insert(digest.clone(), Manifest { stored, artifact_type, annotations });
        if let Reference::Tag(t) = reference {
            r.tags.insert(t.to_string(), digest.clone());
        }
        Ok(PutOutcome { digest, subject })
    }

    async fn manifest_delete(&self, _access: &Access, repo: &RepoName, reference: &Reference) -> Result<(), ApiError> {
        let mut st = self.lock();
        let digest = st.manifest_digest(repo, reference)?;
        let r = st.repos.get_mut(repo).ok_or_else(|| name_unknown(repo))?;
        match reference {
            Reference::Tag(t) => {
                r.tags.remove(t.as_str());
            }
            // A manifest goes with every tag that names it.
            Reference::Digest(_) => {
                r.manifests.remove(&digest);
                r.tags.retain(|_, d| *d != digest);
            }
        }
        Ok(())
    }

    async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError> {
        let st = self.lock();
        Ok(page(st.repo(repo)?.tags.keys().map(String::as_str), n, last))
    }

    async fn catch_up(&self) -> Result<(), ApiError> {
        // One copy of the state: it is always caught up.
        Ok(())
    }

    async fn catalog(&self, access: &Access, n: Option<usize>, last: Option<&str>) -> Result<Page, ApiError> {
        let st = self.lock();
        Ok(page(st.repos.keys().map(RepoName::as_str).filter(|r| may(&access.principal, r, "pull")), n, last))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>, ApiError> {
        let st = self.lock();
        let Some(r) = st.repos.get(repo) else { return Ok(Vec::new()) };
        let mut found: Vec<Descriptor> = r
            .manifests
            .values()
            .filter(|m| m.stored.subject.as_ref() == Some(subject))
            .filter(|m| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
            .map(|m| Descriptor {
                media_type: m.stored.media_type.clone(),
                digest: m.stored.digest.clone(),
                size: m.stored.bytes.len() as u64,
                artifact_type: m.artifact_type.clone(),
                annotations: m.annotations.clone(),
            })
            .collect();
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(found)
    }
}
