//! kube-proxy's own rule-level tests, reproduced: the same Services, EndpointSlices and
//! fake-proxier settings must give upstream's expected ruleset line for line.

mod common;

use common::*;
use sluice_proxy_iptables::{Scope, render};

fn full_sync(objects: &str) -> String {
    let (snap, _) = state_of(objects).sync();
    render(&fake_config(), &snap, Scope::All, &[]).text()
}

#[test]
fn overall_iptables_rules() {
    let ours = full_sync(include_str!("upstream/overall.yaml"));
    assert_rules_eq(include_str!("upstream/overall.rules"), &ours);
}

#[test]
fn bad_ips() {
    let ours = full_sync(include_str!("upstream/bad_ips.yaml"));
    assert_rules_eq(include_str!("upstream/bad_ips.rules"), &ours);
}
