//! Maps the keys of a `net-conf.json` onto [`NetConf`], recording where each
//! key was so later checks can point at it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::doc::{Doc, Entries};
use super::{Backend, BackendType, NetConf, NetConfError, Origin};
use crate::cidr::{Cidr, parse_cidr};
use crate::location::Location;

pub(super) fn parse(text: &str, file: Option<PathBuf>) -> Result<NetConf, NetConfError> {
    let doc = Doc {
        text,
        file: file.clone(),
    };
    let mut top = Fields::new(&doc, doc.root()?, "");
    let mut conf = NetConf {
        network: top.take_with("Network", network::<Ipv4Net>)?,
        ipv6_network: top.take_with("IPv6Network", network::<Ipv6Net>)?,
        subnet_len: top.take("SubnetLen")?,
        subnet_min: top.take_with("SubnetMin", address)?,
        subnet_max: top.take_with("SubnetMax", address)?,
        ipv6_subnet_len: top.take("IPv6SubnetLen")?,
        ipv6_subnet_min: top.take_with("IPv6SubnetMin", address)?,
        ipv6_subnet_max: top.take_with("IPv6SubnetMax", address)?,
        ..NetConf::default()
    };
    if let Some(on) = top.take("EnableIPv4")? {
        conf.enable_ipv4 = on;
    }
    conf.enable_ipv6 = top.take("EnableIPv6")?.unwrap_or(false);
    conf.enable_nftables = top.take("EnableNFTables")?.unwrap_or(false);
    conf.backend = backend(&mut top)?;
    let keys = std::mem::take(&mut top.keys);
    conf.extra = top.rest()?;
    conf.origin = Origin { file, keys };
    Ok(conf)
}

fn backend(top: &mut Fields<'_, '_>) -> Result<Backend, NetConfError> {
    let Some((key, raw)) = top.take_raw("Backend") else {
        return Ok(Backend::default());
    };
    if raw.get() == "null" {
        return Ok(Backend::default());
    }
    let mut fields = Fields::new(top.doc, top.doc.object(&key, raw)?, "Backend.");
    let backend = Backend {
        backend_type: fields.take_with("Type", backend_type)?.unwrap_or_default(),
        vni: fields.take("VNI")?,
        port: fields.take("Port")?,
        mtu: fields.take("MTU")?,
        direct_routing: fields.take("DirectRouting")?,
        extra: BTreeMap::new(),
    };
    top.keys.append(&mut fields.keys);
    Ok(Backend {
        extra: fields.rest()?,
        ..backend
    })
}

/// The keys of one object not yet consumed.
struct Fields<'d, 'a> {
    doc: &'d Doc<'a>,
    entries: Entries<'a>,
    prefix: &'static str,
    keys: BTreeMap<String, Location>,
}

impl<'d, 'a> Fields<'d, 'a> {
    fn new(doc: &'d Doc<'a>, entries: Entries<'a>, prefix: &'static str) -> Self {
        Self {
            doc,
            entries,
            prefix,
            keys: BTreeMap::new(),
        }
    }

    /// Removes every spelling of `name` (case-insensitive); the last one wins.
    fn take_raw(&mut self, name: &str) -> Option<(String, &'a RawValue)> {
        let mut found = None;
        self.entries.retain(|(key, raw)| {
            let matches = key.eq_ignore_ascii_case(name);
            if matches {
                found = Some(*raw);
            }
            !matches
        });
        let raw = found?;
        let key = format!("{}{name}", self.prefix);
        self.keys.insert(key.clone(), self.doc.position(raw));
        Some((key, raw))
    }

    /// A typed value; `null` counts as absent, as in Go.
    fn take<T: Deserialize<'a>>(&mut self, name: &str) -> Result<Option<T>, NetConfError> {
        match self.take_raw(name) {
            Some((key, raw)) => self.doc.decode::<Option<T>>(&key, raw),
            None => Ok(None),
        }
    }

    /// A string value run through `parse`.
    fn take_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, NetConfError> {
        let Some((key, raw)) = self.take_raw(name) else {
            return Ok(None);
        };
        let Some(text) = self.doc.decode::<Option<String>>(&key, raw)? else {
            return Ok(None);
        };
        parse(&text)
            .map(Some)
            .map_err(|problem| NetConfError::Value {
                location: self.doc.position(raw),
                key,
                problem,
            })
    }

    /// The keys nobody took, kept verbatim (a later duplicate wins).
    fn rest(self) -> Result<BTreeMap<String, serde_json::Value>, NetConfError> {
        let mut out = BTreeMap::new();
        for (name, raw) in &self.entries {
            let key = format!("{}{name}", self.prefix);
            out.insert(name.clone(), self.doc.decode(&key, raw)?);
        }
        Ok(out)
    }
}

/// A network CIDR, masked to its network address as flannel's `IP4Net` does.
fn network<N: Cidr>(text: &str) -> Result<N, String> {
    parse_cidr::<N>(text).map(Cidr::masked)
}

fn address<A: std::str::FromStr>(text: &str) -> Result<A, String> {
    text.parse()
        .map_err(|_| format!("invalid ip address {text:?}"))
}

fn backend_type(text: &str) -> Result<BackendType, String> {
    BackendType::from_name(text)
        .ok_or_else(|| format!("unsupported backend {text:?}, expected \"vxlan\" or \"host-gw\""))
}
