//! An image's software bill of materials in CycloneDX 1.5 JSON.
//!
//! CycloneDX rather than SPDX 2.3: its components carry a package URL as
//! their identity, which is what vulnerability tools join on; it needs no
//! document namespace or relationship graph to say "this image holds
//! these packages"; and its media type (`application/vnd.cyclonedx+json`)
//! is the artifact type `oras` and Docker's tooling look for among an
//! image's referrers.
//!
//! The document is a function of the image's merged index and the
//! manifest it describes, nothing else (no timestamp, a serial number
//! derived from the content), so every node, and a scan taken over by
//! another node, makes the same bytes: attaching it twice stores one
//! referrer.

use crate::index::{Distribution, ImageIndex, ImagePackage};
use crate::version::VersionFormat;
use serde_json::{json, Value};

/// The media type of the document and of the referrer's artifact type.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// Percent-encodes a package URL segment: everything but unreserved
/// characters (RFC 3986), as the purl specification asks.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of one package (purl-spec's `deb`, `apk`, `rpm`,
/// `pypi` and `golang` types), with the distribution as a qualifier.
pub fn purl(p: &crate::index::Package, distro: Option<&Distribution>) -> String {
    let distro_q = distro.filter(|d| !d.id.is_empty()).map(|d| format!("distro={}-{}", pct(&d.id), pct(&d.version_id)));
    let vendor = distro.map(|d| d.id.as_str()).filter(|id| !id.is_empty()).unwrap_or("unknown");
    let with = |base: String, mut quals: Vec<String>| {
        quals.extend(distro_q.clone());
        quals.sort();
        if quals.is_empty() {
            base
        } else {
            format!("{base}?{}", quals.join("&"))
        }
    };
    match p.format {
        VersionFormat::Dpkg => with(format!("pkg:deb/{}/{}@{}", pct(vendor), pct(&p.name), pct(&p.version)), vec![]),
        VersionFormat::Apk => with(format!("pkg:apk/{}/{}@{}", pct(vendor), pct(&p.name), pct(&p.version)), vec![]),
        VersionFormat::Rpm => {
            // rpm's epoch is a qualifier, not part of the version.
            let (epoch, vr) = match p.version.split_once(':') {
                Some((e, vr)) if e.bytes().all(|b| b.is_ascii_digit()) => (Some(e), vr),
                _ => (None, p.version.as_str()),
            };
            let quals = epoch.filter(|e| *e != "0").map(|e| format!("epoch={e}")).into_iter().collect();
            with(format!("pkg:rpm/{}/{}@{}", pct(vendor), pct(&p.name), pct(vr)), quals)
        }
        VersionFormat::Pep440 => format!("pkg:pypi/{}@{}", pct(&crate::feed::osv::normalize_pypi(&p.name)), pct(&p.version)),
        VersionFormat::Go => {
            // A module path's slashes separate the purl's namespace and name.
            let path = p.name.split('/').map(pct).collect::<Vec<_>>().join("/");
            let v = if p.version.starts_with('v') { p.version.clone() } else { format!("v{}", p.version) };
            format!("pkg:golang/{path}@{}", pct(&v))
        }
    }
}

fn component(p: &ImagePackage, distro: Option<&Distribution>, bom_ref: String) -> Value {
    let mut properties = vec![json!({"name": "berth:layer", "value": p.added_by})];
    if p.package.source_name != p.package.name || p.package.source_version != p.package.version {
        properties.push(json!({"name": "berth:source_name", "value": p.package.source_name}));
        properties.push(json!({"name": "berth:source_version", "value": p.package.source_version}));
    }
    json!({
        "type": "library",
        "bom-ref": bom_ref,
        "name": p.package.name,
        "version": p.package.version,
        "purl": purl(&p.package, distro),
        "properties": properties,
    })
}

/// A version-8 UUID (RFC 9562: bits from a hash) of the document's
/// identity, so the same image gets the same serial number everywhere.
fn serial(repo: &str, manifest: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("berth-sbom\0{repo}\0{manifest}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!("urn:uuid:{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
}

/// The CycloneDX 1.5 document of the image `manifest` (a digest) in
/// `repo`, from its merged index.
pub fn cyclonedx(index: &ImageIndex, repo: &str, manifest: &str, tool_version: &str) -> Value {
    let distro = index.distribution.as_ref();
    let mut components = Vec::new();
    if let Some(d) = distro.filter(|d| !d.id.is_empty()) {
        components.push(json!({
            "type": "operating-system",
            "bom-ref": format!("os:{}-{}", d.id, d.version_id),
            "name": d.id,
            "version": d.version_id,
            "description": d.pretty_name,
        }));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &index.packages {
        // bom-refs are unique in a document; the same package URL from two
        // databases (two Python trees) gets a suffix.
        let base = purl(&p.package, distro);
        let mut bom_ref = base.clone();
        let mut n = 1;
        while !seen.insert(bom_ref.clone()) {
            n += 1;
            bom_ref = format!("{base}#{n}");
        }
        components.push(component(p, distro, bom_ref));
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial(repo, manifest),
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "berth", "version": tool_version}]},
            "component": {"type": "container", "bom-ref": format!("{repo}@{manifest}"), "name": repo, "version": manifest},
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Package;

    fn pkg(name: &str, version: &str, format: VersionFormat) -> Package {
        Package { name: name.into(), version: version.into(), source_name: name.into(), source_version: version.into(), format }
    }

    #[test]
    fn package_urls_follow_the_purl_types() {
        let debian = Distribution { id: "debian".into(), version_id: "12".into(), ..Default::default() };
        let rocky = Distribution { id: "rocky".into(), version_id: "9.3".into(), ..Default::default() };
        assert_eq!(purl(&pkg("libc6", "2.36-9+deb12u4", VersionFormat::Dpkg), Some(&debian)), "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?distro=debian-12");
        assert_eq!(
            purl(&pkg("openssl-libs", "1:3.0.7-24.el9", VersionFormat::Rpm), Some(&rocky)),
            "pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?distro=rocky-9.3&epoch=1"
        );
        assert_eq!(purl(&pkg("Foo_Bar", "1.0", VersionFormat::Pep440), None), "pkg:pypi/foo-bar@1.0");
        assert_eq!(purl(&pkg("github.com/gorilla/mux", "v1.8.0", VersionFormat::Go), None), "pkg:golang/github.com/gorilla/mux@v1.8.0");
        assert_eq!(purl(&pkg("stdlib", "1.19.8", VersionFormat::Go), None), "pkg:golang/stdlib@v1.19.8");
    }

    #[test]
    fn same_index_same_bytes() {
        let index = ImageIndex {
            distribution: None,
            packages: vec![ImagePackage { package: pkg("a", "1", VersionFormat::Pep440), added_by: "sha256:l".into() }],
            unsupported: vec![],
        };
        let a = serde_json::to_vec(&cyclonedx(&index, "r/x", "sha256:m", "1")).unwrap();
        let b = serde_json::to_vec(&cyclonedx(&index, "r/x", "sha256:m", "1")).unwrap();
        assert_eq!(a, b);
        let doc = cyclonedx(&index, "r/x", "sha256:m", "1");
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        assert_eq!(&serial[9 + 14..9 + 15], "8", "version 8: {serial}");
    }
}
