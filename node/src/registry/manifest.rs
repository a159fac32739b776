//! Manifest rules: what a pushed manifest must be before it is committed.
//!
//! Parsed with `oci-spec`'s types. Accepted: OCI image manifest and index,
//! Docker schema 2 manifest and manifest list. The media type is the
//! manifest's own `mediaType` when it has one, and `Content-Type` must agree
//! with it; without one, `Content-Type` decides.

use std::collections::HashMap;

use berth_common::Digest;
use berth_gateway::{ApiError, ErrorCode};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// What the registry keeps of a valid manifest.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: String,
    pub kind: Kind,
    /// Blobs (config and layers) that must exist in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index) that must exist in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// For the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<HashMap<String, String>>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ManifestInvalid, msg)
}

fn digest_of(d: &Descriptor) -> Result<Digest, ApiError> {
    let s = d.digest().to_string();
    s.parse().map_err(|e: berth_common::DigestError| invalid(format!("descriptor digest: {e}")))
}

/// Validates `bytes` as a manifest sent with `content_type`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let declared = value.get("mediaType").and_then(|m| m.as_str()).map(str::to_string);
    let media_type = match (&declared, content_type) {
        (Some(d), Some(ct)) if d != ct => return Err(invalid(format!("Content-Type {ct} does not match the manifest's mediaType {d}"))),
        (Some(d), _) => d.clone(),
        (None, Some(ct)) => ct.to_string(),
        (None, None) => return Err(invalid("the manifest has no mediaType and the request no Content-Type")),
    };
    let kind = kind_of(&media_type).ok_or_else(|| ApiError::new(ErrorCode::ManifestInvalid, format!("manifest media type {media_type} is not supported")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    match kind {
        Kind::Image => {
            let m: ImageManifest = serde_json::from_value(value).map_err(|e| invalid(format!("not an image manifest: {e}")))?;
            let mut blobs = vec![digest_of(m.config())?];
            for l in m.layers() {
                // Foreign layers live elsewhere (their `urls`); they are not ours to hold.
                if l.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                blobs.push(digest_of(l)?);
            }
            let artifact_type = m.artifact_type().as_ref().map(|t| t.to_string()).or_else(|| Some(m.config().media_type().to_string()));
            Ok(Parsed {
                media_type,
                kind,
                blobs,
                children: vec![],
                subject: m.subject().as_ref().map(digest_of).transpose()?,
                artifact_type,
                annotations: m.annotations().clone(),
            })
        }
        Kind::Index => {
            let i: ImageIndex = serde_json::from_value(value).map_err(|e| invalid(format!("not an image index: {e}")))?;
            let children = i.manifests().iter().map(digest_of).collect::<Result<_, _>>()?;
            Ok(Parsed {
                media_type,
                kind,
                blobs: vec![],
                children,
                subject: i.subject().as_ref().map(digest_of).transpose()?,
                artifact_type: i.artifact_type().as_ref().map(|t| t.to_string()),
                annotations: i.annotations().clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(media_type: Option<&str>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"c").to_string(), "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::sha256_of(b"l").to_string(), "size": 1}],
        });
        if let Some(m) = media_type {
            v["mediaType"] = m.into();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn image_manifests() {
        let p = parse(&image(Some(OCI_MANIFEST)), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.blobs, vec![Digest::sha256_of(b"c"), Digest::sha256_of(b"l")]);
        assert_eq!(parse(&image(None), Some(DOCKER_MANIFEST)).unwrap().media_type, DOCKER_MANIFEST);
        let e = parse(&image(Some(OCI_MANIFEST)), Some(DOCKER_MANIFEST)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
        assert!(e.message.contains("does not match"));
        assert_eq!(parse(b"{not json", Some(OCI_MANIFEST)).unwrap_err().code, ErrorCode::ManifestInvalid);
        assert_eq!(parse(&image(None), Some("text/plain")).unwrap_err().code, ErrorCode::ManifestInvalid);
        assert_eq!(parse(&image(None), None).unwrap_err().code, ErrorCode::ManifestInvalid);
        assert_eq!(
            parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#, None).unwrap_err().code,
            ErrorCode::ManifestInvalid
        );
    }

    #[test]
    fn indexes() {
        let child = Digest::sha256_of(b"child");
        let v =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 3}]});
        let p = parse(&serde_json::to_vec(&v).unwrap(), Some(OCI_INDEX)).unwrap();
        assert_eq!(p.kind, Kind::Index);
        assert_eq!(p.children, vec![child]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn digest() -> impl Strategy<Value = Digest> {
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Digest::sha256_of(&b))
        }

        fn descriptor(media_type: &'static str) -> impl Strategy<Value = (serde_json::Value, Digest)> {
            (digest(), 0u64..1 << 40).prop_map(move |(d, size)| (serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": size}), d))
        }

        /// Valid image manifests, with the media type in the body, in the
        /// header, or both; returned with the blobs they reference.
        fn image_manifest() -> impl Strategy<Value = (Vec<u8>, Option<&'static str>, Vec<Digest>)> {
            (
                descriptor("application/vnd.oci.image.config.v1+json"),
                proptest::collection::vec(descriptor("application/vnd.oci.image.layer.v1.tar+gzip"), 0..6),
                prop_oneof![Just(OCI_MANIFEST), Just(DOCKER_MANIFEST)],
                0..3u8,
            )
                .prop_map(|((config, c), layers, media_type, where_)| {
                    let mut v = serde_json::json!({"schemaVersion": 2, "config": config, "layers": layers.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>()});
                    if where_ != 1 {
                        v["mediaType"] = media_type.into();
                    }
                    let header = (where_ != 0).then_some(media_type);
                    let blobs = std::iter::once(c).chain(layers.into_iter().map(|(_, d)| d)).collect();
                    (serde_json::to_vec(&v).unwrap(), header, blobs)
                })
        }

        fn content_type() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                Just(None),
                Just(Some(OCI_MANIFEST.to_string())),
                Just(Some(OCI_INDEX.to_string())),
                Just(Some(DOCKER_LIST.to_string())),
                ".{0,40}".prop_map(Some),
            ]
        }

        /// JSON near a manifest: the right keys with values of any type.
        fn near_manifest() -> impl Strategy<Value = Vec<u8>> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".{0,20}".prop_map(serde_json::Value::from),
                digest().prop_map(|d| serde_json::Value::from(d.to_string())),
                Just(serde_json::Value::from(2)),
            ];
            let value = leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    proptest::collection::btree_map(
                        prop_oneof![Just("mediaType"), Just("digest"), Just("size"), Just("urls"), Just("manifests"), Just("subject"), Just("x")]
                            .prop_map(str::to_string),
                        inner,
                        0..4
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            });
            proptest::collection::btree_map(
                prop_oneof![
                    Just("schemaVersion"),
                    Just("mediaType"),
                    Just("config"),
                    Just("layers"),
                    Just("manifests"),
                    Just("subject"),
                    Just("artifactType"),
                    Just("annotations")
                ]
                .prop_map(str::to_string),
                value,
                0..8,
            )
            .prop_map(|m| serde_json::to_vec(&serde_json::Value::Object(m.into_iter().collect())).unwrap())
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn any_body_is_a_manifest_or_refused_without_panicking(
                raw in proptest::collection::vec(any::<u8>(), 0..300),
                near in near_manifest(),
                ct in content_type(),
            ) {
                for body in [&raw, &near] {
                    if let Err(e) = parse(body, ct.as_deref()) {
                        prop_assert_eq!(e.code, ErrorCode::ManifestInvalid);
                    }
                }
            }

            #[test]
            fn valid_image_manifests_are_accepted_with_their_blobs((body, header, blobs) in image_manifest()) {
                let p = parse(&body, header).unwrap();
                prop_assert_eq!(p.kind, Kind::Image);
                prop_assert_eq!(p.blobs, blobs);
                prop_assert!(p.children.is_empty());
            }

            #[test]
            fn valid_indexes_are_accepted_with_their_children(children in proptest::collection::vec(descriptor(OCI_MANIFEST), 0..6)) {
                let v = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>()});
                let p = parse(&serde_json::to_vec(&v).unwrap(), Some(OCI_INDEX)).unwrap();
                prop_assert_eq!(p.kind, Kind::Index);
                prop_assert_eq!(p.children, children.into_iter().map(|(_, d)| d).collect::<Vec<_>>());
            }
        }
    }
}
