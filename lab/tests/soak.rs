//! The churn soak in CI: the real `sluice-lab soak` for two minutes — pods through CNI,
//! rolling endpoints, Services created and deleted while clients talk to the stable Services —
//! must see no failed request, no growth, no leak, and leave nothing behind.

mod common;

#[test]
#[ignore = "open finding (README, Reliability): about 1 UDP request in 40,000 to a stable \
            Service goes unanswered when a reused client port meets a conntrack flow to an \
            endpoint just taken out of the rules; run with --ignored until it is fixed"]
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
