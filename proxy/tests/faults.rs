//! Faults of the components around the real `sluice-proxy` binary (issue 15), each in a
//! fresh two-node test bed with the test API server on the underlay and real traffic from a
//! pod to a ClusterIP whose endpoint is on the other node.
//!
//! API server faults (watches dropped, 410 Gone on watches and versioned lists, 500 on every
//! request, a server that hangs): the programmed rules stay and traffic keeps flowing during
//! the fault; `/healthz` stays 200 as kube-proxy's does — its health says whether a *queued*
//! update was applied within 2 × `--sync-period`, and a proxy that hears nothing from the API
//! has nothing queued; a Service created during the fault is programmed after it; no
//! connection or descriptor is left over. The kernel refusing every transaction (another
//! process owns the table): `/healthz` stays 200 while nothing is queued, turns 503 once a
//! change has waited 2 × `--sync-period`, and everything is programmed and 200 again once the
//! kernel accepts.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, vip};
use serde_json::json;
use sluice_testbed::apiserver::Fault;
use sluice_testbed::cluster::{Cluster, Pod, UnderlayApi};
use sluice_testbed::traffic::{EchoServer, tcp_request};
use sluice_testbed::{NetNs, Process};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");
const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// `--sync-period`; the health timeout is twice this.
const SYNC_PERIOD: Duration = Duration::from_secs(1);
/// How long each fault lasts: well past the health timeout.
const FAULT: Duration = Duration::from_secs(5);
/// Bound for convergence after a fault (kube's watcher backoff reaches a few seconds).
const CONVERGE: Duration = Duration::from_secs(40);
/// The kinds the proxy watches (Services, EndpointSlices, its Node): one re-list each.
const WATCHED_KINDS: usize = 3;

/// Two nodes, a client pod on node 1, a backend on node 2, the API server on the underlay and
/// the proxy on node 1 watching it.
struct Bed {
    proxy: Process,
    api: UnderlayApi,
    client: Pod,
    _backend: Pod,
    _echo: EchoServer,
    cluster: Cluster,
}

impl Bed {
    fn start() -> Self {
        let cluster = Cluster::with_pod_routes(2).unwrap();
        let api = cluster.underlay().api_server(API_IP).unwrap();
        let kubeconfig = api.kubeconfig();
        for node in cluster.nodes() {
            (api.server)
                .create(json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node.name()},
                    "status": {"addresses": [{"type": "InternalIP", "address": node.addr().to_string()}]}}))
                .unwrap();
        }
        let (n1, n2) = (&cluster.nodes()[0], &cluster.nodes()[1]);
        let client = n1.add_pod("client").unwrap();
        let backend = n2.add_pod("b1").unwrap();
        let echo = EchoServer::tcp(backend.ns(), "b1", "0.0.0.0:8080".parse().unwrap()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--proxy-mode", "nftables", "--hostname-override", n1.name()])
            .args(["--cluster-cidr", "10.244.0.0/16"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .args(["--metrics-bind-address", "127.0.0.1:10249"])
            .args(["--min-sync-period", "100ms", "--sync-period"])
            .arg(format!("{}s", SYNC_PERIOD.as_secs()))
            .env("RUST_LOG", "info");
        let proxy = n1.ns().spawn(&cmd).unwrap();
        Self {
            proxy,
            api,
            client,
            _backend: backend,
            _echo: echo,
            cluster,
        }
    }

    fn node1(&self) -> &NetNs {
        self.cluster.nodes()[0].ns()
    }

    /// Creates Service `name` (port 80) with its slice pointing at the backend; its ClusterIP.
    fn service(&self, name: &str) -> String {
        let svc = (self.api.server)
            .create(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "p", "port": 80, "targetPort": 8080}]}}))
            .unwrap();
        let backend = &self.cluster.nodes()[1];
        (self.api.server)
            .create(
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-1"), "namespace": "default",
                    "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [self._backend.ip().to_string()],
                    "conditions": {"ready": true}, "nodeName": backend.name()}]}),
            )
            .unwrap();
        svc["spec"]["clusterIP"].as_str().unwrap().to_owned()
    }

    /// One request from the client pod to `ip:80`, answered by the backend.
    fn answers(&self, ip: &str) -> bool {
        tcp_request(self.client.ns(), vip(ip, 80), Duration::from_secs(2))
            .is_ok_and(|r| r.backend == "b1")
    }

    /// `/healthz` status code (0 when nothing answered).
    fn healthz(&self) -> u16 {
        let out = (self.node1())
            .exec([
                "curl",
                "-s",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:10256/healthz",
            ])
            .unwrap_or_default();
        out.trim().parse().unwrap_or(0)
    }

    /// The proxy's open descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proxy.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// Its TCP connections to the API server, from the node's socket table.
    fn api_connections(&self) -> usize {
        let out = (self.node1())
            .exec(["ss", "-Htn", "state", "established", "dst", "192.168.0.1"])
            .unwrap_or_default();
        out.lines().count()
    }

    fn chains(&self) -> usize {
        let out = (self.node1())
            .exec(["nft", "list", "table", "ip", "sluice"])
            .unwrap_or_default();
        out.lines()
            .filter(|l| l.trim_start().starts_with("chain ") && l.contains("default/"))
            .count()
    }

    fn alive(&mut self) {
        assert!(
            self.proxy.try_wait().unwrap().is_none(),
            "the proxy exited:\n{}",
            self.proxy.log_tail(30)
        );
    }
}

/// What one API fault must leave intact, and what must follow it, twice over: the second
/// round shows whether anything grows with each fault.
fn survives(fault: Fault) {
    sluice_testbed::require_root();
    let mut bed = Bed::start();
    let web = bed.service("web");
    eventually(Duration::from_secs(20), || bed.answers(&web).then_some(()));
    eventually(Duration::from_secs(10), || {
        (bed.healthz() == 200).then_some(())
    });
    // Settled: the watches are open, the pool holds what it keeps.
    std::thread::sleep(2 * SYNC_PERIOD);
    let before = (bed.api_connections(), bed.fds());
    let late = ["late", "later"];
    for name in late {
        round(&mut bed, fault, &web, name);
        // Nothing leaked: the connections the fault broke are gone and no descriptor piles
        // up. kube's client (kube-client 5.0) builds its hyper pool without a timer, so an
        // idle connection is never reaped: it stays pooled until a request reuses it. The
        // re-lists after a fault can leave one per watched kind that listed at the same
        // moment (Services, EndpointSlices, the Node): up to three more connections than
        // before are the pool (CI saw two, which the earlier bound of one took for a leak).
        // Two connections leaked per fault would exceed that bound by the second round (a single
        // one per fault would not show).
        let settled = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            bed.api_connections() <= before.0 + WATCHED_KINDS
                && bed.fds() <= before.1 + WATCHED_KINDS + 1
        });
        assert!(
            settled,
            "{fault}, {name}: API connections {} (before the first fault {}), descriptors {} (before {})",
            bed.api_connections(),
            before.0,
            bed.fds(),
            before.1
        );
    }
    // Deleting every Service removes every chain.
    for name in ["web"].into_iter().chain(late) {
        bed.api.server.delete("services", "default", name).unwrap();
        (bed.api.server)
            .delete("endpointslices", "default", &format!("{name}-1"))
            .unwrap();
    }
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        bed.chains() == 0
    });
    let table = bed.node1().exec(["nft", "list", "table", "ip", "sluice"]);
    assert!(
        gone,
        "{fault}: Service chains left: {table:?}\n{}",
        bed.proxy.log_tail(30)
    );
    bed.alive();
}

/// One fault of [`FAULT`]: the programmed Service `web` keeps answering and `/healthz` stays
/// 200 throughout; `late`, created during the fault, is programmed once it ends.
fn round(bed: &mut Bed, fault: Fault, web: &str, late: &str) {
    bed.api.server.set_fault(fault);
    let late = bed.service(late);
    let start = Instant::now();
    let (mut requests, mut failed, mut unhealthy) = (0, 0, Vec::new());
    while start.elapsed() < FAULT {
        requests += 1;
        failed += usize::from(!bed.answers(web));
        let code = bed.healthz();
        if code != 200 {
            unhealthy.push(format!("{code} after {:?}", start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bed.alive();
    if matches!(fault, Fault::ServerError | Fault::Hang) {
        // The fault is real: nothing created meanwhile reached the proxy.
        assert!(
            !bed.answers(&late),
            "{fault}: {late} programmed during the fault"
        );
    }
    assert_eq!(
        failed,
        0,
        "{fault}: {failed} of {requests} requests to a programmed Service failed during the fault\n{}",
        bed.proxy.log_tail(20)
    );
    assert!(
        unhealthy.is_empty(),
        "{fault}: /healthz must stay 200 (nothing queued and not applied, as in kube-proxy): {unhealthy:?}"
    );
    assert_eq!(bed.api.server.fault(), Some(fault));
    bed.api.server.clear_fault();

    eventually(CONVERGE, || bed.answers(&late).then_some(()));
    assert!(bed.answers(web), "{fault}: web after the fault");
    assert_eq!(bed.healthz(), 200, "{fault}: /healthz after the fault");
}

#[test]
fn dropped_watches_keep_the_dataplane_and_converge() {
    survives(Fault::DropWatches);
}

#[test]
fn gone_keeps_the_dataplane_and_converges_by_relisting() {
    survives(Fault::Gone);
}

#[test]
fn server_errors_keep_the_dataplane_and_converge() {
    survives(Fault::ServerError);
}

#[test]
fn a_hanging_api_server_keeps_the_dataplane_and_converges() {
    survives(Fault::Hang);
}

/// The kernel refuses every transaction: another process owns `ip sluice` (an nftables table
/// with `flags owner` accepts changes only from its owner's socket). kube-proxy's rule: the
/// failing periodic sync alone leaves `/healthz` 200; a Service change queued and not applied
/// for 2 × `--sync-period` turns it 503; once the owner is gone the proxy rebuilds the table
/// with the change in it and is healthy again.
#[test]
fn a_kernel_that_refuses_turns_health_503_only_for_a_queued_change_and_then_recovers() {
    sluice_testbed::require_root();
    let mut bed = Bed::start();
    let web = bed.service("web");
    eventually(Duration::from_secs(20), || bed.answers(&web).then_some(()));
    eventually(Duration::from_secs(10), || {
        (bed.healthz() == 200).then_some(())
    });
    // Settled: every change queued so far (the Services, the Node's labels) is applied.
    std::thread::sleep(2 * SYNC_PERIOD);

    let mut owner = Command::new("ip")
        .args(["netns", "exec", bed.node1().name(), "nft", "-i"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut owner);
    {
        use std::io::Write as _;
        let mut stdin = guard.0.stdin.as_ref().unwrap();
        writeln!(
            stdin,
            "delete table ip sluice; add table ip sluice {{ flags owner; }}"
        )
        .unwrap();
    }
    eventually(Duration::from_secs(5), || {
        let t = (bed.node1())
            .exec(["nft", "list", "table", "ip", "sluice"])
            .unwrap_or_default();
        t.contains("flags owner").then_some(())
    });
    // Periodic syncs fail (the repair is refused) but nothing is queued: 200, as kube-proxy.
    std::thread::sleep(3 * SYNC_PERIOD);
    let body = bed
        .node1()
        .exec(["curl", "-s", "http://127.0.0.1:10256/healthz"]);
    assert_eq!(
        bed.healthz(),
        200,
        "no queued change: healthy {body:?}\n{}",
        bed.proxy.log_tail(20)
    );
    let late = bed.service("late");
    let queued = Instant::now();
    let code = eventually(Duration::from_secs(15), || {
        let c = bed.healthz();
        (c == 503).then_some(c)
    });
    assert!(
        queued.elapsed() >= 2 * SYNC_PERIOD,
        "503 only after 2 x sync-period, was {:?}",
        queued.elapsed()
    );
    assert_eq!(code, 503);
    bed.alive();

    drop(guard);
    eventually(CONVERGE, || bed.answers(&late).then_some(()));
    assert!(bed.answers(&web), "web rebuilt");
    eventually(Duration::from_secs(10), || {
        (bed.healthz() == 200).then_some(())
    });
    let logs = bed.proxy.logs();
    assert!(
        logs.contains("Operation not permitted") || logs.contains("EPERM"),
        "the refusal is logged:\n{}",
        bed.proxy.log_tail(30)
    );
}

/// Kills (by its own PID) and reaps the table's owner, releasing the table.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
