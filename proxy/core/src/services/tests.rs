//! Coalescing of Service changes, after upstream's `TestServiceMapUpdate`
//! family of tests: each case is a sequence of events between two syncs and the
//! ports the sync must see change.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sluice_model::service::Protocol;

use super::*;

fn svc(name: &str) -> ServiceName {
    ServiceName::new("ns", name)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A ClusterIP port `ns/<service>:<port>` on `cluster_ips`.
fn port(service: &str, port: &str, cluster_ips: &[&str]) -> ServicePort {
    ServicePort::plain(
        ServicePortName::new(&svc(service), port, Protocol::Tcp),
        cluster_ips.iter().map(|s| ip(s)).collect(),
        80,
    )
}

fn v4(service: &str, name: &str) -> ServicePort {
    port(service, name, &["10.96.0.1"])
}

enum Op {
    Set(&'static str, Vec<ServicePort>),
    Delete(&'static str),
    Sync,
}

/// The `(service, previous ports, current ports)` a checkout reports, as text.
fn summary(changes: Vec<ServiceChange>) -> BTreeSet<String> {
    let names = |map: &ServicePorts| {
        let list: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        list.join(",")
    };
    (changes.iter())
        .map(|c| {
            format!(
                "{}:[{}]->[{}]",
                c.service,
                names(&c.previous),
                names(&c.current)
            )
        })
        .collect()
}

#[test]
fn coalescing() {
    use Op::*;
    // (name, events, expected pending count, expected checkout)
    let cases: Vec<(&str, Vec<Op>, usize, &[&str])> = vec![
        ("nothing", vec![], 0, &[]),
        (
            "add",
            vec![Set("a", vec![v4("a", "p")])],
            1,
            &["ns/a:[]->[ns/a:p]"],
        ),
        (
            "add then delete is nothing",
            vec![Set("a", vec![v4("a", "p")]), Delete("a")],
            0,
            &[],
        ),
        (
            "delete of an unknown service is nothing",
            vec![Delete("a")],
            0,
            &[],
        ),
        (
            "update to the synced state is nothing",
            vec![
                Set("a", vec![v4("a", "p")]),
                Sync,
                Set("a", vec![v4("a", "q")]),
                Set("a", vec![v4("a", "p")]),
            ],
            0,
            &[],
        ),
        (
            "identical update is nothing",
            vec![
                Set("a", vec![v4("a", "p")]),
                Sync,
                Set("a", vec![v4("a", "p")]),
            ],
            0,
            &[],
        ),
        (
            "delete then re-add with a change",
            vec![
                Set("a", vec![v4("a", "p")]),
                Sync,
                Delete("a"),
                Set("a", vec![v4("a", "q")]),
            ],
            1,
            &["ns/a:[ns/a:p]->[ns/a:q]"],
        ),
        (
            "delete",
            vec![Set("a", vec![v4("a", "p")]), Sync, Delete("a")],
            1,
            &["ns/a:[ns/a:p]->[]"],
        ),
        (
            "change in the other family is nothing",
            vec![
                Set("a", vec![port("a", "p", &["10.96.0.1", "fd00::1"])]),
                Sync,
                Set("a", vec![port("a", "p", &["10.96.0.1", "fd00::2"])]),
            ],
            0,
            &[],
        ),
        (
            "service of the other family only is nothing",
            vec![Set("a", vec![port("a", "p", &["fd00::1"])])],
            0,
            &[],
        ),
        (
            "two services, one coalesced away",
            vec![
                Set("a", vec![v4("a", "p")]),
                Set("b", vec![v4("b", "p"), v4("b", "q")]),
                Delete("a"),
            ],
            1,
            &["ns/b:[]->[ns/b:p,ns/b:q]"],
        ),
    ];
    for (name, ops, pending, expected) in cases {
        let mut tracker = ServiceChangeTracker::new(IpFamily::V4);
        for op in ops {
            match op {
                Set(service, ports) => {
                    tracker.update(&svc(service), &ports);
                }
                Delete(service) => {
                    tracker.delete(&svc(service));
                }
                Sync => {
                    tracker.checkout();
                }
            }
        }
        assert_eq!(tracker.pending_len(), pending, "{name}: pending");
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(summary(tracker.checkout()), expected, "{name}: checkout");
        assert_eq!(tracker.pending_len(), 0, "{name}: pending after checkout");
    }
}

#[test]
fn update_reports_whether_pending_changed() {
    let mut tracker = ServiceChangeTracker::new(IpFamily::V4);
    let a = svc("a");
    assert!(tracker.update(&a, &[v4("a", "p")]));
    assert!(!tracker.update(&a, &[v4("a", "p")]), "same pending state");
    assert!(tracker.delete(&a), "pending entry dropped");
    assert!(!tracker.delete(&a));
}

#[test]
fn checkout_filters_to_the_family() {
    let mut tracker = ServiceChangeTracker::new(IpFamily::V6);
    let dual = ServicePort {
        external_ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
        ..port("a", "p", &["10.96.0.1", "fd00::1"])
    };
    tracker.update(&svc("a"), &[dual]);
    let [change] = tracker.checkout().try_into().unwrap();
    let port = change.current.values().next().unwrap();
    assert_eq!(port.cluster_ips, vec![ip("fd00::1")]);
    assert_eq!(port.external_ips, vec![ip("2001:db8::1")]);
}
