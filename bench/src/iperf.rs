//! One iperf3 TCP measurement between two namespaces: server in one (one-shot), client in
//! the other, throughput read from the client's JSON report.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_testbed::NetNs;

/// Receiver-side throughput in Gbit/s of a `seconds`-long TCP run from `client` to `server`.
pub(crate) fn gbits(
    server: &NetNs,
    server_ip: Ipv4Addr,
    client: &NetNs,
    seconds: u32,
) -> anyhow::Result<f64> {
    gbits_to(server, 5201, client, (server_ip, 5201).into(), seconds)
}

/// The same with the server listening on `port` and the client connecting to `target` (a
/// Service address that leads to it).
pub(crate) fn gbits_to(
    server: &NetNs,
    port: u16,
    client: &NetNs,
    target: SocketAddr,
    seconds: u32,
) -> anyhow::Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-1", "-p", &port.to_string()]);
    let mut srv = server.spawn(&cmd)?;
    let ip = target.ip().to_string();
    let tport = target.port().to_string();
    let secs = seconds.to_string();
    let start = Instant::now();
    let report = loop {
        let out = client.exec([
            "iperf3", "-c", &ip, "-p", &tport, "-t", &secs, "-O", "1", "-J",
        ]);
        let json: Option<serde_json::Value> =
            out.as_ref().ok().and_then(|o| serde_json::from_str(o).ok());
        let refused = json
            .as_ref()
            .and_then(|j| j["error"].as_str())
            .is_some_and(|e| e.contains("refused"));
        match json {
            // The one-shot server may not be listening yet.
            _ if refused && start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(json) => break json,
            None => {
                let log = srv.log_tail(5);
                return Err(anyhow::anyhow!("{out:?}"))
                    .context(format!("iperf3 -c {ip}: server log: {log}"));
            }
        }
    };
    srv.stop();
    let bps = report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64);
    match bps {
        Some(b) => Ok(b / 1e9),
        None => bail!("iperf3 gave no throughput: {report}"),
    }
}
