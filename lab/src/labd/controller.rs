//! The lab's EndpointSlice controller loop: whenever the store's resource version moves, it
//! recomputes every selector Service's slice ([`super::slices::desired`]) and creates, updates
//! or deletes the slices it manages so the store matches. Level-triggered and idempotent, so a
//! missed change is repaired by the next one and its own writes settle after one extra pass.
//! It holds the store in-process, so it needs no watch machinery.

use std::time::Duration;

use sluice_testbed::apiserver::TestApiServer;

use super::slices::{self, CONTROLLER, MANAGED_BY};

const POLL: Duration = Duration::from_millis(50);

/// Runs forever.
pub(crate) fn run(server: &TestApiServer) -> ! {
    let mut seen = u64::MAX;
    loop {
        let now = server.resource_version();
        if now != seen {
            if let Err(e) = reconcile(server) {
                eprintln!("endpointslice controller: {e:#}");
            }
            seen = now;
        }
        std::thread::sleep(POLL);
    }
}

/// One pass: makes the managed slices equal to the desired ones.
pub(crate) fn reconcile(server: &TestApiServer) -> anyhow::Result<()> {
    let services = server.list("services")?;
    let pods = server.list("pods")?;
    let mut want = slices::desired(&services, &pods);
    for have in server.list("endpointslices")? {
        if have["metadata"]["labels"][MANAGED_BY] != CONTROLLER {
            continue;
        }
        let key = slices::key(&have);
        match want.remove(&key) {
            None => drop(server.delete("endpointslices", &key.0, &key.1)?),
            Some(w) if slices::same(&have, &w) => {}
            Some(mut w) => {
                w["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"].clone();
                server.update(w)?;
            }
        }
    }
    for (_, slice) in want {
        server.create(slice)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(name: &str, ready: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
               "spec": {"nodeName": "node1", "containers": [{"name": "c"}]},
               "status": {"phase": "Running", "podIP": "10.244.1.2",
                          "conditions": [{"type": "Ready", "status": ready}]}})
    }

    fn endpoints(server: &TestApiServer) -> Value {
        server.get("endpointslices", "default", "web-lab").unwrap()["endpoints"].clone()
    }

    #[test]
    fn slices_follow_services_and_pods_in_the_store() {
        let server = TestApiServer::start();
        server.create(pod("a", "True")).unwrap();
        server
            .create(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
            .unwrap();
        // A slice someone else manages is left alone.
        server
            .create(
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "manual", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "endpoints": []}),
            )
            .unwrap();
        reconcile(&server).unwrap();
        assert_eq!(endpoints(&server)[0]["conditions"]["ready"], true);
        let version = server.resource_version();
        reconcile(&server).unwrap();
        assert_eq!(
            server.resource_version(),
            version,
            "a second pass writes nothing"
        );

        let mut a = server.get("pods", "default", "a").unwrap();
        a["status"] = pod("a", "False")["status"].clone();
        server.update_status(a).unwrap();
        reconcile(&server).unwrap();
        assert_eq!(endpoints(&server)[0]["conditions"]["ready"], false);

        server.delete("services", "default", "web").unwrap();
        reconcile(&server).unwrap();
        assert!(server.get("endpointslices", "default", "web-lab").is_err());
        assert!(server.get("endpointslices", "default", "manual").is_ok());
    }
}
