//! Per-namespace sysctls (`net.*` keys only), e.g. `ip_forward` on a node.
//!
//! `net.*` sysctls are per network namespace and resolved through the *opening thread's*
//! namespace, so they are read and written from a thread inside it ([`NetNs::run`]). That never
//! touches the host's values, which the tests compare before and after.

use crate::error::{Error, Result};
use crate::netns::NetNs;

/// `/proc/sys` path for a dotted `net.*` key.
fn path_of(key: &str) -> Result<String> {
    if !key.starts_with("net.") || key.contains("..") || key.contains('/') {
        return Err(Error::invalid(
            format!("sysctl {key}"),
            "only net.* keys (per namespace) are allowed",
        ));
    }
    Ok(format!("/proc/sys/{}", key.replace('.', "/")))
}

impl NetNs {
    /// Writes `net.*` sysctl `key` inside the namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) -> Result<()> {
        let path = path_of(key)?;
        let op = format!("sysctl -w {key}={value} in {}", self.name());
        self.run(|| std::fs::write(&path, value))?
            .map_err(|e| Error::io(op, e))
    }

    /// Reads `net.*` sysctl `key` inside the namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = path_of(key)?;
        let op = format!("sysctl {key} in {}", self.name());
        let value = self
            .run(|| std::fs::read_to_string(&path))?
            .map_err(|e| Error::io(op, e))?;
        Ok(value.trim().to_owned())
    }

    /// Turns IPv4 forwarding on or off inside the namespace.
    pub fn set_ip_forward(&self, on: bool) -> Result<()> {
        self.sysctl_set("net.ipv4.ip_forward", if on { "1" } else { "0" })
    }
}
