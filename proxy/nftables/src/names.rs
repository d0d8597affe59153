//! Object names in the `sluice` tables, in kube-proxy's nftables scheme so operators who know
//! `nft list table ip kube-proxy` read ours at once: `service-<HASH>-<ns>/<svc>/<proto>/<port>`
//! and `endpoint-<HASH>-<…>__<ip>/<port>`. The hash prefix keeps names unique after the
//! truncation to nftables' name limit.

use std::net::IpAddr;

use sluice_model::service::{Endpoint, ServicePortName};

/// nftables' object name limit (256) minus room for the longest chain prefix.
const NAME_MAX: usize = 240;

/// `<ns>/<svc>/<proto>/<port>`.
pub(crate) fn port_base(p: &ServicePortName) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        p.namespace,
        p.name,
        p.protocol.as_lower_str(),
        p.port
    ))
}

/// `<port base>__<ip>/<port>` (IPv6 colons become dots, as in kube-proxy).
pub(crate) fn endpoint_base(p: &ServicePortName, ep: &Endpoint) -> String {
    let ip = match ep.ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.to_string().replace(':', "."),
    };
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{ip}/{}",
        p.namespace,
        p.name,
        p.protocol.as_lower_str(),
        p.port,
        ep.port
    ))
}

/// `HASH-name`, truncated with `...` to [`NAME_MAX`].
fn hash_and_truncate(name: &str) -> String {
    let full = format!("{}-{name}", hash8(name));
    if full.len() <= NAME_MAX {
        return full;
    }
    let mut cut = NAME_MAX - 3;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &full[..cut])
}

/// Eight base32 characters of a 64-bit FNV-1a hash.
fn hash8(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::service::{Protocol, ServiceName};

    #[test]
    fn names_follow_kube_proxys_scheme() {
        let p = ServicePortName::new(&ServiceName::new("ns1", "svc1"), "p80", Protocol::Tcp);
        let base = port_base(&p);
        assert!(base.ends_with("-ns1/svc1/tcp/p80"), "{base}");
        assert_eq!(base.len(), 8 + 1 + "ns1/svc1/tcp/p80".len());
        let ep = Endpoint::new("fd00::1".parse().unwrap(), 80);
        assert!(endpoint_base(&p, &ep).ends_with("-ns1/svc1/tcp/p80__fd00..1/80"));
        let long = ServicePortName::new(
            &ServiceName::new("n".repeat(63), "s".repeat(63)),
            "p".repeat(200),
            Protocol::Udp,
        );
        let b = port_base(&long);
        assert!(b.len() <= NAME_MAX && b.ends_with("..."));
        assert_ne!(
            b,
            port_base(&ServicePortName::new(
                &ServiceName::new("n".repeat(63), "s".repeat(63)),
                "p".repeat(201),
                Protocol::Udp
            ))
        );
    }
}
