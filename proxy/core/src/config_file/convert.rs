//! [`KubeProxyConfiguration`] ⇄ [`ProxyConfig`]: upstream's defaulting,
//! v1alpha1 conversion and validation, in one pass.
//!
//! v1alpha1 keeps `syncPeriod`, `minSyncPeriod` and `masqueradeAll` once per
//! backend section and kube-proxy reads the section of the selected mode
//! (`ipvs` for ipvs, `nftables` for nftables, `iptables` otherwise). Sluice
//! does the same, with its own modes (`ebpf`, `fake`, and the default)
//! reading the `nftables` section, like its default mode.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::document::{self as doc, API_VERSION, KIND, KubeProxyConfiguration};
use super::duration::GoDuration;
use super::error::FieldError;
use super::proxy_config::{
    ClientConnection, Conntrack, Ipvs, LocalMode, NodePortAddress, ProxyConfig, ProxyMode,
};

/// kube-proxy's default healthz and metrics ports.
const HEALTHZ_PORT: u16 = 10256;
const METRICS_PORT: u16 = 10249;

/// The IPVS schedulers kube-proxy accepts.
const IPVS_SCHEDULERS: [&str; 11] = [
    "", "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq",
];

/// The backend section whose sync knobs a mode reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    IpTables,
    Ipvs,
    NfTables,
}

fn section(mode: ProxyMode) -> Section {
    match mode {
        ProxyMode::Iptables => Section::IpTables,
        ProxyMode::Ipvs => Section::Ipvs,
        ProxyMode::Nftables | ProxyMode::Ebpf | ProxyMode::Fake => Section::NfTables,
    }
}

/// Collects field errors while converting.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, field: &str, value: impl ToString, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    /// `parse(text)`, recording an error under `field` on failure.
    fn parse<T>(
        &mut self,
        field: &str,
        text: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        parse(text)
            .map_err(|reason| self.push(field, text, reason))
            .ok()
    }
}

/// Converts a document into the resolved configuration, applying kube-proxy's
/// defaults to absent fields and validating every value.
pub fn from_document(d: &KubeProxyConfiguration) -> Result<ProxyConfig, Vec<FieldError>> {
    let mut e = Errors::default();
    check_type(d, &mut e);
    let mut c = ProxyConfig::default();
    let mode = d.mode.as_deref().unwrap_or("");
    c.mode = e
        .parse("mode", mode, ProxyMode::from_str)
        .unwrap_or_default();
    // Node names are lower case; kube-proxy lower-cases the override wherever it comes from.
    c.hostname_override = (d.hostname_override.as_deref())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_lowercase);
    addresses(d, &mut c, &mut e);
    local_detection(d, &mut c, &mut e);
    backend_sections(d, &mut c, &mut e);
    c.node_port_addresses = node_port_addresses(d.node_port_addresses.as_deref(), &mut e);
    c.oom_score_adj = d.oom_score_adj.unwrap_or(c.oom_score_adj);
    check_oom_score_adj(c.oom_score_adj, &mut e);
    c.config_sync_period = duration_or(d.config_sync_period, c.config_sync_period);
    if c.config_sync_period.is_zero() {
        e.push("configSyncPeriod", "0s", "must be greater than 0");
    }
    c.client = client(d.client_connection.as_ref(), &mut e);
    c.conntrack = conntrack(d.conntrack.as_ref(), &mut e);
    c.feature_gates = d.feature_gates.clone().unwrap_or_default();
    c.bind_address_hard_fail = d.bind_address_hard_fail.unwrap_or(false);
    c.enable_profiling = d.enable_profiling.unwrap_or(false);
    logging(d, &mut c, &mut e);
    c.passthrough.winkernel = d.winkernel.clone().unwrap_or_default();
    c.passthrough.show_hidden_metrics_for_version = d
        .show_hidden_metrics_for_version
        .clone()
        .unwrap_or_default();
    c.passthrough.port_range = d.port_range.clone().unwrap_or_default();
    c.passthrough.windows_run_as_service = d.windows_run_as_service.unwrap_or(false);
    match e.0.is_empty() {
        true => Ok(c),
        false => Err(e.0),
    }
}

fn check_type(d: &KubeProxyConfiguration, e: &mut Errors) {
    let api_version = d.api_version.as_deref().unwrap_or("");
    if api_version != API_VERSION {
        e.push("apiVersion", api_version, format!("must be {API_VERSION}"));
    }
    let kind = d.kind.as_deref().unwrap_or("");
    if kind != KIND {
        e.push("kind", kind, format!("must be {KIND}"));
    }
}

fn addresses(d: &KubeProxyConfiguration, c: &mut ProxyConfig, e: &mut Errors) {
    let bind = d
        .bind_address
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("0.0.0.0");
    c.bind_address = e
        .parse("bindAddress", bind, |s| {
            s.parse().map_err(|_| "must be an IP address".into())
        })
        .unwrap_or(c.bind_address);
    let (healthz_ip, metrics_ip) = match c.bind_address {
        IpAddr::V4(_) => ("0.0.0.0", "127.0.0.1"),
        IpAddr::V6(_) => ("::", "::1"),
    };
    let healthz = d.healthz_bind_address.as_deref().unwrap_or("");
    c.healthz_bind_address =
        server_address("healthzBindAddress", healthz, healthz_ip, HEALTHZ_PORT, e);
    let metrics = d.metrics_bind_address.as_deref().unwrap_or("");
    c.metrics_bind_address =
        server_address("metricsBindAddress", metrics, metrics_ip, METRICS_PORT, e);
}

/// kube-proxy's defaulting of a server address: empty means the default IP
/// and port, an IP without a port gets the default port (`AppendPortIfNeeded`).
fn server_address(
    field: &str,
    text: &str,
    ip: &str,
    port: u16,
    e: &mut Errors,
) -> Option<SocketAddr> {
    let text = text.trim();
    if text.is_empty() {
        return Some(SocketAddr::new(ip.parse().ok()?, port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    e.parse(field, text, parse_host_port)
}

/// Parses `IP:port` with a port in 1..=65535 (kube-proxy's `validateHostPort`).
pub(crate) fn parse_host_port(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| "must be IP:port, e.g. 0.0.0.0:10256 or [::]:10256".to_owned())?;
    if addr.port() == 0 {
        return Err("must be a valid port (1-65535)".to_owned());
    }
    Ok(addr)
}

fn local_detection(d: &KubeProxyConfiguration, c: &mut ProxyConfig, e: &mut Errors) {
    let mode = d.detect_local_mode.as_deref().unwrap_or("");
    c.detect_local_mode = e
        .parse("detectLocalMode", mode, LocalMode::from_str)
        .unwrap_or_default();
    let detect = d.detect_local.clone().unwrap_or_default();
    c.bridge_interface = detect.bridge_interface.unwrap_or_default();
    c.interface_name_prefix = detect.interface_name_prefix.unwrap_or_default();
    c.cluster_cidrs = cluster_cidrs("clusterCIDR", d.cluster_cidr.as_deref().unwrap_or(""), e);
    check_local_detection(c, e);
}

/// Parses `clusterCIDR`: empty, one CIDR, or a dual-stack pair.
pub(crate) fn cluster_cidrs(field: &str, text: &str, e: &mut Errors) -> Vec<IpNet> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let parsed: Result<Vec<IpNet>, _> = text.split(',').map(|s| s.trim().parse()).collect();
    let Ok(cidrs) = parsed else {
        e.push(
            field,
            text,
            "must be a CIDR or a comma-separated dual-stack pair of CIDRs",
        );
        return Vec::new();
    };
    let dual = cidrs.len() == 2 && cidrs[0].addr().is_ipv4() != cidrs[1].addr().is_ipv4();
    if cidrs.len() > 2 || (cidrs.len() == 2 && !dual) {
        e.push(
            field,
            text,
            "only one CIDR, or one IPv4 and one IPv6 CIDR, allowed",
        );
    }
    cidrs
}

pub(crate) fn check_local_detection(c: &ProxyConfig, e: &mut Errors) {
    match c.detect_local_mode {
        LocalMode::BridgeInterface if c.bridge_interface.is_empty() => e.push(
            "detectLocal.bridgeInterface",
            "",
            "must be set when detectLocalMode is BridgeInterface",
        ),
        LocalMode::InterfaceNamePrefix if c.interface_name_prefix.is_empty() => e.push(
            "detectLocal.interfaceNamePrefix",
            "",
            "must be set when detectLocalMode is InterfaceNamePrefix",
        ),
        _ => {}
    }
}

fn backend_sections(d: &KubeProxyConfiguration, c: &mut ProxyConfig, e: &mut Errors) {
    let ipt = d.iptables.clone().unwrap_or_default();
    let nft = d.nftables.clone().unwrap_or_default();
    let ipvs = d.ipvs.clone().unwrap_or_default();
    c.localhost_node_ports = ipt.localhost_node_ports.unwrap_or(true);
    c.passthrough.snat_node_internal_ip = ipt.snat_node_internal_ip;
    let (name, sync, min, masq_all, masq_bit) = match section(c.mode) {
        Section::IpTables => (
            "iptables",
            ipt.sync_period,
            ipt.min_sync_period,
            ipt.masquerade_all,
            ipt.masquerade_bit,
        ),
        Section::Ipvs => (
            "ipvs",
            ipvs.sync_period,
            ipvs.min_sync_period,
            ipt.masquerade_all,
            ipt.masquerade_bit,
        ),
        Section::NfTables => (
            "nftables",
            nft.sync_period,
            nft.min_sync_period,
            nft.masquerade_all,
            nft.masquerade_bit,
        ),
    };
    c.sync_period = duration_or(sync, c.sync_period);
    c.min_sync_period = duration_or(min, c.min_sync_period);
    check_sync_periods(name, c, e);
    c.masquerade_all = masq_all.unwrap_or(false);
    let bit_section = if section(c.mode) == Section::NfTables {
        "nftables"
    } else {
        "iptables"
    };
    c.masquerade_bit = masquerade_bit(
        &format!("{bit_section}.masqueradeBit"),
        masq_bit.unwrap_or(14),
        e,
    );
    c.ipvs = ipvs_settings(&ipvs, e);
}

/// Zero and absent both mean the default, as in kube-proxy's defaulting.
fn duration_or(value: Option<GoDuration>, default: Duration) -> Duration {
    value
        .map(|d| d.0)
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

pub(crate) fn check_sync_periods(section: &str, c: &ProxyConfig, e: &mut Errors) {
    if c.sync_period.is_zero() {
        e.push(
            &format!("{section}.syncPeriod"),
            "0s",
            "must be greater than 0",
        );
    }
    if c.min_sync_period > c.sync_period {
        e.push(
            &format!("{section}.minSyncPeriod"),
            GoDuration(c.min_sync_period),
            format!(
                "must not be greater than {section}.syncPeriod ({})",
                GoDuration(c.sync_period)
            ),
        );
    }
}

pub(crate) fn masquerade_bit(field: &str, bit: i64, e: &mut Errors) -> u8 {
    match u8::try_from(bit) {
        Ok(bit) if bit <= 31 => bit,
        _ => {
            e.push(field, bit, "must be within the range [0, 31]");
            14
        }
    }
}

pub(crate) fn check_oom_score_adj(value: i32, e: &mut Errors) {
    if !(-1000..=1000).contains(&value) {
        e.push(
            "oomScoreAdj",
            value,
            "must be within the range [-1000, 1000]",
        );
    }
}

fn ipvs_settings(ipvs: &doc::Ipvs, e: &mut Errors) -> Ipvs {
    let scheduler = ipvs.scheduler.clone().unwrap_or_default();
    check_scheduler(&scheduler, e);
    Ipvs {
        scheduler,
        exclude_cidrs: cidr_list(
            "ipvs.excludeCIDRs",
            ipvs.exclude_cidrs.as_deref().unwrap_or(&[]),
            e,
        ),
        strict_arp: ipvs.strict_arp.unwrap_or(false),
        tcp_timeout: ipvs.tcp_timeout.unwrap_or_default().0,
        tcp_fin_timeout: ipvs.tcp_fin_timeout.unwrap_or_default().0,
        udp_timeout: ipvs.udp_timeout.unwrap_or_default().0,
    }
}

pub(crate) fn check_scheduler(scheduler: &str, e: &mut Errors) {
    if !IPVS_SCHEDULERS.contains(&scheduler) {
        e.push(
            "ipvs.scheduler",
            scheduler,
            format!(
                "must be one of {} (empty means rr)",
                IPVS_SCHEDULERS[1..].join(", ")
            ),
        );
    }
}

pub(crate) fn cidr_list(field: &str, items: &[String], e: &mut Errors) -> Vec<IpNet> {
    (items.iter())
        .filter_map(|s| {
            e.parse(field, s, |s| {
                s.trim().parse().map_err(|_| "must be a CIDR".into())
            })
        })
        .collect()
}

pub(crate) fn node_port_addresses(
    items: Option<&[String]>,
    e: &mut Errors,
) -> Vec<NodePortAddress> {
    (items.unwrap_or(&[]).iter())
        .filter_map(|s| e.parse("nodePortAddresses", s.trim(), NodePortAddress::parse))
        .collect()
}

fn client(d: Option<&doc::ClientConnection>, e: &mut Errors) -> ClientConnection {
    let d = d.cloned().unwrap_or_default();
    let mut c = ClientConnection::default();
    c.kubeconfig = d.kubeconfig.filter(|k| !k.is_empty()).map(PathBuf::from);
    c.content_type = d
        .content_type
        .filter(|t| !t.is_empty())
        .unwrap_or(c.content_type);
    c.accept_content_types = d.accept_content_types.unwrap_or_default();
    c.qps = d.qps.filter(|q| *q != 0.0).unwrap_or(c.qps);
    if c.qps < 0.0 {
        e.push(
            "clientConnection.qps",
            c.qps,
            "must be greater than or equal to 0",
        );
    }
    let burst = d.burst.filter(|b| *b != 0).unwrap_or(i64::from(c.burst));
    c.burst = non_negative("clientConnection.burst", burst, e);
    c
}

pub(crate) fn non_negative(field: &str, value: i64, e: &mut Errors) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| {
        e.push(field, value, "must be greater than or equal to 0");
        0
    })
}

fn conntrack(d: Option<&doc::Conntrack>, e: &mut Errors) -> Conntrack {
    let d = d.cloned().unwrap_or_default();
    let default = Conntrack::default();
    let max_per_core = d.max_per_core.unwrap_or(i64::from(default.max_per_core));
    let min = d.min.unwrap_or(i64::from(default.min));
    Conntrack {
        max_per_core: non_negative("conntrack.maxPerCore", max_per_core, e),
        min: non_negative("conntrack.min", min, e),
        // Pointers upstream: absent is the default, an explicit 0 leaves the
        // kernel's value.
        tcp_established_timeout: d
            .tcp_established_timeout
            .map_or(default.tcp_established_timeout, |d| d.0),
        tcp_close_wait_timeout: d
            .tcp_close_wait_timeout
            .map_or(default.tcp_close_wait_timeout, |d| d.0),
        tcp_be_liberal: d.tcp_be_liberal.unwrap_or(false),
        udp_timeout: d.udp_timeout.unwrap_or_default().0,
        udp_stream_timeout: d.udp_stream_timeout.unwrap_or_default().0,
    }
}

fn logging(d: &KubeProxyConfiguration, c: &mut ProxyConfig, e: &mut Errors) {
    let mut logging = d.logging.clone().unwrap_or_default();
    if let Some(v) = logging.remove("verbosity") {
        match v.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) => c.verbosity = v,
            None => e.push("logging.verbosity", v, "must be a non-negative integer"),
        }
    }
    c.passthrough.logging = logging;
}

/// The full document for `c`, every default written out, as kube-proxy's
/// `--write-config-to` does.
pub fn to_document(c: &ProxyConfig) -> KubeProxyConfiguration {
    let address = |a: Option<SocketAddr>| Some(a.map(|a| a.to_string()).unwrap_or_default());
    KubeProxyConfiguration {
        api_version: Some(API_VERSION.to_owned()),
        kind: Some(KIND.to_owned()),
        bind_address: Some(c.bind_address.to_string()),
        bind_address_hard_fail: Some(c.bind_address_hard_fail),
        client_connection: Some(client_document(&c.client)),
        cluster_cidr: Some(join(&c.cluster_cidrs)),
        config_sync_period: Some(GoDuration(c.config_sync_period)),
        conntrack: Some(conntrack_document(&c.conntrack)),
        detect_local: Some(doc::DetectLocal {
            bridge_interface: Some(c.bridge_interface.clone()),
            interface_name_prefix: Some(c.interface_name_prefix.clone()),
        }),
        detect_local_mode: Some(c.detect_local_mode.to_string()),
        enable_profiling: Some(c.enable_profiling),
        feature_gates: Some(c.feature_gates.clone()).filter(|g| !g.is_empty()),
        healthz_bind_address: address(c.healthz_bind_address),
        hostname_override: Some(c.hostname_override.clone().unwrap_or_default()),
        metrics_bind_address: address(c.metrics_bind_address),
        mode: Some(c.mode.to_string()),
        node_port_addresses: Some(
            c.node_port_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
        oom_score_adj: Some(c.oom_score_adj),
        logging: Some(logging_document(c)),
        port_range: Some(c.passthrough.port_range.clone()),
        show_hidden_metrics_for_version: Some(
            c.passthrough.show_hidden_metrics_for_version.clone(),
        ),
        windows_run_as_service: Some(c.passthrough.windows_run_as_service).filter(|w| *w),
        winkernel: Some(c.passthrough.winkernel.clone()),
        ..sections_document(c)
    }
}

fn sections_document(c: &ProxyConfig) -> KubeProxyConfiguration {
    let nft_masq = section(c.mode) == Section::NfTables;
    let bit = Some(i64::from(c.masquerade_bit));
    let (ipt_sync, ipt_min) = sync_pair(c, Section::IpTables);
    let (nft_sync, nft_min) = sync_pair(c, Section::NfTables);
    let (ipvs_sync, ipvs_min) = sync_pair(c, Section::Ipvs);
    KubeProxyConfiguration {
        iptables: Some(doc::IpTables {
            localhost_node_ports: Some(c.localhost_node_ports),
            masquerade_all: Some(c.masquerade_all && !nft_masq),
            masquerade_bit: bit,
            min_sync_period: ipt_min,
            snat_node_internal_ip: c.passthrough.snat_node_internal_ip,
            sync_period: ipt_sync,
        }),
        nftables: Some(doc::NfTables {
            masquerade_all: Some(c.masquerade_all && nft_masq),
            masquerade_bit: bit,
            min_sync_period: nft_min,
            sync_period: nft_sync,
        }),
        ipvs: Some(doc::Ipvs {
            exclude_cidrs: Some(
                c.ipvs
                    .exclude_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            min_sync_period: ipvs_min,
            scheduler: Some(c.ipvs.scheduler.clone()),
            strict_arp: Some(c.ipvs.strict_arp),
            sync_period: ipvs_sync,
            tcp_fin_timeout: Some(GoDuration(c.ipvs.tcp_fin_timeout)),
            tcp_timeout: Some(GoDuration(c.ipvs.tcp_timeout)),
            udp_timeout: Some(GoDuration(c.ipvs.udp_timeout)),
        }),
        ..KubeProxyConfiguration::default()
    }
}

/// The sync knobs written into section `s`: the effective ones for the
/// mode's section, kube-proxy's defaults elsewhere.
fn sync_pair(c: &ProxyConfig, s: Section) -> (Option<GoDuration>, Option<GoDuration>) {
    let (sync, min) = match section(c.mode) == s {
        true => (c.sync_period, c.min_sync_period),
        false => {
            let default = ProxyConfig::default();
            (default.sync_period, default.min_sync_period)
        }
    };
    (Some(GoDuration(sync)), Some(GoDuration(min)))
}

fn client_document(c: &ClientConnection) -> doc::ClientConnection {
    doc::ClientConnection {
        accept_content_types: Some(c.accept_content_types.clone()),
        burst: Some(i64::from(c.burst)),
        content_type: Some(c.content_type.clone()),
        kubeconfig: Some(
            c.kubeconfig
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        qps: Some(c.qps),
    }
}

fn conntrack_document(c: &Conntrack) -> doc::Conntrack {
    doc::Conntrack {
        max_per_core: Some(i64::from(c.max_per_core)),
        min: Some(i64::from(c.min)),
        tcp_be_liberal: Some(c.tcp_be_liberal),
        tcp_close_wait_timeout: Some(GoDuration(c.tcp_close_wait_timeout)),
        tcp_established_timeout: Some(GoDuration(c.tcp_established_timeout)),
        udp_stream_timeout: Some(GoDuration(c.udp_stream_timeout)),
        udp_timeout: Some(GoDuration(c.udp_timeout)),
    }
}

fn logging_document(c: &ProxyConfig) -> serde_json::Map<String, serde_json::Value> {
    let mut logging = c.passthrough.logging.clone();
    logging.insert("verbosity".to_owned(), c.verbosity.into());
    logging
}

fn join(cidrs: &[IpNet]) -> String {
    let parts: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    parts.join(",")
}
