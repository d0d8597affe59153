//! Runners 1 (the model) and 2 (each mode's tracer over the rules or maps it renders) over
//! every shipped scenario, for every mode this version builds. Prints the table and fails on any
//! packet that does not do what its scenario expects of the mode.

use sluice_conformance::plan;
use sluice_conformance::pure::{NodeWorld, Verdict};
use sluice_conformance::{Expect, Scenario};
use sluice_proxy::dataplane::BUILT;
use sluice_proxy_core::backend::ProxyMode;

#[test]
fn every_mode_passes_every_scenario_in_the_model_and_its_tracer() {
    let scenarios = Scenario::shipped().unwrap();
    assert!(scenarios.len() >= 15, "{} scenarios", scenarios.len());
    let (mut passed, mut failed, mut not_applicable) = (0, Vec::new(), 0);
    println!(
        "{:<34} {:<9} {:<46} {:<8} result",
        "scenario", "mode", "packet", "runner"
    );
    for scenario in &scenarios {
        for mode in BUILT {
            for spec in &scenario.packets {
                let world = NodeWorld::new(scenario, spec.from.node(), mode).unwrap();
                for (runner, verdict) in
                    [("model", world.model(spec)), ("tracer", world.tracer(spec))]
                {
                    let (word, detail) = match &verdict {
                        Verdict::Pass(got) => ("pass", got.clone()),
                        Verdict::Fail(got) => (
                            "FAIL",
                            format!("want {}, got {got}", spec.expected(mode.as_str())),
                        ),
                        Verdict::NotApplicable(why) => ("n/a", why.clone()),
                    };
                    println!(
                        "{:<34} {:<9} {:<46} {:<8} {word} {detail}",
                        scenario.name,
                        mode.as_str(),
                        spec.label(),
                        runner
                    );
                    match verdict {
                        Verdict::Pass(_) => passed += 1,
                        Verdict::NotApplicable(_) => not_applicable += 1,
                        Verdict::Fail(_) => failed.push(format!(
                            "{} {mode} {runner} {}",
                            scenario.name,
                            spec.label()
                        )),
                    }
                }
            }
        }
    }
    println!(
        "{passed} passed, {} failed, {not_applicable} not applicable",
        failed.len()
    );
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    assert!(passed > 100);
}

#[test]
fn mode_overrides_name_real_modes_and_say_why() {
    for scenario in Scenario::shipped().unwrap() {
        for spec in &scenario.packets {
            for (mode, o) in &spec.modes {
                assert!(
                    mode.parse::<ProxyMode>().is_ok(),
                    "{}: mode {mode:?}",
                    scenario.name
                );
                assert!(
                    o.why.len() > 20,
                    "{}: say why {mode} differs",
                    scenario.name
                );
                assert_ne!(
                    o.expect, spec.expect,
                    "{}: an override equal to the default",
                    scenario.name
                );
            }
        }
    }
}

#[test]
fn a_wrong_expectation_fails_in_both_runners() {
    let scenario = Scenario::shipped()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "clusterip")
        .unwrap();
    for mode in [ProxyMode::Nftables, ProxyMode::Iptables, ProxyMode::Ebpf] {
        let mut spec = scenario.packets[0].clone();
        let world = NodeWorld::new(&scenario, plan::node("node1").unwrap(), mode).unwrap();
        assert!(matches!(world.model(&spec), Verdict::Pass(_)), "{mode}");
        assert!(matches!(world.tracer(&spec), Verdict::Pass(_)), "{mode}");
        for wrong in [
            Expect::Drop,
            Expect::Untouched,
            Expect::Dnat {
                endpoints: vec!["10.244.1.2:8080".parse().unwrap()],
                masquerade: sluice_conformance::Masquerade::No,
                sticky: false,
            },
        ] {
            spec.expect = wrong;
            assert!(
                matches!(world.model(&spec), Verdict::Fail(_)),
                "{mode} {}",
                spec.expect
            );
            assert!(
                matches!(world.tracer(&spec), Verdict::Fail(_)),
                "{mode} {}",
                spec.expect
            );
        }
    }
}

#[test]
fn the_plan_is_the_labs() {
    // The lab's 2-node, 2-pods-per-node layout: the conformance runner in the lab checks the
    // live addresses against these; here the plan's own consistency.
    for pod in plan::PODS {
        let node = plan::node(pod.node).unwrap();
        assert!(node.pod_cidr().contains(&std::net::IpAddr::from(pod.ip)));
        assert!(
            node.pod_cidr6()
                .contains(&std::net::IpAddr::from(pod.ip6()))
        );
        assert_eq!(plan::pod_at(pod.ip.into()), Some(&pod));
    }
}
