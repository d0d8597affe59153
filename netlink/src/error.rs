//! What a netlink exchange can go wrong with: the socket itself, a refusal by the kernel
//! (naming the request, as the callers log it), an answer that made no sense, and answers
//! lost to a receive-buffer overrun (the outcome of a batch is then unknown).

use std::io;

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused the request.
    #[error("{op}: {}{}", strerror(.errno), detail_suffix(.detail))]
    Refused {
        /// The refused request, in the caller's words.
        op: String,
        /// The kernel's errno.
        errno: i32,
        /// The kernel's extended-ACK message, when it gave one.
        detail: Option<String>,
    },
    /// An answer from the kernel made no sense to us.
    #[error("{what}: undecodable netlink answer: {reason}")]
    Decode {
        /// What was being read.
        what: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Answers were lost (socket receive buffer overrun): whether the request took effect
    /// is unknown.
    #[error("{what}: kernel answers lost (receive buffer overrun); outcome unknown")]
    Lost {
        /// What was being done.
        what: String,
    },
}

impl NetlinkError {
    /// The kernel's errno when it refused (or the socket's).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { errno, .. } => Some(*errno),
            Self::Socket(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// The C library's message for `errno`, without Rust's " (os error N)" suffix.
pub fn strerror(errno: &i32) -> String {
    let full = io::Error::from_raw_os_error(*errno).to_string();
    match full.rfind(" (os error ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

/// ` (detail)` when the kernel gave an extended-ACK message.
pub fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!(" ({d})"),
        _ => String::new(),
    }
}

/// Errno values Sluice's netlink users tell apart (Linux numbering).
pub mod errno {
    /// No such file or directory: a missing table, chain, set, element or entry.
    pub const ENOENT: i32 = 2;
    /// Interrupted: a dump that the kernel restarted.
    pub const EINTR: i32 = 4;
    /// Device or resource busy: an object still referenced, a map key with another value.
    pub const EBUSY: i32 = 16;
    /// File exists: an object that exists with a different definition.
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// Protocol not available (e.g. IPVS absent from the kernel).
    pub const ENOPROTOOPT: i32 = 92;
    /// Operation not supported (e.g. a jump to a base chain).
    pub const EOPNOTSUPP: i32 = 95;
    /// "Interrupted system call should be restarted": nf_tables refuses a batch begun with a
    /// generation that is no longer current (someone committed since).
    pub const ERESTART: i32 = 85;
}
