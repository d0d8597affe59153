//! Snapshot → map contents, pure. What each Service address means is decided here, with the
//! shared categorisation ([`Snapshot::categorize`]), so iTP/eTP Local, the terminating
//! fallback, topology and affinity behave exactly as in the other modes; the programs only
//! look up and pick.
//!
//! The socket layer only ever sees traffic from this node's pods and the node itself, so:
//! the ClusterIP gets the internal verdict (`internalTrafficPolicy`); external IPs,
//! load-balancer IPs and node ports on this node's addresses get the Cluster set, as
//! kube-proxy short-circuits pod- and host-originated traffic to them. Each ClusterIP also
//! gets a wildcard entry (port 0, protocol 0) that rejects the ports it does not serve.
//!
//! The tc path (scope `EXTERNAL`) sees traffic from outside the node: node ports, external
//! and load-balancer IPs get the external verdict (`externalTrafficPolicy`: Local keeps the
//! client's source and uses local endpoints only; Cluster is SNATed), and the ClusterIP
//! (routed in from outside) the internal verdict, SNATed.
//!
//! Each snapshot is one address family (the shared core hands a dual-stack cluster over as
//! one snapshot per family, as it does to nftables' `ip` and `ip6` tables): an IPv4 snapshot
//! fills the IPv4 maps, an IPv6 one the IPv6 maps (`SLUICE_SVC6`, `SLUICE_SLOTS6`) with the
//! same categorisation and verdicts, socket and tc (`EXTERNAL`) scopes alike; source-range
//! prefixes go to the family's own trie.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use sluice_ebpf_common::{
    Backend, Backend6, ServiceKey, ServiceKey6, ServiceValue, SlotKey, scope, service_flags,
};
use sluice_model::service::{Endpoint, IpFamily, ServicePort, ServicePortName, TrafficPolicy};
use sluice_proxy_core::Snapshot;
use sluice_proxy_core::backend::BackendOptions;

/// What rendering needs besides the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderConfig {
    /// The addresses node ports are served on (socket level: only these, this node's), of
    /// both families (each snapshot uses its own family's).
    pub nodeport_ips: Vec<IpAddr>,
    /// The node's primary IPs: when one is inside a Service's `loadBalancerSourceRanges`,
    /// the node's own sockets may reach its load-balancer IPs (kube-proxy's `allowFromNode`).
    pub node_ips: Vec<IpAddr>,
}

impl RenderConfig {
    /// From the backend options: `--nodeport-addresses` as resolved, else the node IPs.
    pub fn of(opts: &BackendOptions) -> Self {
        let ips = opts.nodeport_addresses.as_ref().unwrap_or(&opts.node_ips);
        Self {
            nodeport_ips: ips.clone(),
            node_ips: opts.node_ips.clone(),
        }
    }
}

/// What the service and slot maps hold (or should), of both families.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapSet {
    /// Service map.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// Backend-slot map.
    pub slots: BTreeMap<SlotKey, Backend>,
    /// `loadBalancerSourceRanges`: (service id, allowed source prefix), both families (each
    /// into its family's trie; the ids are per family).
    pub ranges: BTreeSet<(u32, ipnet::IpNet)>,
    /// IPv6 service map.
    pub services6: BTreeMap<ServiceKey6, ServiceValue>,
    /// IPv6 backend-slot map (its own service ids).
    pub slots6: BTreeMap<SlotKey, Backend6>,
}

impl MapSet {
    /// Adds `other`'s entries; keys already present keep their value (the first port in name
    /// order wins an address both claim).
    pub fn merge(&mut self, other: &MapSet) {
        for (k, v) in &other.services {
            self.services.entry(*k).or_insert(*v);
        }
        for (k, v) in &other.slots {
            self.slots.entry(*k).or_insert(*v);
        }
        self.ranges.extend(other.ranges.iter().copied());
        for (k, v) in &other.services6 {
            self.services6.entry(*k).or_insert(*v);
        }
        for (k, v) in &other.slots6 {
            self.slots6.entry(*k).or_insert(*v);
        }
    }

    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.slots.is_empty()
            && self.ranges.is_empty()
            && self.services6.is_empty()
            && self.slots6.is_empty()
    }

    /// The service ids the entries of `family` use.
    pub fn ids(&self, family: IpFamily) -> impl Iterator<Item = u32> + '_ {
        let (v4, v6) = match family {
            IpFamily::V4 => (Some(self.services.values()), None),
            IpFamily::V6 => (None, Some(self.services6.values())),
        };
        (v4.into_iter().flatten())
            .chain(v6.into_iter().flatten())
            .map(|v| v.service_id)
            .filter(|id| *id != 0)
    }

    /// Only the entries of `family` (a full sync of one family compares only its maps).
    pub fn of_family(&self, family: IpFamily) -> MapSet {
        match family {
            IpFamily::V4 => MapSet {
                services: self.services.clone(),
                slots: self.slots.clone(),
                ranges: self.ranges_of(family),
                ..MapSet::default()
            },
            IpFamily::V6 => MapSet {
                services6: self.services6.clone(),
                slots6: self.slots6.clone(),
                ranges: self.ranges_of(family),
                ..MapSet::default()
            },
        }
    }

    fn ranges_of(&self, family: IpFamily) -> BTreeSet<(u32, ipnet::IpNet)> {
        (self.ranges.iter())
            .filter(|(_, n)| family.contains(&n.addr()))
            .copied()
            .collect()
    }

    /// Sets the entry of `vip`/`proto` in `scope` (its family's map).
    pub fn put_service(&mut self, vip: SocketAddr, proto: u8, scope: u8, value: ServiceValue) {
        match vip {
            SocketAddr::V4(a) => {
                self.services
                    .insert(ServiceKey::new(a, proto, scope), value);
            }
            SocketAddr::V6(a) => {
                self.services6
                    .insert(ServiceKey6::new(a, proto, scope), value);
            }
        }
    }

    /// Sets slot `key` to the backend at `ep` (its family's map).
    pub fn put_slot(&mut self, key: SlotKey, ep: SocketAddr, proto: u8) {
        match ep {
            SocketAddr::V4(a) => {
                self.slots.insert(key, Backend::new(a, proto));
            }
            SocketAddr::V6(a) => {
                self.slots6.insert(key, Backend6::new(a, proto));
            }
        }
    }

    /// The entry the programs find for `dst`/`proto` in `scope`: the exact one, else the
    /// address's wildcard entry.
    pub fn service(&self, dst: SocketAddr, proto: u8, scope: u8) -> Option<ServiceValue> {
        match dst {
            SocketAddr::V4(a) => {
                let key = ServiceKey::new(a, proto, scope);
                (self.services.get(&key))
                    .or_else(|| self.services.get(&key.wildcard()))
                    .copied()
            }
            SocketAddr::V6(a) => {
                let key = ServiceKey6::new(a, proto, scope);
                (self.services6.get(&key))
                    .or_else(|| self.services6.get(&key.wildcard()))
                    .copied()
            }
        }
    }

    /// The backend in slot `key` of the `v6` or IPv4 slot map.
    pub fn backend(&self, v6: bool, key: &SlotKey) -> Option<SocketAddr> {
        match v6 {
            false => self.slots.get(key).map(|b| SocketAddr::V4(b.socket_addr())),
            true => self
                .slots6
                .get(key)
                .map(|b| SocketAddr::V6(b.socket_addr())),
        }
    }
}

/// Service ids: one per (Service port, endpoint set), stable while the port lives, so a
/// change rewrites only that port's entries. 0 is never used (the wildcard entries carry it).
#[derive(Clone, Debug, Default)]
pub struct Ids {
    by_port: BTreeMap<(ServicePortName, u8), u32>,
    free: Vec<u32>,
    next: u32,
}

impl Ids {
    /// The id of `port`'s set `kind`, allocated on first use.
    pub fn get(&mut self, port: &ServicePortName, kind: u8) -> u32 {
        if let Some(id) = self.by_port.get(&(port.clone(), kind)) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_port.insert((port.clone(), kind), id);
        id
    }

    /// Frees `port`'s ids except those in `keep`.
    pub fn release(&mut self, port: &ServicePortName, keep: &[u32]) {
        for kind in [KIND_INTERNAL, KIND_CLUSTER, KIND_EXTERNAL] {
            if let Some(id) = self.by_port.get(&(port.clone(), kind)).copied()
                && !keep.contains(&id)
            {
                self.by_port.remove(&(port.clone(), kind));
                self.free.push(id);
            }
        }
    }

    /// Allocates new ids above `max` (ids another process left in adopted maps), so a new
    /// entry never points at a slot an old entry still uses.
    pub fn start_above(&mut self, max: u32) {
        self.next = self.next.max(max);
        self.free.retain(|id| *id > max);
    }

    /// Whether no id is allocated.
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }
}

const KIND_INTERNAL: u8 = 0;
const KIND_CLUSTER: u8 = 1;
const KIND_EXTERNAL: u8 = 2;

/// One endpoint set's verdict, as map entries want it.
enum Set<'a> {
    Forward(Vec<&'a Endpoint>),
    Reject,
    Drop,
}

impl Set<'_> {
    fn same(&self, other: &Set<'_>) -> bool {
        match (self, other) {
            (Set::Forward(a), Set::Forward(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr() == y.addr())
            }
            (Set::Reject, Set::Reject) | (Set::Drop, Set::Drop) => true,
            _ => false,
        }
    }
}

/// The entries of one Service port in its snapshot's family (nothing for a port that is not
/// proxied).
pub fn render_port(
    cfg: &RenderConfig,
    snapshot: &Snapshot,
    name: &ServicePortName,
    ids: &mut Ids,
) -> MapSet {
    let mut out = MapSet::default();
    let family = snapshot.family();
    let (Some(port), Some(cat)) = (snapshot.service_port(name), snapshot.categorize(name)) else {
        return out;
    };
    let Some(cluster_ip) = port.cluster_ip(family).filter(|ip| family.contains(ip)) else {
        return out;
    };
    let proto = name.protocol.number();
    let internal = set_of(cat.internal());
    let external = set_of(cat.external());
    // Pod- and host-originated traffic to external addresses: the Cluster set.
    let cluster = match (&cat.cluster, cat.has_any_endpoints) {
        (_, false) => Set::Reject,
        (Some(eps), true) if !eps.is_empty() => Set::Forward(eps.clone()),
        _ => Set::Drop,
    };
    let internal_id = ids.get(name, KIND_INTERNAL);
    let cluster_id = match cluster.same(&internal) {
        true => internal_id,
        false => ids.get(name, KIND_CLUSTER),
    };
    let external_id = if external.same(&cluster) {
        cluster_id
    } else if external.same(&internal) {
        internal_id
    } else {
        ids.get(name, KIND_EXTERNAL)
    };
    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    let (sock, ext) = (scope::SOCKET, scope::EXTERNAL);
    let snat = match port.external_traffic_policy {
        TrafficPolicy::Local => 0,
        TrafficPolicy::Cluster => service_flags::SNAT,
    };
    let mut add = |vip: SocketAddr, scope: u8, id: u32, set: &Set<'_>, flags: u16| {
        add_set(&mut out, vip, scope, id, set, port, proto, flags);
    };
    add(at(cluster_ip, port.port), sock, internal_id, &internal, 0);
    add(
        at(cluster_ip, port.port),
        ext,
        internal_id,
        &internal,
        service_flags::SNAT,
    );
    let ranges: Vec<ipnet::IpNet> = (port.load_balancer_source_ranges.iter())
        .filter(|n| family.contains(&n.addr()))
        .copied()
        .collect();
    // The node's own sockets pass the ranges when a node IP is inside them.
    let node_allowed = match (cfg.node_ips.iter()).any(|ip| ranges.iter().any(|n| n.contains(ip))) {
        true => service_flags::NODE_ALLOWED,
        false => 0,
    };
    for ip in external_addresses(port, family) {
        // Source ranges guard the load-balancer IPs only (not external IPs, not node ports).
        let guarded = match !ranges.is_empty() && port.load_balancer_vips.contains(&ip) {
            true => service_flags::SOURCE_RANGES,
            false => 0,
        };
        let node = match guarded {
            0 => 0,
            _ => node_allowed,
        };
        add(
            at(ip, port.port),
            sock,
            cluster_id,
            &cluster,
            guarded | node,
        );
        add(
            at(ip, port.port),
            ext,
            external_id,
            &external,
            snat | guarded,
        );
    }
    if let Some(node_port) = port.node_port {
        for ip in (cfg.nodeport_ips.iter()).filter(|ip| family.contains(ip)) {
            add(at(*ip, node_port), sock, cluster_id, &cluster, 0);
            add(at(*ip, node_port), ext, external_id, &external, snat);
        }
    }
    if !port.load_balancer_vips.is_empty() {
        out.ranges
            .extend(ranges.iter().map(|n| (external_id, n.trunc())));
    }
    out.put_service(at(cluster_ip, 0), 0, sock, wildcard_value());
    ids.release(name, &[internal_id, cluster_id, external_id]);
    out
}

fn set_of<'a>(verdict: sluice_proxy_core::Verdict<'_, 'a>) -> Set<'a> {
    match verdict {
        sluice_proxy_core::Verdict::Forward(eps) => Set::Forward(eps.to_vec()),
        sluice_proxy_core::Verdict::Reject => Set::Reject,
        sluice_proxy_core::Verdict::Drop => Set::Drop,
    }
}

/// The whole snapshot: every port's entries, the first port in name order winning an
/// address two claim. Ids of ports no longer in the snapshot are kept (the caller releases
/// them).
pub fn render(
    cfg: &RenderConfig,
    snapshot: &Snapshot,
    ids: &mut Ids,
) -> BTreeMap<ServicePortName, MapSet> {
    (snapshot.service_ports())
        .map(|p| (p.name.clone(), render_port(cfg, snapshot, &p.name, ids)))
        .filter(|(_, set)| !set.is_empty())
        .collect()
}

/// The union of per-port entries.
pub fn union<'a>(ports: impl IntoIterator<Item = &'a MapSet>) -> MapSet {
    let mut all = MapSet::default();
    for set in ports {
        all.merge(set);
    }
    all
}

fn external_addresses(port: &ServicePort, family: IpFamily) -> impl Iterator<Item = IpAddr> + '_ {
    (port.external_ips.iter())
        .chain(&port.load_balancer_vips)
        .filter(move |ip| family.contains(ip))
        .copied()
}

fn wildcard_value() -> ServiceValue {
    ServiceValue {
        service_id: 0,
        backend_count: 0,
        flags: service_flags::REJECT,
        affinity_timeout: 0,
    }
}

#[allow(clippy::too_many_arguments, reason = "one entry's parts, all needed")]
fn add_set(
    out: &mut MapSet,
    vip: SocketAddr,
    scope: u8,
    id: u32,
    set: &Set<'_>,
    port: &ServicePort,
    proto: u8,
    flags: u16,
) {
    let mut value = ServiceValue {
        service_id: id,
        backend_count: 0,
        flags,
        affinity_timeout: 0,
    };
    match set {
        Set::Reject => value.flags |= service_flags::REJECT,
        Set::Drop => value.flags |= service_flags::DROP,
        Set::Forward(eps) => {
            // The entry's own family's endpoints (a snapshot holds one family).
            let same: Vec<SocketAddr> = (eps.iter())
                .map(|ep| ep.addr())
                .filter(|a| a.is_ipv6() == vip.is_ipv6())
                .collect();
            value.backend_count = u16::try_from(same.len()).unwrap_or(u16::MAX);
            for (i, addr) in same.iter().take(usize::from(u16::MAX)).enumerate() {
                let slot = SlotKey {
                    service_id: id,
                    slot: u32::try_from(i + 1).unwrap_or(u32::MAX),
                };
                out.put_slot(slot, *addr, proto);
            }
            if let Some(aff) = &port.session_affinity {
                value.flags |= service_flags::AFFINITY;
                value.affinity_timeout = aff.timeout_seconds;
            }
        }
    }
    out.put_service(vip, proto, scope, value);
}
