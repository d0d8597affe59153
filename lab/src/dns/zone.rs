//! The cluster's DNS data as a pure function of Services and EndpointSlices, after the
//! Kubernetes DNS-based service discovery specification (v1.1.0):
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA with the ClusterIPs; for a headless Service, one per
//!   ready endpoint (all endpoints with `publishNotReadyAddresses`); CNAME for ExternalName;
//! - `<host>.<svc>.<ns>.svc.<domain>` for each such endpoint, `<host>` its `hostname` or its
//!   address with dashes (`10-244-1-5`, as CoreDNS answers);
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for every named port, targeting the
//!   Service name (ClusterIP) or each endpoint's name (headless);
//! - PTR for every ClusterIP and headless endpoint address; `dns-version.<domain>` TXT.
//!
//! A name not in the zone is NXDOMAIN; a name that exists (also an empty parent such as
//! `default.svc.cluster.local`) but lacks the asked type is an empty NOERROR answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, Record};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The cluster domain.
pub(crate) const DOMAIN: &str = "cluster.local";
/// Every answer's TTL (CoreDNS's default for the kubernetes plugin).
pub(crate) const TTL: u32 = 5;

/// Lower-case, without the final dot: how names are keyed.
pub(crate) fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// All records by owner name, and every name that exists.
#[derive(Debug, Default, Clone)]
pub(crate) struct Zone {
    records: BTreeMap<String, Vec<Record>>,
    names: BTreeSet<String>,
}

impl Zone {
    /// The records of `name` (any type), or `None` when the name does not exist.
    pub(crate) fn lookup(&self, name: &str) -> Option<&[Record]> {
        let k = key(name);
        match self.records.get(&k) {
            Some(r) => Some(r),
            None => self.names.contains(&k).then_some(&[]),
        }
    }

    /// Whether this server answers for `name` (the cluster domain or a reverse zone).
    pub(crate) fn authoritative_for(name: &str) -> bool {
        let k = key(name);
        [DOMAIN, "in-addr.arpa", "ip6.arpa"]
            .iter()
            .any(|z| k == *z || k.ends_with(&format!(".{z}")))
    }

    /// The SOA sent with negative answers.
    pub(crate) fn soa() -> Record {
        let ns = name(&format!("ns.dns.{DOMAIN}"));
        let mbox = name(&format!("hostmaster.{DOMAIN}"));
        let soa = SOA::new(ns, mbox, 1, 7200, 1800, 86400, TTL);
        Record::from_rdata(name(DOMAIN), TTL, RData::SOA(soa))
    }

    fn add(&mut self, owner: &str, rdata: RData) {
        let k = key(owner);
        let record = Record::from_rdata(name(&k), TTL, rdata);
        let list = self.records.entry(k.clone()).or_default();
        if !list.contains(&record) {
            list.push(record);
        }
        // The name and its parents exist (empty non-terminals answer NOERROR).
        let mut rest = k.as_str();
        loop {
            self.names.insert(rest.to_owned());
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => break,
            }
        }
    }

    fn address(&mut self, owner: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(owner, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(owner, RData::AAAA(AAAA(v6))),
        }
    }

    fn pointer(&mut self, ip: IpAddr, target: &str) {
        let owner = Name::from(ip).to_ascii();
        self.add(&owner, RData::PTR(PTR(name(target))));
    }
}

/// A fully qualified name from a key (our keys are always valid names).
fn name(k: &str) -> Name {
    let mut n = Name::from_ascii(k).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

/// An endpoint's DNS label: its hostname, or its address with dashes.
fn host_label(hostname: Option<&str>, ip: IpAddr) -> String {
    match hostname {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => ip.to_string().replace(['.', ':'], "-"),
    }
}

/// The zone for `services` and `slices`.
pub(crate) fn build(services: &[Service], slices: &[EndpointSlice]) -> Zone {
    let mut zone = Zone::default();
    zone.add(
        &format!("dns-version.{DOMAIN}"),
        RData::TXT(TXT::new(vec!["1.1.0".into()])),
    );
    for svc in services {
        let (Some(svc_name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let fqdn = format!("{svc_name}.{ns}.svc.{DOMAIN}");
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = &spec.external_name {
                zone.add(&fqdn, RData::CNAME(CNAME(name(&key(target)))));
            }
            continue;
        }
        let ports: Vec<(String, String, u16)> = (spec.ports.iter().flatten())
            .filter_map(|p| {
                let port_name = p.name.clone().filter(|n| !n.is_empty())?;
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                Some((port_name, proto, u16::try_from(p.port).ok()?))
            })
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let ips = spec.cluster_ips.clone().unwrap_or_default();
            let ips = if ips.is_empty() {
                spec.cluster_ip.clone().into_iter().collect()
            } else {
                ips
            };
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                zone.address(&fqdn, ip);
                zone.pointer(ip, &fqdn);
            }
            for (port_name, proto, port) in &ports {
                let srv = SRV::new(0, 100, *port, name(&fqdn));
                zone.add(&format!("_{port_name}._{proto}.{fqdn}"), RData::SRV(srv));
            }
            continue;
        }
        let all = spec.publish_not_ready_addresses == Some(true);
        let endpoints = slices
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get("kubernetes.io/service-name")) == Some(svc_name)
            })
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| all || e.conditions.as_ref().and_then(|c| c.ready) != Some(false));
        for ep in endpoints {
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let host = format!("{}.{fqdn}", host_label(ep.hostname.as_deref(), ip));
                zone.address(&fqdn, ip);
                zone.address(&host, ip);
                zone.pointer(ip, &host);
                for (port_name, proto, port) in &ports {
                    let srv = SRV::new(0, 100, *port, name(&host));
                    zone.add(&format!("_{port_name}._{proto}.{fqdn}"), RData::SRV(srv));
                }
            }
        }
        // A headless Service's name exists even with no ready endpoint.
        zone.names.insert(key(&fqdn));
    }
    zone
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::rr::RecordType;
    use serde_json::json;

    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn types(zone: &Zone, n: &str) -> Vec<(RecordType, String)> {
        (zone.lookup(n).unwrap().iter())
            .map(|r| (r.record_type(), r.data.to_string()))
            .collect()
    }

    #[test]
    fn cluster_ip_headless_and_external_name_services() {
        let services = [
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                         "ports": [{"name": "http", "port": 80}, {"port": 81}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"clusterIP": "None",
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}})),
        ];
        let slices: Vec<EndpointSlice> = vec![
            serde_json::from_value(json!({
            "metadata": {"name": "db-x", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "hostname": "db-0"},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": false}}]}))
            .unwrap(),
        ];
        let z = build(&services, &slices);
        assert_eq!(
            types(&z, "WEB.default.svc.cluster.local."),
            [(RecordType::A, "10.96.0.5".into())]
        );
        assert_eq!(
            types(&z, "_http._tcp.web.default.svc.cluster.local"),
            [(
                RecordType::SRV,
                "0 100 80 web.default.svc.cluster.local.".into()
            )]
        );
        assert_eq!(
            types(&z, "5.0.96.10.in-addr.arpa."),
            [(RecordType::PTR, "web.default.svc.cluster.local.".into())]
        );
        let db: Vec<String> = types(&z, "db.prod.svc.cluster.local")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(db, ["10.244.1.5", "10.244.2.6"], "ready endpoints only");
        assert_eq!(
            types(&z, "db-0.db.prod.svc.cluster.local")[0].1,
            "10.244.2.6"
        );
        assert_eq!(
            types(&z, "_pg._tcp.db.prod.svc.cluster.local")[0].1,
            "0 100 5432 10-244-1-5.db.prod.svc.cluster.local."
        );
        assert_eq!(
            types(&z, "ext.default.svc.cluster.local")[0].0,
            RecordType::CNAME
        );
        assert_eq!(
            z.lookup("default.svc.cluster.local"),
            Some(&[][..]),
            "empty parent"
        );
        assert_eq!(z.lookup("gone.default.svc.cluster.local"), None);
        assert_eq!(
            z.lookup("_81._tcp.web.default.svc.cluster.local"),
            None,
            "unnamed port"
        );
        assert!(Zone::authoritative_for("x.cluster.local."));
        assert!(!Zone::authoritative_for("example.org"));
    }
}
