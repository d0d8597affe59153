//! Direct store access from a plain `#[test]`: metadata, versions, status handling, allocation.

use serde_json::{Value, json};
use sluice_test_apiserver::TestApiServer;

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

#[test]
fn writes_version_objects_and_keep_status_apart() {
    let server = TestApiServer::start();
    let created = server.create(node("n1")).unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(rv(&created), server.resource_version());
    assert!(created["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(
        created["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(
        created["metadata"].get("namespace").is_none(),
        "nodes are cluster-scoped"
    );

    // A write that changes nothing is not a new version.
    let same = server.update(created.clone()).unwrap();
    assert_eq!(rv(&same), rv(&created));

    // The main resource cannot change status; the spec change bumps generation.
    let mut main = created.clone();
    main["spec"]["podCIDR"] = json!("10.244.9.0/24");
    main["status"] = json!({"conditions": []});
    let updated = server.update(main).unwrap();
    assert_eq!(updated["status"], created["status"]);
    assert_eq!(updated["metadata"]["generation"], 2);
    assert!(rv(&updated) > rv(&created));

    // The status subresource cannot change spec; generation stays.
    let mut status = updated.clone();
    status["spec"]["podCIDR"] = json!("1.2.3.0/24");
    status["status"]["conditions"][0]["status"] = json!("False");
    let with_status = server.update_status(status).unwrap();
    assert_eq!(with_status["spec"]["podCIDR"], "10.244.9.0/24");
    assert_eq!(with_status["status"]["conditions"][0]["status"], "False");
    assert_eq!(with_status["metadata"]["generation"], 2);

    // A stale version conflicts.
    let err = server.update(created).unwrap_err();
    assert_eq!((err.code(), err.reason()), (409, "Conflict"));
    let status = err.to_status();
    assert_eq!(
        (status["kind"].as_str(), status["status"].as_str()),
        (Some("Status"), Some("Failure"))
    );
}

#[test]
fn create_get_list_delete_and_errors() {
    let server = TestApiServer::start();
    let svc = |name: &str, ns: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}})
    };
    server.create(svc("b", "prod")).unwrap();
    server.create(svc("a", "prod")).unwrap();
    server.create(svc("z", "dev")).unwrap();
    assert_eq!(server.create(svc("a", "prod")).unwrap_err().code(), 409);
    let names: Vec<String> = server
        .list("services")
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["metadata"]["namespace"].as_str().unwrap(),
                s["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["dev/z", "prod/a", "prod/b"]);
    assert_eq!(
        server.get("services", "prod", "a").unwrap()["spec"]["clusterIP"],
        "10.96.0.3"
    );

    let gone = server.delete("services", "prod", "a").unwrap();
    assert!(
        rv(&gone) == server.resource_version(),
        "a delete is a new version"
    );
    let err = server.delete("services", "prod", "a").unwrap_err();
    assert_eq!((err.code(), err.reason()), (404, "NotFound"));
    assert_eq!(err.to_string(), "services \"a\" not found");

    // The released ClusterIP can be asked for again.
    let mut again = svc("c", "prod");
    again["spec"]["clusterIP"] = json!("10.96.0.3");
    server.create(again).unwrap();
    let mut taken = svc("d", "prod");
    taken["spec"]["clusterIP"] = json!("10.96.0.3");
    assert_eq!(server.create(taken).unwrap_err().code(), 422);
    assert!(server.get("nosuchthings", "", "x").is_err());
}

#[test]
fn kubeconfig_points_at_the_server() {
    let server = TestApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(&format!("server: {}", server.url())));
    assert!(server.url().starts_with("http://127.0.0.1:"));
}
