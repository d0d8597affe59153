//! The address lists of a Service port: external IPs, load-balancer source
//! ranges and VIP-mode load-balancer ingress IPs. Each bad entry is skipped with
//! a warning, as kube-proxy's `MapIPsByIPFamily` / `MapCIDRsByIPFamily` skip
//! unparseable ones, so one typo never takes the whole Service down.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ServiceSpec, ServiceStatus};

use super::Converter;
use crate::k8s::ip::{parse_cidr_sloppy, parse_ip_sloppy};
use crate::k8s::validate::non_special_ip;

impl Converter {
    pub(super) fn external_ips(&mut self, spec: &ServiceSpec) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for (i, text) in spec.external_ips.iter().flatten().enumerate() {
            let field = format!("spec.externalIPs[{i}]");
            if let Some(ip) = self.usable_ip(&field, text) {
                ips.push(ip);
            }
        }
        ips
    }

    pub(super) fn source_ranges(&mut self, spec: &ServiceSpec) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for (i, text) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            match parse_cidr_sloppy(text.trim()) {
                Some(net) => nets.push(net),
                None => self.warn(
                    &format!("spec.loadBalancerSourceRanges[{i}]"),
                    "not a cidr",
                    text,
                    "skipped",
                ),
            }
        }
        nets
    }

    /// Ingress entries with an `ip` and VIP ipMode (unset or `VIP`).
    pub(super) fn load_balancer_vips(&mut self, status: Option<&ServiceStatus>) -> Vec<IpAddr> {
        let ingress = status
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let mut ips = Vec::new();
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            let Some(text) = ing.ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            if ing.ip_mode.as_deref().is_some_and(|mode| mode != "VIP") {
                continue;
            }
            let field = format!("status.loadBalancer.ingress[{i}].ip");
            if let Some(ip) = self.usable_ip(&field, text) {
                ips.push(ip);
            }
        }
        ips
    }

    /// An address the API server would accept for an external or load-balancer IP; else a
    /// warning and `None` (a loopback one would make the REJECT rules refuse the node's own
    /// loopback traffic).
    fn usable_ip(&mut self, field: &str, text: &str) -> Option<IpAddr> {
        let Some(ip) = parse_ip_sloppy(text) else {
            self.warn(field, "not an ip address", text, "skipped");
            return None;
        };
        match non_special_ip(ip) {
            Ok(()) => Some(ip),
            Err(reason) => {
                self.warn(field, &format!("{reason}:"), text, "skipped");
                None
            }
        }
    }
}
