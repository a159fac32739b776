//! The structure checker: module cycles inside a crate, and which crates
//! may depend on which. Not a crate of its own: a test includes it with
//!
//! ```ignore
//! #[path = "../../scripts/check_imports.rs"]
//! mod check_imports;
//! ```
//!
//! and calls [`assert_no_module_cycle`] on its crate's `src`, and
//! [`assert_crate_rules`] (the workspace's rules, [`CRATE_RULES`], checked
//! against what `cargo tree` resolves).
//!
//! Modules are a crate's top-level ones (`src/access.rs`,
//! `src/testing/…` is `testing`); the crate root (`lib.rs`, `main.rs`) is
//! `crate`. A module depends on another when its code names it
//! (`crate::access::Caller`, `use crate::access`, or from the root
//! `access::…`); naming an item of the root (`crate::serve`) depends on
//! `crate`. Comments are skipped; `mod` declarations are containment, not
//! dependencies.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates that must never depend, even indirectly, on the crates listed
/// (by package name) — what keeps each layer to its job.
pub const CRATE_RULES: &[(&str, &[&str])] = &[
    ("berth-raft", &["berth-replication", "quinn"]),
    ("berth-replication", &["berth-raft", "openraft", "rocksdb"]),
    ("berth-gateway", &["berth-raft", "berth-replication", "openraft", "rocksdb", "librocksdb-sys", "quinn"]),
];

/// The module graph of the crate whose sources are under `src`: module →
/// the modules it names.
pub fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |file: &Path| -> String {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
        match first.strip_suffix(".rs") {
            Some("lib" | "main") => "crate".to_string(),
            Some(m) => m.to_string(),
            None => first,
        }
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let from = module_of(file);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for to in names_in(&code_only(&text), &modules, from == "crate") {
            if to != from {
                graph.get_mut(&from).expect("every module is a node").insert(to);
            }
        }
    }
    graph
}

/// Panics, naming the cycle, if the modules under `src` depend on each
/// other in a circle.
pub fn assert_no_module_cycle(src: &Path) {
    let graph = module_graph(src);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle in {}: {}", src.display(), cycle.join(" -> "));
    }
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

/// `text` without comments (line comments, doc comments and block
/// comments); string literals stay, which at worst adds an edge.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The modules `code` names: `crate::m` (or `crate::item` of the root,
/// which is `crate`), and, in the root itself, `m::` at the start of a path.
fn names_in(code: &str, modules: &BTreeSet<String>, is_root: bool) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let preceded = code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if preceded {
            continue;
        }
        let name = ident(&code[i + "crate::".len()..]);
        if name.is_empty() {
            // `crate::{a, b}`: each name in the braces.
            let inner = &code[i + "crate::".len()..];
            if let Some(list) = inner.strip_prefix('{') {
                for part in top_level_items(list).iter().map(|p| ident(p.trim())).filter(|p| !p.is_empty()) {
                    found.insert(if modules.contains(&part) { part } else { "crate".to_string() });
                }
            }
            continue;
        }
        found.insert(if modules.contains(&name) { name } else { "crate".to_string() });
    }
    if is_root {
        for m in modules {
            let path = format!("{m}::");
            let named = code.match_indices(&path).any(|(i, _)| !code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':'));
            if named {
                found.insert(m.clone());
            }
        }
    }
    found
}

/// The comma-separated items of a `{…}` list (its opening brace already
/// taken), nested lists kept whole: `a::{b, c}, d}` is `a::{b, c}` and `d`.
fn top_level_items(list: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&list[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
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

    #[test]
    fn cycles_are_found_and_named() {
        assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
        assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    }

    #[test]
    fn names_are_read_from_code_not_comments() {
        let modules: BTreeSet<String> = ["access", "error", "crate"].iter().map(|s| s.to_string()).collect();
        let code =
            code_only("//! see crate::error\nuse crate::access::Caller;\n/* crate::error */ let x = crate::serve(); use crate::{error::{E, F}, Services};");
        assert_eq!(names_in(&code, &modules, false), ["access", "crate", "error"].iter().map(|s| s.to_string()).collect());
        assert_eq!(names_in("pub use access::Caller; fn f() -> error::E", &modules, true), ["access", "error"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn rules_name_what_they_forbid() {
        let closure: BTreeMap<String, BTreeSet<String>> = [("gw".to_string(), ["rocksdb".to_string()].into())].into();
        assert_eq!(broken_rules(&closure, &[("gw", &["rocksdb", "quinn"])]), vec!["gw depends on rocksdb"]);
    }
}
