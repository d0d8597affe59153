//! The real `sluice-proxy` binary in iptables mode inside a test-bed node, once with
//! iptables-nft and once with iptables-legacy: kube-proxy's chains as `iptables-save` shows
//! them, real traffic (ClusterIP, NodePort from outside, NodePort on 127.0.0.1 through
//! route_localnet, REJECT without endpoints), `explain` tracing the rules read back from the
//! kernel, drift repaired (a flushed Service chain, a deleted canary), a restart under TCP
//! load that loses nothing and rewrites no Service chain, `--cleanup`, and a switch to
//! nftables mode that leaves no iptables rule behind.

mod common;

use common::{eventually, vip};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_testbed::cluster::Cluster;
use sluice_testbed::link::{Address, Route};
use sluice_testbed::traffic::{EchoServer, tcp_request, tcp_request_from};
use sluice_testbed::{NetNs, Process};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");
const T: Duration = Duration::from_secs(2);

fn manifests(web_eps: &[Ipv4Addr]) -> String {
    let eps: String = (web_eps.iter())
        .map(|ip| {
            format!(
                "  - addresses: [\"{ip}\"]\n    conditions: {{ready: true}}\n    nodeName: node-2\n"
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: demo}}\n\
         spec: {{clusterIP: 10.96.0.10, type: NodePort, ports: [{{name: http, port: 80, nodePort: 30080}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: none, namespace: demo}}\n\
         spec: {{clusterIP: 10.96.0.13, ports: [{{name: http, port: 80}}]}}\n"
    )
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".all.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("all.yaml")).unwrap();
}

fn proxy_cmd(mode: &str, variant: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--proxy-mode", mode, "--iptables-variant", variant])
        .args([
            "--hostname-override",
            "node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .args([
            "--min-sync-period",
            "100ms",
            "--sync-period",
            "2s",
            "--manifests-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info");
    cmd
}

fn save(ns: &NetNs, variant: &str, table: &str) -> String {
    ns.exec([
        format!("iptables-{variant}-save"),
        "-t".into(),
        table.into(),
    ])
    .unwrap()
}

/// kube-proxy's chain for demo/web:http over TCP (first 16 of base32(sha256)).
const WEB_SVC: &str = "KUBE-SVC-XRY76EGRC3BSCIIJ";

fn run_variant(variant: &str) {
    sluice_testbed::require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let client = n1.add_pod("client").unwrap();
    let b1 = n2.add_pod("b1").unwrap();
    let _server = EchoServer::tcp(b1.ns(), b1.name(), "0.0.0.0:8080".parse().unwrap()).unwrap();
    let _svc_route = Route::dev(n1.ns(), "10.96.0.0/12", "eth0").unwrap();
    let outside = cluster.underlay().ns();
    let _addr = Address::new(outside, "ul0", "192.168.0.250/24".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, &manifests(&[b1.ip()]));
    let mut proxy = n1.ns().spawn(&proxy_cmd("iptables", variant, d)).unwrap();

    let web = vip("10.96.0.10", 80);
    let first = eventually(Duration::from_secs(20), || {
        tcp_request(client.ns(), web, T).ok()
    });
    assert_eq!(
        (first.backend.as_str(), first.seen_source.ip()),
        ("b1", client.ip().into())
    );
    // NodePort from outside (masqueraded) and on the node's 127.0.0.1.
    let np = tcp_request(outside, vip("192.168.0.11", 30080), T).unwrap();
    assert_eq!(np.seen_source.ip(), Ipv4Addr::new(192, 168, 0, 11));
    let local = tcp_request(n1.ns(), vip("127.0.0.1", 30080), T).unwrap();
    assert_eq!(local.backend, "b1");
    let sysctl = n1
        .ns()
        .exec(["sysctl", "-n", "net.ipv4.conf.all.route_localnet"])
        .unwrap();
    assert_eq!(sysctl.trim(), "1");
    // No endpoints: refused at once.
    let refused =
        tcp_request(client.ns(), vip("10.96.0.13", 80), Duration::from_secs(5)).unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("refused"),
        "{refused}"
    );

    // What an operator's tooling reads: kube-proxy's chains, in the variant asked for.
    let nat = save(n1.ns(), variant, "nat");
    for want in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        &format!(
            "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"demo/web:http cluster IP\" -m tcp --dport 80 -j {WEB_SVC}"
        ),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        ":KUBE-PROXY-CANARY - [0:0]",
    ] {
        assert!(nat.contains(want), "{want} not in\n{nat}");
    }
    let filter = save(n1.ns(), variant, "filter");
    assert!(
        filter
            .contains("--comment \"demo/none:http has no endpoints\" -m tcp --dport 80 -j REJECT"),
        "{filter}"
    );
    let other = if variant == "nft" { "legacy" } else { "nft" };
    assert!(
        !save(n1.ns(), other, "nat").contains("KUBE-SERVICES"),
        "rules in the other variant"
    );

    // explain traces the rules read back from the kernel.
    let explain = n1
        .ns()
        .exec([
            BIN,
            "--proxy-mode",
            "iptables",
            "--iptables-variant",
            variant,
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
        "iptables rules (programmed, iptables-save): DNAT to one of {}:8080 (agrees)",
        b1.ip()
    );
    assert!(explain.contains(&want), "{explain}");

    // Drift: a flushed Service chain is refilled by the next full sync (2 s)...
    n1.ns()
        .exec([&format!("iptables-{variant}"), "-t", "nat", "-F", WEB_SVC])
        .unwrap();
    // A connection attempted meanwhile leaves a flow that was never DNATed (its SYN found no
    // rule); it would catch every later connection from the same source port for two minutes.
    let source = std::net::SocketAddr::new(client.ip().into(), 40_000);
    assert!(tcp_request_from(client.ns(), source, web, Duration::from_millis(500)).is_err());
    eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), web, T).ok()
    });
    // The repairing sync deleted that flow: the same source port gets through.
    eventually(Duration::from_secs(5), || {
        tcp_request_from(client.ns(), source, web, Duration::from_millis(500)).ok()
    });
    // ...and a deleted canary (someone flushed the tables) asks for a full sync at once.
    let ipt = format!("iptables-{variant}");
    n1.ns()
        .exec([
            ipt.as_str(),
            "-t",
            "nat",
            "-D",
            "PREROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ])
        .unwrap();
    n1.ns()
        .exec([ipt.as_str(), "-t", "mangle", "-X", "KUBE-PROXY-CANARY"])
        .unwrap();
    eventually(Duration::from_secs(15), || {
        save(n1.ns(), variant, "mangle")
            .contains(":KUBE-PROXY-CANARY")
            .then_some(())
    });
    eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), web, T).ok()
    });

    // Restart under load: nothing lost, the Service chains not rewritten (their packet
    // counters survive; a rewrite would zero them).
    let counters = |ns: &NetNs| -> String {
        let out = ns
            .exec([
                format!("iptables-{variant}-save"),
                "-c".into(),
                "-t".into(),
                "nat".into(),
            ])
            .unwrap();
        out.lines()
            .filter(|l| l.contains("-j DNAT"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed, restarted) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tcp_request(client.ns(), web, T) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
                // A steady client (~200 connections/s). Its source ports wrap within
                // seconds, onto the flows the drift checks above left un-NATed: this is
                // what found the conntrack note in proxy/README.md.
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        std::thread::sleep(Duration::from_millis(300));
        proxy.stop();
        std::thread::sleep(Duration::from_millis(300));
        let p = n1.ns().spawn(&proxy_cmd("iptables", variant, d)).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.join().unwrap();
        (ok, failed, p)
    });
    let mut proxy: Process = restarted;
    assert!(
        failed.is_empty() && ok > 100,
        "{ok} answered, failed: {failed:?}\n{}",
        proxy.log_tail(40)
    );
    let before = counters(n1.ns());
    assert!(!before.contains("[0:0]"), "{before}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !counters(n1.ns()).contains("[0:0]"),
        "restart rewrote the chains:\n{}",
        proxy.log_tail(30)
    );
    let metrics = n1
        .ns()
        .exec(["curl", "-s", "http://127.0.0.1:10249/metrics"])
        .unwrap();
    assert!(
        metrics.contains(
            "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"}"
        ),
        "{metrics}"
    );
    proxy.stop();

    // Switching to nftables mode removes every iptables rule of ours (kubelet's KUBE-FIREWALL stays).
    // (The old rules serve until the new table is there.)
    let mut nft = n1.ns().spawn(&proxy_cmd("nftables", variant, d)).unwrap();
    eventually(Duration::from_secs(20), || {
        n1.ns().exec(["nft", "list", "table", "ip", "sluice"]).ok()
    });
    tcp_request(client.ns(), web, T).unwrap();
    for table in ["nat", "filter", "mangle"] {
        let left = save(n1.ns(), variant, table);
        let ours: Vec<&str> = left
            .lines()
            .filter(|l| l.contains("KUBE-") && !l.contains("KUBE-FIREWALL"))
            .collect();
        assert!(ours.is_empty(), "{table}: {ours:?}\n{}", nft.log_tail(20));
    }
    nft.stop();

    // --cleanup after iptables mode leaves none of our chains.
    let mut p = n1.ns().spawn(&proxy_cmd("iptables", variant, d)).unwrap();
    eventually(Duration::from_secs(20), || {
        save(n1.ns(), variant, "nat")
            .contains(WEB_SVC)
            .then_some(())
    });
    p.stop();
    let mut cleanup = Command::new(BIN);
    cleanup.args(["--cleanup", "--iptables-variant", variant]);
    let mut c = n1.ns().spawn(&cleanup).unwrap();
    assert!(
        c.wait_timeout(Duration::from_secs(20)).unwrap().success(),
        "{}",
        c.logs()
    );
    for table in ["nat", "filter"] {
        let left = save(n1.ns(), variant, table);
        let ours: Vec<&str> = left
            .lines()
            .filter(|l| l.contains("KUBE-") && !l.contains("KUBE-FIREWALL"))
            .collect();
        assert!(ours.is_empty(), "{table}: {ours:?}");
    }
}

#[test]
fn iptables_nft() {
    run_variant("nft");
}

#[test]
fn iptables_legacy() {
    run_variant("legacy");
}
