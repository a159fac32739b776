//! Debian version ordering (Debian Policy §5.6.12, dpkg's `verrevcmp`):
//! `[epoch:]upstream[-revision]`; epochs compare as integers, then the
//! upstream part, then the revision, each with the alternating
//! non-digit / digit algorithm where `~` sorts before everything (even the
//! end of the string) and letters sort before non-letters.

use std::cmp::Ordering;

/// A parsed Debian version. Parsing never fails on odd input: a missing
/// epoch is 0 and a missing revision is empty, as dpkg treats them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebVersion<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    pub revision: &'a str,
}

impl<'a> DebVersion<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => (e.parse::<u64>().ok()?, rest),
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return None;
        }
        Some(DebVersion { epoch, upstream, revision })
    }
}

/// The weight dpkg gives one non-digit character.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let a = a.as_bytes();
    let b = b.as_bytes();
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = if i < a.len() && !a[i].is_ascii_digit() { order(Some(a[i])) } else { order(None) };
            let bc = if j < b.len() && !b[j].is_ascii_digit() { order(Some(b[j])) } else { order(None) };
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Digit run, compared numerically without overflow: skip leading
        // zeros, then the longer run wins, then the first differing digit.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

/// Compares two Debian version strings. An unparsable version sorts
/// before every parsable one (and equal to another unparsable one).
pub fn compare(a: &str, b: &str) -> Ordering {
    match (DebVersion::parse(a), DebVersion::parse(b)) {
        (Some(a), Some(b)) => a.epoch.cmp(&b.epoch).then_with(|| verrevcmp(a.upstream, b.upstream)).then_with(|| verrevcmp(a.revision, b.revision)),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pairs `(a, op, b)`. Each was checked against dpkg itself with
    /// `dpkg --compare-versions A lt|eq|gt B` (dpkg 1.21.22, Debian 12),
    /// and `cmp_against_dpkg` re-checks them whenever dpkg is installed.
    /// Most come from the examples of Debian Policy §5.6.12 and dpkg's
    /// `lib/dpkg/t/t-version.c` cases (epochs, `~`, leading zeros, revisions),
    /// the rest are real bookworm/bullseye package versions.
    pub(crate) const TABLE: &[(&str, char, &str)] = &[
        ("1.0", '=', "1.0"),
        ("1.0", '<', "1.1"),
        ("1.0", '<', "1.0.1"),
        ("1.0~rc1", '<', "1.0"),
        ("1.0~~", '<', "1.0~"),
        ("1.0~~a", '<', "1.0~"),
        ("1.0~", '<', "1.0"),
        ("1.0", '<', "1.0+b1"),
        ("1.0", '<', "1.0a"),
        ("1.0a", '<', "1.0+"),
        ("1.0-1", '<', "1.0-2"),
        ("1.0-1", '<', "1.0-1.1"),
        ("1.0-1", '<', "1.0-1+deb12u1"),
        ("1.0-1~bpo12+1", '<', "1.0-1"),
        ("1:0.1", '>', "2.0"),
        ("0:1.0", '=', "1.0"),
        ("1:1.0", '>', "1.0"),
        ("2:1.0", '>', "1:9.9"),
        ("001.0", '=', "1.0"),
        ("1.001", '=', "1.1"),
        ("1.10", '>', "1.9"),
        ("1.09", '<', "1.10"),
        ("10", '>', "9"),
        ("1a", '<', "1b"),
        ("1a", '<', "1a1"),
        ("1.0-0", '=', "1.0-0"),
        ("1.0", '=', "1.0-0"),
        ("1.0-0", '<', "1.0-0.1"),
        ("0.9", '<', "1.0"),
        ("1.2.3", '<', "1.2.10"),
        ("1.2.3-4", '<', "1.2.3-10"),
        ("7.88.1-10+deb12u5", '<', "7.88.1-10+deb12u8"),
        ("7.88.1-10+deb12u8", '>', "7.88.1-10"),
        ("2.36-9+deb12u4", '<', "2.36-9+deb12u7"),
        ("2.36-9+deb12u10", '>', "2.36-9+deb12u9"),
        ("3.0.11-1~deb12u2", '<', "3.0.11-1"),
        ("3.0.11-1~deb12u2", '<', "3.0.13-1~deb12u1"),
        ("1:2.38.1-5+deb12u1", '>', "2.40-1"),
        ("1:2.38.1-5+deb12u1", '<', "1:2.38.1-5+deb12u2"),
        ("5.2.15-2+b2", '>', "5.2.15-2"),
        ("5.2.15-2+b2", '<', "5.2.15-2+b10"),
        ("1.1.1n-0+deb11u5", '<', "1.1.1w-0+deb11u1"),
        ("2.9.14+dfsg-1.3~deb12u1", '<', "2.9.14+dfsg-1.3"),
        ("2.9.14+dfsg-1.3", '>', "2.9.14-1.3"),
        ("252.22-1~deb12u1", '<', "252.30-1~deb12u2"),
        ("1.19.7-1", '<', "1.19.7-1+deb12u1"),
        ("9.2p1-2+deb12u3", '>', "9.2p1-2"),
        ("9.2p1-2", '>', "9.2-2"),
        ("9.2p1-2", '<', "9.3p1-1"),
        ("6.4-2", '<', "6.4+20230625-2"),
        ("1:1.2.13.dfsg-1", '>', "1.3-1"),
        ("1.2.13.dfsg-1", '>', "1.2.13.1-1"),
        ("2.2.1-1~", '<', "2.2.1-1"),
        ("0.0~git20230101", '<', "0.0"),
        ("1.0+dfsg", '>', "1.0"),
        ("1.0+dfsg", '<', "1.0.1"),
        ("1.0.0~beta1", '<', "1.0.0~beta2"),
        ("1.0.0~beta2", '<', "1.0.0~rc1"),
        ("4.19.260-1", '<', "6.1.76-1"),
        ("~", '<', ""),
    ];

    fn check(a: &str, op: char, b: &str) -> bool {
        let got = compare(a, b);
        match op {
            '<' => got == Ordering::Less,
            '=' => got == Ordering::Equal,
            '>' => got == Ordering::Greater,
            _ => unreachable!(),
        }
    }

    #[test]
    fn table_of_known_orderings() {
        assert!(TABLE.len() >= 50);
        for (a, op, b) in TABLE {
            // The last pair uses the empty string, which dpkg refuses as
            // a version; it documents that `~` sorts before the end.
            if b.is_empty() {
                assert_eq!(verrevcmp(a, b), Ordering::Less);
                continue;
            }
            assert!(check(a, *op, b), "{a} {op} {b}: got {:?}", compare(a, b));
            let rev = match op {
                '<' => '>',
                '>' => '<',
                o => *o,
            };
            assert!(check(b, rev, a), "{b} {rev} {a}");
        }
    }

    #[test]
    fn cmp_against_dpkg() {
        if std::process::Command::new("dpkg").arg("--version").output().is_err() {
            return;
        }
        for (a, op, b) in TABLE.iter().filter(|(_, _, b)| !b.is_empty()) {
            let word = match op {
                '<' => "lt",
                '=' => "eq",
                _ => "gt",
            };
            let st = std::process::Command::new("dpkg").args(["--compare-versions", a, word, b]).status().unwrap();
            assert!(st.success(), "dpkg disagrees with the table: {a} {word} {b}");
        }
    }

    proptest! {
        #[test]
        fn total_order(a in "[0-9]{1,2}(:)?[0-9a-z.+~]{1,6}(-[0-9a-z.+~]{1,4})?",
                       b in "[0-9]{1,2}(:)?[0-9a-z.+~]{1,6}(-[0-9a-z.+~]{1,4})?",
                       c in "[0-9]{1,2}(:)?[0-9a-z.+~]{1,6}(-[0-9a-z.+~]{1,4})?") {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn tilde_sorts_before_release(base in "[0-9]{1,3}(\\.[0-9]{1,3}){0,2}", pre in "[a-z0-9]{0,4}") {
            let tilde = format!("{base}~{pre}");
            prop_assert_eq!(compare(&tilde, &base), Ordering::Less);
            let plus = format!("{base}+{pre}");
            prop_assert_eq!(compare(&base, &plus), Ordering::Less);
        }

        #[test]
        fn epoch_dominates(e in 1u32..5, a in "[0-9]{1,3}\\.[0-9]{1,3}", b in "[0-9]{1,3}\\.[0-9]{1,3}") {
            let high = format!("{e}:{a}");
            prop_assert_eq!(compare(&high, &b), Ordering::Greater);
        }
    }
}
