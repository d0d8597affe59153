//! Reproducing kube-proxy's proxier tests: its fake proxier's settings, its fixtures as
//! Kubernetes objects, and its canonical sort of restore input (`sortIPTablesRules`), so
//! upstream's expected rulesets are compared with ours line for line.
#![allow(dead_code, reason = "each test binary uses a part of the harness")]

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use sluice_model::service::IpFamily;
use sluice_proxy_core::ProxyState;
use sluice_proxy_core::backend::LocalDetect;
use sluice_proxy_core::config::{NodeTopology, TrackerConfig};
use sluice_proxy_iptables::IptConfig;
use sluice_proxy_iptables::dump::{Chain, Dump};

/// `NewFakeProxier`'s node.
pub(crate) const TEST_NODE: &str = "test-node";

/// `NewFakeProxier`'s settings: mark `0x4000`, pods 10.0.0.0/8, node IP 192.168.0.2,
/// localhost NodePorts, both nfacct counters, no `--random-fully`.
pub(crate) fn fake_config() -> IptConfig {
    IptConfig {
        masquerade_mark: "0x4000".into(),
        local: LocalDetect::Cidrs(vec!["10.0.0.0/8".parse().unwrap()]),
        localhost_nodeports: true,
        node_ip: Some("192.168.0.2".parse::<IpAddr>().unwrap()),
        random_fully: false,
        nfacct: true,
        ..IptConfig::new(IpFamily::V4)
    }
}

/// An empty IPv4 state on [`TEST_NODE`].
pub(crate) fn state() -> ProxyState {
    let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, TEST_NODE));
    state.set_node(NodeTopology {
        name: TEST_NODE.into(),
        ..NodeTopology::default()
    });
    state
}

/// Records every Service and EndpointSlice of the YAML stream `yaml`.
pub(crate) fn record(state: &mut ProxyState, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).unwrap();
        match value["kind"].as_str() {
            Some("Service") => {
                let svc: Service = serde_yaml::from_value(value).unwrap();
                state.on_service(&svc).unwrap();
            }
            Some("EndpointSlice") => {
                let slice: EndpointSlice = serde_yaml::from_value(value).unwrap();
                state.on_slice(&slice).unwrap();
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
}

/// The state holding the objects of `yaml`.
pub(crate) fn state_of(yaml: &str) -> ProxyState {
    let mut s = state();
    record(&mut s, yaml);
    s
}

fn service_of(comment: &str) -> &str {
    comment.split([' ', ':']).next().unwrap_or(comment)
}

fn comment(rule: &str) -> Option<&str> {
    let rest = rule.split_once("--comment ")?.1;
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(' ').next(),
    }
}

/// `less` of kube-proxy's `orderByCommentServiceName`: rules without a comment never sort
/// before anything.
fn by_service(a: &str, b: &str) -> std::cmp::Ordering {
    match (comment(a), comment(b)) {
        (Some(x), Some(y)) => service_of(x).cmp(service_of(y)),
        _ => std::cmp::Ordering::Equal,
    }
}

fn chain_rank(name: &str) -> (u8, &str) {
    match name {
        "KUBE-NODEPORTS" => (0, ""),
        "KUBE-SERVICES" => (1, ""),
        n if n.starts_with("KUBE-") => (2, n),
        n => (3, n),
    }
}

/// kube-proxy's `sortIPTablesRules`: tables and chains in canonical order, KUBE-NODEPORTS
/// and KUBE-SERVICES rules stably sorted by Service (nat KUBE-SERVICES' nodeports rule last).
///
/// What kube-proxy writes with separate `iptables` commands and Sluice puts into a full
/// sync's restore when the kernel lacks it — the jumps from the built-in chains (`-I`) and
/// the canary chains (with the `mangle` section that holds only a canary) — is left out, so
/// the rest compares with upstream's restore input; `repeated.rs` checks those parts.
pub(crate) fn sort_like_upstream(text: &str) -> String {
    let mut dump = Dump::parse(text.trim_start()).unwrap();
    for table in &mut dump.tables {
        table.inserts.clear();
        table.chains.retain(|c| c.name != "KUBE-PROXY-CANARY");
    }
    dump.tables
        .retain(|t| t.name != "mangle" || !t.chains.is_empty());
    dump.tables.sort_by(|a, b| a.name.cmp(&b.name));
    for table in &mut dump.tables {
        table
            .chains
            .sort_by(|a, b| chain_rank(&a.name).cmp(&chain_rank(&b.name)));
        let nat = table.name == "nat";
        for chain in &mut table.chains {
            sort_chain(chain, nat);
        }
    }
    dump.to_string()
}

fn sort_chain(chain: &mut Chain, nat: bool) {
    match chain.name.as_str() {
        "KUBE-NODEPORTS" => chain.rules.sort_by(|a, b| by_service(a, b)),
        "KUBE-SERVICES" if nat => chain.rules.sort_by(|a, b| {
            let last = |r: &str| comment(r).is_some_and(|c| c.contains("must be the last rule"));
            last(a).cmp(&last(b)).then_with(|| by_service(a, b))
        }),
        "KUBE-SERVICES" => chain.rules.sort_by(|a, b| by_service(a, b)),
        _ => {}
    }
}

/// Fails with a line diff when `ours` (restore input, sorted here) differs from upstream's
/// `expected` (already sorted).
pub(crate) fn assert_rules_eq(expected: &str, ours: &str) {
    let ours = sort_like_upstream(ours);
    let expected = expected.trim_start();
    if ours != expected {
        let mut diff = String::new();
        for d in diff_lines(expected, &ours) {
            diff.push_str(&d);
            diff.push('\n');
        }
        panic!("rules differ from upstream's:\n{diff}\nours:\n{ours}");
    }
}

fn diff_lines(expected: &str, ours: &str) -> Vec<String> {
    let e: Vec<&str> = expected.lines().collect();
    let o: Vec<&str> = ours.lines().collect();
    let mut out = Vec::new();
    for l in &e {
        if !o.contains(l) {
            out.push(format!("- {l}"));
        }
    }
    for l in &o {
        if !e.contains(l) {
            out.push(format!("+ {l}"));
        }
    }
    if out.is_empty() {
        out.push("(same lines, different order)".into());
    }
    out
}
