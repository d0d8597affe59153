//! Unique names, so that tests run in parallel (threads of one binary, several binaries, several
//! engineers' binaries on one machine) without colliding.
//!
//! Namespace names embed the PID of the creating process (`sl-<tag>-<pid>-<counter>`), which
//! also lets [`sweep_stale`] recognise leftovers of a test binary that was SIGKILLed and so
//! never ran its guards. Interface names only need to be unique inside one namespace, and all
//! of ours live in namespaces we created, but they are made unique per process anyway so logs
//! and `ip` output are unambiguous; they stay within the kernel's 15-byte limit.

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Prefix of every namespace the test bed creates.
pub const NETNS_PREFIX: &str = "sl-";

/// The kernel's limit for interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Longest tag kept in a namespace name, so names stay readable.
const TAG_MAX: usize = 24;

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();

/// The next value of the process-wide counter.
fn next() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Keeps `[a-z0-9-]` of `tag` (lowercased), at most `max` bytes; `x` when nothing is left.
fn sanitize(tag: &str, max: usize) -> String {
    let clean: String = tag
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(max)
        .collect();
    if clean.is_empty() {
        "x".to_owned()
    } else {
        clean
    }
}

/// A fresh namespace name `sl-<tag>-<pid>-<counter>`.
///
/// The first call in a process also runs [`sweep_stale`] once.
pub fn netns_name(tag: &str) -> String {
    SWEEP.call_once(|| drop(sweep_stale()));
    format!(
        "{NETNS_PREFIX}{}-{}-{}",
        sanitize(tag, TAG_MAX),
        std::process::id(),
        next()
    )
}

/// A fresh interface name `<prefix><counter in base 36>`, at most [`IFNAME_MAX`] bytes.
pub fn ifname(prefix: &str) -> String {
    let suffix = base36(next());
    let room = IFNAME_MAX.saturating_sub(suffix.len());
    format!("{}{suffix}", sanitize(prefix, room.min(8)))
}

/// `n` in lowercase base 36.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        // Invariant: `n % 36 < 36`, so the index is in bounds.
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The PID embedded in a test-bed namespace name, if `name` is one.
pub fn embedded_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let mut parts = rest.rsplitn(3, '-');
    let counter = parts.next()?;
    let pid = parts.next()?;
    let tag = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if tag.is_empty() || !digits(counter) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// True when a process with this PID exists (a zombie counts as gone).
pub fn pid_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// True when `/proc/<pid>/stat` says the process is a zombie.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Deletes test-bed namespaces whose creating process is gone, killing what still runs in them,
/// and kills test-bed etcds (`--name sl-etcd-<pid>-<n>`) whose starter is gone.
///
/// Returns the namespace names it removed. Failures are logged and skipped: sweeping is best effort.
pub fn sweep_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Path::new(crate::netns::NETNS_DIR)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = embedded_pid(&name) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        match crate::netns::remove_by_name(&name) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!("sweep stale namespace {name}: {e}"),
        }
    }
    if !removed.is_empty() {
        tracing::info!("swept stale test namespaces: {removed:?}");
    }
    let etcds = crate::etcd::sweep_stale();
    if !etcds.is_empty() {
        tracing::info!("killed stale test etcds: {etcds:?}");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_are_unique_and_parse_back() {
        let a = netns_name("Node_1");
        let b = netns_name("Node_1");
        assert_ne!(a, b);
        assert!(a.starts_with("sl-node1-"));
        assert_eq!(embedded_pid(&a), Some(std::process::id() as i32));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "sl-",
            "sl-1-2",
            "sl--1-2",
            "sl-x-1a-2",
            "other-x-1-2",
            "sl-x-1-",
        ] {
            assert_eq!(embedded_pid(name), None, "{name}");
        }
        assert_eq!(embedded_pid("sl-a-b-12-3"), Some(12));
    }

    #[test]
    fn ifnames_fit_the_kernel_limit() {
        for _ in 0..100 {
            assert!(ifname("averyveryverylongprefix").len() <= IFNAME_MAX);
        }
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36 * 36), "100");
    }

    #[test]
    fn we_are_alive() {
        assert!(pid_alive(std::process::id() as i32));
    }
}
