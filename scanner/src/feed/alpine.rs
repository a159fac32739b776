//! Alpine's secdb (<https://secdb.alpinelinux.org/v3.19/main.json>):
//! `{distroversion: "v3.19", reponame, packages: [{pkg: {name, secfixes:
//! {fixed_version: [CVE-id, ...]}}}]}`. `name` is the origin package; a
//! version key `0` marks a CVE the branch was never affected by. secdb
//! carries no severities: they are Unknown, as Quay shows them.

use super::{Advisory, Severity, Target};
use crate::{Error, Result};
use serde_json::Value;

pub(crate) fn looks_like(v: &Value) -> bool {
    v.get("distroversion").is_some_and(Value::is_string) && v.get("packages").is_some_and(Value::is_array)
}

pub fn parse(v: &Value) -> Result<Vec<Advisory>> {
    let branch = v["distroversion"].as_str().unwrap_or_default().to_string();
    if !branch.starts_with('v') {
        return Err(Error::Feed(format!("secdb distroversion {branch:?} is not a branch like v3.19")));
    }
    let mut out = Vec::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let Some(name) = p["pkg"]["name"].as_str() else {
            return Err(Error::Feed("a secdb package has no name".into()));
        };
        for (fixed, ids) in p["pkg"]["secfixes"].as_object().into_iter().flatten() {
            if fixed == "0" {
                continue;
            }
            for id in ids.as_array().into_iter().flatten().filter_map(Value::as_str) {
                // Entries may carry aliases: "CVE-2019-1234 XSA-1".
                let id = id.split_whitespace().next().unwrap_or(id);
                out.push(Advisory {
                    id: id.to_string(),
                    target: Target::AlpineOrigin { branch: branch.clone(), package: name.to_string() },
                    fixed: Some(fixed.clone()),
                    introduced: None,
                    last_affected: None,
                    severity: Severity::Unknown,
                    description: String::new(),
                    link: format!("https://security.alpinelinux.org/vuln/{id}"),
                    namespace: format!("alpine:{branch}"),
                });
            }
        }
    }
    Ok(out)
}
