//! `sluice-bench overlay`: pod→pod TCP throughput across two test-bed nodes over
//! (1) the plain underlay (node→node, the ceiling), (2) a VXLAN programmed by hand exactly as
//! flannel programs it, (3) Sluice's VXLAN, (4) Sluice's host-gw — each in a fresh cluster,
//! one after the other in one run, printed with ratios.

use std::net::IpAddr;

use anyhow::Context;
use sluice_model::net_conf::BackendType;
use sluice_overlay::kernel::VxlanSpec;
use sluice_overlay::netlink_kernel::NetlinkKernel;
use sluice_overlay::reconcile::reconcile;
use sluice_overlay::{Lease, Params, compute};
use sluice_testbed::cluster::{Cluster, Node, POD_IF, Pod, node_addr};
use sluice_testbed::link::{link_names, set_mtu};

use crate::iperf::gbits;

/// Flags of `sluice-bench overlay`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
}

/// The overlay MTU flannel would write to subnet.env for a 1500-byte underlay.
const VXLAN_MTU: u32 = 1450;
/// A jumbo-frame underlay MTU.
const JUMBO: u32 = 9000;

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!(
        "sluice-bench overlay: iperf3 TCP, {} s per run, 2 nodes in network namespaces\n",
        args.seconds
    );
    let underlay = underlay(args)?;
    report("underlay node -> node", underlay, underlay);
    let hand = pod_to_pod(args, hand_vxlan, VXLAN_MTU)?;
    report("VXLAN by hand (flannel's commands)", hand, underlay);
    let vxlan = |c: &Cluster| rt.block_on(sluice_overlay(c, BackendType::Vxlan, VXLAN_MTU));
    let sluice = pod_to_pod(args, vxlan, VXLAN_MTU)?;
    report("Sluice VXLAN", sluice, underlay);
    let host_gw = |c: &Cluster| rt.block_on(sluice_overlay(c, BackendType::HostGw, 1500));
    report("Sluice host-gw", pod_to_pod(args, host_gw, 1500)?, underlay);
    // The gain worth having: jumbo frames on the underlay. The daemon derives the overlay MTU
    // from the interface (MTU - 50), so a 9000-byte underlay gives pods 8950.
    let jumbo_mtu = JUMBO - 50;
    let jumbo_vxlan = |c: &Cluster| {
        jumbo_underlay(c)?;
        rt.block_on(sluice_overlay(c, BackendType::Vxlan, jumbo_mtu))
    };
    let jumbo = pod_to_pod(args, jumbo_vxlan, jumbo_mtu)?;
    report("Sluice VXLAN, 9000-byte underlay", jumbo, underlay);
    println!(
        "\nSluice VXLAN / hand-programmed VXLAN = {:.3}",
        sluice / hand
    );
    println!(
        "Sluice VXLAN, jumbo underlay / 1500 underlay = {:.3}",
        jumbo / sluice
    );
    Ok(())
}

fn report(what: &str, gbit: f64, underlay: f64) {
    println!(
        "{what:<38} {gbit:>7.2} Gbit/s   {:>5.2} x underlay",
        gbit / underlay
    );
}

fn underlay(args: &Args) -> anyhow::Result<f64> {
    let cluster = Cluster::new(2)?;
    let (n1, n2) = (cluster.node(1)?, cluster.node(2)?);
    gbits(n2.ns(), n2.addr(), n1.ns(), args.seconds)
}

/// Builds a 2-node cluster, lets `program` build its overlay, and measures pod a → pod b.
fn pod_to_pod(
    args: &Args,
    program: impl FnOnce(&Cluster) -> anyhow::Result<()>,
    mtu: u32,
) -> anyhow::Result<f64> {
    let cluster = Cluster::new(2)?;
    program(&cluster)?;
    let a = pod(cluster.node(1)?, "a", mtu)?;
    let b = pod(cluster.node(2)?, "b", mtu)?;
    gbits(b.ns(), b.ip(), a.ns(), args.seconds)
}

/// A pod whose veth has the overlay MTU on both ends (what the CNI plugin sets from subnet.env).
fn pod(node: &Node, name: &str, mtu: u32) -> anyhow::Result<Pod> {
    let pod = node.add_pod(name)?;
    set_mtu(pod.ns(), POD_IF, mtu)?;
    set_mtu(node.ns(), pod.host_if(), mtu)?;
    Ok(pod)
}

fn mac(i: u8) -> String {
    format!("0a:58:0a:f4:{i:02x}:01")
}

/// Raises every underlay link (bridge, its ports, the nodes' uplinks) to [`JUMBO`].
fn jumbo_underlay(cluster: &Cluster) -> anyhow::Result<()> {
    let underlay = cluster.underlay().ns();
    for link in link_names(underlay)?.iter().filter(|l| *l != "lo") {
        set_mtu(underlay, link, JUMBO)?;
    }
    for node in cluster.nodes() {
        set_mtu(node.ns(), "eth0", JUMBO)?;
    }
    Ok(())
}

/// flannel's VXLAN, by hand (machine.md §5): device, /32 address, neighbour, FDB, onlink route.
fn hand_vxlan(cluster: &Cluster) -> anyhow::Result<()> {
    for (i, peer) in [(1u8, 2u8), (2, 1)] {
        let ns = cluster.node(i)?.ns();
        let run = |cmd: String| {
            ns.exec(cmd.split_whitespace())
                .map(drop)
                .context(cmd.clone())
        };
        run(format!(
            "ip link add flannel.1 type vxlan id 1 local {} dev eth0 dstport 8472 nolearning",
            node_addr(i)
        ))?;
        run(format!(
            "ip link set flannel.1 address {} mtu {VXLAN_MTU} up",
            mac(i)
        ))?;
        run(format!("ip addr add 10.244.{i}.0/32 dev flannel.1"))?;
        run(format!(
            "ip neigh add 10.244.{peer}.0 lladdr {} dev flannel.1 nud permanent",
            mac(peer)
        ))?;
        run(format!(
            "bridge fdb add {} dev flannel.1 dst {} self permanent",
            mac(peer),
            node_addr(peer)
        ))?;
        run(format!(
            "ip route add 10.244.{peer}.0/24 via 10.244.{peer}.0 dev flannel.1 onlink"
        ))?;
    }
    Ok(())
}

fn lease(i: u8) -> anyhow::Result<Lease> {
    let value = format!(
        r#"{{"PublicIP":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
        node_addr(i),
        mac(i)
    );
    Ok(Lease::from_etcd(&format!("10.244.{i}.0-24"), &value)?)
}

/// Sluice's overlay through its own reconciler and netlink kernel, in each node's namespace.
async fn sluice_overlay(cluster: &Cluster, backend: BackendType, mtu: u32) -> anyhow::Result<()> {
    let params = Params {
        backend,
        vni: 1,
        direct_routing: false,
    };
    let networks = ["10.244.0.0/16".parse()?];
    for (i, peer) in [(1u8, 2u8), (2, 1)] {
        let node = cluster.node(i)?;
        let rt = tokio::runtime::Handle::current();
        let mut kernel = node.ns().run(move || {
            let _entered = rt.enter();
            NetlinkKernel::connect()
        })??;
        let mut peer_lease = lease(peer)?;
        peer_lease.attrs.backend_type = backend.as_str().to_owned();
        let desired = compute(&lease(i)?, [&peer_lease], &params, |_| false).desired;
        let address = format!("10.244.{i}.0/32").parse()?;
        let device = (backend == BackendType::Vxlan).then(|| VxlanSpec {
            name: "flannel.1".into(),
            vni: 1,
            local: IpAddr::V4(node_addr(i)),
            underlay: "eth0".into(),
            port: 8472,
            mtu,
            mac: mac(i)
                .parse()
                .unwrap_or(sluice_overlay::Mac([2, 0, 0, 0, 0, i])),
            address,
        });
        let out = reconcile(&mut kernel, device.as_slice(), &networks, &desired).await?;
        anyhow::ensure!(
            out.failures.is_empty(),
            "reconcile failures: {:?}",
            out.failures
        );
    }
    Ok(())
}
