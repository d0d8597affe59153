//! GC: release every reservation and host veth of this network whose attachment is not in
//! `cni.dev/valid-attachments`, and every masquerade entry whose address nobody holds any
//! more (whatever left it: a crash between steps, an older version's race). Host veths are
//! recognised by the alias ADD gave them, so GC never touches a link it did not create.
//! Continues past errors and reports them all.

use std::collections::BTreeSet;

use crate::attach::{ALIAS_PREFIX, Who};
use crate::config::{Attachment, NetConf};
use crate::error::{CniError, Code};
use crate::ipam::Store;
use crate::masq;
use crate::nl::{Netlink, NlError};

/// Runs GC.
pub(crate) fn gc(conf: &NetConf) -> Result<String, CniError> {
    let keep = conf.gc_keep();
    let mut errors = Vec::new();
    let store = Store::lock(&conf.ipam_dir(), &conf.name);
    let held = store.and_then(|s| {
        s.gc(&keep)?;
        s.reservations()
    });
    match held {
        Ok(held) => {
            let held: BTreeSet<_> = held.into_iter().map(|(ip, _)| ip).collect();
            if let Err(e) = masq::gc(&conf.name, &held) {
                errors.push(e.to_string());
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
    let kept: BTreeSet<String> = keep
        .iter()
        .map(|a| {
            let who = Who {
                id: &a.container_id,
                ifname: &a.ifname,
            };
            who.alias(&conf.name)
        })
        .collect();
    for link in nl.links()? {
        let Some(alias) = link.alias.as_deref().filter(|a| a.starts_with(&prefix)) else {
            continue;
        };
        if kept.contains(alias) {
            continue;
        }
        if let Err(e) = nl.delete_link(&link.name) {
            errors.push(e.to_string());
        }
    }
    Ok(())
}
