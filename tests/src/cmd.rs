//! Running external commands (`ip`, `etcdctl`, …) with errors that carry the command line.
//!
//! The test bed drives the kernel through the `ip` CLI on purpose: it is an independent
//! implementation from the products' netlink code, so a bug there cannot hide in both.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::error::{Error, Result};

/// Renders a command line for error messages.
pub(crate) fn render<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// Runs `program args…`, returning stdout; a failure carries the command line and stderr.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let line = render(program, args.clone());
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(line.clone(), e))?;
    check(line, output)
}

/// Turns a finished command's output into stdout or an [`Error::Command`].
pub(crate) fn check(line: String, output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stderr = if stderr.is_empty() {
        output.status.to_string()
    } else {
        stderr
    };
    Err(Error::Command { cmd: line, stderr })
}

/// Runs `ip args…` in the host's view (used only for `ip netns …` bookkeeping and reads).
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    run("ip", args)
}
