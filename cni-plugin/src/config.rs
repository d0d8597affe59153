//! The network configuration on stdin: Sluice's own keys and flannel's (`subnetFile`,
//! `dataDir`, `delegate {…}`), so a flannel conflist works unchanged with `"type": "flannel"`
//! or `"type": "sluice"`. Unknown keys are allowed, as runtimes pass them through; a known
//! key with a value of the wrong type is invalid (code 7) rather than silently ignored — a
//! `"dns": 123` copied into the result makes the result invalid, an empty `ipam.dataDir`
//! would put the store in whatever directory the runtime runs in. Paths must be absolute
//! for the same reason.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};

/// flannel's default subnet.env.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// flannel's default scratch directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";
/// host-local's default store.
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/cni/networks";
/// The largest configuration read from stdin (a GC's list of every attachment on a big node
/// fits many times).
pub const MAX_BYTES: usize = 1 << 20;
/// The longest network name: it is a directory name in the store and part of every host
/// link's alias, which the kernel caps at 255 bytes.
pub const MAX_NAME: usize = 128;

/// flannel's `delegate` object: the bridge plugin's keys Sluice honours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    /// Bridge name (default `cni0`).
    pub bridge: Option<String>,
    /// Hairpin mode on the host port.
    pub hairpin_mode: Option<bool>,
    /// Install a default route via the gateway.
    pub is_default_gateway: Option<bool>,
    /// Give the bridge the gateway address.
    pub is_gateway: Option<bool>,
    /// Masquerade pod traffic leaving the subnet (default: `!FLANNEL_IPMASQ`).
    pub ip_masq: Option<bool>,
    /// Interface MTU (default: `FLANNEL_MTU`).
    pub mtu: Option<u32>,
}

/// The plugin's configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version of this invocation.
    #[serde(default)]
    pub cni_version: String,
    /// Network name (the IPAM store's directory).
    pub name: String,
    /// `sluice` or `flannel`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Where flannel's subnet.env is.
    pub subnet_file: Option<PathBuf>,
    /// Scratch directory (flannel's key).
    pub data_dir: Option<PathBuf>,
    /// Bridge settings, flannel-style.
    #[serde(default)]
    pub delegate: Delegate,
    /// The same settings at the top level, as the bridge plugin takes them; `delegate` wins.
    #[serde(flatten)]
    pub top: Delegate,
    /// Capability arguments (`ips`, `mac`) the runtime passes.
    #[serde(default)]
    pub runtime_config: Value,
    /// Per-attachment arguments (`args.cni.ips`, `args.cni.mac`).
    #[serde(default)]
    pub args: Value,
    /// DNS settings returned in the result.
    pub dns: Option<Value>,
    /// IPAM settings (`dataDir` for the host-local-compatible store).
    #[serde(default)]
    pub ipam: Value,
    /// The previous plugin's result in a chain.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC).
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The older GC key, still sent by libcni.
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
    // `logFile` (Sluice) is read by `log` from the raw stdin, so that a config failing to
    // parse here is logged too.
}

/// An invalid-configuration error about `key`.
pub(crate) fn invalid(key: &str, problem: &str) -> CniError {
    CniError::new(
        Code::InvalidConfig,
        format!("invalid network configuration: {key}: {problem}"),
    )
}

/// One attachment GC must keep.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

impl NetConf {
    /// Parses stdin: undecodable JSON is code 6, a structurally wrong config code 7.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(Code::Decode, "failed to decode the network configuration")
                .with_details(e.to_string())
        })?;
        let conf: Self = serde_json::from_value(value).map_err(|e| {
            CniError::new(Code::InvalidConfig, "invalid network configuration")
                .with_details(e.to_string())
        })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let mut chars = self.name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(CniError::new(
                Code::InvalidConfig,
                format!("invalid network name {:?}", self.name),
            ));
        }
        if self.name.len() > MAX_NAME {
            return Err(invalid(
                "name",
                &format!("{} bytes long; at most {MAX_NAME}", self.name.len()),
            ));
        }
        crate::config_types::check(self)?;
        if self
            .bridge_settings()
            .mtu
            .is_some_and(|m| !(68..=65535).contains(&m))
        {
            return Err(CniError::new(
                Code::InvalidConfig,
                "delegate.mtu must be between 68 and 65535",
            ));
        }
        Ok(())
    }

    /// The bridge settings in effect: `delegate`'s keys over the top-level ones.
    pub fn bridge_settings(&self) -> Delegate {
        let (d, t) = (&self.delegate, &self.top);
        Delegate {
            bridge: d.bridge.clone().or_else(|| t.bridge.clone()),
            hairpin_mode: d.hairpin_mode.or(t.hairpin_mode),
            is_default_gateway: d.is_default_gateway.or(t.is_default_gateway),
            is_gateway: d.is_gateway.or(t.is_gateway),
            ip_masq: d.ip_masq.or(t.ip_masq),
            mtu: d.mtu.or(t.mtu),
        }
    }

    /// The bridge the pods attach to (`cni0` unless configured).
    pub fn bridge_name(&self) -> String {
        self.bridge_settings()
            .bridge
            .unwrap_or_else(|| crate::plan::DEFAULT_BRIDGE.to_owned())
    }

    /// The subnet.env to read.
    pub fn subnet_file(&self) -> PathBuf {
        self.subnet_file
            .clone()
            .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into())
    }

    /// The IPAM store's root (`ipam.dataDir`, default host-local's; validated by `parse`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.ipam["dataDir"]
            .as_str()
            .map_or_else(|| DEFAULT_IPAM_DIR.into(), PathBuf::from)
    }

    /// The attachments GC keeps (the current key, else the older one).
    pub fn gc_keep(&self) -> Vec<Attachment> {
        self.valid_attachments
            .clone()
            .or_else(|| self.attachments.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannels_conflist_plugin_object_parses() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",
                 "delegate":{"hairpinMode":true,"isDefaultGateway":true},
                 "runtimeConfig":{"portMappings":[]}}"#,
        )
        .unwrap();
        assert_eq!(conf.plugin_type, "flannel");
        assert_eq!(conf.delegate.hairpin_mode, Some(true));
        assert_eq!(conf.subnet_file(), PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(conf.ipam_dir(), PathBuf::from("/var/lib/cni/networks"));
    }

    #[test]
    fn decode_and_validation_errors_have_their_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, Code::Decode);
        assert_eq!(
            NetConf::parse(br#"{"type":"sluice"}"#).unwrap_err().code,
            Code::InvalidConfig
        );
        let e = NetConf::parse(br#"{"name":"-bad","type":"sluice"}"#).unwrap_err();
        assert!(e.code == Code::InvalidConfig && e.msg.contains("-bad"));
    }

    #[test]
    fn gc_accepts_both_attachment_keys() {
        let new = NetConf::parse(br#"{"name":"n","type":"sluice","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#).unwrap();
        let old = NetConf::parse(br#"{"name":"n","type":"sluice","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(new.gc_keep(), old.gc_keep());
        assert_eq!(new.gc_keep()[0].container_id, "a");
    }
}
