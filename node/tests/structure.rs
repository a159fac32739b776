//! The node crate's modules form no cycle: no module imports one that
//! imports it back (the checker is shared with the other crates, see
//! scripts/check_imports.rs; the crate rules are checked in gateway's).

#[path = "../../scripts/check_imports.rs"]
mod check_imports;

use std::path::Path;

#[test]
fn node_modules_form_no_cycle() {
    check_imports::assert_no_module_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

/// Ignored until a known cycle is broken: cluster::ca -> cluster::join -> cluster::ca. `ca::Authority::answer` runs a join through `join::Joins`, and `Joins` asks the CA holders through `ca::Authority` (types and services both ways; breaking it needs one side behind a trait or a third module, not a move). Run with
/// `--ignored` to see it; un-ignore once it passes.
#[test]
#[ignore = "known cycle: cluster::ca -> cluster::join -> cluster::ca"]
fn node_folder_modules_form_no_cycle() {
    check_imports::assert_no_folder_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}
