//! rpm's version ordering (`rpmvercmp`), written from rpm's documented
//! algorithm (rpm.org "RPM version comparison"; `rpmio/rpmvercmp.c`'s
//! behaviour as its tests pin it):
//!
//! Both strings are walked in segments. Characters other than ASCII
//! letters, digits, `~` and `^` only separate segments. A `~` sorts
//! before anything, even the end of the string (`1.0~rc1 < 1.0`); a `^`
//! sorts after the end of the string but before any other segment
//! (`1.0 < 1.0^git1 < 1.0.1`). A segment is a run of digits or a run of
//! letters, whichever the first string has next; digit runs compare as
//! numbers (leading zeros ignored), letter runs bytewise, and a number
//! beats letters. When one string runs out, the longer one is newer.
//!
//! [`compare`] orders full `[epoch:]version[-release]` strings: epoch
//! (missing is 0) first, then version, then release.

use std::cmp::Ordering;

fn is_sep(c: u8) -> bool {
    !c.is_ascii_alphanumeric() && c != b'~' && c != b'^'
}

/// `rpmvercmp` of one version (or one release) string.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while i < a.len() && is_sep(a[i]) {
            i += 1;
        }
        while j < b.len() && is_sep(b[j]) {
            j += 1;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some(b'~') || y == Some(b'~') {
            match (x == Some(b'~'), y == Some(b'~')) {
                (true, true) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (true, false) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
        }
        if x == Some(b'^') || y == Some(b'^') {
            match (x, y) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(b'^'), Some(b'^')) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (Some(b'^'), _) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
        }
        if x.is_none() || y.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let take = |s: &[u8], mut k: usize| {
            let start = k;
            while k < s.len() && if numeric { s[k].is_ascii_digit() } else { s[k].is_ascii_alphabetic() } {
                k += 1;
            }
            (start, k)
        };
        let (s1, e1) = take(a, i);
        let (s2, e2) = take(b, j);
        i = e1;
        j = e2;
        if s2 == e2 {
            // Different kinds of segment: a number is newer than letters.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let (mut x, mut y) = (&a[s1..e1], &b[s2..e2]);
        let c = if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if c.is_ne() {
            return c;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// Splits `[epoch:]version[-release]`.
fn evr(s: &str) -> (u64, &str, Option<&str>) {
    let (epoch, rest) = match s.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(u64::MAX), r),
        _ => (0, s),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) => (epoch, v, Some(r)),
        None => (epoch, rest, None),
    }
}

/// Orders two `[epoch:]version[-release]` strings as rpm does. A release
/// missing on either side is not compared (as rpm compares a dependency
/// without one).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = evr(a);
    let (eb, vb, rb) = evr(b);
    ea.cmp(&eb).then_with(|| vercmp(va, vb)).then_with(|| match (ra, rb) {
        (Some(x), Some(y)) => vercmp(x, y),
        _ => Ordering::Equal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// rpm's own `tests/rpmvercmp.at` (rpm-software-management/rpm,
    /// commit 7f3fdf6868d72fbdef3386345ff39b3744fa4b14): every
    /// `RPMVERCMP(a, b, result)` line.
    const RPMVERCMP_AT: &[(&str, &str, i8)] = &[
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1a", 0),
        ("2.0.1a", "2.0.1", 1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p1", 0),
        ("5.5p1", "5.5p2", -1),
        ("5.5p2", "5.5p1", 1),
        ("5.5p10", "5.5p10", 0),
        ("5.5p1", "5.5p10", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("10.1xyz", "10xyz", 1),
        ("xyz10", "xyz10", 0),
        ("xyz10", "xyz10.1", -1),
        ("xyz10.1", "xyz10", 1),
        ("xyz.4", "xyz.4", 0),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("xyz.4", "2", -1),
        ("2", "xyz.4", 1),
        ("5.5p2", "5.6p1", -1),
        ("5.6p1", "5.5p2", 1),
        ("5.6p1", "6.5p1", -1),
        ("6.5p1", "5.6p1", 1),
        ("6.0.rc1", "6.0", 1),
        ("6.0", "6.0.rc1", -1),
        ("10b2", "10a1", 1),
        ("10a2", "10b2", -1),
        ("1.0aa", "1.0aa", 0),
        ("1.0a", "1.0aa", -1),
        ("1.0aa", "1.0a", 1),
        ("10.0001", "10.0001", 0),
        ("10.0001", "10.1", 0),
        ("10.1", "10.0001", 0),
        ("10.0001", "10.0039", -1),
        ("10.0039", "10.0001", 1),
        ("4.999.9", "5.0", -1),
        ("5.0", "4.999.9", 1),
        ("20101121", "20101121", 0),
        ("20101121", "20101122", -1),
        ("20101122", "20101121", 1),
        ("2_0", "2_0", 0),
        ("2.0", "2_0", 0),
        ("2_0", "2.0", 0),
        ("a", "a", 0),
        ("a+", "a+", 0),
        ("a+", "a_", 0),
        ("a_", "a+", 0),
        ("+a", "+a", 0),
        ("+a", "_a", 0),
        ("_a", "+a", 0),
        ("+_", "+_", 0),
        ("_+", "+_", 0),
        ("_+", "_+", 0),
        ("+", "_", 0),
        ("_", "+", 0),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc2", "1.0~rc1", 1),
        ("1.0~rc1~git123", "1.0~rc1~git123", 0),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0~rc1", "1.0~rc1~git123", 1),
        ("1.0^", "1.0^", 0),
        ("1.0^", "1.0", 1),
        ("1.0", "1.0^", -1),
        ("1.0^git1", "1.0^git1", 0),
        ("1.0^git1", "1.0", 1),
        ("1.0", "1.0^git1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git2", "1.0^git1", 1),
        ("1.0^git1", "1.01", -1),
        ("1.01", "1.0^git1", 1),
        ("1.0^20160101", "1.0^20160101", 0),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0.1", "1.0^20160101", 1),
        ("1.0^20160101^git1", "1.0^20160101^git1", 0),
        ("1.0^20160102", "1.0^20160101^git1", 1),
        ("1.0^20160101^git1", "1.0^20160102", -1),
        ("1.0~rc1^git1", "1.0~rc1^git1", 0),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc1^git1", -1),
        ("1.0^git1~pre", "1.0^git1~pre", 0),
        ("1.0^git1", "1.0^git1~pre", 1),
        ("1.0^git1~pre", "1.0^git1", -1),
    ];

    #[test]
    fn rpm_tests_rpmvercmp_at() {
        assert!(RPMVERCMP_AT.len() >= 50);
        for (a, b, want) in RPMVERCMP_AT {
            assert_eq!(vercmp(a, b) as i8, *want, "rpmvercmp({a}, {b})");
        }
    }

    #[test]
    fn epoch_version_release() {
        assert_eq!(compare("1:1.0-1", "2.0-1"), Ordering::Greater);
        assert_eq!(compare("3.0.7-24.el9", "3.0.7-25.el9"), Ordering::Less);
        assert_eq!(compare("1:3.0.7-27.el9", "1:3.0.7-27.el9_4"), Ordering::Less);
        assert_eq!(compare("2.34-100.el9_4.2", "2.34-100.el9"), Ordering::Greater);
        assert_eq!(compare("0:1.2-3", "1.2-3"), Ordering::Equal);
    }

    proptest! {
        #[test]
        fn antisymmetric_and_transitive(a in "[0-9a-z.~^_+]{0,8}", b in "[0-9a-z.~^_+]{0,8}", c in "[0-9a-z.~^]{0,8}") {
            prop_assert_eq!(vercmp(&a, &b), vercmp(&b, &a).reverse());
            if vercmp(&a, &b) == Ordering::Less && vercmp(&b, &c) == Ordering::Less {
                prop_assert_eq!(vercmp(&a, &c), Ordering::Less);
            }
        }

        #[test]
        fn tilde_before_caret_before_more(base in "[1-9][0-9]{0,2}(\\.[0-9]{1,3}){0,2}", tag in "[a-z]{1,4}[0-9]{0,3}") {
            let ladder = [format!("{base}~{tag}"), base.clone(), format!("{base}^{tag}"), format!("{base}.1")];
            for w in ladder.windows(2) {
                prop_assert_eq!(vercmp(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
            }
        }
    }
}
