//! Running a CNI plugin the way a container runtime does: a clean environment (only `PATH`
//! and the `CNI_*` variables the caller gives), the network configuration on stdin, the result
//! or error JSON on stdout. The lab, the CNI benchmark and the plugin's own tests all invoke
//! plugins through this one function.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// What the plugin answered.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status 0.
    pub ok: bool,
    /// The result (or error) JSON.
    pub stdout: String,
    /// Diagnostics.
    pub stderr: String,
}

/// Runs `cmd` (the plugin, or a wrapper such as `ip netns exec <ns> <plugin>`) with only
/// `PATH` and `env` set, writes `stdin` to it and waits for it.
pub fn exec(mut cmd: Command, env: &[(&str, &str)], stdin: &str) -> Result<Output> {
    let what = format!("exec CNI plugin {:?}", cmd.get_program());
    let mut child = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(what.clone(), e))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading its stdin is reported by its answer, not here.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::io(what, e))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
