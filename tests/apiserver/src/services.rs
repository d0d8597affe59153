//! Service defaulting and ClusterIP/NodePort allocation.
//!
//! The proxy reads `spec.clusterIP(s)`, `ipFamilies`, `nodePort`s and the traffic policies
//! straight from the Service, and in a real cluster the API server fills those in; a test that
//! creates a bare Service must see the same filled-in object here.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::allocators::{AllocError, IpAllocator, PortAllocator};
use crate::error::ApiError;
use crate::service_defaults::{apply_defaults, carry_over, ports_of, svc_type, wants_node_ports};

/// What one Service holds from the allocators.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Held {
    ip: Option<Ipv4Addr>,
    ports: Vec<u16>,
}

/// The ClusterIP and NodePort pools.
#[derive(Debug, Clone)]
pub(crate) struct Allocations {
    ips: IpAllocator,
    ports: PortAllocator,
}

fn invalid(field: &str, e: &AllocError) -> ApiError {
    ApiError::Invalid(format!("Service is invalid: {field}: {e}"))
}

fn held(obj: &Value) -> Held {
    let ip = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let mut ports: Vec<u16> = ports_of(obj)
        .iter()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Held { ip, ports }
}

impl Allocations {
    /// Pools over the service CIDR and NodePort range.
    #[must_use]
    pub(crate) fn new(cidr: Ipv4Net, node_ports: RangeInclusive<u16>) -> Self {
        Self {
            ips: IpAllocator::new(cidr),
            ports: PortAllocator::new(node_ports),
        }
    }

    /// Defaults and allocates for a new Service.
    pub(crate) fn on_create(&mut self, obj: &mut Value) -> Result<(), ApiError> {
        apply_defaults(obj);
        self.assign(obj, &Held::default()).map(|_| ())
    }

    /// Defaults and allocates for an updated Service, keeping what the old one held.
    pub(crate) fn on_update(&mut self, old: &Value, new: &mut Value) -> Result<(), ApiError> {
        carry_over(old, new);
        apply_defaults(new);
        let before = held(old);
        let after = self.assign(new, &before)?;
        self.release_held(&before, &after);
        Ok(())
    }

    /// Returns a deleted Service's addresses and ports.
    pub(crate) fn release(&mut self, obj: &Value) {
        self.release_held(&held(obj), &Held::default());
    }

    fn release_held(&mut self, before: &Held, after: &Held) {
        if let Some(ip) = before.ip.filter(|ip| after.ip != Some(*ip)) {
            self.ips.release(ip);
        }
        for p in before.ports.iter().filter(|p| !after.ports.contains(p)) {
            self.ports.release(*p);
        }
    }

    /// Allocates or claims everything `obj` needs that `already` does not hold; all or nothing.
    fn assign(&mut self, obj: &mut Value, already: &Held) -> Result<Held, ApiError> {
        let mut got = Held::default();
        let result = self
            .assign_ip(obj, already, &mut got)
            .and_then(|()| self.assign_ports(obj, already, &mut got));
        if result.is_err() {
            self.release_held(&got, &Held::default());
        }
        result.map(|()| held(obj))
    }

    fn assign_ip(
        &mut self,
        obj: &mut Value,
        already: &Held,
        got: &mut Held,
    ) -> Result<(), ApiError> {
        if svc_type(obj) == "ExternalName" {
            return Ok(());
        }
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ip = match requested.as_str() {
            "None" => None,
            "" => Some(
                self.ips
                    .allocate()
                    .map_err(|e| invalid("spec.clusterIPs", &e))?,
            ),
            s => {
                let ip: Ipv4Addr = s.parse().map_err(|_| {
                    ApiError::Invalid(format!("Service is invalid: spec.clusterIPs: Invalid value: {s:?}: must be a valid IPv4 address"))
                })?;
                if already.ip != Some(ip) {
                    self.ips
                        .claim(ip)
                        .map_err(|e| invalid("spec.clusterIPs", &e))?;
                }
                Some(ip)
            }
        };
        got.ip = ip.filter(|ip| already.ip != Some(*ip));
        let shown = ip.map_or_else(|| "None".to_owned(), |ip| ip.to_string());
        obj["spec"]["clusterIP"] = json!(shown);
        if obj
            .pointer("/spec/clusterIPs")
            .is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
        {
            obj["spec"]["clusterIPs"] = json!([shown]);
        }
        Ok(())
    }

    fn assign_ports(
        &mut self,
        obj: &mut Value,
        already: &Held,
        got: &mut Held,
    ) -> Result<(), ApiError> {
        if !wants_node_ports(obj) {
            if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
                ports
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(|p| {
                        p.remove("nodePort");
                    });
            }
            return Ok(());
        }
        let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") else {
            return Ok(());
        };
        // Node ports this Service names, with the protocols that use them: one node port may
        // serve a TCP and a UDP port of the Service (Kubernetes allows it), not two of one
        // protocol.
        let mut used: Vec<(u16, String)> = Vec::new();
        for (i, p) in ports.iter_mut().enumerate() {
            let field = format!("spec.ports[{i}].nodePort");
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_owned();
            let requested = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok());
            let fresh = match requested {
                Some(n) if already.ports.contains(&n) || got.ports.contains(&n) => None,
                Some(n) => Some(self.ports.claim(n).map(|()| n)),
                None => Some(self.ports.allocate()),
            };
            let held = fresh.is_none();
            let port = match fresh {
                None => requested.unwrap_or_default(),
                Some(r) => r.map_err(|e| invalid(&field, &e))?,
            };
            if !held {
                got.ports.push(port);
                p["nodePort"] = json!(port);
            }
            if used.contains(&(port, protocol.clone())) {
                return Err(ApiError::Invalid(format!(
                    "Service is invalid: {field}: Duplicate value: {port}"
                )));
            }
            used.push((port, protocol));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocs() -> Allocations {
        Allocations::new("10.96.0.0/12".parse().unwrap(), 30000..=32767)
    }

    #[test]
    fn one_node_port_serves_a_services_tcp_and_udp_ports() {
        let mut a = allocs();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [
            {"name": "t", "port": 53, "protocol": "TCP", "nodePort": 30053},
            {"name": "u", "port": 53, "protocol": "UDP", "nodePort": 30053}]}});
        a.on_create(&mut svc).unwrap();
        let mut other = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "nodePort": 30053}]}});
        assert!(
            a.on_create(&mut other).is_err(),
            "another Service cannot take it"
        );
        a.release(&svc);
        a.on_create(&mut other).unwrap();
    }

    #[test]
    fn defaults_and_allocates_cluster_ip() {
        let mut a = allocs();
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        a.on_create(&mut svc).unwrap();
        let spec = &svc["spec"];
        assert_eq!(spec["clusterIP"], "10.96.0.2");
        assert_eq!(spec["clusterIPs"], json!(["10.96.0.2"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert!(spec.get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn headless_external_name_and_node_ports() {
        let mut a = allocs();
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        a.on_create(&mut headless).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let mut ext = json!({"spec": {"type": "ExternalName", "externalName": "x.example"}});
        a.on_create(&mut ext).unwrap();
        assert!(ext["spec"].get("clusterIP").is_none());
        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30000}]}});
        assert!(
            a.on_create(&mut np).is_err(),
            "30000 is taken by the first port"
        );
        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.on_create(&mut np).unwrap();
        // Next-fit: the rolled-back 30000 and 10.96.0.2 are free again but not reused first.
        assert_eq!(np["spec"]["ports"][0]["nodePort"], 30001);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        let mut reuse = json!({"spec": {"clusterIP": "10.96.0.2", "type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30000}]}});
        a.on_create(&mut reuse).unwrap();
    }

    #[test]
    fn update_keeps_allocations_and_delete_releases() {
        let mut a = allocs();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.on_create(&mut svc).unwrap();
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.on_update(&svc, &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30000);
        let mut back = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
        a.on_update(&new, &mut back).unwrap();
        assert!(back["spec"]["ports"][0].get("nodePort").is_none());
        a.release(&back);
        let mut again = json!({"spec": {"clusterIP": "10.96.0.2", "type": "NodePort",
            "ports": [{"port": 1, "nodePort": 30000}]}});
        a.on_create(&mut again).unwrap();
    }
}
