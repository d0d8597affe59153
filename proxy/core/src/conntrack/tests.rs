use std::sync::{Arc, Mutex};

use sluice_model::service::{IpFamily, Protocol, ServiceName, ServicePortName, TrafficPolicy};

use super::*;
use crate::fixture::{apply, ep, state, svc};

/// Flows a test pretends the kernel has; records what the reconciliation deletes.
#[derive(Default)]
struct Flows {
    live: Vec<FlowKey>,
    deleted: Arc<Mutex<Vec<FlowKey>>>,
}

impl Cleaner for Flows {
    fn delete_where(
        &mut self,
        _: IpFamily,
        stale: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.live.drain(..).partition(|f| stale(f));
        self.live = kept;
        let n = gone.len();
        self.deleted.lock().unwrap().extend(gone);
        Ok(n)
    }
}

fn flow(proto: u8, dst: &str, reply: &str) -> FlowKey {
    FlowKey {
        proto,
        orig_dst: Some(dst.parse().unwrap()),
        orig_dst_port: Some(53),
        reply_src: Some(reply.parse().unwrap()),
        seen_reply: true,
    }
}

/// A flow nothing has answered yet (a SYN on its way, or lost).
fn unanswered(proto: u8, dst: &str, reply: &str) -> FlowKey {
    FlowKey {
        seen_reply: false,
        ..flow(proto, dst, reply)
    }
}

fn dns() -> ServicePort {
    let mut dns = svc("dns", "172.30.0.53");
    dns.name = ServicePortName::new(&dns.name.service(), "dns", Protocol::Udp);
    dns.port = 53;
    dns
}

#[test]
fn udp_flows_are_reconciled_with_the_endpoints_and_live_ones_survive_a_restart() {
    let to_a = flow(17, "172.30.0.53", "10.180.0.1");
    let to_gone = flow(17, "172.30.0.53", "10.180.0.9");
    let never_dnated = flow(17, "172.30.0.53", "172.30.0.53");
    let other_vip = flow(17, "172.30.0.99", "10.180.0.9");
    let tcp = flow(6, "172.30.0.53", "10.180.0.9");
    let mut flows = Flows {
        live: vec![to_a, to_gone, never_dnated, other_vip, tcp],
        ..Flows::default()
    };
    let deleted = flows.deleted.clone();
    let mut st = state("node-a", None);
    apply(&mut st, vec![(dns(), vec![ep("10.180.0.1", "node-b")])]);
    // The first sync of a (re)started proxy is full: only the stale flows go.
    let (snap, changes) = st.sync();
    assert_eq!(reconcile_flows(&mut flows, &snap, &changes).unwrap(), 2);
    assert_eq!(*deleted.lock().unwrap(), [to_gone, never_dnated]);
    // The Service goes: every flow to its address goes with it.
    drop(snap);
    st.delete_service(&ServiceName::new("ns", "dns"));
    let (snap, changes) = st.sync();
    reconcile_flows(&mut flows, &snap, &changes).unwrap();
    assert_eq!(*deleted.lock().unwrap(), [to_gone, never_dnated, to_a]);
}

#[test]
fn a_udp_flow_to_a_serving_endpoint_survives_a_policy_that_no_longer_picks_it() {
    let mut flows = Flows {
        live: vec![flow(17, "172.30.0.53", "10.180.0.1")],
        ..Flows::default()
    };
    let deleted = flows.deleted.clone();
    // internalTrafficPolicy: Local on node-a picks only 10.180.0.2; the flow to 10.180.0.1
    // (node-b), made before the policy changed, is left to finish.
    let mut dns = dns();
    dns.internal_traffic_policy = TrafficPolicy::Local;
    let eps = vec![ep("10.180.0.1", "node-b"), ep("10.180.0.2", "node-a")];
    let mut st = state("node-a", None);
    apply(&mut st, vec![(dns, eps)]);
    let (snap, changes) = st.sync();
    reconcile_flows(&mut flows, &snap, &changes).unwrap();
    assert!(deleted.lock().unwrap().is_empty());
}

#[test]
fn a_destination_taken_away_loses_its_flows_and_the_others_keep_theirs() {
    let to_ext = flow(17, "192.168.99.53", "10.180.0.1");
    let to_cip = flow(17, "172.30.0.53", "10.180.0.1");
    let mut flows = Flows {
        live: vec![to_ext, to_cip],
        ..Flows::default()
    };
    let deleted = flows.deleted.clone();
    let mut with_ext = dns();
    with_ext.external_ips = vec!["192.168.99.53".parse().unwrap()];
    let mut st = state("node-a", None);
    apply(&mut st, vec![(with_ext, vec![ep("10.180.0.1", "node-b")])]);
    let (snap, changes) = st.sync();
    reconcile_flows(&mut flows, &snap, &changes).unwrap();
    assert!(deleted.lock().unwrap().is_empty());
    drop(snap);
    apply(&mut st, vec![(dns(), vec![ep("10.180.0.1", "node-b")])]);
    let (snap, changes) = st.sync();
    assert!(!changes.full);
    reconcile_flows(&mut flows, &snap, &changes).unwrap();
    assert_eq!(*deleted.lock().unwrap(), [to_ext]);
}

#[test]
fn unanswered_tcp_flows_that_missed_the_rules_go_and_answered_ones_stay() {
    let mut dns = dns();
    dns.name = ServicePortName::new(&ServiceName::new("ns", "dns"), "dns", Protocol::Tcp);
    let never_dnated = unanswered(6, "172.30.0.53", "172.30.0.53");
    let to_gone = unanswered(6, "172.30.0.53", "10.180.0.9");
    let syn_in_flight = unanswered(6, "172.30.0.53", "10.180.0.1");
    let established_gone = flow(6, "172.30.0.53", "10.180.0.9");
    let established_host = flow(6, "172.30.0.53", "172.30.0.53");
    let udp_port_53 = unanswered(17, "172.30.0.53", "172.30.0.53");
    let sctp = unanswered(132, "172.30.0.53", "172.30.0.53");
    let mut flows = Flows {
        live: vec![
            never_dnated,
            to_gone,
            syn_in_flight,
            established_gone,
            established_host,
            udp_port_53,
            sctp,
        ],
        ..Flows::default()
    };
    let deleted = flows.deleted.clone();
    let mut st = state("node-a", None);
    apply(&mut st, vec![(dns, vec![ep("10.180.0.1", "node-b")])]);
    let (snap, changes) = st.sync();
    assert_eq!(reconcile_flows(&mut flows, &snap, &changes).unwrap(), 2);
    // Only this TCP port's unanswered flows that no serving endpoint holds; the UDP and SCTP
    // flows to the same number are another protocol's port.
    assert_eq!(*deleted.lock().unwrap(), [never_dnated, to_gone]);
}

#[test]
fn a_sync_that_looked_at_no_port_dumps_nothing() {
    struct Panics;
    impl Cleaner for Panics {
        fn delete_where(
            &mut self,
            _: IpFamily,
            _: &dyn Fn(&FlowKey) -> bool,
        ) -> Result<usize, ConntrackError> {
            panic!("dumped conntrack for a sync that looked at no port")
        }
    }
    let mut st = state("node-a", None);
    apply(
        &mut st,
        vec![(svc("web", "172.30.0.1"), vec![ep("10.180.0.1", "node-b")])],
    );
    let (snap, changes) = st.sync();
    drop(snap);
    // Nothing changed since: a partial sync with no port in it.
    let (snap, changes2) = st.sync();
    assert!(!changes2.full && changes2.ports.is_empty(), "{changes:?}");
    assert_eq!(reconcile_flows(&mut Panics, &snap, &changes2).unwrap(), 0);
}

/// Counts dumps.
#[derive(Default)]
struct Dumps(usize);

impl Cleaner for Dumps {
    fn delete_where(
        &mut self,
        _: IpFamily,
        _: &dyn Fn(&FlowKey) -> bool,
    ) -> Result<usize, ConntrackError> {
        self.0 += 1;
        Ok(0)
    }
}

/// A partial sync dumps conntrack only when a flow may have gone stale: a UDP port, a new
/// port, a lost endpoint or a taken-away destination — not an endpoint added to a TCP port
/// that already had rules (a dump walks the whole conntrack table: ~9 ms here).
#[test]
fn a_tcp_port_that_only_gained_an_endpoint_is_not_dumped_for() {
    let mut st = state("node-a", None);
    let web = || svc("web", "172.30.0.1");
    let mut dumps = Dumps::default();
    let sync = |st: &mut crate::ProxyState, dumps: &mut Dumps| {
        let (snap, changes) = st.sync();
        reconcile_flows(dumps, &snap, &changes).unwrap();
        let n = dumps.0;
        dumps.0 = 0;
        n
    };
    apply(&mut st, vec![(web(), vec![ep("10.180.0.1", "node-b")])]);
    assert_eq!(sync(&mut st, &mut dumps), 1, "the first (full) sync");
    apply(&mut st, vec![(svc("new", "172.30.0.2"), vec![])]);
    assert_eq!(
        sync(&mut st, &mut dumps),
        1,
        "a new port: a SYN may have come first"
    );
    let two = vec![ep("10.180.0.1", "node-b"), ep("10.180.0.2", "node-b")];
    apply(&mut st, vec![(web(), two)]);
    assert_eq!(sync(&mut st, &mut dumps), 0, "an endpoint added");
    apply(&mut st, vec![(web(), vec![ep("10.180.0.2", "node-b")])]);
    assert_eq!(sync(&mut st, &mut dumps), 1, "an endpoint lost");
    let mut not_ready = ep("10.180.0.2", "node-b");
    not_ready.ready = false;
    not_ready.serving = false;
    apply(&mut st, vec![(web(), vec![not_ready])]);
    assert_eq!(sync(&mut st, &mut dumps), 1, "an endpoint stopped serving");
    apply(&mut st, vec![(dns(), vec![ep("10.180.0.1", "node-b")])]);
    sync(&mut st, &mut dumps);
    apply(
        &mut st,
        vec![(
            dns(),
            vec![ep("10.180.0.1", "node-b"), ep("10.180.0.3", "node-b")],
        )],
    );
    assert_eq!(
        sync(&mut st, &mut dumps),
        1,
        "UDP: kube-proxy's rule, every change"
    );
}
