//! RAII guards for links, addresses and routes inside test namespaces.
//!
//! Each guard removes its object on drop if the namespace still exists, so a failing test
//! leaves nothing behind even before its namespaces go. Drop never panics: "not found" (the
//! object went with its peer or namespace) is ignored and other failures are logged. Guards
//! hold their [`NetNs`], so a namespace outlives everything created in it. Veth pairs are
//! created directly inside their namespaces (`ip -n A link add X type veth peer name Y netns B`):
//! nothing is ever created in the host namespace.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::names::IFNAME_MAX;
use crate::netns::NetNs;

/// Runs `ip -n <ns> args…` for a guard's drop, ignoring "not found" and logging the rest.
fn drop_quietly(ns: &NetNs, args: &[&str]) {
    if !NetNs::exists(ns.name()) {
        return;
    }
    if let Err(e) = ns.ip(args)
        && !e.is_not_found()
    {
        tracing::warn!("cleanup: {e}");
    }
}

/// Rejects interface names the kernel would refuse, with a clear message.
fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(Error::invalid(
            format!("interface name {name:?}"),
            format!("must be 1..={IFNAME_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Sets `dev` up inside `ns`.
pub fn set_up(ns: &NetNs, dev: &str) -> Result<()> {
    ns.ip(["link", "set", dev, "up"]).map(drop)
}

/// Attaches `dev` to bridge `bridge` inside `ns` and sets it up.
pub fn set_master(ns: &NetNs, dev: &str, bridge: &str) -> Result<()> {
    ns.ip(["link", "set", dev, "master", bridge, "up"])
        .map(drop)
}

/// Sets the MTU of `dev` inside `ns`.
pub fn set_mtu(ns: &NetNs, dev: &str, mtu: u32) -> Result<()> {
    ns.ip(["link", "set", dev, "mtu", &mtu.to_string()])
        .map(drop)
}

/// Names of the links in `ns` (`ip -o link show`).
pub fn link_names(ns: &NetNs) -> Result<Vec<String>> {
    let out = ns.ip(["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

/// A veth pair with end `a_name` in `a` and end `b_name` in `b`; both ends are set up.
#[derive(Debug)]
pub struct Veth {
    a: NetNs,
    a_name: String,
    b: NetNs,
    b_name: String,
}

impl Veth {
    /// Creates the pair (`ip -n A link add a_name type veth peer name b_name netns B`).
    pub fn new(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<Self> {
        check_ifname(a_name)?;
        check_ifname(b_name)?;
        let peer_ns = b.name();
        a.ip([
            "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", peer_ns,
        ])?;
        let veth = Self {
            a: a.clone(),
            a_name: a_name.to_owned(),
            b: b.clone(),
            b_name: b_name.to_owned(),
        };
        set_up(a, a_name)?;
        set_up(b, b_name)?;
        Ok(veth)
    }

    /// The end in the first namespace.
    pub fn a_name(&self) -> &str {
        &self.a_name
    }

    /// The end in the second namespace.
    pub fn b_name(&self) -> &str {
        &self.b_name
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting either end deletes the pair; try the other end if the first namespace is gone.
        if NetNs::exists(self.a.name()) {
            drop_quietly(&self.a, &["link", "del", &self.a_name]);
        } else {
            drop_quietly(&self.b, &["link", "del", &self.b_name]);
        }
    }
}

/// A Linux bridge inside a namespace, set up.
#[derive(Debug)]
pub struct Bridge {
    ns: NetNs,
    name: String,
}

impl Bridge {
    /// Creates bridge `name` in `ns` and sets it up.
    pub fn new(ns: &NetNs, name: &str) -> Result<Self> {
        check_ifname(name)?;
        ns.ip(["link", "add", name, "type", "bridge"])?;
        let bridge = Self {
            ns: ns.clone(),
            name: name.to_owned(),
        };
        set_up(ns, name)?;
        Ok(bridge)
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attaches `dev` (in the same namespace) to the bridge.
    pub fn attach(&self, dev: &str) -> Result<()> {
        set_master(&self.ns, dev, &self.name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        drop_quietly(&self.ns, &["link", "del", &self.name]);
    }
}

/// An IPv4 address on an interface inside a namespace.
#[derive(Debug)]
pub struct Address {
    ns: NetNs,
    dev: String,
    cidr: Ipv4Net,
}

impl Address {
    /// Adds `cidr` (address/prefix) to `dev` in `ns`.
    pub fn new(ns: &NetNs, dev: &str, cidr: Ipv4Net) -> Result<Self> {
        ns.ip(["addr", "add", &cidr.to_string(), "dev", dev])?;
        Ok(Self {
            ns: ns.clone(),
            dev: dev.to_owned(),
            cidr,
        })
    }

    /// The address.
    pub fn addr(&self) -> Ipv4Addr {
        self.cidr.addr()
    }

    /// Address and prefix.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }
}

impl Drop for Address {
    fn drop(&mut self) {
        let cidr = self.cidr.to_string();
        drop_quietly(&self.ns, &["addr", "del", &cidr, "dev", &self.dev]);
    }
}

/// An IPv4 route inside a namespace.
#[derive(Debug)]
pub struct Route {
    ns: NetNs,
    spec: Vec<String>,
}

impl Route {
    /// Adds `dst` (a prefix, or `default`) via gateway `via`, optionally out of `dev`.
    pub fn via(ns: &NetNs, dst: &str, via: Ipv4Addr, dev: Option<&str>) -> Result<Self> {
        let mut spec = vec![dst.to_owned(), "via".to_owned(), via.to_string()];
        if let Some(dev) = dev {
            spec.extend(["dev".to_owned(), dev.to_owned()]);
        }
        Self::add(ns, spec)
    }

    /// Adds `dst` directly out of `dev` (no gateway).
    pub fn dev(ns: &NetNs, dst: &str, dev: &str) -> Result<Self> {
        Self::add(ns, vec![dst.to_owned(), "dev".to_owned(), dev.to_owned()])
    }

    /// Adds a route given as `ip route add` arguments.
    pub fn add(ns: &NetNs, spec: Vec<String>) -> Result<Self> {
        let args: Vec<&str> = ["route", "add"]
            .into_iter()
            .chain(spec.iter().map(String::as_str))
            .collect();
        ns.ip(args)?;
        Ok(Self {
            ns: ns.clone(),
            spec,
        })
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        let args: Vec<&str> = ["route", "del"]
            .into_iter()
            .chain(self.spec.iter().map(String::as_str))
            .collect();
        drop_quietly(&self.ns, &args);
    }
}
