//! What a sync reports as changed: exactly the Service ports whose definition
//! or endpoints differ since the previous sync (upstream's
//! `TestUpdateServiceMapResult`/`TestUpdateEndpointsMap` "updated services"
//! expectations, at port granularity).

mod common;

use common::*;
use serde_json::json;
use sluice_model::service::IpFamily;
use std::time::UNIX_EPOCH;

use sluice_proxy_core::{Changes, ProxyState, TRIGGER_TIME_ANNOTATION};

fn changed(state: &mut ProxyState) -> Vec<String> {
    let (_, changes) = state.sync();
    changes.ports.iter().map(|p| p.to_string()).collect()
}

fn two_ports() -> serde_json::Value {
    json!({"ports": [{"name": "p80", "port": 80}, {"name": "p81", "port": 81, "protocol": "UDP"}]})
}

#[test]
fn first_sync_is_full_then_incremental() {
    let mut state = state(IpFamily::V4);
    assert!(
        state.has_pending(),
        "the first sync is due even with no objects"
    );
    state.on_service(&service("a", json!({}))).unwrap();
    let (snapshot, changes) = state.sync();
    assert!(changes.full);
    assert_eq!(changes.service_changes, 1);
    assert_eq!(snapshot.len(), 1);
    assert!(!state.has_pending());
    let (_, changes) = state.sync();
    assert_eq!(
        changes,
        Changes::default(),
        "nothing pending, nothing reported"
    );
    assert!(changes.is_empty());
}

#[test]
fn only_changed_ports_are_reported() {
    let mut state = state(IpFamily::V4);
    state.on_service(&service("a", two_ports())).unwrap();
    state.on_service(&service("b", json!({}))).unwrap();
    state
        .on_slice(&slice("b", "1", vec![ep("10.180.0.1", "n")]))
        .unwrap();
    assert_eq!(changed(&mut state), ["ns/a:p80", "ns/a:p81", "ns/b:p80"]);

    // One endpoint of b: only b's port.
    state
        .on_slice(&slice("b", "1", vec![ep("10.180.0.2", "n")]))
        .unwrap();
    assert_eq!(changed(&mut state), ["ns/b:p80"]);

    // One port of a changes its number: only that port.
    let spec = json!({"ports": [{"name": "p80", "port": 80}, {"name": "p81", "port": 82, "protocol": "UDP"}]});
    state.on_service(&service("a", spec)).unwrap();
    let (_, changes) = state.sync();
    assert!(changes.udp_changed());
    assert_eq!(
        changes
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["ns/a:p81"]
    );

    // A label change with no effect on the model: nothing.
    let mut relabelled = service("b", json!({}));
    relabelled.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
    assert!(!state.on_service(&relabelled).unwrap().changed);
    assert!(changed(&mut state).is_empty());
}

#[test]
fn coalesced_events_report_nothing() {
    let mut state = state(IpFamily::V4);
    state.sync();
    state.on_service(&service("a", json!({}))).unwrap();
    state.on_service_deleted(&service("a", json!({}))).unwrap();
    let s = slice("a", "1", vec![ep("10.180.0.1", "n")]);
    state.on_slice(&s).unwrap();
    state.on_slice_deleted(&s).unwrap();
    assert!(!state.has_pending());
    assert!(changed(&mut state).is_empty());
}

#[test]
fn removals_are_reported_and_leave_the_snapshot() {
    let mut state = state(IpFamily::V4);
    state.on_service(&service("a", two_ports())).unwrap();
    state.sync();
    state.on_service(&service("a", json!({}))).unwrap();
    let (snapshot, changes) = state.sync();
    assert_eq!(
        changes
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["ns/a:p81"]
    );
    assert!(snapshot.service_port(&port_name("a", "p81")).is_none());

    // Another proxy takes the Service over: it leaves this proxy's snapshot.
    let mut taken = service("a", json!({}));
    taken.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_owned(),
            "other".to_owned(),
        )]
        .into(),
    );
    assert!(state.on_service(&taken).unwrap().changed);
    let (snapshot, changes) = state.sync();
    assert_eq!(
        changes
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["ns/a:p80"]
    );
    assert!(snapshot.is_empty());
}

#[test]
fn zone_change_forces_a_full_sync() {
    let mut state = state(IpFamily::V4);
    state.sync();
    assert!(state.on_node(&node("zone-a")));
    assert!(!state.on_node(&node("zone-a")), "same zone, nothing to do");
    let (snapshot, changes) = state.sync();
    assert!(changes.full);
    assert_eq!(snapshot.node().zone.as_deref(), Some("zone-a"));
    state.request_full_sync();
    assert!(state.sync().1.full);
    assert!(state.on_node_deleted(), "a deleted Node has no zone");
    let (snapshot, changes) = state.sync();
    assert!(changes.full);
    assert_eq!(snapshot.node().zone, None);
}

/// A full sync the period asked for is marked periodic, unless something else (the first
/// sync, a zone change, a failure) also needs every Service reprogrammed.
#[test]
fn a_periodic_full_sync_is_marked_unless_something_else_needs_one() {
    let mut state = state(IpFamily::V4);
    let (_, first) = state.sync();
    assert!(first.full && !first.periodic, "the first sync");
    state.request_periodic_sync();
    assert!(state.has_pending());
    let (_, changes) = state.sync();
    assert!(changes.full && changes.periodic);
    assert!(!state.has_pending());
    state.request_periodic_sync();
    assert!(state.on_node(&node("zone-a")));
    let (_, changes) = state.sync();
    assert!(changes.full && !changes.periodic, "the zone changed too");
    state.request_periodic_sync();
    state.retry_after_failure(&changes);
    let (_, changes) = state.sync();
    assert!(changes.full && !changes.periodic, "after a failure");
}

#[test]
fn an_old_snapshot_is_not_disturbed_by_later_syncs() {
    let mut state = state(IpFamily::V4);
    state.on_service(&service("a", json!({}))).unwrap();
    let (old, _) = state.sync();
    state.on_service_deleted(&service("a", json!({}))).unwrap();
    let (new, _) = state.sync();
    assert_eq!(old.len(), 1);
    assert!(new.is_empty());
}

#[test]
fn pending_counts_for_metrics() {
    let mut state = state(IpFamily::V4);
    state.on_service(&service("a", json!({}))).unwrap();
    state.on_service(&service("b", json!({}))).unwrap();
    state
        .on_slice(&slice("a", "1", vec![ep("10.180.0.1", "n")]))
        .unwrap();
    state
        .on_slice(&slice("a", "2", vec![ep("10.180.0.2", "n")]))
        .unwrap();
    assert_eq!(state.service_changes_pending(), 2);
    assert_eq!(state.endpoint_changes_pending(), 1);
    let (_, changes) = state.sync();
    assert_eq!((changes.service_changes, changes.endpoint_changes), (2, 1));
    assert_eq!(
        (
            state.service_changes_pending(),
            state.endpoint_changes_pending()
        ),
        (0, 0)
    );
}

#[test]
fn trigger_times_of_applied_slice_updates() {
    let mut state = state(IpFamily::V4);
    let stamped = |suffix: &str, ip: &str, time: &str| {
        let mut s = slice("a", suffix, vec![ep(ip, "n")]);
        let annotation = (TRIGGER_TIME_ANNOTATION.to_owned(), time.to_owned());
        s.metadata.annotations = Some([annotation].into());
        s
    };
    state
        .on_slice(&stamped("1", "10.180.0.1", "2025-01-01T00:00:02Z"))
        .unwrap();
    state
        .on_slice(&stamped("2", "10.180.0.2", "2025-01-01T00:00:01.5Z"))
        .unwrap();
    state
        .on_slice(&stamped("3", "10.180.0.3", "not a time"))
        .unwrap();
    let (_, changes) = state.sync();
    let secs: Vec<f64> = (changes.trigger_times.iter())
        .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - 1_735_689_600.0)
        .collect();
    assert_eq!(secs, [1.5, 2.0]);
    assert!(state.sync().1.trigger_times.is_empty(), "consumed");

    // A deletion discards the Service's pending times.
    state
        .on_slice(&stamped("1", "10.180.0.9", "2025-01-01T00:00:03Z"))
        .unwrap();
    state.on_slice_deleted(&slice("a", "2", vec![])).unwrap();
    assert!(state.sync().1.trigger_times.is_empty());
}
