//! OSV records (<https://ossf.github.io/osv-schema/>): one JSON object
//! per vulnerability, a JSON array of them, or a zip archive of `*.json`
//! records as <https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip>
//! publishes them.
//!
//! Each `affected[]` entry names `package {ecosystem, name}` and either
//! `ranges` of type `ECOSYSTEM` (events `introduced`, `fixed`,
//! `last_affected`, evaluated in the ecosystem's own ordering) or an
//! explicit `versions` list. `GIT` ranges are skipped (they name commits,
//! not versions); `SEMVER` ranges are read like `ECOSYSTEM` ones (the Go
//! ecosystem's, whose versions come without Go's `v`, are compared by
//! [`crate::version::go`], which reads both spellings). The
//! severity is the record's (or the entry's) `database_specific.severity`
//! (GitHub's LOW / MODERATE / HIGH / CRITICAL) or else the CVSS v3 base
//! score of `severity[]`, bucketed as Quay does (≥ 9 Critical, ≥ 7 High,
//! ≥ 4 Medium, > 0 Low).

use super::{Advisory, Severity, Target};
use crate::{Error, Result};
use serde_json::Value;
use std::io::Read;

pub(crate) fn looks_like_record(v: &Value) -> bool {
    v.get("id").is_some_and(Value::is_string) && (v.get("affected").is_some() || v.get("modified").is_some())
}

pub(crate) fn looks_like(v: &Value) -> bool {
    match v {
        Value::Array(items) => !items.is_empty() && items.iter().take(3).all(looks_like_record),
        v => looks_like_record(v),
    }
}

/// PEP 503's normal form of a Python project name: lowercase, runs of
/// `-`, `_` and `.` made one `-`. Both METADATA and OSV names go through
/// it, so `PyYAML` matches `pyyaml`.
pub fn normalize_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The package name as the matcher keys it in this ecosystem.
pub fn package_key(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        normalize_pypi(name)
    } else {
        name.to_string()
    }
}

fn severity_word(s: &str) -> Option<Severity> {
    Some(match s.to_ascii_uppercase().as_str() {
        "CRITICAL" => Severity::Critical,
        "HIGH" | "IMPORTANT" => Severity::High,
        "MODERATE" | "MEDIUM" => Severity::Medium,
        "LOW" => Severity::Low,
        "NEGLIGIBLE" | "UNIMPORTANT" => Severity::Negligible,
        _ => return None,
    })
}

/// The CVSS v3.x base score of a vector, from the specification's
/// formulas (FIRST, CVSS v3.1 specification, section 7.1 and 7.4).
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut m = std::collections::HashMap::new();
    let mut parts = vector.split('/');
    if !parts.next()?.starts_with("CVSS:3") {
        return None;
    }
    for p in parts {
        let (k, v) = p.split_once(':')?;
        m.insert(k, v);
    }
    let changed = match *m.get("S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let cia = |k: &str| -> Option<f64> {
        Some(match *m.get(k)? {
            "H" => 0.56,
            "L" => 0.22,
            "N" => 0.0,
            _ => return None,
        })
    };
    let av = match *m.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *m.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (*m.get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *m.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let iss = 1.0 - (1.0 - cia("C")?) * (1.0 - cia("I")?) * (1.0 - cia("A")?);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Some(0.0);
    }
    let raw = if changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    // Roundup as the specification defines it (Appendix A), on integers
    // to avoid floating-point artefacts.
    let i = (raw * 100_000.0).round() as i64;
    Some(if i % 10_000 == 0 { i as f64 / 100_000.0 } else { ((i / 10_000) + 1) as f64 / 10.0 })
}

/// Quay's buckets for a CVSS score.
pub fn severity_of_score(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s > 0.0 => Severity::Low,
        _ => Severity::Unknown,
    }
}

fn severity_of(record: &Value, affected: &Value) -> Severity {
    for v in [affected, record] {
        if let Some(s) = v["database_specific"]["severity"].as_str().and_then(severity_word) {
            return s;
        }
    }
    for v in [affected, record] {
        for s in v["severity"].as_array().into_iter().flatten() {
            if let Some(score) = s["score"].as_str().and_then(cvss3_base_score) {
                return severity_of_score(score);
            }
        }
    }
    // Red Hat and its rebuilds (Rocky, AlmaLinux) carry the errata's
    // severity only as the summary's first word: "Important: openssl
    // security update".
    let summary = record["summary"].as_str().unwrap_or_default();
    summary.split_once(':').and_then(|(word, _)| severity_word(word.trim())).unwrap_or(Severity::Unknown)
}

/// The id Quay shows: a CVE alias when the record has one (as Clair
/// does for GHSA and PYSEC records), else the record's own id.
fn display_id(record: &Value) -> String {
    let id = record["id"].as_str().unwrap_or_default();
    if id.starts_with("CVE-") {
        return id.to_string();
    }
    record["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).find(|a| a.starts_with("CVE-")).unwrap_or(id).to_string()
}

fn link_of(record: &Value, id: &str) -> String {
    let refs = record["references"].as_array().cloned().unwrap_or_default();
    refs.iter()
        .find(|r| r["type"] == "ADVISORY")
        .or_else(|| refs.first())
        .and_then(|r| r["url"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://osv.dev/vulnerability/{id}"))
}

/// Parses one OSV record into advisories (one per affected interval).
pub fn parse_record(record: &Value) -> Result<Vec<Advisory>> {
    let Some(osv_id) = record["id"].as_str() else {
        return Err(Error::Feed("an OSV record has no id".into()));
    };
    if record.get("withdrawn").is_some_and(|w| !w.is_null()) {
        return Ok(Vec::new());
    }
    let id = display_id(record);
    let description = record["summary"].as_str().or_else(|| record["details"].as_str()).unwrap_or_default().to_string();
    let link = link_of(record, osv_id);
    let mut out = Vec::new();
    for a in record["affected"].as_array().into_iter().flatten() {
        let (Some(ecosystem), Some(name)) = (a["package"]["ecosystem"].as_str(), a["package"]["name"].as_str()) else {
            return Err(Error::Feed(format!("{osv_id}: an affected entry has no package ecosystem and name")));
        };
        let severity = severity_of(record, a);
        let target = Target::Osv { ecosystem: ecosystem.to_string(), package: package_key(ecosystem, name) };
        let row = |introduced: Option<String>, fixed: Option<String>, last_affected: Option<String>| Advisory {
            id: id.clone(),
            target: target.clone(),
            fixed,
            introduced,
            last_affected,
            severity,
            description: description.clone(),
            link: link.clone(),
            namespace: ecosystem.to_string(),
        };
        for r in a["ranges"].as_array().into_iter().flatten() {
            match r["type"].as_str() {
                Some("ECOSYSTEM") | Some("SEMVER") => {}
                Some("GIT") => continue,
                other => return Err(Error::Feed(format!("{osv_id}: unknown range type {other:?}"))),
            }
            let mut open: Option<Option<String>> = None;
            for e in r["events"].as_array().into_iter().flatten() {
                if let Some(v) = e["introduced"].as_str() {
                    if let Some(start) = open.take() {
                        out.push(row(start, None, None));
                    }
                    open = Some(if v == "0" { None } else { Some(v.to_string()) });
                } else if let Some(v) = e["fixed"].as_str() {
                    if let Some(start) = open.take() {
                        out.push(row(start, Some(v.to_string()), None));
                    }
                } else if let Some(v) = e["last_affected"].as_str() {
                    if let Some(start) = open.take() {
                        out.push(row(start, None, Some(v.to_string())));
                    }
                } else if e.get("limit").is_none() {
                    return Err(Error::Feed(format!("{osv_id}: unknown range event {e}")));
                }
            }
            if let Some(start) = open {
                out.push(row(start, None, None));
            }
        }
        if a["ranges"].as_array().is_none_or(|r| r.iter().all(|r| r["type"] == "GIT")) {
            // Only an explicit list of versions: each is affected exactly.
            for v in a["versions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                out.push(row(Some(v.to_string()), None, Some(v.to_string())));
            }
        }
    }
    Ok(out)
}

pub fn parse(v: &Value) -> Result<Vec<Advisory>> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::new();
            for r in items {
                out.extend(parse_record(r)?);
            }
            Ok(out)
        }
        r => parse_record(r),
    }
}

/// Most records a zip feed may hold, and the most bytes it may inflate
/// to: PyPI's whole `all.zip` is ~17k records and well under 1 GiB.
const MAX_ZIP_ENTRIES: usize = 1_000_000;
const MAX_ZIP_BYTES: u64 = 2 << 30;

fn u16_at(b: &[u8], i: usize) -> Result<usize> {
    b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]) as usize).ok_or_else(|| Error::Feed("zip: truncated".into()))
}

fn u32_at(b: &[u8], i: usize) -> Result<u64> {
    b.get(i..i + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as u64).ok_or_else(|| Error::Feed("zip: truncated".into()))
}

pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// Reads every `*.json` member of a zip archive (stored or deflated; the
/// central directory is authoritative, each member's CRC-32 is checked)
/// and parses each as an OSV record.
pub fn parse_zip(bytes: &[u8]) -> Result<Vec<Advisory>> {
    // End of central directory: 22 bytes plus a comment of at most 64 KiB.
    let from = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| Error::Feed("zip: no end of central directory".into()))?;
    let count = u16_at(bytes, eocd + 10)?;
    let cd_offset = u32_at(bytes, eocd + 16)? as usize;
    if count == 0xffff || cd_offset == 0xffff_ffff {
        return Err(Error::Feed("zip: ZIP64 archives are not supported".into()));
    }
    if count > MAX_ZIP_ENTRIES {
        return Err(Error::Feed("zip: too many members".into()));
    }
    let mut at = cd_offset;
    let mut total = 0u64;
    let mut out = Vec::new();
    for _ in 0..count {
        if bytes.get(at..at + 4) != Some(b"PK\x01\x02".as_slice()) {
            return Err(Error::Feed("zip: bad central directory entry".into()));
        }
        let flags = u16_at(bytes, at + 8)?;
        let method = u16_at(bytes, at + 10)?;
        let crc = u32_at(bytes, at + 16)? as u32;
        let csize = u32_at(bytes, at + 20)? as usize;
        let usize_ = u32_at(bytes, at + 24)?;
        let (nlen, xlen, clen) = (u16_at(bytes, at + 28)?, u16_at(bytes, at + 30)?, u16_at(bytes, at + 32)?);
        let local = u32_at(bytes, at + 42)? as usize;
        let name = String::from_utf8_lossy(bytes.get(at + 46..at + 46 + nlen).ok_or_else(|| Error::Feed("zip: truncated".into()))?).to_string();
        at += 46 + nlen + xlen + clen;
        if name.ends_with('/') || !name.ends_with(".json") {
            continue;
        }
        if flags & 1 != 0 {
            return Err(Error::Feed(format!("zip: {name} is encrypted")));
        }
        total += usize_;
        if total > MAX_ZIP_BYTES {
            return Err(Error::Feed("zip: inflates to more than the feed size limit".into()));
        }
        if bytes.get(local..local + 4) != Some(b"PK\x03\x04".as_slice()) {
            return Err(Error::Feed(format!("zip: {name}: bad local header")));
        }
        let start = local + 30 + u16_at(bytes, local + 26)? + u16_at(bytes, local + 28)?;
        let data = bytes.get(start..start + csize).ok_or_else(|| Error::Feed(format!("zip: {name}: truncated")))?;
        let mut member = Vec::with_capacity(usize_.min(64 << 20) as usize);
        match method {
            0 => member.extend_from_slice(data),
            8 => {
                flate2::read::DeflateDecoder::new(data).take(usize_ + 1).read_to_end(&mut member).map_err(|e| Error::Feed(format!("zip: {name}: {e}")))?;
            }
            m => return Err(Error::Feed(format!("zip: {name}: compression method {m} is not supported"))),
        }
        let mut c = flate2::Crc::new();
        c.update(&member);
        if member.len() as u64 != usize_ || c.sum() != crc {
            return Err(Error::Feed(format!("zip: {name}: size or CRC-32 does not match")));
        }
        let v: Value = serde_json::from_slice(&member).map_err(|e| Error::Feed(format!("zip: {name}: not JSON: {e}")))?;
        out.extend(parse_record(&v).map_err(|e| Error::Feed(format!("zip: {name}: {e}")))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores of vectors printed in the CVSS v3.1 specification's
    /// examples document (FIRST) and NVD's pages for the same CVEs.
    #[test]
    fn cvss_scores() {
        for (v, s) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N", 5.3),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 2.0),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(v), Some(s), "{v}");
        }
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:X"), None);
    }

    #[test]
    fn names_normalize() {
        assert_eq!(normalize_pypi("PyYAML"), "pyyaml");
        assert_eq!(normalize_pypi("zope.interface"), "zope-interface");
        assert_eq!(normalize_pypi("Foo__Bar-.baz"), "foo-bar-baz");
    }
}
