//! The README's main command must keep working: run the real `sluice-lab demo` (which starts
//! the real `sluice-overlay`, `sluice-proxy` and `sluice` CNI binaries built next to it) and
//! check its table.

mod common;

#[test]
fn demo_passes_every_check_and_leaves_nothing_behind() {
    demo("nftables", "d");
}

#[test]
fn demo_passes_in_iptables_mode() {
    demo("iptables", "i");
}

#[test]
fn demo_passes_in_ebpf_mode_and_removes_its_cgroups() {
    demo("ebpf", "e");
    // The per-node cgroups the proxies attached to are gone with the lab.
    let leftover = std::fs::read_dir("/sys/fs/cgroup/unified")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("sluice-lab-lab-e{}", std::process::id())));
    assert_eq!(leftover, None);
}

fn demo(mode: &str, tag: &str) {
    sluice_testbed::require_root();
    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let name = format!("lab-{tag}{}", std::process::id());
    let out = common::lab(&[
        "--lab-dir",
        &lab_dir.to_string_lossy(),
        "demo",
        "--name",
        &name,
        "--proxy-mode",
        mode,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{}", common::text(&out));
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for row in [
        "sluice-overlay on every node",
        "sluice-proxy on every node",
        &format!("--proxy-mode {mode} on 2 nodes"),
        "pods via the sluice CNI plugin (ADD)",
        "externalTrafficPolicy: Local",
        "no endpoints (nothing): REJECT",
        "cluster DNS: kube-dns pod + Service",
        "cluster DNS by name: new Service, curl web",
        "down: every namespace, process, file gone",
    ] {
        assert!(stdout.contains(row), "no row {row:?}:\n{stdout}");
    }
    common::assert_nothing_left(&name, &lab_dir);
}
