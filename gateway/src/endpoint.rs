//! Every `/v2/…` path parsed once into an [`Endpoint`].
//!
//! Repository names contain `/`, so per-route patterns cannot express the
//! API; the path is read from the right, where its structure is.

use berth_common::{Digest, NameError, RepoName};

use crate::error::{ApiError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<reference>` where the reference is neither a
    /// tag nor a digest: no manifest can have it, so a read finds nothing
    /// (404) and a push is refused (400); both after authorization, like
    /// any other manifest request.
    InvalidReference(RepoName, String),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

fn name(raw: &str) -> Result<RepoName, ApiError> {
    raw.parse().map_err(|e: NameError| ApiError::new(ErrorCode::NameInvalid, e.to_string()))
}

fn digest(raw: &str) -> Result<Digest, ApiError> {
    raw.parse().map_err(|e: berth_common::DigestError| ApiError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn reference(raw: &str) -> Result<Reference, ApiError> {
    if raw.contains(':') {
        return Ok(Reference::Digest(digest(raw)?));
    }
    if valid_tag(raw) {
        Ok(Reference::Tag(raw.to_string()))
    } else {
        Err(ApiError::new(ErrorCode::ManifestInvalid, format!("{raw:?} is neither a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}) nor a digest")))
    }
}

impl Endpoint {
    /// Parses the part of the path after `/v2/`.
    pub fn parse(rest: &str) -> Result<Endpoint, ApiError> {
        let not_found = || ApiError::new(ErrorCode::NotFound, format!("no registry endpoint at /v2/{rest}"));
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name(n)?));
        }
        let mut parts = rest.rsplitn(3, '/');
        let (last, kind, prefix) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(k), Some(p)) => (l, k, p),
            (Some(l), Some(k), None) => (l, k, ""),
            _ => return Err(not_found()),
        };
        match kind {
            "manifests" => {
                let n = name(prefix)?;
                match reference(last) {
                    Ok(r) => Ok(Endpoint::Manifest(n, r)),
                    Err(e) if e.code == ErrorCode::ManifestInvalid => Ok(Endpoint::InvalidReference(n, last.to_string())),
                    Err(e) => Err(e),
                }
            }
            "referrers" => Ok(Endpoint::Referrers(name(prefix)?, digest(last)?)),
            "blobs" if last == "uploads" => Ok(Endpoint::UploadStart(name(prefix)?)),
            "blobs" => Ok(Endpoint::Blob(name(prefix)?, digest(last)?)),
            "uploads" => {
                let n = prefix.strip_suffix("/blobs").or_else(|| (prefix == "blobs").then_some("")).ok_or_else(not_found)?;
                if last.is_empty() {
                    Ok(Endpoint::UploadStart(name(n)?))
                } else {
                    Ok(Endpoint::Upload(name(n)?, last.to_string()))
                }
            }
            _ => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_endpoint() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(Endpoint::parse("").unwrap(), Endpoint::Base);
        assert_eq!(Endpoint::parse("_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(Endpoint::parse("a/b/tags/list").unwrap(), Endpoint::Tags(n("a/b")));
        assert_eq!(Endpoint::parse("a/b/manifests/v1.0").unwrap(), Endpoint::Manifest(n("a/b"), Reference::Tag("v1.0".into())));
        assert_eq!(Endpoint::parse(&format!("a/manifests/{d}")).unwrap(), Endpoint::Manifest(n("a"), Reference::Digest(d.clone())));
        assert_eq!(Endpoint::parse(&format!("a/blobs/{d}")).unwrap(), Endpoint::Blob(n("a"), d.clone()));
        assert_eq!(Endpoint::parse("a/b/blobs/uploads/").unwrap(), Endpoint::UploadStart(n("a/b")));
        assert_eq!(Endpoint::parse("a/b/blobs/uploads").unwrap(), Endpoint::UploadStart(n("a/b")));
        assert_eq!(Endpoint::parse("a/b/blobs/uploads/1.xyz").unwrap(), Endpoint::Upload(n("a/b"), "1.xyz".into()));
        assert_eq!(Endpoint::parse(&format!("a/referrers/{d}")).unwrap(), Endpoint::Referrers(n("a"), d.clone()));
        // Names that contain the markers.
        assert_eq!(Endpoint::parse("blobs/blobs/uploads/x").unwrap(), Endpoint::Upload(n("blobs"), "x".into()));
        assert_eq!(Endpoint::parse("a/blobs/blobs/uploads/x").unwrap(), Endpoint::Upload(n("a/blobs"), "x".into()));
        assert_eq!(Endpoint::parse("x/manifests/manifests/t").unwrap(), Endpoint::Manifest(n("x/manifests"), Reference::Tag("t".into())));
    }

    #[test]
    fn refuses_bad_names_digests_and_tags() {
        let code = |p: &str| Endpoint::parse(p).unwrap_err().code;
        assert_eq!(code("A/manifests/t"), ErrorCode::NameInvalid);
        assert_eq!(code("../etc/manifests/t"), ErrorCode::NameInvalid);
        assert_eq!(code("a//b/manifests/t"), ErrorCode::NameInvalid);
        assert_eq!(code(&format!("{}/manifests/t", "a".repeat(256))), ErrorCode::NameInvalid);
        assert_eq!(code("a/blobs/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(Endpoint::parse("a/manifests/-bad").unwrap(), Endpoint::InvalidReference(n("a"), "-bad".into()));
        assert_eq!(Endpoint::parse("a/manifests/.INVALID_MANIFEST_NAME").unwrap(), Endpoint::InvalidReference(n("a"), ".INVALID_MANIFEST_NAME".into()));
        assert_eq!(code("a/nothing/here"), ErrorCode::NotFound);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A valid repository name: 1-4 components of
        /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
        pub fn repo() -> impl Strategy<Value = String> {
            proptest::collection::vec("[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}", 1..5).prop_map(|c| c.join("/"))
        }

        pub fn tag() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
        }

        pub fn digest() -> impl Strategy<Value = Digest> {
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| Digest::sha256_of(&b))
        }

        /// Paths built from the words the router looks for, so the
        /// interesting branches are reached, not only "not found".
        fn path() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                Just("manifests".to_string()),
                Just("blobs".to_string()),
                Just("uploads".to_string()),
                Just("tags".to_string()),
                Just("list".to_string()),
                Just("referrers".to_string()),
                Just("_catalog".to_string()),
                Just(String::new()),
                Just("..".to_string()),
                "sha256:[0-9a-f]{0,64}",
                "[a-zA-Z0-9._:-]{1,12}",
                ".{0,8}",
            ];
            proptest::collection::vec(part, 0..8).prop_map(|p| p.join("/"))
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn any_path_parses_or_is_refused_without_panicking(rest in ".{0,300}", structured in path()) {
                let _ = Endpoint::parse(&rest);
                let _ = Endpoint::parse(&structured);
            }

            #[test]
            fn every_well_formed_path_is_routed(repo in repo(), tag in tag(), d in digest(), id in "[a-zA-Z0-9._-]{1,40}") {
                prop_assume!(repo.len() <= 255);
                let n: RepoName = repo.parse().unwrap();
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/tags/list")).unwrap(), Endpoint::Tags(n.clone()));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/manifests/{tag}")).unwrap(), Endpoint::Manifest(n.clone(), Reference::Tag(tag.clone())));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/manifests/{d}")).unwrap(), Endpoint::Manifest(n.clone(), Reference::Digest(d.clone())));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/blobs/{d}")).unwrap(), Endpoint::Blob(n.clone(), d.clone()));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/referrers/{d}")).unwrap(), Endpoint::Referrers(n.clone(), d.clone()));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/blobs/uploads/")).unwrap(), Endpoint::UploadStart(n.clone()));
                prop_assert_eq!(Endpoint::parse(&format!("{repo}/blobs/uploads/{id}")).unwrap(), Endpoint::Upload(n, id));
            }

            /// A reference printed and parsed again is the same reference.
            #[test]
            fn references_round_trip(tag in tag(), d in digest()) {
                for r in [Reference::Tag(tag), Reference::Digest(d)] {
                    prop_assert_eq!(reference(&r.to_string()).unwrap(), r);
                }
            }

            #[test]
            fn tags_are_exactly_the_spec_pattern(t in ".{0,140}") {
                let b = t.as_bytes();
                let spec = (1..=128).contains(&b.len())
                    && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
                prop_assert_eq!(valid_tag(&t), spec);
            }
        }
    }
}
