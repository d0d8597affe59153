//! CNI error results: the JSON object the spec defines, printed on stdout with a non-zero
//! exit (as the reference `skel` does, and as libcni reads it), with the spec's codes so a
//! runtime can tell "fix your config" from "try again later".

use serde::Serialize;

/// A spec error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the requested `cniVersion` is not supported.
    IncompatibleVersion = 1,
    /// 2: a field is not supported.
    UnsupportedField = 2,
    /// 4: a required environment variable is missing or invalid.
    InvalidEnv = 4,
    /// 5: I/O failure (reading stdin).
    Io = 5,
    /// 6: the configuration could not be decoded.
    Decode = 6,
    /// 7: the configuration is invalid.
    InvalidConfig = 7,
    /// 8: `CNI_NETNS` is the plugin's own namespace (the reference's `ErrInvalidNetNS`).
    InvalidNetNs = 8,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: STATUS — the plugin cannot serve ADD now.
    NotAvailable = 50,
    /// 999: anything else.
    Internal = 999,
}

/// A CNI error: code, a human-readable message, optional details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", details.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    /// The spec code.
    pub code: Code,
    /// What went wrong, for a person.
    pub msg: String,
    /// More context (e.g. the supported versions).
    pub details: Option<String>,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// Adds details.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The spec's error object for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        let wire = Wire {
            cni_version,
            code: self.code as u32,
            msg: &self.msg,
            details: self.details.as_deref(),
        };
        // Invariant: the wire struct holds only strings and a number.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let e = CniError::new(Code::IncompatibleVersion, "incompatible CNI versions")
            .with_details("config is \"9.9.9\", plugin supports [\"1.1.0\"]");
        assert_eq!(
            e.to_json("9.9.9"),
            r#"{"cniVersion":"9.9.9","code":1,"msg":"incompatible CNI versions","details":"config is \"9.9.9\", plugin supports [\"1.1.0\"]"}"#
        );
        let plain = CniError::new(
            Code::InvalidEnv,
            "required env variables [CNI_IFNAME] missing",
        );
        assert_eq!(
            plain.to_json("1.1.0"),
            r#"{"cniVersion":"1.1.0","code":4,"msg":"required env variables [CNI_IFNAME] missing"}"#
        );
    }
}
