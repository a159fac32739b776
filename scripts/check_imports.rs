//! The structure checker: module cycles inside a crate, and which crates
//! may depend on which. Not a crate of its own: a test includes it with
//!
//! ```ignore
//! #[path = "../../scripts/check_imports.rs"]
//! mod check_imports;
//! ```
//!
//! and calls [`assert_no_module_cycle`] (the crate roots' levels) and
//! [`assert_no_folder_cycle`] (every level below) on its crate's `src`, and
//! [`assert_crate_rules`] (the workspace's rules, [`CRATE_RULES`], checked
//! against what `cargo tree` resolves).
//!
//! **The module tree.** Each crate root under `src` (`lib.rs`, `main.rs`,
//! `bin/*.rs`, and every `[[bin]] path` of the package's `Cargo.toml`) is
//! read, and its `mod` declarations followed as rustc does: `mod x;` is
//! `x.rs` or `x/mod.rs` in the declaring module's folder, `#[path = "…"]`
//! is taken relative to the declaring file's directory (so
//! `gateway/src/identity_mirror.rs` is `identity::mirror`, not a module of
//! its own), and `mod x { … }` is a child module inline. A `.rs` file under
//! `src` that no root reaches fails the check, so nothing escapes it
//! unseen.
//!
//! **Test code is not structure.** A module declared `#[cfg(test)]` (or
//! `#[cfg(all(test, …))]`), inline or in a file of its own, is left out
//! with everything in it: tests may import anything. Other test-only items
//! (a lone `#[cfg(test)] use …`) still count.
//!
//! **Edges.** A module depends on the module a path in its code names:
//! `crate::a::b::Item` names `a::b` (the longest prefix that is a module),
//! `super::x`, `self::x`, `$crate::x`, a child module's name (`x::Item`),
//! and a name a `use` bound to a module (`use crate::a; a::b::f()`; a glob
//! `use super::*` binds the parent's children), all within `use` trees
//! (`use crate::{a::{b, c}, d}`). Naming an item of a module (its own code,
//! inline children cut out) names that module. Comments and the contents
//! of string and character literals are skipped; `mod` declarations are
//! containment, not dependencies; paths into other crates are not edges.
//!
//! **Levels.** At every module that has children — the crate root and each
//! folder module such as node's `cluster`, `identity`, `registry::mirror`
//! — the children are the nodes of a graph, an edge from `a` to `b` when
//! anything inside `a` names anything inside `b`; no such graph may have a
//! cycle. So `cluster::ca -> cluster::join -> cluster::ca` fails exactly as
//! `access -> error -> access` at the top does, and a cycle that leaves a
//! folder shows up at the level where its ends meet. At a library's root
//! the root's own code is a node too, `crate` (the top-level check as it
//! always was: a module that names an item of `lib.rs` depends on
//! `crate`). Below it, and at a binary's root, a module's own code is not a
//! node: a folder module that holds its children's shared types and
//! dispatches to them (`feed::parse` calling `feed::alpine`, which uses
//! `feed::Advisory`) is the usual facade, not a cycle — and a cycle that
//! runs through such a parent's own code is not seen.
//!
//! The reading is textual, not rustc's name resolution: a name brought in
//! through a re-export (`super::Item` where the parent does `pub use
//! child::Item`) depends on the parent, and a path spelt with spaces
//! around `::` is not seen.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates that must never depend, even indirectly, on the crates listed
/// (by package name) — what keeps each layer to its job.
pub const CRATE_RULES: &[(&str, &[&str])] = &[
    ("berth-raft", &["berth-replication", "quinn"]),
    ("berth-replication", &["berth-raft", "openraft", "rocksdb"]),
    ("berth-gateway", &["berth-raft", "berth-replication", "openraft", "rocksdb", "librocksdb-sys", "quinn"]),
    // The scanner reads layers and feeds; it knows nothing of the cluster.
    ("berth-scanner", &["berth-raft", "berth-replication", "berth-gateway", "openraft", "rocksdb", "librocksdb-sys", "quinn"]),
];

/// A module path from the crate root (`[]` is the root, `["cluster", "ca"]`
/// is `cluster::ca`).
type ModPath = Vec<String>;

/// One crate's modules: each module's path → its own code (comments and
/// literals blanked, inline child modules cut out).
pub struct CrateTree {
    pub root: PathBuf,
    pub modules: BTreeMap<ModPath, String>,
}

/// The crates whose roots are under `src`, their module trees read from
/// their `mod` declarations. Panics if a `.rs` file under `src` belongs to
/// none of them.
pub fn crate_trees(src: &Path) -> Vec<CrateTree> {
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"].iter().map(|r| src.join(r)).filter(|p| p.is_file()).collect();
    if let Ok(entries) = std::fs::read_dir(src.join("bin")) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "rs") {
                roots.push(p);
            } else if p.join("main.rs").is_file() {
                roots.push(p.join("main.rs"));
            }
        }
    }
    let package = src.parent().expect("src has a parent");
    roots.extend(bin_paths(&package.join("Cargo.toml")).into_iter().map(|p| package.join(p)));
    roots.sort();
    roots.dedup();
    let mut reached = BTreeSet::new();
    let mut trees = Vec::new();
    for root in roots {
        let mut modules = BTreeMap::new();
        let children = root.parent().expect("a root is in a folder").to_path_buf();
        load_file(&root, Vec::new(), children, &mut modules, &mut reached);
        trees.push(CrateTree { root, modules });
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let unreached: Vec<String> = files.iter().filter(|f| !reached.contains(*f)).map(|f| f.display().to_string()).collect();
    assert!(unreached.is_empty(), "files under {} that no crate root declares (the checker cannot place them): {}", src.display(), unreached.join(", "));
    trees
}

/// The `path = "…"` of each `[[bin]]` table of a manifest.
fn bin_paths(manifest: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(manifest) else { return Vec::new() };
    let mut in_bin = false;
    let mut paths = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line.strip_prefix("path").map(str::trim_start).and_then(|l| l.strip_prefix('=')) {
            if in_bin {
                paths.push(value.trim().trim_matches('"').to_string());
            }
        }
    }
    paths
}

/// Reads `file` as module `path`, whose `mod x;` children are in `children`.
fn load_file(file: &Path, path: ModPath, children: PathBuf, modules: &mut BTreeMap<ModPath, String>, reached: &mut BTreeSet<PathBuf>) {
    let original = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    reached.insert(file.to_path_buf());
    let clean = blank_comments_and_literals(&original);
    load_code(file, &original, &clean, 0, clean.len(), true, path, children, modules, reached);
}

/// Reads `clean[start..end]` (of `file`, whose unblanked text is
/// `original`) as module `path`; `top` says it is the file's own level,
/// not an inline module's body.
#[allow(clippy::too_many_arguments)]
fn load_code(
    file: &Path,
    original: &str,
    clean: &str,
    start: usize,
    end: usize,
    top: bool,
    path: ModPath,
    children: PathBuf,
    modules: &mut BTreeMap<ModPath, String>,
    reached: &mut BTreeSet<PathBuf>,
) {
    let mut own = String::new();
    let mut pos = start;
    while let Some(decl) = next_mod_decl(clean, pos, end) {
        own.push_str(&clean[pos..decl.start]);
        let attrs: Vec<&str> = decl.attrs.iter().map(|r| &clean[r.clone()]).collect();
        let test_only = attrs.iter().any(|a| is_test_cfg(a));
        let mut child = path.clone();
        child.push(decl.name.clone());
        if let Some(body) = decl.body.clone() {
            if !test_only {
                load_code(file, original, clean, body.start, body.end, false, child, children.join(&decl.name), modules, reached);
            }
        } else {
            // `#[path = "…"]`: its string is blanked in `clean`, so read it from `original`.
            let path_attr = decl.attrs.iter().find_map(|r| {
                let a = clean[r.clone()].trim();
                let rest = a.strip_prefix("path")?.trim_start().strip_prefix('=')?;
                let offset = r.start + (clean[r.clone()].len() - rest.len());
                let literal = original[offset..r.end].trim();
                Some(literal.trim_matches('"').to_string())
            });
            let (child_file, child_children) = match path_attr {
                Some(p) => {
                    let base = if top { file.parent().expect("a file is in a folder").to_path_buf() } else { children.clone() };
                    let f = base.join(p);
                    let stem = f.file_stem().expect("a file name").to_string_lossy().into_owned();
                    let dir = f.parent().expect("a file is in a folder").to_path_buf();
                    let kids = if stem == "mod" { dir } else { dir.join(stem) };
                    (f, kids)
                }
                None => {
                    let flat = children.join(format!("{}.rs", decl.name));
                    let f = if flat.is_file() { flat } else { children.join(&decl.name).join("mod.rs") };
                    (f, children.join(&decl.name))
                }
            };
            if test_only {
                // Left out, but placed: its file and anything under it are test code.
                let mut under = Vec::new();
                if child_children.is_dir() {
                    rust_files(&child_children, &mut under);
                }
                reached.extend(under);
                reached.insert(child_file);
            } else {
                load_file(&child_file, child, child_children, modules, reached);
            }
        }
        pos = decl.end;
    }
    own.push_str(&clean[pos..end]);
    modules.insert(path, own);
}

/// A `mod` declaration: where it starts (its attributes and visibility
/// included) and ends, its name, its attributes' insides, its inline body.
struct ModDecl {
    start: usize,
    end: usize,
    name: String,
    attrs: Vec<std::ops::Range<usize>>,
    body: Option<std::ops::Range<usize>>,
}

/// The first `mod NAME;` or `mod NAME { … }` in `clean[from..to]`.
fn next_mod_decl(clean: &str, from: usize, to: usize) -> Option<ModDecl> {
    let b = clean.as_bytes();
    let mut search = from;
    while let Some(found) = clean[search..to].find("mod") {
        let at = search + found;
        search = at + 3;
        if at > 0 && is_ident_byte(b[at - 1]) || b.get(at + 3).is_none_or(|c| !c.is_ascii_whitespace()) {
            continue;
        }
        let name_start = skip_ws(b, at + 3);
        let name_end = ident_end(b, name_start);
        if name_end == name_start {
            continue;
        }
        let after = skip_ws(b, name_end);
        let (end, body) = match b.get(after) {
            Some(b';') => (after + 1, None),
            Some(b'{') => {
                let close = matching(b, after, b'{', b'}').unwrap_or_else(|| panic!("unbalanced braces after `mod` at byte {at}"));
                (close + 1, Some(after + 1..close))
            }
            _ => continue,
        };
        // Back over the visibility and the attributes.
        let mut start = at;
        let mut attrs = Vec::new();
        loop {
            let before = clean[from..start].trim_end();
            let t = from + before.len();
            if before.ends_with(')') {
                if let Some(open) = matching_back(b, t - 1, b'(', b')').filter(|&o| clean[from..o].trim_end().ends_with("pub")) {
                    start = from + clean[from..open].trim_end().len() - 3;
                    continue;
                }
            }
            if before.ends_with("pub") && (t - 3 == from || !is_ident_byte(b[t - 4])) {
                start = t - 3;
                continue;
            }
            if before.ends_with(']') {
                if let Some(open) = matching_back(b, t - 1, b'[', b']').filter(|&o| o > from && b[o - 1] == b'#') {
                    attrs.push(open + 1..t - 1);
                    start = open - 1;
                    continue;
                }
            }
            break;
        }
        return Some(ModDecl { start, end, name: clean[name_start..name_end].to_string(), attrs, body });
    }
    None
}

/// `cfg(test)` or `cfg(all(test, …))`: code that exists only under test.
fn is_test_cfg(attr: &str) -> bool {
    let a: String = attr.chars().filter(|c| !c.is_whitespace()).collect();
    a == "cfg(test)" || a.starts_with("cfg(all(test,") || a.contains("cfg(all(") && a.contains(",test)") && !a.contains("not(") && !a.contains("any(")
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn ident_end(b: &[u8], mut i: usize) -> usize {
    if b.get(i).is_some_and(|c| c.is_ascii_digit()) {
        return i;
    }
    while b.get(i).is_some_and(|c| is_ident_byte(*c)) {
        i += 1;
    }
    i
}

/// The index of the bracket closing the one at `open`.
fn matching(b: &[u8], open: usize, o: u8, c: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &x) in b.iter().enumerate().skip(open) {
        if x == o {
            depth += 1;
        } else if x == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// The index of the bracket opening the one at `close`.
fn matching_back(b: &[u8], close: usize, o: u8, c: u8) -> Option<usize> {
    let mut depth = 0usize;
    for i in (0..=close).rev() {
        if b[i] == c {
            depth += 1;
        } else if b[i] == o {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// `text` with comments (line, block — nested — and doc) and the contents
/// of string, raw string, byte string and character literals turned to
/// spaces, newlines kept: the same length, so a position in one is the
/// same place in the other.
fn blank_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for x in &mut out[from..to] {
            if *x != b'\n' {
                *x = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && is_ident_byte(b[i - 1]);
        if b[i..].starts_with(b"//") {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (b[i] == b'r' || b[i..].starts_with(b"br")) && {
            let k = if b[i] == b'r' { i + 1 } else { i + 2 };
            let hashes = b[k..].iter().take_while(|&&c| c == b'#').count();
            b.get(k + hashes) == Some(&b'"')
        } {
            let k = if b[i] == b'r' { i + 1 } else { i + 2 };
            let hashes = b[k..].iter().take_while(|&&c| c == b'#').count();
            let open = k + hashes;
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            let close = b[open + 1..].windows(closing.len()).position(|w| w == closing.as_slice()).map_or(b.len(), |p| open + 1 + p);
            blank(&mut out, open + 1, close);
            i = (close + closing.len()).min(b.len());
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let j = j.min(b.len());
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if b[i] == b'\'' {
            // A character literal (`'x'`, `'\n'`, `'\u{1F600}'`, `'é'`), or a lifetime.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&c| c == b'\'').map(|p| i + 2 + p)
            } else {
                let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(e) => {
                    blank(&mut out, i + 1, e);
                    i = e + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only whole literals and comments are blanked")
}

/// The paths in `code` that may name a module of this crate, as their
/// segments: every path of two segments or more whose first segment is not
/// itself after `::`, `use` trees expanded (`a::{b, c::*}` is `a::b` and
/// `a::c::*`; `a::{self}` is `a`).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let dollar = b[i] == b'$' && b[i + 1..].starts_with(b"crate");
        let starts = (dollar || (b[i].is_ascii_alphabetic() || b[i] == b'_'))
            && (i == 0 || !(is_ident_byte(b[i - 1]) || b[i - 1] == b'\'' || b[i - 1] == b'$' || b[i - 1] == b':' && i >= 2 && b[i - 2] == b':'));
        if !starts {
            i += 1;
            continue;
        }
        let first_end = if dollar { i + 6 } else { ident_end(b, i) };
        let first = code[i..first_end].to_string();
        let (found, end) = path_tail(code, first_end, vec![first]);
        paths.extend(found.into_iter().filter(|p| p.len() >= 2));
        i = end.max(first_end);
    }
    paths
}

/// The paths that continue `prefix` from `at` (`::x::y`, `::{…}`, `::*`),
/// and where they end.
fn path_tail(code: &str, mut at: usize, mut prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    loop {
        if !b[at..].starts_with(b"::") {
            return (vec![prefix], at);
        }
        let next = at + 2;
        match b.get(next) {
            Some(b'{') => {
                let close = matching(b, next, b'{', b'}').unwrap_or(b.len());
                let mut all = Vec::new();
                let mut j = next + 1;
                while j < close {
                    j = skip_ws(b, j);
                    if j >= close {
                        break;
                    }
                    if b[j] == b',' {
                        j += 1;
                        continue;
                    }
                    if b[j] == b'*' {
                        let mut p = prefix.clone();
                        p.push("*".into());
                        all.push(p);
                        j += 1;
                        continue;
                    }
                    let e = ident_end(b, j);
                    if e == j {
                        j += 1;
                        continue;
                    }
                    let seg = code[j..e].to_string();
                    let mut p = prefix.clone();
                    if seg != "self" {
                        p.push(seg);
                    }
                    let (found, after) = path_tail(code, e, p);
                    all.extend(found);
                    j = after;
                    // `x as y`: the alias is not a path.
                    let k = skip_ws(b, j);
                    if b[k..].starts_with(b"as") && !b.get(k + 2).is_some_and(|c| is_ident_byte(*c)) {
                        j = ident_end(b, skip_ws(b, k + 2));
                    }
                }
                return (all, close + 1);
            }
            Some(b'*') => {
                prefix.push("*".into());
                return (vec![prefix], next + 1);
            }
            _ => {
                let e = ident_end(b, next);
                if e == next {
                    return (vec![prefix], at);
                }
                prefix.push(code[next..e].to_string());
                at = e;
            }
        }
    }
}

/// The module each module of `tree` names, by the rules in the module doc.
pub fn module_edges(tree: &CrateTree) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let is_module = |p: &[String]| tree.modules.contains_key(p);
    let children_of = |m: &ModPath| -> Vec<String> {
        tree.modules.keys().filter(|k| k.len() == m.len() + 1 && k.starts_with(m)).map(|k| k.last().expect("a child has a name").clone()).collect()
    };
    let mut edges = BTreeMap::new();
    for (module, code) in &tree.modules {
        let paths = paths_in(code);
        // A path's start: where it is rooted, and the segments left to walk.
        let base = |p: &[String], bound: &BTreeMap<String, ModPath>| -> Option<(ModPath, usize)> {
            match p[0].as_str() {
                "crate" | "$crate" => Some((Vec::new(), 1)),
                "self" => Some((module.clone(), 1)),
                "super" => {
                    let ups = p.iter().take_while(|s| *s == "super").count();
                    (ups <= module.len()).then(|| (module[..module.len() - ups].to_vec(), ups))
                }
                first => {
                    let mut child = module.clone();
                    child.push(first.to_string());
                    if is_module(&child) {
                        Some((module.clone(), 0))
                    } else {
                        bound.get(first).map(|m| (m.clone(), 1))
                    }
                }
            }
        };
        // Walks `p` from its base as far as it names modules: the module it
        // names, and whether all of it did (a path to a module, not an item).
        let resolve = |p: &[String], bound: &BTreeMap<String, ModPath>| -> Option<(ModPath, bool)> {
            let (mut at, skip) = base(p, bound)?;
            let mut whole = true;
            for s in &p[skip..] {
                at.push(s.clone());
                if !is_module(&at) {
                    at.pop();
                    whole = false;
                    break;
                }
            }
            Some((at, whole))
        };
        // Names bound to modules by `use` (first pass), then every path.
        let mut bound = BTreeMap::new();
        for p in &paths {
            if p.last().is_some_and(|s| s == "*") {
                if let Some((m, true)) = resolve(&p[..p.len() - 1], &BTreeMap::new()) {
                    for c in children_of(&m) {
                        let mut full = m.clone();
                        full.push(c.clone());
                        bound.insert(c, full);
                    }
                }
            } else if let Some((m, true)) = resolve(p, &BTreeMap::new()) {
                if let Some(name) = m.last() {
                    bound.insert(name.clone(), m.clone());
                }
            }
        }
        let named: BTreeSet<ModPath> = paths.iter().filter_map(|p| resolve(p, &bound)).map(|(m, _)| m).filter(|m| m != module).collect();
        edges.insert(module.clone(), named);
    }
    edges
}

/// The graph at `level` (a module with children): each child is a node,
/// named by its path, and so is the level's own code if `with_own` (the
/// root's is `crate`); `a → b` when something inside `a` names something
/// inside `b`.
pub fn level_graph(tree: &CrateTree, edges: &BTreeMap<ModPath, BTreeSet<ModPath>>, level: &[String], with_own: bool) -> BTreeMap<String, BTreeSet<String>> {
    let node = |m: &ModPath| -> Option<String> {
        if !m.starts_with(level) || !with_own && m.len() == level.len() {
            return None;
        }
        let upto = (level.len() + 1).min(m.len());
        Some(if upto == 0 { "crate".to_string() } else { m[..upto].join("::") })
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in tree.modules.keys() {
        if let Some(n) = node(m) {
            graph.entry(n).or_default();
        }
    }
    for (from, tos) in edges {
        let Some(a) = node(from) else { continue };
        for b in tos.iter().filter_map(|t| node(t)) {
            if a != b {
                graph.get_mut(&a).expect("every module is a node").insert(b);
            }
        }
    }
    graph
}

/// Every cycle the crates under `src` have, one per level (a crate root or
/// a module with children), as `crate root: a -> b -> a`.
pub fn module_cycles(src: &Path) -> Vec<String> {
    cycles_at(src, true, true)
}

/// The cycles of [`module_cycles`] at the crate roots (`roots`) and at the
/// folder modules below them (`folders`).
fn cycles_at(src: &Path, roots: bool, folders: bool) -> Vec<String> {
    let mut cycles = Vec::new();
    for tree in crate_trees(src) {
        let edges = module_edges(&tree);
        let levels: BTreeSet<ModPath> = tree.modules.keys().filter(|k| !k.is_empty()).map(|k| k[..k.len() - 1].to_vec()).collect();
        for level in levels.into_iter().filter(|l| if l.is_empty() { roots } else { folders }) {
            let with_own = level.is_empty() && tree.root.file_name().is_some_and(|n| n == "lib.rs");
            if let Some(cycle) = find_cycle(&level_graph(&tree, &edges, &level, with_own)) {
                cycles.push(format!("{}: {}", tree.root.display(), cycle.join(" -> ")));
            }
        }
    }
    cycles
}

/// The top-level module graph of the crate whose root is `src/lib.rs` (or
/// `src/main.rs`): module → the modules it names.
pub fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let tree = crate_trees(src).into_iter().next().unwrap_or_else(|| panic!("no crate root under {}", src.display()));
    let edges = module_edges(&tree);
    level_graph(&tree, &edges, &[], true)
}

/// Panics, naming each cycle, if the top-level modules of a crate under
/// `src` (a library's or a binary's) depend on each other in a circle.
pub fn assert_no_module_cycle(src: &Path) {
    let cycles = cycles_at(src, true, false);
    assert!(cycles.is_empty(), "module cycles in {}:\n  {}", src.display(), cycles.join("\n  "));
}

/// Panics, naming each cycle, if the children of a folder module under
/// `src` (`cluster::ca`, `cluster::join`, …) depend on each other in a
/// circle.
pub fn assert_no_folder_cycle(src: &Path) {
    let cycles = cycles_at(src, false, true);
    assert!(cycles.is_empty(), "module cycles inside folder modules of {}:\n  {}", src.display(), cycles.join("\n  "));
}

/// A cycle in `graph`, as the path that closes it (`a -> b -> a`).
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(n: &str, graph: &BTreeMap<String, BTreeSet<String>>, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).expect("an open node is on the path");
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut marks, &mut Vec::new()))
}

/// The packages `krate` depends on, directly or not, through normal and
/// build dependencies (dev-dependencies do not ship), as `cargo tree`
/// of the workspace at `root` resolves them for this platform.
pub fn crate_closure(root: &Path, krate: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal,build", "--prefix", "none", "--format", "{p}", "-p", krate, "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
    // One package a line, `name vX.Y.Z …`; the first line is `krate` itself.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.starts_with('['))
        .map(str::to_string)
        .collect()
}

/// The rules `rules` broken by the dependency closures `closure`, one line each.
pub fn broken_rules(closure: &BTreeMap<String, BTreeSet<String>>, rules: &[(&str, &[&str])]) -> Vec<String> {
    let mut broken = Vec::new();
    for (krate, forbidden) in rules {
        let deps = closure.get(*krate).unwrap_or_else(|| panic!("no dependencies known for {krate}"));
        for f in forbidden.iter().filter(|f| deps.contains(**f)) {
            broken.push(format!("{krate} depends on {f}"));
        }
    }
    broken
}

/// Panics, naming each broken rule, unless the workspace at `root` keeps
/// [`CRATE_RULES`].
pub fn assert_crate_rules(root: &Path) {
    let closure = CRATE_RULES.iter().map(|(k, _)| (k.to_string(), crate_closure(root, k))).collect();
    let broken = broken_rules(&closure, CRATE_RULES);
    assert!(broken.is_empty(), "crate boundaries broken: {}", broken.join("; "));
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod checker_tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    /// A fake crate in a fresh temporary folder: `files` as (path under
    /// `src`, text); removed when dropped.
    struct FakeCrate(PathBuf);

    impl FakeCrate {
        fn new(name: &str, files: &[(&str, &str)]) -> FakeCrate {
            let dir = std::env::temp_dir().join(format!("berth-check-imports-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (path, text) in files {
                let file = dir.join("src").join(path);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, text).unwrap();
            }
            FakeCrate(dir)
        }

        fn src(&self) -> PathBuf {
            self.0.join("src")
        }
    }

    impl Drop for FakeCrate {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cycles_are_found_and_named() {
        assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
        assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    }

    #[test]
    fn paths_are_read_from_code_not_comments_or_strings() {
        let code = blank_comments_and_literals(
            "//! see crate::error\nuse crate::access::Caller;\n/* crate::error /* nested */ crate::x */ let s = \"crate::y // {\"; let c = '{';\n\
             let x = crate::serve(); use crate::{error::{E, F as G}, Services, m::{self, n::*}}; fn f<'a>(x: &'a super::T) {}",
        );
        let paths: Vec<String> = paths_in(&code).iter().map(|p| p.join("::")).collect();
        assert_eq!(
            paths,
            ["crate::access::Caller", "crate::serve", "crate::error::E", "crate::error::F", "crate::Services", "crate::m", "crate::m::n::*", "super::T"]
        );
    }

    #[test]
    fn a_super_cycle_inside_a_folder_is_found() {
        let krate = FakeCrate::new(
            "super-cycle",
            &[
                ("lib.rs", "pub mod cluster;\npub mod util;\n"),
                ("util.rs", "pub fn now() -> u64 { 0 }\n"),
                ("cluster/mod.rs", "pub mod ca;\npub mod join;\npub mod pki;\n"),
                ("cluster/ca.rs", "use super::join::Request;\npub struct Authority;\n"),
                ("cluster/join.rs", "use crate::util::now;\npub struct Request;\npub fn f(_: &super::ca::Authority) {}\n"),
                ("cluster/pki.rs", "pub fn g() { self::h() }\nfn h() {}\n"),
            ],
        );
        // The top level has no cycle: cluster -> util only.
        assert_eq!(module_graph(&krate.src())["cluster"], ["util".to_string()].into());
        let cycles = module_cycles(&krate.src());
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].ends_with("cluster::ca -> cluster::join -> cluster::ca"), "{cycles:?}");
        assert!(std::panic::catch_unwind(|| assert_no_module_cycle(&krate.src())).is_ok(), "the top level has no cycle");
        let panicked = std::panic::catch_unwind(|| assert_no_folder_cycle(&krate.src()));
        assert!(panicked.is_err(), "the folder assertion must fail on a cycle");
    }

    #[test]
    fn path_files_belong_to_their_declarer_and_test_modules_do_not_count() {
        let krate = FakeCrate::new(
            "path-and-tests",
            &[
                ("lib.rs", "pub mod identity;\npub mod quay;\npub fn root() {}\n"),
                // `identity_mirror.rs` is `identity::mirror`; its `crate::quay` is identity's edge.
                ("identity.rs", "#[path = \"identity_mirror.rs\"]\nmod mirror;\npub use mirror::M;\n"),
                ("identity_mirror.rs", "pub struct M(crate::quay::Q);\n"),
                ("quay.rs", "pub struct Q;\n#[cfg(test)]\nmod tests {\n    use crate::identity::M;\n    fn f() { let _ = '}'; }\n}\n#[cfg(test)]\nmod more;\n"),
                ("quay/more.rs", "use crate::identity::M;\n"),
            ],
        );
        let g = module_graph(&krate.src());
        assert_eq!(g.keys().cloned().collect::<Vec<_>>(), ["crate", "identity", "quay"]);
        assert_eq!(g["identity"], ["quay".to_string()].into());
        assert!(g["quay"].is_empty(), "test-only imports are not edges: {g:?}");
        let tree = crate_trees(&krate.src()).remove(0);
        let edges = module_edges(&tree);
        assert_eq!(edges[&vec!["identity".to_string()]], [vec!["identity".to_string(), "mirror".to_string()]].into());
        assert!(module_cycles(&krate.src()).is_empty());
    }

    #[test]
    fn a_file_no_root_declares_fails_the_check() {
        let krate = FakeCrate::new("unreached", &[("lib.rs", "pub mod a;\n"), ("a.rs", ""), ("stray.rs", "")]);
        let panicked = std::panic::catch_unwind(|| crate_trees(&krate.src()));
        assert!(panicked.is_err(), "stray.rs is in no crate and must not be skipped silently");
    }

    #[test]
    fn rules_name_what_they_forbid() {
        let closure: BTreeMap<String, BTreeSet<String>> = [("gw".to_string(), ["rocksdb".to_string()].into())].into();
        assert_eq!(broken_rules(&closure, &[("gw", &["rocksdb", "quinn"])]), vec!["gw depends on rocksdb"]);
    }
}
