use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config_file::{ConfigError, ProxyConfig};
use crate::explain::OutputFormat;

fn flags(args: &[&str]) -> Flags {
    let argv = std::iter::once("sluice-proxy").chain(args.iter().copied());
    Flags::parse_args(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn resolve(args: &[&str]) -> Resolved {
    flags(args)
        .resolve()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_error(args: &[&str]) -> String {
    let argv = std::iter::once("sluice-proxy").chain(args.iter().copied());
    Flags::parse_args(argv).unwrap_err().to_string()
}

fn invalid(args: &[&str]) -> Vec<String> {
    match flags(args).resolve() {
        Err(ConfigError::Invalid { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("{args:?}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn no_flags_is_the_default_configuration() {
    let resolved = resolve(&[]);
    assert_eq!(resolved.config, ProxyConfig::default());
    assert_eq!(resolved.action, Action::Run);
    assert!(resolved.ignored_flags.is_empty());
}

#[test]
fn flags_override_defaults() {
    let c = resolve(&[
        "--proxy-mode=iptables",
        "--hostname-override= Node-A ",
        "--bind-address=192.168.0.2",
        "--healthz-bind-address=127.0.0.1",
        "--metrics-bind-address",
        "0.0.0.0:9999",
        "--cluster-cidr=10.0.0.0/8,fd00::/48",
        "--detect-local-mode=NodeCIDR",
        "--masquerade-all",
        "--iptables-localhost-nodeports=false",
        "--nodeport-addresses=primary,192.168.0.0/24",
        "--oom-score-adj",
        "-500",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=2h",
        "--conntrack-tcp-be-liberal=true",
        "--feature-gates=PreferSameTrafficDistribution=false,Foo=true",
        "--kubeconfig=/etc/kc",
        "--master=https://10.0.0.1:6443",
        "--kube-api-qps=50",
        "--ipvs-exclude-cidrs=10.1.0.0/16,10.2.0.0/16",
        "-v",
        "4",
        "--manifests-dir=/srv/manifests",
        "--service-proxy-name=sluice",
    ])
    .config;
    assert_eq!(c.mode, ProxyMode::Iptables);
    assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(c.bind_address.to_string(), "192.168.0.2");
    assert_eq!(
        c.healthz_bind_address,
        Some("127.0.0.1:10256".parse().unwrap())
    );
    assert_eq!(
        c.metrics_bind_address,
        Some("0.0.0.0:9999".parse().unwrap())
    );
    assert_eq!(c.cluster_cidrs.len(), 2);
    assert_eq!(c.detect_local_mode, LocalMode::NodeCidr);
    assert!(c.masquerade_all && !c.localhost_node_ports);
    assert_eq!(c.node_port_addresses.len(), 2);
    assert_eq!(c.oom_score_adj, -500);
    assert_eq!(c.conntrack.max_per_core, 0);
    assert_eq!(
        c.conntrack.tcp_established_timeout,
        Duration::from_secs(7200)
    );
    assert!(c.conntrack.tcp_be_liberal);
    assert!(!c.feature("PreferSameTrafficDistribution", true));
    assert!(c.feature("Foo", false));
    assert_eq!(c.client.kubeconfig.as_deref(), Some(Path::new("/etc/kc")));
    assert_eq!(c.client.master.as_deref(), Some("https://10.0.0.1:6443"));
    assert_eq!(c.client.qps, 50.0);
    assert_eq!(c.ipvs.exclude_cidrs.len(), 2);
    assert_eq!(c.verbosity, 4);
    assert_eq!(
        c.manifests_dir.as_deref(),
        Some(Path::new("/srv/manifests"))
    );
    assert_eq!(c.service_proxy_name.as_deref(), Some("sluice"));
}

#[test]
fn sync_period_flags_follow_the_mode() {
    let cases: [(&[&str], u64, u64); 7] = [
        (
            &[
                "--iptables-sync-period=10s",
                "--iptables-min-sync-period=2s",
            ],
            10,
            2,
        ),
        (&["--proxy-mode=ipvs", "--iptables-sync-period=10s"], 30, 1),
        (
            &[
                "--proxy-mode=ipvs",
                "--ipvs-sync-period=40s",
                "--ipvs-min-sync-period=4s",
            ],
            40,
            4,
        ),
        (&["--proxy-mode=iptables", "--ipvs-sync-period=40s"], 30, 1),
        (
            &["--iptables-sync-period=10s", "--nftables-sync-period=20s"],
            20,
            1,
        ),
        (
            &[
                "--proxy-mode=ebpf",
                "--sync-period=1m",
                "--nftables-sync-period=20s",
            ],
            60,
            1,
        ),
        (
            &[
                "--proxy-mode=ipvs",
                "--min-sync-period=500ms",
                "--ipvs-min-sync-period=4s",
            ],
            30,
            0,
        ),
    ];
    for (args, sync, min) in cases {
        let c = resolve(args).config;
        assert_eq!(c.sync_period, Duration::from_secs(sync), "{args:?}");
        if min == 0 {
            assert_eq!(c.min_sync_period, Duration::from_millis(500), "{args:?}");
        } else {
            assert_eq!(c.min_sync_period, Duration::from_secs(min), "{args:?}");
        }
    }
}

#[test]
fn go_style_values() {
    let c = resolve(&[
        "--masquerade-all=T",
        "--ipvs-strict-arp=1",
        "--cleanup=false",
    ]);
    assert!(c.config.masquerade_all && c.config.ipvs.strict_arp);
    assert_eq!(c.action, Action::Run);
    for (args, needle) in [
        (&["--masquerade-all=yes"][..], "not a boolean"),
        (&["--iptables-sync-period=30"], "missing unit"),
        (&["--proxy-mode=userspace"], "must be one of iptables"),
        (&["--detect-local-mode=Pods"], "must be one of ClusterCIDR"),
        (&["--feature-gates=Foo"], "key=value"),
        (&["--bind-address=not-an-ip"], "invalid"),
        (&["--no-such-flag"], "unexpected argument"),
    ] {
        let err = parse_error(args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn invalid_flag_values_are_refused() {
    assert_eq!(invalid(&["--oom-score-adj=-1001"]), ["oomScoreAdj"]);
    assert_eq!(
        invalid(&["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"]),
        ["--cluster-cidr"]
    );
    assert_eq!(
        invalid(&["--healthz-bind-address=localhost:1"]),
        ["--healthz-bind-address"]
    );
    assert_eq!(
        invalid(&["--iptables-masquerade-bit=32"]),
        ["--iptables-masquerade-bit"]
    );
    assert_eq!(
        invalid(&["--sync-period=1s", "--min-sync-period=2s"]),
        ["--sync-period.minSyncPeriod"]
    );
    assert_eq!(
        invalid(&["--detect-local-mode=BridgeInterface"]),
        ["detectLocal.bridgeInterface"]
    );
    assert_eq!(invalid(&["--ipvs-scheduler=fastest"]), ["ipvs.scheduler"]);
    assert_eq!(invalid(&["--conntrack-min=-5"]), ["--conntrack-min"]);
    let err = flags(&["--hostname-override=  "])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--hostname-override") && err.contains("from flags"),
        "{err}"
    );
}

#[test]
fn servers_can_be_disabled() {
    let c = resolve(&["--metrics-bind-address="]).config;
    assert_eq!(c.metrics_bind_address, None);
    let c = resolve(&["--healthz-port=0", "--metrics-port=9100"]).config;
    assert_eq!(c.healthz_bind_address, None);
    assert_eq!(
        c.metrics_bind_address,
        Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
    );
}

fn config_file(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kube-proxy.yaml");
    let header = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
    std::fs::write(&path, format!("{header}{body}")).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn config_file_replaces_config_bound_flags() {
    let (_dir, path) =
        config_file("mode: iptables\nhostnameOverride: from-file\nclusterCIDR: 10.244.0.0/16\n");
    let resolved = resolve(&[
        &format!("--config={path}"),
        "--proxy-mode=ipvs",
        "--cluster-cidr=10.0.0.0/8",
        "--masquerade-all",
        "--sync-period=5s",
        "--healthz-bind-address=127.0.0.1:1",
    ]);
    let c = &resolved.config;
    assert_eq!(c.mode, ProxyMode::Iptables);
    assert_eq!(
        c.cluster_cidrs,
        vec!["10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(!c.masquerade_all);
    assert_eq!(c.sync_period, Duration::from_secs(30));
    assert_eq!(
        c.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(c.hostname_override.as_deref(), Some("from-file"));
    assert_eq!(c.config_file.as_deref(), Some(Path::new(&path)));
    assert_eq!(
        resolved.ignored_flags,
        [
            "--healthz-bind-address",
            "--proxy-mode",
            "--masquerade-all",
            "--sync-period",
            "--cluster-cidr"
        ]
    );
}

#[test]
fn some_flags_apply_on_top_of_the_config_file() {
    let (_dir, path) =
        config_file("hostnameOverride: from-file\nlogging:\n  verbosity: 2\n  format: text\n");
    let resolved = resolve(&[
        &format!("--config={path}"),
        "--hostname-override=Node-B",
        "--master=https://api:6443",
        "--v=5",
        "--manifests-dir=/m",
        "--service-proxy-name=sluice",
        "--cleanup",
    ]);
    let c = &resolved.config;
    assert_eq!(c.hostname_override.as_deref(), Some("node-b"));
    assert_eq!(c.client.master.as_deref(), Some("https://api:6443"));
    assert_eq!(c.verbosity, 5);
    assert_eq!(c.manifests_dir.as_deref(), Some(Path::new("/m")));
    assert_eq!(c.service_proxy_name.as_deref(), Some("sluice"));
    assert_eq!(resolved.action, Action::Cleanup);
    assert!(resolved.ignored_flags.is_empty());
}

#[test]
fn config_file_errors_surface() {
    let (_dir, path) = config_file("bogusField: 1\n");
    let err = flags(&[&format!("--config={path}")])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown field `bogusField`") && err.contains(&path),
        "{err}"
    );
    let err = flags(&["--config=/nonexistent/kp.yaml"])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read config file /nonexistent/kp.yaml"),
        "{err}"
    );
}

#[test]
fn write_config_to_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("written.yaml");
    let write_to = format!("--write-config-to={}", out.display());
    let args = [
        write_to.as_str(),
        "--proxy-mode=iptables",
        "--iptables-sync-period=1m30s",
        "--iptables-min-sync-period=250ms",
        "--cluster-cidr=10.0.0.0/8",
        "--masquerade-all",
        "--hostname-override=n1",
        "--cleanup",
    ];
    let resolved = resolve(&args);
    assert_eq!(resolved.action, Action::WriteConfig(out.clone()));
    crate::config_file::write(&out, &resolved.config).unwrap();
    let again = resolve(&[&format!("--config={}", out.display())]);
    let mut expected = resolved.config.clone();
    expected.config_file = Some(out.clone());
    assert_eq!(again.config, expected);
    assert_eq!(again.config.sync_period, Duration::from_secs(90));
    assert_eq!(again.config.min_sync_period, Duration::from_millis(250));
}

#[test]
fn explain_subcommand() {
    let resolved = resolve(&[
        "--manifests-dir=/m",
        "explain",
        "--src=10.0.0.5",
        "--dst",
        "[fd00::1]:443",
        "--proto=UDP",
        "--from-node=n2",
        "--output=json",
        "--kubeconfig=/kc",
    ]);
    let Action::Explain(args) = resolved.action else {
        panic!("not explain: {:?}", resolved.action);
    };
    assert_eq!(args.dst, "[fd00::1]:443".parse().unwrap());
    assert_eq!(args.proto, sluice_model::service::Protocol::Udp);
    assert_eq!(args.from_node.as_deref(), Some("n2"));
    assert_eq!(args.output, OutputFormat::Json);
    assert_eq!(
        resolved.config.manifests_dir.as_deref(),
        Some(Path::new("/m"))
    );
    assert_eq!(
        resolved.config.client.kubeconfig.as_deref(),
        Some(Path::new("/kc"))
    );
    let defaults = resolve(&["explain", "--src=1.2.3.4", "--dst=5.6.7.8:80"]);
    let Action::Explain(args) = defaults.action else {
        panic!()
    };
    assert_eq!(args.proto, sluice_model::service::Protocol::Tcp);
    assert_eq!(args.output, OutputFormat::Text);
    assert!(parse_error(&["explain", "--src=1.2.3.4"]).contains("--dst"));
}

#[test]
fn help_mentions_kube_proxy_defaults() {
    let help = parse_error(&["--help"]);
    for needle in [
        "--healthz-bind-address",
        "0.0.0.0:10256",
        "--proxy-mode",
        "[default: nftables]",
        "--manifests-dir",
    ] {
        assert!(help.contains(needle), "{needle} not in help");
    }
}

#[test]
fn service_cidrs_are_a_sluice_flag_that_applies_even_with_config() {
    let flags = Flags::parse_args([
        "sluice-proxy",
        "--service-cidr=10.96.0.0/12,fd00:10:96::/108",
    ])
    .unwrap();
    let c = flags.resolve().unwrap().config;
    let want: Vec<ipnet::IpNet> = vec![
        "10.96.0.0/12".parse().unwrap(),
        "fd00:10:96::/108".parse().unwrap(),
    ];
    assert_eq!(c.service_cidrs, want);
    assert!(Flags::parse_args(["sluice-proxy", "--service-cidr=nope"]).is_err());
}
