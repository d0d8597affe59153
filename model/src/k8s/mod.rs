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

mod endpoint_slice;
mod ip;
mod labels;
mod service;

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

/// Converts an API port number (`i32`) to a usable port (1..=65535).
fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}
