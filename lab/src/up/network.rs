//! The lab's wiring, all inside its own namespaces: an underlay namespace holding bridge
//! `ul0` (with the API server's address, 192.168.0.1), node namespaces attached to it by
//! veths (`eth0`, `192.168.0.(10+i)/24`, forwarding on, a default route to the underlay as a
//! node would have one), and an "external" client namespace on the same underlay. The
//! addresses are the conformance plan's (`sluice_conformance::plan`), of which a two-node lab
//! is exactly the cluster the scenarios are written for.

use std::net::Ipv4Addr;

use sluice_testbed::NetNs;

use super::Lab;
use crate::labd::API_IP;

/// The underlay bridge.
pub(crate) const BRIDGE: &str = "ul0";
/// The external client's address on the underlay.
pub(crate) const CLIENT_IP: Ipv4Addr = sluice_conformance::plan::CLIENT;

/// Node `i`'s underlay address.
pub(crate) fn node_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 10 + i)
}

impl Lab {
    pub(crate) fn network(&mut self) -> anyhow::Result<String> {
        let underlay = self.namespace("underlay")?;
        underlay.ip(["link", "add", BRIDGE, "type", "bridge"])?;
        underlay.ip(["link", "set", BRIDGE, "up"])?;
        underlay.ip(["addr", "add", &format!("{API_IP}/24"), "dev", BRIDGE])?;
        for i in 1..=self.opts.nodes {
            let node = self.namespace(&format!("node{i}"))?;
            attach(&underlay, &node, &format!("n{i}"), node_ip(i))?;
            node.set_ip_forward(true)?;
            node.ip([
                "route",
                "add",
                "default",
                "via",
                &API_IP.to_string(),
                "dev",
                "eth0",
            ])?;
        }
        let client = self.namespace("client")?;
        attach(&underlay, &client, "c0", CLIENT_IP)?;
        Ok(format!(
            "{} nodes 192.168.0.11-{} on bridge {BRIDGE}, client {CLIENT_IP}",
            self.opts.nodes,
            node_ip(self.opts.nodes)
        ))
    }
}

/// A veth `port` (on the bridge) ↔ `eth0` in `ns` with `ip/24`.
fn attach(underlay: &NetNs, ns: &NetNs, port: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
    underlay.ip([
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ])?;
    underlay.ip(["link", "set", port, "master", BRIDGE, "up"])?;
    ns.ip(["link", "set", "eth0", "up"])?;
    ns.ip(["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    Ok(())
}
