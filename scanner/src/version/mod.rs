//! Version orderings, one module per ecosystem, each implemented from the
//! ecosystem's own rules (cited in the module).

pub mod apk;
pub mod deb;
pub mod go;
pub mod pep440;
pub mod rpm;

use std::cmp::Ordering;

/// Which ordering a package's versions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VersionFormat {
    Dpkg,
    Apk,
    /// PEP 440 (Python packages).
    Pep440,
    /// rpm's `rpmvercmp` on `[epoch:]version-release`.
    Rpm,
    /// Go modules and the Go toolchain (`stdlib`): semver, `v` optional.
    Go,
}

impl VersionFormat {
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            VersionFormat::Dpkg => deb::compare(a, b),
            VersionFormat::Apk => apk::compare(a, b),
            VersionFormat::Pep440 => pep440::compare(a, b),
            VersionFormat::Rpm => rpm::compare(a, b),
            VersionFormat::Go => go::compare(a, b),
        }
    }

    /// The name Quay's security API shows in `VersionFormat`.
    pub fn quay_name(self) -> &'static str {
        match self {
            VersionFormat::Dpkg => "dpkg",
            VersionFormat::Apk => "apk",
            VersionFormat::Pep440 => "pep440",
            VersionFormat::Rpm => "rpm",
            // Clair reports Go modules with the semver format.
            VersionFormat::Go => "semver",
        }
    }
}

/// Compares `a` and `b` by the ordering `parse` gives them. A string that
/// does not parse sorts before every one that does (and among such
/// strings, bytewise), so a malformed installed version is never taken for
/// a fixed one.
pub(crate) fn compare_parsed<'a, V: Ord>(a: &'a str, b: &'a str, parse: impl Fn(&'a str) -> Option<V>) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}
