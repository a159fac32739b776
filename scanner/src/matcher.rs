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
            }
        }
    }

    pub fn len(&self) -> usize {
        self.debian.values().map(Vec::len).sum()
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

fn match_package(db: &AdvisoryDb, release: &Option<String>, p: &ImagePackage) -> Vec<Finding> {
    let mut out = Vec::new();
    if p.package.format == VersionFormat::Dpkg {
        let Some(release) = release else {
            return out;
        };
        let key = (release.clone(), p.package.source_name.clone());
        for a in db.debian.get(&key).into_iter().flatten() {
            if affected(VersionFormat::Dpkg, &p.package.source_version, &a.fixed) {
                out.push(Finding {
                    id: a.id.clone(),
                    severity: a.severity,
                    fixed_by: a.fixed.clone(),
                    description: a.description.clone(),
                    link: a.link.clone(),
                    namespace: a.namespace.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

pub fn match_image(db: &AdvisoryDb, index: &ImageIndex) -> Report {
    let release = debian_release(index);
    let findings = index.packages.iter().map(|p| match_package(db, &release, p)).collect();
    Report { index: index.clone(), findings }
}
