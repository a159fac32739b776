//! apk-tools version ordering (Alpine): `digits(.digits)*[letter]
//! (_suffix[digits])*[~hash][-rN]`. Components are compared token by
//! token: numbers (the first as an integer; later ones starting with `0`
//! as decimal fractions, i.e. as strings), a letter, suffixes (`_alpha` <
//! `_beta` < `_pre` < `_rc` < none < `_cvs` < `_svn` < `_git` < `_hg` <
//! `_p`), then the `-rN` revision. When one version has a token where the
//! other has a different kind (or ends), the longer one is newer unless
//! its token is a pre-release suffix. Written from apk-tools'
//! documented behaviour and checked against its `test/version.data`.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    Revision,
    End,
    Invalid,
}

const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value<'a> {
    None,
    /// A number; `fraction` for a later component with a leading zero.
    Num {
        digits: &'a str,
        fraction: bool,
    },
    Int(i64),
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Num { digits: x, fraction: fx }, Value::Num { digits: y, fraction: fy }) => {
            if *fx || *fy {
                x.cmp(y)
            } else {
                cmp_num(x, y)
            }
        }
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

struct Tokens<'a> {
    s: &'a str,
    /// What may come next, as apk-tools' tokenizer tracks it.
    next: Kind,
    first: bool,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { s, next: Kind::Digit, first: true }
    }

    fn take_digits(&mut self) -> &'a str {
        let n = self.s.bytes().take_while(u8::is_ascii_digit).count();
        let (d, rest) = self.s.split_at(n);
        self.s = rest;
        d
    }

    /// The next token and its value.
    fn next_token(&mut self) -> (Kind, Value<'a>) {
        if self.s.is_empty() {
            return (Kind::End, Value::None);
        }
        let kind = self.next;
        let value = match kind {
            Kind::Digit => {
                let d = self.take_digits();
                if d.is_empty() {
                    return (Kind::Invalid, Value::None);
                }
                let fraction = !self.first && d.starts_with('0') && d.len() > 1;
                self.first = false;
                Value::Num { digits: d, fraction }
            }
            Kind::Letter => {
                let c = self.s.as_bytes()[0];
                self.s = &self.s[1..];
                Value::Int(c as i64)
            }
            Kind::Suffix => {
                let n = self.s.bytes().take_while(u8::is_ascii_lowercase).count();
                let (word, rest) = self.s.split_at(n);
                self.s = rest;
                if let Some(i) = PRE.iter().position(|p| *p == word) {
                    Value::Int(i as i64 - PRE.len() as i64)
                } else if let Some(i) = POST.iter().position(|p| *p == word) {
                    Value::Int(i as i64 + 1)
                } else {
                    return (Kind::Invalid, Value::None);
                }
            }
            Kind::SuffixNo | Kind::Revision => {
                let d = self.take_digits();
                if d.is_empty() {
                    return (Kind::Invalid, Value::None);
                }
                Value::Num { digits: d, fraction: false }
            }
            Kind::End | Kind::Invalid => return (Kind::Invalid, Value::None),
        };
        // What the separator that follows allows next.
        let b = self.s.as_bytes();
        self.next = match (kind, b.first()) {
            (_, None) => Kind::End,
            (Kind::Digit, Some(b'.')) => {
                self.s = &self.s[1..];
                Kind::Digit
            }
            (Kind::Digit, Some(c)) if c.is_ascii_lowercase() => Kind::Letter,
            (Kind::Digit | Kind::Letter | Kind::SuffixNo, Some(b'_')) => {
                self.s = &self.s[1..];
                Kind::Suffix
            }
            (Kind::Suffix, Some(c)) if c.is_ascii_digit() => Kind::SuffixNo,
            (Kind::Suffix, Some(b'_')) => {
                self.s = &self.s[1..];
                Kind::Suffix
            }
            (Kind::Digit | Kind::Letter | Kind::Suffix | Kind::SuffixNo, Some(b'-')) if self.s.starts_with("-r") => {
                self.s = &self.s[2..];
                Kind::Revision
            }
            (_, Some(b'~')) => {
                // A commit hash: not ordered, skip to a revision if any.
                match self.s.find("-r") {
                    Some(i) => {
                        self.s = &self.s[i + 2..];
                        Kind::Revision
                    }
                    None => {
                        self.s = "";
                        Kind::End
                    }
                }
            }
            _ => Kind::Invalid,
        };
        (kind, value)
    }
}

/// Compares two apk versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut ta, mut tb) = (Tokens::new(a), Tokens::new(b));
    loop {
        let (ka, va) = ta.next_token();
        let (kb, vb) = tb.next_token();
        if ka == Kind::Invalid || kb == Kind::Invalid {
            // apk-tools sorts what it cannot parse as strings.
            if ka == kb {
                return ta.s.cmp(tb.s);
            }
            return if ka == Kind::Invalid { Ordering::Less } else { Ordering::Greater };
        }
        if ka == kb {
            if ka == Kind::End {
                return Ordering::Equal;
            }
            match cmp_value(&va, &vb) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        // Different kinds: a pre-release suffix is older than anything;
        // otherwise the version that goes on (a lower kind) is newer.
        if ka == Kind::Suffix && matches!(va, Value::Int(v) if v < 0) {
            return Ordering::Less;
        }
        if kb == Kind::Suffix && matches!(vb, Value::Int(v) if v < 0) {
            return Ordering::Greater;
        }
        return kb.cmp(&ka);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lines of apk-tools' `test/version.data` (alpinelinux/apk-tools),
    /// as they are there: `A op B`.
    const VERSION_DATA: &str = "\
2.34 > 0.1.0_alpha
23_foo > 4_beta
1.0 < 1.0bc
0.1.0_alpha = 0.1.0_alpha
0.1.0_alpha < 0.1.3_alpha
0.1.0_alpha2 > 0.1.0_alpha
0.1.0_alpha < 2.2.39-r1
2.2.39-r1 > 1.0.4-r3
1.0.4-r3 < 1.0.4-r4
1.1 > 1.1_alpha1
1.2.1 > 1.2
1.2 < 1.3_alpha
1.3_alpha < 1.3_alpha2
0.7.0 < 0.8_beta1
0.8_beta1 < 0.8_beta2
3.10.18-r1 > 2.3.0b-r1
2.3.0b-r1 < 2.3.0b-r2
2.3.0b-r4 > 0.12.1
0.12.3 > 0.12
0.12 < 0.13_beta1
1.2.11 < 1.2.12.1
0.2.0-r1 < 3.1_p16
3.1_p16 < 3.1_p17
3.1_p17 > 1.06-r6
1.06-r6 < 006
006 > 1.0.0
1.2.2-r1 > 1.2.2
9.3.4-r2 > 9.3.4
2.59 < 20050718-r1
20050718-r2 > 3.9.8-r5
3.9.8-r5 > 2.01.01_alpha10
2.01.01_alpha10 > 0.94
1.0 > 0.99.3.20040818
1.39 > 1.00_beta2
2.8.9-r1 > 2.8.9
7.15.1-r1 > 1.02
1.12.12-r2 < 2.8.0.6-r1
0.5.2.7 < 4.2.52_p2-r1
4.2.52_p2-r1 < 4.2.52_p4-r2
4.2.52_p4-r2 > 1.02.07
1.02.07 < 1.02.10-r1
9 > 2.18.3-r10
2.18.3-r10 > 1.05-r18
10-r1 > 4
0.7.3-r2 > 0.7.3
20060720 > 3.0.20060720
3.0.20060720 < 20060720
2.5.1-r8 < 2.5.1a-r1
1.3.5-r10 > 1.3.5-r8
20040401 > 2.0.0_rc3-r1
3.0.0-r2 < 021109-r3
021109-r3 < 20060512
0.9.16-r1 < 3.9_pre20060124
3.9_pre20060124 > 0.01
1.1.7 < 6b-r7
6b-r7 > 1.12-r7
0.10.0-r1 > 0.10.0
0.10.0 < 0.10.1_rc1
2.0.2 > 1.1a
1.1a < 1.3a
1.0-r1 > 0.15.1b
0.15.1b-r2 > 0.15.1b
22.7-r1 < 22.7.3-r1
22.7 > 2.1_pre20
2.10.1 > 02.08.01b
02.08.01b < 4.77
3.81 > 1.6d
1.6d > 1.2.07.8
1.2.07.8 < 1.2.12.04
1.2.12.04 < 1.2.12.05
1.07-r1 < 1.07.5
1.07.5 > 1.07
0.1_pre20060810 < 0.1_pre20060817
3.3.17 > 0.59s-r11
0.59s-r11 < 0.65
4.01 < 4.20
4.20 > 0.20070118
0.20070118 < 0.20070207_rc1
3.7_p1 > 1.3
4.5_p1-r1 > 4.5_p1
0.9.8c-r1 < 0.9.8d
2.2.3-r2 < 013
013 < 014-r1
1.7 < 1.7b
1.8.5 < 1.8.5_p2
2.9.11_pre20051101-r3 > 2.9.11_pre20051101
1.6.8_p12-r1 > 1.6.8_p9-r2
0.9.28.1 < 087-r1
104-r11 > 104-r9
20040406-r1 > 2.12r-r4
2.12r-r4 < 2.12r-r5
7.0.17 < 7.0.174
1.3-r0 < 1.3.1-r0
1.3_pre1-r1 < 1.3.2
1.0_p10-r0 > 1.0_p9-r0
0.1.0_alpha_pre2 < 0.1.0_alpha
1.0.0_pre20191002222144-r0 < 1.0.0_pre20210530193627-r0
";

    fn pairs() -> Vec<(&'static str, char, &'static str)> {
        VERSION_DATA
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0], f[1].chars().next().unwrap(), f[2])
            })
            .collect()
    }

    #[test]
    fn apk_tools_version_data() {
        let pairs = pairs();
        assert!(pairs.len() >= 50);
        for (a, op, b) in pairs {
            let want = match op {
                '<' => Ordering::Less,
                '>' => Ordering::Greater,
                _ => Ordering::Equal,
            };
            assert_eq!(compare(a, b), want, "{a} {op} {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn tricky_cases() {
        assert_eq!(compare("1.2.3_rc1-r0", "1.2.3-r0"), Ordering::Less);
        assert_eq!(compare("1.2.3-r0", "1.2.3_p1-r0"), Ordering::Less);
        assert_eq!(compare("1.2.4_git20230717-r4", "1.2.4-r4"), Ordering::Greater);
        assert_eq!(compare("3.1.4-r5", "3.1.4-r10"), Ordering::Less);
    }

    proptest! {
        #[test]
        fn antisymmetric(a in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}[a-c]?(_(alpha|rc|p)[0-9]?)?(-r[0-9]{1,2})?",
                         b in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}[a-c]?(_(alpha|rc|p)[0-9]?)?(-r[0-9]{1,2})?") {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }

        #[test]
        fn revisions_and_suffixes(base in "[1-9][0-9]{0,2}(\\.[1-9][0-9]{0,2}){0,2}", r in 0u32..50) {
            let rel = format!("{base}-r{r}");
            prop_assert_eq!(compare(&format!("{base}_rc1-r{r}"), &rel), Ordering::Less);
            prop_assert_eq!(compare(&format!("{base}_p1-r{r}"), &rel), Ordering::Greater);
            prop_assert_eq!(compare(&rel, &format!("{base}-r{}", r + 1)), Ordering::Less);
        }
    }
}
