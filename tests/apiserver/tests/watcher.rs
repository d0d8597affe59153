//! kube-runtime watchers and reflectors against the server: ordering, 410 and re-list.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{client, eventually, next, service};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::params::VersionMatch;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use sluice_test_apiserver::{Config, TestApiServer};

fn name_of(event: &Event<Service>) -> (&'static str, String) {
    match event {
        Event::Init => ("Init", String::new()),
        Event::InitApply(s) => ("InitApply", s.name_any()),
        Event::InitDone => ("InitDone", String::new()),
        Event::Apply(s) => ("Apply", s.name_any()),
        Event::Delete(s) => ("Delete", s.name_any()),
    }
}

#[tokio::test]
async fn watcher_sees_adds_updates_and_deletes_in_order() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    api.create(&pp, &service("before", "x")).await.unwrap();

    let mut events =
        watcher::watcher(Api::<Service>::all(client), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(name_of(&next(&mut events).await.unwrap()));
    }
    let created = api.create(&pp, &service("web", "web")).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.3")
    );
    let patch = Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}}));
    api.patch("web", &PatchParams::default(), &patch)
        .await
        .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let mut applied = None;
    for _ in 0..3 {
        let event = next(&mut events).await.unwrap();
        if let Event::Apply(s) = &event {
            applied = Some(s.clone());
        }
        seen.push(name_of(&event));
    }
    let expected = [
        ("Init", ""),
        ("InitApply", "before"),
        ("InitDone", ""),
        ("Apply", "web"),
        ("Apply", "web"),
        ("Delete", "before"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, n)| (*k, (*n).to_owned()))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        applied.unwrap().labels().get("tier").map(String::as_str),
        Some("front")
    );
}

/// name -> resourceVersion, from the server's own store.
fn server_state(server: &TestApiServer) -> BTreeMap<String, String> {
    let items = server.list("services").unwrap();
    items
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_owned(),
                s["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// Runs a reflector in the background; returns its store and a count of 410 errors seen.
fn spawn_reflector(
    client: kube::Client,
    config: watcher::Config,
) -> (
    reflector::Store<Service>,
    tokio::sync::watch::Receiver<usize>,
) {
    let (reader, writer) = reflector::store::<Service>();
    let (gone_tx, gone_rx) = tokio::sync::watch::channel(0_usize);
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<Service>::all(client), config),
    );
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            if let Err(watcher::Error::WatchError(status)) = item
                && status.code == 410
            {
                gone_tx.send_modify(|n| *n += 1);
            }
        }
    });
    (reader, gone_rx)
}

async fn assert_store_matches(server: &TestApiServer, reader: &reflector::Store<Service>) {
    let state = |r: &reflector::Store<Service>| -> BTreeMap<String, String> {
        r.state()
            .iter()
            .map(|s| (s.name_any(), s.resource_version().unwrap_or_default()))
            .collect()
    };
    eventually("reflector store == server state", || {
        state(reader) == server_state(server)
    })
    .await;
}

#[tokio::test]
async fn reflector_relists_after_compaction_during_a_stalled_watch() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for name in ["a", "b", "c"] {
        api.create(&pp, &service(name, name)).await.unwrap();
    }
    let (reader, mut gone) = spawn_reflector(client, watcher::Config::default());
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    server.pause_watches();
    let patch = Patch::Merge(json!({"metadata": {"labels": {"changed": "yes"}}}));
    api.patch("a", &PatchParams::default(), &patch)
        .await
        .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    api.create(&pp, &service("d", "d")).await.unwrap();
    server.compact();
    server.close_watches();
    server.resume_watches();

    tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_store_matches(&server, &reader).await;
    let a = reader
        .state()
        .into_iter()
        .find(|s| s.name_any() == "a")
        .unwrap();
    assert_eq!(a.labels().get("changed").map(String::as_str), Some("yes"));
    assert_eq!(
        reader.state().len(),
        3,
        "a, c, d: no duplicates, no leftovers"
    );

    // Changes after the re-list still flow through the new watch.
    api.delete("c", &DeleteParams::default()).await.unwrap();
    assert_store_matches(&server, &reader).await;
}

#[tokio::test]
async fn reflector_relists_when_the_bounded_history_overflows() {
    let config = Config {
        history_size: 3,
        ..Config::default()
    };
    let server = TestApiServer::start_with(config).unwrap();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &service("keep", "x"))
        .await
        .unwrap();
    let (reader, mut gone) = spawn_reflector(client, watcher::Config::default());
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    server.pause_watches();
    for i in 0..5 {
        api.create(&PostParams::default(), &service(&format!("s{i}"), "y"))
            .await
            .unwrap();
    }
    server.close_watches();
    server.resume_watches();
    tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_store_matches(&server, &reader).await;
    assert_eq!(reader.state().len(), 6);
}

#[tokio::test]
async fn raw_watch_gets_expired_error_bookmarks_and_timeouts() {
    let server = TestApiServer::start_with(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .unwrap();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &service("a", "a"))
        .await
        .unwrap();
    let old_rv = created.resource_version().unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next(&mut stream).await.unwrap(), WatchEvent::Deleted(s) if s.name_any() == "a")
    );

    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    let exact = ListParams {
        resource_version: Some(old_rv.clone()),
        version_match: Some(VersionMatch::Exact),
        ..ListParams::default()
    };
    match api.list(&exact).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }

    let current = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams {
        bookmarks: true,
        ..WatchParams::default()
    }
    .timeout(1);
    let mut stream = api.watch(&wp, &current).await.unwrap().boxed();
    assert!(
        matches!(next(&mut stream).await.unwrap(), WatchEvent::Bookmark(b) if b.metadata.resource_version == current)
    );
    let started = std::time::Instant::now();
    while tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .unwrap()
        .is_some()
    {}
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timeoutSeconds=1 ends the stream"
    );
}

#[tokio::test]
async fn reflector_relists_when_a_timed_out_watch_resumes_from_a_compacted_version() {
    let server = TestApiServer::start();
    let client = client(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    api.create(&pp, &service("a", "a")).await.unwrap();
    // timeoutSeconds=1: the server ends each watch after a second and kube resumes it.
    let (reader, mut gone) = spawn_reflector(client, watcher::Config::default().timeout(1));
    tokio::time::timeout(Duration::from_secs(5), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    server.pause_watches();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.create(&pp, &service("b", "b")).await.unwrap();
    server.compact();
    tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
    server.resume_watches();
    assert_store_matches(&server, &reader).await;
    let names: Vec<String> = reader.state().iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["b"]);
}
