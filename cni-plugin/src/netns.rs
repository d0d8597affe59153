//! The pod's network namespace. A namespace belongs to a thread, so the plugin enters the
//! pod's only long enough to open a netlink socket there (the socket stays bound to it) and
//! write its sysctls, then goes back — in-process tests run this on test threads, so it always
//! returns to the namespace it came from.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The path does not exist (the pod is gone).
    #[error("network namespace {0} does not exist")]
    Missing(PathBuf),
    /// It exists but is not a network namespace (a plain file, another kind of namespace).
    #[error("CNI_NETNS {path} is {what}")]
    NotNetwork {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// It exists but cannot be opened or entered.
    #[error("network namespace {path}: cannot {action}: {source}")]
    Io {
        /// The namespace path.
        path: PathBuf,
        /// What failed.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An open network namespace.
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the network namespace at `path` (`/run/netns/x`, `/proc/<pid>/ns/net`, …);
    /// anything else at the path is refused, naming what it is (the kernel would only say
    /// `EINVAL` when the veth's peer is sent there).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        let ns = match File::open(&path) {
            Ok(file) => Self { file, path },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetNsError::Missing(path));
            }
            Err(source) => {
                return Err(NetNsError::Io {
                    path,
                    action: "open",
                    source,
                });
            }
        };
        ns.ensure_network()?;
        Ok(ns)
    }

    /// Errors unless the open file is a network namespace: a namespace file (on nsfs) that
    /// can be entered as a network namespace (entering one of another kind is `EINVAL`; a
    /// bind mount hides the kind from everything but an ioctl).
    fn ensure_network(&self) -> Result<(), NetNsError> {
        let not = |what: String| NetNsError::NotNetwork {
            path: self.path.clone(),
            what,
        };
        let fs = fstatfs(self.file.as_fd()).map_err(|e| self.io("statfs", e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            let kind = self.file.metadata().map(|m| m.file_type());
            let what = match kind {
                Ok(k) if k.is_dir() => "a directory",
                Ok(k) if k.is_file() => "a regular file",
                _ => "some other file",
            };
            return Err(not(format!("not a namespace ({what})")));
        }
        match self.run(|| ()) {
            Ok(()) => Ok(()),
            Err(NetNsError::Io { source, .. })
                if source.raw_os_error() == Some(nix::libc::EINVAL) =>
            {
                // `/proc/<pid>/ns/<kind>` names its kind; a bind mount shows only its path.
                let fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                let name = std::fs::read_link(fd).unwrap_or_default();
                let name = name.to_string_lossy();
                let what = match name.split_once(":[") {
                    Some((kind, _)) => format!("not a network namespace (a {kind} namespace)"),
                    None => "not a network namespace (another kind)".to_owned(),
                };
                Err(not(what))
            }
            Err(e) => Err(e),
        }
    }

    /// The namespace's file descriptor (for `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// True when this is the calling thread's own namespace (the spec's "invalid netns").
    pub fn is_current(&self) -> Result<bool, NetNsError> {
        let own = current()
            .and_then(|f| f.metadata())
            .map_err(|source| self.io("stat", source))?;
        let this = self
            .file
            .metadata()
            .map_err(|source| self.io("stat", source))?;
        Ok(own.dev() == this.dev() && own.ino() == this.ino())
    }

    /// Runs `f` inside the namespace and returns to the caller's.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetNsError> {
        let home = current().map_err(|source| self.io("open own namespace", source))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| self.io("enter", e.into()))?;
        let out = f();
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| self.io("leave", e.into()))?;
        Ok(out)
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> NetNsError {
        NetNsError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

fn current() -> std::io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}
