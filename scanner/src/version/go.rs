//! Go module versions: Semantic Versioning 2.0.0 precedence
//! (<https://semver.org/#spec-item-11>) on Go's spelling of it
//! (<https://go.dev/ref/mod#versions>):
//!
//! - an optional `v` prefix (Go requires it, OSV's Go ecosystem omits it:
//!   both are read, so `v1.2.3` equals `1.2.3`); Go's shorthands `v1` and
//!   `v1.2` mean `v1.0.0` and `v1.2.0`;
//! - major, minor, patch compared numerically; a version with a
//!   pre-release sorts before the same version without one; pre-release
//!   identifiers (dot-separated) compare one by one, numeric ones
//!   numerically and before alphanumeric ones, alphanumeric ones in ASCII
//!   order, and a longer list wins when all before are equal;
//! - build metadata (`+incompatible`, `+meta`) does not take part.
//!
//! Pseudo-versions (`v0.0.0-20200101000000-abcdef123456`,
//! `v1.2.4-0.20200101000000-abcdef123456`,
//! `v1.2.3-pre.0.20200101000000-abcdef123456`) are ordinary pre-releases
//! under these rules and sort by their timestamp, as Go designed them to.
//!
//! A string that is not a valid version sorts before every valid one (and
//! such strings among themselves bytewise), like the other orderings here.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident<'a> {
    Num(u64),
    Alnum(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    core: [u64; 3],
    pre: Vec<Ident<'a>>,
}

fn number(s: &str) -> Option<u64> {
    // No leading zeros (semver item 2), digits only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

impl<'a> Version<'a> {
    pub fn parse(raw: &'a str) -> Option<Version<'a>> {
        let s = raw.strip_prefix('v').unwrap_or(raw);
        let s = match s.split_once('+') {
            Some((v, build)) => {
                if build.split('.').any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
                    return None;
                }
                v
            }
            None => s,
        };
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() > 3 || (parts.len() < 3 && (pre.is_some() || raw.contains('+'))) {
            // Go accepts the shorthands only bare (`v1`, `v1.2`).
            return None;
        }
        let mut nums = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            nums[i] = number(p)?;
        }
        let mut ids = Vec::new();
        if let Some(pre) = pre {
            for id in pre.split('.') {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return None;
                }
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    ids.push(Ident::Num(number(id)?));
                } else {
                    ids.push(Ident::Alnum(id));
                }
            }
        }
        Some(Version { core: nums, pre: ids })
    }
}

impl Ord for Ident<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        match (self, o) {
            (Ident::Num(a), Ident::Num(b)) => a.cmp(b),
            (Ident::Num(_), Ident::Alnum(_)) => Ordering::Less,
            (Ident::Alnum(_), Ident::Num(_)) => Ordering::Greater,
            (Ident::Alnum(a), Ident::Alnum(b)) => a.as_bytes().cmp(b.as_bytes()),
        }
    }
}

impl PartialOrd for Ident<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.core.cmp(&o.core).then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // Lexicographic over identifiers; a prefix sorts first.
            (false, false) => self.pre.cmp(&o.pre),
        })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Compares two Go module (or Go toolchain, in OSV's `stdlib` form)
/// versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    super::compare_parsed(a, b, Version::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Semantic Versioning 2.0.0, item 11: "Example: 1.0.0-alpha <
    /// 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta < 1.0.0-beta.2 <
    /// 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0", and "1.0.0 < 2.0.0 < 2.1.0 <
    /// 2.1.1"; then pseudo-versions as <https://go.dev/ref/mod#pseudo-versions>
    /// describes them: each of the three forms sorts after its base and
    /// before the next release.
    const SORTED: &[&str] = &[
        "v0.0.0-20191109021931-daa7c04131f5",
        "v0.0.0-20200101000000-abcdef123456",
        "v0.0.0-20210101000000-000000000000",
        "v0.1.0",
        "v1.0.0-alpha",
        "v1.0.0-alpha.1",
        "v1.0.0-alpha.beta",
        "v1.0.0-beta",
        "v1.0.0-beta.2",
        "v1.0.0-beta.11",
        "v1.0.0-rc.1",
        "v1.0.0-rc.1.0.20200101000000-abcdef123456",
        "v1.0.0",
        "v1.0.1-0.20200101000000-abcdef123456",
        "v1.0.1-0.20200202000000-abcdef123456",
        "v1.0.1",
        "v2.0.0",
        "v2.1.0",
        "v2.1.1",
        "v2.1.10",
        "v10.0.0",
    ];

    #[test]
    fn semver_spec_and_pseudo_versions() {
        for (i, a) in SORTED.iter().enumerate() {
            for (j, b) in SORTED.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn prefix_build_metadata_and_shorthands() {
        for (a, b) in [
            ("v1.2.3", "1.2.3"),
            ("v2.0.0+incompatible", "v2.0.0"),
            ("2.0.0+incompatible", "v2.0.0"),
            ("v1.0.0+build.1", "v1.0.0+build.2"),
            ("v1", "v1.0.0"),
            ("v1.2", "v1.2.0"),
            ("v0.0.0-20200101000000-abcdef123456+incompatible", "v0.0.0-20200101000000-abcdef123456"),
        ] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} == {b}");
        }
        // OSV stdlib form against the toolchain's versions.
        assert_eq!(compare("1.19.8", "1.20.11"), Ordering::Less);
        assert_eq!(compare("1.21.0-rc.2", "1.21.0"), Ordering::Less);
        assert_eq!(compare("1.21.0-rc.2", "1.20.14"), Ordering::Greater);
    }

    #[test]
    fn invalid_versions_sort_first() {
        for bad in ["", "v", "1.2.3.4", "v01.2.3", "v1.2.3-", "v1.2.3-01", "v1.2-pre", "(devel)", "v1.2.3-a..b", "vX.Y.Z", "v1.2.3+"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
            assert_eq!(compare(bad, "v0.0.0-0"), Ordering::Less, "{bad}");
        }
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        "v?(0|[1-9][0-9]?)\\.(0|[1-9])\\.(0|[1-9][0-9]?)(-((0|[1-9][0-9]?)|[a-z][a-z0-9-]{0,3})(\\.((0|[1-9])|[a-z]{1,3})){0,2})?(\\+[a-z0-9]{1,4})?"
    }

    proptest! {
        #[test]
        fn total_order(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            prop_assert!(Version::parse(&a).is_some(), "{}", a);
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn prerelease_before_release_and_pseudo_after_base(maj in 0u64..20, min in 0u64..20, pat in 0u64..20, ts in 19700101000000u64..21000101000000) {
            let rel = format!("v{maj}.{min}.{pat}");
            let next = format!("v{maj}.{min}.{}", pat + 1);
            let pseudo = format!("v{maj}.{min}.{}-0.{ts}-abcdef123456", pat + 1);
            prop_assert_eq!(compare(&format!("{rel}-rc.1"), &rel), Ordering::Less);
            prop_assert_eq!(compare(&rel, &pseudo), Ordering::Less);
            prop_assert_eq!(compare(&pseudo, &next), Ordering::Less);
            prop_assert_eq!(compare(&format!("{maj}.{min}.{pat}"), &rel), Ordering::Equal);
        }
    }
}
