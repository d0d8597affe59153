//! kube's `Api` against the server: CRUD, status, patches, conflicts, selectors, EndpointSlices.

mod common;

use common::{client, service};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Error, ResourceExt};
use serde_json::json;
use sluice_test_apiserver::TestApiServer;

fn api_code<T: std::fmt::Debug>(result: Result<T, Error>) -> (u16, String) {
    match result {
        Err(Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"zone": "a"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}}))
    .unwrap()
}

#[tokio::test]
async fn node_status_strategic_patch_like_flannel() {
    let server = TestApiServer::start();
    let nodes: Api<Node> = Api::all(client(&server).await);
    nodes
        .create(&PostParams::default(), &node("n1"))
        .await
        .unwrap();
    let patch = Patch::Strategic(json!({
        "metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": "192.168.1.10"}},
        "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp"}]},
    }));
    let patched = nodes
        .patch_status("n1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(
        patched
            .annotations()
            .get("flannel.alpha.coreos.com/public-ip")
            .map(String::as_str),
        Some("192.168.1.10")
    );
    let conditions = patched.status.unwrap().conditions.unwrap();
    let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Ready", "NetworkUnavailable"],
        "conditions merge by type"
    );

    // The main resource keeps the stored status; generation only moves with the spec.
    let mut stale = nodes.get("n1").await.unwrap();
    stale.status = None;
    stale.spec.get_or_insert_default().pod_cidr = Some("10.244.1.0/24".into());
    let replaced = nodes
        .replace("n1", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().conditions.unwrap().len(), 2);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        api_code(nodes.replace("n1", &PostParams::default(), &stale).await).0,
        409
    );
}

#[tokio::test]
async fn service_patches_conflicts_and_allocation() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let created = svcs.create(&pp, &service("web", "web")).await.unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.2"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(created.uid().is_some() && created.creation_timestamp().is_some());
    assert_eq!(
        api_code(svcs.create(&pp, &service("web", "web")).await),
        (409, "AlreadyExists".into())
    );

    let merge = Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}}));
    let merged = svcs
        .patch("web", &PatchParams::default(), &merge)
        .await
        .unwrap();
    assert_eq!(
        merged.labels().get("tier").map(String::as_str),
        Some("front")
    );
    let strategic = Patch::Strategic(json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}));
    let two = svcs
        .patch("web", &PatchParams::default(), &strategic)
        .await
        .unwrap();
    assert_eq!(
        two.spec.unwrap().ports.unwrap().len(),
        2,
        "ports merge by port"
    );
    // kube's `Patch::Json` needs json-patch 4; send the same request by hand.
    let ops = json!([
        {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
        {"op": "remove", "path": "/metadata/labels/tier"},
    ]);
    let request = axum::http::Request::patch("/api/v1/namespaces/default/services/web")
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(&ops).unwrap())
        .unwrap();
    let jp: Service = client.request(request).await.unwrap();
    assert_eq!(
        jp.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    assert!(!jp.labels().contains_key("tier"));
    assert_eq!(
        jp.spec.unwrap().cluster_ip.as_deref(),
        Some("10.96.0.2"),
        "allocation survives updates"
    );

    let apply =
        Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}));
    let (code, reason) = api_code(svcs.patch("web", &PatchParams::apply("test"), &apply).await);
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));

    // `created` carries the first resourceVersion: replacing with it is a conflict.
    let (code, reason) = api_code(svcs.replace("web", &pp, &created).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    let deleted = svcs.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().map(|s| s.name_any()).as_deref(), Some("web"));
    assert_eq!(api_code(svcs.get("web").await), (404, "NotFound".into()));
    assert_eq!(
        api_code(svcs.delete("web", &DeleteParams::default()).await).0,
        404
    );
    let again = svcs.create(&pp, &service("again", "x")).await.unwrap();
    assert_eq!(again.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.3"));
}

#[tokio::test]
async fn selectors_generate_name_and_endpointslices() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let pp = PostParams::default();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        svcs.create(&pp, &service(name, app)).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<Service>| {
        list.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            svcs.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            svcs.list(&ListParams::default().labels("app notin (web)"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            svcs.list(&ListParams::default().fields("metadata.name!=a"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    let both = ListParams::default()
        .labels("app in (web,db)")
        .fields("metadata.name=c");
    assert_eq!(names(svcs.list(&both).await.unwrap()), ["c"]);

    let mut generated = service("", "gen");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let made = svcs.create(&pp, &generated).await.unwrap();
    assert!(
        made.name_any().starts_with("gen-") && made.name_any().len() == 9,
        "{}",
        made.name_any()
    );

    for (ns, name) in [("a", "web-1"), ("a", "web-2"), ("b", "db-1")] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name.split('-').next()}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.1"], "conditions": {"ready": true}}],
            "ports": [{"port": 80}],
        }))
        .unwrap();
        Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .create(&pp, &slice)
            .await
            .unwrap();
    }
    let in_a = Api::<EndpointSlice>::namespaced(client.clone(), "a")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(in_a.items.len(), 2);
    let all = Api::<EndpointSlice>::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    let web = all
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 2);
    assert_eq!(web.items[0].metadata.namespace.as_deref(), Some("a"));
    let ns_field = all
        .list(&ListParams::default().fields("metadata.namespace=b"))
        .await
        .unwrap();
    assert_eq!(ns_field.items.len(), 1);
}

#[tokio::test]
async fn discovery_version_and_unknown_paths() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "discovery.k8s.io",
            "events.k8s.io",
            "apps",
            "rbac.authorization.k8s.io"
        ]
    );
    let core = client.list_core_api_resources("v1").await.unwrap();
    let svc = core
        .resources
        .iter()
        .find(|r| r.name == "services")
        .unwrap();
    assert_eq!(svc.short_names.as_deref(), Some(&["svc".to_owned()][..]));
    assert!(core.resources.iter().any(|r| r.name == "nodes/status"));
    let request = axum::http::Request::get("/openapi/v2")
        .body(Vec::new())
        .unwrap();
    let (code, reason) = api_code(client.request_text(request).await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

/// Lists are paginated as the real server paginates them (kube's watcher asks for 500 a
/// page): `limit` objects in namespace/name order, a `continue` token and the count left,
/// every page at the first page's version.
#[tokio::test]
async fn lists_come_in_pages_with_continue_tokens() {
    let server = TestApiServer::start();
    let services: Api<Service> = Api::namespaced(client(&server).await, "default");
    for i in 0..7 {
        let name = format!("s{i}");
        let svc = service(&name, "web");
        services.create(&PostParams::default(), &svc).await.unwrap();
    }
    let mut names = Vec::new();
    let mut versions = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = services.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|s| s.name_any()));
        versions.push(page.metadata.resource_version.clone());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                assert!(page.metadata.remaining_item_count.unwrap() > 0);
                lp = lp.continue_token(&token);
            }
            None => break,
        }
    }
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(versions.len(), 3);
    assert!(versions.iter().all(|v| *v == versions[0]));
    assert_eq!(
        services
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        7
    );
    let bad = services
        .list(&ListParams::default().continue_token("zz"))
        .await;
    assert_eq!(api_code(bad).0, 400);
}
