//! Above 1,000 Service ports per half, the rendering runs on two threads; its restore input
//! must be the one-thread rendering's, line for line, for full and partial syncs. A full
//! sync streams its input; what it programs must be what the buffered text programs.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use common::{fake_config, state_of};
use sluice_conntrack::NoConntrack;
use sluice_model::service::IpFamily;
use sluice_model::service::ServiceName;
use sluice_proxy_core::backend::Backend as _;
use sluice_proxy_iptables::{
    FakeIptables, Iptables as _, IptablesBackend, Scope, render, render_one_pass,
};

/// `n` Services of every kind the renderer treats differently: ClusterIP, NodePort with
/// external IPs, no endpoints, two ports, session affinity.
fn cluster(n: u32) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        let ip = format!("172.30.{}.{}", i / 250, i % 250 + 1);
        let (kind, extra) = match i % 4 {
            0 => ("ClusterIP", String::new()),
            1 => (
                "NodePort",
                format!(", externalIPs: [192.168.{}.{}]", i / 250, i % 250 + 1),
            ),
            2 => ("ClusterIP", ", sessionAffinity: ClientIP".to_owned()),
            _ => ("ClusterIP", String::new()),
        };
        let ports = match i % 7 {
            0 => "[{name: a, port: 80, protocol: TCP}, {name: b, port: 53, protocol: UDP}]",
            _ => "[{name: a, port: 80, protocol: TCP}]",
        };
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{namespace: ns{m}, name: s{i}}}\n\
             spec: {{type: {kind}, clusterIP: {ip}, ports: {ports}{extra}}}\n",
            m = i % 3
        );
        if i % 5 == 4 {
            continue;
        }
        let eps: Vec<String> = (0..1 + i % 3)
            .map(|e| format!("{{addresses: [10.{}.{}.{}]}}", e, i / 250, i % 250 + 1))
            .collect();
        let _ = write!(
            yaml,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{namespace: ns{m}, name: s{i}-1, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nendpoints: [{}]\n\
             ports: [{{name: a, port: 8080, protocol: TCP}}, {{name: b, port: 5353, protocol: UDP}}]\n",
            eps.join(", "),
            m = i % 3
        );
    }
    yaml
}

#[test]
fn two_threads_render_what_one_does() {
    let mut state = state_of(&cluster(2_600));
    let (snap, _) = state.sync();
    let cfg = fake_config();
    assert!(snap.service_ports().count() > 2_000);
    let changed: BTreeSet<ServiceName> = [
        ServiceName::new("ns0", "s3"),
        ServiceName::new("ns1", "s2400"),
    ]
    .into_iter()
    .collect();
    for scope in [Scope::All, Scope::Only(&changed)] {
        let stale = ["KUBE-SEP-STALE".to_owned()];
        let two = render(&cfg, &snap, scope, &stale);
        let one = render_one_pass(&cfg, &snap, scope, &stale);
        assert!(two.nat.len() > 10_000 || matches!(scope, Scope::Only(_)));
        assert_eq!(two.text(), one.text(), "{scope:?}");
        assert_eq!(two, one, "{scope:?}");
    }
}

/// A full sync writes its input chunk by chunk while the program reads it, in another
/// order than the buffered text (each chunk's chains declared where they start, the
/// top-level chains' rules last, nat before filter); the tables it leaves must be the
/// buffered text's, chain for chain and rule for rule, in the same order.
#[test]
fn a_streamed_full_sync_programs_what_the_buffered_text_does() {
    let mut state = state_of(&cluster(2_600));
    let (snap, changes) = state.sync();
    assert!(changes.full);
    let mut buffered = FakeIptables::new();
    let text = render(&fake_config(), &snap, Scope::All, &[]).text();
    buffered.restore(&text).unwrap();
    let mut backend = IptablesBackend::new([(FakeIptables::new(), fake_config())], NoConntrack);
    backend.apply(&snap, &changes).unwrap();
    let streamed = backend.iptables(IpFamily::V4).unwrap();
    let ours = |fake: &mut FakeIptables, table: &str| -> Vec<String> {
        (fake.save(table).unwrap().lines())
            .filter(|l| l.starts_with(":KUBE-") || l.starts_with("-A KUBE-"))
            .filter(|l| !l.contains("KUBE-PROXY-CANARY"))
            .map(str::to_owned)
            .collect()
    };
    for table in ["filter", "nat"] {
        let (want, got) = (ours(&mut buffered, table), ours(streamed, table));
        assert!(want.len() > 100, "{table}: {}", want.len());
        assert_eq!(got, want, "{table}");
    }
}
