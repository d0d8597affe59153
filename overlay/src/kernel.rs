//! The overlay's one door to the kernel, and a fake of it for tests.
//!
//! Everything the daemon changes in the kernel goes through [`Kernel`]; the real
//! implementation speaks netlink, the [`FakeKernel`] keeps the same state in memory and can
//! be told to "lose" things (a deleted device, a flushed route) the way an operator or
//! another daemon would, so self-healing is tested without root.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::Desired;
use crate::mac::Mac;
use crate::plan::Plan;

/// A VXLAN device as the overlay wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// `flannel.<VNI>`.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// The local (underlay) address.
    pub local: IpAddr,
    /// The underlay interface.
    pub underlay: String,
    /// UDP port.
    pub port: u16,
    /// Device MTU (underlay MTU − 50).
    pub mtu: u32,
    /// The VTEP MAC, kept across restarts.
    pub mac: Mac,
    /// The device's one address: the subnet's network address as a host route.
    pub address: IpNet,
}

impl VxlanSpec {
    /// Whether an existing device can be kept as it is (flannel's `vxlanLinksIncompat`,
    /// plus MTU, MAC and address, which Sluice also repairs).
    pub fn matches(&self, found: &VxlanSpec) -> bool {
        self == found
    }
}

/// The kernel operations the overlay needs. Async because the real one is a netlink
/// conversation driven by the daemon's runtime.
pub trait Kernel: Send {
    /// Errors of the real kernel interface.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The VXLAN device `name` as it is, if it exists.
    fn device(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<VxlanSpec>, Self::Error>> + Send;
    /// Creates the device (with its address and MAC) and sets it up.
    fn create_device(
        &mut self,
        spec: &VxlanSpec,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Deletes the device (and with it every neighbour and FDB entry on it).
    fn delete_device(&mut self, name: &str)
    -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The overlay state present now: neighbour and FDB entries on `devices`, routes of ours
    /// whose destination lies inside `networks` (nothing else is ours to touch), and the
    /// routes inside `networks` that someone else made (never to be replaced).
    fn observe(
        &mut self,
        devices: &[String],
        networks: &[IpNet],
    ) -> impl Future<Output = Result<Observed, Self::Error>> + Send;
    /// Applies a plan, in its order, continuing past failures; returns every failure.
    fn apply(&mut self, plan: &Plan) -> impl Future<Output = Vec<Self::Error>> + Send;
}

/// What a reconcile reads from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The overlay state that is ours.
    pub state: Desired,
    /// Destinations inside the pod networks whose main-table route someone else made on
    /// purpose — the kernel's connected routes, static routes, a routing daemon's — with the
    /// route's protocol number. A route there is never replaced: only routes Sluice made
    /// (and flannel's, whose protocol is `boot` or unset) are.
    pub foreign: BTreeMap<IpNet, u8>,
}

/// An in-memory kernel.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel {
    /// Devices by name.
    pub devices: BTreeMap<String, VxlanSpec>,
    /// Neighbour, FDB and route state.
    pub state: Desired,
    /// Operations performed, in order (`create flannel.1`, `apply 3`, …).
    pub log: Vec<String>,
    /// Routes someone else made (destination → protocol), e.g. a connected route.
    pub foreign: BTreeMap<IpNet, u8>,
}

/// The fake never fails.
#[derive(Debug, thiserror::Error)]
#[error("fake kernel error")]
pub struct FakeError;

impl FakeKernel {
    /// Forgets a device and everything on it, as `ip link del` would.
    pub fn lose_device(&mut self, name: &str) {
        self.devices.remove(name);
        self.state.neighbors.retain(|(dev, _), _| dev != name);
        self.state.fdb.retain(|(dev, _), _| dev != name);
        self.state.routes.retain(|_, hop| !hop.uses_device(name));
    }
}

impl Kernel for FakeKernel {
    type Error = FakeError;

    async fn device(&mut self, name: &str) -> Result<Option<VxlanSpec>, FakeError> {
        Ok(self.devices.get(name).cloned())
    }

    async fn create_device(&mut self, spec: &VxlanSpec) -> Result<(), FakeError> {
        self.log.push(format!("create {}", spec.name));
        self.devices.insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    async fn delete_device(&mut self, name: &str) -> Result<(), FakeError> {
        self.log.push(format!("delete {name}"));
        self.lose_device(name);
        Ok(())
    }

    async fn observe(
        &mut self,
        devices: &[String],
        networks: &[IpNet],
    ) -> Result<Observed, FakeError> {
        let s = &self.state;
        let inside = |dst: &IpNet| networks.iter().any(|n| n.contains(dst));
        let state = Desired {
            neighbors: s
                .neighbors
                .iter()
                .filter(|((dev, _), _)| devices.contains(dev))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            fdb: s
                .fdb
                .iter()
                .filter(|((dev, _), _)| devices.contains(dev))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            routes: s
                .routes
                .iter()
                .filter(|(dst, _)| inside(dst))
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        };
        let foreign = self
            .foreign
            .iter()
            .filter(|(dst, _)| inside(dst))
            .map(|(k, v)| (*k, *v))
            .collect();
        Ok(Observed { state, foreign })
    }

    async fn apply(&mut self, plan: &Plan) -> Vec<FakeError> {
        self.log.push(format!("apply {}", plan.len()));
        plan.apply_to(&mut self.state);
        Vec::new()
    }
}
