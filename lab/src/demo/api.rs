//! The demo's API part: a Service created with kubectl (run on node 1, as an operator on a
//! node would) against the API server on the underlay, an EndpointSlice naming real pods, both
//! read back through the shared model, and traffic sent to the endpoints the model produced —
//! the path every proxy backend will take.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use sluice_model::k8s::{service_ports, slice_endpoints};
use sluice_model::service::{Endpoint, ServicePort};
use sluice_testbed::NetNs;
use sluice_testbed::apiserver::TestApiServer;
use sluice_testbed::cluster::Pod;
use sluice_testbed::traffic::{self, Proto};

use super::report::Report;

const SERVICE_YAML: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
";

/// Where kubectl runs and with which files.
pub(crate) struct Kubectl<'a> {
    /// The namespace it runs in (a node's).
    pub(crate) ns: &'a NetNs,
    /// Holds `kubeconfig`; kubectl's cache goes here too, never into the real home.
    pub(crate) dir: &'a Path,
}

/// Runs the API-server checks; `client` sends traffic, `backends` become the endpoints.
pub(crate) fn checks(
    report: &mut Report,
    server: &TestApiServer,
    k: &Kubectl<'_>,
    client: &Pod,
    backends: &[&Pod],
) {
    report.check("kubectl create -f service.yaml (from node 1)", || {
        let file = k.dir.join("service.yaml");
        std::fs::write(&file, SERVICE_YAML)?;
        let out = kubectl(
            k,
            &["create", "--validate=false", "-f", &file.to_string_lossy()],
        )?;
        Ok(format!("{} at {}", out.trim(), server.url()))
    });
    report.check("EndpointSlice with 2 pods on node 2", || {
        server.create(slice(backends))?;
        let out = kubectl(k, &["get", "svc,endpointslices", "-A", "-o", "name"])?;
        let names: Vec<&str> = out.lines().collect();
        ensure!(
            names.len() == 2,
            "kubectl get svc,endpointslices: {names:?}"
        );
        Ok(format!("kubectl get: {}", names.join(" ")))
    });
    let mut endpoints = Vec::new();
    report.check("model: Service + EndpointSlice -> ServicePort", || {
        let (port, eps) = model_view(server)?;
        let detail = format!(
            "{} {}:{}/TCP -> {}",
            port.name,
            port.cluster_ips[0],
            port.port,
            eps.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        endpoints = eps;
        Ok(detail)
    });
    report.check("TCP to every endpoint the model produced", || {
        let mut seen = Vec::new();
        for ep in &endpoints {
            let addr = SocketAddr::new(ep.ip, ep.port);
            let reply = traffic::request(client.ns(), Proto::Tcp, addr, Duration::from_secs(2))?;
            seen.push(reply.backend);
        }
        ensure!(seen.len() == backends.len(), "answered: {seen:?}");
        Ok(format!("answered by {}", seen.join(", ")))
    });
}

/// The EndpointSlice the lab's controller will write for `backends`.
fn slice(backends: &[&Pod]) -> serde_json::Value {
    let endpoints: Vec<_> = backends
        .iter()
        .map(|p| {
            json!({"addresses": [p.ip().to_string()], "nodeName": p.node_name(),
                   "conditions": {"ready": true},
                   "targetRef": {"kind": "Pod", "namespace": "default", "name": p.name()}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc12", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Reads both objects back and converts them with the shared model.
fn model_view(server: &TestApiServer) -> anyhow::Result<(ServicePort, Vec<Endpoint>)> {
    let svc: Service = serde_json::from_value(server.get("services", "default", "web")?)?;
    let slice: EndpointSlice =
        serde_json::from_value(server.get("endpointslices", "default", "web-abc12")?)?;
    let ports = service_ports(&svc)?;
    let [port] = &ports.ports[..] else {
        bail!("expected one port, got {:?}", ports.ports)
    };
    let eps = slice_endpoints(&slice)?.context("slice has no endpoints")?;
    let list = eps.ports.get(&port.name).cloned().unwrap_or_default();
    ensure!(!list.is_empty(), "no endpoints for {}", port.name);
    Ok((port.clone(), list))
}

/// Runs kubectl in `k.ns` with the lab's kubeconfig.
fn kubectl(k: &Kubectl<'_>, args: &[&str]) -> anyhow::Result<String> {
    let kubeconfig = format!("--kubeconfig={}", k.dir.join("kubeconfig").display());
    let cache = format!("--cache-dir={}", k.dir.join("kube-cache").display());
    let all = ["kubectl", kubeconfig.as_str(), cache.as_str()]
        .into_iter()
        .chain(args.iter().copied());
    k.ns.exec(all.collect::<Vec<_>>())
        .with_context(|| format!("kubectl {}", args.join(" ")))
}
