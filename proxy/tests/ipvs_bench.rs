//! IPVS mode against iptables mode in the same User-Mode Linux guest: a full sync and a
//! one-Service change at 1,000 and 10,000 Services (one endpoint each), through the real
//! backends (IPVS netlink + ipset + iptables-legacy; iptables-legacy-restore). Absolute times
//! inside UML are not comparable with the host's; the ratios are what the README reports.
//! Ignored in the suite (minutes of guest time); run with
//! `cargo test -p sluice-proxy --test ipvs_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use sluice_proxy::dataplane::Any;
use sluice_proxy_core::backend::{Backend, BackendOptions, LocalDetect, ProxyMode};
use sluice_proxy_core::fixture::{self, ep, svc};
use sluice_testbed::uml::{self, Uml};
use sluice_testbed::{NetNs, require_root};

fn options() -> BackendOptions {
    BackendOptions {
        local: LocalDetect::Cidrs(vec!["10.244.0.0/16".parse().unwrap()]),
        node_ips: vec!["192.168.0.11".parse().unwrap()],
        nodeport_addresses: Some(vec!["192.168.0.11".parse().unwrap()]),
        iptables_variant: Some("legacy".into()),
        ..BackendOptions::default()
    }
}

fn ip(i: usize, base: u8) -> String {
    format!("10.{base}.{}.{}", i / 250, i % 250 + 1)
}

/// (full sync, one-Service change) for `mode` at `n` Services, in a fresh namespace.
fn measure(mode: ProxyMode, n: usize) -> (Duration, Duration) {
    let ns = NetNs::new("bench").unwrap();
    ns.run(|| {
        let mut state = fixture::state("node-1", None);
        let services = (0..n)
            .map(|i| {
                (
                    svc(&format!("s{i}"), &ip(i, 96)),
                    vec![ep(&ip(i, 244), "node-2")],
                )
            })
            .collect();
        fixture::apply(&mut state, services);
        let mut backend = Any::build(mode, &options()).unwrap();
        backend.init().unwrap();
        let (snap, mut changes) = state.sync();
        changes.full = true;
        let start = Instant::now();
        backend.apply(&snap, &changes).unwrap();
        let full = start.elapsed();
        drop(snap);
        fixture::apply(
            &mut state,
            vec![(
                svc("s7", &ip(7, 96)),
                vec![ep(&ip(7, 244), "node-2"), ep("10.250.0.1", "node-2")],
            )],
        );
        let (snap, changes) = state.sync();
        let start = Instant::now();
        backend.apply(&snap, &changes).unwrap();
        (full, start.elapsed())
    })
    .unwrap()
}

#[test]
#[ignore = "minutes of guest time; run by hand for the README's figures"]
fn ipvs_and_iptables_sync_costs_in_one_guest() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .mem("1024M")
            .timeout(Duration::from_secs(900))
            .run_test("ipvs_and_iptables_sync_costs_in_one_guest")
            .unwrap();
        println!("{}", out.output);
        out.assert_success();
        return;
    }
    for n in [1_000, 10_000] {
        let ipvs = measure(ProxyMode::Ipvs, n);
        let ipt = measure(ProxyMode::Iptables, n);
        println!(
            "{n} Services: full sync ipvs {:?} iptables {:?} (ipvs/iptables {:.2}); \
             one-Service change ipvs {:?} iptables {:?} (ipvs/iptables {:.2})",
            ipvs.0,
            ipt.0,
            ipvs.0.as_secs_f64() / ipt.0.as_secs_f64(),
            ipvs.1,
            ipt.1,
            ipvs.1.as_secs_f64() / ipt.1.as_secs_f64(),
        );
    }
}
