//! Conversions from Kubernetes API objects (`k8s-openapi`) into the pure
//! [`crate::service`] model. Behind feature `k8s` so the CNI plugin never
//! compiles `k8s-openapi`.
//!
//! Error policy, chosen to match kube-proxy: a problem that makes the whole
//! object unusable (missing name or namespace, missing service-name label,
//! unparseable cluster IP, unknown `addressType`) is a [`ConvertError`] naming the
//! object and field. A bad entry in a list (an external IP, a source range, a
//! load-balancer ingress IP, a port, an endpoint address) is skipped, as
//! kube-proxy skips it, and recorded as a warning string naming the object and
//! field, so one bad entry never hides the rest of the Service.
//!
//! On top of that, what the API server would refuse and the dataplane cannot
//! carry (see [`validate`]) makes the object unusable: names that are no DNS
//! labels (they end up in kernel object names with length limits), cluster IPs
//! that are loopback, unspecified, link-local, multicast or broadcast, port
//! names that are missing, malformed or duplicated, slices with more entries
//! than the API allows. An external IP, load-balancer IP or endpoint address
//! that no API server accepts (loopback, link-local, unspecified) is an entry
//! and skipped with a warning.

mod endpoint_slice;
mod ip;
mod labels;
mod service;
pub mod validate;

pub use endpoint_slice::{SERVICE_NAME_LABEL, slice_endpoints};
pub use labels::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL, is_proxied, proxy_label_selector};
pub use service::{ServicePorts, service_ports};

/// An API object the model cannot use at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is absent or empty.
    #[error("{object}: missing {field}")]
    Missing {
        /// Kind and `ns/name` of the object, e.g. `service default/web`.
        object: String,
        /// The field path, e.g. `metadata.namespace`.
        field: String,
    },
    /// A field holds a value the model cannot use.
    #[error("{object}: {field}: invalid value {value:?}: {reason}")]
    Invalid {
        /// Kind and `ns/name` of the object.
        object: String,
        /// The field path, e.g. `spec.clusterIPs[1]`.
        field: String,
        /// The offending value.
        value: String,
        /// Why it is unusable.
        reason: String,
    },
}

/// `<kind> <ns>/<name>` for messages, tolerating absent metadata.
fn object_label(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    format!(
        "{kind} {}/{}",
        namespace.unwrap_or("<no namespace>"),
        name.unwrap_or("<no name>")
    )
}

/// Returns the non-empty value of a required metadata field.
fn required<'a>(
    object: &str,
    field: &str,
    value: Option<&'a String>,
) -> Result<&'a str, ConvertError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ConvertError::Missing {
            object: object.to_owned(),
            field: field.to_owned(),
        }),
    }
}

/// `Invalid` for `field` of `object` holding `value`, because of `reason`.
fn invalid(object: &str, field: &str, value: &str, reason: String) -> ConvertError {
    ConvertError::Invalid {
        object: object.to_owned(),
        field: field.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

/// Checks `value` of `field` with one of [`validate`]'s rules.
fn check(
    object: &str,
    field: &str,
    value: &str,
    rule: fn(&str) -> Result<(), String>,
) -> Result<(), ConvertError> {
    rule(value).map_err(|reason| invalid(object, field, value, reason))
}

/// Converts an API port number (`i32`) to a usable port (1..=65535).
fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}
