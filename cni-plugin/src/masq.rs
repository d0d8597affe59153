//! `ipMasq`: pods' traffic leaving the cluster networks is masqueraded, in Sluice's own
//! nftables table (`ip sluice-cni` / `ip6 sluice-cni`): per network a set of pod addresses,
//! an interval set of destinations left alone (the cluster networks, the node's subnet,
//! multicast) and one NAT rule. Each ADD or DEL is one atomic netlink transaction through
//! `sluice-nft` — no `nft` process on the pod start-up path. Only runs when `ipMasq` is on;
//! flannel's default leaves masquerading to the overlay daemon. GC removes the entries of
//! addresses nobody holds (read back from the kernel), so a leaked one never stays.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::NetConf;
use sluice_nft::{
    BaseChain, ChainDef, ChainType, Element, Family, Field, Hook, KeyType, KeyValue, Netlink,
    NftKernel, Op, Rule, SetDef, Stmt, Transaction,
};

/// The table.
const TABLE: &str = "sluice-cni";
/// `srcnat`.
const SRCNAT: i32 = 100;

/// Why the masquerade rules could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("ipMasq: {0}")]
pub struct MasqError(#[from] sluice_nft::NftError);

/// Masquerades `pod` (in `subnet`) of network `net`, leaving `cluster` alone.
pub fn add(net: &str, pod: IpAddr, subnet: IpNet, cluster: &[IpNet]) -> Result<(), MasqError> {
    apply(&add_tx(net, pod, subnet, cluster))
}

/// Stops masquerading `pod`; a pod that was not masqueraded is fine.
pub fn del(net: &str, pod: IpAddr) -> Result<(), MasqError> {
    match apply(&del_tx(net, pod)) {
        Err(MasqError(e)) if e.errno() == Some(nix::libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn apply(tx: &Transaction) -> Result<(), MasqError> {
    Ok(Netlink::open()?.apply(tx)?)
}

/// Removes every masqueraded address of network `net` not in `held` (GC); returns them.
pub fn gc(net: &str, held: &BTreeSet<IpAddr>) -> Result<Vec<IpAddr>, MasqError> {
    let mut nft = Netlink::open()?;
    let (pods, _, _) = names(net);
    let mut removed = Vec::new();
    for family in [Family::Ip, Family::Ip6] {
        let Some(table) = nft.read_table(family, TABLE)? else {
            continue;
        };
        let stale: Vec<Element> = table
            .set(&pods)
            .map(|s| s.elements.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| match e.key.first() {
                Some(KeyValue::Addr(ip)) => !held.contains(ip),
                _ => false,
            })
            .collect();
        if stale.is_empty() {
            continue;
        }
        removed.extend(stale.iter().filter_map(|e| match e.key.first() {
            Some(KeyValue::Addr(ip)) => Some(*ip),
            _ => None,
        }));
        let mut tx = Transaction::new(family, TABLE);
        tx.push(Op::DeleteElements {
            set: pods.clone(),
            elements: stale,
        });
        nft.apply(&tx)?;
    }
    Ok(removed)
}

/// Whether an ADD of this network may have masqueraded: on when configured, else flannel's
/// default (the opposite of FLANNEL_IPMASQ); when subnet.env is gone too, maybe — removing a
/// missing element fails harmlessly. DEL and GC ask it alike.
pub(crate) fn may_be_on(conf: &NetConf) -> bool {
    match conf.bridge_settings().ip_masq {
        Some(on) => on,
        None => crate::attach::subnet_env(conf).map_or(true, |e| !e.ipmasq),
    }
}

/// The transaction of an ADD: table, sets and chain declared (idempotent), the rule
/// rebuilt, the destinations reset, the pod added.
pub fn add_tx(net: &str, pod: IpAddr, subnet: IpNet, cluster: &[IpNet]) -> Transaction {
    let (pods, keep, chain) = names(net);
    let mut tx = Transaction::new(Family::of(pod), TABLE);
    tx.push(Op::AddTable {
        comment: Some("ipMasq of the sluice CNI plugin".into()),
    });
    tx.push(Op::AddSet(set(&pods, false)));
    tx.push(Op::AddSet(set(&keep, true)));
    tx.push(Op::AddChain(ChainDef {
        name: chain.clone(),
        base: Some(BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Postrouting,
            priority: SRCNAT,
        }),
    }));
    tx.push(Op::FlushChain(chain.clone()));
    tx.push(Op::AddRule {
        chain,
        rule: Rule::new(vec![
            Stmt::InSet {
                field: Field::Saddr,
                set: pods.clone(),
                negate: false,
            },
            Stmt::InSet {
                field: Field::Daddr,
                set: keep.clone(),
                negate: true,
            },
            Stmt::Masquerade {
                fully_random: false,
            },
        ]),
    });
    tx.push(Op::FlushSet(keep.clone()));
    tx.push(Op::AddElements {
        set: keep,
        elements: kept(pod, subnet, cluster),
    });
    tx.push(Op::AddElements {
        set: pods,
        elements: vec![Element::key(vec![KeyValue::Addr(pod)])],
    });
    tx
}

/// The transaction of a DEL.
pub fn del_tx(net: &str, pod: IpAddr) -> Transaction {
    let (pods, _, _) = names(net);
    let mut tx = Transaction::new(Family::of(pod), TABLE);
    tx.push(Op::DeleteElements {
        set: pods,
        elements: vec![Element::key(vec![KeyValue::Addr(pod)])],
    });
    tx
}

/// Cluster networks, the node's subnet unless a cluster network holds it (interval sets
/// refuse overlaps), and multicast.
fn kept(pod: IpAddr, subnet: IpNet, cluster: &[IpNet]) -> Vec<Element> {
    let multicast: IpNet = match pod {
        IpAddr::V4(_) => "224.0.0.0/4".parse().expect("literal"),
        IpAddr::V6(_) => "ff00::/8".parse().expect("literal"),
    };
    let mut nets: Vec<IpNet> = cluster
        .iter()
        .map(IpNet::trunc)
        .filter(|n| n.addr().is_ipv4() == pod.is_ipv4())
        .collect();
    let subnet = subnet.trunc();
    if !nets.iter().any(|c| c.contains(&subnet)) {
        nets.push(subnet);
    }
    nets.push(multicast);
    nets.into_iter()
        .map(|n| Element {
            prefix: Some(n.prefix_len()),
            ..Element::key(vec![KeyValue::Addr(n.addr())])
        })
        .collect()
}

fn set(name: &str, interval: bool) -> SetDef {
    SetDef {
        interval,
        ..SetDef::set(name, vec![KeyType::Addr])
    }
}

/// Set and chain names of a network (its name's `.` made `_`; the rest is nft-safe).
fn names(net: &str) -> (String, String, String) {
    let n = net.replace('.', "_");
    (
        format!("pods-{n}"),
        format!("keep-{n}"),
        format!("post-{n}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_del_transactions() {
        let tx = add_tx(
            "cbr0",
            "10.244.1.5".parse().unwrap(),
            "10.244.1.1/24".parse().unwrap(),
            &["10.244.0.0/16".parse().unwrap()],
        );
        let text = sluice_nft::text::script(&tx);
        assert!(text.contains("add rule ip sluice-cni post-cbr0 ip saddr @pods-cbr0 ip daddr != @keep-cbr0 masquerade"), "{text}");
        assert!(
            text.contains("add element ip sluice-cni keep-cbr0 { 10.244.0.0/16, 224.0.0.0/4 }"),
            "{text}"
        );
        assert!(
            text.ends_with("add element ip sluice-cni pods-cbr0 { 10.244.1.5 }\n"),
            "{text}"
        );
        let own = add_tx(
            "n",
            "10.9.0.5".parse().unwrap(),
            "10.9.0.0/24".parse().unwrap(),
            &[],
        );
        assert!(sluice_nft::text::script(&own).contains("keep-n { 10.9.0.0/24, 224.0.0.0/4 }"));
        assert_eq!(
            sluice_nft::text::script(&del_tx("cbr0", "fd00::5".parse().unwrap())),
            "delete element ip6 sluice-cni pods-cbr0 { fd00::5 }\n"
        );
    }
}
