//! What operators install: the systemd unit verifies cleanly, and a reload
//! request (`systemctl reload`, SIGHUP) never stops a node.

mod common;

use std::time::{Duration, Instant};

use common::procs::*;

const UNIT: &str = include_str!("../../deploy/systemd/berth.service");

/// `systemd-analyze verify` on the unit, with `ExecStart` pointing at the
/// binary this build made (verify checks that the command exists). A
/// misspelt or unknown directive is only a warning there, so any output
/// at all fails the test.
#[test]
fn the_systemd_unit_verifies_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("berth.service");
    assert!(UNIT.contains("ExecStart=/usr/local/bin/berth node start"), "the unit starts the installed binary");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/berth", BERTH)).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze (package systemd) is installed");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "ReadWritePaths=/var/lib/berth",
        "LimitNOFILE=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(UNIT.contains(hardening), "the unit sets {hardening}");
    }
}

/// SIGHUP's default action ends a process; a node must take it as a
/// reload in every TLS mode (here: plain HTTP, nothing to reload).
#[test]
fn a_reload_request_never_stops_a_node() {
    let mut c = ProcCluster::start(1);
    let pid = c.procs[0].pid().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let log = c.dirs[0].with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("SIGHUP: nothing to reload") {
        assert!(c.procs[0].alive(), "SIGHUP stopped the node");
        assert!(Instant::now() < deadline, "the node never noted the SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.procs[0].alive(), "SIGHUP stopped the node");
    assert!(status(&c.dirs[0]).is_some_and(|s| s["leader"] == 1), "the node still answers");
}
