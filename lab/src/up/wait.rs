//! Bounded waiting: every wait in the lab has a deadline and says what it waited for, and a
//! wait for a daemon gives up at once when one of the lab's processes died (with its log).

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::Lab;
use crate::spawn;

/// How long `up` waits for a daemon to do its job.
pub(crate) const START_LIMIT: Duration = Duration::from_secs(20);

/// A process `up` started.
pub(crate) struct Started {
    pub(crate) child: Child,
    pub(crate) what: String,
    pub(crate) log: PathBuf,
}

/// Retries `f` every 50 ms until it returns `Some`, failing after `limit` with `what` and the
/// last error.
pub(crate) fn eventually<T>(
    what: &str,
    limit: Duration,
    f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    eventually_unless(what, limit, || None, f)
}

/// Like [`eventually`], but fails at once when `fatal` says why.
fn eventually_unless<T>(
    what: &str,
    limit: Duration,
    fatal: impl Fn() -> Option<String>,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!(": {e:#}"),
        }
        if let Some(why) = fatal() {
            bail!("{what}: {why}");
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}{last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Lab {
    /// Waits for `f` like [`eventually`] (for [`START_LIMIT`]), giving up when a process the
    /// lab started has exited.
    pub(crate) fn wait_for<T>(
        &self,
        what: &str,
        f: impl FnMut() -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        eventually_unless(what, START_LIMIT, || self.died(), f)
    }

    /// The first started process that is no longer running, with the end of its log.
    fn died(&self) -> Option<String> {
        let dead = self
            .children
            .iter()
            .find(|s| crate::down::gone(s.child.id()))?;
        Some(format!(
            "{} exited; the end of its log:\n{}",
            dead.what,
            spawn::log_tail(&dead.log, 8)
        ))
    }

    /// Collects the exit status of every child that has ended (bounded: 2 s), so a lab removed
    /// by the process that built it (the demo) leaves no zombie behind for init to reap.
    pub(crate) fn reap_children(&mut self) {
        for _ in 0..40 {
            self.children
                .retain_mut(|s| !matches!(s.child.try_wait(), Ok(Some(_)) | Err(_)));
            if self.children.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `cmd` detached (in `netns` when given), logging to `logs/<what>.log`.
    pub(crate) fn start(
        &mut self,
        netns: Option<&str>,
        cmd: &std::process::Command,
        what: &str,
    ) -> anyhow::Result<u32> {
        let log = self.dir.log(what);
        let child = spawn::detached(netns, cmd, &log)?;
        let pid = child.id();
        self.children.push(Started {
            child,
            what: what.to_owned(),
            log,
        });
        Ok(pid)
    }
}
