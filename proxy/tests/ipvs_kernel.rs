//! The real `sluice-proxy` binary in IPVS mode, in a kernel that has IPVS: each test boots a
//! User-Mode Linux guest (`sluice_testbed::uml`) and runs its guest part there — a test-bed
//! cluster in the guest's network namespaces, the proxy on node 1 with iptables-legacy (the
//! guest kernel has no nf_tables for `ip` tables), real TCP and UDP through a ClusterIP and a
//! NodePort, what `ipvsadm`, `ip`, `ipset` and `iptables-legacy-save` show, a restart that
//! adopts without deleting anything, and `--cleanup`.

mod common;

use common::{eventually, vip};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_testbed::cluster::Cluster;
use sluice_testbed::link::{Address, Route};
use sluice_testbed::traffic::{EchoServer, tcp_request, udp_request};
use sluice_testbed::uml::{self, Uml};
use sluice_testbed::{NetNs, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");
const T: Duration = Duration::from_secs(2);

fn manifests(eps: &[Ipv4Addr]) -> String {
    let eps: String = (eps.iter())
        .map(|ip| {
            format!(
                "  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n    nodeName: node-2\n"
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: demo}}\n\
         spec: {{clusterIP: 10.96.0.10, type: NodePort, ports: [{{name: http, port: 80, nodePort: 30080}}, {{name: dns, port: 53, protocol: UDP}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n{eps}---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: none, namespace: demo}}\n\
         spec: {{clusterIP: 10.96.0.13, ports: [{{name: http, port: 80}}]}}\n"
    )
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".all.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("all.yaml")).unwrap();
}

fn proxy_cmd(dir: &Path, extra: &[&str]) -> Command {
    proxy_cmd_in("ipvs", dir, extra)
}

fn proxy_cmd_in(mode: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--proxy-mode", mode, "--iptables-variant", "legacy"])
        .args(["--hostname-override", "node-1"])
        .args(["--cluster-cidr", "10.244.0.0/16"])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .args(["--min-sync-period", "100ms", "--sync-period", "2s"])
        .args(extra)
        .arg("--manifests-dir")
        .arg(dir)
        .env("RUST_LOG", "info");
    cmd
}

fn sh(ns: &NetNs, cmd: &str) -> String {
    ns.exec(["bash", "-c", cmd]).unwrap()
}

#[test]
fn ipvs_mode_serves_clusterip_and_nodeport_in_a_guest_kernel() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .timeout(Duration::from_secs(240))
            .run_test("ipvs_mode_serves_clusterip_and_nodeport_in_a_guest_kernel")
            .unwrap();
        println!("guest run took {:?}", out.elapsed);
        out.assert_success();
        return;
    }
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let client = n1.add_pod("client").unwrap();
    let b1 = n2.add_pod("b1").unwrap();
    let _tcp = EchoServer::tcp(b1.ns(), b1.name(), "0.0.0.0:8080".parse().unwrap()).unwrap();
    let _udp = EchoServer::udp(b1.ns(), b1.name(), "0.0.0.0:5353".parse().unwrap()).unwrap();
    let outside = cluster.underlay().ns();
    let _addr = Address::new(outside, "ul0", "192.168.0.250/24".parse().unwrap()).unwrap();
    let _svc_route = Route::dev(n1.ns(), "10.96.0.0/12", "eth0").ok();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, &manifests(&[b1.ip()]));
    let timeouts = [
        "--ipvs-tcp-timeout",
        "900s",
        "--ipvs-tcpfin-timeout",
        "120s",
        "--ipvs-udp-timeout",
        "300s",
    ];
    let mut proxy = n1.ns().spawn(&proxy_cmd(d, &timeouts)).unwrap();

    // ClusterIP from a pod on the node: TCP and UDP, the pod's own source kept.
    let web = vip("10.96.0.10", 80);
    let first = eventually(Duration::from_secs(20), || {
        tcp_request(client.ns(), web, T).ok()
    });
    assert_eq!(
        (first.backend.as_str(), first.seen_source.ip()),
        ("b1", client.ip().into()),
        "{}",
        proxy.logs()
    );
    // The sets went over ipset's netlink protocol, not the `ipset` program (the fallback).
    let logs = proxy.logs();
    assert!(!logs.contains("ipset over netlink unavailable"), "{logs}");
    // kube-proxy's IPVS-mode iptables metrics.
    let metrics = sh(n1.ns(), "curl -s http://127.0.0.1:10249/metrics");
    assert!(
        metrics.contains(
            "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"}"
        ),
        "{metrics}"
    );
    let dns = udp_request(client.ns(), vip("10.96.0.10", 53), T).unwrap();
    assert_eq!(dns.backend, "b1");
    // NodePort from outside the node, masqueraded to the node's address.
    // (Retried: the first packet from outside may wait for the underlay's neighbours.)
    let np = eventually(Duration::from_secs(10), || {
        tcp_request(outside, vip("192.168.0.11", 30080), T).ok()
    });
    assert_eq!(
        (np.backend.as_str(), np.seen_source.ip()),
        ("b1", Ipv4Addr::new(192, 168, 0, 11).into())
    );
    // No endpoints: a virtual server without real servers. IPVS itself answers ICMP port
    // unreachable when it cannot schedule (ip_vs_leave), so the client is refused at once,
    // as by the other modes' REJECT (no REJECT rule is involved).
    let err = tcp_request(client.ns(), vip("10.96.0.13", 80), Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    // What an operator's tools show (our netlink client cross-checked by ipvsadm).
    let ipvs = sh(n1.ns(), "ipvsadm -Ln");
    for want in [
        "TCP  10.96.0.10:80 rr",
        "UDP  10.96.0.10:53 rr",
        "TCP  192.168.0.11:30080 rr",
        "TCP  10.96.0.13:80 rr",
        &format!("-> {}:8080", b1.ip()),
        &format!("-> {}:5353", b1.ip()),
    ] {
        assert!(ipvs.contains(want), "{want} not in\n{ipvs}");
    }
    let link = sh(n1.ns(), "ip -br addr show kube-ipvs0");
    assert!(
        link.contains("10.96.0.10/32") && link.contains("10.96.0.13/32"),
        "{link}"
    );
    let sets = sh(n1.ns(), "ipset save");
    for want in [
        "add KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
        "add KUBE-CLUSTER-IP 10.96.0.10,udp:53",
        "add KUBE-NODE-PORT-TCP 30080",
        "add KUBE-IPVS-IPS 10.96.0.10",
    ] {
        assert!(sets.contains(want), "{want} not in\n{sets}");
    }
    let nat = sh(n1.ns(), "iptables-legacy-save -t nat");
    assert!(nat.contains("-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE"), "{nat}");
    assert!(
        nat.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{nat}"
    );
    let t = sh(n1.ns(), "ipvsadm -L --timeout");
    assert!(t.contains("900 120 300"), "{t}");
    for (path, want) in [
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
    ] {
        let v = sh(n1.ns(), &format!("cat /proc/sys/{path}"));
        assert_eq!(v.trim(), want, "{path}");
    }

    // explain traces what is programmed (read back over netlink and from ipset).
    let explain = n1
        .ns()
        .exec([
            BIN,
            "--proxy-mode",
            "ipvs",
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--manifests-dir",
            d.to_str().unwrap(),
            "explain",
            "--src",
            "10.244.1.9",
            "--dst",
            "10.96.0.10:80",
        ])
        .unwrap();
    let want = format!(
        "ipvs rules (programmed, IPVS netlink and ipset): DNAT to one of {}:8080 (agrees)",
        b1.ip()
    );
    assert!(explain.contains(&want), "{explain}");

    // An endpoint change reaches IPVS: the UDP real server goes at once, TCP's is
    // weighted 0 (graceful termination) until its connections are gone.
    write(d, &manifests(&[]));
    eventually(Duration::from_secs(10), || {
        let ipvs = sh(n1.ns(), "ipvsadm -Ln");
        (!ipvs.contains(":5353")).then_some(())
    });
    let ipvs = sh(n1.ns(), "ipvsadm -Ln");
    let weights: Vec<&str> = (ipvs.lines())
        .filter(|l| l.contains(":8080"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert!(
        !weights.is_empty() && weights.iter().all(|w| *w == "0"),
        "{ipvs}"
    );
    write(d, &manifests(&[b1.ip()]));
    eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), web, T).ok()
    });

    // Restart: adopts what is there, deletes nothing (the virtual server keeps its
    // connection counters, which a delete and re-add would reset).
    let before = sh(n1.ns(), "ipvsadm -Ln --stats -t 10.96.0.10:80");
    proxy.stop();
    let mut proxy = n1.ns().spawn(&proxy_cmd(d, &[])).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = sh(n1.ns(), "ipvsadm -Ln --stats -t 10.96.0.10:80");
    let conns = |s: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with("TCP"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        conns(&after) >= conns(&before) && conns(&before) > 0,
        "{before}\n{after}\n{}",
        proxy.logs()
    );
    tcp_request(client.ns(), web, T).unwrap();
    proxy.stop();

    // --cleanup removes the virtual servers, kube-ipvs0, the sets and the rules, and
    // succeeds: the guest kernel has no nf_tables, so the nftables mode and iptables-nft
    // have nothing to remove (it exited 1 before, reporting "Invalid argument").
    let cleanup = Command::new("ip")
        .args(["netns", "exec", n1.ns().name(), BIN, "--cleanup"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cleanup.stderr);
    assert!(cleanup.status.success(), "{stderr}");
    assert!(!sh(n1.ns(), "ipvsadm -Ln").contains("10.96.0.10"));
    assert!(!sh(n1.ns(), "ip link").contains("kube-ipvs0"));
    assert!(!sh(n1.ns(), "ipset list -n").contains("KUBE-"));
    assert!(!sh(n1.ns(), "iptables-legacy-save").contains("KUBE-"));
}

/// What only the IPVS mode has, found in the guest node's namespace (empty: nothing).
fn ipvs_objects(ns: &NetNs) -> Vec<String> {
    let mut found = Vec::new();
    let servers = sh(ns, "ipvsadm -Ln");
    found.extend(
        (servers.lines())
            .filter(|l| l.starts_with("TCP") || l.starts_with("UDP"))
            .map(|l| format!("virtual server {l}")),
    );
    if sh(ns, "ip link").contains("kube-ipvs0") {
        found.push("kube-ipvs0".into());
    }
    found.extend(
        (sh(ns, "ipset list -n").lines())
            .filter(|s| s.starts_with("KUBE-"))
            .map(|s| format!("ipset {s}")),
    );
    let rules = sh(ns, "iptables-legacy-save");
    found.extend(
        (rules.lines())
            .filter(|l| {
                [
                    "KUBE-NODE-PORT ",
                    "KUBE-LOAD-BALANCER",
                    "KUBE-SOURCE-RANGES-FIREWALL",
                    "KUBE-IPVS-",
                ]
                .iter()
                .any(|c| l.contains(c))
                    || l.contains("--match-set")
                    || l.contains("kube-proxy firewall rules")
            })
            .map(str::to_owned),
    );
    found
}

/// What only the iptables mode has (empty: nothing).
fn iptables_objects(ns: &NetNs) -> Vec<String> {
    let rules = sh(ns, "iptables-legacy-save");
    let mut table = String::new();
    let mut found = Vec::new();
    for l in rules.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_owned();
        }
        let only_iptables = [
            "KUBE-SVC-",
            "KUBE-SVL-",
            "KUBE-SEP-",
            "KUBE-EXT-",
            "KUBE-FW-",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-CANARY",
            "KUBE-EXTERNAL-SERVICES",
            "kubernetes load balancer firewall",
        ]
        .iter()
        .any(|c| l.contains(c))
            || (table == "filter" && l.contains("KUBE-SERVICES"));
        if only_iptables {
            found.push(format!("{table}: {l}"));
        }
    }
    found
}

#[test]
fn switching_between_ipvs_and_iptables_modes_leaves_nothing_of_the_other() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .timeout(Duration::from_secs(240))
            .run_test("switching_between_ipvs_and_iptables_modes_leaves_nothing_of_the_other")
            .unwrap();
        println!("guest run took {:?}", out.elapsed);
        out.assert_success();
        return;
    }
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let client = n1.add_pod("client").unwrap();
    let b1 = n2.add_pod("b1").unwrap();
    let _tcp = EchoServer::tcp(b1.ns(), b1.name(), "0.0.0.0:8080".parse().unwrap()).unwrap();
    let _svc_route = Route::dev(n1.ns(), "10.96.0.0/12", "eth0").ok();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, &manifests(&[b1.ip()]));
    let web = vip("10.96.0.10", 80);
    let serves = |proxy: &sluice_testbed::Process| {
        let r = eventually(Duration::from_secs(20), || {
            tcp_request(client.ns(), web, T).ok()
        });
        assert_eq!(r.backend, "b1", "{}", proxy.logs());
    };
    let quiet = |proxy: &sluice_testbed::Process| {
        let logs = proxy.logs();
        assert!(
            !logs.contains("leftovers"),
            "a leftover removal failed:\n{logs}"
        );
    };

    // Starts `mode` and waits until `probe` shows `synced`, then until the ClusterIP serves
    // (the other mode's rules may serve until this one has synced).
    let start = |mode: &str, probe: &str, synced: &str| {
        let proxy = n1.ns().spawn(&proxy_cmd_in(mode, d, &[])).unwrap();
        eventually(Duration::from_secs(20), || {
            sh(n1.ns(), probe).contains(synced).then_some(())
        });
        serves(&proxy);
        proxy
    };
    let ipvs = || start("ipvs", "ipvsadm -Ln", "10.96.0.10:80");
    let iptables = || start("iptables", "iptables-legacy-save -t nat", "-A KUBE-SVC-");

    // A node that never ran the IPVS mode keeps its own IPVS services (a load balancer's,
    // keepalived's) when iptables mode starts: no kube-ipvs0, nothing of IPVS touched.
    sh(n1.ns(), "ipvsadm -A -t 10.99.0.1:80 -s rr");
    let mut proxy = iptables();
    assert!(
        sh(n1.ns(), "ipvsadm -Ln").contains("10.99.0.1:80"),
        "{}",
        proxy.logs()
    );
    quiet(&proxy);
    proxy.stop();
    sh(n1.ns(), "ipvsadm -D -t 10.99.0.1:80");

    let mut proxy = ipvs();
    assert!(!ipvs_objects(n1.ns()).is_empty());
    proxy.stop();

    // ipvs → iptables: nothing of the IPVS mode is left once iptables mode has synced (the
    // removal ran before) and it serves.
    let mut proxy = iptables();
    let left = ipvs_objects(n1.ns());
    assert_eq!(left, Vec::<String>::new(), "{}", proxy.logs());
    quiet(&proxy);
    proxy.stop();

    // iptables → ipvs: nothing of the iptables mode is left.
    let mut proxy = ipvs();
    let left = iptables_objects(n1.ns());
    assert_eq!(left, Vec::<String>::new(), "{}", proxy.logs());
    quiet(&proxy);
    // A restart in the same mode removes nothing of its own (the virtual server stays).
    proxy.stop();
    let mut proxy = ipvs();
    quiet(&proxy);
    proxy.stop();
}
