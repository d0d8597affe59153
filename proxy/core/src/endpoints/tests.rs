//! Coalescing and merging of EndpointSlice changes, after upstream's
//! `TestUpdateEndpointsMap` and `TestEndpointSliceCache*`: each case is a
//! sequence of slice events between two syncs and the merged endpoints the
//! sync must see change.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use sluice_model::service::Protocol;

use super::*;

/// `slice_name` of Service `ns/<service>` with `endpoints` ("ip:port", a
/// trailing `~` marks a terminating one) on port `p`.
fn slice(service: &str, slice_name: &str, endpoints: &[&str]) -> SliceEndpoints {
    let service = ServiceName::new("ns", service);
    let port = ServicePortName::new(&service, "p", Protocol::Tcp);
    let endpoints = endpoints.iter().map(|text| {
        let terminating = text.ends_with('~');
        let addr: SocketAddr = text.trim_end_matches('~').parse().unwrap();
        Endpoint {
            ready: !terminating,
            terminating,
            ..Endpoint::new(addr.ip(), addr.port())
        }
    });
    let family = match endpoints.clone().next().map(|ep| ep.ip) {
        Some(ip) => IpFamily::of(&ip),
        None => IpFamily::V4,
    };
    SliceEndpoints {
        service,
        slice_name: slice_name.to_owned(),
        family,
        ports: VecMap::from([(port, endpoints.collect())]),
        warnings: vec!["ignored by the tracker".to_owned()],
    }
}

enum Op {
    Set(SliceEndpoints),
    Delete(&'static str),
    Sync,
}

fn show(map: &ServiceEndpoints) -> String {
    let ports: Vec<String> = (map.iter())
        .map(|(port, eps)| {
            let eps: Vec<String> = (eps.iter())
                .map(|ep| format!("{ep}{}", if ep.terminating { "~" } else { "" }))
                .collect();
            format!("{port}={}", eps.join(","))
        })
        .collect();
    ports.join(";")
}

fn summary(changes: Vec<EndpointsChange>) -> BTreeSet<String> {
    (changes.iter())
        .map(|c| {
            format!(
                "{}:[{}]->[{}]",
                c.service,
                show(&c.previous),
                show(&c.current)
            )
        })
        .collect()
}

fn cases() -> Vec<(&'static str, Vec<Op>, usize, Vec<&'static str>)> {
    use Op::*;
    vec![
        (
            "add",
            vec![Set(slice("a", "a-1", &["10.0.0.1:80"]))],
            1,
            vec!["ns/a:[]->[ns/a:p=10.0.0.1:80]"],
        ),
        (
            "add then delete is nothing",
            vec![Set(slice("a", "a-1", &["10.0.0.1:80"])), Delete("a-1")],
            0,
            vec![],
        ),
        (
            "delete of an unknown slice is nothing",
            vec![Delete("a-1")],
            0,
            vec![],
        ),
        (
            "identical update is nothing",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Sync,
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
            ],
            0,
            vec![],
        ),
        (
            "update and revert is nothing",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Sync,
                Set(slice("a", "a-1", &["10.0.0.2:80"])),
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
            ],
            0,
            vec![],
        ),
        (
            "endpoint moving between slices is pending but changes nothing",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80", "10.0.0.2:80"])),
                Set(slice("a", "a-2", &[])),
                Sync,
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Set(slice("a", "a-2", &["10.0.0.2:80"])),
            ],
            1,
            vec![],
        ),
        (
            "two slices merge, duplicates once",
            vec![
                Set(slice("a", "a-1", &["10.0.0.2:80", "10.0.0.1:80"])),
                Set(slice("a", "a-2", &["10.0.0.2:80", "10.0.0.3:80"])),
            ],
            1,
            vec!["ns/a:[]->[ns/a:p=10.0.0.1:80,10.0.0.2:80,10.0.0.3:80]"],
        ),
        (
            "a terminating duplicate never replaces a ready copy",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Set(slice("a", "a-2", &["10.0.0.1:80~"])),
            ],
            1,
            vec!["ns/a:[]->[ns/a:p=10.0.0.1:80]"],
        ),
        (
            "delete one of two slices",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Set(slice("a", "a-2", &["10.0.0.2:80"])),
                Sync,
                Delete("a-2"),
            ],
            1,
            vec!["ns/a:[ns/a:p=10.0.0.1:80,10.0.0.2:80]->[ns/a:p=10.0.0.1:80]"],
        ),
        (
            "slice of the other family is ignored",
            vec![Set(slice("a", "a-1", &["[fd00::1]:80"]))],
            0,
            vec![],
        ),
        (
            "slice relabelled to another service leaves the first",
            vec![
                Set(slice("a", "x-1", &["10.0.0.1:80"])),
                Sync,
                Set(slice("b", "x-1", &["10.0.0.1:80"])),
            ],
            2,
            vec![
                "ns/a:[ns/a:p=10.0.0.1:80]->[]",
                "ns/b:[]->[ns/b:p=10.0.0.1:80]",
            ],
        ),
        (
            "two services, one coalesced away",
            vec![
                Set(slice("a", "a-1", &["10.0.0.1:80"])),
                Set(slice("b", "b-1", &["10.0.0.2:80"])),
                Delete("a-1"),
            ],
            1,
            vec!["ns/b:[]->[ns/b:p=10.0.0.2:80]"],
        ),
    ]
}

#[test]
fn coalescing_and_merging() {
    for (name, ops, pending, expected) in cases() {
        let mut tracker = EndpointsChangeTracker::new(IpFamily::V4);
        for op in ops {
            match op {
                Op::Set(slice) => {
                    tracker.update(slice);
                }
                Op::Delete(slice_name) => {
                    tracker.delete("ns", slice_name);
                }
                Op::Sync => {
                    tracker.checkout();
                }
            }
        }
        assert_eq!(tracker.pending_len(), pending, "{name}: pending");
        let expected: BTreeSet<String> = expected.into_iter().map(str::to_owned).collect();
        assert_eq!(summary(tracker.checkout()), expected, "{name}: checkout");
        assert_eq!(tracker.pending_len(), 0, "{name}: pending after checkout");
    }
}

#[test]
fn update_reports_whether_pending_changed() {
    let mut tracker = EndpointsChangeTracker::new(IpFamily::V4);
    assert!(tracker.update(slice("a", "a-1", &["10.0.0.1:80"])));
    assert!(!tracker.update(slice("a", "a-1", &["10.0.0.1:80"])));
    assert!(tracker.delete("ns", "a-1"));
    assert!(!tracker.delete("ns", "a-1"));
    assert!(
        tracker.services.is_empty(),
        "no state kept for a forgotten slice"
    );
}

#[test]
fn forgotten_services_free_their_state() {
    let mut tracker = EndpointsChangeTracker::new(IpFamily::V4);
    tracker.update(slice("a", "a-1", &["10.0.0.1:80"]));
    tracker.checkout();
    tracker.delete("ns", "a-1");
    assert_eq!(tracker.checkout().len(), 1);
    assert!(tracker.services.is_empty());
    assert!(tracker.owners.is_empty());
}
