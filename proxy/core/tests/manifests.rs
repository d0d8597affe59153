//! `--manifests-dir`: good and bad files, edits and removals, followed with
//! inotify and with polling, through the real runner into the fake backend.

mod pipeline;

use std::path::Path;

use pipeline::{NODE, Pipeline, partial_ports, within};
use sluice_model::service::IpFamily;
use sluice_proxy_core::TrackerConfig;
use sluice_proxy_core::runner::Feed;
use sluice_proxy_core::source::{ManifestsSource, WatchMode};

fn service_yaml(name: &str, ip: &str, endpoints: &[&str]) -> String {
    let eps: String = (endpoints.iter())
        .map(|ep| format!("  - addresses: [\"{ep}\"]\n    conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: web}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: web, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

const JSON_SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "b", "namespace": "web"},
  "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80}]}}"#;

fn write(dir: &Path, name: &str, text: &str) {
    // Write-then-rename, as editors and ConfigMap updates do.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn port(svc: &str) -> String {
    format!("web/{svc}:http")
}

fn populate(dir: &Path) {
    write(
        dir,
        "a.yaml",
        &service_yaml("a", "10.96.0.10", &["10.1.0.1"]),
    );
    write(dir, "b.json", JSON_SERVICE);
    write(
        dir,
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nspec: [unclosed\n",
    );
    write(dir, "notes.txt", "not a manifest");
}

#[test]
fn bad_files_are_reported_by_name_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    write(dir.path(), "dup.yml", &service_yaml("a", "10.96.0.99", &[]));
    let feed = Feed::new([TrackerConfig::new(IpFamily::V4, NODE)]);
    let mut source = ManifestsSource::new(dir.path(), NODE);
    let report = source.scan(&feed).unwrap();
    assert_eq!(report.files, 4, "notes.txt is not a manifest");
    let problems: Vec<(String, &str)> = (report.problems.iter())
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                &*p.reason,
            )
        })
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0].0, "bad.yaml");
    assert!(problems[0].1.starts_with("document 1: "), "{problems:?}");
    assert_eq!(problems[1].0, "dup.yml");
    assert!(problems[1].1.contains("already defined in"), "{problems:?}");
    let names = feed
        .with_state(IpFamily::V4, |s| {
            let (snap, _) = s.sync();
            let ports: Vec<_> = snap.service_ports().map(|p| p.name.to_string()).collect();
            ports
        })
        .unwrap();
    assert_eq!(names, [port("a"), port("b")]);
    assert_eq!(
        source.scan(&feed).unwrap().problems,
        vec![],
        "reported once"
    );
}

/// All or nothing: a file whose last document is bad feeds none of the good ones before it
/// (the file is parsed whole before anything of it is fed, then again object by object),
/// and a good file that turns so keeps its last good objects.
#[test]
fn a_bad_document_after_good_ones_feeds_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = service_yaml("c", "10.96.0.12", &["10.1.0.3"]);
    write(
        dir.path(),
        "c.yaml",
        &format!(
            "{good}---
kind: [unclosed\n"
        ),
    );
    let feed = Feed::new([TrackerConfig::new(IpFamily::V4, NODE)]);
    let mut source = ManifestsSource::new(dir.path(), NODE);
    let report = source.scan(&feed).unwrap();
    assert_eq!((report.parsed, report.applied), (1, 0), "{report:?}");
    assert!(
        report.problems[0].reason.starts_with("document 3: "),
        "{report:?}"
    );
    let ports = |feed: &Feed| {
        feed.with_state(IpFamily::V4, |s| {
            let (snap, _) = s.sync();
            let ports: Vec<_> = snap.service_ports().map(|p| p.name.to_string()).collect();
            ports
        })
        .unwrap()
    };
    assert!(ports(&feed).is_empty());

    write(dir.path(), "c.yaml", &good);
    assert_eq!(source.scan(&feed).unwrap().applied, 2);
    assert_eq!(ports(&feed), [port("c")]);
    write(
        dir.path(),
        "c.yaml",
        &format!("{good}---\nkind: [unclosed\n"),
    );
    let report = source.scan(&feed).unwrap();
    assert_eq!((report.applied, report.deleted), (0, 0), "{report:?}");
    assert_eq!(ports(&feed), [port("c")]);
}

/// Issue 14: with nothing changed, a scan reads no file, parses nothing, decides no object
/// again and feeds nothing (it used to re-diff every object on every stamp poll); a change
/// costs in proportion to the files it touches, and removing the file that won a duplicate
/// reads the other file again to feed its version.
#[test]
fn a_scan_with_no_changed_stamp_parses_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    write(dir.path(), "dup.yml", &service_yaml("a", "10.96.0.99", &[]));
    let feed = Feed::new([TrackerConfig::new(IpFamily::V4, NODE)]);
    let mut source = ManifestsSource::new(dir.path(), NODE);
    let first = source.scan(&feed).unwrap();
    assert_eq!((first.parsed, first.applied), (4, 3), "{first:?}");
    let pending = |feed: &Feed| {
        feed.with_state(IpFamily::V4, |s| {
            let (snap, changes) = s.sync();
            let ip = snap.service_ports().find(|p| p.name.name.as_ref() == "a");
            (
                changes.ports.len(),
                ip.map(|p| p.cluster_ips[0].to_string()),
            )
        })
        .unwrap()
    };
    assert_eq!(pending(&feed), (2, Some("10.96.0.10".to_owned())));
    for _ in 0..3 {
        let idle = source.scan(&feed).unwrap();
        assert_eq!(
            (idle.parsed, idle.examined, idle.applied, idle.deleted),
            (0, 0, 0, 0),
            "{idle:?}"
        );
        assert_eq!(pending(&feed).0, 0, "nothing fed");
    }
    write(
        dir.path(),
        "b.json",
        &JSON_SERVICE.replace("10.96.0.11", "10.96.0.12"),
    );
    let one = source.scan(&feed).unwrap();
    assert_eq!(
        (one.parsed, one.examined, one.applied, one.deleted),
        (1, 1, 1, 0),
        "{one:?}"
    );
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let uncovered = source.scan(&feed).unwrap();
    assert_eq!(
        (uncovered.parsed, uncovered.applied, uncovered.deleted),
        (1, 2, 0),
        "dup.yml read again for its Service and slice: {uncovered:?}"
    );
    assert_eq!(
        pending(&feed),
        (2, Some("10.96.0.99".to_owned())),
        "b and a changed"
    );
}

async fn follow(mode: WatchMode) {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let p = Pipeline::start();
    let source = ManifestsSource::new(dir.path(), NODE).with_mode(mode);
    tokio::spawn(source.run(p.feed.clone()));
    within(p.until("a and b", |ports| ports.len() == 2)).await;
    let first = p.settled().await;
    assert!(first.len() == 1 && first[0].full && first[0].endpoints == 1);

    write(
        dir.path(),
        "a.yaml",
        &service_yaml("a", "10.96.0.10", &["10.1.0.1", "10.1.0.2"]),
    );
    within(p.until("a edited", |ports| ports[0].1.len() == 2)).await;
    assert_eq!(partial_ports(&p.settled().await), [port("a")].into());

    write(
        dir.path(),
        "bad.yaml",
        &service_yaml("c", "10.96.0.12", &["10.1.0.3"]),
    );
    within(p.until("bad.yaml fixed", |ports| ports.len() == 3)).await;
    assert_eq!(partial_ports(&p.settled().await), [port("c")].into());

    std::fs::remove_file(dir.path().join("b.json")).unwrap();
    within(p.until("b removed", |ports| ports.len() == 2)).await;
    assert_eq!(partial_ports(&p.settled().await), [port("b")].into());

    write(dir.path(), "a.yaml", "kind: [\n");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        p.settled().await,
        vec![],
        "a file turned bad keeps its objects"
    );
    let programmed: Vec<String> = p.programmed().into_iter().map(|(n, _)| n).collect();
    assert_eq!(programmed, [port("a"), port("c")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_edits_and_removals_with_inotify() {
    follow(WatchMode::Inotify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_edits_and_removals_by_polling() {
    follow(WatchMode::Poll).await;
}

/// Issue 15 bug 5 and 7: a manifest "file" that is a FIFO, a directory or a symlink loop was
/// skipped without a word, and a huge file was read whole before being rejected. Each is now
/// skipped with its reason (once, not on every scan), a huge file is refused after reading
/// at most the limit, and the good files still program.
#[test]
fn unreadable_entries_are_reported_and_huge_files_refused_unread() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.yaml", &service_yaml("a", "10.96.0.10", &["10.1.0.1"]));
    std::fs::create_dir(d.join("dir.yaml")).unwrap();
    let fifo = d.join("fifo.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    symlink("loop.yaml", d.join("loop.yaml")).unwrap();
    let huge = std::fs::File::create(d.join("huge.yaml")).unwrap();
    huge.set_len(1 << 30).unwrap(); // sparse: 1 GiB of zeros
    let feed = Feed::new([TrackerConfig::new(IpFamily::V4, NODE)]);
    let mut source = ManifestsSource::new(d, NODE);
    let report = source.scan(&feed).unwrap();
    let mut problems: Vec<(String, String)> = (report.problems.iter())
        .map(|p| {
            let name = p.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, p.reason.clone())
        })
        .collect();
    problems.sort();
    let names: Vec<&str> = problems.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["dir.yaml", "fifo.yaml", "huge.yaml", "loop.yaml"],
        "{problems:?}"
    );
    assert!(problems[0].1.contains("a directory"), "{problems:?}");
    assert!(problems[1].1.contains("a FIFO"), "{problems:?}");
    assert!(problems[2].1.contains("larger than"), "{problems:?}");
    assert!(problems[3].1.contains("symbolic links"), "{problems:?}");
    let ports = feed
        .with_state(IpFamily::V4, |s| {
            let (snap, _) = s.sync();
            let ports: Vec<_> = snap.service_ports().map(|p| p.name.to_string()).collect();
            ports
        })
        .unwrap();
    assert_eq!(ports, [port("a")]);
    assert_eq!(
        source.scan(&feed).unwrap().problems,
        vec![],
        "reported once"
    );
}
