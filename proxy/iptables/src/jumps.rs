//! The rules kube-proxy keeps outside its own chains: a jump from each built-in chain into
//! its chains (never written by `iptables-restore`, which would have to rewrite the whole
//! built-in chain), and the canary chains whose disappearance says the tables were flushed.

use crate::config::IptConfig;
use crate::dump::Dump;
use crate::exec::{ExecError, Iptables};
use crate::names::*;
use crate::rule::Rule;
use sluice_model::service::IpFamily;

/// One jump from a built-in chain.
pub(crate) struct Jump {
    pub(crate) table: &'static str,
    pub(crate) to: &'static str,
    pub(crate) from: &'static str,
    pub(crate) comment: Option<&'static str>,
    pub(crate) new_only: bool,
}

const fn jump(
    table: &'static str,
    to: &'static str,
    from: &'static str,
    comment: &'static str,
    new_only: bool,
) -> Jump {
    Jump {
        table,
        to,
        from,
        comment: Some(comment),
        new_only,
    }
}

/// kube-proxy's `iptablesJumpChains`, in its order.
pub(crate) const JUMPS: [Jump; 12] = [
    jump(
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_NODEPORTS,
        "INPUT",
        "kubernetes health check service ports",
        false,
    ),
    jump(
        "filter",
        KUBE_SERVICES,
        "FORWARD",
        "kubernetes service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        true,
    ),
    jump(
        "filter",
        KUBE_FORWARD,
        "FORWARD",
        "kubernetes forwarding rules",
        false,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "INPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "OUTPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "filter",
        KUBE_PROXY_FIREWALL,
        "FORWARD",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        "nat",
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        KUBE_SERVICES,
        "PREROUTING",
        "kubernetes service portals",
        false,
    ),
    jump(
        "nat",
        KUBE_POSTROUTING,
        "POSTROUTING",
        "kubernetes postrouting rules",
        false,
    ),
];

/// The kubelet's KUBE-FIREWALL jumps, which kube-proxy also ensures (and never removes).
pub(crate) const KUBELET_JUMPS: [Jump; 2] = [
    Jump {
        table: "filter",
        to: KUBELET_FIREWALL,
        from: "INPUT",
        comment: None,
        new_only: false,
    },
    Jump {
        table: "filter",
        to: KUBELET_FIREWALL,
        from: "OUTPUT",
        comment: None,
        new_only: false,
    },
];

/// The tables holding a canary chain; the first is the one watched.
pub(crate) const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

impl Jump {
    /// The rule's arguments after `-t TABLE`.
    pub(crate) fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::new();
        if self.new_only {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"]);
        }
        if let Some(c) = self.comment {
            args.extend(["-m", "comment", "--comment", c]);
        }
        args.extend(["-j", self.to]);
        args
    }

    /// `iptables OP FROM -t TABLE args…`.
    pub(crate) fn command(&self, op: &'static str) -> Vec<&'static str> {
        let mut cmd = vec![op, self.from, "-t", self.table];
        cmd.extend(self.args());
        cmd
    }
}

/// The rule as a saved line (the comment quoted), for comparing with what is programmed.
pub(crate) fn jump_line(j: &Jump) -> String {
    let mut line = format!("-A {}", j.from);
    for a in j.args() {
        match a.contains(' ') {
            true => line.push_str(&format!(" \"{a}\"")),
            false => line.push_str(&format!(" {a}")),
        }
    }
    line
}

/// Whether `dump` has `chain` in `table`, and `rule` (canonically) in it.
fn has(dump: &Dump, table: &str, chain: &str, rule: Option<&str>) -> bool {
    let Some(c) = dump.chain(table, chain) else {
        return false;
    };
    let Some(rule) = rule.and_then(|r| Rule::parse(r).ok()) else {
        return true;
    };
    c.rules
        .iter()
        .any(|r| Rule::parse(r).ok().as_ref() == Some(&rule))
}

/// Creates each target chain and prepends each jump that `saved` (the tables as read back)
/// lacks, in kube-proxy's order, so the built-in chains read as on a kube-proxy node. Nothing
/// runs when everything is there: changing commands, even ones that fail, are not free (an
/// `iptables-nft -N` of an existing chain was seen stalling new connections for a second).
pub(crate) fn ensure_jumps(
    ipt: &mut impl Iptables,
    cfg: &IptConfig,
    saved: &Dump,
) -> Result<(), ExecError> {
    let kubelet = cfg.family == IpFamily::V4 && cfg.localhost_nodeports;
    let all = JUMPS.iter().chain(KUBELET_JUMPS.iter().filter(|_| kubelet));
    for j in all {
        if !has(saved, j.table, j.to, None) {
            ipt.run(&["-N", j.to, "-t", j.table])?;
        }
        if !has(saved, j.table, j.from, Some(&jump_line(j))) {
            ipt.run(&j.command("-I"))?;
        }
    }
    Ok(())
}

/// Creates the canary chains `saved` lacks (kube-proxy's monitor does the same).
pub(crate) fn ensure_canaries(ipt: &mut impl Iptables, saved: &Dump) -> Result<(), ExecError> {
    for table in CANARY_TABLES {
        if !has(saved, table, KUBE_PROXY_CANARY, None) {
            ipt.run(&["-N", KUBE_PROXY_CANARY, "-t", table])?;
        }
    }
    Ok(())
}
