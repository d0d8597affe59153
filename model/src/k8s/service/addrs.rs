//! The address lists of a Service port: external IPs, load-balancer source
//! ranges and VIP-mode load-balancer ingress IPs. Each bad entry is skipped with
//! a warning, as kube-proxy's `MapIPsByIPFamily` / `MapCIDRsByIPFamily` skip
//! unparseable ones, so one typo never takes the whole Service down.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ServiceSpec, ServiceStatus};

use super::Converter;
use crate::k8s::ip::{parse_cidr_sloppy, parse_ip_sloppy};

impl Converter {
    pub(super) fn external_ips(&mut self, spec: &ServiceSpec) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for (i, text) in spec.external_ips.iter().flatten().enumerate() {
            match parse_ip_sloppy(text) {
                Some(ip) => ips.push(ip),
                None => self.warn(
                    &format!("spec.externalIPs[{i}]"),
                    "not an ip address",
                    text,
                    "skipped",
                ),
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
            match parse_ip_sloppy(text) {
                Some(ip) => ips.push(ip),
                None => self.warn(
                    &format!("status.loadBalancer.ingress[{i}].ip"),
                    "not an ip address",
                    text,
                    "skipped",
                ),
            }
        }
        ips
    }
}
