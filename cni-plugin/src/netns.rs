//! The pod's network namespace. A namespace belongs to a thread, so the plugin enters the
//! pod's only long enough to open a netlink socket there (the socket stays bound to it) and
//! write its sysctls, then goes back — in-process tests run this on test threads, so it always
//! returns to the namespace it came from.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The path does not exist (the pod is gone).
    #[error("network namespace {0} does not exist")]
    Missing(PathBuf),
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
    /// Opens the namespace at `path` (`/run/netns/x`, `/proc/<pid>/ns/net`, …).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        match File::open(&path) {
            Ok(file) => Ok(Self { file, path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NetNsError::Missing(path)),
            Err(source) => Err(NetNsError::Io {
                path,
                action: "open",
                source,
            }),
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
