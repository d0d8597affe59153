//! kube-proxy's `KubeProxyConfiguration` file (`--config`, `--write-config-to`)
//! and the resolved [`ProxyConfig`] it becomes.
//!
//! Sluice is a drop-in for kube-proxy, so it reads the file operators already
//! have: same `apiVersion`, field names, defaults and per-mode sections, YAML
//! or JSON. Where upstream would only log (unknown fields, which its lenient
//! fallback drops), Sluice refuses the file with the field's name, because a
//! misspelt setting that is silently ignored is found in production, not at
//! startup. [`ProxyConfig`] is what the rest of the binary consumes; the
//! [`crate::flags`] module decides how flags and this file combine.

mod convert;
mod document;
pub mod duration;
mod error;
mod proxy_config;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub(crate) use convert::{
    Errors, check_local_detection, check_oom_score_adj, check_scheduler, check_sync_periods,
    cidr_list, cluster_cidrs, masquerade_bit, node_port_addresses, non_negative, parse_host_port,
};
pub use convert::{from_document, to_document};
pub use document::{API_VERSION, KIND, KubeProxyConfiguration};
pub use duration::GoDuration;
pub use error::{ConfigError, FieldError};
pub use proxy_config::{
    ClientConnection, Conntrack, DEFAULT_MASQUERADE_BIT, Ipvs, LocalMode, NodePortAddress,
    Passthrough, ProxyConfig, ProxyMode,
};

/// Parses a document from YAML or JSON text; `path` only names the source in
/// errors.
pub fn parse_document(text: &str, path: &Path) -> Result<KubeProxyConfiguration, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| parse_error(e.to_string()));
    }
    serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))
}

/// Parses and validates a configuration from text.
pub fn parse(text: &str, path: &Path) -> Result<ProxyConfig, ConfigError> {
    let document = parse_document(text, path)?;
    let mut config = from_document(&document).map_err(|errors| ConfigError::Invalid {
        origin: Some(path.to_owned()),
        errors,
    })?;
    config.config_file = Some(path.to_owned());
    Ok(config)
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// The effective configuration as a `KubeProxyConfiguration` YAML document.
pub fn to_yaml(config: &ProxyConfig) -> String {
    // Serialising plain data (strings, numbers, maps) cannot fail.
    serde_yaml::to_string(&to_document(config)).unwrap_or_default()
}

/// `--write-config-to`: writes the effective configuration to `path`.
pub fn write(path: &Path, config: &ProxyConfig) -> Result<(), ConfigError> {
    std::fs::write(path, to_yaml(config)).map_err(|source| ConfigError::Write {
        path: PathBuf::from(path),
        source,
    })
}
