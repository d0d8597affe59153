//! `--proxy-mode ebpf` in the lab: the socket-level load balancer works on the sockets of one
//! cgroup, so every lab node gets a child cgroup of its own, holding that node's pod
//! processes (and, while it sends, this process), and its proxy attaches there — never to the
//! host's root cgroup.
//!
//! The proxies run under `ip netns exec`, which remounts `/sys`, so neither
//! `/sys/fs/cgroup/unified` nor `/sys/fs/bpf` is visible to them: the lab mounts its own
//! cgroup2 (the same, single hierarchy) and its own bpffs (the proxies' pins: they survive a
//! proxy restart) under the lab directory, and `down` removes cgroups and mounts.
//!
//! The lab's own requests "from a pod" or "from a node" are sent by this process from inside
//! that namespace; under ebpf they must come from the node's cgroup too, so [`join`] moves
//! this process there for the duration (the lab sends from one place at a time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, statfs};

use crate::labdir::{LabDir, State};

/// Namespace → the cgroup its senders belong in (filled by [`register`]).
static SENDERS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

fn cgroup_mount(dir: &LabDir) -> PathBuf {
    dir.path("cgroup2")
}

fn bpf_mount(dir: &LabDir) -> PathBuf {
    dir.path("bpf")
}

/// The lab's cgroup (parent of the nodes').
fn lab_cgroup(dir: &LabDir, state: &State) -> PathBuf {
    cgroup_mount(dir).join(format!("sluice-lab-{}", state.name))
}

/// Node `node`'s cgroup.
pub(crate) fn node_cgroup(dir: &LabDir, state: &State, node: &str) -> PathBuf {
    lab_cgroup(dir, state).join(node)
}

/// Whether the lab runs the eBPF mode.
pub(crate) fn ebpf(state: &State) -> bool {
    state.proxy_mode == "ebpf"
}

fn mounted(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == magic)
}

/// Mounts the lab's cgroup2 and bpffs and creates the node cgroups.
pub(crate) fn setup(dir: &LabDir, state: &State, nodes: &[String]) -> anyhow::Result<()> {
    for (path, fstype, magic) in [
        (cgroup_mount(dir), "cgroup2", CGROUP2_SUPER_MAGIC),
        (bpf_mount(dir), "bpf", BPF_FS_MAGIC),
    ] {
        std::fs::create_dir_all(&path)?;
        if !mounted(&path, magic) {
            mount(
                Some(fstype),
                &path,
                Some(fstype),
                MsFlags::empty(),
                None::<&str>,
            )
            .with_context(|| format!("mount {fstype} on {}", path.display()))?;
        }
    }
    for node in nodes {
        std::fs::create_dir_all(node_cgroup(dir, state, node))
            .with_context(|| format!("create the cgroup of {node}"))?;
    }
    Ok(())
}

/// The proxy flags that point node `node`'s proxy at its cgroup and pin directory.
pub(crate) fn proxy_flags(dir: &LabDir, state: &State, node: &str) -> Vec<String> {
    vec![
        "--ebpf-cgroup".into(),
        node_cgroup(dir, state, node).display().to_string(),
        "--ebpf-pin-dir".into(),
        bpf_mount(dir).join(node).display().to_string(),
    ]
}

/// Moves process `pid` into node `node`'s cgroup.
pub(crate) fn add(dir: &LabDir, state: &State, node: &str, pid: u32) -> anyhow::Result<()> {
    let procs = node_cgroup(dir, state, node).join("cgroup.procs");
    std::fs::write(&procs, pid.to_string()).with_context(|| format!("write {}", procs.display()))
}

/// Remembers which cgroup each pod's and node's namespace sends from (ebpf mode only).
pub(crate) fn register(dir: &LabDir, state: &State) {
    if !ebpf(state) {
        return;
    }
    let mut senders = SENDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for pod in state.pods.iter().chain(&state.dns) {
        senders.insert(pod.netns.clone(), node_cgroup(dir, state, &pod.node));
    }
    for i in 1..=state.nodes {
        let node = format!("node{i}");
        senders.insert(state.ns(&node), node_cgroup(dir, state, &node));
    }
}

/// The cgroup namespace `netns` sends from, when registered.
pub(crate) fn sender_cgroup(netns: &str) -> Option<PathBuf> {
    SENDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(netns)
        .cloned()
}

/// While held, this process is in a node's cgroup; dropping it moves the process back.
#[must_use]
pub(crate) struct Joined {
    back: Option<PathBuf>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(back) = &self.back {
            let _ = std::fs::write(back, "0");
        }
    }
}

/// Joins the cgroup namespace `netns` sends from (nothing outside ebpf mode, or for the
/// client and the underlay).
pub(crate) fn join(netns: &str) -> Joined {
    let Some(target) = sender_cgroup(netns) else {
        return Joined { back: None };
    };
    let back = own_cgroup_procs(&target);
    match std::fs::write(target.join("cgroup.procs"), "0") {
        Ok(()) => Joined { back },
        Err(e) => {
            eprintln!("sluice-lab: join {}: {e}", target.display());
            Joined { back: None }
        }
    }
}

/// `cgroup.procs` of this process's current cgroup v2, through the lab's mount (which shows
/// the whole hierarchy; found as the ancestor of `node_cgroup` two levels up).
fn own_cgroup_procs(node_cgroup: &Path) -> Option<PathBuf> {
    let mount = node_cgroup.parent()?.parent()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')).join("cgroup.procs"))
}

/// Removes the node cgroups (killing what is left in them) and the lab's mounts; nothing when
/// they are not there.
pub(crate) fn teardown(dir: &LabDir, state: &State) -> anyhow::Result<()> {
    let cg = cgroup_mount(dir);
    if mounted(&cg, CGROUP2_SUPER_MAGIC) {
        let lab = lab_cgroup(dir, state);
        if lab.exists() {
            for entry in std::fs::read_dir(&lab)?.flatten() {
                if entry.path().is_dir() {
                    sluice_testbed::cgroup::remove(&entry.path())?;
                }
            }
            sluice_testbed::cgroup::remove(&lab)?;
        }
        umount2(&cg, MntFlags::MNT_DETACH).with_context(|| format!("umount {}", cg.display()))?;
    }
    let bpf = bpf_mount(dir);
    if mounted(&bpf, BPF_FS_MAGIC) {
        umount2(&bpf, MntFlags::MNT_DETACH).with_context(|| format!("umount {}", bpf.display()))?;
    }
    Ok(())
}
