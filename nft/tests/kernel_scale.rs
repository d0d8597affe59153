//! How long netlink takes at scale (as root; `--ignored`, not a timed assertion — the
//! benchmark proper is `sluice-bench nftables`): a cold load of 10,000 services × 3
//! endpoints in the proxy's layout in one transaction, a one-service change, and reading
//! the table back.
//!
//! Earlier layouts measured here on 6.18 (debug build, 2 shared cores), and why they were
//! dropped: one shared endpoint-bucket map, 43 s cold and 34 s per change — every commit
//! that adds a jump validates the table by walking every path from the base chains, and
//! each of the 10,000 service chains reached the whole 30,000-element map; one bucket map
//! per service, 9.8 s cold (sets are found by name in a list), 38 ms per change.

mod common;

use std::time::Instant;

use common::*;
use sluice_nft::*;
use sluice_testbed::{NetNs, require_root};

fn ip(i: u32, base: [u8; 2]) -> String {
    format!("{}.{}.{}.{}", base[0], base[1], (i >> 8) & 0xff, i & 0xff)
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
        service(&mut tx, &format!("s{s}"), &ip(s, [10, 96]), 80, &eps);
    }
    let mut one = Transaction::new(Family::Ip, TABLE);
    service(
        &mut one,
        "s5000",
        &ip(5000, [10, 96]),
        80,
        &[("10.250.0.1", 80), ("10.250.0.2", 80), ("10.250.0.3", 80)],
    );
    one.ops
        .retain(|op| !matches!(op, Op::AddElements { set, .. } if set == "service-ips"));
    let ops = tx.ops.len();
    let (cold, changed, read) = ns
        .run(move || {
            let mut nl = Netlink::open().unwrap();
            let t = Instant::now();
            nl.apply(&tx).unwrap();
            let cold = t.elapsed();
            let t = Instant::now();
            nl.apply(&one).unwrap();
            let changed = t.elapsed();
            let t = Instant::now();
            let state = nl.read_table(Family::Ip, TABLE).unwrap().unwrap();
            assert_eq!(state.chains.len(), 7 + n as usize);
            (cold, changed, t.elapsed())
        })
        .unwrap();
    println!("{ops} ops: cold apply {cold:?}, one-service change {changed:?}, read back {read:?}");
}
