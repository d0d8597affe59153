//! The host-local-compatible store on disk. Every operation holds the `lock` file's flock, so
//! parallel plugin invocations (the runtime starts pods concurrently) never hand out one
//! address twice; a reservation is a file created with `O_EXCL`.
//!
//! The directory is shared with host-local and with whoever else writes there, so an entry
//! named like an address that cannot be read as a reservation — a directory, a dangling
//! symlink, a file that is not UTF-8 or is far larger than one — is skipped with a log line,
//! as host-local skips it, instead of failing every ADD and DEL of the network. Its address
//! is never handed out (the entry exists, so the exclusive create fails), and it is never
//! removed: it is not the plugin's.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::range::Range;
use crate::config::Attachment;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A file operation failed.
    #[error("ipam store {}: {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Every address of the range is taken.
    #[error("no IP addresses available in range {0}")]
    Exhausted(ipnet::IpNet),
    /// A requested address cannot be had.
    #[error("requested IP address {ip} is not available: {reason}")]
    Requested {
        /// The address asked for.
        ip: IpAddr,
        /// Why not.
        reason: &'static str,
    },
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> IpamError {
    let path = path.to_owned();
    move |source| IpamError::Io {
        path,
        action,
        source,
    }
}

/// The largest reservation file read (`<containerID>\r\n<ifname>`, container IDs being at
/// most [`crate::env::MAX_CONTAINER_ID`] bytes).
const MAX_RESERVATION: usize = 8 << 10;

/// One network's store, `<root>/<network>/`, locked for as long as it lives.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating if needed) and locks the store of `network` under `root`.
    pub fn lock(root: &Path, network: &str) -> Result<Self, IpamError> {
        let dir = root.join(network);
        fs::create_dir_all(&dir).map_err(io(&dir, "create"))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| IpamError::Io {
            path: path.clone(),
            action: "flock",
            source: e.into(),
        })?;
        Ok(Self { dir, _lock: lock })
    }

    /// Every address `(id, ifname)` holds.
    pub fn held(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|(_, owner)| owns(owner, id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Reserves an address of `range` (range set number `set`, host-local's
    /// `last_reserved_ip.<set>`) for `(id, ifname)`: the one it already holds there (never a
    /// second one), else `requested` if given and free, else the next free one after the last
    /// reserved, round-robin.
    pub fn allocate(
        &self,
        set: usize,
        range: &Range,
        owner: (&str, &str),
        requested: Option<IpAddr>,
    ) -> Result<IpAddr, IpamError> {
        let (id, ifname) = owner;
        if let Some(held) = self
            .held(id, ifname)?
            .into_iter()
            .find(|ip| range.contains(*ip))
        {
            return Ok(held);
        }
        let last_path = self.dir.join(format!("last_reserved_ip.{set}"));
        if let Some(ip) = requested {
            if !range.contains(ip) {
                return Err(IpamError::Requested {
                    ip,
                    reason: "outside the node's range",
                });
            }
            return match self.reserve(ip, id, ifname, &last_path)? {
                true => Ok(ip),
                false => Err(IpamError::Requested {
                    ip,
                    reason: "already allocated",
                }),
            };
        }
        let last = sluice_model::bounded::read_to_string(&last_path, 64)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        for ip in range.after(last) {
            if self.reserve(ip, id, ifname, &last_path)? {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(range.subnet))
    }

    /// Creates the reservation file; false when someone holds the address.
    fn reserve(&self, ip: IpAddr, id: &str, ifname: &str, last: &Path) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let written = (f.write_all(format!("{id}\r\n{ifname}").as_bytes()))
                    .map_err(io(&path, "write"))
                    .and_then(|()| fs::write(last, ip.to_string()).map_err(io(last, "write")));
                if let Err(e) = written {
                    // A file system that is full (or read-only, or failing) took the name but
                    // not the owner: an empty reservation would hold the address forever.
                    drop(f);
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(&path, "create")(e)),
        }
    }

    /// Releases every address `(id, ifname)` holds (also host-local's legacy `id`-only files);
    /// releasing nothing is fine (DEL is idempotent).
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.remove_where(|owner| owns(owner, id, ifname))
    }

    /// Releases every address whose owner is not in `keep` (CNI GC).
    pub fn gc(&self, keep: &[Attachment]) -> Result<Vec<IpAddr>, IpamError> {
        self.remove_where(|owner| !keep.iter().any(|a| owns(owner, &a.container_id, &a.ifname)))
    }

    /// Every reservation: address and owner file content. Entries that cannot be read as
    /// one are skipped with a log line on stderr.
    pub fn reservations(&self) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir, "list"))? {
            let entry = entry.map_err(io(&self.dir, "list"))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match sluice_model::bounded::read_to_string(&path, MAX_RESERVATION) {
                Ok(owner) => out.push((ip, owner)),
                Err(e) => eprintln!(
                    "sluice: ipam store {}: not a reservation ({e}); skipping it",
                    path.display()
                ),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The attachments (container ID, ifname) holding addresses; host-local's legacy
    /// ID-only files name no interface and are left out.
    pub fn owners(&self) -> Result<Vec<(String, String)>, IpamError> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter_map(|(_, content)| {
                let mut lines = content.lines().map(str::trim);
                Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
            })
            .collect())
    }

    fn remove_where(&self, doomed: impl Fn(&str) -> bool) -> Result<Vec<IpAddr>, IpamError> {
        let mut released = Vec::new();
        for (ip, owner) in self.reservations()? {
            if doomed(&owner) {
                let path = self.dir.join(ip.to_string());
                fs::remove_file(&path).map_err(io(&path, "remove"))?;
                released.push(ip);
            }
        }
        Ok(released)
    }
}

/// Whether a reservation file's content names `(id, ifname)` (or just `id`, host-local's
/// legacy format).
fn owns(content: &str, id: &str, ifname: &str) -> bool {
    let mut lines = content.lines().map(str::trim);
    lines.next() == Some(id) && lines.next().is_none_or(|i| i == ifname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Range {
        Range::of("10.244.1.0/24".parse().unwrap()).unwrap()
    }

    #[test]
    fn writes_host_locals_format_and_round_robins() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path(), "cbr0").unwrap();
        let a = s.allocate(0, &range(), ("c1", "eth0"), None).unwrap();
        assert_eq!(a.to_string(), "10.244.1.2");
        assert_eq!(
            fs::read(dir.path().join("cbr0/10.244.1.2")).unwrap(),
            b"c1\r\neth0"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("cbr0/last_reserved_ip.0")).unwrap(),
            "10.244.1.2"
        );
        assert_eq!(
            s.allocate(0, &range(), ("c1", "eth0"), None).unwrap(),
            a,
            "no second address for the same pair"
        );
        assert_eq!(s.release("c1", "eth0").unwrap(), vec![a]);
        assert_eq!(
            s.allocate(0, &range(), ("c2", "eth0"), None)
                .unwrap()
                .to_string(),
            "10.244.1.3",
            "round-robin"
        );
        assert!(s.release("nobody", "eth0").unwrap().is_empty());
    }

    #[test]
    fn reads_legacy_files_and_gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path(), "n").unwrap();
        fs::write(dir.path().join("n/10.244.1.7"), "old").unwrap();
        assert_eq!(
            s.held("old", "eth0")
                .unwrap()
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>(),
            ["10.244.1.7"]
        );
        s.allocate(0, &range(), ("keep", "eth0"), None).unwrap();
        s.allocate(0, &range(), ("drop", "eth0"), None).unwrap();
        let keep = [Attachment {
            container_id: "keep".into(),
            ifname: "eth0".into(),
        }];
        let released: Vec<String> = s
            .gc(&keep)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(released, ["10.244.1.3", "10.244.1.7"]);
        assert_eq!(s.reservations().unwrap().len(), 1);
    }

    /// Each thread opens and flocks the store on its own, as parallel plugin processes do.
    #[test]
    fn hundred_parallel_allocations_are_distinct_and_releases_empty_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let take = |i: usize, root: PathBuf| {
            std::thread::spawn(move || {
                Store::lock(&root, "n")
                    .unwrap()
                    .allocate(0, &range(), (&format!("c{i}"), "eth0"), None)
                    .unwrap()
            })
        };
        let handles: Vec<_> = (0..100).map(|i| take(i, root.clone())).collect();
        let ips: std::collections::BTreeSet<IpAddr> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ips.len(), 100);
        let releases: Vec<_> = (0..100)
            .map(|i| {
                let root = root.clone();
                std::thread::spawn(move || {
                    Store::lock(&root, "n")
                        .unwrap()
                        .release(&format!("c{i}"), "eth0")
                        .unwrap()
                })
            })
            .collect();
        assert_eq!(
            releases
                .into_iter()
                .map(|h| h.join().unwrap().len())
                .sum::<usize>(),
            100
        );
        assert!(
            Store::lock(&root, "n")
                .unwrap()
                .reservations()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn entries_that_are_no_reservation_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path(), "n").unwrap();
        let store = dir.path().join("n");
        fs::create_dir(store.join("10.244.1.2")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", store.join("10.244.1.3")).unwrap();
        fs::write(store.join("10.244.1.4"), [0xff]).unwrap();
        fs::write(store.join("10.244.1.5"), "c1\r\neth0").unwrap();
        assert_eq!(s.owners().unwrap(), [("c1".to_owned(), "eth0".to_owned())]);
        let got = s.allocate(0, &range(), ("c2", "eth0"), None).unwrap();
        assert_eq!(got.to_string(), "10.244.1.6", "skipped entries stay taken");
        assert_eq!(s.gc(&[]).unwrap().len(), 2);
        assert!(store.join("10.244.1.2").is_dir(), "not ours to remove");
    }

    #[test]
    fn a_full_range_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path(), "n").unwrap();
        let tiny = Range::of("10.0.0.0/30".parse().unwrap()).unwrap();
        s.allocate(0, &tiny, ("a", "eth0"), None).unwrap();
        let e = s.allocate(0, &tiny, ("b", "eth0"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no IP addresses available in range 10.0.0.0/30"
        );
    }

    #[test]
    fn a_requested_address_must_be_in_range_and_free() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::lock(dir.path(), "n").unwrap();
        let want = "10.244.1.77".parse().unwrap();
        assert_eq!(
            s.allocate(0, &range(), ("a", "eth0"), Some(want)).unwrap(),
            want
        );
        let taken = s
            .allocate(0, &range(), ("b", "eth0"), Some(want))
            .unwrap_err();
        assert!(taken.to_string().contains("already allocated"), "{taken}");
        let outside = s
            .allocate(
                0,
                &range(),
                ("b", "eth0"),
                Some("10.9.9.9".parse().unwrap()),
            )
            .unwrap_err();
        assert!(outside.to_string().contains("outside"), "{outside}");
        let gateway = s
            .allocate(
                0,
                &range(),
                ("b", "eth0"),
                Some("10.244.1.1".parse().unwrap()),
            )
            .unwrap_err();
        assert!(gateway.to_string().contains("outside"), "{gateway}");
    }
}
