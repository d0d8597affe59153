//! The `--ip-masq` ruleset: masquerade pod traffic leaving the pod network, nothing inside it.
//!
//! Rendered as one nft transaction that recreates Sluice's own table (`add` + `delete` +
//! the full table, atomically), so a reconcile repairs any drift without a resync loop and
//! never touches anyone else's tables. The rules follow flannel's iptables mode rather than
//! its nftables mode, which inverted one rule (`saddr != podCIDR` where iptables has
//! `! -s Network -d podCIDR`) and so made the host → overlay masquerade unreachable; the mark
//! test is masked (`& 0x4000`) as iptables does, so other mark bits do not defeat it.

use std::fmt::Write;

use ipnet::IpNet;

/// Sluice's nftables table name (in families `ip` and `ip6`).
pub const TABLE: &str = "sluice-overlay";

/// kube-proxy's masquerade mark: such packets are NATed by kube-proxy already.
const KUBE_MARK_MASQ: u32 = 0x4000;

/// One family's pod network and this node's pod subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasqNets {
    /// The whole pod network (`Network` / `IPv6Network`).
    pub network: IpNet,
    /// This node's pod subnet.
    pub pod_cidr: IpNet,
}

/// The nft script (for `nft -f -`) that installs the table for one family.
pub fn render(nets: &MasqNets) -> String {
    let (family, kw, multicast) = match nets.network {
        IpNet::V4(_) => ("ip", "ip", "224.0.0.0/4"),
        IpNet::V6(_) => ("ip6", "ip6", "ff00::/8"),
    };
    let (net, pod) = (nets.network, nets.pod_cidr);
    let mut s = String::new();
    // `add` first so `delete` never fails on a missing table: one idempotent transaction.
    let _ = writeln!(s, "add table {family} {TABLE}");
    let _ = writeln!(s, "delete table {family} {TABLE}");
    let _ = writeln!(s, "table {family} {TABLE} {{");
    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\tmeta mark & {KUBE_MARK_MASQ:#x} == {KUBE_MARK_MASQ:#x} return"
    );
    let _ = writeln!(s, "\t\t{kw} saddr {pod} {kw} daddr {net} return");
    let _ = writeln!(s, "\t\t{kw} saddr {net} {kw} daddr {pod} return");
    let _ = writeln!(s, "\t\t{kw} saddr != {net} {kw} daddr {pod} return");
    let _ = writeln!(
        s,
        "\t\t{kw} saddr {net} {kw} daddr != {multicast} masquerade fully-random"
    );
    let _ = writeln!(
        s,
        "\t\t{kw} saddr != {net} {kw} daddr {net} masquerade fully-random"
    );
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(s, "\t\t{kw} saddr {net} accept");
    let _ = writeln!(s, "\t\t{kw} daddr {net} accept");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The nft script that removes the table of `family` (`ip` or `ip6`), if present.
pub fn render_cleanup(family: &str) -> String {
    format!("add table {family} {TABLE}\ndelete table {family} {TABLE}\n")
}
