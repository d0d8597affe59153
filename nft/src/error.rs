//! The one error type of the crate: what the kernel refused (naming the operation, as the
//! proxy logs it), what could not be encoded, and socket trouble.

use std::io;

use sluice_netlink::NetlinkError;
use sluice_netlink::error::{detail_suffix, strerror};

/// Why applying or reading nftables state failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket could not be opened or used.
    #[error("nftables netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused an operation; the whole transaction was rolled back.
    #[error("{op}: {}{}", strerror(.errno), detail_suffix(.detail))]
    Refused {
        /// The refused operation in nft syntax (shortened), or `commit …` when the kernel
        /// refused the transaction as a whole.
        op: String,
        /// The kernel's errno.
        errno: i32,
        /// The kernel's extended-ACK message, when it gave one.
        detail: Option<String>,
    },
    /// The kernel has no nf_tables: it refuses even the ruleset generation, which any
    /// kernel with nf_tables answers (User-Mode Linux kernels, minimal builds).
    #[error("this kernel has no nf_tables (the ruleset generation request was refused)")]
    NotInKernel,
    /// The transaction cannot be expressed for the kernel (e.g. a prefix on a port field).
    #[error("{op}: cannot encode: {reason}")]
    Encode {
        /// The operation in nft syntax.
        op: String,
        /// Why.
        reason: String,
    },
    /// An answer from the kernel made no sense to us.
    #[error("{what}: undecodable netlink answer: {reason}")]
    Decode {
        /// What was being read.
        what: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Acknowledgements were lost (socket receive buffer overrun): whether the transaction
    /// was committed is unknown; read the table back.
    #[error("{what}: kernel answers lost (receive buffer overrun); outcome unknown")]
    Lost {
        /// What was being done.
        what: String,
    },
}

impl NftError {
    /// The kernel's errno when it refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { errno, .. } => Some(*errno),
            Self::Socket(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// A refusal of `op` with `errno`.
    pub(crate) fn refused(op: impl Into<String>, errno: i32) -> Self {
        Self::Refused {
            op: op.into(),
            errno,
            detail: None,
        }
    }
}

impl From<NetlinkError> for NftError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Socket(e) => Self::Socket(e),
            NetlinkError::Refused { op, errno, detail } => Self::Refused { op, errno, detail },
            NetlinkError::Decode { what, reason } => Self::Decode { what, reason },
            NetlinkError::Lost { what } => Self::Lost { what },
        }
    }
}

/// Errno values the crate produces or tells apart (Linux numbering).
pub use sluice_netlink::errno;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_op_and_the_errno_text() {
        let e = NftError::refused("add rule ip sluice service-x counter", errno::ENOENT);
        assert_eq!(
            e.to_string(),
            "add rule ip sluice service-x counter: No such file or directory"
        );
        assert_eq!(e.errno(), Some(2));
    }
}
