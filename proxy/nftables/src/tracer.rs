//! A packet tracer over the *rendered* ruleset: walks the base chains in hook order the way
//! the kernel would for the first packet of a connection, following jumps, gotos and map
//! lookups, and exploring every branch of a random bucket choice. Tests, the conformance
//! suite and `explain` hold it against the model's verdict, so the rules we program and the
//! semantics we claim cannot drift apart without a failing test.
//!
//! Rendered, not read back: the kernel view keeps rule fingerprints, not decoded rules, and
//! a full sync repairs any difference between the two within one sync period.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use sluice_nft::{ElementData, Field, KeyValue, Proto, Stmt, Verdict};
use sluice_proxy_core::explain::{Origin, Outcome, Packet};

use super::desired::Desired;
use super::port::proto;

/// The first packet of a connection, as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pkt {
    src: IpAddr,
    proto: Proto,
    origin: Origin,
}

/// How a chain walk ended for one branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Fell off the end, or `return`.
    Continue,
    /// `accept` (including a NAT statement).
    Accept,
    /// `drop`.
    Drop,
    /// `reject`.
    Reject,
}

#[derive(Clone, Debug)]
struct State {
    /// The connection's destination as conntrack recorded it (`ct original … daddr`).
    orig_daddr: IpAddr,
    daddr: IpAddr,
    dport: u16,
    mark: u32,
    dnat: Option<SocketAddr>,
    masquerade: bool,
}

/// The tracer over one family's rendered table.
pub struct Tracer<'a> {
    table: &'a Desired,
    local_addrs: &'a [IpAddr],
    /// Sources that arrive on a pod interface (for `iifname` detectors).
    pod_sources: &'a [IpNet],
}

impl sluice_proxy_core::explain::Tracer for Tracer<'_> {
    fn trace(&self, packet: &Packet, origin: Origin) -> Outcome {
        self.walk(packet, origin)
    }
}

/// Jumps deeper than this mean a loop in the rendered rules.
const MAX_DEPTH: usize = 16;

impl<'a> Tracer<'a> {
    /// A tracer for `table` on a node with `local_addrs` (loopback counts as local too).
    pub fn new(table: &'a Desired, local_addrs: &'a [IpAddr]) -> Self {
        Self {
            table,
            local_addrs,
            pod_sources: &[],
        }
    }

    /// The tracer knows no interfaces: a packet from `pods` (and not from the node itself)
    /// counts as arriving on a pod interface, any other as not (`iifname` matches of the
    /// BridgeInterface and InterfaceNamePrefix detectors).
    pub fn with_pod_sources(self, pods: &'a [IpNet]) -> Self {
        Self {
            pod_sources: pods,
            ..self
        }
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.local_addrs.contains(ip)
    }

    /// Traces the packet through the hooks it meets.
    fn walk(&self, packet: &Packet, origin: Origin) -> Outcome {
        let p = &Pkt {
            src: packet.src,
            proto: proto(packet.protocol),
            origin,
        };
        let start = State {
            orig_daddr: packet.dst.ip(),
            daddr: packet.dst.ip(),
            dport: packet.dst.port(),
            mark: 0,
            dnat: None,
            masquerade: false,
        };
        let (pre, nat, filter_local) = match p.origin {
            Origin::Remote => ("filter-prerouting-pre-dnat", "nat-prerouting", None),
            Origin::Local => (
                "filter-output-pre-dnat",
                "nat-output",
                Some("filter-output"),
            ),
        };
        let mut finals = Vec::new();
        for (end, st) in self.hook(pre, p, start) {
            if end != End::Continue && end != End::Accept {
                return outcome_of(end);
            }
            for (end, st) in self.hook(nat, p, st) {
                if matches!(end, End::Drop | End::Reject) {
                    return outcome_of(end);
                }
                let filter = filter_local.unwrap_or(if self.is_local(&st.daddr) {
                    "filter-input"
                } else {
                    "filter-forward"
                });
                for (end, st) in self.hook(filter, p, st) {
                    if matches!(end, End::Drop | End::Reject) {
                        return outcome_of(end);
                    }
                    let to_local = p.origin == Origin::Remote && self.is_local(&st.daddr);
                    let outs = if to_local {
                        vec![(End::Continue, st)]
                    } else {
                        self.hook("nat-postrouting", p, st)
                    };
                    finals.extend(outs.into_iter().map(|(_, s)| s));
                }
            }
        }
        let mut endpoints: BTreeMap<SocketAddr, bool> = BTreeMap::new();
        for st in &finals {
            if let Some(ep) = st.dnat {
                *endpoints.entry(ep).or_default() |= st.masquerade;
            }
        }
        if endpoints.is_empty() {
            return Outcome::Untouched;
        }
        Outcome::Dnat { endpoints }
    }

    fn hook(&self, chain: &str, p: &Pkt, st: State) -> Vec<(End, State)> {
        if !self.table.chains.contains_key(chain) {
            return vec![(End::Continue, st)];
        }
        self.chain(chain, p, st, 0)
    }

    /// Runs `name` from its first rule; every branch's ending and state.
    fn chain(&self, name: &str, p: &Pkt, st: State, depth: usize) -> Vec<(End, State)> {
        let Some(body) = self.table.chains.get(name) else {
            return vec![(End::Drop, st)];
        };
        if depth > MAX_DEPTH {
            return vec![(End::Drop, st)];
        }
        self.rules_from(&body.rules, 0, p, st, depth)
    }

    fn rules_from(
        &self,
        rules: &[sluice_nft::Rule],
        i: usize,
        p: &Pkt,
        st: State,
        depth: usize,
    ) -> Vec<(End, State)> {
        let Some(rule) = rules.get(i) else {
            return vec![(End::Continue, st)];
        };
        let mut out = Vec::new();
        for (step, st) in self.stmts(&rule.stmts, p, st, depth) {
            match step {
                Step::Next => out.extend(self.rules_from(rules, i + 1, p, st, depth)),
                Step::Return => out.push((End::Continue, st)),
                Step::End(end) => out.push((end, st)),
            }
        }
        out
    }

    /// Evaluates one rule's statements; each branch says how the chain goes on.
    fn stmts(&self, stmts: &[Stmt], p: &Pkt, mut st: State, depth: usize) -> Vec<(Step, State)> {
        for (i, s) in stmts.iter().enumerate() {
            match s {
                Stmt::Vmap { key, map } => {
                    let k: Vec<KeyValue> = key.iter().map(|f| self.value(*f, p, &st)).collect();
                    return match self.lookup(map, &k) {
                        Some(v) => self.verdict(&v, p, st, depth),
                        None => vec![(Step::Next, st)],
                    };
                }
                Stmt::Verdict(v) => return self.verdict(v, p, st, depth),
                Stmt::DaddrFromMap { key, map } => {
                    let found = self
                        .keys(key, p, &st)
                        .into_iter()
                        .find_map(|k| self.data(map, &k));
                    match found {
                        Some(ElementData::Addr(a)) => st.daddr = a,
                        _ => return vec![(Step::Next, st)],
                    }
                }
                // Every bucket the key can draw, each a branch.
                Stmt::DnatFromMap { key, map } => {
                    let out: Vec<(Step, State)> = (self.keys(key, p, &st).into_iter())
                        .filter_map(|k| match self.data(map, &k)? {
                            ElementData::AddrPort(addr, port) => {
                                let mut st = st.clone();
                                st.daddr = addr;
                                st.dport = port;
                                st.dnat = Some(SocketAddr::new(addr, port));
                                Some((Step::End(End::Accept), st))
                            }
                            ElementData::Addr(_) => None,
                        })
                        .collect();
                    return if out.is_empty() {
                        vec![(Step::Next, st)]
                    } else {
                        out
                    };
                }
                Stmt::Dnat { addr, port } => {
                    st.daddr = *addr;
                    st.dport = *port;
                    st.dnat = Some(SocketAddr::new(*addr, *port));
                    return vec![(Step::End(End::Accept), st)];
                }
                Stmt::Masquerade { .. } => {
                    st.masquerade = true;
                    return vec![(Step::End(End::Accept), st)];
                }
                Stmt::Reject { .. } => return vec![(Step::End(End::Reject), st)],
                // A random choice: explore the match and, unless certain, the miss.
                Stmt::Numgen { modulus } if *modulus > 1 => {
                    let mut out = self.stmts(&stmts[i + 1..], p, st.clone(), depth);
                    out.push((Step::Next, st));
                    return out;
                }
                Stmt::Numgen { .. } => {}
                Stmt::MarkOr(bits) => st.mark |= bits,
                Stmt::MarkXor(bits) => st.mark ^= bits,
                Stmt::UpdateSaddr(_) | Stmt::Counter | Stmt::CtStateNew => {}
                other => {
                    if !self.matches(other, p, &st) {
                        return vec![(Step::Next, st)];
                    }
                }
            }
        }
        vec![(Step::Next, st)]
    }

    fn verdict(&self, v: &Verdict, p: &Pkt, st: State, depth: usize) -> Vec<(Step, State)> {
        match v {
            Verdict::Accept => vec![(Step::End(End::Accept), st)],
            Verdict::Drop => vec![(Step::End(End::Drop), st)],
            Verdict::Return => vec![(Step::Return, st)],
            Verdict::Jump(c) => self
                .chain(c, p, st, depth + 1)
                .into_iter()
                .map(|(end, s)| match end {
                    End::Continue => (Step::Next, s),
                    other => (Step::End(other), s),
                })
                .collect(),
            Verdict::Goto(c) => self
                .chain(c, p, st, depth + 1)
                .into_iter()
                .map(|(end, s)| match end {
                    End::Continue => (Step::Return, s),
                    other => (Step::End(other), s),
                })
                .collect(),
        }
    }

    fn matches(&self, s: &Stmt, p: &Pkt, st: &State) -> bool {
        match s {
            Stmt::InSet { field, set, negate } => {
                let v = self.value(*field, p, st);
                self.in_set(set, &v) != *negate
            }
            Stmt::InConcat { key, set } => {
                let k: Vec<KeyValue> = key.iter().map(|f| self.value(*f, p, st)).collect();
                self.table
                    .elements
                    .get(set)
                    .is_some_and(|e| e.contains_key(&(k, None)))
            }
            Stmt::Prefix { field, net, negate } => {
                let KeyValue::Addr(a) = self.value(*field, p, st) else {
                    return false;
                };
                net.contains(&a) != *negate
            }
            Stmt::L4Proto(proto) => p.proto == *proto,
            Stmt::FibLocal(field) => {
                let KeyValue::Addr(a) = self.value(*field, p, st) else {
                    return false;
                };
                self.is_local(&a)
            }
            Stmt::MarkClear(mask) => st.mark & mask == 0,
            Stmt::IifName { negate, .. } => {
                let from_pod = p.origin == Origin::Remote
                    && self.pod_sources.iter().any(|n| n.contains(&p.src));
                from_pod != *negate
            }
            _ => true,
        }
    }

    fn value(&self, f: Field, p: &Pkt, st: &State) -> KeyValue {
        match f {
            Field::Saddr => KeyValue::Addr(p.src),
            Field::Daddr => KeyValue::Addr(st.daddr),
            Field::L4Proto => KeyValue::Proto(p.proto),
            Field::Dport => KeyValue::Port(st.dport),
            Field::CtOriginalDaddr => KeyValue::Addr(st.orig_daddr),
            // One draw; `keys` enumerates them all.
            Field::Numgen(_) => KeyValue::Bucket(0),
        }
    }

    /// Every key `fields` can make of this packet: one per bucket of a `numgen` component.
    fn keys(&self, fields: &[Field], p: &Pkt, st: &State) -> Vec<Vec<KeyValue>> {
        let mut keys = vec![Vec::with_capacity(fields.len())];
        for f in fields {
            let values: Vec<KeyValue> = match f {
                Field::Numgen(m) => (0..*m).map(KeyValue::Bucket).collect(),
                _ => vec![self.value(*f, p, st)],
            };
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    values.iter().map(move |v| {
                        let mut k = k.clone();
                        k.push(*v);
                        k
                    })
                })
                .collect();
        }
        keys
    }

    fn data(&self, map: &str, key: &[KeyValue]) -> Option<ElementData> {
        self.table
            .elements
            .get(map)?
            .get(&(key.to_vec(), None))
            .and_then(|e| e.data)
    }

    fn lookup(&self, map: &str, key: &[KeyValue]) -> Option<Verdict> {
        self.table
            .elements
            .get(map)?
            .get(&(key.to_vec(), None))
            .and_then(|e| e.verdict.clone())
    }

    /// Exact keys, or prefixes for interval sets; dynamic (affinity) sets start empty.
    fn in_set(&self, set: &str, v: &KeyValue) -> bool {
        let Some(elems) = self.table.elements.get(set) else {
            return false;
        };
        elems.values().any(|e| match (e.prefix, e.key.first(), v) {
            (Some(len), Some(KeyValue::Addr(net)), KeyValue::Addr(a)) => {
                ipnet::IpNet::new(*net, len).is_ok_and(|n| n.contains(a))
            }
            _ => e.key.len() == 1 && &e.key[0] == v,
        })
    }
}

/// How a rule sends the walk on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// On to the next rule of this chain.
    Next,
    /// Leave this chain (`return`, or the end of a chain reached by `goto`).
    Return,
    /// A terminal verdict.
    End(End),
}

fn outcome_of(end: End) -> Outcome {
    match end {
        End::Reject => Outcome::Reject,
        _ => Outcome::Drop,
    }
}
