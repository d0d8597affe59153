//! The rules kube-proxy keeps outside its own chains: a jump from each built-in chain into
//! its chains (never written by `iptables-restore`, which would have to rewrite the whole
//! built-in chain), and the canary chains whose disappearance says the tables were flushed.

use crate::config::IptConfig;
use crate::exec::{ExecError, Iptables};
use crate::names::*;
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

/// Creates each target chain and prepends each jump that is missing (`-C`, then `-I`), in
/// kube-proxy's order, so the built-in chains read as on a kube-proxy node.
pub(crate) fn ensure_jumps(ipt: &mut impl Iptables, cfg: &IptConfig) -> Result<(), ExecError> {
    let kubelet = cfg.family == IpFamily::V4 && cfg.localhost_nodeports;
    let all = JUMPS.iter().chain(KUBELET_JUMPS.iter().filter(|_| kubelet));
    for j in all {
        ipt.run(&["-N", j.to, "-t", j.table])?;
        if !ipt.run(&j.command("-C"))? {
            ipt.run(&j.command("-I"))?;
        }
    }
    Ok(())
}

/// Creates the canary chains (kube-proxy's monitor does the same).
pub(crate) fn ensure_canaries(ipt: &mut impl Iptables) -> Result<(), ExecError> {
    for table in CANARY_TABLES {
        ipt.run(&["-N", KUBE_PROXY_CANARY, "-t", table])?;
    }
    Ok(())
}
