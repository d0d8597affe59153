//! How long netlink takes at scale (as root; `--ignored`, not a timed assertion — the
//! benchmark proper is `sluice-bench sync`): a cold load of 10,000 services × 3 endpoints in
//! one transaction, a one-service change, and reading the table back — with one shared
//! bucket map and with one bucket map per service.
//!
//! Measured on 6.18 (debug build, 2 shared cores): shared map 43 s cold and 34 s for a
//! one-service change, almost all kernel time — every commit that adds a jump validates the
//! table by walking every path from the base chains, and each of the 10,000 service chains
//! reaches the whole 30,000-element map (10k × 30k element visits). Per-service maps: 9.8 s
//! cold (8.2 s of it kernel: sets are found by name in a list), 38 ms for the change.

mod common;

use std::time::Instant;

use common::*;
use sluice_nft::*;
use sluice_testbed::{NetNs, require_root};

fn ip(i: u32, base: [u8; 2]) -> String {
    format!("{}.{}.{}.{}", base[0], base[1], (i >> 8) & 0xff, i & 0xff)
}

/// Moves each service's buckets into its own map `buckets-<service>` (offset 0).
fn per_service_maps(tx: &mut Transaction) {
    let mut out = Vec::new();
    for op in tx.ops.drain(..) {
        match op {
            Op::AddRule { chain, mut rule } if chain.starts_with("service-") => {
                let map = format!("buckets-{chain}");
                if let Some(Stmt::NumgenVmap { offset, map: m, .. }) = rule.stmts.first_mut() {
                    *offset = 0;
                    *m = map.clone();
                }
                out.push(Op::AddSet(set(&map, vec![KeyType::Bucket], true)));
                out.push(Op::AddRule { chain, rule });
            }
            Op::AddElements { set, mut elements } if set == "endpoint-buckets" => {
                let first = match elements[0].key[0] {
                    KeyValue::Bucket(b) => b,
                    _ => 0,
                };
                for e in &mut elements {
                    if let KeyValue::Bucket(b) = &mut e.key[0] {
                        *b -= first;
                    }
                }
                let target = match &elements[0].verdict {
                    Some(Verdict::Goto(c)) => c.clone(),
                    _ => String::new(),
                };
                let svc = target
                    .trim_start_matches("endpoint-")
                    .rsplit_once('-')
                    .unwrap()
                    .0
                    .to_owned();
                out.push(Op::AddElements {
                    set: format!("buckets-service-{svc}"),
                    elements,
                });
            }
            other => out.push(other),
        }
    }
    tx.ops = out;
}

#[test]
#[ignore = "scale measurement: run with --ignored --nocapture"]
fn ten_thousand_services_one_map_per_service() {
    require_root();
    let ns = NetNs::new("nft-scale2").unwrap();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    skeleton(&mut tx);
    for s in 0..10_000u32 {
        let eps: Vec<(String, u16)> = (0..3).map(|e| (ip(s * 3 + e, [10, 244]), 8080)).collect();
        let eps: Vec<(&str, u16)> = eps.iter().map(|(a, p)| (a.as_str(), *p)).collect();
        service(&mut tx, &format!("s{s}"), &ip(s, [10, 96]), 80, s * 3, &eps);
    }
    per_service_maps(&mut tx);
    let mut one = Transaction::new(Family::Ip, TABLE);
    one.push(Op::FlushSet("buckets-service-s5000".into()));
    service(
        &mut one,
        "s5000",
        &ip(5000, [10, 96]),
        80,
        0,
        &[("10.250.0.1", 80), ("10.250.0.2", 80), ("10.250.0.3", 80)],
    );
    one.ops
        .retain(|op| !matches!(op, Op::AddElements { set, .. } if set == "service-ips"));
    per_service_maps(&mut one);
    let (cold, changed) = ns
        .run(move || {
            let mut nl = Netlink::open().unwrap();
            let t = Instant::now();
            nl.apply(&tx).unwrap();
            let cold = t.elapsed();
            let t = Instant::now();
            nl.apply(&one).unwrap();
            (cold, t.elapsed())
        })
        .unwrap();
    println!("per-service maps: cold apply {cold:?}, one-service change {changed:?}");
}

#[test]
#[ignore = "scale measurement: run with --ignored --nocapture"]
fn ten_thousand_services() {
    require_root();
    let ns = NetNs::new("nft-scale").unwrap();
    let mut tx = Transaction::new(Family::Ip, TABLE);
    skeleton(&mut tx);
    let n = 10_000u32;
    for s in 0..n {
        let eps: Vec<(String, u16)> = (0..3).map(|e| (ip(s * 3 + e, [10, 244]), 8080)).collect();
        let eps: Vec<(&str, u16)> = eps.iter().map(|(a, p)| (a.as_str(), *p)).collect();
        service(&mut tx, &format!("s{s}"), &ip(s, [10, 96]), 80, s * 3, &eps);
    }
    let start = Instant::now();
    let nl = ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let t = Instant::now();
        nl.apply(&tx).unwrap();
        (nl, t.elapsed())
    });
    let (mut nl, applied) = nl.unwrap();
    println!(
        "{} ops, cold apply {applied:?} (incl. thread {:?})",
        tx.ops.len(),
        start.elapsed()
    );

    let mut one = Transaction::new(Family::Ip, TABLE);
    service(
        &mut one,
        "s5000",
        &ip(5000, [10, 96]),
        80,
        15000,
        &[("10.250.0.1", 80), ("10.250.0.2", 80), ("10.250.0.3", 80)],
    );
    one.ops
        .retain(|op| !matches!(op, Op::AddElements { set, .. } if set == "service-ips"));
    one.ops.insert(
        0,
        Op::DeleteElements {
            set: "endpoint-buckets".into(),
            elements: (15000..15003)
                .map(|b| Element::key(vec![KeyValue::Bucket(b)]))
                .collect(),
        },
    );
    let (changed, read) = ns
        .run(move || {
            let t = Instant::now();
            nl.apply(&one).unwrap();
            let changed = t.elapsed();
            let t = Instant::now();
            let state = nl.read_table(Family::Ip, TABLE).unwrap().unwrap();
            assert_eq!(state.chains.len(), 7 + 40_000);
            (changed, t.elapsed())
        })
        .unwrap();
    println!("one-service change {changed:?}, read back {read:?}");
}
