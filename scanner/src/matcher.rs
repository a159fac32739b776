//! Matching an image's packages against the advisories. Needs only the
//! merged [`ImageIndex`] (never the layers), so a new feed snapshot
//! re-matches every indexed manifest cheaply.

use crate::feed::{Advisory, Severity, Target};
use crate::index::{ImageIndex, ImagePackage};
use crate::version::VersionFormat;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::HashMap;

/// The advisories of every imported feed, indexed for lookups.
#[derive(Debug, Default)]
pub struct AdvisoryDb {
    debian: HashMap<(String, String), Vec<Advisory>>,
    alpine: HashMap<(String, String), Vec<Advisory>>,
}

impl AdvisoryDb {
    pub fn new(advisories: impl IntoIterator<Item = Advisory>) -> Self {
        let mut db = AdvisoryDb::default();
        db.extend(advisories);
        db
    }

    pub fn extend(&mut self, advisories: impl IntoIterator<Item = Advisory>) {
        for a in advisories {
            match &a.target {
                Target::DebianSource { release, package } => self.debian.entry((release.clone(), package.clone())).or_default().push(a),
                Target::AlpineOrigin { branch, package } => self.alpine.entry((branch.clone(), package.clone())).or_default().push(a),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.debian.values().chain(self.alpine.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One vulnerability found in one package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub fixed_by: Option<String>,
    pub description: String,
    pub link: String,
    pub namespace: String,
}

/// The packages of an image with what affects each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    pub index: ImageIndex,
    /// Parallel to `index.packages`.
    pub findings: Vec<Vec<Finding>>,
}

impl Report {
    /// `(vulnerability id, package name)` pairs, to tell what is new
    /// between two matches.
    pub fn keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (p, fs) in self.index.packages.iter().zip(&self.findings) {
            for f in fs {
                out.push((f.id.clone(), p.package.name.clone()));
            }
        }
        out
    }

    /// Counts by severity, for the tag list's summary.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut m = std::collections::BTreeMap::new();
        for fs in &self.findings {
            for f in fs {
                *m.entry(f.severity.as_str()).or_insert(0) += 1;
            }
        }
        m
    }
}

fn debian_release(index: &ImageIndex) -> Option<String> {
    let d = index.distribution.as_ref()?;
    if d.id != "debian" {
        return None;
    }
    if !d.version_codename.is_empty() {
        return Some(d.version_codename.clone());
    }
    ["buster", "bullseye", "bookworm", "trixie", "forky"]
        .into_iter()
        .find(|c| crate::feed::debian::version_id_of(c) == Some(d.version_id.as_str()))
        .map(str::to_string)
}

fn affected(format: VersionFormat, installed: &str, fixed: &Option<String>) -> bool {
    match fixed {
        None => true,
        Some(f) => format.compare(installed, f) == Ordering::Less,
    }
}

/// The Alpine branch (`v3.19`) of an image, from `VERSION_ID` 3.19.x.
fn alpine_branch(index: &ImageIndex) -> Option<String> {
    let d = index.distribution.as_ref()?;
    if d.id != "alpine" {
        return None;
    }
    let mut parts = d.version_id.split('.');
    Some(format!("v{}.{}", parts.next()?, parts.next()?))
}

fn found(a: &Advisory) -> Finding {
    Finding {
        id: a.id.clone(),
        severity: a.severity,
        fixed_by: a.fixed.clone(),
        description: a.description.clone(),
        link: a.link.clone(),
        namespace: a.namespace.clone(),
    }
}

fn match_package(db: &AdvisoryDb, release: &Option<String>, branch: &Option<String>, p: &ImagePackage) -> Vec<Finding> {
    let mut out = Vec::new();
    if let (VersionFormat::Apk, Some(branch)) = (p.package.format, branch) {
        let key = (branch.clone(), p.package.source_name.clone());
        for a in db.alpine.get(&key).into_iter().flatten() {
            if affected(VersionFormat::Apk, &p.package.version, &a.fixed) {
                out.push(found(a));
            }
        }
    }
    if p.package.format == VersionFormat::Dpkg {
        let Some(release) = release else {
            return out;
        };
        let key = (release.clone(), p.package.source_name.clone());
        for a in db.debian.get(&key).into_iter().flatten() {
            if affected(VersionFormat::Dpkg, &p.package.source_version, &a.fixed) {
                out.push(found(a));
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

pub fn match_image(db: &AdvisoryDb, index: &ImageIndex) -> Report {
    let release = debian_release(index);
    let branch = alpine_branch(index);
    let findings = index.packages.iter().map(|p| match_package(db, &release, &branch, p)).collect();
    Report { index: index.clone(), findings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{index_layer, merge, Limits};

    /// An Alpine 3.19 layer (the base packages of the `alpine:3.19.1`
    /// image, as apk records them) against a secdb file of the v3.19
    /// branch.
    #[test]
    fn alpine_installed_against_secdb() {
        let installed = "\
C:Q1\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\n\
P:busybox\nV:1.36.1-r15\nA:x86_64\no:busybox\n\n\
P:ssl_client\nV:1.36.1-r15\nA:x86_64\no:busybox\n\n\
P:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\n\n\
P:libssl3\nV:3.1.4-r5\nA:x86_64\no:openssl\n\n\
P:zlib\nV:1.3.1-r0\nA:x86_64\no:zlib\n";
        let os = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n";
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("etc/os-release", os), ("lib/apk/db/installed", installed)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        let layer = index_layer(&b.into_inner().unwrap()[..], &Limits::default()).unwrap();
        let img = merge(&[("sha256:l1".into(), layer)]);
        assert_eq!(img.packages.len(), 6);
        let feed = serde_json::json!({
            "distroversion": "v3.19", "reponame": "main", "urlprefix": "https://dl-cdn.alpinelinux.org/alpine",
            "packages": [
                {"pkg": {"name": "openssl", "secfixes": {"3.1.4-r1": ["CVE-2023-5678"], "3.1.4-r5": ["CVE-2024-0727"], "3.1.4-r6": ["CVE-2024-2511"], "0": ["CVE-2022-3358"]}}},
                {"pkg": {"name": "busybox", "secfixes": {"1.36.1-r17": ["CVE-2023-42363"]}}},
                {"pkg": {"name": "zlib", "secfixes": {"1.2.12-r2": ["CVE-2022-37434"]}}}
            ]
        });
        let (kind, advisories) = crate::feed::parse(&serde_json::to_vec(&feed).unwrap()).unwrap();
        assert_eq!(kind, crate::feed::FeedKind::AlpineSecdb);
        let report = match_image(&AdvisoryDb::new(advisories), &img);
        let mut got: Vec<(String, String, String)> = report
            .index
            .packages
            .iter()
            .zip(&report.findings)
            .flat_map(|(p, fs)| fs.iter().map(move |f| (p.package.name.clone(), f.id.clone(), f.fixed_by.clone().unwrap_or_default())))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("busybox".into(), "CVE-2023-42363".into(), "1.36.1-r17".into()),
                ("libcrypto3".into(), "CVE-2024-2511".into(), "3.1.4-r6".into()),
                ("libssl3".into(), "CVE-2024-2511".into(), "3.1.4-r6".into()),
                ("ssl_client".into(), "CVE-2023-42363".into(), "1.36.1-r17".into()),
            ]
        );
    }
}
