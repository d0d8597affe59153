//! CHECK: everything the previous result claims for this attachment is still there — the
//! reservation, the bridge, the host end on the bridge, the pod's interface, addresses and
//! routes. Extra state (a later plugin's route, a changed MAC) is tolerated, as the spec asks.

use ipnet::IpNet;

use crate::attach::Who;
use crate::config::NetConf;
use crate::env::Env;
use crate::error::{CniError, Code};
use crate::ipam::{AttachmentLock, Store};
use crate::netns::NetNs;
use crate::nl::Netlink;
use crate::result::Expected;

/// Runs CHECK.
pub(crate) fn check(env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let who = Who::of(env);
    let _one_at_a_time = AttachmentLock::take(&conf.ipam_dir(), &conf.name, who.id, who.ifname)?;
    let path = env.netns.as_deref().unwrap_or_default();
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| fail("Required prevResult missing".into()))?;
    let expected = Expected::of(prev, who.ifname, path).ok_or_else(|| {
        fail(format!(
            "prevResult has no interface {} in {path}",
            who.ifname
        ))
    })?;
    check_reservation(conf, &who, &expected)?;
    check_host(conf, &who)?;
    check_pod(path, who.ifname, &expected)?;
    Ok(String::new())
}

fn fail(msg: String) -> CniError {
    CniError::new(Code::Internal, msg)
}

fn check_reservation(conf: &NetConf, who: &Who<'_>, expected: &Expected) -> Result<(), CniError> {
    let held = Store::lock(&conf.ipam_dir(), &conf.name)?.held(who.id, who.ifname)?;
    match expected.ips.iter().find(|ip| !held.contains(&ip.addr())) {
        Some(ip) => Err(fail(format!(
            "address {} is not reserved for container {} interface {} in network {}",
            ip.addr(),
            who.id,
            who.ifname,
            conf.name
        ))),
        None => Ok(()),
    }
}

fn check_host(conf: &NetConf, who: &Who<'_>) -> Result<(), CniError> {
    let mut nl = Netlink::open()?;
    let name = conf.bridge_name();
    let bridge = nl
        .link_by_name(&name)?
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .ok_or_else(|| fail(format!("bridge {name} is missing")))?;
    let host = who.host_veth();
    match nl.link_by_name(&host)? {
        None => Err(fail(format!("host interface {host} is missing"))),
        Some(l) if l.master != Some(bridge.index) => Err(fail(format!(
            "host interface {host} is not on bridge {name}"
        ))),
        Some(_) => Ok(()),
    }
}

fn check_pod(path: &str, ifname: &str, expected: &Expected) -> Result<(), CniError> {
    let netns = NetNs::open(path)?;
    let mut nl = netns.run(Netlink::open)??;
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| fail(format!("interface {ifname} is missing in {path}")))?;
    if !link.up {
        return Err(fail(format!("interface {ifname} in {path} is down")));
    }
    let have = nl.addresses(link.index)?;
    if let Some(ip) = expected.ips.iter().find(|ip| !have.contains(ip)) {
        return Err(fail(format!(
            "interface {ifname} in {path} lacks address {ip}"
        )));
    }
    let (v4, v6) = (nl.routes(false)?, nl.routes(true)?);
    for (dst, gw) in ours(expected) {
        let routes = if dst.addr().is_ipv6() { &v6 } else { &v4 };
        let found = routes
            .iter()
            .any(|r| r.dst == dst && (gw.is_none() || r.gw == gw));
        if !found {
            return Err(fail(format!("route {dst} is missing in {path}")));
        }
    }
    Ok(())
}

/// The routes of the result that go through this attachment's subnets (other plugins'
/// routes in a chain are theirs to check).
fn ours(expected: &Expected) -> impl Iterator<Item = (IpNet, Option<std::net::IpAddr>)> + '_ {
    expected
        .routes
        .iter()
        .copied()
        .filter(|(_, gw)| gw.is_none_or(|g| expected.ips.iter().any(|ip| ip.trunc().contains(&g))))
}
