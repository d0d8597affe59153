//! kubectl against the server: discovery, Table output, create/get/delete.
//!
//! kubectl runs with a temporary kubeconfig, HOME and cache directory so nothing is written to
//! the real home directory.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use sluice_test_apiserver::TestApiServer;
use tempfile::TempDir;

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    server: TestApiServer,
    dir: TempDir,
}

impl Kubectl {
    fn new() -> Self {
        let server = TestApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(dir.path().join("kubeconfig"))
            .unwrap();
        Self { server, dir }
    }

    /// Runs kubectl; returns stdout, failing the test (with stderr) on a non-zero exit.
    fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    fn command(&self, args: &[&str]) -> Command {
        let dir = self.dir.path();
        let mut command = Command::new(KUBECTL);
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("HOME", dir)
            .env("KUBECACHEDIR", dir.join("cache"))
            .current_dir(dir);
        command
    }

    fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let output = self
            .command(args)
            .args(["--request-timeout", "10s"])
            .output()
            .expect("run kubectl");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            output.status.success(),
            text(&output.stdout),
            text(&output.stderr),
        )
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn has_kubectl() -> bool {
    Path::new(KUBECTL).exists()
}

const SERVICE_YAML: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
";

#[test]
fn kubectl_creates_gets_and_deletes_services() {
    if !has_kubectl() {
        eprintln!("skipping: {KUBECTL} not installed");
        return;
    }
    let k = Kubectl::new();
    let empty = k.run(&["get", "services", "-A"]);
    assert!(empty.trim().is_empty(), "no services yet: {empty:?}");

    let file = k.write("service.yaml", SERVICE_YAML);
    let created = k.run(&["create", "-f", &file, "--validate=false"]);
    assert_eq!(created.trim(), "service/web created");

    let table = k.run(&["get", "services", "-A"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "default",
            "web",
            "NodePort",
            "10.96.0.2",
            "<none>",
            "80:30000/TCP"
        ]
    );

    let json_out: Value =
        serde_json::from_str(&k.run(&["get", "svc", "web", "-o", "json"])).unwrap();
    assert_eq!(json_out["kind"], "Service");
    assert_eq!(json_out["spec"]["clusterIPs"], json!(["10.96.0.2"]));
    assert_eq!(json_out["spec"]["ports"][0]["nodePort"], 30000);
    assert_eq!(
        k.server.get("services", "default", "web").unwrap()["metadata"]["uid"],
        json_out["metadata"]["uid"]
    );

    let deleted = k.run(&["delete", "service", "web"]);
    assert_eq!(deleted.trim(), "service \"web\" deleted");
    assert!(k.server.list("services").unwrap().is_empty());
    let (ok, _, err) = k.try_run(&["get", "svc", "web"]);
    assert!(
        !ok && err.contains("NotFound") && err.contains("\"web\" not found"),
        "{err}"
    );
}

#[test]
fn kubectl_lists_nodes_and_endpointslices() {
    if !has_kubectl() {
        eprintln!("skipping: {KUBECTL} not installed");
        return;
    }
    let k = Kubectl::new();
    k.server
        .create(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
    k.server
        .create(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "prod",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.2.7"]}],
            "ports": [{"port": 8080, "protocol": "TCP"}]}),
        )
        .unwrap();

    let nodes = k.run(&["get", "nodes"]);
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][..3], ["NAME", "STATUS", "ROLES"]);
    assert_eq!(lines[1][..3], ["node-1", "Ready", "<none>"]);

    let slices = k.run(&["get", "endpointslices", "-A"]);
    let lines: Vec<Vec<&str>> = slices
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0][..5],
        ["NAMESPACE", "NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"]
    );
    assert_eq!(
        lines[1][..5],
        ["prod", "web-abc", "IPv4", "8080", "10.244.1.5,10.244.2.7"]
    );

    let by_label = k.run(&[
        "get",
        "endpointslices",
        "-n",
        "prod",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "name",
    ]);
    assert_eq!(by_label.trim(), "endpointslice.discovery.k8s.io/web-abc");
    let namespaces = k.run(&["get", "ns", "-o", "name"]);
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");
}

#[test]
fn kubectl_get_watch_prints_rows_for_changes() {
    if !has_kubectl() {
        eprintln!("skipping: {KUBECTL} not installed");
        return;
    }
    let k = Kubectl::new();
    let svc = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 8080}]}})
    };
    k.server.create(svc("early")).unwrap();
    let mut child = KillOnDrop(
        k.command(&["get", "services", "--watch", "--output-watch-events"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kubectl get --watch"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |want: &[&str]| loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("kubectl output");
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() >= want.len() && cells[..want.len()] == *want {
            break;
        }
    };
    // Once the listed row is printed, the watch resumes from the list's version: later
    // changes cannot be missed however long kubectl takes to connect.
    wait_for(&["ADDED", "early"]);
    k.server.create(svc("late")).unwrap();
    k.server.delete("services", "default", "late").unwrap();
    wait_for(&[
        "ADDED",
        "late",
        "ClusterIP",
        "10.96.0.3",
        "<none>",
        "8080/TCP",
    ]);
    wait_for(&["DELETED", "late"]);
}

/// Ends the spawned kubectl (by its own handle) even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kubectl_generators_that_send_protobuf_work() {
    if !has_kubectl() {
        eprintln!("skipping: {KUBECTL} not installed");
        return;
    }
    let k = Kubectl::new();
    let out = k.run(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    assert_eq!(out.trim(), "service/web created");
    let svc = k.server.get("services", "default", "web").unwrap();
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.2");
    let out = k.run(&["create", "service", "nodeport", "np", "--tcp=81:8081"]);
    assert_eq!(out.trim(), "service/np created");
    assert_eq!(
        k.server.get("services", "default", "np").unwrap()["spec"]["type"],
        "NodePort"
    );
    assert_eq!(
        k.run(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    let out = k.run(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
        "-n",
        "team",
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    assert_eq!(
        k.server.get("configmaps", "team", "cfg").unwrap()["data"]["a"],
        "b"
    );
    let out = k.run(&["create", "serviceaccount", "robot", "-n", "team"]);
    assert_eq!(out.trim(), "serviceaccount/robot created");
    assert!(k.server.get("serviceaccounts", "team", "robot").is_ok());
}

#[test]
fn kubectl_wide_output_shows_pod_ips_and_node_details() {
    if !has_kubectl() {
        eprintln!("skipping: {KUBECTL} not installed");
        return;
    }
    let k = Kubectl::new();
    k.server
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.2",
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2}]}}))
        .unwrap();
    k.server
        .create(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}],
                "nodeInfo": {"kubeletVersion": "v1.34.0", "kernelVersion": "6.18"}}}),
        )
        .unwrap();
    let rows = |out: String| -> Vec<Vec<String>> {
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };
    let narrow = rows(k.run(&["get", "pods"]));
    assert_eq!(narrow[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(narrow[1][..4], ["p", "1/1", "Running", "2"]);
    let wide = rows(k.run(&["get", "pods", "-o", "wide"]));
    assert_eq!(wide[0][5..7], ["IP", "NODE"]);
    assert_eq!(wide[1][5..7], ["10.244.1.2", "n1"]);
    let nodes = rows(k.run(&["get", "nodes", "-o", "wide"]));
    assert_eq!(nodes[1][..2], ["n1", "Unknown"], "no Ready condition");
    assert_eq!(nodes[1][4..6], ["v1.34.0", "192.168.0.11"]);
}
