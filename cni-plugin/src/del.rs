//! DEL: undo ADD "to the fullest extent possible". Every step tolerates its part being gone —
//! the netns, the interface, the reservation — so a second DEL, a DEL after the pod's netns
//! was removed, and a DEL of a container never added all succeed and still free the address.

use std::net::IpAddr;

use crate::Teardown;
use crate::attach::{Who, subnet_env};
use crate::config::NetConf;
use crate::env::Env;
use crate::error::CniError;
use crate::ipam::Store;
use crate::masq;
use crate::netns::{NetNs, NetNsError};
use crate::nl::Netlink;

/// Runs DEL.
pub(crate) fn del(env: &Env, conf: &NetConf, teardown: &Teardown) -> Result<String, CniError> {
    let who = Who::of(env);
    remove_links(&who, env.netns.as_deref(), teardown)?;
    let released = Store::lock(&conf.ipam_dir(), &conf.name)?.release(who.id, who.ifname)?;
    if masq_may_be_on(conf) {
        for ip in &released {
            unmasquerade(conf, *ip);
        }
    }
    remove_flannel_scratch(conf, who.id);
    Ok(String::new())
}

/// Deleting the host end removes the pair in one request, without entering the pod. A pod
/// set up by another plugin (a node moving over from flannel) has a host end of another
/// name: then the container end is deleted from inside the pod.
fn remove_links(who: &Who<'_>, netns: Option<&str>, teardown: &Teardown) -> Result<(), CniError> {
    let host = who.host_veth();
    let mut nl = Netlink::open()?;
    if let Teardown::Detached(exe) = teardown
        && nl.link_by_name(&host)?.is_some()
        && reap_detached(exe, &host)
    {
        return Ok(());
    }
    if nl.delete_link(&host)? {
        return Ok(());
    }
    let Some(path) = netns else {
        return Ok(());
    };
    let netns = match NetNs::open(path) {
        Ok(n) => n,
        Err(NetNsError::Missing(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut pod = netns.run(Netlink::open)??;
    pod.delete_link(who.ifname)?;
    Ok(())
}

/// Starts `<exe> reap-link <name>` with no stdio (the runtime reads our stdout to EOF) and
/// does not wait for it; false if it could not be started.
fn reap_detached(exe: &std::path::Path, name: &str) -> bool {
    std::process::Command::new(exe)
        .args(["reap-link", name])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// `reap-link`: deletes a host link and waits for the kernel (the detached half of DEL).
pub fn reap_link(name: &str) -> Result<(), CniError> {
    Netlink::open()?.delete_link(name)?;
    Ok(())
}

/// Whether ADD may have masqueraded: on when configured, else flannel's default (the
/// opposite of FLANNEL_IPMASQ); when subnet.env is gone too, try — removing a missing element
/// fails harmlessly.
fn masq_may_be_on(conf: &NetConf) -> bool {
    match conf.bridge_settings().ip_masq {
        Some(on) => on,
        None => subnet_env(conf).map_or(true, |e| !e.ipmasq),
    }
}

fn unmasquerade(conf: &NetConf, ip: IpAddr) {
    if let Err(e) = masq::del(&conf.name, ip) {
        eprintln!("sluice: {e}");
    }
}

/// flannel's plugin keeps each pod's delegate config in `<dataDir>/<containerID>`; a node
/// that moved over from flannel still has them, and DEL is their last chance to go.
fn remove_flannel_scratch(conf: &NetConf, id: &str) {
    let dir = conf
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_DATA_DIR.into());
    let _ = std::fs::remove_file(dir.join(id));
}
