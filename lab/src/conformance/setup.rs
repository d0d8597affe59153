//! What the conformance runner adds to a lab before the scenarios: something that answers
//! wherever an untouched packet ends up — echo servers named after the place in the underlay
//! (which owns the service CIDR and the scenarios' external ranges through `local` routes, so
//! a node's packet that no rule touched is answered as `underlay`) and in every node (for
//! NodePort addresses and loopback) — and the client's extra source addresses and its routes
//! to the addresses it sends to through a chosen node.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use sluice_conformance::{Scenario, Source};
use sluice_testbed::NetNs;

use crate::echo;
use crate::up::Lab;

/// The ranges the underlay owns: the service CIDR and the documentation ranges the
/// scenarios use for external and load-balancer IPs.
const UNDERLAY_OWNS: [&str; 3] = [
    sluice_conformance::plan::SERVICE_CIDR,
    "203.0.113.0/24",
    "198.51.100.0/24",
];

/// Every TCP/UDP port the scenarios send to.
fn ports(scenarios: &[Scenario]) -> Vec<u16> {
    let set: BTreeSet<u16> = (scenarios.iter())
        .flat_map(|s| s.packets.iter().map(|p| p.to.0.port()))
        .collect();
    set.into_iter().collect()
}

/// Starts the sinks and the underlay's routes; returns what could not be served (a port a
/// daemon holds there), for the log.
pub(crate) fn prepare(lab: &Lab, scenarios: &[Scenario]) -> anyhow::Result<Vec<String>> {
    let ports = ports(scenarios);
    let underlay = NetNs::open(&lab.state.ns("underlay"))?;
    for net in UNDERLAY_OWNS {
        underlay.ip(["route", "replace", "local", net, "dev", "lo"])?;
    }
    let mut skipped = Vec::new();
    let mut serve = |ns: &NetNs, name: &str| -> anyhow::Result<()> {
        for port in echo::spawn_in(ns, name, &ports)? {
            skipped.push(format!("{name}:{port}"));
        }
        Ok(())
    };
    serve(&underlay, "underlay")?;
    for node in lab.node_names() {
        serve(&NetNs::open(&lab.state.ns(&node))?, &node)?;
    }
    let client = NetNs::open(&lab.state.ns("client"))?;
    for ip in client_sources(scenarios) {
        client
            .ip(["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .with_context(|| format!("client address {ip}"))?;
    }
    Ok(skipped)
}

/// Client source addresses besides its own, on the underlay's subnet.
fn client_sources(scenarios: &[Scenario]) -> BTreeSet<Ipv4Addr> {
    let client = IpAddr::from(sluice_conformance::plan::CLIENT);
    (scenarios.iter())
        .flat_map(|s| &s.packets)
        .filter_map(|p| match &p.from {
            Source::Outside {
                ip: IpAddr::V4(ip), ..
            } if IpAddr::V4(*ip) != client => Some(*ip),
            _ => None,
        })
        .filter(|ip| ip.octets()[..3] == [192, 168, 0])
        .collect()
}
