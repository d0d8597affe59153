//! Flags + `--config` → one [`ProxyConfig`], with kube-proxy's precedence
//! (`cmd/kube-proxy/app/options.go`, `Complete`):
//!
//! - Without `--config`, the configuration is kube-proxy's defaults
//!   overridden by every given flag. `--iptables-(min-)sync-period` apply
//!   unless the mode is ipvs, `--ipvs-(min-)sync-period` only in ipvs mode;
//!   Sluice's `--nftables-*` apply in nftables/ebpf/fake mode and its
//!   `--sync-period` / `--min-sync-period` in every mode, each overriding the
//!   former. The deprecated `--healthz-port` / `--metrics-port` set the port
//!   (0 disables).
//! - With `--config`, the file replaces the flags wholesale: upstream builds
//!   the flag configuration and then discards it for the file's. Only these
//!   flags still apply: `--hostname-override` (trimmed, lower-cased, empty
//!   refused), `--master`, `-v`, and the actions `--cleanup`, `--init-only`,
//!   `--write-config-to`; plus Sluice's own `--manifests-dir` and
//!   `--service-proxy-name`, which have no config-file field. Any other flag
//!   given alongside `--config` is reported in [`Resolved::ignored_flags`] so
//!   the binary can warn (upstream ignores them silently).
//! - `--write-config-to` writes that effective configuration and exits, before
//!   `--cleanup` is considered, as upstream's `Run` does.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Command, Flags};
use crate::config_file::{
    self, ConfigError, Errors, GoDuration, ProxyConfig, ProxyMode, check_local_detection,
    check_oom_score_adj, check_scheduler, check_sync_periods, cidr_list, cluster_cidrs,
    masquerade_bit, node_port_addresses, non_negative, parse_host_port,
};
use crate::explain::ExplainArgs;

/// What the process should do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Run the proxy.
    Run,
    /// `--cleanup`: remove everything Sluice programmed and exit.
    Cleanup,
    /// `--init-only`: privileged initialisation, then exit.
    InitOnly,
    /// `--write-config-to`: write the effective configuration here and exit.
    WriteConfig(PathBuf),
    /// `explain`: answer one question about a packet and exit.
    Explain(ExplainArgs),
}

/// The outcome of [`Flags::resolve`].
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The effective configuration.
    pub config: ProxyConfig,
    /// What to do with it.
    pub action: Action,
    /// Flags that were given but have no effect because `--config` was given.
    pub ignored_flags: Vec<&'static str>,
}

impl Flags {
    /// Combines the flags with the `--config` file, if any, validating both.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let (mut config, ignored_flags) = match &self.config {
            Some(path) => (config_file::load(path)?, self.config_bound_flags()),
            None => (self.flag_config()?, Vec::new()),
        };
        self.apply_always(&mut config)?;
        Ok(Resolved {
            config,
            action: self.action(),
            ignored_flags,
        })
    }

    fn action(&self) -> Action {
        if let Some(Command::Explain(args)) = &self.command {
            return Action::Explain(args.clone());
        }
        if let Some(path) = &self.write_config_to {
            return Action::WriteConfig(path.clone());
        }
        match (self.cleanup, self.init_only) {
            (Some(true), _) => Action::Cleanup,
            (_, Some(true)) => Action::InitOnly,
            _ => Action::Run,
        }
    }

    /// The flags that still apply on top of a config file.
    fn apply_always(&self, config: &mut ProxyConfig) -> Result<(), ConfigError> {
        if let Some(name) = &self.hostname_override {
            let name = name.trim();
            if name.is_empty() {
                return Err(invalid("--hostname-override", "", "must not be empty"));
            }
            config.hostname_override = Some(name.to_lowercase());
        }
        if let Some(master) = &self.master {
            config.client.master = Some(master.clone());
        }
        if let Some(v) = self.v {
            config.verbosity = v;
        }
        if let Some(dir) = &self.manifests_dir {
            config.manifests_dir = Some(dir.clone());
        }
        if let Some(v) = self.iptables_variant.as_deref().filter(|v| *v != "auto") {
            config.iptables_variant = Some(v.to_owned());
        }
        if let Some(dir) = &self.ebpf_cgroup {
            config.ebpf.cgroup = Some(dir.clone());
        }
        if let Some(dir) = &self.ebpf_pin_dir {
            config.ebpf.pin_dir = Some(dir.clone());
        }
        if let Some(cidrs) = &self.service_cidr {
            config.service_cidrs.clone_from(&cidrs.0);
        }
        if let Some(name) = self.service_proxy_name.as_deref().map(str::trim) {
            config.service_proxy_name = Some(name.to_owned()).filter(|n| !n.is_empty());
        }
        Ok(())
    }

    /// Defaults overridden by the given flags (no `--config`).
    fn flag_config(&self) -> Result<ProxyConfig, ConfigError> {
        let mut c = ProxyConfig::default();
        let mut e = Errors::default();
        c.mode = self.proxy_mode.unwrap_or(c.mode);
        self.apply_servers(&mut c, &mut e);
        self.apply_network(&mut c, &mut e);
        self.apply_sync(&mut c, &mut e);
        self.apply_conntrack(&mut c, &mut e);
        self.apply_client(&mut c, &mut e);
        self.apply_ipvs(&mut c, &mut e);
        if let Some(gates) = &self.feature_gates {
            c.feature_gates = gates.0.clone();
        }
        set(
            &mut c.passthrough.show_hidden_metrics_for_version,
            &self.show_hidden_metrics_for_version,
        );
        match e.0.is_empty() {
            true => Ok(c),
            false => Err(ConfigError::Invalid {
                origin: None,
                errors: e.0,
            }),
        }
    }

    fn apply_servers(&self, c: &mut ProxyConfig, e: &mut Errors) {
        c.bind_address = self.bind_address.unwrap_or(c.bind_address);
        if let Some(text) = &self.healthz_bind_address {
            c.healthz_bind_address = flag_address("--healthz-bind-address", text, 10256, e);
        }
        if let Some(text) = &self.metrics_bind_address {
            c.metrics_bind_address = flag_address("--metrics-bind-address", text, 10249, e);
        }
        c.healthz_bind_address = with_port(c.healthz_bind_address, self.healthz_port);
        c.metrics_bind_address = with_port(c.metrics_bind_address, self.metrics_port);
        c.bind_address_hard_fail = self.bind_address_hard_fail.unwrap_or(false);
        c.enable_profiling = self.profiling.unwrap_or(false);
    }

    fn apply_network(&self, c: &mut ProxyConfig, e: &mut Errors) {
        c.detect_local_mode = self.detect_local_mode.unwrap_or(c.detect_local_mode);
        set(&mut c.bridge_interface, &self.pod_bridge_interface);
        set(
            &mut c.interface_name_prefix,
            &self.pod_interface_name_prefix,
        );
        if let Some(text) = &self.cluster_cidr {
            c.cluster_cidrs = cluster_cidrs("--cluster-cidr", text, e);
        }
        check_local_detection(c, e);
        if let Some(items) = &self.nodeport_addresses {
            c.node_port_addresses = node_port_addresses(Some(items), e);
        }
        c.masquerade_all = self.masquerade_all.unwrap_or(false);
        if let Some(bit) = self.iptables_masquerade_bit {
            c.masquerade_bit = masquerade_bit("--iptables-masquerade-bit", bit, e);
        }
        c.localhost_node_ports = self.iptables_localhost_nodeports.unwrap_or(true);
        c.oom_score_adj = self.oom_score_adj.unwrap_or(c.oom_score_adj);
        check_oom_score_adj(c.oom_score_adj, e);
    }

    fn apply_sync(&self, c: &mut ProxyConfig, e: &mut Errors) {
        let (mode_sync, mode_min) = match c.mode {
            ProxyMode::Ipvs => (self.ipvs_sync_period, self.ipvs_min_sync_period),
            ProxyMode::Iptables => (self.iptables_sync_period, self.iptables_min_sync_period),
            ProxyMode::Nftables | ProxyMode::Ebpf | ProxyMode::Fake => (
                self.nftables_sync_period.or(self.iptables_sync_period),
                self.nftables_min_sync_period
                    .or(self.iptables_min_sync_period),
            ),
        };
        let pick = |general: Option<GoDuration>, per_mode: Option<GoDuration>, default| {
            general.or(per_mode).map_or(default, |d| d.0)
        };
        c.sync_period = pick(self.sync_period, mode_sync, c.sync_period);
        c.min_sync_period = pick(self.min_sync_period, mode_min, c.min_sync_period);
        check_sync_periods("--sync-period", c, e);
        if let Some(period) = self.config_sync_period {
            c.config_sync_period = period.0;
        }
        if c.config_sync_period.is_zero() {
            e.push("--config-sync-period", "0s", "must be greater than 0");
        }
    }

    fn apply_conntrack(&self, c: &mut ProxyConfig, e: &mut Errors) {
        let ct = &mut c.conntrack;
        if let Some(n) = self.conntrack_max_per_core {
            ct.max_per_core = non_negative("--conntrack-max-per-core", n, e);
        }
        if let Some(n) = self.conntrack_min {
            ct.min = non_negative("--conntrack-min", n, e);
        }
        let set_duration = |target: &mut std::time::Duration, value: Option<GoDuration>| {
            if let Some(d) = value {
                *target = d.0;
            }
        };
        set_duration(
            &mut ct.tcp_established_timeout,
            self.conntrack_tcp_timeout_established,
        );
        set_duration(
            &mut ct.tcp_close_wait_timeout,
            self.conntrack_tcp_timeout_close_wait,
        );
        set_duration(&mut ct.udp_timeout, self.conntrack_udp_timeout);
        set_duration(
            &mut ct.udp_stream_timeout,
            self.conntrack_udp_timeout_stream,
        );
        ct.tcp_be_liberal = self.conntrack_tcp_be_liberal.unwrap_or(false);
    }

    fn apply_client(&self, c: &mut ProxyConfig, e: &mut Errors) {
        c.client.kubeconfig = self.kubeconfig.clone();
        set(&mut c.client.content_type, &self.kube_api_content_type);
        if let Some(qps) = self.kube_api_qps {
            if qps < 0.0 {
                e.push("--kube-api-qps", qps, "must be greater than or equal to 0");
            }
            c.client.qps = qps;
        }
        if let Some(burst) = self.kube_api_burst {
            c.client.burst = non_negative("--kube-api-burst", burst, e);
        }
    }

    fn apply_ipvs(&self, c: &mut ProxyConfig, e: &mut Errors) {
        set(&mut c.ipvs.scheduler, &self.ipvs_scheduler);
        check_scheduler(&c.ipvs.scheduler, e);
        if let Some(items) = &self.ipvs_exclude_cidrs {
            c.ipvs.exclude_cidrs = cidr_list("--ipvs-exclude-cidrs", items, e);
        }
        c.ipvs.strict_arp = self.ipvs_strict_arp.unwrap_or(false);
        let durations = [
            (&mut c.ipvs.tcp_timeout, self.ipvs_tcp_timeout),
            (&mut c.ipvs.tcp_fin_timeout, self.ipvs_tcpfin_timeout),
            (&mut c.ipvs.udp_timeout, self.ipvs_udp_timeout),
        ];
        for (target, value) in durations {
            if let Some(d) = value {
                *target = d.0;
            }
        }
    }

    /// Config-bound flags that were given (ignored when `--config` is).
    fn config_bound_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--feature-gates", self.feature_gates.is_some()),
            ("--kubeconfig", self.kubeconfig.is_some()),
            (
                "--kube-api-content-type",
                self.kube_api_content_type.is_some(),
            ),
            ("--kube-api-burst", self.kube_api_burst.is_some()),
            ("--kube-api-qps", self.kube_api_qps.is_some()),
            ("--bind-address", self.bind_address.is_some()),
            (
                "--healthz-bind-address",
                self.healthz_bind_address.is_some(),
            ),
            (
                "--metrics-bind-address",
                self.metrics_bind_address.is_some(),
            ),
            ("--healthz-port", self.healthz_port.is_some()),
            ("--metrics-port", self.metrics_port.is_some()),
            (
                "--bind-address-hard-fail",
                self.bind_address_hard_fail.is_some(),
            ),
            ("--profiling", self.profiling.is_some()),
            (
                "--show-hidden-metrics-for-version",
                self.show_hidden_metrics_for_version.is_some(),
            ),
            ("--proxy-mode", self.proxy_mode.is_some()),
            (
                "--iptables-masquerade-bit",
                self.iptables_masquerade_bit.is_some(),
            ),
            ("--masquerade-all", self.masquerade_all.is_some()),
            (
                "--iptables-localhost-nodeports",
                self.iptables_localhost_nodeports.is_some(),
            ),
            (
                "--iptables-sync-period",
                self.iptables_sync_period.is_some(),
            ),
            (
                "--iptables-min-sync-period",
                self.iptables_min_sync_period.is_some(),
            ),
            ("--ipvs-sync-period", self.ipvs_sync_period.is_some()),
            (
                "--ipvs-min-sync-period",
                self.ipvs_min_sync_period.is_some(),
            ),
            (
                "--nftables-sync-period",
                self.nftables_sync_period.is_some(),
            ),
            (
                "--nftables-min-sync-period",
                self.nftables_min_sync_period.is_some(),
            ),
            ("--sync-period", self.sync_period.is_some()),
            ("--min-sync-period", self.min_sync_period.is_some()),
            ("--ipvs-scheduler", self.ipvs_scheduler.is_some()),
            ("--ipvs-exclude-cidrs", self.ipvs_exclude_cidrs.is_some()),
            ("--ipvs-strict-arp", self.ipvs_strict_arp.is_some()),
            ("--ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some()),
            ("--ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some()),
            ("--ipvs-udp-timeout", self.ipvs_udp_timeout.is_some()),
            ("--detect-local-mode", self.detect_local_mode.is_some()),
            (
                "--pod-bridge-interface",
                self.pod_bridge_interface.is_some(),
            ),
            (
                "--pod-interface-name-prefix",
                self.pod_interface_name_prefix.is_some(),
            ),
            ("--cluster-cidr", self.cluster_cidr.is_some()),
            ("--nodeport-addresses", self.nodeport_addresses.is_some()),
            ("--oom-score-adj", self.oom_score_adj.is_some()),
            (
                "--conntrack-max-per-core",
                self.conntrack_max_per_core.is_some(),
            ),
            ("--conntrack-min", self.conntrack_min.is_some()),
            (
                "--conntrack-tcp-timeout-established",
                self.conntrack_tcp_timeout_established.is_some(),
            ),
            (
                "--conntrack-tcp-timeout-close-wait",
                self.conntrack_tcp_timeout_close_wait.is_some(),
            ),
            (
                "--conntrack-tcp-be-liberal",
                self.conntrack_tcp_be_liberal.is_some(),
            ),
            (
                "--conntrack-udp-timeout",
                self.conntrack_udp_timeout.is_some(),
            ),
            (
                "--conntrack-udp-timeout-stream",
                self.conntrack_udp_timeout_stream.is_some(),
            ),
            ("--config-sync-period", self.config_sync_period.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, g)| *g)
            .map(|(name, _)| name)
            .collect()
    }
}

fn set(target: &mut String, value: &Option<String>) {
    if let Some(value) = value {
        target.clone_from(value);
    }
}

/// A server address flag: empty disables, an IP alone gets `default_port`.
fn flag_address(flag: &str, text: &str, default_port: u16, e: &mut Errors) -> Option<SocketAddr> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ip) = text.parse() {
        return Some(SocketAddr::new(ip, default_port));
    }
    parse_host_port(text)
        .map_err(|reason| e.push(flag, text, reason))
        .ok()
}

/// The deprecated `--healthz-port` / `--metrics-port`: 0 disables.
fn with_port(addr: Option<SocketAddr>, port: Option<u16>) -> Option<SocketAddr> {
    match port {
        None => addr,
        Some(0) => None,
        Some(port) => addr.map(|a| SocketAddr::new(a.ip(), port)),
    }
}

fn invalid(field: &str, value: &str, reason: &str) -> ConfigError {
    let mut e = Errors::default();
    e.push(field, value, reason);
    ConfigError::Invalid {
        origin: None,
        errors: e.0,
    }
}
