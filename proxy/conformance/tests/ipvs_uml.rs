//! The IPVS mode against every scenario in a kernel that has IPVS (a User-Mode Linux guest,
//! `sluice_testbed::uml`): for each scenario and each node a packet starts from, the real
//! backend programs the node's view into a fresh network namespace of the guest — virtual
//! servers over netlink, `kube-ipvs0`, the sets, iptables-legacy — and the IPVS tracer walks
//! what it reads back from the kernel, held against the scenario's expectation for `ipvs`.
//! Every packet is listed; none is skipped. (Real traffic per scenario is the lab's runner 3,
//! which does not run in the guest: see proxy/ipvs/README.md.)

use std::collections::BTreeSet;

use sluice_conformance::Scenario;
use sluice_conformance::plan::NodePlan;
use sluice_conformance::pure::{NodeWorld, Verdict};
use sluice_proxy_core::backend::ProxyMode;
use sluice_testbed::uml::{self, Uml};
use sluice_testbed::{NetNs, require_root};

const NAME: &str = "ipvs_mode_programs_every_scenario_in_a_guest_kernel";

/// The node's addresses on a dummy `eth0` (the guest has dummy links; the plan's loopback
/// addresses are the namespace's own).
fn node_ns(node: &NodePlan) -> NetNs {
    let ns = NetNs::new(&format!("conf-{}", node.name)).unwrap();
    ns.ip(["link", "add", "eth0", "type", "dummy"]).unwrap();
    ns.ip(["link", "set", "eth0", "up"]).unwrap();
    for a in node.addresses().into_iter().filter(|a| !a.is_loopback()) {
        let cidr = match a {
            std::net::IpAddr::V4(_) => format!("{a}/32"),
            std::net::IpAddr::V6(_) => format!("{a}/128"),
        };
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", "eth0"];
        if a.is_ipv6() {
            args.push("nodad");
        }
        ns.ip(args).unwrap();
    }
    ns
}

#[test]
fn ipvs_mode_programs_every_scenario_in_a_guest_kernel() {
    if !uml::in_guest() {
        require_root();
        let out = Uml::find()
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .run_test(NAME)
            .unwrap();
        println!("{}", out.output);
        println!("guest run took {:?}", out.elapsed);
        out.assert_success();
        return;
    }
    let (mut passed, mut failed) = (0, Vec::new());
    println!("{:<34} {:<46} result", "scenario", "packet");
    for scenario in Scenario::shipped().unwrap() {
        let nodes: BTreeSet<&'static str> = scenario
            .packets
            .iter()
            .map(|p| p.from.node().name)
            .collect();
        for name in nodes {
            let node = sluice_conformance::plan::node(name).unwrap();
            let world = NodeWorld::new(&scenario, node, ProxyMode::Ipvs).unwrap();
            let specs: Vec<_> = (scenario.packets.iter())
                .filter(|p| p.from.node().name == name)
                .collect();
            let ns = node_ns(node);
            let verdicts = ns
                .run(|| {
                    // Cleaned up with the namespace (IPVS, sets and rules are per namespace;
                    // the backend's own --cleanup is tested in proxy/tests/ipvs_kernel.rs).
                    let _backend = world.program(Some("legacy"))?;
                    let v: Vec<Verdict> = specs.iter().map(|s| world.programmed(s)).collect();
                    Ok::<_, String>(v)
                })
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: programming failed: {e}", scenario.name));
            for (spec, verdict) in specs.iter().zip(verdicts) {
                let (word, detail) = match &verdict {
                    Verdict::Pass(got) => ("pass", got.clone()),
                    Verdict::Fail(got) => {
                        ("FAIL", format!("want {}, got {got}", spec.expected("ipvs")))
                    }
                    Verdict::NotApplicable(why) => ("FAIL", format!("not checked: {why}")),
                };
                println!("{:<34} {:<46} {word} {detail}", scenario.name, spec.label());
                match verdict {
                    Verdict::Pass(_) => passed += 1,
                    _ => failed.push(format!("{} {}", scenario.name, spec.label())),
                }
            }
        }
    }
    println!("{passed} passed, {} failed", failed.len());
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    assert!(passed >= 80, "{passed}");
}
