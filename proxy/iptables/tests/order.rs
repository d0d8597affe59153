//! Partial syncs in every order a Service and its endpoints can arrive in end with the
//! ruleset a full sync renders: an external IP whose Service came before its endpoints
//! must still be DNATed once they come.

mod common;

use common::*;
use sluice_conntrack::NoConntrack;
use sluice_model::service::IpFamily;
use sluice_proxy_core::ProxyState;
use sluice_proxy_core::backend::Backend;
use sluice_proxy_iptables::{FakeIptables, IptablesBackend};

type Fake = IptablesBackend<FakeIptables, NoConntrack>;

const SERVICE: &str = "apiVersion: v1\nkind: Service\n\
metadata: {name: ext, namespace: conformance}\n\
spec: {clusterIP: 10.96.4.10, externalIPs: [203.0.113.40], \
ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}\n";

const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
metadata: {name: ext-a, namespace: conformance, labels: {kubernetes.io/service-name: ext}}\n\
addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n\
endpoints: [{addresses: [10.0.1.2], conditions: {ready: true}}, \
{addresses: [10.0.2.2], conditions: {ready: true}}]\n";

fn sync(backend: &mut Fake, state: &mut ProxyState) {
    let (snap, changes) = state.sync();
    backend.apply(&snap, &changes).unwrap();
}

fn dump(backend: &mut Fake) -> String {
    backend.iptables(IpFamily::V4).unwrap().dump().to_string()
}

/// The tables after the steps, each step's objects recorded and then synced.
fn after(steps: &[&str]) -> String {
    let mut backend = IptablesBackend::new([(FakeIptables::new(), fake_config())], NoConntrack);
    let mut state = state();
    sync(&mut backend, &mut state);
    for step in steps {
        record(&mut state, step);
        sync(&mut backend, &mut state);
    }
    dump(&mut backend)
}

#[test]
fn a_service_before_its_endpoints_ends_as_both_at_once() {
    let together = after(&[&format!("{SERVICE}---\n{SLICE}")]);
    assert!(together.contains("203.0.113.40"), "{together}");
    assert_eq!(after(&[SERVICE, SLICE]), together);
    assert_eq!(after(&[SLICE, SERVICE]), together);
}
