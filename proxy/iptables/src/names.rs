//! kube-proxy's iptables chain names, bit for bit: `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`,
//! `KUBE-FW-` + the first 16 characters of base32(sha256(`ns/svc[:port]` + protocol)), and
//! `KUBE-SEP-` with the endpoint's `ip:port` appended to the hash input. Identical names are
//! what lets an operator switch a node between kube-proxy and Sluice without any chain
//! changing its name (and what makes upstream's expected rulesets apply to us unchanged).

use data_encoding::BASE32;
use sha2::{Digest, Sha256};
use sluice_model::service::{Endpoint, ServicePortName};

/// The fixed chains.
pub(crate) const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub(crate) const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub(crate) const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub(crate) const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub(crate) const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub(crate) const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub(crate) const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub(crate) const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";
pub(crate) const KUBELET_FIREWALL: &str = "KUBE-FIREWALL";

/// Prefixes of the per-Service chains (the only chains ever deleted as stale).
const SERVICE_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-FW-",
    "KUBE-EXT-",
];

/// Whether `chain` is a per-Service chain of ours.
pub(crate) fn is_service_chain(chain: &str) -> bool {
    SERVICE_PREFIXES.iter().any(|p| chain.starts_with(p))
}

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut encoded = BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// The chain names of one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortChains {
    /// `ns/svc:port`, as comments show it.
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) local: String,
    pub(crate) external: String,
    pub(crate) firewall: String,
}

impl PortChains {
    pub(crate) fn of(p: &ServicePortName) -> Self {
        // `ns/svc:port`, or `ns/svc` for an unnamed port (`ServicePortName.String()`).
        let name = p.to_string();
        let hash = hash16(&format!("{name}{}", p.protocol.as_lower_str()));
        Self {
            cluster: format!("KUBE-SVC-{hash}"),
            local: format!("KUBE-SVL-{hash}"),
            external: format!("KUBE-EXT-{hash}"),
            firewall: format!("KUBE-FW-{hash}"),
            name,
        }
    }

    /// `KUBE-SEP-…` of one endpoint (its `ip:port`, IPv6 in brackets, in the hash input).
    pub(crate) fn endpoint(&self, p: &ServicePortName, ep: &Endpoint) -> String {
        let input = format!("{}{}{}", self.name, p.protocol.as_lower_str(), ep.addr());
        format!("KUBE-SEP-{}", hash16(&input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_model::service::{Protocol, ServiceName};

    #[test]
    fn names_are_kube_proxys() {
        // Upstream's test fixtures' names.
        let svc = |ns: &str, name: &str, port: &str| {
            ServicePortName::new(&ServiceName::new(ns, name), port, Protocol::Tcp)
        };
        let c = PortChains::of(&svc("ns1", "svc1", "p80"));
        assert_eq!(c.cluster, "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(c.firewall, "KUBE-FW-XPGD46QRK7WJZT7O");
        let ep = Endpoint::new("10.180.0.1".parse().unwrap(), 80);
        assert_eq!(
            c.endpoint(&svc("ns1", "svc1", "p80"), &ep),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        assert_eq!(
            PortChains::of(&svc("ns2", "svc2", "p8080")).cluster,
            "KUBE-SVC-2VJB64SDSIJUP5T6"
        );
        assert_eq!(
            PortChains::of(&svc("ns5", "svc5", "p80")).external,
            "KUBE-EXT-NUKIZ6OKUXPJNT4C"
        );
        let p = svc("ns3", "svc3", "p8081");
        let ep = Endpoint::new("203.0.113.4".parse().unwrap(), 8081);
        assert_eq!(
            PortChains::of(&p).endpoint(&p, &ep),
            "KUBE-SEP-RUVVH7YV3PHQBDOS"
        );
        assert!(is_service_chain("KUBE-SEP-X") && !is_service_chain("KUBE-SERVICES"));
    }
}
