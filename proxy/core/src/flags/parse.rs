//! Value parsers with pflag's syntax, for clap.

use std::collections::BTreeMap;

use crate::config_file::{LocalMode, ProxyMode};

/// `--feature-gates`: gate name to enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureGates(pub BTreeMap<String, bool>);

/// Go's `strconv.ParseBool`.
pub(super) fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

/// component-base's `MapStringBool`: `A=true,B=false`.
pub(super) fn feature_gates(text: &str) -> Result<FeatureGates, String> {
    let mut gates = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} must be a key=value pair"))?;
        let value = go_bool(value.trim()).map_err(|e| format!("{}: {e}", name.trim()))?;
        gates.insert(name.trim().to_owned(), value);
    }
    Ok(FeatureGates(gates))
}

pub(super) fn proxy_mode(text: &str) -> Result<ProxyMode, String> {
    text.parse()
}

pub(super) fn local_mode(text: &str) -> Result<LocalMode, String> {
    text.parse()
}

/// A comma-separated list of CIDRs, as one flag value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrList(pub Vec<ipnet::IpNet>);

/// A comma-separated list of CIDRs (`--service-cidr`).
pub(crate) fn cidr_csv(text: &str) -> Result<CidrList, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| format!("{s:?} is not a CIDR")))
        .collect::<Result<_, _>>()
        .map(CidrList)
}
