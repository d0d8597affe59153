//! Running the real `sluice-lab` binary the way a user does, with the daemons it starts built
//! next to it, and looking for anything a lab left behind.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part of the harness"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Once;

pub const LAB: &str = env!("CARGO_BIN_EXE_sluice-lab");

static BUILD: Once = Once::new();

/// Builds the daemons `sluice-lab` starts (cargo builds only this package's binary for its
/// tests); a no-op check when `cargo test --workspace` already built them.
pub fn build_daemons() {
    BUILD.call_once(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--manifest-path"])
            .arg(manifest)
            .args([
                "-p",
                "sluice-overlay",
                "-p",
                "sluice-proxy",
                "-p",
                "sluice-cni",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the daemons failed");
    });
}

/// Runs `sluice-lab args…` to completion.
pub fn lab(args: &[&str]) -> Output {
    build_daemons();
    Command::new(LAB)
        .args(args)
        .output()
        .expect("run sluice-lab")
}

/// Both outputs, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Namespaces whose name starts with `prefix-`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// Live (not zombie) processes whose command line mentions `needle`, but not this test.
pub fn processes(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'));
        if cmd.contains(needle) && !zombie {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Asserts that the lab `name` in `dir` left no namespace, process or file.
pub fn assert_nothing_left(name: &str, dir: &Path) {
    assert_eq!(namespaces(name), Vec::<String>::new(), "namespaces left");
    let needle = dir.to_string_lossy();
    assert_eq!(processes(&needle), Vec::<String>::new(), "processes left");
    assert!(!dir.exists(), "{} left", dir.display());
}
