use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sluice_model::service::IpFamily;

use super::*;
use crate::fixture::{apply, ep, lb_local, state, svc};
use crate::http_test::get;
use crate::runner::{FamilyStatus, SyncRecord};

fn line(text: &str, wanted: &str) -> bool {
    text.lines().any(|l| l == wanted)
}

#[test]
fn names_types_and_buckets_are_kube_proxys() {
    let text = Metrics::new(SystemTime::now()).encode();
    for wanted in [
        "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
        "# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram",
        "# TYPE kubeproxy_sync_partial_proxy_rules_duration_seconds histogram",
        "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
        "# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge",
        "# TYPE kubeproxy_network_programming_duration_seconds histogram",
        "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge",
        "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes counter",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
        "# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge",
        "kubeproxy_sync_proxy_rules_service_changes_total 0",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 0",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"59.0\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"115.0\"} 0",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\"} 0",
    ] {
        assert!(line(&text, wanted), "{wanted:?} not in\n{text}");
    }
    let sync_buckets = text
        .matches("kubeproxy_sync_proxy_rules_duration_seconds_bucket")
        .count();
    assert_eq!(sync_buckets, 16, "15 buckets and +Inf");
    let np_buckets = text
        .matches("kubeproxy_network_programming_duration_seconds_bucket")
        .count();
    assert_eq!(np_buckets, 81, "2 + 59 + 12 + 7 buckets and +Inf");
    let mode = Metrics::with_mode(SystemTime::now(), |r| {
        r.register("mode_metric", "a mode's own", Counter::<u64>::default());
    });
    assert!(line(&mode.encode(), "kubeproxy_mode_metric_total 0"));
}

#[test]
fn sync_durations_split_full_and_partial() {
    let m = Metrics::new(SystemTime::now());
    m.observe_sync(true, Duration::from_millis(3));
    m.observe_sync(false, Duration::from_micros(500));
    m.observe_sync(false, Duration::from_millis(20));
    let text = m.encode();
    for wanted in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count 3",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 2",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 1",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1",
    ] {
        assert!(line(&text, wanted), "{wanted:?} not in\n{text}");
    }
}

#[test]
fn status_feeds_pending_and_last_queued() {
    let m = Metrics::new(SystemTime::now());
    let family = |s, e| FamilyStatus {
        service_changes_pending: s,
        endpoint_changes_pending: e,
        ..FamilyStatus::default()
    };
    let status = SyncStatus {
        families: BTreeMap::from([(IpFamily::V4, family(2, 5)), (IpFamily::V6, family(1, 0))]),
        last_queued: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)),
        ..SyncStatus::default()
    };
    m.update_from_status(&status);
    let text = m.encode();
    assert!(
        line(
            &text,
            "kubeproxy_sync_proxy_rules_service_changes_pending 3"
        ),
        "{text}"
    );
    assert!(
        line(
            &text,
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 5"
        ),
        "{text}"
    );
    assert!(
        line(
            &text,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds 1700000000.5"
        ),
        "{text}"
    );
}

fn record(ok: bool, full: bool, at: SystemTime) -> SyncRecord {
    SyncRecord {
        family: IpFamily::V4,
        at,
        duration: Duration::from_millis(2),
        full,
        ok,
        ports: 1,
        service_changes: 1,
        endpoint_changes: 2,
    }
}

#[test]
fn observer_counts_syncs_latency_and_no_local_endpoints() {
    let started = SystemTime::now();
    let m = Metrics::new(started);
    let mut st = state("node-a", None);
    let itp_local = crate::fixture::Svc::itp_local(svc("internal", "172.30.0.2"));
    apply(
        &mut st,
        vec![
            (
                lb_local("lb", "172.30.0.1", "1.2.3.4", 30000),
                vec![ep("10.180.0.1", "node-b")],
            ),
            (itp_local, vec![ep("10.180.0.2", "node-b")]),
            (svc("plain", "172.30.0.3"), vec![]),
        ],
    );
    let (snapshot, mut changes) = st.sync();
    changes.trigger_times = vec![started - Duration::from_secs(5), started];
    let at = started + Duration::from_secs(2);
    let full = record(true, true, at);
    m.on_sync(&SyncReport {
        record: &full,
        snapshot: &snapshot,
        changes: &changes,
        error: None,
    });
    let text = m.encode();
    for wanted in [
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\",ip_family=\"IPv4\"} 1",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\",ip_family=\"IPv4\"} 1",
        "kubeproxy_network_programming_duration_seconds_count 1",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"2.0\"} 1",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"} 0",
        "kubeproxy_sync_proxy_rules_service_changes_total 1",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total 2",
    ] {
        assert!(line(&text, wanted), "{wanted:?} not in\n{text}");
    }
    assert!(
        text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 17"),
        "{text}"
    );

    // A partial sync gives the LB Service a local endpoint: only it is re-examined.
    apply(
        &mut st,
        vec![(
            lb_local("lb", "172.30.0.1", "1.2.3.4", 30000),
            vec![ep("10.180.0.1", "node-a")],
        )],
    );
    let (snapshot, changes) = st.sync();
    assert!(!changes.full && changes.ports.len() == 1);
    let failed = record(false, false, at);
    m.on_sync(&SyncReport {
        record: &failed,
        snapshot: &snapshot,
        changes: &changes,
        error: None,
    });
    let partial = record(true, false, at);
    m.on_sync(&SyncReport {
        record: &partial,
        snapshot: &snapshot,
        changes: &changes,
        error: None,
    });
    let text = m.encode();
    for wanted in [
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\",ip_family=\"IPv4\"} 0",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\",ip_family=\"IPv4\"} 1",
        "kubeproxy_sync_proxy_rules_duration_seconds_count 3",
    ] {
        assert!(line(&text, wanted), "{wanted:?} not in\n{text}");
    }
}

#[tokio::test]
async fn served_over_http() {
    let m = Metrics::new(SystemTime::now());
    m.inc_healthz(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::health::serve(
        listener,
        router(m),
        std::future::pending(),
    ));
    let reply = get(addr, "/metrics").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], CONTENT_TYPE);
    assert!(
        line(&reply.body, "kubeproxy_proxy_healthz_total{code=\"200\"} 1"),
        "{}",
        reply.body
    );
    assert!(reply.body.trim_end().ends_with("# EOF"));
}
