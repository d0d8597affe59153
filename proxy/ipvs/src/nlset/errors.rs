//! The kernel's ipset refusals, typed. ipset answers a failing request with its own error
//! numbers (`IPSET_ERR_*`, 4096 and up) rather than errno values, and the meaning of the
//! type-specific ones depends on the set type; the words are the ipset program's
//! (`lib/errcode.c`), so an operator sees the same message either way.

use sluice_netlink::NetlinkError;

/// What the kernel's ipset refused, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("ipset protocol error (the kernel speaks none of protocols {min}-{max})", min = super::wire::PROTOCOL_MIN, max = super::wire::PROTOCOL)]
    Protocol,
    #[error("set type not supported by the kernel")]
    FindType,
    #[error("maximal number of sets reached")]
    MaxSets,
    #[error("set is in use by a kernel component")]
    Busy,
    #[error("a set of the same name exists with another type or header")]
    ExistSetname2,
    #[error("the set types do not match")]
    TypeMismatch,
    #[error("element already added, or not added")]
    Exist,
    #[error("invalid CIDR")]
    InvalidCidr,
    #[error("invalid netmask")]
    InvalidNetmask,
    #[error("protocol family not supported by the set type")]
    InvalidFamily,
    #[error("set was created without timeout support")]
    Timeout,
    #[error("set is referenced (by an iptables rule)")]
    Referenced,
    #[error("an IPv4 address is expected")]
    Ipaddr4,
    #[error("an IPv6 address is expected")]
    Ipaddr6,
    #[error("hash is full, cannot add more elements")]
    HashFull,
    #[error("null-valued element, cannot be stored in a hash set")]
    HashElem,
    #[error("invalid protocol")]
    InvalidProto,
    #[error("protocol missing")]
    MissingProto,
    #[error("element out of the range of the set")]
    BitmapRange,
    #[error("range exceeds the size limit of the set type")]
    BitmapRangeSize,
    #[error("the set does not exist")]
    NoSuchSet,
    /// Another `IPSET_ERR_*` number, or an errno.
    #[error("{}", sluice_netlink::error::strerror(.0))]
    Other(i32),
}

const ERR_PRIVATE: i32 = 4096;
const ERR_TYPE_SPECIFIC: i32 = 4352;

impl Refusal {
    /// Decodes the (positive) number the kernel answered, for a set of bitmap type or not.
    pub fn from_code(code: i32, bitmap: bool) -> Self {
        use Refusal::*;
        match (code - ERR_PRIVATE, bitmap) {
            _ if code == sluice_netlink::errno::ENOENT => NoSuchSet,
            // A create clashing with a set of another type or header.
            _ if code == sluice_netlink::errno::EEXIST => ExistSetname2,
            (1, _) => Protocol,
            (2, _) => FindType,
            (3, _) => MaxSets,
            (4, _) => Busy,
            (5, _) => ExistSetname2,
            (6, _) => TypeMismatch,
            (7, _) => Exist,
            (8, _) => InvalidCidr,
            (9, _) => InvalidNetmask,
            (10, _) => InvalidFamily,
            (11, _) => Timeout,
            (12, _) => Referenced,
            (13, _) => Ipaddr4,
            (14, _) => Ipaddr6,
            _ if code == ERR_TYPE_SPECIFIC && bitmap => BitmapRange,
            _ if code == ERR_TYPE_SPECIFIC + 1 && bitmap => BitmapRangeSize,
            _ if code == ERR_TYPE_SPECIFIC => HashFull,
            _ if code == ERR_TYPE_SPECIFIC + 1 => HashElem,
            _ if code == ERR_TYPE_SPECIFIC + 2 => InvalidProto,
            _ if code == ERR_TYPE_SPECIFIC + 3 => MissingProto,
            _ => Other(code),
        }
    }
}

/// Why a netlink ipset operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NlIpsetError {
    /// The socket, or an answer we could not read.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The kernel refused a command on a set (line: the restore line of the failing member).
    #[error(
        "{op}{}{}: {refusal}",
        if set.is_empty() { String::new() } else { format!(" {set}") },
        line.map(|l| format!(" (line {l})")).unwrap_or_default()
    )]
    Refused {
        op: &'static str,
        set: String,
        line: Option<u32>,
        refusal: Refusal,
    },
    /// A restore line this client does not understand.
    #[error("line {line}: {text:?}: {why}")]
    BadLine {
        line: u32,
        text: String,
        why: &'static str,
    },
    /// Answers were missing: whether the writes took effect is unknown.
    #[error("{0}: not every request was answered; outcome unknown")]
    Unanswered(&'static str),
    /// Every try of a dump was interrupted by a concurrent change.
    #[error("ipset save: interrupted by concurrent changes {0} times")]
    Interrupted(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decode_by_set_type() {
        assert_eq!(Refusal::from_code(4097, false), Refusal::Protocol);
        assert_eq!(Refusal::from_code(4103, true), Refusal::Exist);
        assert_eq!(Refusal::from_code(4352, false), Refusal::HashFull);
        assert_eq!(Refusal::from_code(4352, true), Refusal::BitmapRange);
        assert_eq!(Refusal::from_code(4354, false), Refusal::InvalidProto);
        assert_eq!(Refusal::from_code(2, false), Refusal::NoSuchSet);
        assert_eq!(Refusal::from_code(17, false), Refusal::ExistSetname2);
        assert_eq!(Refusal::from_code(22, false), Refusal::Other(22));
        assert_eq!(
            Refusal::from_code(22, false).to_string(),
            "Invalid argument"
        );
    }
}
