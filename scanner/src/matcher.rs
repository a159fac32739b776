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
    /// OSV advisories by (ecosystem, package key).
    osv: HashMap<(String, String), Vec<Advisory>>,
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
                Target::Osv { ecosystem, package } => self.osv.entry((osv_key(ecosystem), package.clone())).or_default().push(a),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.debian.values().chain(self.alpine.values()).chain(self.osv.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The ecosystem as the database keys it: Red Hat's per-stream
/// ecosystems (`Red Hat:enterprise_linux:9::appstream`) under their
/// release (`Red Hat:enterprise_linux:9`), which is all an image's
/// os-release can tell; every other ecosystem as it is.
fn osv_key(ecosystem: &str) -> String {
    match ecosystem.strip_prefix("Red Hat:enterprise_linux:") {
        Some(rest) => format!("Red Hat:enterprise_linux:{}", rest.split(':').next().unwrap_or_default()),
        None => ecosystem.to_string(),
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

/// Whether `installed` falls in an OSV interval: at or after
/// `introduced`, and before `fixed` or at most `last_affected`.
fn in_range(format: VersionFormat, installed: &str, a: &Advisory) -> bool {
    if a.introduced.as_deref().is_some_and(|i| format.compare(installed, i) == Ordering::Less) {
        return false;
    }
    if let Some(l) = &a.last_affected {
        return format.compare(installed, l) != Ordering::Greater;
    }
    affected(format, installed, &a.fixed)
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

/// The OSV ecosystems that publish advisories for an rpm-based
/// distribution, from os-release's `ID` and major `VERSION_ID`: Rocky
/// Linux and AlmaLinux (per major release), Mageia, openSUSE Leap, and
/// Red Hat (see [`osv_key`]).
fn rpm_ecosystems(index: &ImageIndex) -> Vec<String> {
    let Some(d) = index.distribution.as_ref() else {
        return Vec::new();
    };
    let major = d.version_id.split('.').next().unwrap_or_default();
    match d.id.as_str() {
        "rocky" => vec![format!("Rocky Linux:{major}")],
        "almalinux" => vec![format!("AlmaLinux:{major}")],
        "mageia" => vec![format!("Mageia:{major}")],
        "opensuse-leap" => vec![format!("openSUSE:Leap {}", d.version_id)],
        "rhel" => vec![format!("Red Hat:enterprise_linux:{major}")],
        _ => Vec::new(),
    }
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

/// What an image's distribution selects in the advisory database.
struct Scope {
    debian_release: Option<String>,
    alpine_branch: Option<String>,
    rpm_ecosystems: Vec<String>,
}

fn match_rpm(db: &AdvisoryDb, ecosystems: &[String], p: &ImagePackage, out: &mut Vec<Finding>) {
    // OSV's rpm ecosystems name binary packages; some records name the
    // source package instead, so both are looked up.
    let mut names = vec![p.package.name.clone()];
    if p.package.source_name != p.package.name {
        names.push(p.package.source_name.clone());
    }
    for eco in ecosystems {
        for name in &names {
            let hits = db.osv.get(&(eco.clone(), name.clone())).into_iter().flatten();
            out.extend(hits.filter(|a| in_range(VersionFormat::Rpm, &p.package.version, a)).map(found));
        }
    }
}

fn match_package(db: &AdvisoryDb, scope: &Scope, p: &ImagePackage) -> Vec<Finding> {
    let (release, branch) = (&scope.debian_release, &scope.alpine_branch);
    let mut out = Vec::new();
    if p.package.format == VersionFormat::Rpm {
        match_rpm(db, &scope.rpm_ecosystems, p, &mut out);
    }
    if let (VersionFormat::Apk, Some(branch)) = (p.package.format, branch) {
        let key = (branch.clone(), p.package.source_name.clone());
        for a in db.alpine.get(&key).into_iter().flatten() {
            if affected(VersionFormat::Apk, &p.package.version, &a.fixed) {
                out.push(found(a));
            }
        }
    }
    if p.package.format == VersionFormat::Pep440 {
        let key = ("PyPI".to_string(), crate::feed::osv::normalize_pypi(&p.package.name));
        for a in db.osv.get(&key).into_iter().flatten() {
            if in_range(VersionFormat::Pep440, &p.package.version, a) {
                out.push(found(a));
            }
        }
    }
    if p.package.format == VersionFormat::Go {
        // OSV's Go ecosystem names modules by path and the toolchain
        // `stdlib`; its versions lack Go's `v`, which the ordering ignores.
        let key = ("Go".to_string(), p.package.name.clone());
        for a in db.osv.get(&key).into_iter().flatten() {
            if in_range(VersionFormat::Go, &p.package.version, a) {
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
    let scope = Scope { debian_release: debian_release(index), alpine_branch: alpine_branch(index), rpm_ecosystems: rpm_ecosystems(index) };
    let findings = index.packages.iter().map(|p| match_package(db, &scope, p)).collect();
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

#[cfg(test)]
mod python_tests {
    use super::*;
    use crate::index::{index_layer, merge, Limits};

    const DIST: &str = "usr/lib/python3/dist-packages";

    /// This machine's Debian python3 packages, at their own paths: the
    /// `cryptography` wheel's dist-info, and urllib3's and requests'
    /// egg-info directories.
    pub(crate) fn real_python_layer() -> Option<Vec<u8>> {
        let files = [
            format!("{DIST}/cryptography-38.0.4.dist-info/METADATA"),
            format!("{DIST}/urllib3-1.26.12.egg-info/PKG-INFO"),
            format!("{DIST}/requests-2.28.1.egg-info/PKG-INFO"),
        ];
        let mut b = tar::Builder::new(Vec::new());
        for f in files.iter().map(String::as_str).chain(["etc/os-release"]) {
            let data = std::fs::read(format!("/{f}")).ok()?;
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, f, &data[..]).unwrap();
        }
        Some(b.into_inner().unwrap())
    }

    /// OSV records as GitHub's advisory database publishes them for PyPI
    /// (`scanner/testdata/osv-pypi/`, whose README says where each fact
    /// comes from).
    pub(crate) fn osv_records() -> Vec<serde_json::Value> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/osv-pypi");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
        files.sort();
        files.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }

    fn zip_of(records: &[serde_json::Value]) -> Vec<u8> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("berth-osv-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["-m".to_string(), "zipfile".into(), "-c".into(), dir.join("all.zip").display().to_string()];
        for r in records {
            let p = dir.join(format!("{}.json", r["id"].as_str().unwrap()));
            std::fs::write(&p, serde_json::to_vec_pretty(r).unwrap()).unwrap();
            args.push(p.display().to_string());
        }
        let st = std::process::Command::new("python3").args(&args).status().expect("python3 makes the zip archive");
        assert!(st.success());
        let z = std::fs::read(dir.join("all.zip")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        z
    }

    #[test]
    fn real_python_packages_against_an_osv_zip() {
        let Some(layer) = real_python_layer() else {
            eprintln!("skipped: Debian's python3-cryptography, -urllib3 and -requests are not installed");
            return;
        };
        let idx = index_layer(&layer[..], &Limits::default()).unwrap();
        let img = merge(&[("sha256:py".into(), idx)]);
        let got: Vec<_> = img.packages.iter().map(|p| (p.package.name.as_str(), p.package.version.as_str(), p.package.format)).collect();
        assert_eq!(
            got,
            vec![
                ("cryptography", "38.0.4", VersionFormat::Pep440),
                ("requests", "2.28.1", VersionFormat::Pep440),
                ("urllib3", "1.26.12", VersionFormat::Pep440)
            ]
        );
        let zip = zip_of(&osv_records());
        let (kind, advisories) = crate::feed::parse(&zip).unwrap();
        assert_eq!(kind, crate::feed::FeedKind::Osv);
        assert_eq!(advisories.len(), 11);
        // The same records as one JSON array give the same advisories.
        let (_, same) = crate::feed::parse(&serde_json::to_vec(&osv_records()).unwrap()).unwrap();
        assert_eq!(same.len(), 11);
        let report = match_image(&AdvisoryDb::new(advisories), &img);
        let mut rows: Vec<(String, String, String, &str)> = Vec::new();
        for (p, fs) in report.index.packages.iter().zip(&report.findings) {
            for f in fs {
                rows.push((p.package.name.clone(), f.id.clone(), f.fixed_by.clone().unwrap_or_default(), f.severity.as_str()));
            }
        }
        let want = [
            ("cryptography", "CVE-2023-23931", "39.0.1", "Medium"),
            ("cryptography", "CVE-2023-49083", "41.0.6", "Medium"),
            ("cryptography", "CVE-2024-26130", "42.0.4", "High"),
            ("urllib3", "CVE-2023-43804", "1.26.17", "High"),
            ("urllib3", "CVE-2023-45803", "1.26.18", "Medium"),
            ("urllib3", "CVE-2024-37891", "1.26.19", "Medium"),
        ];
        let want: Vec<_> = want.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), *d)).collect();
        assert_eq!(rows, want);
        let body = crate::quay::security_body("sha256:m", "scanned", Some(&report), true);
        let feats = body["data"]["Layer"]["Features"].as_array().unwrap();
        assert_eq!(feats[0]["VersionFormat"], "pep440");
        assert_eq!(feats[0]["Vulnerabilities"][0]["Metadata"]["UpdatedBy"], "osv");
        assert_eq!(feats[0]["Vulnerabilities"][0]["Link"], "https://nvd.nist.gov/vuln/detail/CVE-2023-23931");
    }

    #[test]
    fn bad_osv_input_is_refused() {
        let zip = zip_of(&osv_records());
        // Truncated archive, a flipped byte in a member, an unknown range type.
        assert!(crate::feed::parse(&zip[..zip.len() / 2]).is_err());
        let mut bad = zip.clone();
        bad[60] ^= 0xff;
        assert!(crate::feed::parse(&bad).is_err());
        let rec = serde_json::json!({"id": "X-1", "modified": "2024-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI", "name": "a"}, "ranges": [{"type": "WHAT", "events": []}]}]});
        assert!(crate::feed::parse(&serde_json::to_vec(&rec).unwrap()).is_err());
    }

    #[test]
    fn last_affected_and_explicit_versions() {
        let rec = serde_json::json!({"id": "PYSEC-0-1", "modified": "2024-01-01T00:00:00Z", "affected": [
            {"package": {"ecosystem": "PyPI", "name": "Foo_Bar"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"}, {"last_affected": "1.4"}]}]},
            {"package": {"ecosystem": "PyPI", "name": "baz"}, "versions": ["2.0", "2.1"]}
        ]});
        let (_, adv) = crate::feed::parse(&serde_json::to_vec(&rec).unwrap()).unwrap();
        let db = AdvisoryDb::new(adv);
        let hits = |name: &str, v: &str| {
            let pkg = crate::index::parse_python_metadata(&format!("Metadata-Version: 2.1\nName: {name}\nVersion: {v}\n\nbody")).unwrap();
            let img = ImageIndex { distribution: None, packages: vec![ImagePackage { package: pkg, added_by: "l".into() }], unsupported: vec![] };
            match_image(&db, &img).findings[0].len()
        };
        assert_eq!((hits("foo-bar", "0.9"), hits("foo.bar", "1.0"), hits("FOO_BAR", "1.4"), hits("foo-bar", "1.4.1")), (0, 1, 1, 0));
        assert_eq!((hits("baz", "2.0"), hits("baz", "2.0.0"), hits("baz", "2.0.1")), (1, 1, 0));
    }
}

#[cfg(test)]
mod rpm_tests {
    use super::*;
    use crate::index::{index_layer, merge, Limits};

    /// A real rpm sqlite database (written by rpm; see
    /// `testdata/rocky9/README.md`) in a Rocky Linux 9.3 layer, against
    /// Rocky's OSV records.
    #[test]
    fn rocky_rpmdb_against_osv() {
        assert!(std::process::Command::new("rpmbuild").arg("--version").output().is_ok(), "rpmbuild is missing (apt-get install rpm)");
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rocky9");
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let ok = std::process::Command::new(data.join("make-rpmdb.sh")).arg(&root).status().unwrap();
        assert!(ok.success());
        let tar = std::process::Command::new("tar").arg("-C").arg(&root).args(["-czf", "-", "etc", "usr", "var"]).output().unwrap();
        assert!(tar.status.success());
        let layer = index_layer(&tar.stdout[..], &Limits::default()).unwrap();
        assert_eq!(layer.rpm_dbs.len(), 1, "{layer:?}");
        let img = merge(&[("sha256:l1".into(), layer)]);
        assert_eq!(img.distribution.as_ref().unwrap().id, "rocky");
        let pkgs: Vec<(&str, &str, &str)> =
            img.packages.iter().map(|p| (p.package.name.as_str(), p.package.version.as_str(), p.package.source_name.as_str())).collect();
        assert_eq!(
            pkgs,
            vec![
                ("alternatives", "1.24-1.el9", "chkconfig"),
                ("bash", "5.1.8-6.el9_1", "bash"),
                ("glibc", "2.34-83.el9.7", "glibc"),
                ("openssl-libs", "1:3.0.7-24.el9", "openssl")
            ]
        );
        let mut advisories = Vec::new();
        for f in ["RLSA-2024-0310.json", "RLSA-2024-2447.json", "RLSA-2023-5455.json", "RLSA-TEST-0001.json"] {
            advisories.extend(crate::feed::parse(&std::fs::read(data.join(f)).unwrap()).unwrap().1);
        }
        let report = match_image(&AdvisoryDb::new(advisories), &img);
        let got: Vec<(&str, &str, Option<&str>, &str, &str)> = report
            .index
            .packages
            .iter()
            .zip(&report.findings)
            .flat_map(|(p, fs)| {
                fs.iter().map(move |f| (p.package.name.as_str(), f.id.as_str(), f.fixed_by.as_deref(), f.severity.as_str(), f.namespace.as_str()))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("openssl-libs", "CVE-2023-3446", Some("1:3.0.7-27.el9"), "Low", "Rocky Linux:9"),
                ("openssl-libs", "CVE-2023-5363", Some("1:3.0.7-25.el9_3"), "High", "Rocky Linux:9"),
            ]
        );
        let body = crate::quay::security_body("sha256:m", "scanned", Some(&report), true);
        assert_eq!(body["data"]["Layer"]["Features"][3]["VersionFormat"], "rpm");
    }

    /// A BerkeleyDB rpm database is said to be unsupported, not taken for
    /// an image without packages.
    #[test]
    fn berkeley_rpmdb_is_reported_unsupported() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "var/lib/rpm/Packages", &b"\0\0\0\0"[..]).unwrap();
        let layer = index_layer(&b.into_inner().unwrap()[..], &Limits::default()).unwrap();
        assert_eq!(layer.unsupported, vec!["unsupported rpmdb (only the sqlite backend is read): var/lib/rpm/Packages".to_string()]);
        assert!(layer.rpm_dbs.is_empty());
    }

    /// A file named rpmdb.sqlite that is not a database, and a database
    /// whose header blob lies, fail the layer with a reason.
    #[test]
    fn hostile_rpmdb_fails_the_layer() {
        let layer_of = |db: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(db.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "var/lib/rpm/rpmdb.sqlite", db).unwrap();
            b.into_inner().unwrap()
        };
        let err = index_layer(&layer_of(&[0x5a; 8192])[..], &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("rpmdb.sqlite"), "{err}");
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("rpmdb.sqlite");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)").unwrap();
        db.execute("INSERT INTO Packages(blob) VALUES (?1)", [&[0xffu8, 0xff, 0xff, 0xff, 0, 0, 0, 8][..]]).unwrap();
        drop(db);
        let err = index_layer(&layer_of(&std::fs::read(&path).unwrap())[..], &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("rpm header"), "{err}");
    }
}
