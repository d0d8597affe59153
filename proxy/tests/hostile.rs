//! Hostile and careless input against the real `sluice-proxy` binary in nftables mode, each in
//! a fresh network namespace (issue 15): a Service the kernel cannot program (a name that
//! pushes a chain name past 255 bytes) or must never see (`clusterIP: 127.0.0.1`) is rejected
//! alone, the others keep programming and `/healthz` stays reachable and 200; manifest files
//! that are FIFOs, directories, symlink loops or huge are skipped with a log line and never
//! read whole; a second proxy in the same namespace is refused instead of fighting the first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_testbed::{NetNs, Process};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-proxy");

fn service(name: &str, cip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: web}}\n\
         spec: {{clusterIP: {cip}, ports: [{{name: p, port: 80, protocol: TCP}}]}}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn proxy_cmd(dir: &Path, health: &str, metrics: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--proxy-mode", "nftables", "--hostname-override", "node-1"])
        .args(["--healthz-bind-address", health])
        .args(["--metrics-bind-address", metrics])
        .args(["--min-sync-period", "100ms", "--sync-period", "2s"])
        .arg("--manifests-dir")
        .arg(dir)
        .env("RUST_LOG", "info");
    cmd
}

fn start_proxy(ns: &NetNs, dir: &Path) -> Process {
    ns.spawn(&proxy_cmd(dir, "127.0.0.1:10256", "127.0.0.1:10249"))
        .unwrap()
}

/// Retries `f` until it returns `Some` or `limit` passes.
fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn table(ns: &NetNs) -> String {
    ns.exec(["nft", "list", "table", "ip", "sluice"])
        .unwrap_or_default()
}

/// `GET url` from inside `ns`: `(status, body)`; status 0 when nothing answered.
fn get(ns: &NetNs, url: &str) -> (u16, String) {
    let out = ns
        .exec(["curl", "-s", "-m", "2", "-w", "\n%{http_code}", url])
        .unwrap_or_default();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn metric(ns: &NetNs, line_start: &str) -> Option<f64> {
    let (_, body) = get(ns, "http://127.0.0.1:10249/metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Issue 15 bug 3: a Service name that makes an nftables chain name longer than 255 bytes
/// made every transaction fail, so no Service was programmed any more and `/healthz` went
/// 503. It is now rejected like the API server rejects it (a name is a DNS-1035 label of at
/// most 63 characters), alone, with a log line and a metric; the other Services program.
#[test]
fn an_unprogrammable_service_is_rejected_alone() {
    sluice_testbed::require_root();
    let ns = NetNs::new("px-long").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.yaml", &service("first", "10.96.0.10"));
    let long = "x".repeat(250);
    write(d, "long.yaml", &service(&long, "10.96.0.11"));
    let proxy = start_proxy(&ns, d);
    eventually(Duration::from_secs(10), "first programmed", || {
        table(&ns).contains("10.96.0.10").then_some(())
    });
    // A Service added afterwards is programmed too: the bad one does not block the syncs.
    write(d, "b.yaml", &service("second", "10.96.0.12"));
    eventually(Duration::from_secs(10), "second programmed", || {
        table(&ns).contains("10.96.0.12").then_some(())
    });
    assert!(!table(&ns).contains("10.96.0.11"), "{}", table(&ns));
    let (code, body) = get(&ns, "http://127.0.0.1:10256/healthz");
    assert_eq!(code, 200, "{body}");
    let rejected = eventually(Duration::from_secs(5), "metric", || {
        metric(
            &ns,
            "kubeproxy_sluice_objects_rejected_total{kind=\"service\"}",
        )
    });
    assert!(rejected >= 1.0, "{rejected}");
    let logs = proxy.logs();
    assert!(
        logs.contains("must be no more than 63 characters"),
        "{}",
        proxy.log_tail(30)
    );
}

/// Issue 15 bug 4: `clusterIP: 127.0.0.1` (or `0.0.0.0`, `255.255.255.255`) was accepted; a
/// Service without endpoints on it made the REJECT chain refuse every loopback TCP connection
/// in the node, the proxy's own `/healthz` and `/metrics` included. Such addresses are
/// rejected as the API server rejects them.
#[test]
fn special_cluster_ips_are_rejected() {
    sluice_testbed::require_root();
    let ns = NetNs::new("px-lo").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "ok.yaml", &service("ok", "10.96.0.10"));
    write(d, "lo.yaml", &service("lo", "127.0.0.1"));
    write(d, "any.yaml", &service("any", "0.0.0.0"));
    write(d, "bcast.yaml", &service("bcast", "255.255.255.255"));
    let proxy = start_proxy(&ns, d);
    eventually(Duration::from_secs(10), "ok programmed", || {
        table(&ns).contains("10.96.0.10").then_some(())
    });
    // One more sync after the first, so nothing is still on its way.
    write(d, "ok2.yaml", &service("ok2", "10.96.0.13"));
    eventually(Duration::from_secs(10), "ok2 programmed", || {
        table(&ns).contains("10.96.0.13").then_some(())
    });
    let t = table(&ns);
    for ip in ["127.0.0.1", "0.0.0.0", "255.255.255.255"] {
        assert!(!t.contains(&format!("{ip} ")), "{ip} programmed:\n{t}");
    }
    let (code, body) = get(&ns, "http://127.0.0.1:10256/healthz");
    assert_eq!(
        code,
        200,
        "healthz over loopback: {body}\n{}",
        proxy.log_tail(30)
    );
    assert!(
        metric(&ns, "kubeproxy_sync_proxy_rules_last_timestamp_seconds").is_some(),
        "metrics over loopback"
    );
    let logs = proxy.logs();
    assert!(logs.contains("loopback"), "{}", proxy.log_tail(30));
}

/// Issue 15 bug 7: two proxies in one network namespace rewrote each other's nftables tables
/// on every sync without a word. The second now refuses to start, naming the first, and the
/// first keeps programming.
#[test]
fn a_second_proxy_in_the_same_namespace_is_refused() {
    sluice_testbed::require_root();
    let ns = NetNs::new("px-two").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.yaml", &service("first", "10.96.0.10"));
    let first = start_proxy(&ns, d);
    eventually(Duration::from_secs(10), "first programmed", || {
        table(&ns).contains("10.96.0.10").then_some(())
    });
    let mut second = ns
        .spawn(&proxy_cmd(d, "127.0.0.1:10266", "127.0.0.1:10259"))
        .unwrap();
    let status = second.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(!status.success(), "{}", second.log_tail(20));
    let logs = second.logs();
    let expected = format!("another sluice-proxy (pid {})", first.pid());
    assert!(logs.contains(&expected), "{}", second.log_tail(20));
    // The first one still owns and programs the namespace.
    write(d, "b.yaml", &service("second", "10.96.0.12"));
    eventually(Duration::from_secs(10), "second programmed", || {
        table(&ns).contains("10.96.0.12").then_some(())
    });
}
