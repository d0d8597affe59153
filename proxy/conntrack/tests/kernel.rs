//! ctnetlink against the real kernel (as root, in a test-bed cluster): a UDP flow through a
//! VIP (DNAT set up with the `nft` tool, test scaffolding only) is found by its original
//! destination and reply source and deleted, and nothing else is.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sluice_conntrack::{Conntrack, ConntrackError, FlowFilter};
use sluice_testbed::cluster::Cluster;
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{NetNs, require_root};

const TIMEOUT: Duration = Duration::from_secs(2);

fn udp_entries(ns: &NetNs, vip: &str) -> usize {
    let out = ns.exec(["conntrack", "-L", "-p", "udp"]).unwrap();
    out.lines()
        .filter(|l| l.contains(&format!("dst={vip} ")))
        .count()
}

#[test]
fn delete_removes_a_udp_flow_through_a_vip_and_nothing_else() {
    require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let node = cluster.node(1).unwrap();
    let client = node.add_pod("client").unwrap();
    let dns = cluster.node(2).unwrap().add_pod("dns").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 5353));
    let _udp = EchoServer::udp(dns.ns(), "dns", any).unwrap();
    let _tcp = EchoServer::tcp(dns.ns(), "dns", any).unwrap();
    let rules = format!(
        "table ip ct-test {{\n chain pre {{\n  type nat hook prerouting priority -100;\n  \
         ip daddr 10.96.0.53 meta l4proto {{ tcp, udp }} th dport 53 dnat to {}:5353\n }}\n}}\n",
        dns.ip()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rules).unwrap();
    node.ns()
        .exec(["nft", "-f", &file.path().display().to_string()])
        .unwrap();

    let vip = SocketAddr::from(([10, 96, 0, 53], 53));
    assert_eq!(
        traffic::udp_request(client.ns(), vip, TIMEOUT)
            .unwrap()
            .backend,
        "dns"
    );
    traffic::tcp_request(client.ns(), vip, TIMEOUT).unwrap();
    assert_eq!(udp_entries(node.ns(), "10.96.0.53"), 1);

    let vip_ip: IpAddr = vip.ip();
    let deleted = node
        .ns()
        .run(|| -> Result<(usize, usize), ConntrackError> {
            let mut ct = Conntrack::open()?;
            // Another endpoint's flows: nothing to delete.
            let other =
                ct.delete(&FlowFilter::udp_to(vip_ip).reply_from("10.244.9.9".parse().unwrap()))?;
            let this = ct.delete(
                &FlowFilter::udp_to(vip_ip)
                    .port(53)
                    .reply_from(dns.ip().into()),
            )?;
            Ok((other, this))
        })
        .unwrap()
        .unwrap();
    assert_eq!(deleted, (0, 1));
    assert_eq!(udp_entries(node.ns(), "10.96.0.53"), 0);
    // The TCP flow to the same VIP is untouched.
    let tcp = node.ns().exec(["conntrack", "-L", "-p", "tcp"]).unwrap();
    assert!(tcp.contains("dst=10.96.0.53 "), "{tcp}");
}
