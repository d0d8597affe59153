//! The reader, accepting what flannel's CNI plugin (`loadFlannelSubnetEnv`)
//! accepts: unknown lines are ignored, a repeated key replaces the earlier
//! value, network keys hold comma-separated lists (deduplicated by masked
//! network), `FLANNEL_IPMASQ` is true only for the exact text `true`, and at
//! least one network, one subnet, the MTU and the masquerade flag are required.
//!
//! Stricter than flannel where flannel would crash or mis-file a value: a known
//! key without `=` is an error (flannel's plugin panics), and an IPv6 CIDR under
//! an IPv4 key (or the reverse) is an error rather than silently mixed in.

use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};

use super::{SubnetEnv, SubnetEnvError};
use crate::cidr::{Cidr, parse_cidr};
use crate::location::Location;

#[derive(Default)]
struct Partial {
    networks: Vec<Ipv4Net>,
    subnet: Option<Ipv4Net>,
    ipv6_networks: Vec<Ipv6Net>,
    ipv6_subnet: Option<Ipv6Net>,
    mtu: Option<u32>,
    ipmasq: Option<bool>,
}

pub(super) fn parse(text: &str, file: Option<PathBuf>) -> Result<SubnetEnv, SubnetEnvError> {
    let mut partial = Partial::default();
    for (index, line) in text.lines().enumerate() {
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line, None),
        };
        let located = |key: &'static str, problem: String| SubnetEnvError::Value {
            location: Location::at_line(file.clone(), index + 1),
            key,
            problem,
        };
        partial
            .apply(key, value)
            .map_err(|(key, p)| located(key, p))?;
    }
    partial.finish(file)
}

type Problem = (&'static str, String);

impl Partial {
    fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), Problem> {
        let key: &'static str = match key {
            "FLANNEL_NETWORK" => "FLANNEL_NETWORK",
            "FLANNEL_SUBNET" => "FLANNEL_SUBNET",
            "FLANNEL_IPV6_NETWORK" => "FLANNEL_IPV6_NETWORK",
            "FLANNEL_IPV6_SUBNET" => "FLANNEL_IPV6_SUBNET",
            "FLANNEL_MTU" => "FLANNEL_MTU",
            "FLANNEL_IPMASQ" => "FLANNEL_IPMASQ",
            _ => return Ok(()),
        };
        let value = value.ok_or_else(|| (key, "missing '='".to_owned()))?;
        self.apply_value(key, value)
            .map_err(|problem| (key, problem))
    }

    fn apply_value(&mut self, key: &'static str, value: &str) -> Result<(), String> {
        match key {
            "FLANNEL_NETWORK" => self.networks = cidr_list::<Ipv4Net>(value)?,
            "FLANNEL_SUBNET" => self.subnet = Some(parse_cidr::<Ipv4Net>(value)?),
            "FLANNEL_IPV6_NETWORK" => self.ipv6_networks = cidr_list::<Ipv6Net>(value)?,
            "FLANNEL_IPV6_SUBNET" => self.ipv6_subnet = Some(parse_cidr::<Ipv6Net>(value)?),
            "FLANNEL_MTU" => self.mtu = Some(mtu(value)?),
            _ => self.ipmasq = Some(value == "true"),
        }
        Ok(())
    }

    fn finish(self, file: Option<PathBuf>) -> Result<SubnetEnv, SubnetEnvError> {
        let mut missing = Vec::new();
        if self.networks.is_empty() && self.ipv6_networks.is_empty() {
            missing.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if self.subnet.is_none() && self.ipv6_subnet.is_none() {
            missing.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        match (self.mtu, self.ipmasq) {
            (Some(mtu), Some(ipmasq)) if missing.is_empty() => Ok(SubnetEnv {
                networks: self.networks,
                subnet: self.subnet,
                ipv6_networks: self.ipv6_networks,
                ipv6_subnet: self.ipv6_subnet,
                mtu,
                ipmasq,
            }),
            (mtu, ipmasq) => {
                if mtu.is_none() {
                    missing.push("FLANNEL_MTU");
                }
                if ipmasq.is_none() {
                    missing.push("FLANNEL_IPMASQ");
                }
                let location = Location {
                    file,
                    ..Location::default()
                };
                Err(SubnetEnvError::Missing {
                    location,
                    keys: missing.join(", "),
                })
            }
        }
    }
}

/// Go's `strconv.ParseUint(s, 10, 32)`: ASCII digits only, no sign or spaces.
fn mtu(value: &str) -> Result<u32, String> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| format!("invalid number {value:?}"))
}

/// A comma-separated CIDR list; duplicates after masking are dropped, as by
/// flannel's `isSubnetAlreadyPresent`.
fn cidr_list<N: Cidr + PartialEq>(value: &str) -> Result<Vec<N>, String> {
    let mut out: Vec<N> = Vec::new();
    for item in value.split(',') {
        let net = parse_cidr::<N>(item)?;
        if !out.iter().any(|seen| seen.masked() == net.masked()) {
            out.push(net);
        }
    }
    Ok(out)
}
