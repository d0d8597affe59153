//! The real daemon in etcd mode against what a careless operator or a hostile writer can put
//! in etcd or on its command line: bad peer leases (the underlay's /24, host bits, the whole
//! address space, garbage), its own lease overwritten or deleted (running and across a
//! restart), an etcd that silently stops answering, and flags that cannot work.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::etcd_lab::{EtcdLab, PREFIX};
use common::eventually;
use sluice_testbed::cluster::{Node, Pod};
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{Process, require_root};

const T: Duration = Duration::from_secs(15);

fn talks(from: &Pod, to: &Pod) -> bool {
    let addr = SocketAddr::new(to.ip().into(), 9000);
    traffic::tcp_request(from.ns(), addr, Duration::from_millis(300))
        .is_ok_and(|r| r.backend == to.name() && r.seen_source.ip() == IpAddr::from(from.ip()))
}

/// A valid-looking VXLAN lease value for a made-up peer at `192.168.0.<host>`.
fn value(host: u8) -> String {
    format!(
        r#"{{"PublicIP":"192.168.0.{host}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:00:00:00:00:{host:02x}"}}}}"#
    )
}

fn route(node: &Node, dst: &str) -> String {
    node.ns().ip(["route", "show", dst]).unwrap()
}

/// Two nodes up with their previous subnets, pods on each talking.
fn two_nodes_talking(lab: &EtcdLab) -> (Vec<Process>, Pod, Pod, Vec<EchoServer>) {
    let nodes = lab.cluster.nodes();
    nodes.iter().for_each(|n| lab.previous_run(n));
    let daemons = nodes.iter().map(|n| lab.daemon(n, "1h")).collect();
    eventually("both leases", T, || lab.leases() == 2);
    let a = nodes[0].add_pod("a").unwrap();
    let b = nodes[1].add_pod("b").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let servers = vec![
        EchoServer::tcp(a.ns(), "a", any).unwrap(),
        EchoServer::tcp(b.ns(), "b", any).unwrap(),
    ];
    eventually("pods talk across nodes", T, || {
        talks(&a, &b) && talks(&b, &a)
    });
    (daemons, a, b, servers)
}

/// Bug 1 of issue 15: each of these was programmed. The underlay's /24 replaced the kernel's
/// connected route (and stayed after the lease was deleted), host bits made the route flap
/// about ten times a second, and `0.0.0.0-0` failed every reconcile (healthz 503).
#[test]
fn hostile_peer_leases_are_skipped_and_nothing_else_changes() {
    require_root();
    let lab = EtcdLab::start(2);
    let (mut daemons, a, b, _servers) = two_nodes_talking(&lab);
    let n1 = lab.cluster.node(1).unwrap();
    assert!(route(n1, "192.168.0.0/24").contains("proto kernel"));
    let monitor = n1
        .ns()
        .spawn(Command::new("ip").args(["monitor", "route"]))
        .unwrap();
    let subnets = format!("{PREFIX}/subnets");
    let hostile = [
        ("192.168.0.0-24", value(99)),
        ("10.244.7.7-24", value(98)),
        ("0.0.0.0-0", value(97)),
        ("10.244.9.0-24", "{not json".to_owned()),
        ("banana", value(96)),
    ];
    for (key, v) in &hostile {
        lab.etcd.put(&format!("{subnets}/{key}"), v).unwrap();
    }
    // Four reconcile periods for the damage to show, were there any.
    std::thread::sleep(Duration::from_secs(4));

    let mut problems = Vec::new();
    let under = route(n1, "192.168.0.0/24");
    if !under.contains("proto kernel") || under.contains("proto 83") {
        problems.push(format!(
            "the underlay's connected route was replaced: {under}"
        ));
    }
    let events = monitor.logs();
    let flaps = events.lines().filter(|l| l.contains("10.244.7.")).count();
    if flaps > 0 {
        problems.push(format!("{flaps} route events for the host-bits lease"));
    }
    for node in lab.cluster.nodes() {
        match lab.get(node, "/healthz") {
            Some(r) if r.status == 200 => {}
            other => problems.push(format!("{} /healthz: {other:?}", node.name())),
        }
    }
    if !(talks(&a, &b) && talks(&b, &a)) {
        problems.push("pods no longer talk".into());
    }
    let metrics = lab.get(n1, "/metrics").map(|r| r.body).unwrap_or_default();
    for line in [
        r#"sluice_overlay_skipped_leases{reason="outside-network"} 2"#,
        r#"sluice_overlay_skipped_leases{reason="host-bits"} 1"#,
    ] {
        if !metrics.contains(line) {
            problems.push(format!("/metrics lacks {line}: {metrics}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        daemons[0].log_tail(30)
    );
    let logs = daemons[0].logs();
    assert!(
        logs.contains("skipping lease 192.168.0.0-24: subnet 192.168.0.0/24 is outside the pod network 10.244.0.0/16"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("skipping lease 10.244.7.7-24").count(),
        1,
        "warned once, not every period: {logs}"
    );

    // The underlay lease goes: the kernel's route is still there, the underlay still works.
    lab.delete(&format!("{subnets}/192.168.0.0-24"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(route(n1, "192.168.0.0/24").contains("proto kernel"));
    let ping = n1.ns().exec(["ping", "-c1", "-W2", "192.168.0.12"]);
    assert!(ping.is_ok(), "underlay: {ping:?}");
    for d in &mut daemons {
        assert!(d.try_wait().unwrap().is_none(), "{}", d.log_tail(20));
    }
}

/// Bug 2 of issue 15: a node's own lease overwritten with garbage or deleted was not
/// repaired until the next renewal (here an hour away), and after a restart a garbage own
/// key counted as free, so the node "lost the race" for its previous subnet forever.
#[test]
fn own_lease_is_repaired_while_running_and_garbage_does_not_block_a_restart() {
    require_root();
    let lab = EtcdLab::start(2);
    let (mut daemons, a, b, _servers) = two_nodes_talking(&lab);
    let key = EtcdLab::key(1);
    let ours = || {
        lab.etcd
            .get(&key)
            .ok()
            .flatten()
            .is_some_and(|v| v.contains(r#""PublicIP":"192.168.0.11""#))
    };
    lab.etcd.put(&key, "garbage").unwrap();
    eventually("own lease repaired after garbage", T, ours);
    lab.delete(&key);
    eventually("own lease repaired after deletion", T, ours);

    daemons[0].stop();
    lab.etcd.put(&key, "{\"PublicIP\": 42}").unwrap();
    let n1 = lab.cluster.node(1).unwrap();
    let mut again = lab.daemon(n1, "1h");
    eventually("restarted node takes its subnet back", T, ours);
    assert_eq!(lab.subnet_of(n1), "10.244.1.0/24");
    eventually("pods talk after the restart", T, || {
        talks(&a, &b) && talks(&b, &a)
    });
    let logs = again.logs();
    assert!(!logs.contains("lost the race"), "{logs}");
    assert!(
        again.try_wait().unwrap().is_none(),
        "{}",
        again.log_tail(20)
    );
}

/// Bug 7: an etcd that stops answering (the connection silently dropped) went unnoticed for
/// minutes: no log line while the peer watch hung. HTTP/2 keepalives now notice it.
#[test]
fn an_etcd_that_stops_answering_is_noticed_and_logged() {
    require_root();
    let lab = EtcdLab::start(1);
    let n1 = lab.cluster.node(1).unwrap();
    lab.previous_run(n1);
    let d = lab.daemon(n1, "1h");
    eventually("lease", T, || lab.leases() == 1);
    eventually("reconciling", T, || d.logs().contains("lease acquired"));
    lab.etcd.pause().unwrap();
    let lost = |d: &Process| {
        d.logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("peer watch"))
    };
    let noticed = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        lost(&d)
    });
    lab.etcd.resume().unwrap();
    assert!(noticed, "no warning within 30 s:\n{}", d.log_tail(20));
}

/// Bug 7: `--reconcile-period 0s` panicked after the lease was taken; flags that cannot work
/// are refused before anything is touched.
#[test]
fn impossible_flags_are_refused_before_a_lease_is_taken() {
    require_root();
    let lab = EtcdLab::start(1);
    let n1 = lab.cluster.node(1).unwrap();
    for (flag, value) in [
        ("--reconcile-period", "0s"),
        ("--subnet-lease-ttl", "0s"),
        ("--reconcile-period", "99999999999999h"),
    ] {
        let mut d = lab.daemon_with(n1, "1h", &[flag, value]);
        let status = d.wait_timeout(T).unwrap();
        assert!(!status.success(), "{flag} {value}");
        let logs = d.logs();
        assert!(logs.contains(flag) && !logs.contains("panicked"), "{logs}");
        assert_eq!(lab.leases(), 0, "{flag} {value}: a lease was taken");
        assert!(!lab.subnet_file(n1).exists());
    }
}
