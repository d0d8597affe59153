//! `sluice-lab down`: removes everything a lab recorded — an `up` still building it, the lab
//! daemon (by PID, after checking each is still ours; also one an `up` killed before it could
//! record the PID, found by its command line), every namespace (with every process inside: daemons, etcd,
//! pods' echo servers, and every link and rule in it) and the lab directory. It works from the
//! record alone, so it also cleans up after an `up` that crashed or was killed half-way, and
//! running it twice is fine.

use std::path::Path;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_testbed::NetNs;

use crate::labdir::{LabDir, ProcRecord};

/// What was removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub(crate) namespaces: usize,
    pub(crate) processes: usize,
    pub(crate) containers: usize,
}

/// Removes the lab recorded in `dir`.
pub(crate) fn run(dir: &LabDir) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    if !dir.root().exists() {
        return Ok(removed);
    }
    if dir.has_state() {
        let state = dir.load()?;
        // An `up` still running (another terminal) would go on creating what this removes.
        if state.owner != std::process::id() && owner_alive(dir) {
            kill_and_wait(&[state.owner]);
        }
        // Containers first: their `podman run` processes end with them.
        for name in &state.containers {
            if crate::image::remove_container(name) {
                removed.containers += 1;
            }
        }
        for p in &state.processes {
            if kill_if_ours(p, dir.root()) {
                removed.processes += 1;
            }
        }
        removed.processes += kill_unrecorded_labd(dir.root());
        // An `up` killed half-way can leave an `ip netns add|exec <ours>` running that
        // would create a namespace after this removal: stop those first.
        kill_ip_stragglers(&state.namespaces);
        for ns in state.namespaces.iter().rev() {
            if NetNs::exists(ns) {
                NetNs::remove(ns).with_context(|| format!("remove namespace {ns}"))?;
                removed.namespaces += 1;
            }
            crate::resolv::remove(ns)?;
        }
        crate::cgroups::teardown(dir, &state)?;
    }
    std::fs::remove_dir_all(dir.root())
        .with_context(|| format!("remove {}", dir.root().display()))?;
    Ok(removed)
}

/// True when the process that built the lab recorded in `dir` (`up` or `demo`) still runs.
pub(crate) fn owner_alive(dir: &LabDir) -> bool {
    let Ok(state) = dir.load() else {
        return false;
    };
    state.owner != 0 && !gone(state.owner) && {
        let exe = std::fs::read_link(format!("/proc/{}/exe", state.owner)).ok();
        exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "sluice-lab"))
    }
}

/// True when `p` runs and its command line names the lab directory (not a recycled PID).
fn ours(p: &ProcRecord, root: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", p.pid)) else {
        return false;
    };
    !gone(p.pid)
        && raw
            .split(|b| *b == 0)
            .any(|a| Path::new(&*String::from_utf8_lossy(a)) == root)
}

/// SIGKILLs `p` if its command line still names this lab directory (a recycled PID is left
/// alone) and waits (bounded) until it is gone.
fn kill_if_ours(p: &ProcRecord, root: &Path) -> bool {
    if !ours(p, root) {
        return false;
    }
    kill_and_wait(&[p.pid]);
    true
}

/// SIGKILLs `pids` and waits (bounded) until they are gone.
fn kill_and_wait(pids: &[u32]) {
    for pid in pids {
        if let Ok(p) = i32::try_from(*pid) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    for _ in 0..100 {
        if pids.iter().all(|p| gone(*p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGKILLs the lab daemons of this lab directory that the record does not name — an `up`
/// killed between starting its lab daemon and recording the PID leaves one running — and
/// returns how many. Only `sluice-lab` processes whose command line is `labd` with this very
/// lab directory are touched.
fn kill_unrecorded_labd(root: &Path) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let strays: Vec<u32> = procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && !gone(*pid))
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let is_lab = exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "sluice-lab"));
            is_lab && {
                let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
                args.contains(&&b"labd"[..])
                    && (args.iter()).any(|a| Path::new(&*String::from_utf8_lossy(a)) == root)
            }
        })
        .collect();
    kill_and_wait(&strays);
    strays.len()
}

/// SIGKILLs every `ip` process whose command line names one of `namespaces` as an argument
/// (`ip netns add X`, `ip netns exec X …` of a killed `up`, before it execs) and waits until
/// they are gone. Nothing else on the host is touched: only the `ip` binary, only our names.
fn kill_ip_stragglers(namespaces: &[String]) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let stragglers: Vec<u32> = procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let is_ip = exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "ip"));
            is_ip && {
                let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (raw.split(|b| *b == 0)).any(|a| namespaces.iter().any(|n| n.as_bytes() == a))
            }
        })
        .collect();
    kill_and_wait(&stragglers);
}

/// True when the PID no longer runs (a zombie counts as gone).
pub(crate) fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}
