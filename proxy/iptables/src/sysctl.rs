//! The one sysctl the iptables mode sets: `route_localnet`, without which the kernel drops
//! packets to 127.0.0.1 DNAT-ed elsewhere (localhost NodePorts). Per network namespace.

use std::io;

const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Sets `net.ipv4.conf.all.route_localnet=1` unless it already is.
pub(crate) fn enable_route_localnet() -> io::Result<()> {
    if std::fs::read_to_string(ROUTE_LOCALNET)?.trim() == "1" {
        return Ok(());
    }
    tracing::info!("setting net.ipv4.conf.all.route_localnet=1 for localhost NodePorts");
    std::fs::write(ROUTE_LOCALNET, "1")
}
