//! Removing a cgroup v2 directory that a test, a benchmark or the lab created: the kernel
//! refuses to remove a cgroup that still holds a process, so what is left in it is killed
//! first (never the caller), and the removal retried for a moment while they exit.

use std::io;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// SIGKILLs the processes in cgroup `path` (not this one) and removes it, retrying for up to
/// a second; a cgroup that is already gone is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if u32::try_from(pid).ok() != Some(std::process::id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if std::fs::remove_dir(path).is_ok() || !path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::other(format!(
        "cgroup {} still busy",
        path.display()
    )))
}
