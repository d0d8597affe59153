//! ADD: bridge + veth + address + routes in one exec. Addresses are reserved first (under the
//! store's lock, released before any netlink work so parallel ADDs overlap); if anything after
//! that fails, the reservation is released and the host end deleted, so a failed ADD leaks
//! nothing. The whole ADD holds its attachment's lock, so a DEL or another ADD of the same
//! attachment waits rather than interleaving with it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;
use sluice_model::subnet_env::SubnetEnv;

use crate::attach::{Who, alias_held, subnet_env};
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{CniError, Code};
use crate::ipam::{AttachmentLock, Store};
use crate::masq;
use crate::netns::NetNs;
use crate::nl::{Link, Netlink, NlError, Route, VethSpec};
use crate::plan::Plan;
use crate::result::{Attachment, Interface};

/// Runs ADD and returns the result JSON.
pub(crate) fn add(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let who = Who::of(env);
    let _one_at_a_time = AttachmentLock::take(&conf.ipam_dir(), &conf.name, who.id, who.ifname)?;
    let netns_path = env.netns.as_deref().unwrap_or_default();
    let senv = subnet_env(conf)?;
    let plan = Plan::new(conf, &senv)?;
    let netns = open_pod_netns(netns_path, env.netns_override)?;
    let wants = Wants::of(env, conf)?;
    let ips = reserve(conf, &plan, &who, &wants)?;
    let pod = Pod {
        netns: &netns,
        path: netns_path,
    };
    let mut created = None;
    match build(conf, &plan, &who, &pod, &ips, &wants, &senv, &mut created) {
        Ok(att) => Ok(att.render(&conf.cni_version, conf.prev_result.as_ref())),
        Err(e) => {
            rollback(conf, &plan, &who, &ips, created);
            Err(e)
        }
    }
}

/// The pod's namespace and the path the runtime named it by (the result's `sandbox`).
struct Pod<'a> {
    netns: &'a NetNs,
    path: &'a str,
}

/// Opens `CNI_NETNS`, refusing the plugin's own namespace (code 8) unless overridden.
fn open_pod_netns(path: &str, allow_own: bool) -> Result<NetNs, CniError> {
    let netns = NetNs::open(path)?;
    if !allow_own && netns.is_current()? {
        return Err(CniError::new(
            Code::InvalidNetNs,
            format!("CNI_NETNS {path} is the plugin's own network namespace"),
        ));
    }
    Ok(netns)
}

/// Capability and per-attachment requests: fixed addresses and a MAC.
#[derive(Default)]
struct Wants {
    ips: Vec<IpAddr>,
    mac: Option<[u8; 6]>,
}

impl Wants {
    fn of(env: &Env, conf: &NetConf) -> Result<Self, CniError> {
        let mut ips: Vec<String> = strings(&conf.runtime_config["ips"]);
        ips.extend(strings(&conf.args["cni"]["ips"]));
        if let Some(list) = env.args.get("IP") {
            ips.extend(list.split(',').map(str::to_owned));
        }
        let ips = ips
            .iter()
            .map(|s| {
                let addr = s.split('/').next().unwrap_or(s);
                addr.parse().map_err(|_| {
                    CniError::new(Code::InvalidConfig, format!("invalid requested IP {s:?}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let mac = [
            conf.runtime_config["mac"].as_str(),
            conf.args["cni"]["mac"].as_str(),
            env.args.get("MAC").map(String::as_str),
        ]
        .into_iter()
        .flatten()
        .next()
        .map(parse_mac)
        .transpose()?;
        Ok(Self { ips, mac })
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn parse_mac(s: &str) -> Result<[u8; 6], CniError> {
    let bad = || CniError::new(Code::InvalidConfig, format!("invalid requested MAC {s:?}"));
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// Reserves one address per range; refuses a second ADD of the same attachment.
fn reserve(
    conf: &NetConf,
    plan: &Plan,
    who: &Who<'_>,
    wants: &Wants,
) -> Result<Vec<IpNet>, CniError> {
    let store = Store::lock(&conf.ipam_dir(), &conf.name)?;
    let held = store.held(who.id, who.ifname)?;
    if !held.is_empty() {
        return Err(CniError::new(
            Code::Internal,
            format!(
                "container {} interface {} already holds {held:?}: duplicate allocation is not allowed (DEL it first)",
                who.id, who.ifname
            ),
        ));
    }
    let mut out = Vec::new();
    for (set, range) in plan.ranges.iter().enumerate() {
        let requested = wants
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == range.gateway.is_ipv4());
        let got = store
            .allocate(set, range, (who.id, who.ifname), requested)
            .map_err(CniError::from)
            .and_then(|ip| {
                IpNet::new(ip, range.subnet.prefix_len()).map_err(|e| {
                    CniError::new(
                        Code::Internal,
                        format!("address {ip} in {}: {e}", range.subnet),
                    )
                })
            });
        match got {
            Ok(net) => out.push(net),
            Err(e) => {
                let _ = store.release(who.id, who.ifname);
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Undoes a failed ADD: the pair it created (by index: a link of that name that was not
/// created here is not ours to delete) and the reservations.
fn rollback(conf: &NetConf, plan: &Plan, who: &Who<'_>, ips: &[IpNet], created: Option<u32>) {
    if let Some(index) = created
        && let Ok(mut nl) = Netlink::open()
    {
        let _ = nl.delete_link_index(index);
    }
    if plan.ip_masq {
        for ip in ips {
            let _ = masq::del(&conf.name, ip.addr());
        }
    }
    if let Ok(store) = Store::lock(&conf.ipam_dir(), &conf.name) {
        let _ = store.release(who.id, who.ifname);
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the steps of one ADD; grouping them hides nothing"
)]
fn build(
    conf: &NetConf,
    plan: &Plan,
    who: &Who<'_>,
    target: &Pod<'_>,
    ips: &[IpNet],
    wants: &Wants,
    senv: &SubnetEnv,
    created: &mut Option<u32>,
) -> Result<Attachment, CniError> {
    let netns = target.netns;
    let mut host = Netlink::open()?;
    let bridge = ensure_bridge(&mut host, plan)?;
    let host_name = who.host_veth();
    let spec = VethSpec {
        host: &host_name,
        peer: who.ifname,
        peer_netns: netns.fd(),
        mtu: plan.mtu,
        master: bridge.index,
        peer_mac: wants.mac,
    };
    create_veth(conf, &mut host, &spec, netns, who)?;
    let veth = must_link(&mut host, &host_name)?;
    *created = Some(veth.index);
    host.set_bridge_port(veth.index, plan.hairpin, &who.alias(&conf.name))?;
    let v6 = ips.iter().any(|ip| ip.addr().is_ipv6());
    let mut pod = netns.run(|| {
        pod_sysctls(who.ifname, v6);
        Netlink::open()
    })??;
    let container = configure_pod(&mut pod, who.ifname, ips, &plan.routes)?;
    if plan.ip_masq {
        let cluster: Vec<IpNet> = senv
            .networks
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(senv.ipv6_networks.iter().map(|n| IpNet::V6(*n)))
            .collect();
        for ip in ips {
            masq::add(&conf.name, ip.addr(), *ip, &cluster)
                .map_err(|e| CniError::new(Code::Internal, e.to_string()))?;
        }
    }
    // The bridge's MAC is read last: it is pinned at creation, but an adopted bridge may not be.
    let bridge = must_link(&mut host, &plan.bridge)?;
    let iface = |l: &Link, sandbox: Option<&str>| Interface {
        name: l.name.clone(),
        mac: l.mac.clone(),
        sandbox: sandbox.map(str::to_owned),
    };
    Ok(Attachment {
        interfaces: vec![
            iface(&bridge, None),
            iface(&veth, None),
            iface(&container, Some(target.path)),
        ],
        ips: ips
            .iter()
            .map(|ip| (*ip, gateway_of(plan, ip.addr())))
            .collect(),
        routes: plan.routes.clone(),
        dns: conf.dns.clone(),
    })
}

/// Creates the pair. A pair an earlier DEL released but whose teardown the kernel has not
/// finished (DEL returns before it) is in the way for a few milliseconds: it is deleted, or
/// waited for while it vanishes, and the create retried (for half a second at most).
fn create_veth(
    conf: &NetConf,
    host: &mut Netlink,
    spec: &VethSpec<'_>,
    netns: &NetNs,
    who: &Who<'_>,
) -> Result<(), CniError> {
    for _ in 0..100 {
        match host.create_veth(spec) {
            Err(e) if e.errno() == Some(nix::libc::EEXIST) => {
                match clear_released_pair(conf, host, spec.host, netns, who)? {
                    Clear::Removed => continue,
                    Clear::Vanishing => std::thread::sleep(std::time::Duration::from_millis(5)),
                    Clear::Blocked => return Err(veth_error(e, who, spec.host)),
                }
            }
            other => return other.map_err(|e| veth_error(e, who, spec.host)),
        }
    }
    Err(CniError::new(
        Code::TryAgainLater,
        format!("interface {} is still being torn down", who.ifname),
    ))
}

/// What stands in the way of a new pair.
enum Clear {
    /// A released pair was deleted.
    Removed,
    /// The pod's interface belongs to a pair whose host end is already gone: it is going.
    Vanishing,
    /// Something live (another plugin's, or a live attachment's) holds the name.
    Blocked,
}

/// Deletes the Sluice pair that blocks the create — our host name, or the pod's `ifname`
/// whose host end is ours — if its attachment is this one (whose earlier pair a DEL
/// released: a live duplicate was refused before) or holds no address any more.
fn clear_released_pair(
    conf: &NetConf,
    host: &mut Netlink,
    host_name: &str,
    netns: &NetNs,
    who: &Who<'_>,
) -> Result<Clear, CniError> {
    let mut candidates = Vec::new();
    if let Some(l) = host.link_by_name(host_name)? {
        candidates.push(l);
    }
    let mut pod = netns.run(Netlink::open)??;
    let pod_link = pod.link_by_name(who.ifname)?;
    let foreign_peer = pod_link
        .as_ref()
        .filter(|l| l.peer_netns_id.is_some())
        .and_then(|l| l.peer_index);
    if let Some(peer) = foreign_peer {
        candidates.extend(host.links()?.into_iter().filter(|l| l.index == peer));
    }
    let prefix = format!("{}{}:", crate::attach::ALIAS_PREFIX, conf.name);
    let store = Store::lock(&conf.ipam_dir(), &conf.name)?;
    let mut outcome = Clear::Blocked;
    for link in &candidates {
        let Some(alias) = link.alias.as_deref().filter(|a| a.starts_with(&prefix)) else {
            continue;
        };
        let same = alias == who.alias(&conf.name);
        if same || !alias_held(&store, &conf.name, alias)? {
            // Gone already (its teardown finished meanwhile) counts as cleared too.
            host.delete_link(&link.name)?;
            outcome = Clear::Removed;
        }
    }
    if matches!(outcome, Clear::Blocked) && candidates.is_empty() && pod_link.is_none() {
        return Ok(Clear::Removed);
    }
    if matches!(outcome, Clear::Blocked) && foreign_peer.is_some() && candidates.is_empty() {
        return Ok(Clear::Vanishing);
    }
    Ok(outcome)
}

fn gateway_of(plan: &Plan, ip: IpAddr) -> IpAddr {
    plan.ranges
        .iter()
        .find(|r| r.contains(ip))
        .map_or(ip, |r| r.gateway)
}

fn veth_error(e: NlError, who: &Who<'_>, host: &str) -> CniError {
    if e.errno() == Some(nix::libc::EEXIST) {
        CniError::new(
            Code::Internal,
            format!(
                "interface {} already exists in the container (or host interface {host} exists)",
                who.ifname
            ),
        )
    } else {
        e.into()
    }
}

fn must_link(nl: &mut Netlink, name: &str) -> Result<Link, CniError> {
    nl.link_by_name(name)?.ok_or_else(|| {
        CniError::new(
            Code::Internal,
            format!("link {name} vanished while being set up"),
        )
    })
}

/// The node's bridge, created (up, MAC pinned) if absent, with the gateway address when the
/// plan says so. A different address of the same family on it is an error, as in the
/// reference bridge plugin: it means the node's subnet changed under running pods.
fn ensure_bridge(nl: &mut Netlink, plan: &Plan) -> Result<Link, CniError> {
    let bridge = match nl.link_by_name(&plan.bridge)? {
        Some(l) => l,
        None => {
            match nl.create_bridge(&plan.bridge, plan.mtu, random_mac()) {
                Err(e) if e.errno() != Some(nix::libc::EEXIST) => return Err(e.into()),
                _ => {}
            }
            must_link(nl, &plan.bridge)?
        }
    };
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(CniError::new(
            Code::Internal,
            format!("{} exists but is not a bridge", plan.bridge),
        ));
    }
    if !bridge.up {
        nl.set_up(bridge.index)?;
    }
    if plan.is_gateway {
        let have = nl.addresses(bridge.index)?;
        for gw in plan.gateway_addresses() {
            add_gateway(nl, &bridge, &have, gw)?;
        }
        enable_forwarding(&plan.gateway_addresses());
    }
    Ok(bridge)
}

fn add_gateway(nl: &mut Netlink, bridge: &Link, have: &[IpNet], gw: IpNet) -> Result<(), CniError> {
    if have.contains(&gw) {
        return Ok(());
    }
    let other = have
        .iter()
        .find(|a| a.addr().is_ipv4() == gw.addr().is_ipv4() && !is_link_local(a.addr()));
    if let Some(other) = other {
        return Err(CniError::new(
            Code::Internal,
            format!(
                "{:?} already has an IP address different from {gw} ({other})",
                bridge.name
            ),
        ));
    }
    match nl.add_address(bridge.index, gw) {
        Err(e) if e.errno() != Some(nix::libc::EEXIST) => Err(e.into()),
        _ => Ok(()),
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Pods reach beyond the node through it: forwarding on, as the bridge plugin does.
fn enable_forwarding(gws: &[IpNet]) {
    if gws.iter().any(|g| g.addr().is_ipv4()) {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
    }
    if gws.iter().any(|g| g.addr().is_ipv6()) {
        write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    }
}

/// Writes a sysctl unless it already has the value (a read is cheaper than a write).
fn write_sysctl(path: &str, value: &str) {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return;
    }
    let _ = std::fs::write(path, value);
}

/// Inside the pod: announce the address on ARP at once, and no DAD wait for IPv6 (which
/// otherwise delays the pod's first packets by a second or more).
fn pod_sysctls(ifname: &str, v6: bool) {
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"), "1");
    if v6 {
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "0");
    }
}

fn configure_pod(
    nl: &mut Netlink,
    ifname: &str,
    ips: &[IpNet],
    routes: &[(IpNet, IpAddr)],
) -> Result<Link, CniError> {
    let mut link = must_link(nl, ifname)?;
    nl.set_up(link.index)?;
    link.up = true;
    for ip in ips {
        nl.add_address(link.index, *ip)?;
    }
    for (dst, gw) in routes {
        nl.add_route(&Route {
            dst: *dst,
            gw: Some(*gw),
            oif: Some(link.index),
        })?;
    }
    Ok(link)
}

/// A locally administered unicast MAC, so the bridge's address never changes as ports come
/// and go (the kernel would otherwise take the lowest port MAC).
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut mac);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}
