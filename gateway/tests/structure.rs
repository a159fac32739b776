//! The gateway's structure: no module imports one that imports it back,
//! and the crate boundaries hold (the gateway never reaches Raft, RocksDB
//! or QUIC; raft and replication never reach each other). The checker is
//! shared: other crates include the same file for their own modules.

#[path = "../../scripts/check_imports.rs"]
mod check_imports;

use std::path::Path;

#[test]
fn gateway_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check_imports::assert_no_module_cycle(&src);
    check_imports::assert_no_folder_cycle(&src);
}

#[test]
fn crate_boundaries_hold() {
    check_imports::assert_crate_rules(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
}
