//! The Kubernetes source against the in-memory API server, through the real
//! runner into the fake backend: the backend sees exactly the changed Service
//! ports, nothing before both initial lists, and a 410 re-list converges with
//! nothing dropped or doubled.

mod pipeline;

use pipeline::{NODE, Pipeline, partial_ports, within};
use serde_json::{Value, json};
use sluice_proxy_core::source::{KubeSource, client};
use sluice_test_apiserver::TestApiServer;

fn service(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]},
    })
}

fn slice(service: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = (ips.iter())
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": NODE}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn port(svc: &str) -> String {
    format!("default/{svc}:p80")
}

fn ports(svcs: &[&str]) -> std::collections::BTreeSet<String> {
    svcs.iter().map(|s| port(s)).collect()
}

/// Starts the pipeline and the kube source against `server`.
async fn start(server: &TestApiServer) -> (Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let client = client(Some(&kubeconfig), None).await.unwrap();
    let pipeline = Pipeline::start();
    let source = KubeSource::new(client, NODE, None);
    tokio::spawn(source.run(pipeline.feed.clone()));
    (pipeline, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_exactly_the_changed_service_ports() {
    let server = TestApiServer::start();
    server.create(service("a", json!({}))).unwrap();
    server
        .create(slice("a", &["10.1.0.1", "10.1.0.2"]))
        .unwrap();
    let other = json!({"service.kubernetes.io/service-proxy-name": "other"});
    server.create(service("foreign", other)).unwrap();
    server.create(slice("foreign", &["10.1.0.7"])).unwrap();
    let (p, _dir) = start(&server).await;
    within(p.until("a programmed", |ports| ports.len() == 1)).await;
    let first = p.settled().await;
    assert!(first[0].full && first[0].ok, "{first:?}");
    assert_eq!(
        first[0].ports.len(),
        1,
        "the foreign Service is not watched"
    );
    assert_eq!(first[0].endpoints, 2, "no apply before both initial lists");

    server.create(service("b", json!({}))).unwrap();
    server.create(slice("b", &["10.1.0.3"])).unwrap();
    within(p.until("b programmed", |ports| {
        ports.len() == 2 && !ports[1].1.is_empty()
    }))
    .await;
    assert_eq!(partial_ports(&p.settled().await), ports(&["b"]));

    let mut a1 = server.get("endpointslices", "default", "a-1").unwrap();
    let new = json!({"addresses": ["10.1.0.4"], "conditions": {"ready": true}});
    a1["endpoints"].as_array_mut().unwrap().push(new);
    server.update(a1).unwrap();
    within(p.until("a has 3 endpoints", |ports| ports[0].1.len() == 3)).await;
    assert_eq!(partial_ports(&p.settled().await), ports(&["a"]));

    let mut b = server.get("services", "default", "b").unwrap();
    b["metadata"]["labels"] = json!({"tier": "web"});
    server.update(b).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(p.settled().await, vec![], "a label change programs nothing");

    server.delete("endpointslices", "default", "b-1").unwrap();
    server.delete("services", "default", "b").unwrap();
    within(p.until("b removed", |ports| ports.len() == 1)).await;
    assert_eq!(partial_ports(&p.settled().await), ports(&["b"]));
    assert_eq!(p.programmed()[0].0, port("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_410_converges_without_duplicates() {
    let server = TestApiServer::start();
    for svc in ["a", "b"] {
        server.create(service(svc, json!({}))).unwrap();
    }
    server.create(slice("a", &["10.1.0.1"])).unwrap();
    server.create(slice("b", &["10.1.0.2"])).unwrap();
    let (p, _dir) = start(&server).await;
    within(p.until("a and b", |ports| ports.len() == 2)).await;
    p.settled().await;

    // Changes the watches never deliver: the history is compacted and the
    // streams closed, so the watchers get 410 and list again.
    server.pause_watches();
    server.create(service("c", json!({}))).unwrap();
    server
        .create(slice("c", &["10.1.0.3", "10.1.0.5"]))
        .unwrap();
    server.delete("endpointslices", "default", "b-1").unwrap();
    server.delete("services", "default", "b").unwrap();
    let mut a1 = server.get("endpointslices", "default", "a-1").unwrap();
    a1["endpoints"][0]["addresses"] = json!(["10.1.0.9"]);
    server.update(a1).unwrap();
    server.compact();
    server.close_watches();
    server.resume_watches();

    let expected = vec![
        (port("a"), vec!["10.1.0.9:8080".to_owned()]),
        (
            port("c"),
            vec!["10.1.0.3:8080".to_owned(), "10.1.0.5:8080".to_owned()],
        ),
    ];
    within(p.until("converged", |ports| ports == expected.as_slice())).await;
    assert_eq!(partial_ports(&p.settled().await), ports(&["a", "b", "c"]));

    // Another re-list with nothing changed programs nothing.
    server.compact();
    server.close_watches();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(p.settled().await, vec![]);
    assert_eq!(p.programmed(), expected);
}
