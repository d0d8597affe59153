// The build script of sluice-proxy, sluice-overlay and sluice-cni (each crate's build.rs is
// `include!("../build/revision.rs");`): sets `SLUICE_REVISION`, which `--version` prints —
// the `SLUICE_REVISION` environment variable when set (image builds, which have no .git, pass
// it), else `git rev-parse --short=12 HEAD`, else "unknown". Cheap: git runs only when HEAD or
// the branch it names moves, and a checkout without git still builds.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_REVISION");
    let revision = std::env::var("SLUICE_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SLUICE_REVISION={}", revision.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn git_revision() -> Option<String> {
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Run again when HEAD moves: HEAD itself, the branch it points to, and packed refs.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        // Only existing files: cargo runs a script watching a missing one on every build.
        let file = git(&["rev-parse", "--git-path", &path]);
        if let Some(p) = file.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    Some(revision)
}
