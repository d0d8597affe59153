//! The real `sluice-proxy` binary in nftables mode inside a test-bed node, fed by
//! `--manifests-dir`, with real traffic: ClusterIP across nodes, NodePort from outside (source
//! masqueraded), `externalTrafficPolicy: Local` (source kept, local endpoint only), REJECT for
//! a Service without endpoints and one scaled to zero, affinity that sticks and expires, LB
//! source ranges, hairpin, UDP conntrack cleanup, drift (a flushed chain, a deleted table)
//! repaired, a restart under TCP load that loses nothing and rewrites no rule, health and
//! metrics, `--cleanup`.

mod common;

use common::{eventually, vip};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_testbed::cluster::{Cluster, Pod};
use sluice_testbed::link::{Address, Route, Veth};
use sluice_testbed::traffic::{EchoServer, Proto, request, tcp_request};
use sluice_testbed::{NetNs, Process};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");
const T: Duration = Duration::from_secs(2);

fn service(name: &str, cip: &str, extra_spec: &str, proto: &str, eps: &[(&Pod, &str)]) -> String {
    let endpoints: String = eps
        .iter()
        .map(|(p, node)| {
            format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n    nodeName: {node}\n",
                p.ip()
            )
        })
        .collect();
    let endpoints = if endpoints.is_empty() {
        "endpoints: []\n".to_owned()
    } else {
        format!("endpoints:\n{endpoints}")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: web}}\n\
         spec: {{clusterIP: {cip}, ports: [{{name: p, port: 80, protocol: {proto}}}]{extra_spec}}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: web, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: p, port: 8080, protocol: {proto}}}]\n{endpoints}"
    )
}

/// A LoadBalancer whose ingress IP only 192.168.0.250 may reach.
const LB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: web}\n\
spec: {clusterIP: 10.96.0.17, type: LoadBalancer, loadBalancerSourceRanges: [192.168.0.250/32], \
ports: [{name: p, port: 80, nodePort: 30082}]}\n\
status: {loadBalancer: {ingress: [{ip: 192.168.0.200}]}}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: lb-1, namespace: web, labels: {kubernetes.io/service-name: lb}}\n\
addressType: IPv4\nports: [{name: p, port: 8080, protocol: TCP}]\n\
endpoints:\n  - addresses: [\"10.244.2.2\"]\n    conditions: {ready: true}\n    nodeName: node-2\n";

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn start_proxy(ns: &NetNs, dir: &Path) -> Process {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--proxy-mode",
        "nftables",
        "--hostname-override",
        "node-1",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--service-cidr",
        "10.96.0.0/12",
    ])
    .args([
        "--healthz-bind-address",
        "127.0.0.1:10256",
        "--metrics-bind-address",
        "127.0.0.1:10249",
    ])
    .args([
        "--min-sync-period",
        "100ms",
        "--sync-period",
        "2s",
        "--manifests-dir",
    ])
    .arg(dir)
    .env("RUST_LOG", "info");
    ns.spawn(&cmd).unwrap()
}

/// Handles of the rules of the `services` chain, as `nft -a` lists them.
fn handles(ns: &NetNs) -> Vec<String> {
    let out = ns
        .exec(["nft", "-a", "list", "chain", "ip", "sluice", "services"])
        .unwrap();
    out.lines()
        .filter_map(|l| l.split("# handle ").nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn services_work_through_the_real_binary() {
    sluice_testbed::require_root();
    let cluster = Cluster::with_pod_routes(2).unwrap();
    let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let client = n1.add_pod("client").unwrap();
    let local = n1.add_pod("a1").unwrap();
    let b1 = n2.add_pod("b1").unwrap();
    let b2 = n2.add_pod("b2").unwrap();
    let _servers: Vec<EchoServer> = [&local, &b1, &b2]
        .iter()
        .flat_map(|p| {
            [
                EchoServer::tcp(p.ns(), p.name(), "0.0.0.0:8080".parse().unwrap()).unwrap(),
                EchoServer::udp(p.ns(), p.name(), "0.0.0.0:8080".parse().unwrap()).unwrap(),
            ]
        })
        .collect();
    // Nodes route the service CIDR (real nodes have a default route): without a route the
    // kernel answers "network unreachable" before the filter hooks that reject can run.
    let _svc_route = Route::dev(n1.ns(), "10.96.0.0/12", "eth0").unwrap();
    // An outside client on the underlay.
    let outside = cluster.underlay().ns();
    let _addr = Address::new(outside, "ul0", "192.168.0.250/24".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "web.yaml",
        &service(
            "web",
            "10.96.0.10",
            "",
            "TCP",
            &[(&local, "node-1"), (&b1, "node-2")],
        ),
    );
    write(
        d,
        "np.yaml",
        &service(
            "np",
            "10.96.0.11",
            ", type: NodePort, ports: [{name: p, port: 80, nodePort: 30080}]",
            "TCP",
            &[(&b1, "node-2")],
        ),
    );
    write(
        d,
        "local.yaml",
        &service(
            "local",
            "10.96.0.12",
            ", type: NodePort, externalTrafficPolicy: Local, ports: [{name: p, port: 80, nodePort: 30081}]",
            "TCP",
            &[(&local, "node-1"), (&b1, "node-2")],
        ),
    );
    write(
        d,
        "none.yaml",
        &service("none", "10.96.0.13", "", "TCP", &[]),
    );
    write(
        d,
        "dns.yaml",
        &service("dns", "10.96.0.14", "", "UDP", &[(&b1, "node-2")]),
    );
    write(
        d,
        "sticky.yaml",
        &service(
            "sticky",
            "10.96.0.15",
            ", sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}, externalIPs: [192.168.0.99]",
            "TCP",
            &[(&b1, "node-2"), (&b2, "node-2")],
        ),
    );
    write(
        d,
        "self.yaml",
        &service("self", "10.96.0.16", "", "TCP", &[(&local, "node-1")]),
    );
    write(d, "lb.yaml", LB);
    let mut proxy = start_proxy(n1.ns(), d);

    // ClusterIP from a pod on node 1 to pods on node 2: both answer, source kept.
    let web = vip("10.96.0.10", 80);
    let first = eventually(Duration::from_secs(20), || {
        tcp_request(client.ns(), web, T).ok()
    });
    assert_eq!(first.seen_source.ip(), client.ip());
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(tcp_request(client.ns(), web, T).unwrap().backend);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a1", "b1"],
        "{}",
        proxy.log_tail(20)
    );

    // NodePort from outside: masqueraded to node 1's address.
    let np = tcp_request(outside, vip("192.168.0.11", 30080), T).unwrap();
    assert_eq!(
        (np.backend.as_str(), np.seen_source.ip()),
        ("b1", Ipv4Addr::new(192, 168, 0, 11).into())
    );
    // eTP=Local from outside: the local endpoint only, the client's address kept.
    for _ in 0..10 {
        let r = tcp_request(outside, vip("192.168.0.11", 30081), T).unwrap();
        assert_eq!(
            (r.backend.as_str(), r.seen_source.ip()),
            ("a1", "192.168.0.250".parse().unwrap())
        );
    }
    // Session affinity: one client sticks to one endpoint; also through its external IP.
    let sticky: std::collections::BTreeSet<String> = (0..10)
        .map(
            |_| match tcp_request(client.ns(), vip("10.96.0.15", 80), T) {
                Ok(r) => r.backend,
                Err(e) => panic!(
                    "{e}\n{}\n{}",
                    n1.ns()
                        .exec(["nft", "list", "table", "ip", "sluice"])
                        .unwrap_or_default(),
                    proxy.log_tail(20)
                ),
            },
        )
        .collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    // ... and the stickiness expires with the affinity timeout (2 s here).
    let table = || {
        n1.ns()
            .exec(["nft", "list", "table", "ip", "sluice"])
            .unwrap()
    };
    assert!(table().contains("expires"), "no affinity entry");
    eventually(Duration::from_secs(6), || {
        (!table().contains("expires")).then_some(())
    });
    let _ext_route = Route::via(
        outside,
        "192.168.0.99/32",
        Ipv4Addr::new(192, 168, 0, 11),
        None,
    )
    .unwrap();
    let ext = tcp_request(outside, vip("192.168.0.99", 80), T).unwrap();
    assert!(["b1", "b2"].contains(&ext.backend.as_str()));
    // Hairpin: a pod reaching itself through its Service is answered (source masqueraded).
    // Its bridge port needs hairpin mode, as the CNI plugin sets it (`hairpinMode`).
    n1.ns()
        .exec([
            "bridge",
            "link",
            "set",
            "dev",
            local.host_if(),
            "hairpin",
            "on",
        ])
        .unwrap();
    let hairpin = tcp_request(local.ns(), vip("10.96.0.16", 80), T).unwrap();
    assert_eq!(hairpin.backend, "a1");
    assert_ne!(hairpin.seen_source.ip(), local.ip());

    // No endpoints: refused at once (TCP reset), not a timeout.
    let start = Instant::now();
    let refused =
        tcp_request(client.ns(), vip("10.96.0.13", 80), Duration::from_secs(5)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{refused}");
    assert!(
        refused.to_string().to_lowercase().contains("refused"),
        "{refused}"
    );

    // An unallocated ClusterIP in the service CIDR: dropped (a timeout, not a refusal).
    let unallocated = tcp_request(
        client.ns(),
        vip("10.96.9.9", 80),
        Duration::from_millis(500),
    );
    assert!(
        matches!(unallocated, Err(sluice_testbed::Error::Timeout { .. })),
        "{unallocated:?}"
    );
    let check = n1
        .ns()
        .exec(["nft", "list", "chain", "ip", "sluice", "cluster-ips-check"])
        .unwrap();
    assert!(check.contains("ip daddr 10.96.0.0/12 drop"), "{check}");

    // UDP: the flow to b1 is forgotten when b1 stops being an endpoint.
    let dns = vip("10.96.0.14", 80);
    assert_eq!(
        request(client.ns(), Proto::Udp, dns, T).unwrap().backend,
        "b1"
    );
    let flows = |ns: &NetNs| {
        ns.exec(["conntrack", "-L", "-p", "udp"])
            .unwrap_or_default()
    };
    assert!(flows(n1.ns()).contains(&b1.ip().to_string()));
    write(
        d,
        "dns.yaml",
        &service("dns", "10.96.0.14", "", "UDP", &[(&b2, "node-2")]),
    );
    eventually(Duration::from_secs(10), || {
        (!flows(n1.ns()).contains(&b1.ip().to_string())).then_some(())
    });
    assert_eq!(
        request(client.ns(), Proto::Udp, dns, T).unwrap().backend,
        "b2"
    );

    // loadBalancerSourceRanges: 192.168.0.250 may reach the LB IP, 192.168.0.251 may not.
    let _lb_route = Route::via(
        outside,
        "192.168.0.200/32",
        Ipv4Addr::new(192, 168, 0, 11),
        None,
    )
    .unwrap();
    assert_eq!(
        tcp_request(outside, vip("192.168.0.200", 80), T)
            .unwrap()
            .backend,
        "b1"
    );
    let other = NetNs::new("outside2").unwrap();
    let _veth = Veth::new(outside, "ul-o2", &other, "eth0").unwrap();
    cluster.underlay().bridge().attach("ul-o2").unwrap();
    let _other_addr = Address::new(&other, "eth0", "192.168.0.251/24".parse().unwrap()).unwrap();
    let _other_route = Route::via(
        &other,
        "192.168.0.200/32",
        Ipv4Addr::new(192, 168, 0, 11),
        None,
    )
    .unwrap();
    let denied = tcp_request(&other, vip("192.168.0.200", 80), Duration::from_millis(700));
    assert!(
        matches!(denied, Err(sluice_testbed::Error::Timeout { .. })),
        "{denied:?}"
    );
    assert_eq!(
        tcp_request(&other, vip("192.168.0.11", 30080), T)
            .unwrap()
            .backend,
        "b1",
        "the other client is routable"
    );

    // Scaling a Service to zero endpoints: refused at once, not a timeout.
    write(
        d,
        "np.yaml",
        &service(
            "np",
            "10.96.0.11",
            ", type: NodePort, ports: [{name: p, port: 80, nodePort: 30080}]",
            "TCP",
            &[],
        ),
    );
    let refused = eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), vip("10.96.0.11", 80), T).err()
    });
    assert!(
        refused.to_string().to_lowercase().contains("refused"),
        "{refused}"
    );

    // Health and metrics.
    let healthz = n1
        .ns()
        .exec([
            "curl",
            "-s",
            "-w",
            " %{http_code}",
            "http://127.0.0.1:10256/healthz",
        ])
        .unwrap();
    assert!(
        healthz.ends_with(" 200") && healthz.contains("lastUpdated"),
        "{healthz}"
    );
    let metrics = n1
        .ns()
        .exec(["curl", "-s", "http://127.0.0.1:10249/metrics"])
        .unwrap();
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds"),
        "{metrics}"
    );

    // Drift: a flushed dispatch chain is refilled by the next full sync (2 s).
    n1.ns()
        .exec(["nft", "flush", "chain", "ip", "sluice", "services"])
        .unwrap();
    assert!(tcp_request(client.ns(), web, Duration::from_millis(500)).is_err());
    eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), web, T).ok()
    });

    // Someone deletes the whole table: restored by the next full sync.
    n1.ns()
        .exec(["nft", "delete", "table", "ip", "sluice"])
        .unwrap();
    eventually(Duration::from_secs(10), || {
        tcp_request(client.ns(), web, T).ok()
    });

    // Restart: the new process adopts the table; the rules are not rewritten.
    let before = handles(n1.ns());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed, mut proxy) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tcp_request(client.ns(), web, T) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        });
        std::thread::sleep(Duration::from_millis(300));
        proxy.stop();
        std::thread::sleep(Duration::from_millis(300));
        let proxy = start_proxy(n1.ns(), d);
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = load.join().unwrap();
        (ok, failed, proxy)
    });
    assert!(
        failed.is_empty() && ok > 20,
        "{ok} answered, failed: {failed:?}"
    );
    eventually(Duration::from_secs(10), || {
        let h = n1
            .ns()
            .exec([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:10256/healthz",
            ])
            .ok()?;
        (h == "200").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        handles(n1.ns()),
        before,
        "restart rewrote the rules:\n{}",
        proxy.log_tail(30)
    );
    tcp_request(client.ns(), web, T).unwrap();
    proxy.stop();

    // --cleanup removes the table.
    let mut cleanup = Command::new(BIN);
    cleanup.arg("--cleanup");
    let mut p = n1.ns().spawn(&cleanup).unwrap();
    assert!(
        p.wait_timeout(Duration::from_secs(10)).unwrap().success(),
        "{}",
        p.logs()
    );
    assert!(
        n1.ns()
            .exec(["nft", "list", "table", "ip", "sluice"])
            .is_err()
    );
}

/// A full sync sent in parts (here of ~40 operations) programs through real netlink what
/// one transaction does — the kernel accepts each part's elements jumping to chains an
/// earlier part created — and a restarted backend adopting it has nothing to send.
#[test]
fn a_full_sync_in_parts_programs_what_one_transaction_does() {
    use sluice_nft::{Family, NftKernel};
    use sluice_proxy_core::backend::Backend;
    use sluice_proxy_core::fixture::{apply_many, state};
    use sluice_proxy_nftables::{NftConfig, NftablesBackend, TABLE};

    let mut st = state("node-a", None);
    apply_many(&mut st, 60);
    let (snap, changes) = st.sync();
    let listing = |part_ops: usize| -> (String, usize, usize) {
        let ns = NetNs::new("nftparts").unwrap();
        let (snap, changes) = (snap.clone(), changes.clone());
        ns.run(move || {
            let backend = |ops| {
                let kernel = sluice_nft::Netlink::open().unwrap();
                let configs = [NftConfig::new(Family::Ip)];
                NftablesBackend::new(kernel, sluice_conntrack::NoConntrack, configs)
                    .with_part_ops(ops)
            };
            let mut b = backend(part_ops);
            let before = b.kernel().generation().unwrap().unwrap();
            b.apply(&snap, &changes).unwrap();
            let after = b.kernel().generation().unwrap().unwrap();
            let mut restarted = backend(part_ops);
            restarted.apply(&snap, &changes).unwrap();
            let adopted = restarted.kernel().generation().unwrap().unwrap();
            let text = Command::new("nft")
                .args(["list", "table", "ip", TABLE])
                .output()
                .unwrap();
            let commits = after.wrapping_sub(before) as usize;
            (
                String::from_utf8(text.stdout).unwrap(),
                commits,
                adopted.wrapping_sub(after) as usize,
            )
        })
        .unwrap()
    };
    let (whole, one, _) = listing(usize::MAX);
    let (parts, many, restart) = listing(40);
    assert_eq!(one, 1);
    assert!(many > 5, "{many} commits");
    assert_eq!(
        restart, 0,
        "the restarted backend adopted the table without a commit"
    );
    assert!(whole.contains("10.180.2.59"));
    let sorted = |t: &str| {
        let mut lines: Vec<&str> = t.lines().map(str::trim).collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    assert_eq!(sorted(&parts), sorted(&whole));
}
