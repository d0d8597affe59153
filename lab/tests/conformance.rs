//! Runner 3 of the Service conformance suite in CI: the real `sluice-lab conformance` for
//! every proxy mode this machine runs, with real traffic, and nothing left behind.

mod common;

fn conformance(mode: &str) {
    sluice_testbed::require_root();
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    // One name per mode: the tests of this file run in parallel in one process.
    let name = format!("lab-c{}{}", std::process::id(), &mode[..1]);
    let out = common::lab(&[
        "--lab-dir",
        &lab_dir.to_string_lossy(),
        "conformance",
        "--proxy-mode",
        mode,
        "--name",
        &name,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "conformance failed:\n{}",
        common::text(&out)
    );
    assert!(stdout.contains(" passed, 0 failed, "), "{stdout}");
    assert!(!stdout.contains(" FAIL "), "{stdout}");
    common::assert_nothing_left(&name, &lab_dir);
}

#[test]
fn nftables_mode_passes_the_suite_with_real_traffic() {
    conformance("nftables");
}

#[test]
fn iptables_mode_passes_the_suite_with_real_traffic() {
    conformance("iptables");
}

#[test]
fn ebpf_mode_passes_the_suite_with_real_traffic() {
    conformance("ebpf");
}
