use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_model::service::{IpFamily, ServiceName};

use super::*;
use crate::fixture::{apply, ep, lb_local, state};
use crate::http_test::get;

const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(addr(0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((LOCALHOST, port))
}

fn name(service: &str) -> ServiceName {
    ServiceName::new("ns", service)
}

fn servers(healthy: &Arc<AtomicBool>) -> ServiceHealthServers {
    let healthy = healthy.clone();
    let proxy_healthy: ProxyHealthy = Arc::new(move || healthy.load(Ordering::SeqCst));
    let ips = Some(vec![IpAddr::from(LOCALHOST)]);
    ServiceHealthServers::new(tokio::runtime::Handle::current(), ips, proxy_healthy)
}

#[test]
fn body_is_kube_proxys() {
    assert_eq!(
        listeners::body(&name("svc"), 2, true),
        "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"svc\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&listeners::body(&name("svc"), 0, false)).unwrap();
    assert_eq!(parsed["service"]["name"], "svc");
    assert_eq!(parsed["serviceProxyHealthy"], false);
}

#[tokio::test]
async fn servers_follow_the_snapshots() {
    let healthy = Arc::new(AtomicBool::new(true));
    let hc = servers(&healthy);
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let mut st = state("node-a", None);
    apply(
        &mut st,
        vec![
            (
                lb_local("a", "172.30.0.1", "1.2.3.4", pa),
                vec![ep("10.180.0.1", "node-a"), ep("10.180.0.2", "node-a")],
            ),
            (
                lb_local("b", "172.30.0.2", "1.2.3.5", pb),
                vec![ep("10.180.0.3", "node-b")],
            ),
        ],
    );
    let (snapshot, changes) = st.sync();
    assert!(hc.sync_snapshot(&snapshot, &changes).is_empty());
    assert_eq!(
        hc.ports(),
        BTreeMap::from([(name("a"), pa), (name("b"), pb)])
    );

    let reply = get(addr(pa), "/any/path").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert_eq!(reply.headers["x-load-balancing-endpoint-weight"], "2");
    assert!(
        reply.body.contains("\"localEndpoints\": 2"),
        "{}",
        reply.body
    );
    let reply = get(addr(pb), "/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("\"localEndpoints\": 0"),
        "{}",
        reply.body
    );

    // The proxy itself unhealthy: 503 even with local endpoints.
    healthy.store(false, Ordering::SeqCst);
    let reply = get(addr(pa), "/").await.unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("\"serviceProxyHealthy\": false"),
        "{}",
        reply.body
    );
    healthy.store(true, Ordering::SeqCst);

    // Partial sync: b gets a local endpoint and moves to another port; a is gone.
    apply(
        &mut st,
        vec![(
            lb_local("b", "172.30.0.2", "1.2.3.5", pc),
            vec![ep("10.180.0.3", "node-a")],
        )],
    );
    st.delete_service(&name("a"));
    let (snapshot, changes) = st.sync();
    assert!(!changes.full);
    assert!(hc.sync_snapshot(&snapshot, &changes).is_empty());
    assert_eq!(hc.ports(), BTreeMap::from([(name("b"), pc)]));
    assert_eq!(get(addr(pc), "/").await.unwrap().status, 200);
    tokio::task::yield_now().await;
    assert!(get(addr(pa), "/").await.is_err(), "a's port is closed");
    assert!(get(addr(pb), "/").await.is_err(), "b's old port is closed");
}

#[tokio::test]
async fn kube_proxy_style_calls_and_families() {
    let healthy = Arc::new(AtomicBool::new(true));
    let hc = servers(&healthy);
    let (pa, busy) = (free_port(), std::net::TcpListener::bind(addr(0)).unwrap());
    let pbusy = busy.local_addr().unwrap().port();
    let errors = hc.sync_services(
        IpFamily::V4,
        BTreeMap::from([(name("a"), pa), (name("busy"), pbusy)]),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .contains(&format!("port {pbusy} of Service ns/busy")),
        "{}",
        errors[0]
    );
    assert_eq!(hc.ports(), BTreeMap::from([(name("a"), pa)]));

    // The IPv6 view has no ports: a stays open (the busy port is retried on
    // every update). Counts: the larger family's.
    assert_eq!(hc.sync_services(IpFamily::V6, BTreeMap::new()).len(), 1);
    hc.sync_endpoints(IpFamily::V4, BTreeMap::from([(name("a"), 1)]));
    hc.sync_endpoints(IpFamily::V6, BTreeMap::from([(name("a"), 3)]));
    let reply = get(addr(pa), "/").await.unwrap();
    assert_eq!(
        (
            reply.status,
            reply.headers["x-load-balancing-endpoint-weight"].as_str()
        ),
        (200, "3")
    );
    // Absent from the map: 0.
    hc.sync_endpoints(IpFamily::V4, BTreeMap::new());
    hc.sync_endpoints(IpFamily::V6, BTreeMap::new());
    assert_eq!(get(addr(pa), "/").await.unwrap().status, 503);

    // The busy port frees up: the next sync opens it.
    drop(busy);
    let errors = hc.sync_services(
        IpFamily::V4,
        BTreeMap::from([(name("a"), pa), (name("busy"), pbusy)]),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(get(addr(pbusy), "/").await.unwrap().status, 503);
}
