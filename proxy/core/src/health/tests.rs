use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_model::service::IpFamily;

use super::*;
use crate::http_test::get;
use crate::metrics::Metrics;
use crate::runner::{FamilyStatus, NodeStatus, SyncStatus};

const TIMEOUT: Duration = Duration::from_secs(60);

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

fn inputs(queued: Option<u64>, updated: Option<u64>, node_eligible: bool) -> HealthInputs {
    let family = FamilyHealth {
        queued_since: queued.map(at),
        last_updated: updated.map(at),
    };
    HealthInputs {
        families: BTreeMap::from([(IpFamily::V4, family)]),
        node_eligible,
        timeout: TIMEOUT,
    }
}

#[test]
fn semantics_table() {
    // (queued, updated, node eligible, now) -> (healthz, livez)
    let cases = [
        (None, None, true, 0, true, true),
        (None, Some(0), true, 1000, true, true),
        (Some(10), Some(0), true, 69, true, true),
        (Some(10), Some(0), true, 70, false, false),
        (Some(10), None, true, 500, false, false),
        (None, Some(0), false, 5, false, true),
        (Some(10), Some(0), false, 70, false, false),
    ];
    for (queued, updated, eligible, now, healthz, livez) in cases {
        let i = inputs(queued, updated, eligible);
        let case = format!("{queued:?} {updated:?} {eligible} {now}");
        assert_eq!(
            evaluate(&i, Probe::Healthz, at(now)).healthy,
            healthz,
            "{case}"
        );
        assert_eq!(evaluate(&i, Probe::Livez, at(now)).healthy, livez, "{case}");
        assert_eq!(proxy_healthy(&i, at(now)), livez, "{case}");
    }
}

#[test]
fn no_family_yet_is_healthy() {
    let i = HealthInputs {
        node_eligible: true,
        timeout: TIMEOUT,
        ..HealthInputs::default()
    };
    let report = evaluate(&i, Probe::Healthz, at(0));
    assert!(report.healthy);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.get("status").is_none(), "{json}");
}

#[test]
fn body_fields_match_kube_proxy() {
    let healthy = evaluate(&inputs(None, Some(3), true), Probe::Healthz, at(10));
    let json = serde_json::to_string(&healthy).unwrap();
    assert_eq!(
        json,
        r#"{"lastUpdated":"2023-11-14T22:13:30Z","currentTime":"2023-11-14T22:13:30Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2023-11-14T22:13:23Z","healthy":true}}}"#
    );
    // Unhealthy: lastUpdated is the real one, not now; livez has no nodeEligible.
    let late = evaluate(&inputs(Some(0), Some(3), true), Probe::Livez, at(100));
    let json = serde_json::to_value(&late).unwrap();
    assert_eq!(json["lastUpdated"], "2023-11-14T22:13:23Z");
    assert_eq!(json["currentTime"], "2023-11-14T22:15:00Z");
    assert!(json.get("nodeEligible").is_none());
    assert_eq!(json["status"]["IPv4"]["healthy"], false);
    let never = evaluate(&inputs(Some(0), None, true), Probe::Livez, at(100));
    assert_eq!(never.last_updated, "0001-01-01T00:00:00Z");
}

#[test]
fn dual_stack_one_late_family_is_unhealthy() {
    let mut i = inputs(None, Some(0), true);
    let late = FamilyHealth {
        queued_since: Some(at(0)),
        last_updated: Some(at(0)),
    };
    i.families.insert(IpFamily::V6, late);
    let report = evaluate(&i, Probe::Livez, at(61));
    assert!(!report.healthy);
    assert!(report.status["IPv4"].healthy && !report.status["IPv6"].healthy);
}

#[test]
fn inputs_from_the_runner_status() {
    let status = SyncStatus {
        families: BTreeMap::from([(
            IpFamily::V4,
            FamilyStatus {
                queued_since: Some(at(1)),
                last_synced: Some(at(0)),
                ..FamilyStatus::default()
            },
        )]),
        node: NodeStatus::Present { deleting: true },
        ..SyncStatus::default()
    };
    let i = HealthInputs::from_status(&status, TIMEOUT);
    assert_eq!(i, inputs(Some(1), Some(0), false));
    let (_tx, rx) = tokio::sync::watch::channel(status);
    assert_eq!(StatusSource::new(rx, TIMEOUT).inputs(), i);
}

async fn start(source: Arc<RwLock<HealthInputs>>, metrics: &Metrics) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = HealthServer::new(source)
        .with_metrics(metrics.clone())
        .router();
    tokio::spawn(serve(listener, router, std::future::pending()));
    addr
}

#[tokio::test]
async fn over_http() {
    let now = SystemTime::now();
    let source = Arc::new(RwLock::new(HealthInputs {
        families: BTreeMap::from([(
            IpFamily::V4,
            FamilyHealth {
                queued_since: None,
                last_updated: Some(now),
            },
        )]),
        node_eligible: true,
        timeout: TIMEOUT,
    }));
    let metrics = Metrics::new(now);
    let addr = start(source.clone(), &metrics).await;

    let reply = get(addr, "/healthz").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["nodeEligible"], true);
    assert_eq!(body["healthy"], true);

    // The node is being deleted: healthz 503, livez still 200.
    source.write().unwrap().node_eligible = false;
    assert_eq!(get(addr, "/healthz").await.unwrap().status, 503);
    let livez = get(addr, "/livez").await.unwrap();
    assert_eq!(livez.status, 200);
    assert!(!livez.body.contains("nodeEligible"), "{}", livez.body);

    // An update queued longer than the timeout: both 503.
    source.write().unwrap().node_eligible = true;
    let family = source
        .write()
        .unwrap()
        .families
        .get_mut(&IpFamily::V4)
        .map(|f| {
            f.queued_since = Some(now - TIMEOUT - Duration::from_secs(1));
        });
    assert!(family.is_some());
    assert_eq!(get(addr, "/healthz").await.unwrap().status, 503);
    assert_eq!(get(addr, "/livez").await.unwrap().status, 503);
    assert_eq!(get(addr, "/other").await.unwrap().status, 404);

    let text = metrics.encode();
    for line in [
        "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
        "kubeproxy_proxy_healthz_total{code=\"503\"} 2",
        "kubeproxy_proxy_livez_total{code=\"200\"} 1",
        "kubeproxy_proxy_livez_total{code=\"503\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}
