//! PEP 440 version ordering (Python packages), written from the
//! specification (<https://peps.python.org/pep-0440/>, "Summary of
//! permitted suffixes and relative ordering" and "Normalization"):
//!
//! `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, compared by epoch,
//! then the release (trailing zeros do not count: 1.0 == 1.0.0), then the
//! pre-release (a < b < rc; a version with only a `.devN` sorts before
//! every pre-release of its release, a final release after them), then
//! the post-release (none first), then the dev-release (none last), then
//! the local label (none first; segments compared one by one, numbers
//! after strings, strings case-insensitively).
//!
//! Normalisation accepts what PEP 440 accepts: any case, a leading `v`,
//! `-`, `_` or `.` separators (or none) before pre, post and dev, the
//! spellings `alpha`, `beta`, `c`, `pre`, `preview`, `rev`, `r`, an
//! implicit 0, and the implicit post-release `1.0-1`.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Local {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    epoch: u64,
    release: Vec<u64>,
    /// (0 = a, 1 = b, 2 = rc, number)
    pre: Option<(u8, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
    local: Vec<Local>,
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn num(&mut self) -> Option<u64> {
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if start == self.i {
            return None;
        }
        // Absurdly long numbers saturate rather than fail: the order of
        // such versions among themselves is of no practical interest.
        Some(std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().unwrap_or(u64::MAX))
    }
    fn sep(&mut self) -> bool {
        if self.i < self.s.len() && matches!(self.s[self.i], b'.' | b'-' | b'_') {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// Consumes the longest of `words` found here.
    fn word(&mut self, words: &[&str]) -> Option<usize> {
        let rest = &self.s[self.i..];
        let (k, w) = words.iter().enumerate().filter(|(_, w)| rest.starts_with(w.as_bytes())).max_by_key(|(_, w)| w.len())?;
        self.i += w.len();
        Some(k)
    }
    /// An optional separator then a number, 0 when absent.
    fn implicit_num(&mut self) -> u64 {
        let save = self.i;
        self.sep();
        match self.num() {
            Some(n) => n,
            None => {
                self.i = save;
                0
            }
        }
    }
}

impl Version {
    pub fn parse(raw: &str) -> Option<Version> {
        let lower = raw.trim().to_ascii_lowercase();
        let s = lower.strip_prefix('v').unwrap_or(&lower);
        if s.is_empty() || !s.is_ascii() {
            return None;
        }
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (s, None),
        };
        let mut p = P { s: public.as_bytes(), i: 0 };
        let first = p.num()?;
        let mut epoch = 0;
        let mut release = vec![first];
        if p.i < p.s.len() && p.s[p.i] == b'!' {
            p.i += 1;
            epoch = first;
            release = vec![p.num()?];
        }
        while p.i + 1 < p.s.len() && p.s[p.i] == b'.' && p.s[p.i + 1].is_ascii_digit() {
            p.i += 1;
            release.push(p.num()?);
        }
        let mut v = Version { epoch, release, pre: None, post: None, dev: None, local: Vec::new() };
        // Pre-release.
        let save = p.i;
        p.sep();
        const PRE: [&str; 7] = ["a", "alpha", "b", "beta", "c", "rc", "pre"];
        match p.word(&[PRE.as_slice(), &["preview"]].concat()) {
            Some(k) => {
                let kind = match k {
                    0 | 1 => 0,
                    2 | 3 => 1,
                    _ => 2,
                };
                v.pre = Some((kind, p.implicit_num()));
            }
            None => p.i = save,
        }
        // Post-release: `.post1`, `-r1`, `rev`, or the implicit `-1`.
        let save = p.i;
        if p.i < p.s.len() && p.s[p.i] == b'-' && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit) {
            p.i += 1;
            v.post = p.num();
        } else {
            p.sep();
            match p.word(&["post", "rev", "r"]) {
                Some(_) => v.post = Some(p.implicit_num()),
                None => p.i = save,
            }
        }
        // Dev-release.
        let save = p.i;
        p.sep();
        match p.word(&["dev"]) {
            Some(_) => v.dev = Some(p.implicit_num()),
            None => p.i = save,
        }
        if p.i != p.s.len() {
            return None;
        }
        if let Some(l) = local {
            for seg in l.split(['.', '-', '_']) {
                if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return None;
                }
                v.local.push(match seg.bytes().all(|b| b.is_ascii_digit()) {
                    true => Local::Num(seg.parse().unwrap_or(u64::MAX)),
                    false => Local::Str(seg.to_string()),
                });
            }
        }
        Some(v)
    }

    fn release_cmp(&self, o: &Self) -> Ordering {
        let n = self.release.len().max(o.release.len());
        (0..n).map(|i| self.release.get(i).unwrap_or(&0).cmp(o.release.get(i).unwrap_or(&0))).find(|c| c.is_ne()).unwrap_or(Ordering::Equal)
    }

    /// The pre-release key: a dev-only version sorts before any
    /// pre-release, a final (or post) release after all of them.
    fn pre_key(&self) -> (i8, u8, u64) {
        match (self.pre, self.post, self.dev) {
            (Some((k, n)), _, _) => (0, k, n),
            (None, None, Some(_)) => (-1, 0, 0),
            (None, _, _) => (1, 0, 0),
        }
    }

    fn local_cmp(&self, o: &Self) -> Ordering {
        for (a, b) in self.local.iter().zip(&o.local) {
            let c = match (a, b) {
                (Local::Num(x), Local::Num(y)) => x.cmp(y),
                (Local::Str(x), Local::Str(y)) => x.cmp(y),
                (Local::Num(_), Local::Str(_)) => Ordering::Greater,
                (Local::Str(_), Local::Num(_)) => Ordering::Less,
            };
            if c.is_ne() {
                return c;
            }
        }
        self.local.len().cmp(&o.local.len())
    }
}

impl Ord for Version {
    fn cmp(&self, o: &Self) -> Ordering {
        self.epoch
            .cmp(&o.epoch)
            .then_with(|| self.release_cmp(o))
            .then_with(|| self.pre_key().cmp(&o.pre_key()))
            // No post-release sorts first.
            .then_with(|| self.post.map(|n| n as i128).unwrap_or(-1).cmp(&o.post.map(|n| n as i128).unwrap_or(-1)))
            // No dev-release sorts last.
            .then_with(|| self.dev.map(|n| n as i128).unwrap_or(i128::MAX).cmp(&o.dev.map(|n| n as i128).unwrap_or(i128::MAX)))
            .then_with(|| self.local_cmp(o))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Compares two PEP 440 versions. A string that is not a valid version
/// sorts before every valid one (and among such strings, bytewise), so a
/// malformed installed version is never taken for a fixed one.
pub fn compare(a: &str, b: &str) -> Ordering {
    super::compare_parsed(a, b, Version::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    /// `VERSIONS` of pypa/packaging's `tests/test_version.py` (commit
    /// 0345ccd3d1e5b0e14b84de4fb6bca0b82f7145e3), "in the correct sorting
    /// order": each adjacent pair is a table row (91 pairs).
    const SORTED: &[&str] = &[
        "1.0.dev0",
        "1.0.dev456",
        "1.0.dev456+local",
        "1.0a0",
        "1.0a0.post0.dev0",
        "1.0a0.post0",
        "1.0a1.dev1",
        "1.0a1.dev1+local",
        "1.0a1",
        "1.0a1+local",
        "1.0b0",
        "1.0b1.dev456",
        "1.0b2",
        "1.0b2.post345.dev456",
        "1.0b2.post345",
        "1.0b2-346",
        "1.0rc0",
        "1.0rc1.dev1",
        "1.0c1",
        "1.0rc2",
        "1.0",
        "1.0.post0.dev0",
        "1.0.post0",
        "1.0.post456.dev34",
        "1.0.post456",
        "1.0.post456+local",
        "1.0.1.dev1",
        "1.0.1a1",
        "1.0.1",
        "1.0.1+local",
        "1.0.1.post1",
        "1.1.dev1",
        "1.2+a",
        "1.2+abc",
        "1.2+abcdef",
        "1.2+def",
        "1.2+0",
        "1.2+1",
        "1.2+1.abc",
        "1.2+1.1",
        "1.2+1.1.0",
        "1.2+2",
        "1.2+123",
        "1.2+123456",
        "1.2.r32+123456",
        "1.2.rev33+123456",
        "1!1.0.dev0",
        "1!1.0.dev456",
        "1!1.0.dev456+local",
        "1!1.0a0",
        "1!1.0a0.post0.dev0",
        "1!1.0a0.post0",
        "1!1.0a1.dev1",
        "1!1.0a1.dev1+local",
        "1!1.0a1",
        "1!1.0a1+local",
        "1!1.0b0",
        "1!1.0b1.dev456",
        "1!1.0b2",
        "1!1.0b2.post345.dev456",
        "1!1.0b2.post345",
        "1!1.0b2-346",
        "1!1.0rc0",
        "1!1.0rc1.dev1",
        "1!1.0c1",
        "1!1.0rc2",
        "1!1.0",
        "1!1.0.post0.dev0",
        "1!1.0.post0",
        "1!1.0.post456.dev34",
        "1!1.0.post456",
        "1!1.0.post456+local",
        "1!1.0.1.dev1",
        "1!1.0.1a1",
        "1!1.0.1",
        "1!1.0.1+local",
        "1!1.0.1.post1",
        "1!1.1.dev1",
        "1!1.2+a",
        "1!1.2+abc",
        "1!1.2+abcdef",
        "1!1.2+def",
        "1!1.2+0",
        "1!1.2+1",
        "1!1.2+1.abc",
        "1!1.2+1.1",
        "1!1.2+1.1.0",
        "1!1.2+2",
        "1!1.2+123",
        "1!1.2+123456",
        "1!1.2.r32+123456",
        "1!1.2.rev33+123456",
    ];

    /// `test_normalized_versions` of the same file: each spelling equals
    /// its normal form.
    const EQUAL: &[(&str, &str)] = &[
        ("1.0dev", "1.0.dev0"),
        ("1.0-dev1", "1.0.dev1"),
        ("1.0DEV", "1.0.dev0"),
        ("1.0.a", "1.0a0"),
        ("1.0-a1", "1.0a1"),
        ("1.0alpha", "1.0a0"),
        ("1.0.ALPHA1", "1.0a1"),
        ("1.0b", "1.0b0"),
        ("1.0-beta1", "1.0b1"),
        ("1.0.B1", "1.0b1"),
        ("1.0c", "1.0rc0"),
        ("1.0.c1", "1.0rc1"),
        ("1.0-RC", "1.0rc0"),
        ("1.0rc1", "1.0c1"),
        ("1.0post", "1.0.post0"),
        ("1.0-post1", "1.0.post1"),
        ("1.0r", "1.0.post0"),
        ("1.0rev", "1.0.post0"),
        ("1.0.r1", "1.0.post1"),
        ("1.0-5", "1.0.post5"),
        ("1.0-r5", "1.0.post5"),
        ("1.0-rev5", "1.0.post5"),
        ("1.0+AbC", "1.0+abc"),
        ("1.01", "1.1"),
        ("1.0a05", "1.0a5"),
        ("1.0c056", "1.0rc56"),
        ("1.0.post000", "1.0.post0"),
        ("1.1.dev09000", "1.1.dev9000"),
        ("00!1.2", "1.2"),
        ("0100!0.0", "100!0.0"),
        ("v1.0", "1.0"),
        ("   v1.0\t\n", "1.0"),
    ];

    /// `test_invalid_versions` of the same file (the ASCII ones).
    const INVALID: &[&str] = &[
        "french toast",
        "1.0+a+",
        "1.0++",
        "1.0+_foobar",
        "1.0+foo&asd",
        "1.0+1+1",
        "1. 0",
        "1 .0",
        "1.0 a1",
        "1.0a 1",
        ".",
        "..",
        "1..0",
        "1.0.",
        ".1.0",
        "1..2.3",
    ];

    #[test]
    fn packaging_sorted_versions() {
        let mut rows = 0;
        for w in SORTED.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            assert_eq!(compare(w[1], w[0]), Ordering::Greater, "{} > {}", w[1], w[0]);
            rows += 1;
        }
        // And every pair, not only neighbours, is in order.
        for (i, a) in SORTED.iter().enumerate() {
            for b in &SORTED[i + 1..] {
                assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
            }
        }
        for (a, b) in EQUAL {
            assert_eq!(compare(a, b), Ordering::Equal, "{a:?} == {b}");
            rows += 1;
        }
        assert!(rows >= 50);
        for bad in INVALID {
            assert!(Version::parse(bad).is_none(), "{bad:?} is not a version");
        }
    }

    #[test]
    fn trailing_zeros_and_tricky_cases() {
        assert_eq!(compare("1.0", "1.0.0"), Ordering::Equal);
        assert_eq!(compare("1.26.12", "1.26.17"), Ordering::Less);
        assert_eq!(compare("1.26.9", "1.26.12"), Ordering::Less);
        assert_eq!(compare("2.0.0a1", "1.26.99"), Ordering::Greater);
        assert_eq!(compare("1.0.dev1", "1.0a1"), Ordering::Less);
        assert_eq!(compare("1.0.post1.dev1", "1.0.post1"), Ordering::Less);
        assert_eq!(compare("1.0.post1.dev1", "1.0"), Ordering::Greater);
    }

    /// Cross-check against the `packaging` library itself when Python has
    /// it (as the dpkg ordering is checked against dpkg).
    #[test]
    fn against_python_packaging() {
        let pairs: Vec<(String, String)> = {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let s = version_strategy();
            (0..300).map(|_| (s.new_tree(&mut runner).unwrap().current(), s.new_tree(&mut runner).unwrap().current())).collect()
        };
        let script =
            "import sys,json\nfrom packaging.version import Version\nfor a,b in json.load(sys.stdin):\n  x,y=Version(a),Version(b)\n  print((x>y)-(x<y))\n";
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(mut child) = child else { return };
        serde_json::to_writer(child.stdin.take().unwrap(), &pairs).unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            return; // no packaging module here
        }
        let got: Vec<i32> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(got.len(), pairs.len());
        for ((a, b), want) in pairs.iter().zip(got) {
            assert_eq!(compare(a, b) as i32, want, "{a} vs {b}");
        }
    }

    fn version_strategy() -> impl Strategy<Value = String> {
        "([1-3]!)?[0-9]{1,2}(\\.[0-9]{1,2}){0,3}((a|b|rc|alpha|c)[0-9]?)?(\\.post[0-9])?(\\.dev[0-9])?(\\+[a-z0-9]{1,3}(\\.[0-9]{1,2})?)?"
    }

    proptest! {
        #[test]
        fn total_order(a in version_strategy(), b in version_strategy(), c in version_strategy()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn suffix_ladder(rel in "[0-9]{1,2}(\\.[0-9]{1,2}){0,2}", n in 0u32..20) {
            // dev < a < b < rc < final < post, for any release.
            let ladder = [format!("{rel}.dev{n}"), format!("{rel}a{n}"), format!("{rel}b{n}"), format!("{rel}rc{n}"), rel.clone(), format!("{rel}.post{n}")];
            for w in ladder.windows(2) {
                prop_assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            }
            prop_assert_eq!(compare(&rel, &format!("{rel}.0")), Ordering::Equal);
            prop_assert_eq!(compare(&rel, &format!("{rel}+local")), Ordering::Less);
        }
    }
}
