//! The rules kube-proxy keeps outside its own chains: a jump from each built-in chain into
//! its chains (inserted on top, never by rewriting the built-in chain, which holds other
//! programs' rules too), and the canary chains whose disappearance says the tables were
//! flushed.

use crate::config::IptConfig;
use crate::dump::Dump;
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
    jump_rule("-A", j)
}

/// `OP FROM args…` as restore input or save output writes it (the comment quoted).
fn jump_rule(op: &str, j: &Jump) -> String {
    let mut line = format!("{op} {}", j.from);
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

/// What a full sync adds outside its own chains because the tables as read back lack it.
/// It goes into the sync's one restore — the jumps as `-I` lines (on top of the built-in
/// chain, in kube-proxy's order, as its `iptables -I` commands leave them), the canaries as
/// chain lines — instead of one `iptables` process per rule as kube-proxy runs: no extra
/// process, and all of it committed with the chains the jumps lead to. Nothing is added when
/// everything is there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Missing {
    /// `(table, "-I FROM …")`.
    pub(crate) jumps: Vec<(&'static str, String)>,
    /// The tables without a canary chain.
    pub(crate) canaries: Vec<&'static str>,
}

impl Missing {
    /// What `saved` (the tables as read back) lacks. The jumps' target chains are the
    /// top-level chains every sync declares.
    pub(crate) fn in_tables(cfg: &IptConfig, saved: &Dump) -> Self {
        let kubelet = cfg.family == IpFamily::V4 && cfg.localhost_nodeports;
        let all = JUMPS.iter().chain(KUBELET_JUMPS.iter().filter(|_| kubelet));
        Self {
            jumps: all
                .filter(|j| !has(saved, j.table, j.from, Some(&jump_line(j))))
                .map(|j| (j.table, jump_rule("-I", j)))
                .collect(),
            canaries: (CANARY_TABLES.into_iter())
                .filter(|t| !has(saved, t, KUBE_PROXY_CANARY, None))
                .collect(),
        }
    }

    /// `table`'s part: whether it lacks its canary chain, and its jump lines.
    pub(crate) fn of_table(&self, table: &str) -> (bool, Vec<&str>) {
        let jumps = (self.jumps.iter())
            .filter(|(t, _)| *t == table)
            .map(|(_, l)| l.as_str())
            .collect();
        (self.canaries.contains(&table), jumps)
    }
}
