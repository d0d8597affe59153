use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn parse_yaml(body: &str) -> Result<ProxyConfig, ConfigError> {
    parse(&format!("{HEADER}{body}"), Path::new("test.yaml"))
}

fn errors(body: &str) -> Vec<FieldError> {
    match parse_yaml(body) {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn without_file(mut config: ProxyConfig) -> ProxyConfig {
    config.config_file = None;
    config
}

#[test]
fn empty_document_is_kube_proxy_defaults() {
    let config = without_file(parse_yaml("").unwrap());
    assert_eq!(config, ProxyConfig::default());
    assert_eq!(config.mode, ProxyMode::Nftables);
    assert_eq!(
        config.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
    assert_eq!(config.sync_period, Duration::from_secs(30));
    assert_eq!(config.min_sync_period, Duration::from_secs(1));
    assert_eq!(config.config_sync_period, Duration::from_secs(900));
    assert_eq!(config.oom_score_adj, -999);
    assert_eq!(config.conntrack.max_per_core, 32768);
    assert_eq!(config.conntrack.min, 131072);
    assert_eq!(
        config.conntrack.tcp_established_timeout,
        Duration::from_secs(86400)
    );
    assert_eq!(config.health_timeout(), Duration::from_secs(60));
}

#[test]
fn nulls_mean_defaults() {
    let body = "iptables:\n  masqueradeBit: null\n  syncPeriod: null\nconntrack:\n  maxPerCore: null\n  tcpEstablishedTimeout: null\noomScoreAdj: null\n";
    assert_eq!(
        without_file(parse_yaml(body).unwrap()),
        ProxyConfig::default()
    );
}

#[test]
fn sync_knobs_come_from_the_modes_section() {
    let sections = "iptables:\n  syncPeriod: 10s\n  minSyncPeriod: 2s\n  masqueradeAll: true\n\
                    nftables:\n  syncPeriod: 20s\n  minSyncPeriod: 3s\n\
                    ipvs:\n  syncPeriod: 40s\n  minSyncPeriod: 4s\n";
    let cases = [
        ("iptables", 10, 2, true),
        ("ipvs", 40, 4, true),
        ("nftables", 20, 3, false),
        ("ebpf", 20, 3, false),
        ("fake", 20, 3, false),
        ("\"\"", 20, 3, false),
    ];
    for (mode, sync, min, masquerade_all) in cases {
        let config = parse_yaml(&format!("mode: {mode}\n{sections}")).unwrap();
        assert_eq!(config.sync_period, Duration::from_secs(sync), "{mode}");
        assert_eq!(config.min_sync_period, Duration::from_secs(min), "{mode}");
        assert_eq!(config.masquerade_all, masquerade_all, "{mode}");
    }
}

#[test]
fn hostname_override_is_trimmed_and_lower_cased_like_the_flag() {
    let config = parse_yaml("hostnameOverride: \" Node-A \"\n").unwrap();
    assert_eq!(config.hostname_override.as_deref(), Some("node-a"));
    let blank = parse_yaml("hostnameOverride: \"  \"\n").unwrap();
    assert_eq!(blank.hostname_override, None);
}

#[test]
fn settings_accepted_but_not_applied_are_named() {
    assert!(parse_yaml("").unwrap().unapplied().is_empty());
    let config = parse_yaml(
        "oomScoreAdj: -500\nconntrack:\n  maxPerCore: 0\nclientConnection:\n  qps: 50\n",
    )
    .unwrap();
    assert_eq!(
        config.unapplied(),
        ["oomScoreAdj", "conntrack", "clientConnection.qps"]
    );
    // Applied: the primary node IP, and the iptables modes' INVALID rule.
    let applied = parse_yaml(
        "bindAddress: 192.168.0.9
conntrack:
  tcpBeLiberal: true
",
    );
    assert!(applied.unwrap().unapplied().is_empty());
}

#[test]
fn json_is_accepted() {
    let text = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clusterCIDR": "10.0.0.0/8,fd00::/48", "iptables": {"syncPeriod": "1m30s"}}"#;
    let config = parse(text, Path::new("c.json")).unwrap();
    assert_eq!(config.mode, ProxyMode::Iptables);
    assert_eq!(config.cluster_cidrs.len(), 2);
    assert_eq!(config.sync_period, Duration::from_secs(90));
    assert_eq!(config.config_file.as_deref(), Some(Path::new("c.json")));
}

#[test]
fn addresses_get_default_ports_and_follow_the_bind_family() {
    let config =
        parse_yaml("healthzBindAddress: 127.0.0.1\nmetricsBindAddress: \"[::1]:9000\"\n").unwrap();
    assert_eq!(
        config.healthz_bind_address,
        Some("127.0.0.1:10256".parse().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("[::1]:9000".parse().unwrap())
    );
    let v6 = parse_yaml("bindAddress: \"::\"\n").unwrap();
    assert_eq!(v6.healthz_bind_address, Some("[::]:10256".parse().unwrap()));
    assert_eq!(
        v6.metrics_bind_address,
        Some("[::1]:10249".parse().unwrap())
    );
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    for body in [
        "sycnPeriod: 1s\n",
        "iptables:\n  syncPerod: 1s\n",
        "conntrack:\n  maxPerCores: 1\n",
    ] {
        let err = parse_yaml(body).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{body}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("unknown field") && text.contains("test.yaml"),
            "{text}"
        );
    }
    let err = parse_yaml("iptables:\n  syncPeriod: 5 seconds\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn invalid_values_are_all_reported() {
    let errs = errors(
        "mode: userspace\noomScoreAdj: 5000\nclusterCIDR: 10.0.0.0/8,10.1.0.0/16\n\
         nftables:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n  masqueradeBit: 40\n\
         healthzBindAddress: not-an-address\ndetectLocalMode: Bridge\nnodePortAddresses: [primary, bogus]\n\
         ipvs:\n  scheduler: fastest\nconntrack:\n  min: -1\n",
    );
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "mode",
        "oomScoreAdj",
        "clusterCIDR",
        "healthzBindAddress",
        "detectLocalMode",
        "nodePortAddresses",
        "ipvs.scheduler",
        "conntrack.min",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let text = ConfigError::Invalid {
        origin: Some(PathBuf::from("/etc/kp.yaml")),
        errors: errs,
    }
    .to_string();
    assert!(
        text.starts_with("invalid configuration in /etc/kp.yaml:"),
        "{text}"
    );
    assert!(
        text.contains("mode: invalid value \"userspace\": must be one of iptables"),
        "{text}"
    );
}

#[test]
fn mode_specific_checks() {
    let errs = errors("nftables:\n  syncPeriod: 1s\n  minSyncPeriod: 5s\n  masqueradeBit: 40\n");
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["nftables.minSyncPeriod", "nftables.masqueradeBit"]);
    let errs = errors("detectLocalMode: BridgeInterface\n");
    assert_eq!(errs[0].field, "detectLocal.bridgeInterface");
    let ok = parse_yaml(
        "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: veth\n",
    )
    .unwrap();
    assert_eq!(ok.detect_local_mode, LocalMode::InterfaceNamePrefix);
}

#[test]
fn type_meta_is_required() {
    let err = parse("mode: nftables\n", Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("apiVersion") && err.contains("kind"), "{err}");
    let err = parse("apiVersion: v1\nkind: ConfigMap\n", Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("must be kubeproxy.config.k8s.io/v1alpha1"),
        "{err}"
    );
}

fn non_default() -> ProxyConfig {
    let default = ProxyConfig::default();
    ProxyConfig {
        mode: ProxyMode::Iptables,
        hostname_override: Some("node-a".to_owned()),
        healthz_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10300))),
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10::/56".parse().unwrap(),
        ],
        detect_local_mode: LocalMode::NodeCidr,
        masquerade_all: true,
        masquerade_bit: 15,
        localhost_node_ports: false,
        node_port_addresses: vec![
            NodePortAddress::Primary,
            NodePortAddress::Cidr("192.168.0.0/24".parse().unwrap()),
        ],
        sync_period: Duration::from_secs(90),
        min_sync_period: Duration::from_millis(500),
        client: ClientConnection {
            kubeconfig: Some(PathBuf::from("/etc/kubeconfig")),
            qps: 20.0,
            ..default.client
        },
        conntrack: Conntrack {
            tcp_be_liberal: true,
            tcp_established_timeout: Duration::ZERO,
            ..default.conntrack
        },
        ipvs: Ipvs {
            scheduler: "wrr".to_owned(),
            exclude_cidrs: vec!["10.9.0.0/16".parse().unwrap()],
            ..default.ipvs
        },
        feature_gates: BTreeMap::from([("PreferSameTrafficDistribution".to_owned(), false)]),
        verbosity: 4,
        ..default
    }
}

#[test]
fn written_config_reads_back_identically() {
    for config in [ProxyConfig::default(), non_default()] {
        let yaml = to_yaml(&config);
        assert!(
            yaml.starts_with("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"),
            "{yaml}"
        );
        let back = without_file(parse(&yaml, Path::new("w.yaml")).unwrap());
        assert_eq!(back, config, "{yaml}");
    }
}

#[test]
fn write_and_load_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kube-proxy.yaml");
    write(&path, &non_default()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("syncPeriod: 1m30s") && text.contains("minSyncPeriod: 500ms"),
        "{text}"
    );
    assert!(text.contains("kind: KubeProxyConfiguration"), "{text}");
    assert_eq!(without_file(load(&path).unwrap()), non_default());
    let err = load(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn the_shipped_manifest_parses() {
    let manifest = include_str!("../../../../deploy/sluice.yaml");
    let text = serde_yaml::Deserializer::from_str(manifest)
        .filter_map(|doc| serde_json::Value::deserialize(doc).ok())
        .find(|doc| doc["kind"] == "ConfigMap" && doc["data"]["kube-proxy.yaml"].is_string())
        .map(|doc| doc["data"]["kube-proxy.yaml"].as_str().unwrap().to_owned())
        .expect("the ConfigMap carries kube-proxy.yaml");
    let config = parse(&text, Path::new("deploy/sluice.yaml")).unwrap();
    assert_eq!(config.mode, ProxyMode::Nftables);
    assert_eq!(
        config.cluster_cidrs,
        vec!["10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        config.unapplied(),
        Vec::<&str>::new(),
        "nothing to warn about"
    );
}

use serde::Deserialize;
