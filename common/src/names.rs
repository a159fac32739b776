//! Names users and operators type: regions and repository names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("region {0:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter")]
    BadRegion(String),
    #[error("repository name {0:?} is longer than 255 characters")]
    RepoTooLong(String),
    #[error("repository name {0:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*")]
    BadRepo(String),
}

/// A region: where a node runs, as the operator names it (`eu-west`, `us1`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Region(String);

impl Region {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Region {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Region(s.to_string()))
        } else {
            Err(NameError::BadRegion(s.to_string()))
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository name as the OCI distribution spec defines it: path
/// components of lowercase alphanumerics joined by single separators.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the namespace (user or organization).
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 255 {
            return Err(NameError::RepoTooLong(s.to_string()));
        }
        if s.split('/').all(valid_component) {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::BadRepo(s.to_string()))
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "library/ubuntu", "my-org/app.v2/x__y", "a--b", "0/1"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in ["", "A", "a//b", "/a", "a/", "../etc", "a/../b", "a_-b", "a___b", "-a", "a.", "a b"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert!(matches!("a".repeat(256).parse::<RepoName>(), Err(NameError::RepoTooLong(_))));
        assert_eq!("org/app".parse::<RepoName>().unwrap().namespace(), "org");
    }

    #[test]
    fn regions() {
        assert!("eu-west-1".parse::<Region>().is_ok());
        for bad in ["", "EU", "1eu", "eu west", &"a".repeat(64)] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One component as the spec writes it: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
        fn component() -> impl Strategy<Value = String> {
            "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}"
        }

        /// The spec's component pattern, written out differently: split on
        /// separator runs and check each run and what it joins.
        fn spec_component(c: &str) -> bool {
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let b = c.as_bytes();
            let mut runs = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let start = i;
                let a = alnum(b[i]);
                while i < b.len() && alnum(b[i]) == a {
                    i += 1;
                }
                runs.push((a, &c[start..i]));
            }
            runs.first().is_some_and(|r| r.0)
                && runs.last().is_some_and(|r| r.0)
                && runs.iter().filter(|r| !r.0).all(|(_, s)| *s == "." || *s == "_" || *s == "__" || s.bytes().all(|x| x == b'-'))
        }

        // Case count: proptest's default (256), or `PROPTEST_CASES=N` for a long run.
        proptest! {
            #[test]
            fn any_text_is_a_name_or_refused_without_panicking(raw in ".{0,300}", near in "[a-z0-9._/A-Z-]{0,40}") {
                for s in [&raw, &near] {
                    let spec = s.len() <= 255 && s.split('/').all(spec_component);
                    prop_assert_eq!(s.parse::<RepoName>().is_ok(), spec, "{:?}", s);
                    let _ = s.parse::<Region>();
                }
            }

            #[test]
            fn valid_names_are_accepted_and_print_as_parsed(parts in proptest::collection::vec(component(), 1..6)) {
                let s = parts.join("/");
                prop_assume!(s.len() <= 255);
                let n: RepoName = s.parse().unwrap();
                prop_assert_eq!(n.to_string(), s.clone());
                prop_assert_eq!(n.to_string().parse::<RepoName>().unwrap(), n.clone());
                prop_assert_eq!(n.namespace(), parts[0].as_str());
            }

            #[test]
            fn valid_regions_are_accepted_and_print_as_parsed(s in "[a-z][a-z0-9-]{0,62}") {
                let r: Region = s.parse().unwrap();
                prop_assert_eq!(r.to_string(), s);
            }
        }
    }
}
