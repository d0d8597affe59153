//! `sluice-lab up` leaves a working lab behind after it exits (pods answer across nodes,
//! kubectl reaches the API server on the host's loopback, `exec` and `curl` work), refuses a
//! second `up` on the same directory, and `down` removes every namespace, process and file —
//! also when `up` was killed half-way or is still running, and with the etcd subnet manager.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// A unique lab name and a lab directory for one test.
fn lab_place(tag: &str) -> (String, tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    (format!("lab-{tag}{}", std::process::id()), tmp, dir)
}

fn up(dir: &Path, name: &str, extra: &[&str]) {
    let d = dir.to_string_lossy();
    let mut args = vec!["--lab-dir", &d, "up", "--name", name, "--nodes", "2"];
    args.extend_from_slice(&["--pods-per-node", "1"]);
    args.extend_from_slice(extra);
    let out = common::lab(&args);
    assert!(out.status.success(), "up failed:\n{}", common::text(&out));
}

fn down(dir: &Path) {
    let out = common::lab(&["--lab-dir", &dir.to_string_lossy(), "down"]);
    assert!(out.status.success(), "down failed:\n{}", common::text(&out));
}

/// `sluice-lab curl FROM URL`'s stdout.
fn curl(dir: &Path, from: &str, url: &str) -> String {
    let out = common::lab(&["--lab-dir", &dir.to_string_lossy(), "curl", from, url]);
    assert!(out.status.success(), "curl failed:\n{}", common::text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
}

/// web-1 (node 1) reaches web-2 (node 2) by pod IP, which sees web-1's own address.
fn pods_talk(dir: &Path) {
    let s = state(dir);
    let ip = |i: usize| s["pods"][i]["ip"].as_str().unwrap().to_owned();
    let answer = curl(dir, "web-1", &format!("http://{}:8080/", ip(1)));
    assert!(
        answer.starts_with(&format!("sluice-echo web-2 {}:", ip(0))),
        "{answer}"
    );
}

#[test]
fn up_leaves_a_working_lab_and_down_removes_everything() {
    sluice_testbed::require_root();
    let (name, _tmp, dir) = lab_place("u");
    up(&dir, &name, &[]);
    pods_talk(&dir);
    // kubectl from the host, through the loopback forwarder.
    let url = state(&dir)["host_url"].as_str().unwrap().to_owned();
    let out = Command::new("kubectl")
        .arg(format!("--server={url}"))
        .arg(format!("--cache-dir={}", dir.join("kube-cache").display()))
        .args(["get", "nodes,pods", "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("node/node2") && names.contains("pod/web-2"),
        "{names}"
    );
    // exec runs inside the pod; its exit code is passed on.
    let d = dir.to_string_lossy();
    let out = common::lab(&["--lab-dir", &d, "exec", "web-2", "--", "ip", "-4", "addr"]);
    assert!(
        common::text(&out).contains("10.244.2."),
        "{}",
        common::text(&out)
    );
    let out = common::lab(&["--lab-dir", &d, "exec", "web-2", "--", "false"]);
    assert!(!out.status.success());
    // A second up on the same directory is refused and changes nothing.
    let again = common::lab(&["--lab-dir", &d, "up", "--name", &name]);
    assert!(!again.status.success());
    assert!(
        common::text(&again).contains("already"),
        "{}",
        common::text(&again)
    );
    pods_talk(&dir);
    down(&dir);
    common::assert_nothing_left(&name, &dir);
    down(&dir);
}

#[test]
fn the_etcd_subnet_manager_works_and_is_removed() {
    sluice_testbed::require_root();
    let (name, _tmp, dir) = lab_place("e");
    up(&dir, &name, &["--subnet-manager", "etcd"]);
    pods_talk(&dir);
    down(&dir);
    common::assert_nothing_left(&name, &dir);
}

/// `up` running in the background, its output discarded.
fn spawn_up(dir: &Path, name: &str, nodes: u8) -> std::process::Child {
    Command::new(common::LAB)
        .arg("--lab-dir")
        .arg(dir)
        .args(["up", "--name", name, "--nodes", &nodes.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn down_cleans_up_after_up_was_killed_half_way() {
    sluice_testbed::require_root();
    common::build_daemons();
    for (i, after) in [60u64, 200, 350].into_iter().enumerate() {
        let (name, _tmp, dir) = lab_place(&format!("k{i}-"));
        let mut up = spawn_up(&dir, &name, 2);
        std::thread::sleep(Duration::from_millis(after));
        let _ = up.kill();
        let _ = up.wait();
        down(&dir);
        common::assert_nothing_left(&name, &dir);
    }
}

#[test]
fn down_stops_an_up_that_is_still_building() {
    sluice_testbed::require_root();
    common::build_daemons();
    let (name, _tmp, dir) = lab_place("live-");
    let mut up = spawn_up(&dir, &name, 4);
    // Once `up` has recorded itself, `down` from "another terminal" while it still builds.
    while !dir.join("state.json").exists() && up.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    down(&dir);
    // Stopped by `down` itself (SIGKILL), not failing later on what `down` removed, and
    // nothing appears after `down` returned.
    let status = up.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "up must have been killed: {status}"
    );
    std::thread::sleep(Duration::from_millis(300));
    common::assert_nothing_left(&name, &dir);
}

#[test]
fn a_daemon_that_dies_fails_up_at_once_and_the_partial_lab_is_removed() {
    sluice_testbed::require_root();
    common::build_daemons();
    let (name, tmp, dir) = lab_place("f");
    // The real binaries, but a proxy that exits at once.
    let bins = tmp.path().join("bin");
    std::fs::create_dir(&bins).unwrap();
    let built = Path::new(common::LAB).parent().unwrap();
    for bin in ["sluice-overlay", "sluice"] {
        std::fs::copy(built.join(bin), bins.join(bin)).unwrap();
    }
    let proxy = bins.join("sluice-proxy");
    std::fs::write(&proxy, "#!/bin/sh\necho 'broken on purpose' >&2\nexit 1\n").unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&proxy)
        .status()
        .unwrap();
    let start = std::time::Instant::now();
    let out = common::lab(&[
        "--bin-dir",
        &bins.to_string_lossy(),
        "--lab-dir",
        &dir.to_string_lossy(),
        "up",
        "--name",
        &name,
        "--nodes",
        "1",
    ]);
    let text = common::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("proxy-node1 exited") && text.contains("broken on purpose"),
        "{text}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{text}");
    common::assert_nothing_left(&name, &dir);
}
