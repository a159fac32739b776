//! The Debian security tracker's JSON
//! (<https://security-tracker.debian.org/tracker/data/json>):
//! `{source_package: {CVE-id: {description, scope, releases: {codename:
//! {status, fixed_version, urgency, repositories}}}}}`.
//!
//! A release entry with status `resolved` is fixed at `fixed_version`
//! (`0` means the release never had the flaw); `open` is affected with no
//! fix. `undetermined` entries are left out, as Quay's Clair does.

use super::{Advisory, Severity, Target};
use crate::{Error, Result};
use serde_json::Value;

/// Debian release codenames and their `VERSION_ID`.
pub fn version_id_of(codename: &str) -> Option<&'static str> {
    Some(match codename {
        "buster" => "10",
        "bullseye" => "11",
        "bookworm" => "12",
        "trixie" => "13",
        "forky" => "14",
        _ => return None,
    })
}

/// The tracker's urgency, as Quay (Clair v2's Debian updater) maps it.
pub fn severity_of(urgency: &str) -> Severity {
    match urgency.trim_end_matches('*') {
        "unimportant" => Severity::Negligible,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        _ => Severity::Unknown,
    }
}

pub(crate) fn looks_like(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    obj.values().take(3).all(|cves| cves.as_object().is_some_and(|m| m.values().take(3).all(|c| c.get("releases").is_some()))) && !obj.is_empty()
}

pub fn parse(v: &Value) -> Result<Vec<Advisory>> {
    let obj = v.as_object().ok_or_else(|| Error::Feed("the tracker's JSON is an object of packages".into()))?;
    let mut out = Vec::new();
    for (package, cves) in obj {
        let Some(cves) = cves.as_object() else {
            return Err(Error::Feed(format!("package {package}: not an object")));
        };
        for (id, cve) in cves {
            let description = cve.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(releases) = cve.get("releases").and_then(Value::as_object) else {
                continue;
            };
            for (release, r) in releases {
                let status = r.get("status").and_then(Value::as_str).unwrap_or_default();
                let fixed = match status {
                    "resolved" => match r.get("fixed_version").and_then(Value::as_str) {
                        Some("0") | None => continue,
                        Some(v) => Some(v.to_string()),
                    },
                    "open" => None,
                    _ => continue,
                };
                let urgency = r.get("urgency").and_then(Value::as_str).unwrap_or_default();
                let namespace = match version_id_of(release) {
                    Some(v) => format!("debian:{v}"),
                    None => format!("debian:{release}"),
                };
                out.push(Advisory {
                    id: id.clone(),
                    target: Target::DebianSource { release: release.clone(), package: package.clone() },
                    fixed,
                    introduced: None,
                    last_affected: None,
                    severity: severity_of(urgency),
                    description: description.clone(),
                    link: format!("https://security-tracker.debian.org/tracker/{id}"),
                    namespace,
                });
            }
        }
    }
    Ok(out)
}
