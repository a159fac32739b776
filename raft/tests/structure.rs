//! The raft crate's modules form no cycle: no module imports one that
//! imports it back (the checker is shared with the other crates, see
//! scripts/check_imports.rs; the crate rules are checked in gateway's).

#[path = "../../scripts/check_imports.rs"]
mod check_imports;

use std::path::Path;

#[test]
fn raft_modules_form_no_cycle() {
    check_imports::assert_no_module_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

/// Ignored until a known cycle is broken: state::tags -> state::tag_policies -> state::tags. `tags` checks a tag against the lock policies and dispatches the policy commands; `tag_policies` locks, lists and deletes tags (breaking it means splitting the policy reads from the policy commands and dispatching those from `state`). Run with
/// `--ignored` to see it; un-ignore once it passes.
#[test]
#[ignore = "known cycle: state::tags -> state::tag_policies -> state::tags"]
fn raft_folder_modules_form_no_cycle() {
    check_imports::assert_no_folder_cycle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}
