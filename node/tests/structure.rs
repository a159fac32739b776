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

/// No cycle among the modules of a folder either (`cluster::*`, …): a
/// join's messages are a leaf (`join_wire`) and the join service takes the
/// joins the CA relays.
#[test]
fn node_folder_modules_form_no_cycle() {
    check_imports::assert_no_folder_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}
