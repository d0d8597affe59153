//! Watch details clients rely on: initial events, selector transitions, namespaces, streaming
//! lists.

mod common;

use common::{client, next, service};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use sluice_test_apiserver::TestApiServer;

fn kind_and_name(event: &WatchEvent<Service>) -> (&'static str, String) {
    match event {
        WatchEvent::Added(s) => ("ADDED", s.name_any()),
        WatchEvent::Modified(s) => ("MODIFIED", s.name_any()),
        WatchEvent::Deleted(s) => ("DELETED", s.name_any()),
        WatchEvent::Bookmark(_) => ("BOOKMARK", String::new()),
        WatchEvent::Error(e) => ("ERROR", e.message.clone()),
    }
}

#[tokio::test]
async fn version_zero_starts_with_synthetic_adds() {
    let server = TestApiServer::start();
    let api: Api<Service> = Api::namespaced(client(&server).await, "default");
    api.create(&PostParams::default(), &service("old", "x"))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        kind_and_name(&next(&mut stream).await.unwrap()),
        ("ADDED", "old".into())
    );
    api.create(&PostParams::default(), &service("new", "x"))
        .await
        .unwrap();
    assert_eq!(
        kind_and_name(&next(&mut stream).await.unwrap()),
        ("ADDED", "new".into())
    );
}

#[tokio::test]
async fn label_changes_move_objects_in_and_out_of_a_filtered_watch() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let other_ns: Api<Service> = Api::namespaced(client, "other");
    api.create(&PostParams::default(), &service("s", "web"))
        .await
        .unwrap();
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();

    let set_app = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    let pp = PatchParams::default();
    other_ns
        .create(&PostParams::default(), &service("elsewhere", "web"))
        .await
        .unwrap();
    api.patch("s", &pp, &set_app("db")).await.unwrap();
    api.patch("s", &pp, &set_app("db2")).await.unwrap();
    api.patch("s", &pp, &set_app("web")).await.unwrap();
    api.patch(
        "s",
        &pp,
        &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(kind_and_name(&next(&mut stream).await.unwrap()));
    }
    let expected: Vec<(&str, String)> = vec![
        ("DELETED", "s".into()),
        ("ADDED", "s".into()),
        ("MODIFIED", "s".into()),
    ];
    assert_eq!(
        seen, expected,
        "other namespaces and non-matching changes are invisible"
    );
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_end_bookmark() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &service("a", "a"))
        .await
        .unwrap();
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher::watcher(Api::<Service>::all(client), config).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitApply(s) if s.name_any() == "a"));
    assert!(matches!(next(&mut events).await.unwrap(), Event::InitDone));
    api.create(&PostParams::default(), &service("b", "b"))
        .await
        .unwrap();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Apply(s) if s.name_any() == "b"));
}
