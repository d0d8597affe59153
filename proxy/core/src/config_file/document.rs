//! The `KubeProxyConfiguration` document (`kubeproxy.config.k8s.io/v1alpha1`)
//! field for field, as serde types.
//!
//! Operators reuse the file they give kube-proxy, so field names and nesting
//! are upstream's. Unknown fields are refused (kube-proxy falls back to a
//! lenient decode and only logs; a typo silently ignored is worse than a
//! refusal at startup). Every field is optional: absent and `null` both mean
//! "default". Fields are declared in alphabetical order so a written file
//! reads like kube-proxy's own `--write-config-to` output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The only accepted `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

type Json = serde_json::Map<String, serde_json::Value>;

/// A `KubeProxyConfiguration` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeProxyConfiguration {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    #[serde(rename = "bindAddress")]
    pub bind_address: Option<String>,
    #[serde(rename = "bindAddressHardFail")]
    pub bind_address_hard_fail: Option<bool>,
    #[serde(rename = "clientConnection")]
    pub client_connection: Option<ClientConnection>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    #[serde(rename = "configSyncPeriod")]
    pub config_sync_period: Option<GoDuration>,
    pub conntrack: Option<Conntrack>,
    #[serde(rename = "detectLocal")]
    pub detect_local: Option<DetectLocal>,
    #[serde(rename = "detectLocalMode")]
    pub detect_local_mode: Option<String>,
    #[serde(rename = "enableProfiling")]
    pub enable_profiling: Option<bool>,
    #[serde(rename = "featureGates", skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<BTreeMap<String, bool>>,
    #[serde(rename = "healthzBindAddress")]
    pub healthz_bind_address: Option<String>,
    #[serde(rename = "hostnameOverride")]
    pub hostname_override: Option<String>,
    pub iptables: Option<IpTables>,
    pub ipvs: Option<Ipvs>,
    pub kind: Option<String>,
    pub logging: Option<Json>,
    #[serde(rename = "metricsBindAddress")]
    pub metrics_bind_address: Option<String>,
    pub mode: Option<String>,
    pub nftables: Option<NfTables>,
    #[serde(rename = "nodePortAddresses")]
    pub node_port_addresses: Option<Vec<String>>,
    #[serde(rename = "oomScoreAdj")]
    pub oom_score_adj: Option<i32>,
    #[serde(rename = "portRange")]
    pub port_range: Option<String>,
    #[serde(rename = "showHiddenMetricsForVersion")]
    pub show_hidden_metrics_for_version: Option<String>,
    #[serde(
        rename = "windowsRunAsService",
        skip_serializing_if = "Option::is_none"
    )]
    pub windows_run_as_service: Option<bool>,
    pub winkernel: Option<Json>,
}

/// `clientConnection` (component-base's `ClientConnectionConfiguration`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConnection {
    #[serde(rename = "acceptContentTypes")]
    pub accept_content_types: Option<String>,
    pub burst: Option<i64>,
    #[serde(rename = "contentType")]
    pub content_type: Option<String>,
    pub kubeconfig: Option<String>,
    pub qps: Option<f32>,
}

/// `conntrack`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conntrack {
    #[serde(rename = "maxPerCore")]
    pub max_per_core: Option<i64>,
    pub min: Option<i64>,
    #[serde(rename = "tcpBeLiberal")]
    pub tcp_be_liberal: Option<bool>,
    #[serde(rename = "tcpCloseWaitTimeout")]
    pub tcp_close_wait_timeout: Option<GoDuration>,
    #[serde(rename = "tcpEstablishedTimeout")]
    pub tcp_established_timeout: Option<GoDuration>,
    #[serde(rename = "udpStreamTimeout")]
    pub udp_stream_timeout: Option<GoDuration>,
    #[serde(rename = "udpTimeout")]
    pub udp_timeout: Option<GoDuration>,
}

/// `detectLocal`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectLocal {
    #[serde(rename = "bridgeInterface")]
    pub bridge_interface: Option<String>,
    #[serde(rename = "interfaceNamePrefix")]
    pub interface_name_prefix: Option<String>,
}

/// `iptables`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpTables {
    #[serde(rename = "localhostNodePorts")]
    pub localhost_node_ports: Option<bool>,
    #[serde(rename = "masqueradeAll")]
    pub masquerade_all: Option<bool>,
    #[serde(rename = "masqueradeBit")]
    pub masquerade_bit: Option<i64>,
    #[serde(rename = "minSyncPeriod")]
    pub min_sync_period: Option<GoDuration>,
    #[serde(rename = "snatNodeInternalIP", skip_serializing_if = "Option::is_none")]
    pub snat_node_internal_ip: Option<bool>,
    #[serde(rename = "syncPeriod")]
    pub sync_period: Option<GoDuration>,
}

/// `ipvs`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipvs {
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
    #[serde(rename = "minSyncPeriod")]
    pub min_sync_period: Option<GoDuration>,
    pub scheduler: Option<String>,
    #[serde(rename = "strictARP")]
    pub strict_arp: Option<bool>,
    #[serde(rename = "syncPeriod")]
    pub sync_period: Option<GoDuration>,
    #[serde(rename = "tcpFinTimeout")]
    pub tcp_fin_timeout: Option<GoDuration>,
    #[serde(rename = "tcpTimeout")]
    pub tcp_timeout: Option<GoDuration>,
    #[serde(rename = "udpTimeout")]
    pub udp_timeout: Option<GoDuration>,
}

/// `nftables`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfTables {
    #[serde(rename = "masqueradeAll")]
    pub masquerade_all: Option<bool>,
    #[serde(rename = "masqueradeBit")]
    pub masquerade_bit: Option<i64>,
    #[serde(rename = "minSyncPeriod")]
    pub min_sync_period: Option<GoDuration>,
    #[serde(rename = "syncPeriod")]
    pub sync_period: Option<GoDuration>,
}
