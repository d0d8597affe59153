//! [`ProxyConfig`]: the one resolved configuration the binary runs with,
//! whatever mix of defaults, flags and config file produced it.
//!
//! kube-proxy carries half-validated strings around (`"0.0.0.0:10256"`,
//! `"10.0.0.0/8,fd00::/8"`) and re-parses them where they are used; here every
//! value is parsed and checked once, so the rest of the proxy cannot meet an
//! invalid one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// kube-proxy's default masquerade mark bit (`--iptables-masquerade-bit`, `masqueradeBit`).
pub const DEFAULT_MASQUERADE_BIT: u8 = 14;

/// `--proxy-mode` / `mode`: which dataplane backend programs Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ProxyMode {
    /// iptables-restore, kube-proxy's historic default.
    Iptables,
    /// IPVS virtual servers.
    Ipvs,
    /// One nftables table; Sluice's default.
    #[default]
    Nftables,
    /// Sluice's eBPF dataplane.
    Ebpf,
    /// The recording fake backend, for tests and benchmarks.
    Fake,
}

impl ProxyMode {
    /// Every accepted spelling.
    pub const NAMES: [&'static str; 5] = ["iptables", "ipvs", "nftables", "ebpf", "fake"];

    /// Every mode, in `--cleanup` order.
    pub const ALL: [Self; 5] = [
        Self::Nftables,
        Self::Iptables,
        Self::Ipvs,
        Self::Ebpf,
        Self::Fake,
    ];

    /// The config-file / flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Ipvs => "ipvs",
            Self::Nftables => "nftables",
            Self::Ebpf => "ebpf",
            Self::Fake => "fake",
        }
    }
}

impl FromStr for ProxyMode {
    type Err = String;

    /// Parses a mode; the empty string is the default (`nftables`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Ok(Self::default()),
            "iptables" => Ok(Self::Iptables),
            "ipvs" => Ok(Self::Ipvs),
            "nftables" => Ok(Self::Nftables),
            "ebpf" => Ok(Self::Ebpf),
            "fake" => Ok(Self::Fake),
            _ => Err(format!(
                "must be one of {} (empty means nftables)",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--detect-local-mode`: how traffic from this node's pods is told from
/// other traffic (for masquerading and the `externalTrafficPolicy: Local`
/// short-circuit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LocalMode {
    /// `ClusterCIDR`: sources inside `clusterCIDR` (none given: no detection).
    #[default]
    ClusterCidr,
    /// `NodeCIDR`: sources inside the Node's `podCIDRs`.
    NodeCidr,
    /// `BridgeInterface`: packets arriving on `detectLocal.bridgeInterface`.
    BridgeInterface,
    /// `InterfaceNamePrefix`: packets arriving on interfaces whose name starts
    /// with `detectLocal.interfaceNamePrefix`.
    InterfaceNamePrefix,
}

impl LocalMode {
    /// The `detectLocalMode` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterCidr => "ClusterCIDR",
            Self::NodeCidr => "NodeCIDR",
            Self::BridgeInterface => "BridgeInterface",
            Self::InterfaceNamePrefix => "InterfaceNamePrefix",
        }
    }
}

impl FromStr for LocalMode {
    type Err = String;

    /// Parses a mode; the empty string is the default (`ClusterCIDR`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" | "ClusterCIDR" => Ok(Self::ClusterCidr),
            "NodeCIDR" => Ok(Self::NodeCidr),
            "BridgeInterface" => Ok(Self::BridgeInterface),
            "InterfaceNamePrefix" => Ok(Self::InterfaceNamePrefix),
            _ => Err(
                "must be one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix"
                    .to_owned(),
            ),
        }
    }
}

impl fmt::Display for LocalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `nodePortAddresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// `primary`: the Node object's primary IP(s).
    Primary,
    /// `localhost`: 127.0.0.0/8 and ::1/128.
    Localhost,
    /// `all`: every local address.
    All,
    /// Node IPs inside this CIDR.
    Cidr(IpNet),
}

impl NodePortAddress {
    /// Parses a keyword or CIDR.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "primary" => Ok(Self::Primary),
            "localhost" => Ok(Self::Localhost),
            "all" => Ok(Self::All),
            _ => text.parse().map(Self::Cidr).map_err(|_| {
                "must be a CIDR (e.g. 192.168.0.0/24) or one of primary, localhost, all".to_owned()
            }),
        }
    }
}

impl fmt::Display for NodePortAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Localhost => f.write_str("localhost"),
            Self::All => f.write_str("all"),
            Self::Cidr(net) => write!(f, "{net}"),
        }
    }
}

/// `clientConnection`: how to reach the API server.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConnection {
    /// `--kubeconfig`; `None`: in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// `--master`: overrides the kubeconfig's server URL.
    pub master: Option<String>,
    /// `--kube-api-content-type`.
    pub content_type: String,
    /// `acceptContentTypes`.
    pub accept_content_types: String,
    /// `--kube-api-qps`.
    pub qps: f32,
    /// `--kube-api-burst`.
    pub burst: u32,
}

impl Default for ClientConnection {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            master: None,
            content_type: "application/vnd.kubernetes.protobuf".to_owned(),
            accept_content_types: String::new(),
            qps: 5.0,
            burst: 10,
        }
    }
}

/// `conntrack`: kernel conntrack settings applied at startup. Zero means
/// "leave the kernel's value".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conntrack {
    /// `--conntrack-max-per-core` (32768).
    pub max_per_core: u32,
    /// `--conntrack-min` (131072).
    pub min: u32,
    /// `--conntrack-tcp-timeout-established` (24h).
    pub tcp_established_timeout: Duration,
    /// `--conntrack-tcp-timeout-close-wait` (1h).
    pub tcp_close_wait_timeout: Duration,
    /// `--conntrack-tcp-be-liberal`.
    pub tcp_be_liberal: bool,
    /// `--conntrack-udp-timeout`.
    pub udp_timeout: Duration,
    /// `--conntrack-udp-timeout-stream`.
    pub udp_stream_timeout: Duration,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

/// `ipvs`: settings only the IPVS backend reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipvs {
    /// `--ipvs-scheduler`; empty means `rr`.
    pub scheduler: String,
    /// `--ipvs-exclude-cidrs`.
    pub exclude_cidrs: Vec<IpNet>,
    /// `--ipvs-strict-arp`.
    pub strict_arp: bool,
    /// `--ipvs-tcp-timeout` (0: leave as is).
    pub tcp_timeout: Duration,
    /// `--ipvs-tcpfin-timeout`.
    pub tcp_fin_timeout: Duration,
    /// `--ipvs-udp-timeout`.
    pub udp_timeout: Duration,
}

/// Settings read by no Linux backend, kept so `--write-config-to` and a
/// round trip lose nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Passthrough {
    /// `logging` other than verbosity (format, flushFrequency, vmodule, options).
    pub logging: serde_json::Map<String, serde_json::Value>,
    /// `winkernel`.
    pub winkernel: serde_json::Map<String, serde_json::Value>,
    /// `showHiddenMetricsForVersion`.
    pub show_hidden_metrics_for_version: String,
    /// `portRange` (unused since the userspace proxy was removed).
    pub port_range: String,
    /// `windowsRunAsService`.
    pub windows_run_as_service: bool,
    /// `iptables.snatNodeInternalIP`.
    pub snat_node_internal_ip: Option<bool>,
}

/// The resolved configuration of one `sluice-proxy` process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// `--proxy-mode` / `mode`.
    pub mode: ProxyMode,
    /// `--hostname-override` / `hostnameOverride` (trimmed, lower-cased);
    /// `None`: the host name.
    pub hostname_override: Option<String>,
    /// `--bind-address`: overrides the node's primary IP when not unspecified.
    pub bind_address: IpAddr,
    /// `--healthz-bind-address`; `None` disables `/healthz`.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `--metrics-bind-address`; `None` disables `/metrics`.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `--bind-address-hard-fail`: exit if a server cannot bind.
    pub bind_address_hard_fail: bool,
    /// `--profiling`.
    pub enable_profiling: bool,
    /// `--detect-local-mode`.
    pub detect_local_mode: LocalMode,
    /// `--cluster-cidr`: at most one CIDR per family.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--pod-bridge-interface`, for `BridgeInterface` mode.
    pub bridge_interface: String,
    /// `--pod-interface-name-prefix`, for `InterfaceNamePrefix` mode.
    pub interface_name_prefix: String,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` / `masqueradeBit` of the mode's section.
    pub masquerade_bit: u8,
    /// `--iptables-localhost-nodeports`.
    pub localhost_node_ports: bool,
    /// `--nodeport-addresses`; empty: the mode's default (`primary` for
    /// nftables, all local IPs otherwise).
    pub node_port_addresses: Vec<NodePortAddress>,
    /// The mode's `syncPeriod`: the periodic full resync.
    pub sync_period: Duration,
    /// The mode's `minSyncPeriod`: the least time between syncs.
    pub min_sync_period: Duration,
    /// `--config-sync-period`: informer resync period.
    pub config_sync_period: Duration,
    /// `clientConnection`, `--kubeconfig`, `--master`.
    pub client: ClientConnection,
    /// `--oom-score-adj`.
    pub oom_score_adj: i32,
    /// `conntrack`.
    pub conntrack: Conntrack,
    /// `ipvs` (scheduler, timeouts, exclusions).
    pub ipvs: Ipvs,
    /// `--feature-gates` / `featureGates`.
    pub feature_gates: BTreeMap<String, bool>,
    /// `--v` / `logging.verbosity`.
    pub verbosity: u32,
    /// Fields no Linux backend reads.
    pub passthrough: Passthrough,
    /// Sluice: `--service-proxy-name`, the `service.kubernetes.io/service-proxy-name`
    /// label value this proxy answers to.
    pub service_proxy_name: Option<String>,
    /// Sluice: `--manifests-dir`, the standalone source instead of the API.
    pub manifests_dir: Option<PathBuf>,
    /// Sluice: `--service-cidr`, where unallocated ClusterIPs are dropped.
    pub service_cidrs: Vec<IpNet>,
    /// `--config`: kube-proxy exits when this file changes; so may Sluice.
    pub config_file: Option<PathBuf>,
    /// Sluice: `--iptables-variant` (`nft` or `legacy`); `None`: detected.
    pub iptables_variant: Option<String>,
    /// Sluice: `--ebpf-cgroup`, `--ebpf-pin-dir` (ebpf mode).
    pub ebpf: crate::backend::EbpfOptions,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            mode: ProxyMode::default(),
            hostname_override: None,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            bind_address_hard_fail: false,
            enable_profiling: false,
            detect_local_mode: LocalMode::ClusterCidr,
            cluster_cidrs: Vec::new(),
            bridge_interface: String::new(),
            interface_name_prefix: String::new(),
            masquerade_all: false,
            masquerade_bit: DEFAULT_MASQUERADE_BIT,
            localhost_node_ports: true,
            node_port_addresses: Vec::new(),
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            config_sync_period: Duration::from_secs(15 * 60),
            client: ClientConnection::default(),
            oom_score_adj: -999,
            conntrack: Conntrack::default(),
            ipvs: Ipvs::default(),
            feature_gates: BTreeMap::new(),
            verbosity: 0,
            passthrough: Passthrough::default(),
            service_proxy_name: None,
            manifests_dir: None,
            service_cidrs: Vec::new(),
            config_file: None,
            iptables_variant: None,
            ebpf: crate::backend::EbpfOptions::default(),
        }
    }
}

impl ProxyConfig {
    /// How long a queued update may stay unapplied before `/healthz` and
    /// `/livez` report 503: kube-proxy's `2 × syncPeriod`.
    pub fn health_timeout(&self) -> Duration {
        self.sync_period * 2
    }

    /// Feature gate `name`, or `default` when not set.
    pub fn feature(&self, name: &str, default: bool) -> bool {
        self.feature_gates.get(name).copied().unwrap_or(default)
    }

    /// The settings given a non-default value that this version accepts (so a kube-proxy
    /// configuration loads unchanged) but does not act on: the daemon warns about each
    /// instead of pretending. Settings of modes that do not build yet are left out; asking
    /// for such a mode already fails.
    pub fn unapplied(&self) -> Vec<&'static str> {
        let d = Self::default();
        let (c, dc) = (&self.client, &d.client);
        // tcpBeLiberal is applied (the iptables modes' INVALID drop rule); the sysctls are not.
        let conntrack_sysctls = Conntrack {
            tcp_be_liberal: d.conntrack.tcp_be_liberal,
            ..self.conntrack
        };
        [
            ("enableProfiling", self.enable_profiling),
            (
                "configSyncPeriod",
                self.config_sync_period != d.config_sync_period,
            ),
            ("oomScoreAdj", self.oom_score_adj != d.oom_score_adj),
            ("conntrack", conntrack_sysctls != d.conntrack),
            ("clientConnection.qps", c.qps != dc.qps),
            ("clientConnection.burst", c.burst != dc.burst),
            (
                "clientConnection.contentType",
                c.content_type != dc.content_type,
            ),
            (
                "clientConnection.acceptContentTypes",
                c.accept_content_types != dc.accept_content_types,
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}
