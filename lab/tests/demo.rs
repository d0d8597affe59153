//! The README's main command must keep working: run the real `sluice-lab demo` (which starts
//! the real `sluice-overlay` binaries built next to it) and check its table.

use std::process::Command;

#[test]
fn demo_passes_every_check_and_leaves_nothing_behind() {
    sluice_testbed::require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-lab"))
        .arg("demo")
        .output()
        .expect("run sluice-lab demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("sluice-overlay on both nodes"), "{stdout}");
    assert!(
        stdout.contains("teardown: every namespace and process removed"),
        "{stdout}"
    );
}
