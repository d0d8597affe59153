//! DEL: undo ADD "to the fullest extent possible". Every step tolerates its part being gone —
//! the netns, the interface, the reservation — so a second DEL, a DEL after the pod's netns
//! was removed, and a DEL of a container never added all succeed and still free the address.

use std::net::IpAddr;

use crate::Teardown;
use crate::attach::Who;
use crate::config::NetConf;
use crate::env::Env;
use crate::error::CniError;
use crate::ipam::{AttachmentLock, Store};
use crate::masq;
use crate::netns::{NetNs, NetNsError};
use crate::nl::Netlink;

/// Runs DEL.
pub(crate) fn del(env: &Env, conf: &NetConf, teardown: &Teardown) -> Result<String, CniError> {
    let who = Who::of(env);
    let _one_at_a_time = AttachmentLock::take(&conf.ipam_dir(), &conf.name, who.id, who.ifname)?;
    remove_links(conf, &who, env.netns.as_deref(), teardown)?;
    let released = Store::lock(&conf.ipam_dir(), &conf.name)?.release(who.id, who.ifname)?;
    if masq::may_be_on(conf) {
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
fn remove_links(
    conf: &NetConf,
    who: &Who<'_>,
    netns: Option<&str>,
    teardown: &Teardown,
) -> Result<(), CniError> {
    let mut nl = Netlink::open()?;
    // Only a host end that carries this attachment's alias is ours: the name alone may
    // belong to another plugin's veth.
    let alias = who.alias(&conf.name);
    let ours = nl
        .link_by_name(&who.host_veth())?
        .filter(|l| l.alias.as_deref() == Some(alias.as_str()));
    if let Some(link) = ours {
        // By index: by the time a detached reaper runs, the name may be a newer pair's.
        if let Teardown::Detached(exe) = teardown
            && reap_detached(exe, link.index)
        {
            return Ok(());
        }
        nl.delete_link_index(link.index)?;
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

/// Starts `<exe> reap-link <ifindex>` with no stdio (the runtime reads our stdout to EOF)
/// and does not wait for it; false if it could not be started.
fn reap_detached(exe: &std::path::Path, index: u32) -> bool {
    std::process::Command::new(exe)
        .args(["reap-link", &index.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// `reap-link`: deletes a host link by index and waits for the kernel (the detached half
/// of DEL).
pub fn reap_link(index: u32) -> Result<(), CniError> {
    Netlink::open()?.delete_link_index(index)?;
    Ok(())
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
