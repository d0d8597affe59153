//! `Service` → one [`ServicePort`] per `spec.ports[]`, following kube-proxy's
//! `newBaseServiceInfo` and the `apiservice` helpers it calls.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec, ServiceStatus};

mod addrs;

use super::ip::parse_ip_sloppy;
use super::validate::{cluster_ip, dns1035_label, dns1123_label};
use super::{ConvertError, check, invalid, object_label, port_number, required};
use crate::service::{
    Protocol, ServiceName, ServicePort, ServicePortName, ServiceType, SessionAffinity,
    TrafficDistribution, TrafficPolicy,
};

/// The proxied ports of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePorts {
    /// The Service's namespaced name.
    pub service: ServiceName,
    /// One entry per usable port; empty for ExternalName and headless Services.
    pub ports: Vec<ServicePort>,
    /// Skipped entries, each naming the object and field.
    pub warnings: Vec<String>,
}

/// Converts a Service into its ports.
///
/// ExternalName Services and those with ClusterIP `None` or empty yield no
/// ports (kube-proxy skips them). See the module docs for the error policy.
pub fn service_ports(svc: &Service) -> Result<ServicePorts, ConvertError> {
    let meta = &svc.metadata;
    let object = object_label("service", meta.namespace.as_deref(), meta.name.as_deref());
    let namespace = required(&object, "metadata.namespace", meta.namespace.as_ref())?;
    let name = required(&object, "metadata.name", meta.name.as_ref())?;
    check(&object, "metadata.namespace", namespace, dns1123_label)?;
    check(&object, "metadata.name", name, dns1035_label)?;
    let mut out = ServicePorts {
        service: ServiceName::new(namespace, name),
        ports: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(spec) = svc.spec.as_ref().filter(|spec| !skipped(spec)) else {
        return Ok(out);
    };
    let cluster_ips = cluster_ips(&object, spec)?;
    port_names(&object, spec)?;
    let mut conv = Converter {
        object,
        warnings: Vec::new(),
    };
    let template = conv.template(&out.service, spec, svc.status.as_ref(), cluster_ips);
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if let Some(sp) = conv.port(&template, i, port) {
            out.ports.push(sp);
        }
    }
    out.warnings = conv.warnings;
    Ok(out)
}

/// kube-proxy's `ShouldSkipService`: ExternalName, or no ClusterIP (headless).
fn skipped(spec: &ServiceSpec) -> bool {
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or_default();
    spec.type_.as_deref() == Some("ExternalName") || cluster_ip.is_empty() || cluster_ip == "None"
}

/// `spec.clusterIPs` (or `spec.clusterIP` when the list is empty), primary first.
fn cluster_ips(object: &str, spec: &ServiceSpec) -> Result<Vec<IpAddr>, ConvertError> {
    let (list, indexed) = match spec.cluster_ips.as_deref() {
        Some(list) if !list.is_empty() => (list.to_vec(), true),
        _ => (spec.cluster_ip.iter().cloned().collect(), false),
    };
    let parse = |(i, text): (usize, &String)| {
        parse_ip_sloppy(text).ok_or_else(|| ConvertError::Invalid {
            object: object.to_owned(),
            field: match indexed {
                true => format!("spec.clusterIPs[{i}]"),
                false => "spec.clusterIP".to_owned(),
            },
            value: text.clone(),
            reason: "not an ip address".to_owned(),
        })
    };
    let ips: Vec<IpAddr> = list
        .iter()
        .enumerate()
        .map(parse)
        .collect::<Result<_, _>>()?;
    for (i, ip) in ips.iter().enumerate() {
        let field = match indexed {
            true => format!("spec.clusterIPs[{i}]"),
            false => "spec.clusterIP".to_owned(),
        };
        cluster_ip(*ip).map_err(|reason| invalid(object, &field, &list[i], reason))?;
    }
    let dual = ips.len() == 2 && ips[0].is_ipv4() != ips[1].is_ipv4();
    if ips.len() > 2 || (ips.len() == 2 && !dual) {
        let value = list.join(",");
        let reason = "at most two addresses, one of each IP family".to_owned();
        return Err(invalid(object, "spec.clusterIPs", &value, reason));
    }
    Ok(ips)
}

/// Port names as the API server checks them: DNS-1123 labels, required when a Service has
/// more than one port, unique (a port is known by its name: a duplicate would silently
/// replace the other).
fn port_names(object: &str, spec: &ServiceSpec) -> Result<(), ConvertError> {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}].name");
        let name = port.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            if ports.len() > 1 {
                let reason = "required when a Service has more than one port".to_owned();
                return Err(invalid(object, &field, name, reason));
            }
            continue;
        }
        check(object, &field, name, dns1123_label)?;
        if !seen.insert(name) {
            return Err(invalid(object, &field, name, "Duplicate value".to_owned()));
        }
    }
    Ok(())
}

struct Converter {
    object: String,
    warnings: Vec<String>,
}

impl Converter {
    /// Records e.g. `service ns/web: spec.externalIPs[1]: not an ip address "x", skipped`.
    fn warn(&mut self, field: &str, problem: &str, value: &str, action: &str) {
        let object = &self.object;
        let warning = format!("{object}: {field}: {problem} {value:?}, {action}");
        self.warnings.push(warning);
    }

    /// Everything shared by the Service's ports; `name`, `port` and
    /// `node_port` are filled in per port.
    fn template(
        &mut self,
        service: &ServiceName,
        spec: &ServiceSpec,
        status: Option<&ServiceStatus>,
        cluster_ips: Vec<IpAddr>,
    ) -> ServicePort {
        let service_type = self.service_type(spec);
        let external_policy = external_policy(spec, service_type);
        ServicePort {
            name: ServicePortName::new(service, "", Protocol::Tcp),
            service_type,
            cluster_ips,
            port: 0,
            node_port: None,
            external_ips: self.external_ips(spec),
            load_balancer_vips: self.load_balancer_vips(status),
            load_balancer_source_ranges: self.source_ranges(spec),
            session_affinity: self.session_affinity(spec),
            external_traffic_policy: external_policy,
            internal_traffic_policy: internal_policy(spec),
            health_check_node_port: self.health_check_port(spec, service_type, external_policy),
            traffic_distribution: spec
                .traffic_distribution
                .as_deref()
                .and_then(TrafficDistribution::from_api),
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        }
    }

    fn service_type(&mut self, spec: &ServiceSpec) -> ServiceType {
        match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some(other) => {
                self.warn("spec.type", "unknown type", other, "treated as ClusterIP");
                ServiceType::ClusterIp
            }
        }
    }

    fn session_affinity(&mut self, spec: &ServiceSpec) -> Option<SessionAffinity> {
        if spec.session_affinity.as_deref() != Some("ClientIP") {
            return None;
        }
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        let Some(timeout) = timeout else {
            return Some(SessionAffinity::default());
        };
        match u32::try_from(timeout).ok().filter(|t| *t > 0) {
            Some(timeout_seconds) => Some(SessionAffinity { timeout_seconds }),
            None => {
                let field = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
                self.warn(
                    field,
                    "invalid timeout",
                    &timeout.to_string(),
                    "default used",
                );
                Some(SessionAffinity::default())
            }
        }
    }

    fn health_check_port(
        &mut self,
        spec: &ServiceSpec,
        service_type: ServiceType,
        external_policy: TrafficPolicy,
    ) -> Option<u16> {
        if service_type != ServiceType::LoadBalancer || external_policy != TrafficPolicy::Local {
            return None;
        }
        let raw = spec.health_check_node_port.unwrap_or(0);
        let port = port_number(raw);
        if port.is_none() {
            self.warn(
                "spec.healthCheckNodePort",
                "no usable port",
                &raw.to_string(),
                "ignored",
            );
        }
        port
    }

    fn port(
        &mut self,
        template: &ServicePort,
        i: usize,
        port: &k8s_openapi::api::core::v1::ServicePort,
    ) -> Option<ServicePort> {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        let protocol_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(protocol) = Protocol::from_api(protocol_text) else {
            self.warn(
                &field("protocol"),
                "unknown protocol",
                protocol_text,
                "port skipped",
            );
            return None;
        };
        let Some(number) = port_number(port.port) else {
            self.warn(
                &field("port"),
                "out of range",
                &port.port.to_string(),
                "port skipped",
            );
            return None;
        };
        let node_port = match port.node_port.unwrap_or(0) {
            0 => None,
            raw => port_number(raw).or_else(|| {
                self.warn(
                    &field("nodePort"),
                    "out of range",
                    &raw.to_string(),
                    "ignored",
                );
                None
            }),
        };
        let service = template.name.service();
        Some(ServicePort {
            name: ServicePortName::new(&service, port.name.clone().unwrap_or_default(), protocol),
            port: number,
            node_port,
            ..template.clone()
        })
    }
}

/// apiservice `ExternalPolicyLocal`: `Local` only for Services reachable from
/// outside by type (NodePort, LoadBalancer, or ClusterIP with externalIPs).
fn external_policy(spec: &ServiceSpec, service_type: ServiceType) -> TrafficPolicy {
    let has_external_ips = spec
        .external_ips
        .as_ref()
        .is_some_and(|ips| !ips.is_empty());
    let accessible = service_type != ServiceType::ClusterIp || has_external_ips;
    if accessible && spec.external_traffic_policy.as_deref() == Some("Local") {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    }
}

fn internal_policy(spec: &ServiceSpec) -> TrafficPolicy {
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    }
}
