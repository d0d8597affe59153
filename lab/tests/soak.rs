//! The churn soak in CI: the real `sluice-lab soak` for two minutes — pods through CNI,
//! rolling endpoints, Services created and deleted while clients talk to the stable Services —
//! must see no failed request (a UDP request may take its one retransmission, at most 1 in
//! 1,000: see `lab/src/soak/clients.rs`), no growth, no leak, and leave nothing behind.

mod common;

#[test]
fn two_minutes_of_churn_lose_no_request_grow_nothing_and_leak_nothing() {
    sluice_testbed::require_root();
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let name = format!("lab-s{}", std::process::id());
    let out = common::lab(&[
        "--lab-dir",
        &lab_dir.to_string_lossy(),
        "soak",
        "--duration",
        "2m",
        "--name",
        &name,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "soak failed:\n{}", common::text(&out));
    for line in [
        ", failed 0",
        "left by the proxies: 0",
        "leaks: none",
        "conntrack: 0 ",
        "soak passed",
    ] {
        assert!(stdout.contains(line), "no {line:?}:\n{stdout}");
    }
    assert!(!stdout.contains(" NO"), "something grew:\n{stdout}");
    common::assert_nothing_left(&name, &lab_dir);
}
