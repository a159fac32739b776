//! Quay's security API body
//! (`GET /api/v1/repository/{r}/manifest/{digest}/security`).

use crate::matcher::Report;
use serde_json::{json, Value};

fn updater(ns: &str) -> &'static str {
    if ns.starts_with("alpine:") {
        "alpine-secdb"
    } else if ns.starts_with("debian:") {
        "debian-tracker"
    } else {
        "osv"
    }
}

/// The distribution of a vulnerability's namespace; `None` for language
/// ecosystems (OSV's `PyPI`), which Quay shows with null distro fields.
fn distro_name(ns: &str) -> Option<&'static str> {
    if ns.starts_with("alpine:") {
        Some("Alpine Linux")
    } else if ns.starts_with("debian:") {
        Some("Debian GNU/Linux")
    } else {
        None
    }
}

/// `status` is Quay's: `queued`, `scanned`, `failed`, `unsupported`.
pub fn security_body(manifest: &str, status: &str, report: Option<&Report>, with_vulns: bool) -> Value {
    let Some(report) = report else {
        return json!({"status": status, "data": null});
    };
    let ns = report.index.distribution.as_ref().map(|d| d.namespace()).unwrap_or_default();
    let features: Vec<Value> = report
        .index
        .packages
        .iter()
        .zip(&report.findings)
        .map(|(p, fs)| {
            let mut f = json!({
                "Name": p.package.name,
                "VersionFormat": p.package.format.quay_name(),
                "NamespaceName": ns,
                "AddedBy": p.added_by,
                "Version": p.package.version,
                "BaseScores": [],
                "CVEIds": fs.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            });
            if with_vulns {
                f["Vulnerabilities"] = fs
                    .iter()
                    .map(|v| {
                        json!({
                            "Severity": v.severity.as_str(),
                            "NamespaceName": v.namespace,
                            "Link": v.link,
                            "FixedBy": v.fixed_by.clone().unwrap_or_default(),
                            "Description": v.description,
                            "Name": v.id,
                            "Metadata": {"UpdatedBy": updater(&v.namespace), "RepoName": null, "RepoLink": null, "DistroName": distro_name(&v.namespace), "DistroVersion": v.namespace.split(':').nth(1)},
                        })
                    })
                    .collect();
            }
            f
        })
        .collect();
    json!({
        "status": status,
        "data": {"Layer": {
            "Name": manifest,
            "ParentName": "",
            "NamespaceName": ns,
            "IndexedByVersion": crate::INDEXER_VERSION,
            "Features": features,
        }}
    })
}
