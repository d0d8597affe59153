//! Network namespaces as RAII guards, and running code or processes inside them.
//!
//! Everything the test bed builds lives in namespaces it created, so a test can never touch the
//! host's links, routes or rulesets, and dropping the guard (also while unwinding from a panic)
//! removes it all. A namespace belongs to an OS *thread* (`setns` is per thread), so code runs
//! inside one on a dedicated thread that is joined afterwards — never on a tokio worker, which
//! would silently move other tasks into the namespace. Processes are started through
//! `ip netns exec`, which execs the command (so the PID we hold is the command's) and needs no
//! `pre_exec` (the workspace forbids unsafe code).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd;
use crate::error::{Error, Result};
use crate::names;
use crate::process::Process;

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// Serialises `ip netns add` within the process: the first one turns `/run/netns` into a shared
/// mount point, and concurrent first calls can stack several mounts there.
static ADD_LOCK: Mutex<()> = Mutex::new(());

/// How long removal waits for killed processes to vanish.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// A network namespace that is deleted (with everything still running in it) when the last
/// clone drops. Cloning is cheap and shares ownership, so link guards and processes keep their
/// namespace alive.
#[derive(Clone, Debug)]
pub struct NetNs(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    /// False for handles to namespaces that outlive this process (see [`NetNs::persistent`]).
    owned: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = remove_by_name(&self.name) {
            tracing::warn!("remove namespace {}: {e}", self.name);
        }
    }
}

impl NetNs {
    /// Creates a namespace named `sl-<tag>-<pid>-<n>` with `lo` up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = names::netns_name(tag);
        {
            let _serial = ADD_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cmd::ip(["netns", "add", name.as_str()])?;
        }
        let ns = Self(Arc::new(Inner { name, owned: true }));
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates namespace `name` exactly (with `lo` up) that is *not* removed when the handle
    /// drops and never swept: for the lab, whose namespaces outlive the command that made them.
    /// The caller records the name and removes it with [`NetNs::remove`].
    pub fn persistent(name: &str) -> Result<Self> {
        {
            let _serial = ADD_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cmd::ip(["netns", "add", name])?;
        }
        let ns = Self::handle(name);
        if let Err(e) = ns.ip(["link", "set", "lo", "up"]) {
            // Not handed out, so nobody else would remove it.
            let _ = remove_by_name(name);
            return Err(e);
        }
        Ok(ns)
    }

    /// A handle to the existing namespace `name`; dropping it leaves the namespace alone.
    pub fn open(name: &str) -> Result<Self> {
        if !Self::exists(name) {
            return Err(Error::invalid(
                format!("open namespace {name}"),
                "no such namespace",
            ));
        }
        Ok(Self::handle(name))
    }

    fn handle(name: &str) -> Self {
        Self(Arc::new(Inner {
            name: name.to_owned(),
            owned: false,
        }))
    }

    /// Kills every process in namespace `name` and deletes it; a missing namespace is fine.
    pub fn remove(name: &str) -> Result<()> {
        remove_by_name(name)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The namespace's bind mount, `/run/netns/<name>` (what CNI calls `CNI_NETNS`).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(self.name())
    }

    /// True when a namespace of that name exists.
    pub fn exists(name: &str) -> bool {
        Path::new(NETNS_DIR).join(name).exists()
    }

    /// Runs `ip -n <name> args…` and returns its stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<std::ffi::OsStr>,
    {
        let full = ["-n", self.name()]
            .into_iter()
            .map(std::ffi::OsString::from)
            .chain(args.into_iter().map(|a| a.as_ref().to_owned()));
        cmd::ip(full.collect::<Vec<_>>())
    }

    /// Runs `ip netns exec <name> args…` to completion and returns its stdout.
    pub fn exec<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<std::ffi::OsStr>,
    {
        let full = ["netns", "exec", self.name()]
            .into_iter()
            .map(std::ffi::OsString::from)
            .chain(args.into_iter().map(|a| a.as_ref().to_owned()));
        cmd::ip(full.collect::<Vec<_>>())
    }

    /// Starts `cmd` inside the namespace (program, arguments, environment changes and working
    /// directory are taken from it; stdio goes to the [`Process`]'s log files).
    pub fn spawn(&self, cmd: &Command) -> Result<Process> {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", self.name()])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let label = cmd::render(
            &format!("ip netns exec {}", self.name()),
            std::iter::once(cmd.get_program()).chain(cmd.get_args()),
        );
        Process::spawn(wrapped, label, Some(self.clone()))
    }

    /// Runs `f` inside the namespace on a dedicated OS thread and returns its result.
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let path = self.path();
        thread::scope(|s| {
            let handle = s.spawn(move || enter(&path).map(|()| f()));
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts a long-lived thread inside the namespace running `f`; returns once the thread is
    /// in the namespace (or failed to get there).
    pub fn thread<T, F>(&self, name: &str, f: F) -> Result<JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = self.path();
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let entered = enter(&path);
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                // Invariant: the spawner only keeps the handle when entering succeeded, and
                // otherwise joins right away; `f` must not run outside the namespace.
                assert!(ok, "thread could not enter its namespace");
                f()
            })
            .map_err(|e| Error::io(format!("spawn thread {name}"), e))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(Error::protocol(
                format!("start thread {name}"),
                "thread ended before reporting",
            )),
        }
    }

    /// PIDs of the processes in the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids_of(self.name())
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys(format!("setns {}", path.display()), e))
}

/// PIDs in namespace `name`, never our own.
fn pids_of(name: &str) -> Result<Vec<i32>> {
    let out = cmd::ip(["netns", "pids", name])?;
    let own = std::process::id() as i32;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != own)
        .collect())
}

/// Kills every process in namespace `name` and deletes it; a missing namespace is fine.
pub(crate) fn remove_by_name(name: &str) -> Result<()> {
    if !NetNs::exists(name) {
        return Ok(());
    }
    kill_all(name);
    match cmd::ip(["netns", "del", name]) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// SIGKILLs the processes in `name` and waits (bounded) until none is left.
fn kill_all(name: &str) {
    let start = Instant::now();
    loop {
        let pids = pids_of(name).unwrap_or_default();
        let alive: Vec<i32> = pids.into_iter().filter(|&p| names::pid_alive(p)).collect();
        if alive.is_empty() || start.elapsed() >= KILL_WAIT {
            if !alive.is_empty() {
                tracing::warn!("processes {alive:?} survived SIGKILL in {name}");
            }
            return;
        }
        for pid in alive {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(10));
    }
}
