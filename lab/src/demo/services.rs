//! The demo's Services, created the way a user would: one YAML file and `kubectl create`
//! from the host against the lab's API server. They carry only selectors — the lab's
//! EndpointSlice controller fills in the endpoints from the pods.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::api::Api;

pub(crate) const YAML: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: udp, port: 53, targetPort: udp, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing, namespace: default}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

/// The demo's Service names, in the file's order.
pub(crate) const NAMES: [&str; 6] = ["web", "dns", "web-np", "web-local", "sticky", "nothing"];

/// What the API server allocated for a Service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Allocated {
    pub(crate) cluster_ip: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) node_port: Option<u16>,
}

/// Runs kubectl from the host with the lab's kubeconfig (in the lab directory `dir`, like its
/// cache): the operator's own kubeconfig, credentials and HOME are never read.
pub(crate) fn kubectl(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", dir.join("kubeconfig").display()))
        .arg(format!("--cache-dir={}", dir.join("kube-cache").display()))
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .args(args)
        .output()
        .context("run kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads back every demo Service's ClusterIP, first port and NodePort.
pub(crate) fn allocated(api: &Api) -> anyhow::Result<BTreeMap<&'static str, Allocated>> {
    let mut out = BTreeMap::new();
    for name in NAMES {
        let svc = api.get(&format!("/api/v1/namespaces/default/services/{name}"))?;
        let spec = &svc["spec"];
        let port = &spec["ports"][0];
        let num = |v: &serde_json::Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
        out.insert(
            name,
            Allocated {
                cluster_ip: spec["clusterIP"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("{name} has no clusterIP"))?,
                port: num(&port["port"]).with_context(|| format!("{name} port"))?,
                node_port: num(&port["nodePort"]),
            },
        );
    }
    Ok(out)
}
