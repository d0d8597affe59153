//! `EndpointSlice` → [`SliceEndpoints`], following kube-proxy's
//! `EndpointSliceCache`: endpoints are keyed by port *name* and protocol (that is
//! how they match Service ports, never by number), only `addresses[0]` is used,
//! and unset conditions take their API defaults.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointPort, EndpointSlice};

use super::ip::parse_ip_sloppy;
use super::validate::{dns1123_label, dns1123_subdomain, label_value, non_special_ip};
use super::{ConvertError, check, invalid, object_label, port_number, required};
use crate::service::{
    Endpoint, IpFamily, Protocol, ServiceName, ServicePortName, SliceEndpoints, VecMap,
};

/// The label naming the Service that owns an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The API's limits on one slice (`maxEndpoints`, `maxPorts` of discovery validation).
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 100;

/// Converts an EndpointSlice; `Ok(None)` for `FQDN` slices, which kube-proxy ignores.
///
/// See the module docs of [`crate::k8s`] for the error policy.
pub fn slice_endpoints(slice: &EndpointSlice) -> Result<Option<SliceEndpoints>, ConvertError> {
    let meta = &slice.metadata;
    let object = object_label(
        "endpointslice",
        meta.namespace.as_deref(),
        meta.name.as_deref(),
    );
    let namespace = required(&object, "metadata.namespace", meta.namespace.as_ref())?;
    let slice_name = required(&object, "metadata.name", meta.name.as_ref())?;
    let label_field = format!("metadata.labels[{SERVICE_NAME_LABEL:?}]");
    let labels = meta.labels.as_ref();
    let service = required(
        &object,
        &label_field,
        labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
    )?;
    check(&object, "metadata.namespace", namespace, dns1123_label)?;
    check(&object, "metadata.name", slice_name, dns1123_subdomain)?;
    check(&object, &label_field, service, label_value)?;
    limits(&object, slice)?;
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return Ok(None),
        other => {
            return Err(ConvertError::Invalid {
                object,
                field: "addressType".to_owned(),
                value: other.to_owned(),
                reason: "expected IPv4, IPv6 or FQDN".to_owned(),
            });
        }
    };
    let mut conv = Converter {
        object,
        family,
        warnings: Vec::new(),
        names: Vec::new(),
    };
    let service = ServiceName::new(namespace, service);
    let ports = conv.ports(&service, slice.ports.as_deref().unwrap_or_default());
    let endpoints: Vec<Endpoint> = (slice.endpoints.iter().enumerate())
        .filter_map(|(i, ep)| conv.endpoint(i, ep))
        .collect();
    let mut by_port: VecMap<ServicePortName, Vec<Endpoint>> = VecMap::new();
    for (name, number) in ports {
        let list = by_port.get_or_insert_with(name, Vec::new);
        list.extend(endpoints.iter().map(|ep| Endpoint {
            port: number,
            ..ep.clone()
        }));
    }
    by_port.shrink_to_fit();
    by_port.values_mut().for_each(Vec::shrink_to_fit);
    Ok(Some(SliceEndpoints {
        service,
        slice_name: slice_name.to_owned(),
        family,
        ports: by_port,
        warnings: conv.warnings,
    }))
}

/// At most 1000 endpoints and 100 ports, port names DNS-1123 labels and unique, as the API
/// server requires.
fn limits(object: &str, slice: &EndpointSlice) -> Result<(), ConvertError> {
    let too_many = |field: &str, n: usize, max: usize| {
        let reason = format!("must have at most {max} items");
        invalid(object, field, &n.to_string(), reason)
    };
    if slice.endpoints.len() > MAX_ENDPOINTS {
        return Err(too_many("endpoints", slice.endpoints.len(), MAX_ENDPOINTS));
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        return Err(too_many("ports", ports.len(), MAX_PORTS));
    }
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port.name.as_deref().unwrap_or_default();
        let field = format!("ports[{i}].name");
        if !name.is_empty() {
            check(object, &field, name, dns1123_label)?;
        }
        if port.name.is_some() && !seen.insert(name) {
            return Err(invalid(object, &field, name, "Duplicate value".to_owned()));
        }
    }
    Ok(())
}

/// Bounds the linear search of [`Converter::intern`].
const MAX_INTERNED: usize = 16;

struct Converter {
    object: String,
    family: IpFamily,
    warnings: Vec<String>,
    /// Node and zone names seen so far (the first few): a slice's endpoints
    /// share a handful, and sharing them keeps every endpoint copy small.
    names: Vec<Arc<str>>,
}

impl Converter {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.iter().find(|known| ***known == *name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        if self.names.len() < MAX_INTERNED {
            self.names.push(Arc::clone(&name));
        }
        name
    }

    /// Records e.g. `endpointslice ns/web-x: ports[0].port: out of range "0", skipped`.
    fn warn(&mut self, field: &str, problem: &str, value: Option<&str>) {
        let object = &self.object;
        let value = value.map(|v| format!(" {v:?}")).unwrap_or_default();
        let warning = format!("{object}: {field}: {problem}{value}, skipped");
        self.warnings.push(warning);
    }

    /// The usable ports as (port name, number); kube-proxy skips ports with no
    /// name or no (or zero) number.
    fn ports(
        &mut self,
        service: &ServiceName,
        ports: &[EndpointPort],
    ) -> Vec<(ServicePortName, u16)> {
        let mut out = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let Some(name) = port.name.as_ref() else {
                self.warn(&format!("ports[{i}].name"), "unset", None);
                continue;
            };
            let raw = port.port.unwrap_or(0);
            let Some(number) = port_number(raw) else {
                self.warn(
                    &format!("ports[{i}].port"),
                    "out of range",
                    Some(&raw.to_string()),
                );
                continue;
            };
            let text = port.protocol.as_deref().unwrap_or("TCP");
            let Some(protocol) = Protocol::from_api(text) else {
                self.warn(
                    &format!("ports[{i}].protocol"),
                    "unknown protocol",
                    Some(text),
                );
                continue;
            };
            out.push((
                ServicePortName::new(service, name.clone(), protocol),
                number,
            ));
        }
        out
    }

    /// One endpoint with port 0 (set per Service port by the caller).
    fn endpoint(&mut self, i: usize, ep: &ApiEndpoint) -> Option<Endpoint> {
        let field = format!("endpoints[{i}].addresses[0]");
        let Some(text) = ep.addresses.first() else {
            self.warn(&field, "no address", None);
            return None;
        };
        let Some(ip) = parse_ip_sloppy(text) else {
            self.warn(&field, "not an ip address", Some(text));
            return None;
        };
        if let Err(reason) = non_special_ip(ip) {
            self.warn(&field, &format!("{reason}:"), Some(text));
            return None;
        }
        if !self.family.contains(&ip) {
            let problem = format!("not an {} address", self.family);
            self.warn(&field, &problem, Some(text));
            return None;
        }
        let conditions = ep.conditions.clone().unwrap_or_default();
        let ready = conditions.ready.unwrap_or(true);
        let endpoint = Endpoint {
            ip,
            port: 0,
            ready,
            serving: conditions.serving.unwrap_or(ready),
            terminating: conditions.terminating.unwrap_or(false),
            node_name: ep.node_name.as_deref().map(|name| self.intern(name)),
            zone: ep.zone.as_deref().map(|zone| self.intern(zone)),
            hints: None,
        };
        let (zones, nodes) = hints(ep);
        Some(endpoint.with_hints(zones, nodes))
    }
}

/// `hints.forZones[].name` and `hints.forNodes[].name`.
fn hints(ep: &ApiEndpoint) -> (BTreeSet<String>, BTreeSet<String>) {
    let hints = ep.hints.as_ref();
    let zones = hints.and_then(|h| h.for_zones.as_ref());
    let nodes = hints.and_then(|h| h.for_nodes.as_ref());
    (
        zones
            .into_iter()
            .flatten()
            .map(|z| z.name.clone())
            .collect(),
        nodes
            .into_iter()
            .flatten()
            .map(|n| n.name.clone())
            .collect(),
    )
}
