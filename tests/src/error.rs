//! The test bed's one error type.
//!
//! Every variant names the operation and the object it failed on (for commands: the full
//! command line and its stderr), because a kernel test that fails in CI must say *what* broke
//! without a rerun.

use std::io;

/// Failures of the test bed; messages are lowercase and start with the operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("{cmd}: {stderr}")]
    Command {
        /// The full command line.
        cmd: String,
        /// Its trimmed stderr (or the exit status when stderr was empty).
        stderr: String,
    },
    /// An I/O operation (spawning, opening, reading, connecting) failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, naming the object.
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call through `nix` failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done, naming the object.
        op: String,
        /// The underlying errno.
        #[source]
        source: nix::Error,
    },
    /// A bounded wait ran out.
    #[error("{op}: timed out after {after_ms} ms")]
    Timeout {
        /// What was being waited for.
        op: String,
        /// How long was waited.
        after_ms: u128,
    },
    /// A peer answered something the test bed does not understand.
    #[error("{op}: unexpected answer: {detail}")]
    Protocol {
        /// What was being done.
        op: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// A caller passed something the test bed cannot use.
    #[error("{op}: invalid argument: {detail}")]
    Invalid {
        /// What was being done.
        op: String,
        /// What was wrong.
        detail: String,
    },
    /// A daemon exited while the test bed waited for it.
    #[error("{op}: process exited ({status}); log tail:\n{log}")]
    Exited {
        /// What was being waited for.
        op: String,
        /// Its exit status.
        status: String,
        /// The end of its output.
        log: String,
    },
}

/// The test bed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `op`.
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            op: op.into(),
            source,
        }
    }

    /// An [`Error::Sys`] for `op`.
    pub(crate) fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Self::Sys {
            op: op.into(),
            source,
        }
    }

    /// An [`Error::Invalid`] for `op`.
    pub(crate) fn invalid(op: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            op: op.into(),
            detail: detail.into(),
        }
    }

    /// An [`Error::Protocol`] for `op`.
    pub(crate) fn protocol(op: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Protocol {
            op: op.into(),
            detail: detail.into(),
        }
    }

    /// True when a command failed because its object does not exist (any more).
    ///
    /// Guards use it to stay quiet when something was already removed, e.g. together with its
    /// namespace or its veth peer.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Command { stderr, .. } => {
                let s = stderr.to_ascii_lowercase();
                [
                    "cannot find device",
                    "no such",
                    "not found",
                    "does not exist",
                    "cannot assign requested address",
                ]
                .iter()
                .any(|needle| s.contains(needle))
            }
            _ => false,
        }
    }
}
