//! Helpers shared by the overlay's integration tests: test node `i` has subnet
//! `10.244.i.0/24`, underlay address `192.168.0.(10+i)` (the test bed's plan) and VTEP MAC
//! `0a:58:0a:f4:i:01`.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

pub mod etcd_lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sluice_overlay::kernel::{Kernel, VxlanSpec};
use sluice_overlay::reconcile::{Outcome, reconcile};
use sluice_overlay::{Lease, Mac};

/// Node `i`'s VTEP MAC.
pub fn mac(i: u8) -> Mac {
    Mac([0x0a, 0x58, 0x0a, 0xf4, i, 0x01])
}

/// Node `i`'s VXLAN lease, written exactly as flannel writes it to etcd.
pub fn lease(i: u8) -> Lease {
    lease_with_mac(i, &mac(i).to_string())
}

/// Node `i`'s VXLAN lease with another VTEP MAC.
pub fn lease_with_mac(i: u8, mac: &str) -> Lease {
    let value = format!(
        r#"{{"PublicIP":"192.168.0.{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#,
        10 + i
    );
    Lease::from_etcd(&format!("10.244.{i}.0-24"), &value).expect("test lease parses")
}

/// Node `i`'s `flannel.1` over `eth0`.
pub fn spec(i: u8) -> VxlanSpec {
    VxlanSpec {
        name: "flannel.1".into(),
        vni: 1,
        local: IpAddr::from([192, 168, 0, 10 + i]),
        underlay: "eth0".into(),
        port: 8472,
        mtu: 1450,
        mac: mac(i),
        address: format!("10.244.{i}.0/32").parse().expect("valid"),
    }
}

/// The pod network of every test.
pub fn networks() -> Vec<IpNet> {
    vec!["10.244.0.0/16".parse().expect("valid")]
}

/// One reconcile of node `i`'s device towards `desired`.
pub async fn sync<K: Kernel>(k: &mut K, i: u8, desired: &sluice_overlay::Desired) -> Outcome {
    reconcile(k, std::slice::from_ref(&spec(i)), &networks(), desired)
        .await
        .expect("reconcile")
}

/// Polls `check` every 50 ms until it holds, failing the test after `limit`.
pub fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}
