//! `sluice-lab conformance --proxy-mode MODE`: runner 3 of the Service conformance suite.
//! It builds the two-node lab the scenarios are written for, and for every scenario creates
//! its objects through the API server, waits until every node's proxy has synced them, sends
//! each packet for real from where the scenario says (a pod, a node, the external client
//! through a chosen node) and checks who answered, which source they saw and on which port,
//! or that the packet was refused, dropped or left alone. It prints a table and
//! `N passed, M failed`; a packet this lab cannot send (IPv6: the lab's network is IPv4; SCTP
//! when the kernel lacks it) is listed as skipped with the reason, never left out.

mod dns;
mod probe;
mod setup;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Deserialize as _;
use serde_json::Value;
use sluice_conformance::{PacketSpec, Scenario, Source, judge, plan};
use sluice_model::service::Protocol;
use sluice_testbed::{NetNs, http};

use self::probe::Seen;
use crate::daemons::{Binaries, SubnetManager};
use crate::labdir::LabDir;
use crate::up::Lab;

/// How long the first packet of a scenario may take to do what it should (the proxies
/// program the objects meanwhile), and every later one. The first is generous: a proxy whose
/// sync failed retries after 1, 2, 4, 8 s, and under CI's load (three labs at once) one node
/// once left an external IP untouched for the whole of an earlier 10 s (see `diagnose`).
const FIRST_WAIT: Duration = Duration::from_secs(30);
const NEXT_WAIT: Duration = Duration::from_secs(3);

/// Every node proxy's metrics server, on the node's loopback.
const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 10249);

/// One row of the report.
struct Row {
    result: &'static str,
    detail: String,
}

/// Counts of the rows.
#[derive(Default)]
struct Totals {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// What `sluice-lab conformance` was asked for.
pub(crate) struct Options {
    /// `--proxy-mode`.
    pub(crate) mode: String,
    /// Only these scenarios (empty: all).
    pub(crate) only: Vec<String>,
    /// The lab's namespace prefix.
    pub(crate) name: String,
}

pub(crate) fn run(dir: LabDir, bins: Binaries, opts: Options) -> ExitCode {
    match run_inner(dir, bins, opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sluice-lab conformance: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(dir: LabDir, bins: Binaries, opts: Options) -> anyhow::Result<bool> {
    let Options { mode, only, name } = opts;
    let mut scenarios = Scenario::shipped().context("the shipped scenarios")?;
    let dns = only.is_empty() || only.iter().any(|o| o == dns::NAME);
    if !only.is_empty() {
        scenarios.retain(|s| only.contains(&s.name));
        if scenarios.is_empty() && !dns {
            bail!("no scenario named {only:?}");
        }
    }
    // Fewest proxy restarts: the scenarios with the lab's own flags first.
    scenarios.sort_by(|a, b| (!a.proxy.is_empty(), &a.proxy).cmp(&(!b.proxy.is_empty(), &b.proxy)));
    if dir.has_state() {
        crate::down::run(&dir)?;
    }
    let opts = crate::up::Options {
        name,
        nodes: 2,
        pods_per_node: 2,
        proxy_mode: mode.clone(),
        subnet_manager: SubnetManager::Kube,
        image: None,
        manifest: crate::image::manifest::default_path(),
    };
    let mut lab = Lab::begin(dir.clone(), bins, opts)?;
    let result = run_lab(&mut lab, &scenarios, &mode, dns);
    let removed = crate::down::run(&dir);
    lab.reap_children();
    let ok = result?;
    removed?;
    Ok(ok)
}

fn run_lab(lab: &mut Lab, scenarios: &[Scenario], mode: &str, dns: bool) -> anyhow::Result<bool> {
    println!(
        "Sluice conformance, --proxy-mode {mode}: {} scenarios in the lab\n",
        scenarios.len()
    );
    for (what, step) in lab.steps() {
        let start = Instant::now();
        let detail = step(lab).with_context(|| what.to_owned())?;
        println!("{what:<44} {:>6.0} ms  {detail}", ms(start.elapsed()));
    }
    check_plan(lab)?;
    let skipped = setup::prepare(lab, scenarios)?;
    if !skipped.is_empty() {
        println!(
            "sinks not served (ports held by daemons): {}",
            skipped.join(" ")
        );
    }
    println!(
        "\n{:<30} {:<42} {:<44} {:>6}  result",
        "scenario", "packet", "expected", "ms"
    );
    println!("{}", "-".repeat(140));
    let mut totals = Totals::default();
    if dns {
        // With the lab's own proxy flags, before any scenario restarts the proxies.
        dns::run(lab, &mut totals)?;
    }
    let mut flags: Vec<String> = Vec::new();
    for scenario in scenarios {
        if scenario.proxy != flags {
            lab.restart_proxies(&scenario.proxy)?;
            flags = scenario.proxy.clone();
        }
        run_scenario(lab, scenario, mode, &mut totals)?;
    }
    println!("{}", "-".repeat(140));
    println!(
        "{} passed, {} failed, {} skipped (listed above with the reason)",
        totals.passed, totals.failed, totals.skipped
    );
    Ok(totals.failed == 0)
}

/// The lab's pods must be where the plan says, or every scenario's addresses are wrong.
fn check_plan(lab: &Lab) -> anyhow::Result<()> {
    for want in plan::PODS {
        let got = lab
            .state
            .pod(want.name)
            .with_context(|| format!("no pod {}", want.name))?;
        if got.ip != want.ip || got.node != want.node {
            bail!(
                "{} is {} on {}, the plan says {} on {}",
                want.name,
                got.ip,
                got.node,
                want.ip,
                want.node
            );
        }
    }
    Ok(())
}

fn run_scenario(
    lab: &Lab,
    scenario: &Scenario,
    mode: &str,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let created = SystemTime::now();
    let paths = create_objects(lab, scenario)?;
    wait_synced(lab, created)?;
    let mut first = true;
    for spec in &scenario.packets {
        let start = Instant::now();
        let row = match skip_reason(spec) {
            Some(why) => Row {
                result: "skip",
                detail: why,
            },
            None => {
                let wait = if first { FIRST_WAIT } else { NEXT_WAIT };
                first = false;
                check_packet(lab, spec, mode, wait)?
            }
        };
        match row.result {
            "pass" => totals.passed += 1,
            "skip" => totals.skipped += 1,
            _ => totals.failed += 1,
        }
        println!(
            "{:<30} {:<42} {:<44} {:>6.0}  {} {}",
            scenario.name,
            spec.label(),
            spec.expected(mode).to_string(),
            ms(start.elapsed()),
            row.result,
            row.detail
        );
    }
    let deleted = SystemTime::now();
    for path in paths.iter().rev() {
        lab.api()?.delete(path)?;
    }
    wait_synced(lab, deleted)
}

/// Why the lab cannot send this packet, if it cannot.
fn skip_reason(spec: &PacketSpec) -> Option<String> {
    if spec.to.0.is_ipv6() {
        return Some("not sent: the lab's network is IPv4 only (runners 1 and 2 check it)".into());
    }
    if spec.proto == Protocol::Sctp && !sctp_available() {
        return Some(
            "not sent: this kernel has no SCTP (CONFIG_IP_SCTP unset; runners 1 and 2 check it)"
                .into(),
        );
    }
    None
}

fn sctp_available() -> bool {
    let sctp = socket2::Protocol::from(i32::from(Protocol::Sctp.number()));
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(sctp)).is_ok()
}

/// Sends the packet's requests until they do what `mode` should do, or `wait` is over.
fn check_packet(lab: &Lab, spec: &PacketSpec, mode: &str, wait: Duration) -> anyhow::Result<Row> {
    let expect = spec.expected(mode);
    let dst = spec.to.0;
    let (ns, bind) = sender(lab, &spec.from, dst)?;
    let src = bind.unwrap_or_else(|| spec.from.ip(dst.ip()));
    let n = judge::requests(expect);
    let deadline = Instant::now() + wait;
    // ebpf mode: pods and nodes send from their node's cgroup.
    let _cgroup = crate::cgroups::join(ns.name());
    loop {
        let seen: Vec<Seen> =
            ns.run(|| (0..n).map(|_| probe::send(spec.proto, bind, dst)).collect())?;
        match judge::judge(expect, src, &seen) {
            Ok(words) => {
                return Ok(Row {
                    result: "pass",
                    detail: words,
                });
            }
            Err(words) if Instant::now() > deadline => {
                return Ok(Row {
                    result: "FAIL",
                    detail: format!("{words}\n{}", diagnose(lab, mode, dst)),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What a failed packet leaves to go on, since the lab is removed right after: every node's
/// sync metrics, the end of its proxy's log and its rules that name the destination.
fn diagnose(lab: &Lab, mode: &str, dst: SocketAddr) -> String {
    let mut out = String::new();
    for node in lab.node_names() {
        let Ok(ns) = NetNs::open(&lab.state.ns(&node)) else {
            continue;
        };
        let metrics = ns
            .run(|| http::request(METRICS, "GET", "/metrics", None, Duration::from_secs(1)))
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(r?.body))
            .unwrap_or_else(|e| format!("no metrics: {e:#}"));
        let sync_lines = metrics
            .lines()
            .filter(|l| l.starts_with("kubeproxy_sync_proxy_rules_") && !l.contains("_bucket"));
        let log = std::fs::read_to_string(lab.dir.log(&format!("proxy-{node}")));
        let log = log.unwrap_or_else(|e| format!("no log: {e}"));
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        let rules = ns.run(|| node_rules(mode)).unwrap_or_default();
        let ip = dst.ip().to_string();
        out += &format!("  | {node}: sync metrics\n");
        for l in sync_lines {
            out += &format!("  |   {l}\n");
        }
        out += &format!("  | {node}: rules naming {ip}\n");
        for l in rules.lines().filter(|l| l.contains(&ip)) {
            out += &format!("  |   {l}\n");
        }
        out += &format!("  | {node}: proxy log (last {} lines)\n", tail.len());
        for l in tail.iter().rev() {
            out += &format!("  |   {l}\n");
        }
    }
    out
}

/// The node's rules as its mode's tools print them (empty in ebpf mode: its maps are binary).
fn node_rules(mode: &str) -> String {
    let cmd: &[&str] = match mode {
        "iptables" => &["iptables-save"],
        "nftables" => &["nft", "list", "ruleset"],
        _ => return String::new(),
    };
    std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespace a packet is sent from and the address it is bound to (the kernel picks for
/// pods and nodes); the client gets a route to the destination through the packet's node.
fn sender(lab: &Lab, from: &Source, dst: SocketAddr) -> anyhow::Result<(NetNs, Option<IpAddr>)> {
    match from {
        Source::Pod(p) => {
            let pod = lab
                .state
                .pod(p.name)
                .with_context(|| format!("no pod {}", p.name))?;
            Ok((NetNs::open(&pod.netns)?, None))
        }
        Source::Node(n) => Ok((NetNs::open(&lab.state.ns(n.name))?, None)),
        Source::Outside { ip, at } => {
            let client = NetNs::open(&lab.state.ns("client"))?;
            client.ip([
                "route",
                "replace",
                &format!("{}/32", dst.ip()),
                "via",
                &at.ip.to_string(),
            ])?;
            Ok((client, Some(*ip)))
        }
    }
}

/// Creates the scenario's objects; returns their paths (for deleting them).
fn create_objects(lab: &Lab, scenario: &Scenario) -> anyhow::Result<Vec<String>> {
    let api = lab.api()?;
    let mut paths = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&scenario.objects) {
        let obj = Value::deserialize(doc).context("scenario object")?;
        if obj.is_null() {
            continue;
        }
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let collection = match obj["kind"].as_str() {
            Some("Service") => format!("/api/v1/namespaces/{ns}/services"),
            Some("EndpointSlice") => {
                format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")
            }
            other => bail!("{}: cannot create a {other:?}", scenario.name),
        };
        let mut created = api.create(&collection, &obj)?;
        let path = format!("{collection}/{name}");
        if let Some(status) = obj.get("status") {
            // A real API server ignores status on create: set it as a controller would.
            created["status"] = status.clone();
            api.put(&format!("{path}/status"), &created)?;
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Waits until every node's proxy has synced since `since`
/// (`kubeproxy_sync_proxy_rules_last_timestamp_seconds`) with nothing pending.
fn wait_synced(lab: &Lab, since: SystemTime) -> anyhow::Result<()> {
    let since = since.duration_since(UNIX_EPOCH)?.as_secs_f64();
    for node in lab.node_names() {
        let ns = NetNs::open(&lab.state.ns(&node))?;
        crate::up::eventually(&format!("{node}'s proxy synced"), FIRST_WAIT, || {
            let text = ns
                .run(|| http::request(METRICS, "GET", "/metrics", None, Duration::from_secs(1)))??
                .body;
            let value = |name: &str| -> f64 {
                (text.lines())
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                    .unwrap_or(0.0)
            };
            let synced = value("kubeproxy_sync_proxy_rules_last_timestamp_seconds") >= since;
            let pending = value("kubeproxy_sync_proxy_rules_service_changes_pending")
                + value("kubeproxy_sync_proxy_rules_endpoint_changes_pending");
            Ok((synced && pending == 0.0).then_some(()))
        })?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
