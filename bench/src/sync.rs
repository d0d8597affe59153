//! `sluice-bench sync --backend fake`: the cost of the proxy's control plane
//! that every backend shares (API objects → change trackers → snapshot →
//! per-port render), at 100 and at 10,000 Services.
//!
//! The point is proportionality: one Service change must cost about the same
//! whatever the cluster size (ratio goal ≤ 2), because a sync only touches
//! the changed ports and the snapshot maps are shared copy-on-write. Peak RSS
//! (`VmHWM`) is read after the large run. Objects are built one at a time so
//! the benchmark's own garbage does not count as the model's memory.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_model::service::IpFamily;
use sluice_proxy::dataplane::Any;
use sluice_proxy_core::backend::{Backend as _, ProxyMode};
use sluice_proxy_core::{ProxyState, TrackerConfig};

/// Flags of `sluice-bench sync`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The backend to apply to: `fake` here, in this process; `nftables` runs the
    /// `sluice-bench nftables` measurement, inside network namespaces it creates.
    #[arg(long, default_value = "fake")]
    backend: ProxyMode,
    #[command(flatten)]
    scale: Scale,
    /// Single-Service changes measured per run (a few microseconds each: enough of them that
    /// the p50 is not the machine's noise).
    #[arg(long, default_value_t = 4000)]
    changes: u32,
}

/// The cluster sizes both control-plane benchmarks compare.
#[derive(clap::Args, Clone, Copy, Debug)]
pub(crate) struct Scale {
    /// Services in the large run.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) services: u32,
    /// Services in the small run.
    #[arg(long, default_value_t = 100)]
    pub(crate) small: u32,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 3)]
    pub(crate) endpoints: u32,
}

/// Timings of one run.
struct Run {
    services: u32,
    feed: Duration,
    first_sync: Duration,
    first_apply: Duration,
    change_p50: Duration,
    change_p99: Duration,
}

impl Args {
    /// Kernel backends build namespaces.
    pub(crate) fn needs_root(&self) -> bool {
        self.backend != ProxyMode::Fake
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.backend == ProxyMode::Nftables {
        return crate::nftables::run(&crate::nftables::Args::sized(args.scale));
    }
    // A kernel backend built here would program this process's own namespace: the host's.
    anyhow::ensure!(
        args.backend == ProxyMode::Fake,
        "--backend {} is not available to benchmark in this version",
        args.backend
    );
    let mut backend = Any::new(args.backend).context("backend")?;
    let small = measure(args, args.scale.small, &mut backend)?;
    let large = measure(args, args.scale.services, &mut backend)?;
    let peak = peak_rss_kib()?;
    print(args, &[small, large], peak);
    Ok(())
}

fn measure(args: &Args, services: u32, backend: &mut Any) -> anyhow::Result<Run> {
    let mut state = ProxyState::new(TrackerConfig::new(IpFamily::V4, "node-a"));
    let mut feed = Duration::ZERO;
    for i in 0..services {
        let (svc, slice) = (service(i, 80), slice(i, args.scale.endpoints, 0));
        let start = Instant::now();
        state.on_service(&svc)?;
        state.on_slice(&slice)?;
        feed += start.elapsed();
    }
    let start = Instant::now();
    let (snapshot, changes) = state.sync();
    let first_sync = start.elapsed();
    let start = Instant::now();
    backend.apply(&snapshot, &changes)?;
    let first_apply = start.elapsed();
    anyhow::ensure!(
        snapshot.len() == services as usize,
        "{} ports",
        snapshot.len()
    );
    drop(snapshot);
    let mut times = Vec::with_capacity(args.changes as usize);
    for k in 0..args.changes {
        let i = k.wrapping_mul(7919) % services;
        let start = Instant::now();
        match k % 2 {
            0 => state.on_slice(&slice(i, args.scale.endpoints, k + 1))?,
            // A port no earlier change used: every measured change is a real one.
            _ => state.on_service(&service(i, 1024 + (k % 60_000) as i32))?,
        };
        let (snapshot, changes) = state.sync();
        backend.apply(&snapshot, &changes)?;
        drop(snapshot);
        times.push(start.elapsed());
        anyhow::ensure!(
            changes.ports.len() == 1,
            "one change touched {:?}",
            changes.ports
        );
    }
    times.sort();
    Ok(Run {
        services,
        feed,
        first_sync,
        first_apply,
        change_p50: times[times.len() / 2],
        change_p99: times[times.len() * 99 / 100],
    })
}

fn meta(name: String, labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some("bench".to_owned()),
        labels,
        ..ObjectMeta::default()
    }
}

/// `bench/svc-<i>` on ClusterIP 10.96.0.0 + i, port `http`.
pub(crate) fn service(i: u32, port: i32) -> Service {
    let ip = Ipv4Addr::from(0x0a60_0000 + i).to_string();
    Service {
        metadata: meta(format!("svc-{i}"), None),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port,
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The slice of `svc-<i>`: `n` ready endpoints from 10.128.0.0, shifted by
/// `generation` so each generation differs.
pub(crate) fn slice(i: u32, n: u32, generation: u32) -> EndpointSlice {
    slice_of(i, (0..n).map(|j| endpoint_ip(i, n, j + generation)))
}

/// Endpoint `j` of `svc-<i>` when each Service has `n`: 10.128.0.0 + i·n + j.
pub(crate) fn endpoint_ip(i: u32, n: u32, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000 + i * n + j)
}

/// The slice of `svc-<i>` with one ready endpoint (target port 8080) per address.
pub(crate) fn slice_of(i: u32, addresses: impl Iterator<Item = Ipv4Addr>) -> EndpointSlice {
    let endpoints = addresses
        .enumerate()
        .map(|(j, ip)| Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            node_name: Some(format!("node-{}", j % 3)),
            ..Endpoint::default()
        })
        .collect();
    let labels = BTreeMap::from([("kubernetes.io/service-name".to_owned(), format!("svc-{i}"))]);
    EndpointSlice {
        metadata: meta(format!("svc-{i}-abcde"), Some(labels)),
        address_type: "IPv4".to_owned(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("http".to_owned()),
            port: Some(8080),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }]),
    }
}

/// `VmHWM` of this process, in KiB.
pub(crate) fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = (status.lines().find(|l| l.starts_with("VmHWM:"))).context("no VmHWM")?;
    let kib = line.split_whitespace().nth(1).context("VmHWM value")?;
    Ok(kib.parse()?)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn print(args: &Args, runs: &[Run], peak_kib: u64) {
    println!(
        "sluice-bench sync --backend {}: {} endpoints per Service, {} single-Service changes per run (half endpoints, half Service spec)\n",
        args.backend, args.scale.endpoints, args.changes
    );
    println!(
        "{:>9} {:>14} {:>15} {:>16} {:>15} {:>15}",
        "services", "feed ms", "first sync ms", "first apply ms", "change p50 ms", "change p99 ms"
    );
    for r in runs {
        println!(
            "{:>9} {:>14} {:>15} {:>16} {:>15} {:>15}",
            r.services,
            ms(r.feed),
            ms(r.first_sync),
            ms(r.first_apply),
            ms(r.change_p50),
            ms(r.change_p99)
        );
    }
    if let [small, large] = runs {
        let ratio = large.change_p50.as_secs_f64() / small.change_p50.as_secs_f64().max(1e-9);
        println!(
            "\none change at {} vs {} Services (p50): {ratio:.2}x (goal <= 2)",
            large.services, small.services
        );
    }
    println!(
        "peak RSS (VmHWM) of this process: {:.1} MiB (goal <= 64 MiB)",
        peak_kib as f64 / 1024.0
    );
}
