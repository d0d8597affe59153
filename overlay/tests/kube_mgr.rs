//! The kube subnet manager against the in-memory API server, through the real kube client.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use sluice_overlay::kube_mgr::{KubeMgrError, KubeSubnetManager};
use sluice_overlay::{AnnotationKeys, Lease, LeaseAttrs};
use sluice_test_apiserver::TestApiServer;

async fn client(server: &TestApiServer) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn add_node(server: &TestApiServer, name: &str, pod_cidr: Option<&str>) {
    let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    if let Some(c) = pod_cidr {
        node["spec"] = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    server.create(node).unwrap();
}

/// The next peer set, failing after five seconds.
async fn next<S: futures::Stream<Item = Vec<Lease>> + Unpin>(peers: &mut S) -> Vec<Lease> {
    tokio::time::timeout(Duration::from_secs(5), peers.next())
        .await
        .expect("a peer set within 5 s")
        .expect("the stream goes on")
}

fn attrs(public_ip: &str, mac: &str) -> LeaseAttrs {
    let value = format!(
        r#"{{"PublicIP":"{public_ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    );
    Lease::from_etcd("10.244.0.0-24", &value).unwrap().attrs
}

const NETWORK: &str = "10.244.0.0/16";

#[tokio::test]
async fn acquire_publishes_flannels_annotations_and_keeps_them_for_restarts() {
    let server = TestApiServer::start();
    add_node(&server, "n1", Some("10.244.1.0/24"));
    let mgr = KubeSubnetManager::new(client(&server).await, "n1", AnnotationKeys::default());
    assert_eq!(mgr.previous_attrs().await.unwrap(), None);

    let mine = attrs("192.168.0.11", "aa:aa:aa:aa:aa:01");
    let lease = mgr
        .acquire(Some(NETWORK.parse().unwrap()), None, &mine)
        .await
        .unwrap();
    assert_eq!(lease.subnet.unwrap().to_string(), "10.244.1.0/24");
    mgr.complete().await.unwrap();

    let node = server.get("nodes", "", "n1").unwrap();
    let ann = &node["metadata"]["annotations"];
    assert_eq!(ann["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
    assert_eq!(ann["flannel.alpha.coreos.com/backend-type"], "vxlan");
    assert_eq!(ann["flannel.alpha.coreos.com/public-ip"], "192.168.0.11");
    assert_eq!(
        ann["flannel.alpha.coreos.com/backend-data"],
        r#"{"VNI":1,"VtepMAC":"aa:aa:aa:aa:aa:01"}"#
    );
    let conditions = node["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False")
    );
    assert!(
        conditions.iter().any(|c| c["type"] == "Ready"),
        "conditions merged by type"
    );

    // A restarted daemon reads its MAC back.
    assert_eq!(mgr.previous_attrs().await.unwrap(), Some(mine));
}

#[tokio::test]
async fn unusable_pod_cidrs_are_clear_errors() {
    let server = TestApiServer::start();
    add_node(&server, "bare", None);
    add_node(&server, "far", Some("10.99.0.0/24"));
    let c = client(&server).await;
    let net = Some(NETWORK.parse().unwrap());
    let a = attrs("192.168.0.11", "aa:aa:aa:aa:aa:01");
    let e = KubeSubnetManager::new(c.clone(), "bare", AnnotationKeys::default())
        .acquire(net, None, &a)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), r#"node "bare" pod cidr not assigned"#);
    let e = KubeSubnetManager::new(c.clone(), "far", AnnotationKeys::default())
        .acquire(net, None, &a)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("outside the network 10.244.0.0/16"),
        "{e}"
    );
    let e = KubeSubnetManager::new(c, "ghost", AnnotationKeys::default())
        .acquire(net, None, &a)
        .await
        .unwrap_err();
    assert!(matches!(e, KubeMgrError::Api { .. }), "{e}");
    assert!(e.to_string().starts_with("get node ghost"), "{e}");
}

#[tokio::test]
async fn peers_are_complete_sets_that_follow_nodes() {
    let server = TestApiServer::start();
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        add_node(&server, name, Some(&format!("10.244.{}.0/24", i + 1)));
    }
    let c = client(&server).await;
    let net = Some(NETWORK.parse().unwrap());
    let keys = AnnotationKeys::default;
    let n1 = KubeSubnetManager::new(c.clone(), "n1", keys());
    let mut peers = Box::pin(n1.peers());
    let first: Vec<Lease> = next(&mut peers).await;
    assert!(first.is_empty(), "no node has published yet: {first:?}");

    for (i, name) in ["n1", "n2"].iter().enumerate() {
        let ip = format!("192.168.0.{}", 11 + i);
        let mac = format!("aa:aa:aa:aa:aa:0{}", i + 1);
        KubeSubnetManager::new(c.clone(), name, keys())
            .acquire(net, None, &attrs(&ip, &mac))
            .await
            .unwrap();
    }
    let mut set: Vec<Lease> = next(&mut peers).await;
    while set.is_empty() {
        set = next(&mut peers).await;
    }
    assert_eq!(set.len(), 1, "only n2: n1 is us, n3 unclaimed: {set:?}");
    assert_eq!(set[0].label(), "10.244.2.0-24");
    assert_eq!(set[0].attrs.public_ip.unwrap().to_string(), "192.168.0.12");

    Api::<Node>::all(c)
        .delete("n2", &Default::default())
        .await
        .unwrap();
    let mut set: Vec<Lease> = next(&mut peers).await;
    while !set.is_empty() {
        set = next(&mut peers).await;
    }
}
