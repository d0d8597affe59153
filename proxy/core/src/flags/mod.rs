//! `sluice-proxy`'s command line: kube-proxy's flags with kube-proxy's names,
//! defaults and value syntax, plus a few Sluice additions.
//!
//! Manifests, scripts and muscle memory written for kube-proxy must work
//! unchanged, so the spelling follows pflag (`--flag=value`, booleans as
//! `--flag` or `--flag=false`, Go durations, comma-separated lists), and
//! [`Flags::resolve`] reproduces kube-proxy's precedence between flags and
//! `--config` (see `resolve.rs`). Sluice additions: `--manifests-dir`,
//! `--service-proxy-name`, mode-independent `--sync-period` /
//! `--min-sync-period`, `--nftables-(min-)sync-period`, the `ebpf` and `fake`
//! modes, and the `explain` subcommand.
//!
//! Every config-bound flag is an `Option` with no clap default: "not given"
//! must stay distinguishable from "given the default value" for the
//! precedence rules; the defaults live in [`crate::config_file::ProxyConfig::default`] and are
//! quoted in the help text.

mod parse;
mod resolve;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config_file::{GoDuration, LocalMode, ProxyMode};
use crate::explain::ExplainArgs;

pub use parse::FeatureGates;
pub use resolve::{Action, Resolved};

/// The `sluice-proxy` command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-proxy",
    version,
    about = "The Kubernetes network proxy (kube-proxy replacement): reflects Services and \
             EndpointSlices into nftables, iptables, IPVS or eBPF on each node."
)]
pub struct Flags {
    /// A subcommand instead of running the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The path to the configuration file (KubeProxyConfiguration, YAML or JSON).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// If set, write the effective configuration to this file and exit.
    #[arg(long = "write-config-to", value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// If true, remove everything Sluice programmed (every mode) and exit.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub cleanup: Option<bool>,
    /// If true, perform initialization that needs full root privileges, then exit.
    #[arg(long = "init-only", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub init_only: Option<bool>,
    /// key=value pairs of feature gates, e.g. PreferSameTrafficDistribution=false.
    /// Ignored if --config is given.
    #[arg(long = "feature-gates", value_name = "K=V,...", value_parser = parse::feature_gates)]
    pub feature_gates: Option<FeatureGates>,

    /// Path to a kubeconfig file (the API server can be overridden by --master).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, global = true, value_name = "URL")]
    pub master: Option<String>,
    /// Content type of requests sent to the API server [default: application/vnd.kubernetes.protobuf].
    #[arg(long = "kube-api-content-type", value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// Burst to use while talking with the API server [default: 10].
    #[arg(
        long = "kube-api-burst",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub kube_api_burst: Option<i64>,
    /// QPS to use while talking with the API server [default: 5].
    #[arg(
        long = "kube-api-qps",
        value_name = "QPS",
        allow_negative_numbers = true
    )]
    pub kube_api_qps: Option<f32>,

    /// The name of this node (default: the host name). Applies even with --config.
    #[arg(long = "hostname-override", global = true, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Overrides the node's primary IP [default: 0.0.0.0]. Ignored if --config is given.
    #[arg(long = "bind-address", value_name = "IP")]
    pub bind_address: Option<IpAddr>,
    /// IP:port of the /healthz and /livez server; empty disables [default: 0.0.0.0:10256].
    /// Ignored if --config is given.
    #[arg(long = "healthz-bind-address", value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// IP:port of the /metrics server; empty disables [default: 127.0.0.1:10249].
    /// Ignored if --config is given.
    #[arg(long = "metrics-bind-address", value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// Deprecated: the port of the health server; 0 disables. Use --healthz-bind-address.
    #[arg(long = "healthz-port", value_name = "PORT", hide = true)]
    pub healthz_port: Option<u16>,
    /// Deprecated: the port of the metrics server; 0 disables. Use --metrics-bind-address.
    #[arg(long = "metrics-port", value_name = "PORT", hide = true)]
    pub metrics_port: Option<u16>,
    /// If true, failing to bind a server port is fatal.
    #[arg(long = "bind-address-hard-fail", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub bind_address_hard_fail: Option<bool>,
    /// If true, serve /debug/pprof-style profiling (accepted, not implemented).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub profiling: Option<bool>,
    /// Accepted for compatibility; Sluice hides no metrics.
    #[arg(long = "show-hidden-metrics-for-version", value_name = "VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,

    /// Which dataplane to program: iptables, ipvs, nftables, ebpf or fake [default: nftables].
    /// Ignored if --config is given.
    #[arg(long = "proxy-mode", value_name = "MODE", value_parser = parse::proxy_mode)]
    pub proxy_mode: Option<ProxyMode>,
    /// The fwmark bit marking packets to masquerade, 0-31 [default: 14].
    #[arg(
        long = "iptables-masquerade-bit",
        value_name = "BIT",
        allow_negative_numbers = true
    )]
    pub iptables_masquerade_bit: Option<i64>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long = "masquerade-all", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub masquerade_all: Option<bool>,
    /// If false, NodePorts are not reachable via localhost (iptables mode, IPv4) [default: true].
    #[arg(long = "iptables-localhost-nodeports", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub iptables_localhost_nodeports: Option<bool>,
    /// Full-resync period when the mode is not ipvs [default: 30s].
    #[arg(long = "iptables-sync-period", value_name = "DURATION")]
    pub iptables_sync_period: Option<GoDuration>,
    /// Least time between syncs when the mode is not ipvs [default: 1s].
    #[arg(long = "iptables-min-sync-period", value_name = "DURATION")]
    pub iptables_min_sync_period: Option<GoDuration>,
    /// Full-resync period in ipvs mode [default: 30s].
    #[arg(long = "ipvs-sync-period", value_name = "DURATION")]
    pub ipvs_sync_period: Option<GoDuration>,
    /// Least time between syncs in ipvs mode [default: 1s].
    #[arg(long = "ipvs-min-sync-period", value_name = "DURATION")]
    pub ipvs_min_sync_period: Option<GoDuration>,
    /// Sluice: full-resync period in nftables, ebpf and fake modes (overrides --iptables-sync-period).
    #[arg(long = "nftables-sync-period", value_name = "DURATION")]
    pub nftables_sync_period: Option<GoDuration>,
    /// Sluice: least time between syncs in nftables, ebpf and fake modes.
    #[arg(long = "nftables-min-sync-period", value_name = "DURATION")]
    pub nftables_min_sync_period: Option<GoDuration>,
    /// Sluice: full-resync period in every mode; overrides the per-mode flags [default: 30s].
    #[arg(long = "sync-period", value_name = "DURATION")]
    pub sync_period: Option<GoDuration>,
    /// Sluice: least time between syncs in every mode; overrides the per-mode flags [default: 1s].
    #[arg(long = "min-sync-period", value_name = "DURATION")]
    pub min_sync_period: Option<GoDuration>,
    /// The IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq) [default: rr].
    #[arg(long = "ipvs-scheduler", value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// Comma-separated CIDRs the IPVS proxier must not touch when cleaning up.
    #[arg(
        long = "ipvs-exclude-cidrs",
        value_name = "CIDR,...",
        value_delimiter = ','
    )]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    /// Set arp_ignore=1 and arp_announce=2 (ipvs mode).
    #[arg(long = "ipvs-strict-arp", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub ipvs_strict_arp: Option<bool>,
    /// Idle timeout of IPVS TCP connections; 0 leaves it as is.
    #[arg(long = "ipvs-tcp-timeout", value_name = "DURATION")]
    pub ipvs_tcp_timeout: Option<GoDuration>,
    /// Timeout of IPVS TCP connections after a FIN; 0 leaves it as is.
    #[arg(long = "ipvs-tcpfin-timeout", value_name = "DURATION")]
    pub ipvs_tcpfin_timeout: Option<GoDuration>,
    /// Timeout of IPVS UDP packets; 0 leaves it as is.
    #[arg(long = "ipvs-udp-timeout", value_name = "DURATION")]
    pub ipvs_udp_timeout: Option<GoDuration>,

    /// How to detect local traffic: ClusterCIDR, NodeCIDR, BridgeInterface,
    /// InterfaceNamePrefix [default: ClusterCIDR]. Ignored if --config is given.
    #[arg(long = "detect-local-mode", value_name = "MODE", value_parser = parse::local_mode)]
    pub detect_local_mode: Option<LocalMode>,
    /// The pod bridge for --detect-local-mode=BridgeInterface.
    #[arg(long = "pod-bridge-interface", value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// The pod interface prefix for --detect-local-mode=InterfaceNamePrefix.
    #[arg(long = "pod-interface-name-prefix", value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The pods' CIDR (a dual-stack pair allowed). Ignored if --config is given.
    #[arg(long = "cluster-cidr", value_name = "CIDR[,CIDR]")]
    pub cluster_cidr: Option<String>,
    /// CIDRs (or primary, localhost, all) of node IPs that accept NodePorts
    /// [default: primary in nftables mode, all local IPs otherwise].
    #[arg(
        long = "nodeport-addresses",
        value_name = "CIDR,...",
        value_delimiter = ','
    )]
    pub nodeport_addresses: Option<Vec<String>>,
    /// The oom_score_adj of the process, -1000..1000 [default: -999].
    #[arg(
        long = "oom-score-adj",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub oom_score_adj: Option<i32>,

    /// Conntrack entries per CPU core; 0 leaves the limit as is [default: 32768].
    #[arg(
        long = "conntrack-max-per-core",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub conntrack_max_per_core: Option<i64>,
    /// Minimum conntrack table size [default: 131072].
    #[arg(
        long = "conntrack-min",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub conntrack_min: Option<i64>,
    /// Idle timeout of established TCP conntrack entries; 0 leaves it [default: 24h0m0s].
    #[arg(long = "conntrack-tcp-timeout-established", value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<GoDuration>,
    /// Timeout of TCP conntrack entries in CLOSE_WAIT [default: 1h0m0s].
    #[arg(long = "conntrack-tcp-timeout-close-wait", value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<GoDuration>,
    /// Set nf_conntrack_tcp_be_liberal to 1.
    #[arg(long = "conntrack-tcp-be-liberal", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse::go_bool)]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout of UNREPLIED UDP conntrack entries; 0 leaves it as is.
    #[arg(long = "conntrack-udp-timeout", value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<GoDuration>,
    /// Idle timeout of ASSURED UDP conntrack entries; 0 leaves it as is.
    #[arg(long = "conntrack-udp-timeout-stream", value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<GoDuration>,
    /// How often configuration from the API server is refreshed [default: 15m0s].
    #[arg(long = "config-sync-period", value_name = "DURATION")]
    pub config_sync_period: Option<GoDuration>,

    /// Log verbosity (klog's -v). Applies even with --config.
    #[arg(short = 'v', long = "v", global = true, value_name = "LEVEL")]
    pub v: Option<u32>,
    /// Sluice: read Services and EndpointSlices from YAML/JSON files in DIR
    /// instead of the API server (standalone mode). Applies even with --config.
    #[arg(long = "manifests-dir", global = true, value_name = "DIR")]
    pub manifests_dir: Option<PathBuf>,
    /// Sluice: proxy only Services labelled service.kubernetes.io/service-proxy-name=NAME
    /// (default: only Services without that label). Applies even with --config.
    #[arg(long = "service-proxy-name", global = true, value_name = "NAME")]
    pub service_proxy_name: Option<String>,
    /// Sluice: the Service CIDRs (kube-apiserver's --service-cluster-ip-range); traffic
    /// to unallocated ClusterIPs in them is dropped. Applies even with --config.
    #[arg(long = "service-cidr", global = true, value_name = "CIDR[,CIDR]", value_parser = parse::cidr_csv)]
    pub service_cidr: Option<parse::CidrList>,
    /// Sluice: which iptables the iptables mode programs: nft, legacy, or auto (the one
    /// the kubelet's chains are in, nft if none — as kube-proxy's image decides)
    /// [default: auto]. Applies even with --config.
    #[arg(long = "iptables-variant", global = true, value_name = "auto|nft|legacy", value_parser = ["auto", "nft", "legacy"])]
    pub iptables_variant: Option<String>,
    /// Sluice, ebpf mode: the cgroup v2 directory whose sockets get the socket-level load
    /// balancer [default: the node's cgroup2 root, from /proc/self/mountinfo]. Applies even
    /// with --config.
    #[arg(long = "ebpf-cgroup", global = true, value_name = "DIR")]
    pub ebpf_cgroup: Option<PathBuf>,
    /// Sluice, ebpf mode: the bpffs directory maps and links are pinned in
    /// [default: /sys/fs/bpf/sluice]. Applies even with --config.
    #[arg(long = "ebpf-pin-dir", global = true, value_name = "DIR")]
    pub ebpf_pin_dir: Option<PathBuf>,
}

/// `sluice-proxy` subcommands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Explain what the proxy does with one packet: which Service port it
    /// hits, which policy applies, which endpoints are eligible, the verdict.
    Explain(ExplainArgs),
}

impl Flags {
    /// Parses `args` (the first item is the program name), returning clap's
    /// error (usage or `--help` text) on failure.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }
}
