//! The chain-free "data" layout that issue 14's stretch goal led to, hand-written in a bare
//! table, so `sluice-bench nftables` can show what it costs a new connection without the
//! rest of the proxy's table next to the proxy's own table in the same run. The proxy
//! programs this layout for Services reached only at their ClusterIP
//! (`proxy/nftables/src/base.rs`, `MAX_PICK`), with the count lookup in the `services` chain
//! instead of a `select` chain.
//!
//! Why it exists: every nf_tables commit walks every chain in the namespace, and a rule with
//! a `dnat` (or any jump element) makes the kernel re-validate every chain it can reach, so
//! with a chain per Service no change can cost the same at 10,000 Services as at 100
//! (`bench/layouts/commit-cost.sh` measures each cost). Here a Service is nothing but map
//! elements: its endpoint count, and its endpoints keyed by Service and bucket. The count is
//! looked up into the packet's destination address (which the `dnat` rewrites anyway; nft
//! cannot feed one map's value into a verdict map directly) and picks one of a few static
//! chains whose one rule is `dnat … to ct original ip daddr . … . numgen random mod <count>
//! map @endpoints`. An endpoint change is then two or three element updates and costs the
//! same at any size. See bench/README.md, "The stretch layout, measured".

use std::fmt::Write;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use anyhow::Context;
use sluice_testbed::NetNs;

/// The largest endpoint count the static pick chains cover.
const MAX_PICK: u32 = 8;

/// The layout as an `nft -f` script: `services` ClusterIP Services on TCP port 80 at
/// `10.96.0.0 + i`, each with `endpoints` endpoints (at most [`MAX_PICK`]), except Service
/// `traffic`, whose one endpoint is `target`.
pub(crate) fn data_layout(
    services: u32,
    endpoints: u32,
    traffic: u32,
    target: SocketAddrV4,
) -> String {
    let count = endpoints.clamp(1, MAX_PICK);
    let mut s = String::from(HEAD);
    for k in 1..=MAX_PICK {
        let _ = write!(
            s,
            " chain pick{k} {{\n  meta l4proto tcp dnat ip to ct original ip daddr . meta \
             l4proto . th dport . numgen random mod {k} map @endpoints\n }}\n"
        );
    }
    s.push_str("}\n");
    let picks = (1..=MAX_PICK).map(|k| format!("{} : goto pick{k}", Ipv4Addr::from(k)));
    elements(&mut s, "pick", picks);
    let vip = |i: u32| Ipv4Addr::from(0x0a60_0000 + i);
    let dispatch = (0..services).map(|i| format!("{} . tcp . 80 : goto select", vip(i)));
    elements(&mut s, "service-ips", dispatch);
    let counts = (0..services).map(|i| {
        let n = if i == traffic { 1 } else { count };
        format!("{} . tcp . 80 : {}", vip(i), Ipv4Addr::from(n))
    });
    elements(&mut s, "counts", counts);
    let backends = (0..services).flat_map(|i| {
        let n = if i == traffic { 1 } else { count };
        (0..n).map(move |k| {
            let to = if i == traffic {
                target
            } else {
                SocketAddrV4::new(Ipv4Addr::from(0x0a80_0000 + i * MAX_PICK + k), 80)
            };
            format!("{} . tcp . 80 . {k} : {} . {}", vip(i), to.ip(), to.port())
        })
    });
    elements(&mut s, "endpoints", backends);
    s
}

/// The table, its maps and the chains every Service shares (the pick chains follow).
const HEAD: &str = "table ip sketch {
 map service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
 map counts { type ipv4_addr . inet_proto . inet_service : ipv4_addr ; }
 map endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . th dport ; }
 map pick { type ipv4_addr : verdict ; }
 chain services { ip daddr . meta l4proto . th dport vmap @service-ips ; }
 chain select {
  ip daddr set ip daddr . meta l4proto . th dport map @counts
  ip daddr vmap @pick
 }
 chain nat-prerouting {
  type nat hook prerouting priority -100; policy accept;
  jump services
 }
 chain nat-output {
  type nat hook output priority -100; policy accept;
  jump services
 }
";

fn elements(s: &mut String, map: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    let _ = writeln!(s, "add element ip sketch {map} {{ {} }}", items.join(", "));
}

/// Loads an `nft -f` script into `ns`.
pub(crate) fn load(ns: &NetNs, script: &str) -> anyhow::Result<()> {
    let out = ns.run(|| -> anyhow::Result<std::process::Output> {
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        nft.stdin
            .take()
            .context("nft's stdin")?
            .write_all(script.as_bytes())?;
        Ok(nft.wait_with_output()?)
    })??;
    anyhow::ensure!(
        out.status.success(),
        "nft -f refused the sketch layout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traffic_service_has_its_one_endpoint_and_the_others_theirs() {
        let target = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 8080);
        let s = data_layout(3, 2, 1, target);
        assert!(s.contains("10.96.0.1 . tcp . 80 : 0.0.0.1"), "{s}");
        assert!(
            s.contains("10.96.0.1 . tcp . 80 . 0 : 10.0.2.2 . 8080"),
            "{s}"
        );
        assert!(!s.contains("10.96.0.1 . tcp . 80 . 1 "), "{s}");
        assert!(s.contains("10.96.0.2 . tcp . 80 : 0.0.0.2"), "{s}");
        assert!(
            s.contains("10.96.0.2 . tcp . 80 . 1 : 10.128.0.17 . 80"),
            "{s}"
        );
        assert!(s.contains("0.0.0.8 : goto pick8"), "{s}");
    }
}
