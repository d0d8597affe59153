//! What the soak must leave behind once every soak pod and Service is gone: exactly what the
//! lab had before it started. Per node: the Service rules (the `ip sluice` table's text, or
//! the count of Service chains in iptables mode), the veths, the addresses reserved in the
//! CNI plugin's IPAM store; and no UDP flow to a deleted Service (the proxies delete them) nor
//! an open TCP connection to a removed pod or deleted Service. (UDP flows to a Service
//! answered by an endpoint that left it are checked during the run, see `churn`.)
//! TCP entries in TIME_WAIT and the other closing states, and unanswered SYNs, are not leaks —
//! the kernel expires them (2 min at most), and kube-proxy deletes only UDP entries — so they
//! are counted apart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use sluice_testbed::NetNs;

use super::churn::rules;
use crate::up::Lab;

/// One node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeState {
    rules: String,
    veths: BTreeSet<String>,
    reserved: BTreeSet<String>,
}

/// Every node's state, by node name.
pub(crate) type Baseline = BTreeMap<String, NodeState>;

/// Reads every node's state.
pub(crate) fn snapshot(lab: &Lab) -> anyhow::Result<Baseline> {
    let mut out = BTreeMap::new();
    for node in lab.node_names() {
        let ns = NetNs::open(&lab.state.ns(&node))?;
        let rules = normalise(&rules(&ns, &lab.state.proxy_mode)?, &lab.state.proxy_mode);
        let veths = (ns
            .exec(["ip", "-o", "link", "show", "type", "veth"])?
            .lines())
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
        let store = lab.node_dir(&node).join("cni/networks");
        let reserved = reserved(&store);
        out.insert(
            node,
            NodeState {
                rules,
                veths,
                reserved,
            },
        );
    }
    Ok(out)
}

/// The rules without what changes by itself: iptables' counters and comment lines.
fn normalise(text: &str, mode: &str) -> String {
    match mode {
        "iptables" => (text.lines())
            .filter(|l| l.starts_with(":KUBE-SVC") || l.starts_with(":KUBE-SEP"))
            .map(|l| l.split_whitespace().next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => text.to_owned(),
    }
}

/// Addresses reserved in a host-local style store (one file per address, per network).
fn reserved(store: &std::path::Path) -> BTreeSet<String> {
    let networks = std::fs::read_dir(store).into_iter().flatten().flatten();
    networks
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|f| f.file_name().to_str().map(str::to_owned))
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .collect()
}

/// What differs from `before`, one line per leak (empty: nothing leaked).
pub(crate) fn leaks(before: &Baseline, after: &Baseline) -> Vec<String> {
    let mut out = Vec::new();
    for (node, b) in before {
        let Some(a) = after.get(node) else {
            out.push(format!("{node}: not read"));
            continue;
        };
        let diff = |x: &BTreeSet<String>, y: &BTreeSet<String>| -> Vec<String> {
            x.symmetric_difference(y).cloned().collect()
        };
        let v = diff(&b.veths, &a.veths);
        if !v.is_empty() {
            out.push(format!("{node}: veths differ: {v:?}"));
        }
        let r = diff(&b.reserved, &a.reserved);
        if !r.is_empty() {
            out.push(format!("{node}: IPAM reservations differ: {r:?}"));
        }
        if b.rules != a.rules {
            let old: BTreeSet<&str> = b.rules.lines().collect();
            let new: BTreeSet<&str> = a.rules.lines().collect();
            let lines: Vec<&&str> = old.symmetric_difference(&new).take(10).collect();
            out.push(format!("{node}: Service rules differ: {lines:?}"));
        }
    }
    out
}

/// Conntrack entries in the nodes that should be gone: `(leaked, expiring)`. Leaked: a UDP
/// flow sent to a deleted Service's address (Sluice deletes the flows of a destination a sync
/// takes away) or a TCP connection to a removed pod or deleted Service that is not closing.
/// Expiring: closing TCP entries, and the plain (forwarded, never NATed) UDP entries the
/// endpoints' nodes keep for pod addresses — the kernel's, which neither kube-proxy nor Sluice
/// deletes; a reused source port can make one "assured" (2 min).
pub(crate) fn conntrack(
    lab: &Lab,
    removed: &[Ipv4Addr],
    deleted_vips: &[Ipv4Addr],
) -> anyhow::Result<(Vec<String>, usize)> {
    let (mut leaked, mut expiring) = (Vec::new(), 0);
    for node in lab.node_names() {
        let ns = NetNs::open(&lab.state.ns(&node))?;
        let table = ns.exec(["conntrack", "-L"]).unwrap_or_default();
        for line in table.lines() {
            match judge(line, removed, deleted_vips) {
                Some(Entry::Leaked) => leaked.push(format!("{node}: {}", line.trim())),
                Some(Entry::Expiring) => expiring += 1,
                None => {}
            }
        }
    }
    Ok((leaked, expiring))
}

/// What one `conntrack -L` line about a removed pod or deleted Service is.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Leaked,
    Expiring,
}

/// Judges one `conntrack -L` line; `None` when it is about neither a removed pod nor a
/// deleted Service.
fn judge(line: &str, removed: &[Ipv4Addr], deleted_vips: &[Ipv4Addr]) -> Option<Entry> {
    let line = format!("{line} ");
    // The original tuple's source and destination, then the reply's.
    let addrs: Vec<Ipv4Addr> = (line.split_whitespace())
        .filter_map(|w| w.strip_prefix("src=").or_else(|| w.strip_prefix("dst=")))
        .filter_map(|a| a.parse().ok())
        .collect();
    let orig_dst_deleted = addrs.get(1).is_some_and(|d| deleted_vips.contains(d));
    let any = (addrs.iter()).any(|a| removed.contains(a) || deleted_vips.contains(a));
    // A connection attempt nobody answered is not an open connection: the churn's probe of a
    // Service not programmed yet makes them (in iptables mode the node routes such a SYN out,
    // masqueraded, and it stays SYN_SENT until it expires).
    let unanswered = line.contains(" SYN_SENT ") && line.contains(" [UNREPLIED] ");
    let closing = unanswered
        || [
            " TIME_WAIT ",
            " CLOSE ",
            " CLOSE_WAIT ",
            " FIN_WAIT ",
            " LAST_ACK ",
        ]
        .iter()
        .any(|s| line.contains(s));
    let leak = match () {
        () if line.starts_with("udp") => orig_dst_deleted,
        () if line.starts_with("tcp") => any && !closing,
        () => false,
    };
    match (leak, any) {
        (true, _) => Some(Entry::Leaked),
        (false, true) => Some(Entry::Expiring),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(rules: &str, veths: &[&str], reserved: &[&str]) -> NodeState {
        NodeState {
            rules: rules.to_owned(),
            veths: veths.iter().map(|s| (*s).to_owned()).collect(),
            reserved: reserved.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn every_difference_from_before_is_a_leak() {
        let before: Baseline = [(
            "node1".to_owned(),
            node("table", &["eth0", "veth1"], &["10.244.1.2"]),
        )]
        .into();
        assert!(leaks(&before, &before.clone()).is_empty());
        let after: Baseline = [(
            "node1".to_owned(),
            node(
                "table\nchain x",
                &["eth0", "veth1", "veth9"],
                &["10.244.1.2", "10.244.1.9"],
            ),
        )]
        .into();
        let found = leaks(&before, &after);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("veth9") && found[1].contains("10.244.1.9"));
        assert!(found[2].contains("chain x"));
    }

    #[test]
    fn open_connections_and_deleted_services_flows_leak_closing_and_unanswered_ones_expire() {
        let removed: Vec<Ipv4Addr> = vec!["10.244.1.48".parse().unwrap()];
        let deleted: Vec<Ipv4Addr> =
            vec!["10.96.0.3".parse().unwrap(), "10.96.0.20".parse().unwrap()];
        let judged = |line: &str| judge(line, &removed, &deleted);
        let udp = "udp      17 23 src=10.244.1.2 dst=10.96.0.3 sport=57901 dport=53 src=10.244.1.48 dst=10.244.1.2 sport=8080 dport=57901 mark=0 use=1";
        assert_eq!(judged(udp), Some(Entry::Leaked));
        let open = "tcp      6 431999 ESTABLISHED src=10.244.1.2 dst=10.244.1.48 sport=4000 dport=8080 src=10.244.1.48 dst=10.244.1.2 sport=8080 dport=4000 [ASSURED] mark=0 use=1";
        assert_eq!(judged(open), Some(Entry::Leaked));
        let closing = "tcp      6 110 TIME_WAIT src=10.244.1.2 dst=10.96.0.3 sport=4001 dport=80 src=10.244.1.48 dst=10.244.1.2 sport=8080 dport=4001 [ASSURED] mark=0 use=1";
        assert_eq!(judged(closing), Some(Entry::Expiring));
        let probe = "tcp      6 69 SYN_SENT src=10.244.1.2 dst=10.96.0.20 sport=37288 dport=80 [UNREPLIED] src=10.96.0.20 dst=192.168.0.11 sport=80 dport=8883 mark=0 use=1";
        assert_eq!(judged(probe), Some(Entry::Expiring));
        let forwarded = "udp      17 20 src=10.244.2.2 dst=10.244.1.48 sport=5000 dport=8080 src=10.244.1.48 dst=10.244.2.2 sport=8080 dport=5000 mark=0 use=1";
        assert_eq!(judged(forwarded), Some(Entry::Expiring));
        let other = "udp      17 20 src=10.244.2.2 dst=10.96.0.2 sport=5000 dport=53 src=10.244.1.40 dst=10.244.2.2 sport=8080 dport=5000 mark=0 use=1";
        assert_eq!(judged(other), None);
    }
}
