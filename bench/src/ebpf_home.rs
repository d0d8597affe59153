//! Where an ebpf-mode `sluice-proxy` started by the bench attaches and pins: a child cgroup
//! of its own (the socket load balancer works on that cgroup's sockets, never the host's
//! root cgroup) and a private bpffs, both mounted under a temporary directory outside `/sys`
//! (the proxy runs under `ip netns exec`, which remounts `/sys` and hides
//! `/sys/fs/cgroup/unified` and `/sys/fs/bpf`). The tc programs attach to the interfaces of
//! the proxy's own network namespace, which the bench created.
//!
//! The bench's clients send from this process: [`EbpfHome::join`] moves it into the child
//! cgroup for as long as the guard lives. Dropped, the home unmounts the bpffs (the pinned
//! links go, so nothing stays attached), removes the cgroup and unmounts the cgroup2 mount.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Homes made by this process (unique cgroup names).
static HOMES: AtomicU32 = AtomicU32::new(0);

/// A child cgroup and a bpffs, removed on drop.
pub(crate) struct EbpfHome {
    dir: tempfile::TempDir,
    cgroup: PathBuf,
}

impl EbpfHome {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        for (sub, fstype) in [("cgroup2", "cgroup2"), ("bpf", "bpf")] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path)?;
            mount(
                Some(fstype),
                &path,
                Some(fstype),
                MsFlags::empty(),
                None::<&str>,
            )
            .with_context(|| format!("mount {fstype} on {}", path.display()))?;
        }
        let n = HOMES.fetch_add(1, Ordering::Relaxed);
        let cgroup =
            (dir.path().join("cgroup2")).join(format!("sluice-bench-{}-{n}", std::process::id()));
        let home = Self { dir, cgroup };
        std::fs::create_dir(&home.cgroup)
            .with_context(|| format!("create cgroup {}", home.cgroup.display()))?;
        Ok(home)
    }

    /// `--ebpf-cgroup` and `--ebpf-pin-dir` for the proxy.
    pub(crate) fn proxy_flags(&self) -> [String; 4] {
        [
            "--ebpf-cgroup".into(),
            self.cgroup.display().to_string(),
            "--ebpf-pin-dir".into(),
            self.bpffs().join("sluice").display().to_string(),
        ]
    }

    fn bpffs(&self) -> PathBuf {
        self.dir.path().join("bpf")
    }

    /// Moves this process (every thread, and what it spawns meanwhile) into the child cgroup
    /// until the guard drops.
    pub(crate) fn join(&self) -> anyhow::Result<Joined> {
        let text = std::fs::read_to_string("/proc/self/cgroup")?;
        let own = (text.lines().find_map(|l| l.strip_prefix("0::"))).context("no cgroup v2")?;
        let back = (self.dir.path().join("cgroup2"))
            .join(own.trim_start_matches('/'))
            .join("cgroup.procs");
        let procs = self.cgroup.join("cgroup.procs");
        std::fs::write(&procs, "0").with_context(|| format!("write {}", procs.display()))?;
        Ok(Joined { back })
    }
}

impl Drop for EbpfHome {
    fn drop(&mut self) {
        let _ = umount2(&self.bpffs(), MntFlags::MNT_DETACH);
        let _ = sluice_testbed::cgroup::remove(&self.cgroup);
        let _ = umount2(&self.dir.path().join("cgroup2"), MntFlags::MNT_DETACH);
    }
}

/// This process is in the child cgroup while held.
#[must_use]
pub(crate) struct Joined {
    back: PathBuf,
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.back, "0") {
            eprintln!(
                "sluice-bench: leave the cgroup ({}): {e}",
                self.back.display()
            );
        }
    }
}
