//! The demo's API part: a Service created with kubectl against the test API server, an
//! EndpointSlice naming real pods, both read back through the shared model, and traffic sent
//! to the endpoints the model produced — the path every proxy backend will take.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use sluice_model::k8s::{service_ports, slice_endpoints};
use sluice_model::service::{Endpoint, ServicePort};
use sluice_testbed::apiserver::TestApiServer;
use sluice_testbed::cluster::Pod;
use sluice_testbed::traffic::{self, Proto};

use crate::report::Report;

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

/// Runs the API-server checks; `client` sends traffic, `backends` become the endpoints.
pub(crate) fn checks(report: &mut Report, client: &Pod, backends: &[&Pod]) {
    let server = TestApiServer::start();
    report.check("kubectl create -f service.yaml (test API server)", || {
        let out = kubectl(
            &server,
            &["create", "--validate=false", "-f", "-"],
            SERVICE_YAML,
        )?;
        Ok(format!("{} at {}", out.trim(), server.url()))
    });
    report.check("EndpointSlice with 2 pods on node 2", || {
        server.create(slice(backends))?;
        let out = kubectl(
            &server,
            &["get", "svc,endpointslices", "-A", "-o", "name"],
            "",
        )?;
        let names: Vec<&str> = out.lines().collect();
        ensure!(
            names.len() == 2,
            "kubectl get svc,endpointslices: {names:?}"
        );
        Ok(format!("kubectl get: {}", names.join(" ")))
    });
    let mut endpoints = Vec::new();
    report.check("model: Service + EndpointSlice -> ServicePort", || {
        let (port, eps) = model_view(&server)?;
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

/// Runs kubectl against the server (no kubeconfig or cache written to the real home).
fn kubectl(server: &TestApiServer, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let home = tempfile::tempdir()?;
    let mut child = Command::new("kubectl")
        .arg(format!("--server={}", server.url()))
        .args(args)
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run kubectl")?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
