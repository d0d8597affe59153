//! kube-proxy's `CleanupLeftovers` for one family: the jump rules out of the built-in chains,
//! then every chain of ours flushed and deleted in one restore per table, then the mangle
//! canary. The kubelet's KUBE-FIREWALL chain and its jumps are left alone, as kube-proxy
//! leaves them.

use crate::dump::Dump;
use crate::exec::{ExecError, Iptables};
use crate::jumps::JUMPS;
use crate::names::*;

pub(crate) const NAT_CHAINS: [&str; 5] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
    KUBE_PROXY_CANARY,
];
pub(crate) const FILTER_CHAINS: [&str; 6] = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_PROXY_CANARY,
];

/// Removes everything the iptables mode programs; the first failure is returned after the
/// rest was still attempted.
pub(crate) fn cleanup(ipt: &mut impl Iptables) -> Result<(), ExecError> {
    let mut first_err = None;
    for j in &JUMPS {
        // Absent rules and chains answer "no"; only a failing program is an error.
        match ipt.run(&j.command("-D")) {
            Err(e) if !e.is_not_found() => {
                first_err.get_or_insert(e);
            }
            _ => {}
        }
    }
    for (table, fixed) in [("nat", &NAT_CHAINS[..]), ("filter", &FILTER_CHAINS[..])] {
        match delete_chains(ipt, table, fixed) {
            Err(e) if !e.is_not_found() => {
                first_err.get_or_insert(e);
            }
            _ => {}
        }
    }
    let _ = ipt.run(&["-X", KUBE_PROXY_CANARY, "-t", "mangle"]);
    first_err.map_or(Ok(()), Err)
}

fn delete_chains(ipt: &mut impl Iptables, table: &str, fixed: &[&str]) -> Result<(), ExecError> {
    let saved = ipt.save(table)?;
    let dump = Dump::parse(&saved).unwrap_or_default();
    let Some(t) = dump.table(table) else {
        return Ok(());
    };
    let ours: Vec<&str> = (t.chains.iter())
        .map(|c| c.name.as_str())
        .filter(|c| fixed.contains(c) || (table == "nat" && is_service_chain(c)))
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    let mut input = format!("*{table}\n");
    for c in &ours {
        input.push_str(&format!(":{c} - [0:0]\n"));
    }
    for c in &ours {
        input.push_str(&format!("-X {c}\n"));
    }
    input.push_str("COMMIT\n");
    ipt.restore(&input)
}
