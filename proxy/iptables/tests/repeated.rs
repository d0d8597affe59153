//! kube-proxy's TestSyncProxyRulesRepeated through the backend and the fake iptables:
//! a full sync, then partial syncs whose exact restore input must be upstream's (only the
//! changed Services' chains, `-X` for the chains they dropped), then a partial restore
//! that fails and the full sync that repairs it.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Service;
use sluice_conntrack::NoConntrack;
use sluice_model::service::IpFamily;
use sluice_proxy_core::ProxyState;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_iptables::{FakeIptables, Iptables, IptablesBackend};

type Fake = IptablesBackend<FakeIptables, NoConntrack>;

fn service(ns: &str, name: &str, ip: &str, port_name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{namespace: {ns}, name: {name}}}\n\
         spec: {{type: ClusterIP, clusterIP: {ip}, ports: [{{name: {port_name}, port: {port}, protocol: TCP}}]}}\n"
    )
}

fn slice(ns: &str, name: &str, ips: &[&str], port_name: &str, port: u16) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [{ip}]}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{namespace: {ns}, name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nendpoints: [{}]\nports: [{{name: {port_name}, port: {port}, protocol: TCP}}]\n",
        eps.join(", ")
    )
}

/// Syncs as the runner does and returns the restore input.
fn sync(backend: &mut Fake, state: &mut ProxyState) -> Result<String, String> {
    let (snap, changes) = state.sync();
    let result = backend.apply(&snap, &changes).map_err(|e| e.to_string());
    let fake = backend.iptables(IpFamily::V4).unwrap();
    result.map(|()| fake.last_restore().to_owned())
}

fn expected(step: usize) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/upstream/repeated-{step}.rules",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The nat rules in our chains, as the kernel (the fake) holds them.
fn nat_rules(backend: &mut Fake) -> usize {
    let fake = backend.iptables(IpFamily::V4).unwrap();
    let dump = fake.dump();
    let nat = dump.table("nat").unwrap();
    nat.chains
        .iter()
        .filter(|c| c.policy.is_none())
        .map(|c| c.rules.len())
        .sum()
}

fn gauge(backend: &Fake, which: &str, table: &str) -> i64 {
    let m = backend.metrics();
    let labels = vec![
        ("table", table.to_owned()),
        ("ip_family", "IPv4".to_owned()),
    ];
    match which {
        "total" => m.total.get_or_create(&labels).get(),
        _ => m.last.get_or_create(&labels).get(),
    }
}

#[test]
fn sync_proxy_rules_repeated() {
    let mut backend = IptablesBackend::new([(FakeIptables::new(), fake_config())], NoConntrack);
    let mut state = state();
    record(
        &mut state,
        &service("ns1", "svc1", "172.30.0.41", "p80", 80),
    );
    record(
        &mut state,
        &service("ns2", "svc2", "172.30.0.42", "p8080", 8080),
    );
    record(&mut state, &slice("ns1", "svc1", &["10.0.1.1"], "p80", 80));
    record(
        &mut state,
        &slice("ns2", "svc2", &["10.0.2.1"], "p8080", 8080),
    );
    let check = |step: usize, backend: &mut Fake, input: String| {
        assert_rules_eq(&expected(step), &input);
        assert_eq!(
            gauge(backend, "total", "nat") as usize,
            nat_rules(backend),
            "step {step}"
        );
    };
    let input = sync(&mut backend, &mut state).unwrap();
    check(0, &mut backend, input);

    // 1: a new Service and its endpoints: only its chains are written.
    record(
        &mut state,
        &service("ns3", "svc3", "172.30.0.43", "p80", 80),
    );
    record(&mut state, &slice("ns3", "svc3", &["10.0.3.1"], "p80", 80));
    let input = sync(&mut backend, &mut state).unwrap();
    check(1, &mut backend, input);

    // 2: svc2 deleted (its slice stays): its chains are flushed and deleted.
    let svc2: Service =
        serde_yaml::from_str(&service("ns2", "svc2", "172.30.0.42", "p8080", 8080)).unwrap();
    state.on_service_deleted(&svc2).unwrap();
    let input = sync(&mut backend, &mut state).unwrap();
    check(2, &mut backend, input);
    assert_eq!(gauge(&backend, "last", "nat"), 7);

    // 3: svc4 without endpoints: a filter REJECT only.
    record(
        &mut state,
        &service("ns4", "svc4", "172.30.0.44", "p80", 80),
    );
    let input = sync(&mut backend, &mut state).unwrap();
    check(3, &mut backend, input);

    // 4: svc4's endpoints arrive.
    record(&mut state, &slice("ns4", "svc4", &["10.0.4.1"], "p80", 80));
    let input = sync(&mut backend, &mut state).unwrap();
    check(4, &mut backend, input);

    // 5: svc3's endpoint moves: the old endpoint chain goes.
    record(&mut state, &slice("ns3", "svc3", &["10.0.3.2"], "p80", 80));
    let input = sync(&mut backend, &mut state).unwrap();
    check(5, &mut backend, input);

    // 6: a second endpoint for svc3.
    record(
        &mut state,
        &slice("ns3", "svc3", &["10.0.3.2", "10.0.3.3"], "p80", 80),
    );
    let input = sync(&mut backend, &mut state).unwrap();
    check(6, &mut backend, input);

    // 7: nothing changed: no per-Service chain is written.
    let input = sync(&mut backend, &mut state).unwrap();
    check(7, &mut backend, input);

    // 8: a rule nobody should have written jumps from svc3's chain to svc4's endpoint; the
    // partial sync deleting svc4 cannot delete that endpoint's chain and fails...
    let fake = backend.iptables(IpFamily::V4).unwrap();
    fake.run(&[
        "-A",
        "KUBE-SVC-X27LE4BHSL4DOUIK",
        "-t",
        "nat",
        "-j",
        "KUBE-SEP-AYCN5HPXMIRJNJXU",
    ])
    .unwrap();
    let svc4: Service =
        serde_yaml::from_str(&service("ns4", "svc4", "172.30.0.44", "p80", 80)).unwrap();
    state.on_service_deleted(&svc4).unwrap();
    let err = sync(&mut backend, &mut state).unwrap_err();
    assert!(err.contains("iptables apply failed"), "{err}");
    let fake = backend.iptables(IpFamily::V4).unwrap();
    assert!(fake.chain("nat", "KUBE-SEP-AYCN5HPXMIRJNJXU").is_some());
    let failures = |b: &Fake, which: &str| {
        let labels = vec![("ip_family", "IPv4".to_owned())];
        match which {
            "partial" => b.metrics().partial_failures.get_or_create(&labels).get(),
            _ => b.metrics().restore_failures.get_or_create(&labels).get(),
        }
    };
    assert_eq!(
        (failures(&backend, "partial"), failures(&backend, "all")),
        (1, 1)
    );

    // ...and the next sync is a full one, which rewrites svc3's chain and deletes svc4's.
    sync(&mut backend, &mut state).unwrap();
    let fake = backend.iptables(IpFamily::V4).unwrap();
    assert!(fake.chain("nat", "KUBE-SEP-AYCN5HPXMIRJNJXU").is_none());
    assert!(fake.chain("nat", "KUBE-SVC-4SW47YFZTEDKD3PK").is_none());
    let ours = fake.dump().to_string();
    let want = expected(8);
    let svc3 = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("-A KUBE-SVC-X27LE4BHSL4DOUIK"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(svc3(&ours), svc3(&want));
    assert_eq!(
        gauge(&backend, "total", "nat") as usize,
        nat_rules(&mut backend)
    );
    assert_eq!(failures(&backend, "partial"), 1);
}

#[test]
fn a_full_sync_adopts_what_is_programmed_and_repairs_only_what_drifted() {
    let objects = include_str!("upstream/overall.yaml");
    let mut backend = IptablesBackend::new([(FakeIptables::new(), fake_config())], NoConntrack);
    let mut state = state_of(objects);
    sync(&mut backend, &mut state).unwrap();
    // A restarted proxy (a new backend) over the same tables: nothing per-Service rewritten.
    let fake = backend.iptables(IpFamily::V4).unwrap().clone();
    let mut restarted = IptablesBackend::new([(fake, fake_config())], NoConntrack);
    let input = sync(&mut restarted, &mut state_of(objects)).unwrap();
    assert!(
        !input.contains(":KUBE-SVC-") && !input.contains(":KUBE-SEP-"),
        "{input}"
    );
    // A flushed endpoint chain is rewritten by the next full sync, alone; a chain of ours
    // that nothing uses (a Service deleted while the proxy was down) is deleted.
    let fake = restarted.iptables(IpFamily::V4).unwrap();
    fake.run(&["-F", "KUBE-SEP-SXIVWICOYRO3J4NJ", "-t", "nat"])
        .unwrap();
    assert!(fake.run(&["-N", "KUBE-SEP-GONE", "-t", "nat"]).unwrap());
    state.request_full_sync();
    let input = sync(&mut restarted, &mut state).unwrap();
    assert!(input.contains("\n-X KUBE-SEP-GONE\n"), "{input}");
    assert_eq!(input.matches("\n-X ").count(), 1, "{input}");
    let declared: Vec<&str> = input
        .lines()
        .filter(|l| l.starts_with(":KUBE-SEP") || l.starts_with(":KUBE-SVC"))
        .collect();
    // (The stale chain is declared to flush it before its deletion.)
    assert_eq!(
        declared,
        [
            ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]",
            ":KUBE-SEP-GONE - [0:0]"
        ]
    );
    let fake = restarted.iptables(IpFamily::V4).unwrap();
    assert_eq!(
        fake.chain("nat", "KUBE-SEP-SXIVWICOYRO3J4NJ")
            .unwrap()
            .rules
            .len(),
        2
    );
}

#[test]
fn jump_rules_and_canaries_are_ensured_on_full_syncs_and_cleanup_removes_them() {
    let mut backend = IptablesBackend::new([(FakeIptables::new(), fake_config())], NoConntrack);
    let mut state = state_of(include_str!("upstream/overall.yaml"));
    sync(&mut backend, &mut state).unwrap();
    let fake = backend.iptables(IpFamily::V4).unwrap();
    let input = fake.chain("filter", "INPUT").unwrap().rules.clone();
    // Prepended in kube-proxy's order: the last ensured comes first.
    assert!(input[0].ends_with("-j KUBE-FIREWALL"), "{input:?}");
    assert!(
        input[1].contains("kubernetes load balancer firewall"),
        "{input:?}"
    );
    assert_eq!(fake.chain("nat", "PREROUTING").unwrap().rules.len(), 1);
    for table in ["mangle", "nat", "filter"] {
        assert!(fake.chain(table, "KUBE-PROXY-CANARY").is_some());
    }
    // All of it came with the one restore: no `iptables -N`/`-I` process per rule.
    assert!(fake.runs.is_empty(), "{:?}", fake.runs);
    assert_eq!(fake.restores.len(), 1);
    assert!(
        fake.last_restore()
            .starts_with("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n")
    );
    // A second full sync adds no duplicate and nothing outside our chains (it reads the
    // tables back instead of asking `-C` fourteen times).
    state.request_full_sync();
    sync(&mut backend, &mut state).unwrap();
    let fake = backend.iptables(IpFamily::V4).unwrap();
    assert!(fake.runs.is_empty(), "{:?}", fake.runs);
    let again = fake.last_restore();
    assert!(
        !again.contains("-I ") && !again.contains("*mangle") && !again.contains("CANARY"),
        "{again}"
    );
    assert_eq!(
        fake.chain("filter", "INPUT").unwrap().rules.len(),
        input.len()
    );

    // The canary gone: the next tick asks for a full sync.
    assert!(!backend.tick().unwrap().full_sync);
    let fake = backend.iptables(IpFamily::V4).unwrap();
    fake.run(&["-X", "KUBE-PROXY-CANARY", "-t", "mangle"])
        .unwrap();
    assert!(backend.tick().unwrap().full_sync);

    backend.cleanup().unwrap();
    let fake = backend.iptables(IpFamily::V4).unwrap();
    let dump = fake.dump();
    for table in &dump.tables {
        for chain in &table.chains {
            let ours = chain.name.starts_with("KUBE-") && chain.name != "KUBE-FIREWALL";
            assert!(!ours, "{} {} left", table.name, chain.name);
            for rule in &chain.rules {
                assert!(rule.contains("KUBE-FIREWALL"), "{rule} left");
            }
        }
    }
}
