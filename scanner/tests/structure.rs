//! The scanner crate's modules form no cycle: no module imports one that
//! imports it back (the checker is shared with the other crates, see
//! scripts/check_imports.rs; the crate rules, the scanner's among them, are
//! checked in gateway's).

#[path = "../../scripts/check_imports.rs"]
mod check_imports;

use std::path::Path;

#[test]
fn scanner_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check_imports::assert_no_module_cycle(&src);
    check_imports::assert_no_folder_cycle(&src);
}
