//! Layer indexing: one pass over a layer's tar stream, reading only the
//! few files that name the distribution and the installed packages.
//!
//! A layer is untrusted input. [`Limits`] bounds the number of entries,
//! the declared size of any entry, the bytes read from any file we parse,
//! the total uncompressed bytes and the wall time; names that are
//! absolute or climb with `..` refuse the layer. Memory stays bounded by
//! `max_file_bytes` times the few files kept, whatever the layer holds.

use crate::version::VersionFormat;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Limits {
    /// A real image layer rarely has more than ~100k entries; a tar bomb
    /// of millions of empty files is refused at this count.
    pub max_entries: u64,
    /// Largest size an entry's header may declare (a 10 GiB sparse
    /// header is refused before anything is read).
    pub max_entry_bytes: u64,
    /// Largest file we read into memory to parse (status, METADATA, ...).
    pub max_file_bytes: u64,
    /// Total uncompressed bytes read from the layer.
    pub max_total_bytes: u64,
    pub max_time: Duration,
    /// Largest ELF file streamed for Go build info; larger ones are
    /// skipped with a reason in [`LayerIndex::unsupported`].
    pub max_binary_bytes: u64,
    /// Largest rpmdb.sqlite copied out to be read (a Fedora workstation's
    /// is ~100 MiB; a container's, a few MiB).
    pub max_rpmdb_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 500_000,
            max_entry_bytes: 8 << 30,
            max_file_bytes: 64 << 20,
            max_total_bytes: 32 << 30,
            max_time: Duration::from_secs(600),
            max_binary_bytes: 256 << 20,
            max_rpmdb_bytes: 512 << 20,
        }
    }
}

/// The distribution named by `etc/os-release` or `usr/lib/os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Distribution {
    pub id: String,
    pub version_id: String,
    pub version_codename: String,
    pub pretty_name: String,
}

impl Distribution {
    /// Quay's `NamespaceName` for this distribution, e.g. `debian:12`.
    pub fn namespace(&self) -> String {
        if self.id == "alpine" {
            // Alpine's advisories are per branch: 3.19.1 is on v3.19.
            let mut v = self.version_id.split('.');
            if let (Some(major), Some(minor)) = (v.next(), v.next()) {
                return format!("alpine:v{major}.{minor}");
            }
        }
        format!("{}:{}", self.id, self.version_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The source package (dpkg `Source:`); advisories of the Debian
    /// tracker name source packages.
    pub source_name: String,
    pub source_version: String,
    pub format: VersionFormat,
}

/// A Go module a binary was built from, as a package matched in the Go
/// ecosystem.
fn go_package(name: String, version: String) -> Package {
    Package { source_name: name.clone(), source_version: version.clone(), name, version, format: VersionFormat::Go }
}

/// What one layer contributes. Fields are `None` when the layer does not
/// touch the file, so merging can tell "unchanged" from "emptied".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub os_release: Option<Distribution>,
    /// `var/lib/dpkg/status` as this layer wrote it.
    pub dpkg_status: Option<Vec<Package>>,
    /// `var/lib/dpkg/status.d/<file>` (distroless images).
    pub dpkg_status_d: BTreeMap<String, Vec<Package>>,
    /// `lib/apk/db/installed` as this layer wrote it.
    #[serde(default)]
    pub apk_installed: Option<Vec<Package>>,
    /// Python distributions, by the path of their `METADATA` / `PKG-INFO`
    /// (or of an `.egg-info` file).
    #[serde(default)]
    pub python: BTreeMap<String, Package>,
    /// Go executables with module build info, by path: the toolchain as
    /// `stdlib`, the main module (unless `(devel)`) and the deps.
    #[serde(default)]
    pub go_binaries: BTreeMap<String, Vec<Package>>,
    /// rpm's sqlite databases (`var/lib/rpm/rpmdb.sqlite`, or
    /// `usr/lib/sysimage/rpm/rpmdb.sqlite` on newer Fedora and openSUSE),
    /// by path, as this layer wrote them.
    #[serde(default)]
    pub rpm_dbs: BTreeMap<String, Vec<Package>>,
    /// Paths deleted by this layer (`.wh.<name>`), as full paths.
    pub whiteouts: Vec<String>,
    /// Directories made opaque by this layer (`.wh..wh..opq`).
    pub opaque_dirs: Vec<String>,
    /// Package databases found but not read, said aloud rather than
    /// silently skipped (a BerkeleyDB or ndb rpmdb, a Go binary too large).
    pub unsupported: Vec<String>,
    pub entries: u64,
    pub bytes: u64,
}

/// Normalises a tar entry name: strips `./` and leading `/`-free checks.
/// Refuses absolute names and `..` components.
fn clean_path(raw: &[u8]) -> Result<String> {
    let s = String::from_utf8_lossy(raw);
    if s.starts_with('/') {
        return Err(Error::Refused(format!("absolute path in layer: {s}")));
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::Refused(format!("path traversal in layer: {s}"))),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Wraps the layer in the right decompressor, chosen by magic bytes.
fn decompress<'a, R: Read + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Corrupt(e.to_string())),
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec()).chain(r);
    if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(head)))
    } else if got == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let d = ruzstd::decoding::StreamingDecoder::new(head).map_err(|e| Error::Corrupt(format!("zstd: {e}")))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(head))
    }
}

/// Counts uncompressed bytes and enforces the total and time limits on
/// every read, so even one huge skipped entry cannot outrun them.
struct Budget<R> {
    inner: R,
    read: u64,
    max: u64,
    deadline: Instant,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::other("indexing took longer than its time limit"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.max {
            return Err(std::io::Error::other("layer is larger than the uncompressed size limit"));
        }
        Ok(n)
    }
}

/// A Python distribution's metadata file: `*.dist-info/METADATA`,
/// `*.egg-info/PKG-INFO`, or a single-file `*.egg-info`.
fn is_python_metadata(path: &str) -> bool {
    path.ends_with(".dist-info/METADATA") || path.ends_with(".egg-info/PKG-INFO") || path.ends_with(".egg-info")
}

fn is_interesting(path: &str) -> bool {
    is_python_metadata(path)
        || matches!(path, "etc/os-release" | "usr/lib/os-release" | "var/lib/dpkg/status" | "lib/apk/db/installed")
        || path.starts_with("var/lib/dpkg/status.d/")
}

/// Indexes one layer read from `r` (compressed or not).
pub fn index_layer<R: Read>(r: R, limits: &Limits) -> Result<LayerIndex> {
    let started = Instant::now();
    let inner = decompress(r)?;
    let budget = Budget { inner, read: 0, max: limits.max_total_bytes, deadline: started + limits.max_time };
    let mut archive = tar::Archive::new(budget);
    let mut out = LayerIndex::default();
    let mut os_etc: Option<Distribution> = None;
    let mut os_lib: Option<Distribution> = None;
    let entries = archive.entries().map_err(|e| Error::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Corrupt(e.to_string()))?;
        out.entries += 1;
        if out.entries > limits.max_entries {
            return Err(Error::Refused(format!("more than {} entries in one layer", limits.max_entries)));
        }
        let declared = entry.header().size().unwrap_or(0);
        if declared > limits.max_entry_bytes {
            return Err(Error::Refused(format!("an entry declares {declared} bytes, more than the {} allowed", limits.max_entry_bytes)));
        }
        let path = clean_path(&entry.path_bytes())?;
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            out.opaque_dirs.push(dir);
            continue;
        }
        if let Some(gone) = base.strip_prefix(".wh.") {
            out.whiteouts.push(if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") });
            continue;
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if is_rpm_sqlite(&path) {
            let packages = index_rpm_sqlite(&mut entry, &path, declared, limits, started)?;
            out.rpm_dbs.insert(path, packages);
            continue;
        }
        if is_rpm_other_db(&path) {
            out.unsupported.push(format!("unsupported rpmdb (only the sqlite backend is read): {path}"));
            continue;
        }
        if !is_interesting(&path) {
            if declared >= 64 {
                index_elf(&mut entry, &path, declared, limits, &mut out)?;
            }
            continue;
        }
        if declared > limits.max_file_bytes {
            return Err(Error::Refused(format!("{path} is {declared} bytes, more than the {} a package database may have", limits.max_file_bytes)));
        }
        let mut buf = Vec::with_capacity(declared as usize);
        (&mut entry).take(limits.max_file_bytes).read_to_end(&mut buf).map_err(|e| Error::Corrupt(format!("{path}: {e}")))?;
        let text = String::from_utf8_lossy(&buf);
        match path.as_str() {
            "etc/os-release" => os_etc = Some(parse_os_release(&text)),
            "usr/lib/os-release" => os_lib = Some(parse_os_release(&text)),
            "var/lib/dpkg/status" => out.dpkg_status = Some(parse_dpkg_status(&text)),
            "lib/apk/db/installed" => out.apk_installed = Some(parse_apk_installed(&text)),
            p if is_python_metadata(p) => {
                if let Some(pkg) = parse_python_metadata(&text) {
                    out.python.insert(p.to_string(), pkg);
                }
            }
            p => {
                out.dpkg_status_d.insert(p.to_string(), parse_dpkg_status(&text));
            }
        }
    }
    // Drain what follows the end-of-archive marker so a truncated
    // compressed stream is noticed rather than taken for a whole layer.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| Error::Corrupt(format!("after the last entry: {e}")))?;
    out.bytes = rest.read;
    out.os_release = os_etc.or(os_lib);
    Ok(out)
}

const RPM_DIRS: [&str; 2] = ["var/lib/rpm/", "usr/lib/sysimage/rpm/"];

fn is_rpm_sqlite(path: &str) -> bool {
    RPM_DIRS.iter().any(|d| path.strip_prefix(d) == Some("rpmdb.sqlite"))
}

/// BerkeleyDB (`Packages`, RHEL 8 and older) and ndb (`Packages.db`,
/// SUSE) rpm databases.
fn is_rpm_other_db(path: &str) -> bool {
    RPM_DIRS.iter().any(|d| matches!(path.strip_prefix(d), Some("Packages" | "Packages.db")))
}

/// Copies an rpmdb.sqlite entry to a private temporary file (sqlite reads
/// files, not streams) and reads its packages within the layer's limits.
fn index_rpm_sqlite<R: Read>(entry: &mut R, path: &str, declared: u64, limits: &Limits, started: Instant) -> Result<Vec<Package>> {
    if declared > limits.max_rpmdb_bytes {
        return Err(Error::Refused(format!("{path} is {declared} bytes, more than the {} an rpm database may have", limits.max_rpmdb_bytes)));
    }
    let mut file = tempfile::NamedTempFile::new().map_err(|e| Error::Corrupt(format!("{path}: a temporary file: {e}")))?;
    std::io::copy(&mut entry.take(limits.max_rpmdb_bytes), file.as_file_mut()).map_err(|e| Error::Corrupt(format!("{path}: {e}")))?;
    let headers = crate::rpmdb::read_sqlite(file.path(), started + limits.max_time, limits.max_entries)?;
    let mut packages: Vec<Package> = headers.iter().map(rpm_package).collect();
    packages.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(packages)
}

/// An installed rpm as a package matched by `[epoch:]version-release`.
fn rpm_package(h: &crate::rpmdb::Header) -> Package {
    let version = h.evr();
    Package {
        source_name: h.source_name().unwrap_or_else(|| h.name.clone()),
        source_version: version.clone(),
        name: h.name.clone(),
        version,
        format: VersionFormat::Rpm,
    }
}

/// Reads a regular file's first bytes and, for an ELF file, streams the
/// rest looking for Go build info (see [`crate::gobin`]).
fn index_elf<R: Read>(entry: &mut R, path: &str, declared: u64, limits: &Limits, out: &mut LayerIndex) -> Result<()> {
    let mut head = [0u8; 64];
    entry.read_exact(&mut head).map_err(|e| Error::Corrupt(format!("{path}: {e}")))?;
    if !crate::gobin::is_elf(&head) {
        return Ok(());
    }
    if declared > limits.max_binary_bytes {
        out.unsupported.push(format!("ELF file too large to read for Go build info ({declared} bytes, more than {}): {path}", limits.max_binary_bytes));
        return Ok(());
    }
    match crate::gobin::scan(&head, entry).map_err(|e| Error::Corrupt(format!("{path}: {e}")))? {
        crate::gobin::GoFind::NotGo => {}
        crate::gobin::GoFind::Found(info) => {
            out.go_binaries.insert(path.to_string(), info.modules().into_iter().map(|(name, version)| go_package(name, version)).collect());
        }
        crate::gobin::GoFind::Unsupported(why) => out.unsupported.push(format!("unsupported Go build-info format ({why}): {path}")),
    }
    Ok(())
}

/// Parses os-release's `KEY=value` lines (values optionally quoted).
pub fn parse_os_release(text: &str) -> Distribution {
    let mut d = Distribution::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => d.id = v,
            "VERSION_ID" => d.version_id = v,
            "VERSION_CODENAME" => d.version_codename = v,
            "PRETTY_NAME" => d.pretty_name = v,
            _ => {}
        }
    }
    d
}

/// Parses a dpkg status file into the packages dpkg considers installed
/// (`Status: install ok installed`, or no Status line in `status.d`).
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut source = None;
        let mut status = None;
        for line in para.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => name = Some(v.to_string()),
                "Version" => version = Some(v.to_string()),
                "Source" => source = Some(v.to_string()),
                "Status" => status = Some(v.to_string()),
                _ => {}
            }
        }
        let (Some(name), Some(version)) = (name, version) else {
            continue;
        };
        if let Some(st) = &status {
            if !st.ends_with(" installed") || st.split_whitespace().nth(2) != Some("installed") {
                continue;
            }
        }
        // `Source: name (version)` when the source version differs.
        let (source_name, source_version) = match source {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (n.to_string(), v.trim().trim_start_matches('(').trim_end_matches(')').to_string()),
                None => (s, version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        out.push(Package { name, version, source_name, source_version, format: VersionFormat::Dpkg });
    }
    out
}

/// Parses apk's installed database: `P:` name, `V:` version, `o:` the
/// origin (source) package that Alpine's secdb names.
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut origin) = (None, None, None);
        for line in para.lines() {
            match line.split_once(':') {
                Some(("P", v)) => name = Some(v.trim().to_string()),
                Some(("V", v)) => version = Some(v.trim().to_string()),
                Some(("o", v)) => origin = Some(v.trim().to_string()),
                _ => {}
            }
        }
        let (Some(name), Some(version)) = (name, version) else { continue };
        out.push(Package { source_name: origin.unwrap_or_else(|| name.clone()), source_version: version.clone(), name, version, format: VersionFormat::Apk });
    }
    out
}

/// Parses the core metadata of a Python distribution (`METADATA`,
/// `PKG-INFO`: RFC 822 headers up to the first blank line; `Name` and
/// `Version` are required by every metadata version).
pub fn parse_python_metadata(text: &str) -> Option<Package> {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        match line.split_once(':') {
            Some(("Name", v)) => name = Some(v.trim().to_string()),
            Some(("Version", v)) => version = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let (name, version) = (name.filter(|n| !n.is_empty())?, version.filter(|v| !v.is_empty())?);
    Some(Package { source_name: crate::feed::osv::normalize_pypi(&name), source_version: version.clone(), name, version, format: VersionFormat::Pep440 })
}

/// A package of the merged image view with the layer that added it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePackage {
    pub package: Package,
    /// Digest of the first layer from which this exact package (name and
    /// version) was present without interruption.
    pub added_by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageIndex {
    pub distribution: Option<Distribution>,
    pub packages: Vec<ImagePackage>,
    pub unsupported: Vec<String>,
}

fn removed_by(path: &str, layer: &LayerIndex) -> bool {
    layer.whiteouts.iter().any(|w| path == w || path.starts_with(&format!("{w}/")))
        || layer.opaque_dirs.iter().any(|d| d.is_empty() || path.starts_with(&format!("{d}/")))
}

/// Folds layers (bottom first, with their digests) into the image's view.
pub fn merge(layers: &[(String, LayerIndex)]) -> ImageIndex {
    let mut distro: Option<Distribution> = None;
    // One package database per path; each maps name to (package, layer).
    type Db = BTreeMap<String, (Package, String)>;
    let mut dbs: BTreeMap<String, Db> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for (digest, layer) in layers {
        dbs.retain(|path, _| !removed_by(path, layer));
        if distro.is_some() && (removed_by("etc/os-release", layer) && removed_by("usr/lib/os-release", layer)) {
            distro = None;
        }
        if let Some(d) = &layer.os_release {
            distro = Some(d.clone());
        }
        let mut replace = |path: &str, pkgs: &[Package]| {
            let old = dbs.remove(path).unwrap_or_default();
            let mut new = Db::new();
            for p in pkgs {
                let added = match old.get(&p.name) {
                    Some((q, l)) if q.version == p.version => l.clone(),
                    _ => digest.clone(),
                };
                new.insert(p.name.clone(), (p.clone(), added));
            }
            dbs.insert(path.to_string(), new);
        };
        if let Some(pkgs) = &layer.dpkg_status {
            replace("var/lib/dpkg/status", pkgs);
        }
        if let Some(pkgs) = &layer.apk_installed {
            replace("lib/apk/db/installed", pkgs);
        }
        for (path, pkgs) in &layer.dpkg_status_d {
            replace(path, pkgs);
        }
        for (path, pkg) in &layer.python {
            replace(path, std::slice::from_ref(pkg));
        }
        for (path, pkgs) in &layer.go_binaries {
            replace(path, pkgs);
        }
        for (path, pkgs) in &layer.rpm_dbs {
            replace(path, pkgs);
        }
        unsupported.extend(layer.unsupported.iter().cloned());
    }
    let mut packages: Vec<ImagePackage> =
        dbs.into_values().flat_map(|db| db.into_values()).map(|(package, added_by)| ImagePackage { package, added_by }).collect();
    packages.sort_by(|a, b| (&a.package.name, &a.package.version).cmp(&(&b.package.name, &b.package.version)));
    packages.dedup_by(|a, b| a.package == b.package);
    unsupported.sort();
    unsupported.dedup();
    ImageIndex { distribution: distro, packages, unsupported }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn this_machines_dpkg_database_and_os_release() {
        let Ok(status) = std::fs::read("/var/lib/dpkg/status") else {
            return;
        };
        let osr = std::fs::read("/etc/os-release").unwrap();
        let layer = gz(&tar_of(&[("etc/os-release", &osr), ("var/lib/dpkg/status", &status)]));
        let idx = index_layer(&layer[..], &Limits::default()).unwrap();
        let d = idx.os_release.unwrap();
        assert_eq!(d.id, "debian");
        let pkgs = idx.dpkg_status.unwrap();
        let dpkg_count = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${db:Status-Abbrev}\\n"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("ii")).count())
            .unwrap_or(pkgs.len());
        assert_eq!(pkgs.len(), dpkg_count);
        let libc = pkgs.iter().find(|p| p.name == "libc6").unwrap();
        assert_eq!(libc.source_name, "glibc");
    }

    #[test]
    fn source_with_its_own_version() {
        let s = "Package: libfoo1\nStatus: install ok installed\nVersion: 1.2-3+b1\nSource: foo (1.2-3)\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let p = parse_dpkg_status(s);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].source_name, "foo");
        assert_eq!(p[0].source_version, "1.2-3");
    }

    #[test]
    fn traversal_and_absolute_names_are_refused() {
        for name in ["../etc/passwd", "a/../../x"] {
            let mut h = tar::Header::new_old();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            // Bypass the builder's own checks: write the name raw.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            let mut raw = h.as_bytes().to_vec();
            raw.extend_from_slice(&[b'x'; 512]);
            raw.extend_from_slice(&[0; 1024]);
            let err = index_layer(&raw[..], &Limits::default()).unwrap_err();
            assert!(err.to_string().contains("path traversal"), "{err}");
        }
    }

    #[test]
    fn truncated_gzip_fails() {
        let layer = gz(&tar_of(&[("etc/os-release", b"ID=debian\n"), ("x", &[7u8; 100_000])]));
        let cut = &layer[..layer.len() / 2];
        assert!(matches!(index_layer(cut, &Limits::default()), Err(Error::Corrupt(_))));
    }

    #[test]
    fn huge_declared_entry_is_refused_without_reading() {
        let mut h = tar::Header::new_gnu();
        h.set_path("big.img").unwrap();
        h.set_size(10 << 30);
        h.set_cksum();
        let raw = h.as_bytes().to_vec();
        let err = index_layer(&raw[..], &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("declares"), "{err}");
    }

    #[test]
    fn whiteouts_and_added_by() {
        let a = "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 1\n";
        let b = "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 2\n\nPackage: c\nStatus: install ok installed\nVersion: 1\n";
        let l1 = index_layer(&tar_of(&[("var/lib/dpkg/status", a.as_bytes()), ("var/lib/dpkg/status.d/x", a.as_bytes())])[..], &Limits::default()).unwrap();
        let l2 = index_layer(&tar_of(&[("var/lib/dpkg/status", b.as_bytes()), ("var/lib/dpkg/status.d/.wh.x", b"")])[..], &Limits::default()).unwrap();
        let img = merge(&[("L1".into(), l1), ("L2".into(), l2)]);
        let got: Vec<_> = img.packages.iter().map(|p| (p.package.name.as_str(), p.package.version.as_str(), p.added_by.as_str())).collect();
        assert_eq!(got, vec![("a", "1", "L1"), ("b", "2", "L2"), ("c", "1", "L2")]);
    }
}
