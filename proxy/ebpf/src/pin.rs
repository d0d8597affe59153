//! The file-system side: the bpffs directory pins live in (mounted at `/sys/fs/bpf` when that
//! is not yet a bpffs, as a node's DaemonSet expects), the cgroup v2 root found in
//! `/proc/self/mountinfo`, and removing every pin (`--cleanup`).

use std::path::{Path, PathBuf};

use aya::programs::links::PinnedLink;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};

use crate::error::EbpfError;

/// The default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sluice";

fn fs_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EbpfError + 'a {
    move |source| EbpfError::Fs {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is on a bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes `dir` exist on a bpffs: its parent must be one, except `/sys/fs/bpf` itself, which
/// is mounted when it is not.
pub fn ensure_dir(dir: &Path) -> Result<(), EbpfError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if !on_bpffs(parent) {
        if parent != Path::new("/sys/fs/bpf") {
            return Err(EbpfError::Fs {
                what: "not a bpffs (mount one: mount -t bpf bpf DIR)",
                path: parent.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        }
        std::fs::create_dir_all(parent).map_err(fs_err("create", parent))?;
        nix::mount::mount(
            Some("bpf"),
            parent,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| fs_err("mount bpffs on", parent)(e.into()))?;
        tracing::info!(path = %parent.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(dir).map_err(fs_err("create", dir))
}

/// Unpins the link pinned at `path` (detaching it when nothing else holds it); nothing when
/// there is no pin.
pub fn unpin_link(path: &Path) -> Result<(), EbpfError> {
    if !path.exists() {
        return Ok(());
    }
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let _detached = link.unpin().map_err(fs_err("unpin", path))?;
            Ok(())
        }
        // Not a link (or unreadable): the file goes anyway.
        Err(_) => std::fs::remove_file(path).map_err(fs_err("remove", path)),
    }
}

/// Removes every pin in `dir` (links first, so the programs detach before their maps go) and
/// the directory; nothing when `dir` does not exist or is not on a bpffs.
pub fn remove_all(dir: &Path) -> Result<(), EbpfError> {
    if !dir.exists() || !on_bpffs(dir) {
        return Ok(());
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(fs_err("read", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for path in names {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
        {
            unpin_link(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(fs_err("remove", &path))?;
        }
    }
    std::fs::remove_dir(dir).map_err(fs_err("remove", dir))
}

/// A network interface the tc programs attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its first IPv4 address (picked by `nets`: the first inside them): the SNAT source for
    /// IPv4 flows leaving through it.
    pub addr: Option<std::net::Ipv4Addr>,
    /// Its first IPv6 address that is not link-local (picked by `nets`: the first inside
    /// them): the SNAT source for IPv6 flows.
    pub addr6: Option<std::net::Ipv6Addr>,
}

/// The interfaces of this network namespace called `names`, or (no names) holding an address
/// inside one of `nets` (either family); loopback never. Nothing when both are empty.
pub fn interfaces(names: &[String], nets: &[ipnet::IpNet]) -> Vec<Iface> {
    let mut out: Vec<Iface> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifa in addrs {
        let Some(addr) = ifa.address.as_ref().and_then(|a| {
            (a.as_sockaddr_in().map(|a| std::net::IpAddr::V4(a.ip())))
                .or_else(|| a.as_sockaddr_in6().map(|a| std::net::IpAddr::V6(a.ip())))
        }) else {
            continue;
        };
        let link_local = match addr {
            std::net::IpAddr::V6(a) => a.is_unicast_link_local(),
            std::net::IpAddr::V4(_) => false,
        };
        let name = ifa.interface_name;
        let wanted = match names.is_empty() {
            true => nets.iter().any(|n| n.contains(&addr)),
            false => names.contains(&name),
        };
        if addr.is_loopback() || link_local || !wanted {
            continue;
        }
        let at = match out.iter().position(|i| i.name == name) {
            Some(at) => at,
            None => {
                let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) else {
                    continue;
                };
                out.push(Iface {
                    name,
                    index,
                    addr: None,
                    addr6: None,
                });
                out.len() - 1
            }
        };
        match addr {
            std::net::IpAddr::V4(a) => {
                out[at].addr.get_or_insert(a);
            }
            std::net::IpAddr::V6(a) => {
                out[at].addr6.get_or_insert(a);
            }
        }
    }
    out
}

/// The ports of the bridges among `bridges` (`/sys/class/net/*/master`): name and index.
pub fn bridge_ports(bridges: &[String]) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(master) = std::fs::read_link(e.path().join("master")) else {
            continue;
        };
        let is_ours = master
            .file_name()
            .is_some_and(|m| bridges.iter().any(|b| m == b.as_str()));
        let name = e.file_name().to_string_lossy().into_owned();
        if is_ours && let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) {
            out.push((name, index));
        }
    }
    out.sort();
    out
}

/// Unpins every tc link in `dir` (a restarted proxy attaches its own).
pub fn remove_tc_pins(dir: &Path) -> Result<(), EbpfError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("tc_") {
            unpin_link(&e.path())?;
        }
    }
    Ok(())
}

/// The first cgroup v2 mount point in `/proc/self/mountinfo` (the node's cgroup2 root).
pub fn cgroup2_root() -> Result<PathBuf, EbpfError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(fs_err("read", Path::new("/proc/self/mountinfo")))?;
    cgroup2_in(&text).ok_or(EbpfError::NoCgroup2)
}

/// The cgroup2 mount point in a mountinfo text.
pub fn cgroup2_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let text = "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
                    33 26 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_in(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_in("25 30 0:23 / /sys rw - sysfs sysfs rw"), None);
    }
}
