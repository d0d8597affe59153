//! What a sync costs against the real kernel maps (no programs attached): a cold full sync
//! of N Services × 3 endpoints, and the p50 of a one-Service endpoint change, for N = 100
//! and 10,000. Ignored by default (it measures, it asserts only correctness); run with
//! `cargo test --release -p sluice-proxy-ebpf --test sync_cost -- --ignored --nocapture`.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::Bpffs;
use sluice_model::service::Endpoint;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_core::fixture::{self, port_name, svc};
use sluice_proxy_ebpf::diff::Op;
use sluice_proxy_ebpf::kernel::{KernelMaps, apply_ops, dump_maps};
use sluice_proxy_ebpf::{EbpfBackend, EbpfError, MapIo, MapSet, RenderConfig};

/// The kernel maps without attaching anything.
struct MapsOnly(aya::Ebpf);

impl MapIo for MapsOnly {
    fn dump(&mut self) -> Result<MapSet, EbpfError> {
        dump_maps(&mut self.0)
    }
    fn apply(&mut self, ops: &[Op]) -> Result<(), EbpfError> {
        apply_ops(&mut self.0, ops)
    }
    fn cleanup(&mut self) -> Result<(), EbpfError> {
        Ok(())
    }
}

fn ep(i: usize, j: usize) -> Endpoint {
    let ip: IpAddr = format!("10.{}.{}.{}", 100 + j, i / 250, i % 250 + 1)
        .parse()
        .unwrap();
    Endpoint {
        node_name: Some("node-a".into()),
        ..Endpoint::new(ip, 8080)
    }
}

fn measure(n: usize) -> anyhow::Result<(Duration, Duration)> {
    let bpffs = Bpffs::new()?;
    let ebpf = KernelMaps::load_object(&bpffs.path().join("b"))?;
    let mut backend = EbpfBackend::new(MapsOnly(ebpf), RenderConfig::default());
    let mut services: Vec<_> = (0..n)
        .map(|i| {
            let mut port = svc(
                &format!("s{i}"),
                &format!("172.30.{}.{}", i / 250, i % 250 + 1),
            );
            port.name = port_name(&format!("s{i}"));
            (port, (0..3).map(|j| ep(i, j)).collect::<Vec<_>>())
        })
        .collect();
    let mut state = fixture::state("node-a", None);
    fixture::apply(&mut state, services.clone());
    let (snap, changes) = state.sync();
    let start = Instant::now();
    backend.apply(&snap, &changes)?;
    let cold = start.elapsed();
    drop(snap);
    let mut one = Vec::new();
    for round in 0..41 {
        let i = (round * 7919) % n;
        services[i].1[0] = ep(i, 3 + round % 2);
        fixture::apply(&mut state, vec![services[i].clone()]);
        let (snap, changes) = state.sync();
        let start = Instant::now();
        backend.apply(&snap, &changes)?;
        one.push(start.elapsed());
    }
    one.sort();
    let programmed = backend.programmed();
    assert_eq!(
        backend.io().dump()?,
        programmed,
        "the maps hold exactly the render"
    );
    Ok((cold, one[one.len() / 2]))
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn sync_cost_at_100_and_10000_services() -> anyhow::Result<()> {
    if KernelMaps::object().is_err() {
        eprintln!("skipped: the eBPF programs are not built in");
        return Ok(());
    }
    let (cold_small, one_small) = measure(100)?;
    let (cold_big, one_big) = measure(10_000)?;
    println!("services  cold full sync  one-Service change (p50 of 41)");
    println!("100       {cold_small:>12.2?}  {one_small:>10.2?}");
    println!("10000     {cold_big:>12.2?}  {one_big:>10.2?}");
    println!(
        "one-Service change 10k/100: {:.2}",
        one_big.as_secs_f64() / one_small.as_secs_f64()
    );
    Ok(())
}
