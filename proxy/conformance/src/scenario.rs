//! A scenario: the API objects, the proxy's settings, and packets with what must happen to
//! them — one YAML file each, read the same way by every runner.
//!
//! ```yaml
//! name: clusterip
//! summary: what the scenario shows
//! upstream: ["[sig-network] Services should serve a basic endpoint from pods [Conformance]"]
//! proxy: ["--masquerade-all"]          # sluice-proxy flags besides the lab's own
//! objects: |                           # Services and EndpointSlices (the plan's Nodes exist)
//!   apiVersion: v1
//!   kind: Service
//!   ...
//! packets:
//!   - from: web-1                      # a pod, a node (node-originated), client@node1,
//!     to: 10.96.1.1:80                 #   or 192.168.0.251@node1; to IP:port or node1:PORT
//!     proto: tcp                       # tcp (default), udp, sctp
//!     expect: {dnat: [10.244.1.2:8080], masquerade: false}   # or reject, drop, untouched
//!     modes:                           # where a mode deliberately differs, and why
//!       iptables: {expect: untouched, why: "..."}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_model::service::Protocol;

use crate::plan;

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a scenario.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name (the file's stem).
    pub name: String,
    /// What it shows, in a sentence.
    pub summary: String,
    /// The upstream tests it follows (e2e `[Conformance]` names, proxier tests).
    #[serde(default)]
    pub upstream: Vec<String>,
    /// `sluice-proxy` flags besides the plan's base flags.
    #[serde(default)]
    pub proxy: Vec<String>,
    /// Services and EndpointSlices, as multi-document YAML.
    pub objects: String,
    /// The packets and what must happen to them.
    pub packets: Vec<PacketSpec>,
}

/// One packet of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSpec {
    /// Where it comes from.
    pub from: Source,
    /// Where it goes.
    pub to: Dest,
    /// Its protocol.
    #[serde(default = "tcp", deserialize_with = "protocol")]
    pub proto: Protocol,
    /// What must happen to it (kube-proxy's behaviour).
    pub expect: Expect,
    /// Modes that deliberately differ: what they do instead, and why.
    #[serde(default)]
    pub modes: BTreeMap<String, ModeOverride>,
}

/// A mode's deliberate difference for one packet.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeOverride {
    /// What the mode does.
    pub expect: Expect,
    /// Why it differs.
    pub why: String,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

fn protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let text = String::deserialize(d)?;
    Protocol::from_api(&text.to_ascii_uppercase())
        .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not tcp, udp or sctp")))
}

/// Where a packet comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pod of the plan, on its node.
    Pod(&'static plan::PodPlan),
    /// A process on a node of the plan.
    Node(&'static plan::NodePlan),
    /// An address outside the cluster, arriving at a node.
    Outside {
        /// The source address.
        ip: IpAddr,
        /// The node whose rules it meets.
        at: &'static plan::NodePlan,
    },
}

/// Where a packet goes: an address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dest(pub SocketAddr);

/// What must happen to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// DNAT to one of `endpoints`.
    Dnat {
        /// Every endpoint that may answer (all of them are expected to, unless sticky).
        endpoints: Vec<SocketAddr>,
        /// Whether the source is rewritten.
        masquerade: Masquerade,
        /// ClientIP affinity: every packet from one source to one endpoint.
        sticky: bool,
    },
    /// Refused at once: TCP reset or ICMP port unreachable.
    Reject,
    /// Silently dropped.
    Drop,
    /// Not a Service: left alone (it reaches whatever really has the address, if anything).
    Untouched,
}

/// Whether the endpoint sees the original source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masquerade {
    /// The source is kept.
    No,
    /// The source is the node's.
    Yes,
    /// Only when the pod reaches itself (hairpin).
    Hairpin,
}

impl Source {
    /// The packet's source address for `dst`: a node uses loopback for loopback, else its
    /// underlay address (as the lab's routes make the kernel choose).
    pub fn ip(&self, dst: IpAddr) -> IpAddr {
        match (self, dst.is_ipv6()) {
            (Self::Pod(p), false) => p.ip.into(),
            (Self::Pod(p), true) => p.ip6().into(),
            (Self::Node(_), _) if dst.is_loopback() => dst,
            (Self::Node(n), false) => n.ip.into(),
            (Self::Node(n), true) => n.ip6().into(),
            (Self::Outside { ip, .. }, _) => *ip,
        }
    }

    /// The node whose rules the packet meets.
    pub fn node(&self) -> &'static plan::NodePlan {
        match self {
            Self::Pod(p) => plan::node(p.node).expect("the plan's pods are on its nodes"),
            Self::Node(n) => n,
            Self::Outside { at, .. } => at,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(p) => f.write_str(p.name),
            Self::Node(n) => f.write_str(n.name),
            Self::Outside { ip, at } if IpAddr::from(plan::CLIENT) == *ip => {
                write!(f, "client@{}", at.name)
            }
            Self::Outside { ip, at } => write!(f, "{ip}@{}", at.name),
        }
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_source(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_source(text: &str) -> Result<Source, String> {
    if let Some((who, at)) = text.split_once('@') {
        let at = plan::node(at).ok_or_else(|| format!("{at:?} is not a node of the plan"))?;
        let ip = match who {
            "client" => plan::CLIENT.into(),
            ip => ip
                .parse()
                .map_err(|_| format!("{ip:?} is not client or an address"))?,
        };
        return Ok(Source::Outside { ip, at });
    }
    if let Some(p) = plan::pod(text) {
        return Ok(Source::Pod(p));
    }
    plan::node(text)
        .map(Source::Node)
        .ok_or_else(|| format!("{text:?} is no pod, node or client@node of the plan"))
}

impl<'de> Deserialize<'de> for Dest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(addr) = text.parse() {
            return Ok(Self(addr));
        }
        let (name, port) = (text.rsplit_once(':'))
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not IP:PORT")))?;
        let node = plan::node(name)
            .ok_or_else(|| serde::de::Error::custom(format!("{name:?} is not a node")))?;
        let port = port.parse().map_err(serde::de::Error::custom)?;
        Ok(Self(SocketAddr::new(node.ip.into(), port)))
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Dnat(DnatRaw),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DnatRaw {
            dnat: Vec<SocketAddr>,
            #[serde(default)]
            masquerade: MasqRaw,
            #[serde(default)]
            sticky: bool,
        }
        #[derive(Deserialize, Default)]
        #[serde(untagged)]
        enum MasqRaw {
            #[default]
            Absent,
            Bool(bool),
            Word(String),
        }
        let err = |m: String| serde::de::Error::custom(m);
        match Raw::deserialize(d)? {
            Raw::Word(w) => match w.as_str() {
                "reject" => Ok(Self::Reject),
                "drop" => Ok(Self::Drop),
                "untouched" => Ok(Self::Untouched),
                other => Err(err(format!(
                    "{other:?}: expected reject, drop, untouched or {{dnat: [...]}}"
                ))),
            },
            Raw::Dnat(r) => {
                let masquerade = match r.masquerade {
                    MasqRaw::Absent | MasqRaw::Bool(false) => Masquerade::No,
                    MasqRaw::Bool(true) => Masquerade::Yes,
                    MasqRaw::Word(w) if w == "hairpin" => Masquerade::Hairpin,
                    MasqRaw::Word(w) => return Err(err(format!("masquerade: {w:?}"))),
                };
                let mut endpoints = r.dnat;
                endpoints.sort();
                Ok(Self::Dnat {
                    endpoints,
                    masquerade,
                    sticky: r.sticky,
                })
            }
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dnat {
                endpoints,
                masquerade,
                sticky,
            } => {
                let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                write!(f, "DNAT {}", list.join(","))?;
                match masquerade {
                    Masquerade::No => {}
                    Masquerade::Yes => f.write_str(" masq")?,
                    Masquerade::Hairpin => f.write_str(" masq-hairpin")?,
                }
                if *sticky {
                    f.write_str(" sticky")?;
                }
                Ok(())
            }
            Self::Reject => f.write_str("REJECT"),
            Self::Drop => f.write_str("DROP"),
            Self::Untouched => f.write_str("untouched"),
        }
    }
}

impl PacketSpec {
    /// What `mode` must do with this packet: its override, else kube-proxy's behaviour.
    pub fn expected(&self, mode: &str) -> &Expect {
        self.modes.get(mode).map_or(&self.expect, |o| &o.expect)
    }

    /// `web-1 -> 10.96.1.1:80/tcp`.
    pub fn label(&self) -> String {
        format!(
            "{} -> {}/{}",
            self.from,
            self.to.0,
            self.proto.as_lower_str()
        )
    }
}

impl Scenario {
    /// Parses one scenario file's text (`file` names it in errors and gives the name).
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let invalid = |reason: String| ScenarioError::Invalid {
            path: PathBuf::from(file),
            reason,
        };
        let scenario: Self = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let stem = file.strip_suffix(".yaml").unwrap_or(file);
        if scenario.name != stem {
            return Err(invalid(format!(
                "name {:?} is not the file's",
                scenario.name
            )));
        }
        if scenario.packets.is_empty() {
            return Err(invalid("no packets".into()));
        }
        sluice_proxy_core::source::parse(&scenario.objects).map_err(invalid)?;
        Ok(scenario)
    }

    /// Reads one scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
        Self::parse(file, &text)
    }

    /// The scenarios shipped with Sluice (embedded at build time), by name.
    pub fn shipped() -> Result<Vec<Self>, ScenarioError> {
        SHIPPED
            .iter()
            .map(|(file, text)| Self::parse(file, text))
            .collect()
    }
}

include!(concat!(env!("OUT_DIR"), "/scenarios.rs"));
