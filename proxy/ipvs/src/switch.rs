//! Mode switches between `iptables` and `ipvs` leave nothing behind. The two modes share
//! chain names (`KUBE-SERVICES`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ` in nat, `KUBE-FORWARD`,
//! `KUBE-PROXY-FIREWALL` in filter), so on start neither can run the other's whole cleanup:
//! it would tear down the starting mode's own live rules on every restart. What goes instead
//! is what only the other mode has — its chains, the rules in the shared chains that lead to
//! them or match its ipsets, its jumps from the built-in chains that the starting mode does
//! not write identically — and, for IPVS, its virtual servers, `kube-ipvs0` and sets. The
//! shared chains' other rules stay until the starting mode's first full sync rewrites them.
//!
//! A deliberate difference from upstream: kube-proxy's `platformCleanup` removes the iptables
//! and IPVS modes' leftovers only when it starts in nftables mode or for `--cleanup`, so a
//! switch between the two leaves the other mode's objects behind there.

use sluice_model::service::IpFamily;
use sluice_proxy_iptables::leftovers::{
    Foreign, Removed, iptables_jumps, is_iptables_chain, remove_foreign,
};
use sluice_proxy_iptables::rule::Rule;
use sluice_proxy_iptables::{ExecError, Iptables};

use crate::rules::{FILTER_CHAINS, JUMPS, NAT_CHAINS};
use crate::sets;

/// Whether `chain` of `table` is one the IPVS mode writes.
pub fn is_ipvs_chain(table: &str, chain: &str) -> bool {
    match table {
        "nat" => NAT_CHAINS.contains(&chain),
        "filter" => FILTER_CHAINS.contains(&chain),
        _ => false,
    }
}

/// The IPVS mode's jumps from the built-in chains: `(table, "-A FROM …")`.
pub fn ipvs_jumps() -> Vec<(&'static str, String)> {
    (JUMPS.iter())
        .map(|(table, from, to, comment)| {
            (
                *table,
                format!("-A {from} -m comment --comment \"{comment}\" -j {to}"),
            )
        })
        .collect()
}

/// `theirs` minus the rules (canonically equal) that `ours` also has.
fn only_in(
    theirs: Vec<(&'static str, String)>,
    ours: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let canon = |l: &str| Rule::parse(l).ok();
    (theirs.into_iter())
        .filter(|(t, l)| !ours.iter().any(|(o, m)| o == t && canon(m) == canon(l)))
        .collect()
}

/// On start in ipvs mode: the iptables mode's chains that the IPVS mode does not write
/// (`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`, `KUBE-FW-`, `KUBE-SEP-`, `KUBE-NODEPORTS`, filter
/// `KUBE-SERVICES` and `KUBE-EXTERNAL-SERVICES`, the canaries), the rules leading to them,
/// and its own jumps into `KUBE-PROXY-FIREWALL`.
pub fn remove_iptables_mode(ipt: &mut impl Iptables) -> Result<Removed, ExecError> {
    let chain = |t: &str, c: &str| is_iptables_chain(t, c) && !is_ipvs_chain(t, c);
    let rules = only_in(iptables_jumps(), &ipvs_jumps());
    let foreign = Foreign {
        chain: &chain,
        set: &|_| false,
        rules: &rules,
    };
    remove_foreign(ipt, &foreign)
}

/// On start in iptables mode, the IPVS mode's rules in `family`'s tables: its chains that
/// the iptables mode does not write (`KUBE-NODE-PORT`, `KUBE-LOAD-BALANCER`,
/// `KUBE-SOURCE-RANGES-FIREWALL`, `KUBE-IPVS-FILTER`, `KUBE-IPVS-OUT-FILTER`), every rule
/// matching its sets (so they can be destroyed), and its jumps that the iptables mode does
/// not write identically.
pub fn remove_ipvs_rules(ipt: &mut impl Iptables, family: IpFamily) -> Result<Removed, ExecError> {
    let chain = |t: &str, c: &str| is_ipvs_chain(t, c) && !is_iptables_chain(t, c);
    let names: Vec<String> = (sets::ALL.iter())
        .map(|(s, _)| sets::name(s, family))
        .collect();
    let set = |s: &str| names.iter().any(|n| n == s);
    let rules = only_in(ipvs_jumps(), &iptables_jumps());
    let foreign = Foreign {
        chain: &chain,
        set: &set,
        rules: &rules,
    };
    remove_foreign(ipt, &foreign)
}
