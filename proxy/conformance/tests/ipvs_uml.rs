//! The IPVS mode against every scenario in a kernel that has IPVS (a User-Mode Linux guest,
//! `sluice_testbed::uml`), in one boot, two ways per packet:
//! - runner 2 over programmed state: the real backend programs the view of the node the packet
//!   starts at into that node's namespace — virtual servers over netlink, `kube-ipvs0`, the
//!   sets, iptables-legacy — and the IPVS tracer walks what it reads back from the kernel;
//! - real traffic (a single-node run of runner 3): the packet is sent from where it says — a
//!   pod on the node, the node itself, or the external client through the node — in the plan's
//!   cluster built from namespaces of the guest (`guest/mod.rs`: pods answering with their
//!   name, port and the source they saw; the other node a plain router to its pods, so their
//!   endpoints are remote ones behind a route), and what answered is judged by the lab's
//!   judge (`sluice_conformance::judge`).
//!
//! Both are held against the scenario's expectation for `ipvs`. Every packet is listed with
//! its result or, for real traffic, the reason it is not sent (IPv6 and SCTP); none is left out.

mod guest;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_conformance::plan::NodePlan;
use sluice_conformance::pure::{NodeWorld, Verdict};
use sluice_conformance::{PacketSpec, Scenario, judge};
use sluice_model::service::Protocol;
use sluice_proxy_core::backend::{Backend as _, ProxyMode};
use sluice_testbed::require_root;
use sluice_testbed::uml::{self, Uml};

use guest::Topology;

const NAME: &str = "ipvs_mode_passes_every_scenario_in_a_guest_kernel";

/// How long a packet may keep doing something else before it fails (the state is programmed
/// before the first request; this absorbs neighbour resolution).
const WAIT: Duration = Duration::from_secs(2);

/// What real traffic made of one packet.
enum Traffic {
    Pass(String),
    Fail(String),
    NotSent(String),
}

/// Why a packet is not sent with real traffic in the guest, if it is not.
fn not_sent(spec: &PacketSpec) -> Option<String> {
    if spec.to.0.is_ipv6() {
        return Some(
            "not sent: the guest's cluster is IPv4 only (runner 2 above checks the programmed IPv6 state)"
                .into(),
        );
    }
    if spec.proto == Protocol::Sctp {
        return Some(
            "not sent: the guest's echo servers and client speak TCP and UDP only (runner 2 above checks the programmed SCTP state)"
                .into(),
        );
    }
    None
}

/// Sends the packet's requests until they do what ipvs mode should do, or [`WAIT`] is over.
fn traffic(topo: &Topology, spec: &PacketSpec) -> Traffic {
    if let Some(why) = not_sent(spec) {
        return Traffic::NotSent(why);
    }
    let dst = spec.to.0;
    let (ns, bind) = topo.sender(&spec.from, dst);
    // The source the kernel really gives the packet: what "kept" and "masqueraded" are
    // judged against.
    let src = bind.unwrap_or_else(|| ns.run(|| guest::source_for(dst)).unwrap());
    let expect = &judge::observable(spec.expected("ipvs"), src, spec.from.node());
    let note = match expect == spec.expected("ipvs") {
        true => "",
        false => {
            "no answer expected: the endpoint's reply to a kept source cannot come back through this node; "
        }
    };
    let n = judge::requests(expect);
    let deadline = Instant::now() + WAIT;
    loop {
        let seen: Vec<judge::Seen> = ns
            .run(|| (0..n).map(|_| guest::send(spec.proto, bind, dst)).collect())
            .unwrap();
        match judge::judge(expect, src, &seen) {
            Ok(words) => return Traffic::Pass(format!("{note}{words}")),
            Err(words) if Instant::now() > deadline => return Traffic::Fail(words),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The nodes `scenario`'s packets start at.
fn nodes(scenario: &Scenario) -> BTreeSet<&'static str> {
    (scenario.packets.iter())
        .map(|p| p.from.node().name)
        .collect()
}

#[derive(Default)]
struct Totals {
    passed: usize,
    failed: Vec<String>,
    not_sent: usize,
    traced: usize,
}

/// Programs `node`'s view of `scenario` into the node's namespace, checks each of its packets
/// both ways, prints a row each, and removes what it programmed.
fn run_node(topo: &Topology, scenario: &Scenario, node: &'static NodePlan, t: &mut Totals) {
    let world = NodeWorld::new(scenario, node, ProxyMode::Ipvs).unwrap();
    let ns = topo.node(node.name);
    let mut backend = ns
        .run(|| world.program(Some("legacy")))
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: programming failed: {e}", scenario.name));
    for spec in scenario
        .packets
        .iter()
        .filter(|p| p.from.node().name == node.name)
    {
        let start = Instant::now();
        let traced = ns.run(|| world.programmed(spec)).unwrap();
        let traced_ok = matches!(traced, Verdict::Pass(_));
        let result = traffic(topo, spec);
        let (word, detail) = match &result {
            Traffic::Pass(w) => ("pass", w.clone()),
            Traffic::Fail(w) => ("FAIL", w.clone()),
            Traffic::NotSent(why) => ("not sent", why.clone()),
        };
        let traced_word = match &traced {
            Verdict::Pass(_) => "pass".to_owned(),
            Verdict::Fail(got) => format!("FAIL ({got})"),
            Verdict::NotApplicable(why) => format!("FAIL (not checked: {why})"),
        };
        println!(
            "{:<30} {:<42} {:<44} {:>6.0}  {word} {detail}; traced: {traced_word}",
            scenario.name,
            spec.label(),
            spec.expected("ipvs").to_string(),
            start.elapsed().as_secs_f64() * 1e3,
        );
        let label = format!("{} {}", scenario.name, spec.label());
        match (&result, traced_ok) {
            (Traffic::Fail(_), _) | (_, false) => t.failed.push(label),
            (Traffic::Pass(_), true) => t.passed += 1,
            (Traffic::NotSent(_), true) => t.not_sent += 1,
        }
        t.traced += usize::from(traced_ok);
    }
    ns.run(|| backend.cleanup())
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: cleanup failed: {e}", scenario.name));
}

#[test]
fn ipvs_mode_passes_every_scenario_in_a_guest_kernel() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .timeout(Duration::from_secs(420))
            .mem("768M")
            .run_test(NAME)
            .unwrap();
        println!("{}", out.output);
        println!("guest run took {:?}", out.elapsed);
        out.assert_success();
        return;
    }
    let start = Instant::now();
    let scenarios = Scenario::shipped().unwrap();
    let topo = Topology::build(&scenarios);
    println!(
        "the plan's cluster in the guest: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "{:<30} {:<42} {:<44} {:>6}  real traffic; runner 2 over programmed state",
        "scenario", "packet", "expected (ipvs)", "ms"
    );
    let mut t = Totals::default();
    for scenario in &scenarios {
        for name in nodes(scenario) {
            let node = sluice_conformance::plan::node(name).unwrap();
            run_node(&topo, scenario, node, &mut t);
        }
    }
    println!(
        "{} passed, {} failed, {} not sent with real traffic (listed above with the reason; all \
         of them pass runner 2); runner 2 over programmed state: {} passed",
        t.passed,
        t.failed.len(),
        t.not_sent,
        t.traced
    );
    println!("total {:.1} s", start.elapsed().as_secs_f64());
    assert!(t.failed.is_empty(), "failed:\n{}", t.failed.join("\n"));
    // Every traced packet is sent with real traffic or not sent for a listed reason (IPv6,
    // SCTP), and none of today's 80 sendable / 83 traced goes missing unnoticed.
    assert!(
        t.passed + t.not_sent == t.traced && t.passed >= 80 && t.traced >= 83,
        "passed {}, not sent {}, traced {}",
        t.passed,
        t.not_sent,
        t.traced
    );
}
