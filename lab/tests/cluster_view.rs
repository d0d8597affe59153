//! The lab as kubectl and pods see a cluster (issue 18): Nodes `Ready` (and not, when a
//! node's daemons stop), pods with IPs and nodes in `kubectl get -o wide`, kubectl's protobuf
//! generators (`create service clusterip`) and `expose`, and the cluster DNS — a new Service's
//! name resolves from a pod within a second of `kubectl create` and traffic to the name works,
//! a headless Service returns its endpoints, the Service's IP has a PTR, a deleted Service's
//! name is NXDOMAIN — in nftables mode, and by name in iptables mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A lab built for one test, removed (and checked) when dropped.
struct Up {
    name: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Up {
    fn new(tag: &str, mode: &str) -> Self {
        sluice_testbed::require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lab");
        let name = format!("lab-{tag}{}", std::process::id());
        let d = dir.to_string_lossy().into_owned();
        let args = [
            "--lab-dir",
            &d,
            "up",
            "--name",
            &name.clone(),
            "--nodes",
            "2",
            "--pods-per-node",
            "1",
            "--proxy-mode",
            mode,
        ];
        let up = Self {
            name,
            dir,
            _tmp: tmp,
        };
        let out = common::lab(&args);
        assert!(out.status.success(), "up failed:\n{}", common::text(&out));
        up
    }

    /// kubectl's stdout; fails the test when kubectl fails.
    fn kubectl_ok(&self, args: &[&str]) -> String {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.join("state.json")).unwrap())
                .unwrap();
        let out = Command::new("kubectl")
            .arg(format!("--server={}", state["host_url"].as_str().unwrap()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kube-cache").display()
            ))
            .args(args)
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}:\n{}",
            common::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sluice-lab exec POD -- args…`: (success, stdout and stderr).
    fn exec(&self, pod: &str, args: &[&str]) -> (bool, String) {
        let d = self.dir.to_string_lossy();
        let mut all = vec!["--lab-dir", &d, "exec", pod, "--"];
        all.extend_from_slice(args);
        let out = common::lab(&all);
        (out.status.success(), common::text(&out))
    }

    /// `sluice-lab dig POD NAME TYPE`: (NOERROR, output).
    fn dig(&self, pod: &str, name: &str, kind: &str) -> (bool, String) {
        let d = self.dir.to_string_lossy();
        let out = common::lab(&["--lab-dir", &d, "dig", pod, name, kind]);
        (out.status.success(), common::text(&out))
    }

    /// The addresses `getent ahostsv4 NAME` gives in `pod` (empty: does not resolve).
    fn resolve(&self, pod: &str, name: &str) -> Vec<String> {
        let (_, text) = self.exec(pod, &["getent", "ahostsv4", name]);
        let mut ips: Vec<String> = (text.lines())
            .filter(|l| l.contains("STREAM"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let out = common::lab(&["--lab-dir", &self.dir.to_string_lossy(), "down"]);
        if !std::thread::panicking() {
            assert!(out.status.success(), "down failed:\n{}", common::text(&out));
            common::assert_nothing_left(&self.name, &self.dir);
            let etc = Path::new("/etc/netns");
            let left: Vec<String> = std::fs::read_dir(etc)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{}-", self.name)))
                .collect();
            assert_eq!(left, Vec::<String>::new(), "/etc/netns entries left");
        }
    }
}

/// How `sluice-lab dig` prints a name that does not exist.
const NXDOMAIN: &str = "status: NXDOMAIN";

/// Retries `f` every 20 ms until it returns `Some`, panicking after `limit`.
/// The bound for a new Service's name to resolve from a pod. The issue asks for "within a
/// second" and the lab measures 10–40 ms (printed by the test); the bound is wider because
/// tests do not assert timings on a shared machine — it catches a lookup that never works.
const RESOLVES: Duration = Duration::from_secs(10);

fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rows(table: &str) -> Vec<Vec<String>> {
    (table.lines())
        .filter(|l| !l.starts_with("Warning") && !l.starts_with("W1") && !l.starts_with("I1"))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn kubectl_sees_ready_nodes_pods_and_cluster_dns_answers_by_name() {
    let lab = Up::new("kv", "nftables");

    // Nodes: Ready, with addresses and the machine's kernel.
    let (nodes, _) = within(Duration::from_secs(10), "nodes Ready", || {
        let out = lab.kubectl_ok(&["get", "nodes", "-o", "wide"]);
        let r = rows(&out);
        (r.len() == 3 && r[1][1] == "Ready" && r[2][1] == "Ready").then_some(r)
    });
    assert_eq!(
        nodes[0][..6],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert_eq!(nodes[1][0], "node1");
    assert_eq!(nodes[2][5], "192.168.0.12");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(nodes[1].contains(&kernel.trim().to_owned()), "{nodes:?}");

    // Pods: ready, running, with their IPs and nodes.
    let pods = rows(&lab.kubectl_ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        pods[0][..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );
    assert_eq!(pods[1][..3], ["web-1", "1/1", "Running"]);
    assert!(pods[1][5].starts_with("10.244.1."), "{pods:?}");
    assert_eq!(pods[2][6], "node2");

    // kubectl's protobuf generator; the name resolves in a pod within a second.
    let cluster_ip = lab.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let cluster_ip = cluster_ip.trim();
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");
    let (_, took) = within(RESOLVES, "web resolves", || {
        (lab.resolve("web-1", "web") == [cluster_ip]).then_some(())
    });
    println!(
        "a new Service resolved from a pod {:.0} ms after kubectl create",
        took.as_secs_f64() * 1e3
    );
    // Traffic to the name (search paths, ndots) reaches a pod through the proxy.
    let (body, _) = within(Duration::from_secs(10), "curl http://web/", || {
        let (ok, text) = lab.exec("web-2", &["curl", "-sS", "--max-time", "2", "http://web/"]);
        (ok && text.starts_with("sluice-echo web-")).then_some(text)
    });
    assert!(body.starts_with("sluice-echo"), "{body}");
    let fqdn = lab.resolve("web-2", "web.default.svc.cluster.local.");
    assert_eq!(fqdn, [cluster_ip]);

    // PTR for a ClusterIP (glibc asks the server for 10.0.96.10.in-addr.arpa).
    let (_, ptr) = lab.exec("web-1", &["getent", "hosts", "10.96.0.10"]);
    assert!(
        ptr.contains("kube-dns.kube-system.svc.cluster.local"),
        "{ptr}"
    );

    // kubectl expose (JSON): a second name for web-1 alone.
    lab.kubectl_ok(&["label", "pod", "web-1", "solo=yes"]);
    let out = lab.kubectl_ok(&[
        "expose",
        "pod",
        "web-1",
        "--name=solo",
        "--port=80",
        "--target-port=8080",
    ]);
    assert!(out.contains("service/solo exposed"), "{out}");
    within(
        Duration::from_secs(10),
        "curl http://solo/ answered by web-1",
        || {
            let (ok, text) = lab.exec("web-2", &["curl", "-sS", "--max-time", "2", "http://solo/"]);
            (ok && text.starts_with("sluice-echo web-1 ")).then_some(())
        },
    );

    // Headless: the ready endpoints.
    let yaml = lab.dir.join("headless.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: peers}\nspec:\n  clusterIP: None\n  \
         selector: {app: web}\n  ports: [{name: http, port: 8080}]\n",
    )
    .unwrap();
    lab.kubectl_ok(&["create", "--validate=false", "-f", &yaml.to_string_lossy()]);
    let (peers, _) = within(Duration::from_secs(5), "headless endpoints", || {
        let ips = lab.resolve("web-1", "peers");
        (ips.len() == 2).then_some(ips)
    });
    assert!(
        peers.iter().all(|ip| ip.starts_with("10.244.")),
        "{peers:?}"
    );
    // SRV for the named port: one per endpoint, each endpoint's own name.
    let (ok, srv) = lab.dig("web-1", "_http._tcp.peers.default.svc.cluster.local", "SRV");
    assert!(ok, "{srv}");
    let targets = (srv.lines())
        .filter(|l| l.contains(" SRV 0 100 8080 10-244-"))
        .count();
    assert_eq!(targets, 2, "{srv}");
    // ExternalName: a CNAME.
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: ExternalName\n  \
         externalName: solo.default.svc.cluster.local\n",
    )
    .unwrap();
    lab.kubectl_ok(&["create", "--validate=false", "-f", &yaml.to_string_lossy()]);
    within(Duration::from_secs(5), "ext CNAME", || {
        let (ok, out) = lab.dig("web-1", "ext.default.svc.cluster.local", "A");
        (ok && out.contains("CNAME solo.default.svc.cluster.local.")).then_some(())
    });

    // Deleted: NXDOMAIN.
    lab.kubectl_ok(&["delete", "service", "web"]);
    within(Duration::from_secs(5), "web NXDOMAIN", || {
        let (ok, out) = lab.dig("web-1", "web.default.svc.cluster.local", "A");
        (!ok && out.contains(NXDOMAIN)).then_some(())
    });
    let (ok, _) = lab.exec(
        "web-1",
        &["getent", "hosts", "web.default.svc.cluster.local"],
    );
    assert!(!ok, "getent still resolves a deleted Service");

    // A node whose daemons stop turns NotReady (its proxy stopped: False).
    let proxy = common::processes(&lab.dir.to_string_lossy())
        .into_iter()
        .find(|p| p.contains("sluice-proxy") && p.contains("node2"))
        .expect("node2's proxy");
    let pid = proxy.split(':').next().unwrap();
    assert!(Command::new("kill").arg(pid).status().unwrap().success());
    within(Duration::from_secs(15), "node2 NotReady", || {
        let r = rows(&lab.kubectl_ok(&["get", "nodes"]));
        (r[2][1] == "NotReady" && r[1][1] == "Ready").then_some(())
    });
    let reason = lab.kubectl_ok(&[
        "get",
        "node",
        "node2",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
    ]);
    assert_eq!(reason.trim(), "sluice-proxy is not running");
}

#[test]
fn names_resolve_and_carry_traffic_in_iptables_mode() {
    let lab = Up::new("ki", "iptables");
    let yaml = lab.dir.join("svc.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  \
         ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    .unwrap();
    lab.kubectl_ok(&["create", "--validate=false", "-f", &yaml.to_string_lossy()]);
    within(RESOLVES, "web resolves", || {
        (lab.resolve("web-1", "web").len() == 1).then_some(())
    });
    within(Duration::from_secs(10), "curl http://web.default/", || {
        let (ok, text) = lab.exec(
            "web-1",
            &["curl", "-sS", "--max-time", "2", "http://web.default/"],
        );
        (ok && text.starts_with("sluice-echo web-")).then_some(())
    });
}
