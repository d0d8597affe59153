//! A guard for a child process (a daemon inside a namespace, or etcd on loopback) that is
//! stopped by PID and reaped when the guard drops — also when the test panics.
//!
//! Output goes to files in a private temporary directory rather than pipes: a pipe nobody
//! reads blocks a chatty daemon, and the files can be shown when a test fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// How long [`Process`] waits after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How often exits are polled.
const POLL: Duration = Duration::from_millis(10);

/// A running child process; SIGTERM, a short wait, SIGKILL and reaping on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    label: String,
    logs: tempfile::TempDir,
    /// Keeps the namespace the process runs in alive at least as long as the process.
    _ns: Option<NetNs>,
}

impl Process {
    /// Spawns `cmd` (stdin from /dev/null, stdout and stderr to log files).
    ///
    /// `label` names it in errors; `ns` is the namespace it runs in, if any.
    pub(crate) fn spawn(mut cmd: Command, label: String, ns: Option<NetNs>) -> Result<Self> {
        let logs = tempfile::Builder::new()
            .prefix("sl-proc-")
            .tempdir()
            .map_err(|e| Error::io(format!("create log dir for {label}"), e))?;
        let stdout = create(&logs.path().join("stdout.log"), &label)?;
        let stderr = create(&logs.path().join("stderr.log"), &label)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::io(format!("spawn {label}"), e))?;
        tracing::debug!("spawned {label} as pid {}", child.id());
        Ok(Self {
            child,
            label,
            logs,
            _ns: ns,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::io(format!("wait for {}", self.label), e))
    }

    /// Waits at most `timeout` for it to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    op: format!("wait for {} to exit", self.label),
                    after_ms: timeout.as_millis(),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Path of the file that collects its stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.logs.path().join("stdout.log")
    }

    /// Path of the file that collects its stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.logs.path().join("stderr.log")
    }

    /// Its stdout and stderr so far (for failure messages).
    pub fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- stdout\n{}--- stderr\n{}",
            read(self.stdout_path()),
            read(self.stderr_path())
        )
    }

    /// The last `lines` lines of [`Process::logs`].
    pub fn log_tail(&self, lines: usize) -> String {
        let all = self.logs();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops it now: SIGTERM, up to [`TERM_GRACE`], SIGKILL, reap. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        if let Ok(status) = self.wait_timeout(TERM_GRACE) {
            return Some(status);
        }
        tracing::warn!("{} ignored SIGTERM; killing", self.label);
        let _ = kill(pid, Signal::SIGKILL);
        self.child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates a log file.
fn create(path: &std::path::Path, label: &str) -> Result<File> {
    File::create(path).map_err(|e| Error::io(format!("create {} for {label}", path.display()), e))
}
