//! What ADD, DEL, CHECK and GC share: the names that tie host-side links to an attachment,
//! reading subnet.env, and turning module errors into spec errors.

use sluice_model::subnet_env::SubnetEnv;

use crate::config::NetConf;
use crate::env::Env;
use crate::error::{CniError, Code};
use crate::ipam::{IpamError, Store};
use crate::netns::NetNsError;
use crate::nl::NlError;

/// The attachment's identity: container ID and interface name.
pub(crate) struct Who<'a> {
    /// `CNI_CONTAINERID`.
    pub(crate) id: &'a str,
    /// `CNI_IFNAME`.
    pub(crate) ifname: &'a str,
}

impl<'a> Who<'a> {
    /// Reads both from a validated environment (required for ADD, DEL and CHECK).
    pub(crate) fn of(env: &'a Env) -> Self {
        Self {
            id: env.container_id.as_deref().unwrap_or_default(),
            ifname: env.ifname.as_deref().unwrap_or_default(),
        }
    }

    /// The host end's name: stable for the attachment, so DEL and GC find it without state.
    pub(crate) fn host_veth(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.id.bytes().chain([b'/']).chain(self.ifname.bytes()) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("veth{:08x}", hash as u32)
    }

    /// The host end's alias, which GC and ADD read back to know whose veth it is:
    /// `sluice:<network>:<containerID>:<ifname>`, or with `#<hash of the ID>` in place of an
    /// ID too long for the kernel's 255 bytes. Compared whole, never parsed, so both forms
    /// identify the attachment.
    pub(crate) fn alias(&self, network: &str) -> String {
        let full = format!("{ALIAS_PREFIX}{network}:{}:{}", self.id, self.ifname);
        if full.len() <= MAX_ALIAS {
            return full;
        }
        let hash = fnv64(self.id.as_bytes());
        format!("{ALIAS_PREFIX}{network}:#{hash:016x}:{}", self.ifname)
    }
}

/// Prefix of every alias Sluice sets.
pub(crate) const ALIAS_PREFIX: &str = "sluice:";
/// The longest alias the kernel keeps (`IFALIASZ` less the terminating NUL).
const MAX_ALIAS: usize = 255;

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether a host link's `alias` is that of an attachment of `network` holding an address
/// in `store` (a link nobody holds is a leftover, free to remove).
pub(crate) fn alias_held(store: &Store, network: &str, alias: &str) -> Result<bool, IpamError> {
    Ok(store.owners()?.iter().any(|(id, ifname)| {
        let who = Who { id, ifname };
        who.alias(network) == alias
    }))
}

/// Reads subnet.env; absent or unreadable means the overlay is not up yet: try again later.
pub(crate) fn subnet_env(conf: &NetConf) -> Result<SubnetEnv, CniError> {
    SubnetEnv::read(conf.subnet_file()).map_err(|e| {
        CniError::new(
            Code::TryAgainLater,
            "failed to load the node's subnet.env; check the overlay daemon's log on this node",
        )
        .with_details(e.to_string())
    })
}

impl From<NlError> for CniError {
    fn from(e: NlError) -> Self {
        CniError::new(Code::Internal, e.to_string())
    }
}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> Self {
        CniError::new(Code::Internal, e.to_string())
    }
}

impl From<NetNsError> for CniError {
    fn from(e: NetNsError) -> Self {
        let code = match e {
            NetNsError::NotNetwork { .. } => Code::InvalidEnv,
            _ => Code::Internal,
        };
        CniError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = Who {
            id: "c1",
            ifname: "eth0",
        };
        let b = Who {
            id: "c1",
            ifname: "eth1",
        };
        assert_eq!(a.host_veth(), a.host_veth());
        assert_ne!(a.host_veth(), b.host_veth());
        assert!(a.host_veth().len() <= 15);
        assert_eq!(a.alias("cbr0"), "sluice:cbr0:c1:eth0");
        let id = "x".repeat(300);
        let long = Who {
            id: &id,
            ifname: "eth0",
        };
        let alias = long.alias(&"n".repeat(128));
        assert!(alias.len() <= MAX_ALIAS, "{}", alias.len());
        assert!(alias.ends_with(":eth0") && alias.contains(":#"), "{alias}");
    }
}
