//! A packet's way through an iptables ruleset — the one `iptables-save` reads back from the
//! kernel, or a rendering — for `explain` and the conformance suite's second runner.
//!
//! It walks the hooks a new connection's first packet meets: nat PREROUTING (from outside
//! the node) or OUTPUT (from the node itself), then, when nothing rewrote the destination,
//! filter INPUT, FORWARD or OUTPUT. Built-in chains missing the jumps into ours (a rendering
//! has none) get kube-proxy's jump rules. Every branch of a `statistic` rule is followed, so
//! the outcome lists every endpoint the Service can reach and whether that way masquerades.
//! Affinity re-checks never match (a first packet has no `recent` entry); marks set by MARK
//! are tracked; `--ctstate` sees NEW, plus DNAT once the destination was rewritten.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use sluice_proxy_core::explain::Packet;
use sluice_proxy_core::explain::{Origin, Outcome};

use crate::dump::Dump;
use crate::jumps::{JUMPS, KUBELET_JUMPS, jump_line};
use crate::rule::{Base, Part, Rule};

/// A parsed ruleset and the node it is on.
pub struct Tracer<'a> {
    tables: BTreeMap<String, BTreeMap<String, Vec<Rule>>>,
    local_addrs: &'a [IpAddr],
    pod_sources: &'a [IpNet],
}

/// Where a packet's walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Accept,
    Drop,
    Reject,
    Dnat(SocketAddr, bool),
}

/// The packet as a chain sees it.
#[derive(Clone, Copy, Debug)]
struct Pkt {
    src: IpAddr,
    dst: SocketAddr,
    proto: &'static str,
    mark: u32,
    remote: bool,
    dnat: bool,
}

/// What walking a chain gave: the ends of the branches that ended, and the packet as it
/// leaves the chain when one way through falls off its end (or RETURNs).
struct Flow {
    ends: Vec<End>,
    through: Option<Pkt>,
}

const MAX_DEPTH: usize = 32;

impl<'a> Tracer<'a> {
    /// A tracer over `dump` on a node with `local_addrs`. Rules that cannot be read are
    /// left out.
    pub fn new(dump: &Dump, local_addrs: &'a [IpAddr]) -> Self {
        let mut tables: BTreeMap<String, BTreeMap<String, Vec<Rule>>> = BTreeMap::new();
        for t in &dump.tables {
            let chains = tables.entry(t.name.clone()).or_default();
            for c in &t.chains {
                let rules = c.rules.iter().filter_map(|r| Rule::parse(r).ok()).collect();
                chains.insert(c.name.clone(), rules);
            }
        }
        let mut tracer = Self {
            tables,
            local_addrs,
            pod_sources: &[],
        };
        tracer.add_missing_jumps();
        tracer
    }

    /// A packet from `pods` (not from the node) counts as arriving on a pod interface for
    /// `-i` matches (the BridgeInterface and InterfaceNamePrefix detectors).
    pub fn with_pod_sources(self, pods: &'a [IpNet]) -> Self {
        Self {
            pod_sources: pods,
            ..self
        }
    }

    fn add_missing_jumps(&mut self) {
        for j in JUMPS.iter().chain(&KUBELET_JUMPS) {
            let Some(chains) = self.tables.get_mut(j.table) else {
                continue;
            };
            if !chains.contains_key(j.to) {
                continue;
            }
            let builtin = chains.entry(j.from.to_owned()).or_default();
            if !builtin.iter().any(|r| r.target_name() == Some(j.to))
                && let Ok(rule) = Rule::parse(&jump_line(j))
            {
                builtin.insert(0, rule);
            }
        }
    }

    fn is_local(&self, ip: &IpAddr) -> bool {
        ip.is_loopback() || self.local_addrs.contains(ip)
    }

    fn walk(&self, packet: &Packet, origin: Origin) -> Outcome {
        let pkt = Pkt {
            src: packet.src,
            dst: packet.dst,
            proto: packet.protocol.as_lower_str(),
            mark: 0,
            remote: origin == Origin::Remote,
            dnat: false,
        };
        let nat_hook = if pkt.remote { "PREROUTING" } else { "OUTPUT" };
        let nat = self.chain("nat", nat_hook, pkt, 0);
        let dnat: BTreeMap<SocketAddr, bool> = (nat.ends.iter())
            .filter_map(|e| match e {
                End::Dnat(to, masq) => Some((*to, *masq)),
                _ => None,
            })
            .collect();
        if !dnat.is_empty() {
            return Outcome::Dnat { endpoints: dnat };
        }
        let filter_hook = match (pkt.remote, self.is_local(&pkt.dst.ip())) {
            (false, _) => "OUTPUT",
            (true, true) => "INPUT",
            (true, false) => "FORWARD",
        };
        let filter = self.chain("filter", filter_hook, nat.through.unwrap_or(pkt), 0);
        match filter.ends.first() {
            Some(End::Drop) => Outcome::Drop,
            Some(End::Reject) => Outcome::Reject,
            _ => Outcome::Untouched,
        }
    }

    fn chain(&self, table: &str, chain: &str, mut pkt: Pkt, depth: usize) -> Flow {
        let mut ends = Vec::new();
        let rules = (self.tables.get(table))
            .and_then(|t| t.get(chain))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if depth > MAX_DEPTH {
            return Flow {
                ends,
                through: None,
            };
        }
        for rule in rules {
            if !self.matches(rule, &pkt) {
                continue;
            }
            let Some(target) = &rule.target else {
                continue;
            };
            let branch = rule.module("statistic").is_some();
            match target.name.as_str() {
                "RETURN" => {
                    return Flow {
                        ends,
                        through: Some(pkt),
                    };
                }
                "ACCEPT" | "DROP" | "REJECT" | "DNAT" => {
                    ends.push(self.end(target, &pkt));
                    if !branch {
                        return Flow {
                            ends,
                            through: None,
                        };
                    }
                }
                "MARK" => pkt.mark = set_mark(pkt.mark, target),
                "MASQUERADE" | "SNAT" | "LOG" => {}
                sub => {
                    let flow = self.chain(table, sub, pkt, depth + 1);
                    ends.extend(flow.ends);
                    match flow.through {
                        Some(after) => pkt = after,
                        None if branch => {}
                        None => {
                            return Flow {
                                ends,
                                through: None,
                            };
                        }
                    }
                }
            }
        }
        Flow {
            ends,
            through: Some(pkt),
        }
    }

    fn end(&self, target: &Part, pkt: &Pkt) -> End {
        match target.name.as_str() {
            "DROP" => End::Drop,
            "REJECT" => End::Reject,
            "DNAT" => {
                let to = target.value("to-destination").and_then(|v| v.parse().ok());
                match to {
                    Some(to) => End::Dnat(to, pkt.mark != 0),
                    None => End::Accept,
                }
            }
            _ => End::Accept,
        }
    }

    fn matches(&self, rule: &Rule, pkt: &Pkt) -> bool {
        rule.base.iter().all(|b| self.base_matches(b, pkt))
            && rule.matches.iter().all(|m| self.module_matches(m, pkt))
    }

    fn base_matches(&self, b: &Base, pkt: &Pkt) -> bool {
        let hit = match b.flag {
            's' => contains(&b.value, pkt.src),
            'd' => contains(&b.value, pkt.dst.ip()),
            'p' => b.value == pkt.proto,
            'i' => pkt.remote && self.pod_sources.iter().any(|n| n.contains(&pkt.src)),
            _ => true,
        };
        hit != b.negated
    }

    fn module_matches(&self, m: &Part, pkt: &Pkt) -> bool {
        m.opts.iter().all(|o| {
            let v = o.values.first().map(String::as_str).unwrap_or_default();
            let hit = match (m.name.as_str(), o.name.as_str()) {
                ("tcp" | "udp" | "sctp", "dport") => v.parse() == Ok(pkt.dst.port()),
                ("addrtype", "dst-type") => (v == "LOCAL") == self.is_local(&pkt.dst.ip()),
                ("addrtype", "src-type") => (v == "LOCAL") == self.is_local(&pkt.src),
                ("mark", "mark") => mark_matches(pkt.mark, v),
                ("conntrack", "ctstate") => v
                    .split(',')
                    .any(|s| s == "NEW" || (s == "DNAT" && pkt.dnat)),
                ("recent", "rcheck" | "update") => false,
                _ => true,
            };
            hit != o.negated
        })
    }
}

impl sluice_proxy_core::explain::Tracer for Tracer<'_> {
    fn trace(&self, packet: &Packet, origin: Origin) -> Outcome {
        self.walk(packet, origin)
    }
}

fn contains(cidr: &str, ip: IpAddr) -> bool {
    cidr.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))
}

fn hex(v: &str) -> u32 {
    u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0)
}

/// `MARK --set-xmark value/mask` (the canonical form of every MARK option).
fn set_mark(mark: u32, target: &Part) -> u32 {
    let Some((value, mask)) = target.value("set-xmark").and_then(|v| v.split_once('/')) else {
        return mark;
    };
    (mark & !hex(mask)) ^ hex(value)
}

/// `-m mark --mark value[/mask]`.
fn mark_matches(mark: u32, v: &str) -> bool {
    let (value, mask) = v.split_once('/').unwrap_or((v, "0xffffffff"));
    mark & hex(mask) == hex(value)
}
