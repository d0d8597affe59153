//! Where and how the real daemon (fake dataplane, manifests source, loopback only) listens:
//! health-check node ports only on the `--nodeport-addresses` IPs, as kube-proxy's do; a
//! `/healthz` port already taken is fatal only with `--bind-address-hard-fail`, otherwise the
//! daemon keeps running and binds once the port is free.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testbed::http;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");

/// Kills the daemon even when an assertion fails.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn manifest(hc_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: demo}}
spec:
  clusterIP: 10.96.0.10
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: {hc_port}
  ports: [{{name: http, port: 80, nodePort: 30080}}]
"
    )
}

/// The status code of `GET path` at `addr`, or `None` while nothing answers.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let reply = http::request(addr, "GET", path, None, Duration::from_secs(1));
    reply.ok().map(|r| r.status)
}

/// The daemon on `dir` with `flags`, its output discarded.
fn daemon(dir: &std::path::Path, flags: &[&str]) -> Daemon {
    Daemon(
        Command::new(BIN)
            .arg("--manifests-dir")
            .arg(dir)
            .args(["--proxy-mode", "fake", "--hostname-override", "node-1"])
            .args(["--metrics-bind-address", ""])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The first status code `addr` answers within 30 s.
fn wait_for_status(addr: SocketAddr, path: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(code) = status(addr, path) {
            return code;
        }
        assert!(Instant::now() < deadline, "nothing answers on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_check_node_ports_listen_only_on_the_node_port_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let hc_port = free_port();
    std::fs::write(dir.path().join("web.yaml"), manifest(hc_port)).unwrap();
    let _daemon = daemon(
        dir.path(),
        &[
            "--nodeport-addresses",
            "127.0.0.1/32",
            "--healthz-bind-address",
            "",
        ],
    );
    let answer = wait_for_status(SocketAddr::from(([127, 0, 0, 1], hc_port)), "/");
    // No local endpoints for this node: kube-proxy answers 503.
    assert_eq!(answer, 503);
    let other = SocketAddr::from(([127, 0, 0, 2], hc_port));
    assert_eq!(status(other, "/"), None, "{other} must not be served");
}

#[test]
fn a_taken_healthz_port_is_fatal_only_with_bind_address_hard_fail() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let healthz = addr.to_string();
    let mut hard = daemon(
        dir.path(),
        &[
            "--healthz-bind-address",
            &healthz,
            "--bind-address-hard-fail",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = hard.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "hard fail must exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "hard fail must fail: {exit}");

    let mut soft = daemon(dir.path(), &["--healthz-bind-address", &healthz]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(soft.0.try_wait().unwrap().is_none(), "must keep running");
    drop(taken);
    // Bound on a retry once the port is free (kube-proxy retries every 5 s too).
    let answer = wait_for_status(addr, "/healthz");
    assert!([200, 503].contains(&answer), "{answer}");
}
