//! The iptables rules kube-proxy's IPVS mode still needs — masquerade, the node-port and
//! load-balancer dispatch, the source-range firewall, `KUBE-IPVS-FILTER` — written through the
//! iptables mode's restore machinery ([`Iptables`]: `iptables-restore --noflush`, the same
//! chokepoint and fake). The rules match ipsets, so they never change with the Services: they
//! are restored on full syncs only; Service changes touch set members.

use sluice_proxy_iptables::dump::Dump;
use sluice_proxy_iptables::rule::Rule;
use sluice_proxy_iptables::{ExecError, Iptables};

use crate::render::IpvsConfig;
use crate::sets::{self, name};

/// Our nat chains.
pub const NAT_CHAINS: [&str; 5] = [
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
];
/// Our filter chains.
pub const FILTER_CHAINS: [&str; 6] = [
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

/// The jumps from the built-in chains: (table, chain, target, comment).
pub const JUMPS: [(&str, &str, &str, &str); 8] = [
    (
        "nat",
        "PREROUTING",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "OUTPUT",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "POSTROUTING",
        "KUBE-POSTROUTING",
        "kubernetes postrouting rules",
    ),
    (
        "filter",
        "FORWARD",
        "KUBE-FORWARD",
        "kubernetes forwarding rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-NODE-PORT",
        "kubernetes health check rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-PROXY-FIREWALL",
        "kube-proxy firewall rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-IPVS-FILTER",
        "kubernetes ipvs access filter",
    ),
    (
        "filter",
        "OUTPUT",
        "KUBE-IPVS-OUT-FILTER",
        "kubernetes ipvs access filter",
    ),
];

fn jump_args<'a>(op: &'a str, j: &(&'a str, &'a str, &'a str, &'a str)) -> Vec<&'a str> {
    vec![
        op,
        j.1,
        "-t",
        j.0,
        "-m",
        "comment",
        "--comment",
        j.3,
        "-j",
        j.2,
    ]
}

/// The nat and filter tables' chains of ours, as `iptables-restore --noflush` input.
pub fn render(cfg: &IpvsConfig, random_fully: bool) -> String {
    let s = |set: &str| name(set, cfg.family);
    let mark = format!("{:#x}", 1u32 << cfg.masquerade_bit);
    let mut nat = String::from("*nat\n");
    for c in NAT_CHAINS {
        nat.push_str(&format!(":{c} - [0:0]\n"));
    }
    let mut a = |rule: String| {
        nat.push_str("-A ");
        nat.push_str(&rule);
        nat.push('\n');
    };
    a(format!(
        "KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set {} dst,dst,src -j MASQUERADE",
        s(sets::LOOP_BACK)
    ));
    a(format!(
        "KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    a(format!("KUBE-POSTROUTING -j MARK --xor-mark {mark}"));
    a(format!(
        "KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{}",
        if random_fully { " --random-fully" } else { "" }
    ));
    a(format!("KUBE-MARK-MASQ -j MARK --or-mark {mark}"));
    let cluster = s(sets::CLUSTER_IP);
    let comment =
        "-m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\"";
    if cfg.masquerade_all {
        a(format!(
            "KUBE-SERVICES {comment} -m set --match-set {cluster} dst,dst -j KUBE-MARK-MASQ"
        ));
    } else if let Some(interface) = &cfg.pod_interface {
        // kube-proxy's `localDetector.IfNotLocal`: off-cluster traffic to a ClusterIP (which
        // may leave the node towards a remote endpoint) is masqueraded.
        a(format!(
            "KUBE-SERVICES {comment} -m set --match-set {cluster} dst,dst ! -i {interface} -j KUBE-MARK-MASQ"
        ));
    } else if !cfg.cluster_cidrs.is_empty() {
        for cidr in &cfg.cluster_cidrs {
            a(format!(
                "KUBE-SERVICES {comment} -m set --match-set {cluster} dst,dst ! -s {cidr} -j KUBE-MARK-MASQ"
            ));
        }
    } else {
        // No way to tell pods: masquerade traffic whose source is itself a Service address
        // (the node talking to a ClusterIP it holds on kube-ipvs0), as kube-proxy does.
        a(format!(
            "KUBE-SERVICES {comment} -m set --match-set {cluster} src,dst -j KUBE-MARK-MASQ"
        ));
    }
    a(format!(
        "KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set {} dst,dst -j KUBE-MARK-MASQ",
        s(sets::EXTERNAL_IP)
    ));
    a(format!(
        "KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set {} dst,dst -j KUBE-LOAD-BALANCER",
        s(sets::LOAD_BALANCER)
    ));
    a(format!(
        "KUBE-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set {} dst,dst -j RETURN",
        s(sets::LOAD_BALANCER_LOCAL)
    ));
    a("KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".into());
    a("KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into());
    for (p, set, local) in [
        ("tcp", sets::NODE_PORT_TCP, sets::NODE_PORT_LOCAL_TCP),
        ("udp", sets::NODE_PORT_UDP, sets::NODE_PORT_LOCAL_UDP),
    ] {
        a(format!(
            "KUBE-NODE-PORT -p {p} -m comment --comment \"Kubernetes nodeport {p} port with externalTrafficPolicy=local\" -m set --match-set {} dst -j RETURN",
            s(local)
        ));
        a(format!(
            "KUBE-NODE-PORT -p {p} -m comment --comment \"Kubernetes nodeport {p} port for masquerade purpose\" -m set --match-set {} dst -j KUBE-MARK-MASQ",
            s(set)
        ));
    }
    a(format!(
        "KUBE-NODE-PORT -p sctp -m set --match-set {} dst,dst -j RETURN",
        s(sets::NODE_PORT_LOCAL_SCTP)
    ));
    a(format!(
        "KUBE-NODE-PORT -p sctp -m set --match-set {} dst,dst -j KUBE-MARK-MASQ",
        s(sets::NODE_PORT_SCTP)
    ));
    a(format!(
        "KUBE-SERVICES -m set --match-set {cluster} dst,dst -j ACCEPT"
    ));
    a(format!(
        "KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
        s(sets::LOAD_BALANCER)
    ));
    nat.push_str("COMMIT\n");

    let mut filter = String::from("*filter\n");
    for c in FILTER_CHAINS {
        filter.push_str(&format!(":{c} - [0:0]\n"));
    }
    let mut f = |rule: String| {
        filter.push_str("-A ");
        filter.push_str(&rule);
        filter.push('\n');
    };
    if !cfg.tcp_be_liberal {
        f("KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".into());
    }
    f(format!(
        "KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    f("KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into());
    f(format!(
        "KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set {} dst -j ACCEPT",
        s(sets::HEALTH_CHECK_NODE_PORT)
    ));
    f(format!(
        "KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set {} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL",
        s(sets::LOAD_BALANCER_FW)
    ));
    f(format!(
        "KUBE-SOURCE-RANGES-FIREWALL -m set --match-set {} dst,dst,src -j RETURN",
        s(sets::LOAD_BALANCER_SOURCE_CIDR)
    ));
    f(format!(
        "KUBE-SOURCE-RANGES-FIREWALL -m set --match-set {} dst,dst,src -j RETURN",
        s(sets::LOAD_BALANCER_SOURCE_IP)
    ));
    f("KUBE-SOURCE-RANGES-FIREWALL -j DROP".into());
    for set in [
        sets::LOAD_BALANCER,
        sets::CLUSTER_IP,
        sets::EXTERNAL_IP,
        sets::EXTERNAL_IP_LOCAL,
    ] {
        f(format!(
            "KUBE-IPVS-FILTER -m set --match-set {} dst,dst -j RETURN",
            s(set)
        ));
    }
    f(format!(
        "KUBE-IPVS-FILTER -m set --match-set {} dst -j RETURN",
        s(sets::HEALTH_CHECK_NODE_PORT)
    ));
    f(format!(
        "KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        s(sets::IPVS_IPS)
    ));
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// Adds the jump rules that are missing (`-I`), as kube-proxy's `EnsureRule`; which are
/// there is read from one `iptables-save` per table rather than one `-C` per rule.
pub fn ensure_jumps(ipt: &mut impl Iptables) -> Result<(), ExecError> {
    let mut saved = ipt.save("nat")?;
    saved.push_str(&ipt.save("filter")?);
    let dump = Dump::parse(&saved).unwrap_or_default();
    for j in &JUMPS {
        let want = Rule::parse(&format!(
            "-A {} -m comment --comment \"{}\" -j {}",
            j.1, j.3, j.2
        ))
        .ok();
        let present = (dump.chain(j.0, j.1).into_iter())
            .flat_map(|c| &c.rules)
            .any(|r| Rule::parse(r).ok() == want);
        if !present {
            ipt.run(&jump_args("-I", j))?;
        }
    }
    Ok(())
}

/// Removes the jumps, then flushes and deletes our chains; the first failure is returned
/// after the rest was attempted.
pub fn cleanup(ipt: &mut impl Iptables) -> Result<(), ExecError> {
    let mut first = None;
    for j in &JUMPS {
        while let Ok(true) = ipt.run(&jump_args("-D", j)) {}
    }
    for (table, chains) in [("nat", &NAT_CHAINS[..]), ("filter", &FILTER_CHAINS[..])] {
        for c in chains {
            let _ = ipt.run(&["-F", c, "-t", table]);
        }
        for c in chains {
            match ipt.run(&["-X", c, "-t", table]) {
                Err(e) if !e.is_not_found() => {
                    first.get_or_insert(e);
                }
                _ => {}
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masquerade rule for off-cluster traffic to a ClusterIP follows the local detector,
    /// as kube-proxy's `localDetector.IfNotLocal`: by CIDR, by bridge, by interface prefix, and
    /// only the service-address-source rule without any.
    #[test]
    fn off_cluster_traffic_to_a_cluster_ip_is_masqueraded_by_the_local_detector() {
        let clusterip_masq = |cfg: &IpvsConfig| -> Vec<String> {
            (render(cfg, false).lines())
                .filter(|l| l.contains("KUBE-CLUSTER-IP") && l.ends_with("-j KUBE-MARK-MASQ"))
                .map(|l| {
                    l.split("--match-set KUBE-CLUSTER-IP ")
                        .nth(1)
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        let mut cfg = IpvsConfig::v4(&[]);
        assert_eq!(clusterip_masq(&cfg), ["src,dst -j KUBE-MARK-MASQ"]);
        cfg.cluster_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
        assert_eq!(
            clusterip_masq(&cfg),
            ["dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"]
        );
        cfg.cluster_cidrs.clear();
        cfg.pod_interface = Some("cni0".into());
        assert_eq!(
            clusterip_masq(&cfg),
            ["dst,dst ! -i cni0 -j KUBE-MARK-MASQ"]
        );
    }
}
