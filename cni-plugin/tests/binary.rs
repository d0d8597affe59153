//! The real binary, as a runtime execs it: env + stdin in, JSON on stdout, exit code.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

fn exec(env: &[(&str, &str)], stdin: &str) -> (bool, String) {
    let out = common::run_plugin(Path::new(common::BIN), env, stdin);
    (out.ok, out.stdout)
}

#[test]
fn version_echoes_the_input_version() {
    let (ok, out) = exec(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert!(ok);
    assert_eq!(
        out,
        r#"{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
    );
}

#[test]
fn status_is_code_50_until_subnet_env_exists_then_ready() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subnet.env");
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","subnetFile":"{}"}}"#,
        file.display()
    );
    let (ok, out) = exec(&[("CNI_COMMAND", "STATUS")], &conf);
    assert!(!ok);
    let err: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(err["code"], 50);
    assert!(
        err["details"].as_str().unwrap().contains("subnet.env"),
        "{out}"
    );
    std::fs::write(&file, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n").unwrap();
    let (ok, out) = exec(&[("CNI_COMMAND", "STATUS")], &conf);
    assert!(ok && out.is_empty(), "{out}");
    // STATUS needs spec 1.1.0.
    let old = conf.replace("1.1.0", "1.0.0");
    let (ok, out) = exec(&[("CNI_COMMAND", "STATUS")], &old);
    assert!(!ok && out.contains(r#""code":1"#), "{out}");
}

#[test]
fn errors_are_spec_json_on_stdout_with_the_right_codes() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
    ];
    let (ok, out) = exec(&add, r#"{"cniVersion":"1.0.0","name":"n","type":"sluice"}"#);
    assert!(!ok);
    assert_eq!(
        out,
        r#"{"cniVersion":"1.0.0","code":4,"msg":"required env variables [CNI_IFNAME] missing"}"#
    );
    let full = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];
    for (stdin, code) in [
        ("{nope", 6),
        (r#"{"cniVersion":"1.0.0","type":"sluice"}"#, 7),
        (r#"{"cniVersion":"9.9.9","name":"n","type":"sluice"}"#, 1),
    ] {
        let (ok, out) = exec(&full, stdin);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(!ok && v["code"] == code, "{stdin}: {out}");
    }
}

/// #41: `sluice install` replaces the plugin while a runtime keeps exec'ing it: every exec
/// sees a whole binary (no "text file busy", no half-written file).
#[test]
fn install_replaces_the_binary_while_it_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    let install = |names: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["install", "--bin-dir", bin_dir.to_str().unwrap()]);
        for n in names {
            cmd.args(["--name", n]);
        }
        assert!(cmd.status().unwrap().success());
    };
    install(&["sluice", "flannel"]);
    let installed = bin_dir.join("sluice");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || runs < 20 {
                let out = Command::new(&installed)
                    .env_clear()
                    .env("CNI_COMMAND", "VERSION")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap_or_else(|e| panic!("exec during install: {e}"));
                assert!(out.status.success(), "run {runs}");
                runs += 1;
            }
            runs
        });
        for _ in 0..20 {
            install(&["sluice"]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(runner.join().unwrap() >= 20);
    });
    assert!(bin_dir.join("flannel").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}
