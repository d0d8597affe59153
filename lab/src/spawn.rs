//! Starting the lab's long-lived processes *detached*: unlike the test bed's `Process` guard,
//! which stops its child on drop, these must keep running after `sluice-lab up` exits. Each
//! runs in its own process group (so a Ctrl-C in the terminal that ran `up` does not reach
//! it), with stdin from /dev/null and stdout + stderr appended to a log file in the lab
//! directory. Inside a lab namespace it is started through `ip netns exec`, which execs the
//! program, so it dies with the namespace when `down` removes it.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Starts `cmd` (inside namespace `netns` when given), logging to `log`.
pub(crate) fn detached(netns: Option<&str>, cmd: &Command, log: &Path) -> anyhow::Result<Child> {
    let mut wrapped = match netns {
        Some(ns) => {
            let mut w = Command::new("ip");
            w.args(["netns", "exec", ns]).arg(cmd.get_program());
            w
        }
        None => Command::new(cmd.get_program()),
    };
    wrapped.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    wrapped
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {}", cmd.get_program().to_string_lossy()))
}

/// The last `lines` lines of a log file (for error messages).
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
