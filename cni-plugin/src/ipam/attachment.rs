//! One attachment at a time: ADD, DEL and CHECK of the same container ID and interface run
//! one after another, across plugin processes.
//!
//! The store's own lock is held only around a reservation, so ADDs of different pods overlap.
//! But a runtime that retries, or times out and tears down, can run ADD ∥ DEL ∥ ADD of one
//! attachment; interleaved, the DEL released the address while an ADD went on to configure
//! the interface and its masquerade entry, which then nobody held. So each invocation first
//! takes a flock on one of [`BUCKETS`] files chosen by a hash of the attachment: a fixed set
//! of files, never deleted (deleting a lock file races with its next taker), and attachments
//! that share a bucket merely wait for each other. host-local ignores these files (it reads
//! every file, and they name nobody).

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::IpamError;

/// How many lock files a network's store has.
const BUCKETS: u64 = 64;

/// Held while one invocation works on an attachment; released on drop.
pub struct AttachmentLock {
    _lock: Flock<File>,
}

impl AttachmentLock {
    /// Waits for and takes the lock of `(id, ifname)` in network `network`'s store.
    pub fn take(root: &Path, network: &str, id: &str, ifname: &str) -> Result<Self, IpamError> {
        let dir = root.join(network);
        std::fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            path: dir.clone(),
            action: "create",
            source,
        })?;
        let bucket = fnv64(id, ifname) % BUCKETS;
        let path = dir.join(format!("attachment-lock.{bucket}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| IpamError::Io {
                path: path.clone(),
                action: "open",
                source,
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| IpamError::Io {
            path,
            action: "flock",
            source: e.into(),
        })?;
        Ok(Self { _lock: lock })
    }
}

fn fnv64(id: &str, ifname: &str) -> u64 {
    let bytes = id.bytes().chain([b'/']).chain(ifname.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_attachment_waits_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let held = AttachmentLock::take(dir.path(), "n", "c1", "eth0").unwrap();
        let root = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = AttachmentLock::take(&root, "n", "c1", "eth0").unwrap();
            tx.send(()).unwrap();
        });
        // Another attachment (in another bucket) is not held up.
        let other = (0..)
            .map(|i| format!("c{i}"))
            .find(|id| fnv64(id, "eth0") % BUCKETS != fnv64("c1", "eth0") % BUCKETS);
        let _other = AttachmentLock::take(dir.path(), "n", &other.unwrap(), "eth0").unwrap();
        assert!(rx.try_recv().is_err(), "the second taker waits");
        drop(held);
        rx.recv().unwrap();
        waiter.join().unwrap();
        let files = std::fs::read_dir(dir.path().join("n")).unwrap().count();
        assert_eq!(files, 2, "one file per bucket in use, never more");
    }
}
