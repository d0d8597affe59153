//! One key under `<prefix>/subnets/` as the etcd subnet manager reads it.
//!
//! Anyone with write access to etcd can put anything there. A key that names a subnet but
//! holds garbage is neither a peer (nothing can be programmed from it) nor free (something
//! claims that subnet, and a create-if-absent write of it would lose forever): it is kept
//! as [`Entry::Garbage`], which the allocator counts as taken and the node whose lease it
//! was can take back. A key that names no subnet at all concerns nobody and is ignored.

use ipnet::{Ipv4Net, Ipv6Net};

use crate::lease::{Lease, LeaseError, parse_subnet_key};

/// What a key below the subnets prefix holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A lease.
    Lease(Lease),
    /// A subnet key whose value is not a lease.
    Garbage(Garbage),
    /// A key that names no subnet (or is not below the prefix).
    Foreign,
}

/// A subnet key holding garbage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garbage {
    /// The key below the prefix, e.g. `10.244.1.0-24`.
    pub label: String,
    /// The subnets the key names.
    pub subnets: (Option<Ipv4Net>, Option<Ipv6Net>),
    /// The key's modification revision: a take-back is a compare-and-swap on it.
    pub mod_revision: i64,
}

/// Reads one key/value pair below `prefix`, warning about anything that is not a lease.
pub fn parse(prefix: &str, key: &[u8], value: &[u8], mod_revision: i64) -> (String, Entry) {
    let full = String::from_utf8_lossy(key);
    let Some(label) = full.strip_prefix(prefix) else {
        return (full.into_owned(), Entry::Foreign);
    };
    let label = label.to_owned();
    let subnets = match parse_subnet_key(&label) {
        Ok(subnets) => subnets,
        Err(e) => {
            tracing::warn!("ignoring etcd key {full}: {e}");
            return (label, Entry::Foreign);
        }
    };
    let lease = std::str::from_utf8(value)
        .map_err(|_| LeaseError::Value {
            subnet: label.clone(),
            reason: "not UTF-8".into(),
        })
        .and_then(|text| Lease::from_etcd(&label, text));
    match lease {
        Ok(lease) => (label, Entry::Lease(lease)),
        Err(e) => {
            tracing::warn!("etcd key {full} holds no lease ({e}); its subnet stays taken");
            let garbage = Garbage {
                label: label.clone(),
                subnets,
                mod_revision,
            };
            (label, Entry::Garbage(garbage))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_garbage_and_keys_naming_no_subnet() {
        let p = "/n/subnets/";
        let (label, e) = parse(
            p,
            b"/n/subnets/10.244.1.0-24",
            br#"{"PublicIP":"1.2.3.4"}"#,
            7,
        );
        assert_eq!(label, "10.244.1.0-24");
        assert!(matches!(e, Entry::Lease(_)));
        let (_, e) = parse(p, b"/n/subnets/10.244.1.0-24", b"\xff garbage", 7);
        let Entry::Garbage(g) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (g.subnets.0.unwrap().to_string(), g.mod_revision),
            ("10.244.1.0/24".into(), 7)
        );
        assert_eq!(parse(p, b"/n/subnets/banana", b"{}", 1).1, Entry::Foreign);
        assert_eq!(parse(p, b"/elsewhere", b"{}", 1).1, Entry::Foreign);
    }
}
