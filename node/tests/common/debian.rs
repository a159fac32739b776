//! A real Debian image and a real vulnerability feed for it: the image is
//! one layer holding this machine's own `/etc/os-release` and
//! `/var/lib/dpkg/status` (Debian 12 "bookworm"), pushed with skopeo; the
//! feeds are in the Debian security tracker's JSON format and name real
//! CVEs with the versions Debian fixed them in (see `tests/scanning.rs`
//! for where each comes from). Shared by the scanning and console tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use berth_common::Digest;
use serde_json::{json, Value};

use super::daemons::run;

/// Each vulnerability of a security report's features, as (package,
/// advisory, fixed by, severity), in the report's order.
pub fn vulnerability_rows(features: &[Value]) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap().to_string();
    features
        .iter()
        .flat_map(|f| f["Vulnerabilities"].as_array().unwrap().iter().map(move |v| (s(&f["Name"]), s(&v["Name"]), s(&v["FixedBy"]), s(&v["Severity"]))))
        .collect()
}

/// An OCI layout whose one image (tagged `bookworm`) has one gzip layer
/// made with tar from this machine's os-release and dpkg database.
/// Answers the layer's digest.
pub fn debian_layout(dir: &Path) -> String {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::copy("/etc/os-release", root.join("etc/os-release")).unwrap();
    std::fs::copy("/var/lib/dpkg/status", root.join("var/lib/dpkg/status")).unwrap();
    let tar = dir.join("layer.tar");
    run(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).args(["etc", "var"]));
    let diff_id = Digest::sha256_of(&std::fs::read(&tar).unwrap()).to_string();
    run(Command::new("gzip").arg("-n").arg(&tar));
    let layer = std::fs::read(dir.join("layer.tar.gz")).unwrap();
    let out = dir.join("oci");
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = Digest::sha256_of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let (ld, ls) = put(&layer);
    let m = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
    });
    let (md, ms) = put(&serde_json::to_vec(&m).unwrap());
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "bookworm"}}]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    ld
}

pub fn skopeo_push(dir: &Path, node: &str, password: &str, dest: &str) -> String {
    let digest_file = dir.join("pushed.digest");
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("admin:{password}"), "--digestfile"])
        .arg(&digest_file)
        .arg(format!("oci:{}:bookworm", dir.join("oci").display()))
        .arg(format!("docker://{node}/{dest}")));
    std::fs::read_to_string(&digest_file).unwrap().trim().to_string()
}

pub fn resolved(fixed: &str, urgency: &str) -> Value {
    json!({"status": "resolved", "repositories": {"bookworm": fixed}, "fixed_version": fixed, "urgency": urgency})
}

pub fn open(urgency: &str) -> Value {
    json!({"status": "open", "repositories": {}, "urgency": urgency})
}

/// The first feed, in the Debian security tracker's format.
pub fn feed_v1() -> Value {
    json!({
        "openssl": {
            "CVE-2026-7383": {"description": "Possible Heap Buffer Overflow in ASN.1 Multibyte String Conversion", "scope": "remote",
                "releases": {"bookworm": resolved("3.0.20-1~deb12u2", "medium")}},
            "CVE-2026-84782": {"description": "DTLS Retransmits Handshake Messages From a Stale Buffer Offset", "scope": "remote",
                "releases": {"bookworm": resolved("3.0.22-1~deb12u2", "high")}},
            "CVE-2026-28387": {"description": "Potential use-after-free in DANE client code", "scope": "remote",
                "releases": {"bookworm": resolved("3.0.19-1~deb12u2", "medium")}},
            "CVE-2025-15467": {"description": "Stack buffer overflow in CMS AuthEnvelopedData parsing", "scope": "remote",
                "releases": {"bookworm": resolved("3.0.18-1~deb12u2", "high"), "bullseye": open("high")}}
        },
        "tar": {
            "CVE-2005-2541": {"description": "Tar 1.15.1 does not properly warn the user when extracting setuid or setgid files", "scope": "local",
                "releases": {"bookworm": open("unimportant"), "bullseye": open("unimportant")}},
            "CVE-2022-48303": {"description": "GNU Tar through 1.34 has a one-byte out-of-bounds read that results in use of uninitialized memory for a conditional jump", "scope": "local",
                "releases": {"bookworm": resolved("1.34+dfsg-1.2", "low"), "bullseye": open("low")}}
        },
        "glibc": {
            "CVE-2010-4756": {"description": "The glob implementation in the GNU C Library allows remote authenticated users to cause a denial of service (CPU and memory consumption) via crafted glob expressions", "scope": "remote",
                "releases": {"bookworm": open("unimportant")}},
            "CVE-2023-4911": {"description": "A buffer overflow was discovered in the GNU C Library's dynamic loader ld.so while processing the GLIBC_TUNABLES environment variable", "scope": "local",
                "releases": {"bookworm": resolved("2.36-9+deb12u3", "high"), "bullseye": {"status": "resolved", "repositories": {}, "fixed_version": "0", "urgency": "high"}}}
        },
        "util-linux": {
            "CVE-2022-0563": {"description": "A flaw was found in the util-linux chfn and chsh utilities when compiled with Readline support", "scope": "local",
                "releases": {"bookworm": open("unimportant")}}
        },
        "nginx": {
            "CVE-2023-44487": {"description": "The HTTP/2 protocol allows a denial of service (server resource consumption) because request cancellation can reset many streams quickly", "scope": "remote",
                "releases": {"bookworm": resolved("1.22.1-9+deb12u1", "high")}}
        }
    })
}

/// The second: two more advisories, one above the notification's level.
pub fn feed_v2() -> Value {
    let mut f = feed_v1();
    f["openssl"]["CVE-2026-42767"] = json!({"description": "Fix potential NULL dereference in OSSL_CRMF_ENCRYPTEDVALUE_get1_encCert()", "scope": "remote",
        "releases": {"bookworm": resolved("3.0.22-1~deb12u1", "medium")}});
    f["zlib"] = json!({"CVE-2023-45853": {"description": "MiniZip in zlib through 1.3 has an integer overflow and resultant heap-based buffer overflow in zipOpenNewFileInZip4_64", "scope": "remote",
        "releases": {"bookworm": open("unimportant")}}});
    f
}

/// Installed packages of this machine: name → (version, source name).
pub fn installed() -> BTreeMap<String, (String, String)> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${source:Package}\n"]));
    out.lines()
        .filter(|l| l.starts_with("ii"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_string(), (f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

/// `(id, severity, FixedBy)` expected for a package of source `src`.
pub fn expected(src: &str, v2: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut e = match src {
        "openssl" => vec![("CVE-2026-7383", "Medium", "3.0.20-1~deb12u2"), ("CVE-2026-84782", "High", "3.0.22-1~deb12u2")],
        "tar" => vec![("CVE-2005-2541", "Negligible", "")],
        "glibc" => vec![("CVE-2010-4756", "Negligible", "")],
        "util-linux" => vec![("CVE-2022-0563", "Negligible", "")],
        "zlib" if v2 => vec![("CVE-2023-45853", "Negligible", "")],
        _ => vec![],
    };
    if v2 && src == "openssl" {
        e.push(("CVE-2026-42767", "Medium", "3.0.22-1~deb12u1"));
    }
    e.sort();
    e
}

pub fn check_report(v: &Value, layer: &str, v2: bool) {
    assert_eq!(v["status"], "scanned", "{v}");
    let l = &v["data"]["Layer"];
    assert_eq!(l["NamespaceName"], "debian:12");
    let features = l["Features"].as_array().unwrap();
    let mine = installed();
    let got: BTreeMap<String, &Value> = features.iter().map(|f| (f["Name"].as_str().unwrap().to_string(), f)).collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), mine.keys().collect::<Vec<_>>(), "exactly the installed packages");
    for (name, (version, src)) in &mine {
        let f = got[name];
        assert_eq!(f["Version"], version.as_str(), "{name}");
        assert_eq!(f["VersionFormat"], "dpkg");
        assert_eq!(f["AddedBy"], layer, "{name}");
        let mut vulns: Vec<(String, String, String)> = f["Vulnerabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["Name"].as_str().unwrap().into(), x["Severity"].as_str().unwrap().into(), x["FixedBy"].as_str().unwrap().into()))
            .collect();
        vulns.sort();
        let want: Vec<(String, String, String)> = expected(src, v2).into_iter().map(|(a, b, c)| (a.into(), b.into(), c.into())).collect();
        assert_eq!(vulns, want, "{name} (source {src})");
        for x in f["Vulnerabilities"].as_array().unwrap() {
            assert_eq!(x["NamespaceName"], "debian:12");
            assert_eq!(x["Link"], format!("https://security-tracker.debian.org/tracker/{}", x["Name"].as_str().unwrap()));
        }
    }
}
