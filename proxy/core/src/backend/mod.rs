//! The dataplane seam: everything that programs the kernel sits behind
//! [`Backend`], so the sync loop, the sources and the tests never depend on
//! which kernel facility (nftables, iptables, IPVS, eBPF) does the work.
//!
//! A backend receives one [`Snapshot`] and the [`Changes`] since its previous
//! successful apply, per address family. It must program exactly the changed
//! Service ports on a partial apply and everything on a full one; when an
//! apply fails the runner forces a full apply next time, so a backend never
//! has to remember what half-succeeded.
//!
//! Each dataplane is its own crate implementing [`Backend`]; the `sluice-proxy` binary
//! picks one by `--proxy-mode`. [`FakeBackend`] records what it is asked to program, for
//! tests and benchmarks.

//! Beyond applying, a backend may: set up the host (`--init-only` and start: sysctls) in
//! [`Backend::init`]; run periodic work between syncs and ask for a full sync
//! ([`Backend::tick`]: IPVS's graceful termination, iptables' canary check); and register
//! its own mode's metrics ([`Backend::register_metrics`]).

mod fake;
mod mode;

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use prometheus_client::registry::Registry;
use sluice_model::service::IpFamily;

use crate::config_file::{DEFAULT_MASQUERADE_BIT, NodePortAddress};
use crate::{Changes, Snapshot};

pub use fake::{Applied, FakeBackend, FakeLog, ProgrammedPort};
pub use mode::ProxyMode;

/// Any error a backend wraps (its kernel interface's own type).
pub type Source = Box<dyn StdError + Send + Sync>;

/// What is known about the kernel's state after a failed apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel refused the change as a whole: nothing was changed.
    Refused,
    /// The change may have been applied in part, or not at all (answers lost, a process
    /// killed, a multi-step apply that stopped half-way): the next sync must read the state
    /// back.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused, nothing changed",
            Self::Unknown => "outcome unknown",
        })
    }
}

/// Why a backend could not be built, render, apply, initialise or clean up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The mode is known but its backend is not built into this version.
    #[error("proxy mode {0} is not available in this version of Sluice")]
    ModeNotAvailable(ProxyMode),
    /// The backend's kernel interfaces could not be opened.
    #[error("{mode}: cannot open {what}")]
    Open {
        /// The backend.
        mode: ProxyMode,
        /// What could not be opened (`netlink`, `iptables-restore`, …).
        what: String,
        /// Why.
        #[source]
        source: Source,
    },
    /// Programming the kernel failed; the runner retries with a full apply.
    #[error("{mode} apply failed ({outcome})")]
    Apply {
        /// The backend that failed.
        mode: ProxyMode,
        /// Whether anything may have changed.
        outcome: Outcome,
        /// The kernel interface's error.
        #[source]
        source: Source,
    },
    /// Setting up the host for the mode (sysctls, devices) failed.
    #[error("{mode} init failed")]
    Init {
        /// The backend.
        mode: ProxyMode,
        /// Why.
        #[source]
        source: Source,
    },
    /// Removing what the backend programmed failed.
    #[error("{mode} cleanup failed")]
    Cleanup {
        /// The backend that failed.
        mode: ProxyMode,
        /// Why.
        #[source]
        source: Source,
    },
}

impl BackendError {
    /// An apply failure of `mode`.
    pub fn apply(mode: ProxyMode, outcome: Outcome, source: impl Into<Source>) -> Self {
        Self::Apply {
            mode,
            outcome,
            source: source.into(),
        }
    }

    /// A cleanup failure of `mode`.
    pub fn cleanup(mode: ProxyMode, source: impl Into<Source>) -> Self {
        Self::Cleanup {
            mode,
            source: source.into(),
        }
    }

    /// Whether an apply may have left the kernel half-changed.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::Apply { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }
}

/// `error: cause: cause`, the whole chain on one line (for logs).
pub fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// What a backend's periodic task asks of the runner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Something was found changed behind the backend's back (a missing canary chain): run
    /// a full sync of every family now.
    pub full_sync: bool,
}

/// A dataplane that programs Service ports.
///
/// One backend instance serves every address family: each call carries a
/// single-family [`Snapshot`] ([`Snapshot::family`]), as kube-proxy's
/// per-family proxiers do.
pub trait Backend: Send {
    /// The mode this backend implements.
    fn mode(&self) -> ProxyMode;

    /// The whole dataplane this backend would program for `snapshot`, as text (nft or
    /// iptables-restore syntax, a map dump), for debugging and golden tests. Must not touch
    /// the kernel.
    fn render(&self, snapshot: &Snapshot) -> Result<String, BackendError>;

    /// Programs only the Service ports in `changes.ports`: present in the
    /// snapshot means (re)program, absent means remove.
    fn apply_partial(&mut self, snapshot: &Snapshot, changes: &Changes)
    -> Result<(), BackendError>;

    /// Programs the whole snapshot, removing anything stale.
    fn apply_full(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError>;

    /// Removes everything this backend ever programmed (`--cleanup`, or a
    /// switch of proxy mode).
    fn cleanup(&mut self) -> Result<(), BackendError>;

    /// A full or partial apply, as `changes.full` says.
    fn apply(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<(), BackendError> {
        if changes.full {
            self.apply_full(snapshot, changes)
        } else {
            self.apply_partial(snapshot, changes)
        }
    }

    /// Sets up the host for this mode (sysctls, devices): run at start before the first
    /// sync, and alone by `--init-only`.
    fn init(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// How often the runner calls [`Self::tick`] between syncs; `None`: never.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Periodic work between syncs (on the blocking pool, never during an apply).
    fn tick(&mut self) -> Result<Tick, BackendError> {
        Ok(Tick::default())
    }

    /// Registers this mode's own metrics (kube-proxy registers mode-specific metrics only in
    /// their mode); the registry carries the `kubeproxy` prefix.
    fn register_metrics(&self, _registry: &mut Registry) {}
}

/// What a backend is built with besides the Services: the proxy's resolved configuration
/// and what it learned about this node at start. Every mode takes the same options and uses
/// what applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOptions {
    /// The address families served.
    pub families: Vec<IpFamily>,
    /// How pod traffic is told from other traffic (`--detect-local-mode`).
    pub local: LocalDetect,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// The masquerade mark bit (`--iptables-masquerade-bit`).
    pub masquerade_bit: u8,
    /// Addresses accepting NodePorts (`--nodeport-addresses` applied to this node's
    /// addresses, loopback included where the spec selects it); `None` = every local
    /// address.
    pub nodeport_addresses: Option<Vec<IpAddr>>,
    /// This node's primary IPs, one per family (the Node object's, else `--bind-address`,
    /// else the first global address of the family).
    pub node_ips: Vec<IpAddr>,
    /// The service CIDRs, when known (unallocated ClusterIPs are dropped).
    pub service_cidrs: Vec<IpNet>,
    /// iptables and IPVS modes: `--iptables-localhost-nodeports` (IPv4 NodePorts on
    /// 127.0.0.1, with `route_localnet`).
    pub localhost_nodeports: bool,
    /// iptables and IPVS modes: `conntrack.tcpBeLiberal` (no INVALID drop rule then).
    pub tcp_be_liberal: bool,
    /// IPVS mode settings.
    pub ipvs: IpvsOptions,
    /// eBPF mode settings.
    pub ebpf: EbpfOptions,
    /// iptables and IPVS modes: `nft` or `legacy` iptables; `None`: detected.
    pub iptables_variant: Option<String>,
}

/// `--detect-local-mode` with its parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalDetect {
    /// Sources inside these CIDRs are pods (`ClusterCIDR`: the cluster CIDRs;
    /// `NodeCIDR`: this node's pod CIDRs). Empty: no detection.
    Cidrs(Vec<IpNet>),
    /// Packets arriving on this bridge are from pods (`BridgeInterface`).
    Bridge(String),
    /// Packets arriving on interfaces with this name prefix are from pods
    /// (`InterfaceNamePrefix`).
    InterfacePrefix(String),
}

impl LocalDetect {
    /// The pod CIDRs, when detection is by CIDR.
    pub fn cidrs(&self) -> &[IpNet] {
        match self {
            Self::Cidrs(c) => c,
            _ => &[],
        }
    }
}

/// kube-proxy's IPVS settings (`ipvs:` in the config file, `--ipvs-*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsOptions {
    /// `--ipvs-scheduler` (empty: `rr`).
    pub scheduler: String,
    /// `--ipvs-exclude-cidrs`: virtual servers in these are never deleted.
    pub exclude_cidrs: Vec<IpNet>,
    /// `--ipvs-strict-arp`.
    pub strict_arp: bool,
    /// `--ipvs-tcp-timeout`, `--ipvs-tcpfin-timeout`, `--ipvs-udp-timeout` (zero: unchanged).
    pub timeouts: (Duration, Duration, Duration),
}

/// Where the eBPF mode attaches and pins (Sluice's own settings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EbpfOptions {
    /// The cgroup v2 directory whose sockets get the socket-level load balancer (`None`:
    /// the node's cgroup2 root, detected).
    pub cgroup: Option<std::path::PathBuf>,
    /// The interfaces the tc programs attach to for traffic from outside the node (empty:
    /// the interfaces holding the node IPs).
    pub interfaces: Vec<String>,
    /// The bpffs directory maps and links are pinned in (`None`: `/sys/fs/bpf/sluice`).
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            families: vec![IpFamily::V4],
            local: LocalDetect::Cidrs(Vec::new()),
            masquerade_all: false,
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            nodeport_addresses: None,
            node_ips: Vec::new(),
            service_cidrs: Vec::new(),
            localhost_nodeports: true,
            tcp_be_liberal: false,
            ipvs: IpvsOptions::default(),
            ebpf: EbpfOptions::default(),
            iptables_variant: None,
        }
    }
}

/// The addresses among `node_ips` that `--nodeport-addresses` selects: all of them for an
/// empty spec or `all`; `primary` picks `primary`; CIDRs pick what they contain.
pub fn select_nodeport_ips(
    spec: &[NodePortAddress],
    node_ips: &[IpAddr],
    primary: &[IpAddr],
) -> Option<Vec<IpAddr>> {
    if spec.is_empty() || spec.contains(&NodePortAddress::All) {
        return None;
    }
    let picked = (node_ips.iter().copied())
        .filter(|ip| {
            spec.iter().any(|s| match s {
                NodePortAddress::Cidr(net) => net.contains(ip),
                NodePortAddress::Primary => primary.contains(ip),
                NodePortAddress::Localhost => ip.is_loopback(),
                NodePortAddress::All => true,
            })
        })
        .collect();
    Some(picked)
}

#[cfg(test)]
mod tests;
