//! Feeding [`ProxyState`] from Kubernetes API objects, with kube-proxy's
//! informer filters applied here rather than trusted to the watch: a Service
//! or EndpointSlice labelled for another proxy
//! (`service.kubernetes.io/service-proxy-name`) or headless
//! (`service.kubernetes.io/headless`) counts as absent. So a label added to a
//! live object removes it, and the standalone manifests source, which has no
//! label selector, gets the same semantics as the API watch.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_model::k8s::{ConvertError, is_proxied, service_ports, slice_endpoints};
use sluice_model::service::ServiceName;

use crate::config::NodeTopology;
use crate::state::ProxyState;

/// The outcome of recording one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Whether a sync is needed.
    pub changed: bool,
    /// Entries of the object that were skipped, each naming object and field.
    pub warnings: Vec<String>,
}

impl ProxyState {
    /// A Service was added or updated. An unusable Service (see
    /// [`ConvertError`]) leaves the tracked state as it was.
    pub fn on_service(&mut self, svc: &Service) -> Result<Recorded, ConvertError> {
        let converted = service_ports(svc)?;
        let proxied = is_proxied(svc.metadata.labels.as_ref(), self.proxy_name());
        let ports = if proxied { &converted.ports[..] } else { &[] };
        Ok(Recorded {
            changed: self.update_service(&converted.service, ports),
            warnings: converted.warnings,
        })
    }

    /// A Service was deleted.
    pub fn on_service_deleted(&mut self, svc: &Service) -> Result<bool, ConvertError> {
        let (namespace, name) = names("service", &svc.metadata)?;
        Ok(self.delete_service(&ServiceName::new(namespace, name)))
    }

    /// An EndpointSlice was added or updated. `FQDN` slices are ignored, as
    /// kube-proxy ignores them.
    pub fn on_slice(&mut self, slice: &EndpointSlice) -> Result<Recorded, ConvertError> {
        if !is_proxied(slice.metadata.labels.as_ref(), self.proxy_name()) {
            let changed = self.on_slice_deleted(slice)?;
            return Ok(Recorded {
                changed,
                warnings: Vec::new(),
            });
        }
        let Some(mut converted) = slice_endpoints(slice)? else {
            return Ok(Recorded::default());
        };
        let warnings = std::mem::take(&mut converted.warnings);
        let trigger = trigger_time(&slice.metadata);
        Ok(Recorded {
            changed: self.update_slice_triggered(converted, trigger),
            warnings,
        })
    }

    /// An EndpointSlice was deleted.
    pub fn on_slice_deleted(&mut self, slice: &EndpointSlice) -> Result<bool, ConvertError> {
        let (namespace, name) = names("endpointslice", &slice.metadata)?;
        Ok(self.delete_slice(namespace, name))
    }

    /// This node's Node object was added or updated (its zone label matters).
    pub fn on_node(&mut self, node: &Node) -> bool {
        let name = self.config.node_name.clone();
        self.set_node(NodeTopology {
            addresses: node_addresses(node),
            ..NodeTopology::from_labels(name, node.metadata.labels.as_ref())
        })
    }

    /// This node's Node object was deleted: its labels are gone, so topology forgets the
    /// zone (kube-proxy clears its node labels the same way).
    pub fn on_node_deleted(&mut self) -> bool {
        let name = self.config.node_name.clone();
        self.set_node(NodeTopology::from_labels(name, None))
    }

    fn proxy_name(&self) -> Option<&str> {
        self.config.proxy_name.as_deref()
    }
}

/// A Node's InternalIPs, then its ExternalIPs (kube-proxy's `GetNodeHostIPs`); addresses
/// that do not parse are skipped.
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
    let addrs = (node.status.as_ref()).and_then(|s| s.addresses.as_deref());
    let of_type = |ty: &str| -> Vec<IpAddr> {
        (addrs.unwrap_or_default().iter())
            .filter(|a| a.type_ == ty)
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let mut out = of_type("InternalIP");
    out.extend(of_type("ExternalIP"));
    out
}

/// The annotation the EndpointSlice controller stamps with the time of the
/// Pod or Service change that caused the slice update.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The slice's trigger time; absent or unparseable means none (kube-proxy
/// logs and ignores a bad value).
fn trigger_time(meta: &ObjectMeta) -> Option<SystemTime> {
    let text = meta.annotations.as_ref()?.get(TRIGGER_TIME_ANNOTATION)?;
    let time: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    let nanos = u64::try_from(time.as_nanosecond()).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The namespace and name of an object, both required.
fn names<'a>(kind: &str, meta: &'a ObjectMeta) -> Result<(&'a str, &'a str), ConvertError> {
    let missing = |field: &str| ConvertError::Missing {
        object: format!(
            "{kind} {}/{}",
            meta.namespace.as_deref().unwrap_or("<no namespace>"),
            meta.name.as_deref().unwrap_or("<no name>")
        ),
        field: field.to_owned(),
    };
    let namespace = (meta.namespace.as_deref())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("metadata.namespace"))?;
    let name = (meta.name.as_deref())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("metadata.name"))?;
    Ok((namespace, name))
}
