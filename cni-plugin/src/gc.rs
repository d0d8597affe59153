//! GC: release every reservation and host veth of this network whose attachment is not in
//! `cni.dev/valid-attachments`. Host veths are recognised by the alias ADD gave them, so GC
//! never touches a link it did not create. Continues past errors and reports them all.

use crate::attach::ALIAS_PREFIX;
use crate::config::{Attachment, NetConf};
use crate::error::{CniError, Code};
use crate::ipam::Store;
use crate::masq;
use crate::nl::{Netlink, NlError};

/// Runs GC.
pub(crate) fn gc(conf: &NetConf) -> Result<String, CniError> {
    let keep = conf.gc_keep();
    let mut errors = Vec::new();
    match Store::lock(&conf.ipam_dir(), &conf.name).and_then(|s| s.gc(&keep)) {
        Ok(released) => {
            if masq::may_be_on(conf) {
                for ip in released {
                    if let Err(e) = masq::del(&conf.name, ip) {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = remove_stale_veths(conf, &keep, &mut errors) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(String::new())
    } else {
        Err(CniError::new(Code::Internal, "GC finished with errors")
            .with_details(errors.join("; ")))
    }
}

fn remove_stale_veths(
    conf: &NetConf,
    keep: &[Attachment],
    errors: &mut Vec<String>,
) -> Result<(), NlError> {
    let mut nl = Netlink::open()?;
    let prefix = format!("{ALIAS_PREFIX}{}:", conf.name);
    for link in nl.links()? {
        let Some(owner) = link.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((id, ifname)) = owner.split_once(':') else {
            continue;
        };
        if keep
            .iter()
            .any(|a| a.container_id == id && a.ifname == ifname)
        {
            continue;
        }
        if let Err(e) = nl.delete_link(&link.name) {
            errors.push(e.to_string());
        }
    }
    Ok(())
}
