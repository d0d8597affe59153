//! The `--ip-masq` ruleset: masquerade pod traffic leaving the pod network, nothing inside it.
//!
//! Programmed through `sluice-nft` — one atomic netlink transaction, no `nft` process — in
//! Sluice's own table, and kept right like every other piece of overlay state: each reconcile
//! reads the table back and, if anything differs from what it should be (the table deleted,
//! a rule removed or added, a chain changed), rebuilds the whole table in one transaction
//! (`add`, `delete`, then the table), so traffic never sees a half-written ruleset and nobody
//! else's tables are touched. A converged table costs one read per reconcile.
//!
//! The rules follow flannel's iptables mode rather than its nftables mode, which inverted one
//! rule (`saddr != podCIDR` where iptables has `! -s Network -d podCIDR`) and so made the host
//! → overlay masquerade unreachable. Packets kube-proxy marked for masquerading (`0x4000`,
//! tested masked as iptables does, so other mark bits do not defeat it) are left to it: each
//! masquerade rule requires that bit clear, which is the same as flannel's leading
//! `mark … return` because every other rule of the chain only returns.

use ipnet::IpNet;
use sluice_nft::{
    BaseChain, ChainDef, ChainType, Family, Field, Hook, NftError, NftKernel, Op, Rule, Stmt,
    TableState, Transaction, Verdict, fingerprint,
};

/// Sluice's nftables table name (in families `ip` and `ip6`).
pub const TABLE: &str = "sluice-overlay";

/// kube-proxy's masquerade mark: such packets are NATed by kube-proxy already.
const KUBE_MARK_MASQ: u32 = 0x4000;
/// `srcnat`.
const SRCNAT: i32 = 100;
/// `filter`.
const FILTER: i32 = 0;

/// One family's pod network and this node's pod subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasqNets {
    /// The whole pod network (`Network` / `IPv6Network`).
    pub network: IpNet,
    /// This node's pod subnet.
    pub pod_cidr: IpNet,
}

impl MasqNets {
    /// The table's family.
    pub fn family(&self) -> Family {
        Family::of(self.network.addr())
    }
}

/// The transaction that (re)creates the table for one family from scratch.
pub fn transaction(nets: &MasqNets) -> Transaction {
    let mut tx = cleanup(nets.family());
    tx.push(Op::AddTable {
        comment: Some("--ip-masq of sluice-overlay".into()),
    });
    for (chain, rules) in chains(nets) {
        let name = chain.name.clone();
        tx.push(Op::AddChain(chain));
        for rule in rules {
            tx.push(Op::AddRule {
                chain: name.clone(),
                rule,
            });
        }
    }
    tx
}

/// The transaction that removes the table of `family`, if present (`add` first, so the
/// `delete` never fails on a missing table).
pub fn cleanup(family: Family) -> Transaction {
    let mut tx = Transaction::new(family, TABLE);
    tx.push(Op::AddTable { comment: None });
    tx.push(Op::DeleteTable);
    tx
}

/// The table for one family as an `nft -f` script (golden files, debugging).
pub fn render(nets: &MasqNets) -> String {
    sluice_nft::text::script(&transaction(nets))
}

/// Makes the kernel hold exactly the table for `nets`; true when it had to write it.
pub fn repair(kernel: &mut impl NftKernel, nets: &MasqNets) -> Result<bool, NftError> {
    let current = kernel.read_table(nets.family(), TABLE)?;
    if current.is_some_and(|t| matches(&t, nets)) {
        return Ok(false);
    }
    kernel.apply(&transaction(nets))?;
    Ok(true)
}

/// Whether a table read back is exactly the one for `nets`: the same chains with the same
/// hooks, each holding our rules (by fingerprint) in order, and nothing else.
pub fn matches(table: &TableState, nets: &MasqNets) -> bool {
    let family = nets.family();
    let want = chains(nets);
    table.sets.is_empty()
        && table.chains.len() == want.len()
        && want.iter().all(|(def, rules)| {
            table.chain(&def.name).is_some_and(|c| {
                !c.unrecognised
                    && c.def == *def
                    && c.rules.len() == rules.len()
                    && c.rules
                        .iter()
                        .zip(rules)
                        .all(|(have, r)| have.fingerprint == Some(fingerprint(family, r)))
            })
        })
}

/// The chains and their rules.
fn chains(nets: &MasqNets) -> Vec<(ChainDef, Vec<Rule>)> {
    let (net, pod) = (nets.network, nets.pod_cidr.trunc());
    let multicast: IpNet = match net {
        IpNet::V4(_) => IpNet::from(ipnet::Ipv4Net::new_assert([224, 0, 0, 0].into(), 4)),
        IpNet::V6(_) => IpNet::from(ipnet::Ipv6Net::new_assert(
            [0xff00, 0, 0, 0, 0, 0, 0, 0].into(),
            8,
        )),
    };
    let is = |field, net| Stmt::Prefix {
        field,
        net,
        negate: false,
    };
    let not = |field, net| Stmt::Prefix {
        field,
        net,
        negate: true,
    };
    let verdict = |v| Stmt::Verdict(v);
    let masquerade = Stmt::Masquerade { fully_random: true };
    let unmarked = Stmt::MarkClear(KUBE_MARK_MASQ);
    use Field::{Daddr, Saddr};
    let postrouting = vec![
        Rule::new(vec![
            is(Saddr, pod),
            is(Daddr, net),
            verdict(Verdict::Return),
        ]),
        Rule::new(vec![
            is(Saddr, net),
            is(Daddr, pod),
            verdict(Verdict::Return),
        ]),
        Rule::new(vec![
            not(Saddr, net),
            is(Daddr, pod),
            verdict(Verdict::Return),
        ]),
        Rule::new(vec![
            unmarked.clone(),
            is(Saddr, net),
            not(Daddr, multicast),
            masquerade.clone(),
        ]),
        Rule::new(vec![unmarked, not(Saddr, net), is(Daddr, net), masquerade]),
    ];
    let forward = vec![
        Rule::new(vec![is(Saddr, net), verdict(Verdict::Accept)]),
        Rule::new(vec![is(Daddr, net), verdict(Verdict::Accept)]),
    ];
    let base = |name: &str, kind, hook, priority| ChainDef {
        name: name.to_owned(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
    };
    vec![
        (
            base("postrouting", ChainType::Nat, Hook::Postrouting, SRCNAT),
            postrouting,
        ),
        (
            base("forward", ChainType::Filter, Hook::Forward, FILTER),
            forward,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_nft::FakeNft;

    fn nets() -> MasqNets {
        MasqNets {
            network: "10.244.0.0/16".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
        }
    }

    #[test]
    fn repair_writes_once_and_rewrites_whatever_drifted() {
        let mut nft = FakeNft::new();
        assert!(repair(&mut nft, &nets()).unwrap(), "first: written");
        assert!(!repair(&mut nft, &nets()).unwrap(), "converged: only read");
        assert_eq!(nft.applied(), 1);

        nft.apply(&cleanup(Family::Ip)).unwrap();
        assert!(repair(&mut nft, &nets()).unwrap(), "table deleted: rebuilt");

        let table = nft.read_table(Family::Ip, TABLE).unwrap().unwrap();
        let handle = table.chain("postrouting").unwrap().rules[3].handle;
        let mut tx = Transaction::new(Family::Ip, TABLE);
        tx.push(Op::DeleteRule {
            chain: "postrouting".into(),
            handle,
        });
        nft.apply(&tx).unwrap();
        assert!(repair(&mut nft, &nets()).unwrap(), "rule deleted: rebuilt");

        let mut extra = Transaction::new(Family::Ip, TABLE);
        extra.push(Op::AddRule {
            chain: "forward".into(),
            rule: Rule::new(vec![Stmt::Verdict(Verdict::Drop)]),
        });
        nft.apply(&extra).unwrap();
        assert!(repair(&mut nft, &nets()).unwrap(), "foreign rule: rebuilt");
        let table = nft.read_table(Family::Ip, TABLE).unwrap().unwrap();
        assert!(matches(&table, &nets()));
        assert_eq!(nft.tables(), [(Family::Ip, TABLE.to_owned())]);

        let other = MasqNets {
            pod_cidr: "10.244.2.0/24".parse().unwrap(),
            ..nets()
        };
        assert!(!matches(&table, &other), "another subnet's table differs");
    }

    #[test]
    fn a_refused_write_is_an_error_and_changes_nothing() {
        let mut nft = FakeNft::new();
        nft.fail_next(nix_enomem());
        assert!(repair(&mut nft, &nets()).is_err());
        assert!(nft.tables().is_empty());
        assert!(repair(&mut nft, &nets()).unwrap());
    }

    fn nix_enomem() -> i32 {
        12
    }
}
