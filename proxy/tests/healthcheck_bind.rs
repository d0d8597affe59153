//! The daemon's health-check node ports listen only on the `--nodeport-addresses` IPs, as
//! kube-proxy's do: the real binary (fake dataplane, manifests source) on loopback, asked for
//! 127.0.0.1 only, answers there and refuses 127.0.0.2.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The status line of `GET /` at `addr`, or `None` while nothing answers.
fn status(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().next().map(str::to_owned)
}

#[test]
fn health_check_node_ports_listen_only_on_the_node_port_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let hc_port = free_port();
    std::fs::write(dir.path().join("web.yaml"), manifest(hc_port)).unwrap();
    let _daemon = Daemon(
        Command::new(BIN)
            .arg("--manifests-dir")
            .arg(dir.path())
            .args(["--proxy-mode", "fake", "--hostname-override", "node-1"])
            .args(["--nodeport-addresses", "127.0.0.1/32"])
            .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let served = SocketAddr::from(([127, 0, 0, 1], hc_port));
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        if let Some(line) = status(served) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no health check server on {served}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // No local endpoints for this node: kube-proxy answers 503.
    assert!(answer.contains("503"), "{answer}");
    let other = SocketAddr::from(([127, 0, 0, 2], hc_port));
    assert_eq!(status(other), None, "{other} must not be served");
}
