//! Runner timing on a paused tokio clock: each test advances virtual time
//! with `sleep` and checks what the fake backend received by then.

use std::sync::Mutex;
use std::time::Duration;

use sluice_model::service::{IpFamily, ServiceName};
use tokio::sync::oneshot;
use tokio::time::sleep;

use super::*;
use crate::TrackerConfig;
use crate::backend::{Applied, FakeBackend, FakeLog};
use crate::fixture::{port_name, svc};

struct Harness {
    feed: Feed,
    log: FakeLog,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<FakeBackend>,
    reports: Arc<Recorder>,
}

#[derive(Default)]
struct Recorder(Mutex<Vec<SyncRecord>>);

impl SyncObserver for Recorder {
    fn on_sync(&self, report: &SyncReport<'_>) {
        self.0.lock().unwrap().push(report.record.clone());
    }
}

fn start(initialized: bool) -> Harness {
    start_with(initialized, FakeBackend::new())
}

fn start_with(initialized: bool, backend: FakeBackend) -> Harness {
    let feed = Feed::new([TrackerConfig::new(IpFamily::V4, "n1")]);
    let log = backend.log();
    let mut runner = Runner::new(feed.clone(), backend, RunnerConfig::default());
    let reports = Arc::new(Recorder::default());
    runner.observe(reports.clone());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    if initialized {
        feed.services_listed();
        feed.slices_listed();
    }
    Harness {
        feed,
        log,
        stop: Some(stop),
        task,
        reports,
    }
}

impl Harness {
    fn add(&self, name: &str, ip: &str) {
        let service = ServiceName::new("ns", name);
        self.feed
            .update(|state| state.update_service(&service, &[svc(name, ip)]));
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn partial(ports: &[&str]) -> Applied {
    Applied {
        family: IpFamily::V4,
        full: false,
        ports: ports.iter().map(|p| port_name(p)).collect(),
        endpoints: 0,
        replaced: BTreeSet::new(),
        ok: true,
    }
}

#[tokio::test(start_paused = true)]
async fn no_sync_before_both_initial_lists() {
    let h = start(false);
    h.add("a", "10.0.0.1");
    sleep(Duration::from_secs(60)).await;
    assert_eq!(h.log.apply_count(), 0);
    assert!(!h.feed.status().borrow().initialized);
    h.feed.services_listed();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(h.log.apply_count(), 0, "EndpointSlices not listed yet");
    h.feed.slices_listed();
    sleep(Duration::from_millis(10)).await;
    let applies = h.log.take_applies();
    assert_eq!(applies.len(), 1);
    assert!(applies[0].full && applies[0].ports.contains(&port_name("a")));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bursts_coalesce_within_min_sync_period() {
    let h = start(true);
    sleep(Duration::from_millis(10)).await;
    assert!(h.log.take_applies()[0].full, "first sync is full");
    h.add("a", "10.0.0.1");
    sleep(Duration::from_millis(300)).await;
    h.add("b", "10.0.0.2");
    sleep(Duration::from_millis(300)).await;
    h.add("c", "10.0.0.3");
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.log.apply_count(),
        0,
        "within min_sync_period of the first"
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(h.log.take_applies(), vec![partial(&["a", "b", "c"])]);
    // A lone change after a quiet period is applied at once.
    sleep(Duration::from_secs(5)).await;
    h.add("d", "10.0.0.4");
    sleep(Duration::from_millis(1)).await;
    assert_eq!(h.log.take_applies(), vec![partial(&["d"])]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn periodic_full_sync() {
    let h = start(true);
    h.add("a", "10.0.0.1");
    sleep(Duration::from_millis(10)).await;
    assert_eq!(h.log.take_applies().len(), 1);
    sleep(Duration::from_millis(29_900)).await;
    assert_eq!(h.log.apply_count(), 0);
    sleep(Duration::from_millis(200)).await;
    let applies = h.log.take_applies();
    assert_eq!(applies.len(), 1);
    assert!(applies[0].full && applies[0].ports.contains(&port_name("a")));
    sleep(Duration::from_secs(30)).await;
    assert_eq!(h.log.take_applies().len(), 1, "every sync_period");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failed_apply_retries_with_full_sync_and_backoff() {
    let h = start(true);
    sleep(Duration::from_millis(10)).await;
    h.log.take_applies();
    let status = h.feed.status();
    sleep(Duration::from_secs(2)).await;
    // The refused partial apply is retried as one full apply of everything, which fails too;
    // then one full apply without the changed Services (isolation, see `isolate`) fails as
    // well: the failure is not a Service's.
    h.log.fail_next(5);
    h.add("a", "10.0.0.1");
    sleep(Duration::from_millis(10)).await;
    let failed = h.log.take_applies();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(!failed[0].ok && !failed[0].full);
    assert!(!failed[1].ok && failed[1].full && failed[1].ports.contains(&port_name("a")));
    assert!(!failed[2].ok && failed[2].full && failed[2].ports.is_empty());
    assert!(
        status.borrow().update_pending(),
        "the change is still queued"
    );
    // First retry after 1 s (fails again), second after 2 more seconds.
    sleep(Duration::from_millis(1_000)).await;
    let retry = h.log.take_applies();
    assert!(
        retry.len() == 2 && retry[0].full && !retry[0].ok,
        "{retry:?}"
    );
    sleep(Duration::from_millis(1_900)).await;
    assert_eq!(h.log.apply_count(), 0, "backoff doubled");
    sleep(Duration::from_millis(200)).await;
    let retry = h.log.take_applies();
    assert!(retry.len() == 1 && retry[0].full && retry[0].ok);
    assert!(retry[0].ports.contains(&port_name("a")));
    let s = status.borrow().clone();
    assert!(!s.update_pending());
    assert_eq!((s.syncs_total, s.failed_syncs_total), (4, 2));
    assert!(s.last_synced.is_some() && s.last_sync.as_ref().unwrap().full);
    let records = h.reports.0.lock().unwrap().clone();
    assert_eq!(records.iter().filter(|r| !r.ok).count(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn status_tracks_queued_updates_and_pending_counts() {
    let h = start(false);
    h.add("a", "10.0.0.1");
    let status = h.feed.status();
    {
        let s = status.borrow();
        let v4 = &s.families[&IpFamily::V4];
        assert!(v4.queued_since.is_some() && s.last_queued.is_some());
        assert_eq!(v4.service_changes_pending, 1);
        assert!(s.healthy(SystemTime::now(), Duration::from_secs(60)));
        let late = SystemTime::now() + Duration::from_secs(61);
        assert!(!s.healthy(late, Duration::from_secs(60)));
    }
    h.feed.services_listed();
    h.feed.slices_listed();
    sleep(Duration::from_millis(10)).await;
    let s = status.borrow().clone();
    let v4 = &s.families[&IpFamily::V4];
    assert_eq!((v4.queued_since, v4.service_changes_pending), (None, 0));
    assert_eq!(s.service_changes_total, 1);
    assert!(v4.last_synced.is_some() && s.node.eligible());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_backend_task_runs_between_syncs_and_can_ask_for_a_full_sync() {
    let h = start_with(true, FakeBackend::ticking(Duration::from_secs(5)));
    h.add("a", "10.0.0.1");
    sleep(Duration::from_millis(100)).await;
    assert_eq!(h.log.take_applies().len(), 1, "the first, full sync");
    sleep(Duration::from_secs(11)).await;
    assert_eq!(h.log.ticks(), 2, "every 5 s");
    assert!(
        h.log.take_applies().is_empty(),
        "a quiet tick syncs nothing"
    );
    h.log.want_full_sync();
    sleep(Duration::from_secs(5)).await;
    let applies = h.log.take_applies();
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert!(
        applies[0].full,
        "a tick that asks for it gets a full sync at once"
    );
    h.stop().await;
}

/// Issue 15 bug 3, generalised: a Service the backend refuses fails the sync; the runner
/// finds it, programs the rest without it, counts the sync as a success (health stays good),
/// keeps it out of later syncs and tries it again once it changes.
#[tokio::test(start_paused = true)]
async fn a_service_the_backend_refuses_is_left_out_and_the_rest_programmed() {
    let h = start(true);
    sleep(Duration::from_millis(10)).await;
    h.log.take_applies();
    let status = h.feed.status();
    h.add("a", "10.0.0.1");
    sleep(Duration::from_secs(2)).await;
    h.log.refuse(ServiceName::new("ns", "bad"));
    h.add("b", "10.0.0.2");
    h.add("bad", "10.0.0.3");
    h.add("c", "10.0.0.4");
    sleep(Duration::from_millis(10)).await;
    let programmed = h.log.programmed(IpFamily::V4);
    let names: Vec<String> = programmed.keys().map(|p| p.name.to_string()).collect();
    assert_eq!(names, ["a", "b", "c"], "{:?}", h.log.applies());
    let s = status.borrow().clone();
    assert!(!s.update_pending(), "health: nothing left queued");
    assert!(s.last_sync.as_ref().unwrap().ok);
    assert_eq!(
        s.unprogrammable[&IpFamily::V4],
        [ServiceName::new("ns", "bad")]
    );
    // Later syncs go through without it.
    h.log.take_applies();
    h.add("d", "10.0.0.5");
    sleep(Duration::from_secs(2)).await;
    let applies = h.log.take_applies();
    assert!(applies.iter().all(|a| a.ok), "{applies:?}");
    assert!(h.log.programmed(IpFamily::V4).contains_key(&port_name("d")));
    // Once it changes (and the backend accepts it now), it is programmed.
    h.log.accept(&ServiceName::new("ns", "bad"));
    h.add("bad", "10.0.0.6");
    sleep(Duration::from_secs(2)).await;
    assert!(
        h.log
            .programmed(IpFamily::V4)
            .contains_key(&port_name("bad"))
    );
    assert!(!status.borrow().unprogrammable.contains_key(&IpFamily::V4));
    h.stop().await;
}

/// Found by the lab soak (issue 15): a partial apply the backend refused for a reason of its
/// own (a bookkeeping bug: the kernel refused a duplicate delete) went straight to isolation,
/// whose first probe is a full apply *without* the changed Services — committed, so those
/// Services left the dataplane for a moment and requests to them were lost, although a full
/// apply of the same state went through. A refused partial apply is now retried as one full
/// apply of everything first; isolation (and its probes) only follows when that fails too.
#[tokio::test(start_paused = true)]
async fn a_refused_partial_apply_is_retried_whole_before_anything_is_left_out() {
    let h = start(true);
    sleep(Duration::from_millis(10)).await;
    h.add("a", "10.0.0.1");
    sleep(Duration::from_secs(2)).await;
    h.log.take_applies();
    h.log.fail_next(1);
    h.add("b", "10.0.0.2");
    sleep(Duration::from_millis(10)).await;
    let applies = h.log.take_applies();
    assert_eq!(applies.len(), 2, "{applies:?}");
    assert!(!applies[0].full && !applies[0].ok, "the refused partial");
    assert!(applies[1].full && applies[1].ok, "then everything, once");
    for a in applies.iter().filter(|a| a.ok) {
        assert!(
            a.ports.contains(&port_name("a")) && a.ports.contains(&port_name("b")),
            "nothing was left out: {a:?}"
        );
    }
    let status = h.feed.status();
    assert!(!status.borrow().update_pending(), "the change is applied");
    h.stop().await;
}

/// A Service deleted in a sync that fails is still reported as taken away by the full sync
/// that follows: a full sync alone knows only what is there now, and the conntrack
/// reconciliation needs the deleted Service's addresses to delete its UDP flows.
#[tokio::test(start_paused = true)]
async fn what_a_failed_sync_took_away_reaches_the_sync_that_succeeds() {
    let h = start(true);
    h.add("a", "10.0.0.1");
    sleep(Duration::from_millis(10)).await;
    h.log.take_applies();
    sleep(Duration::from_secs(2)).await;
    // The partial apply and its whole retry fail (nothing to isolate: the Service is gone);
    // so does the first retry after the backoff.
    h.log.fail_next(3);
    let a = ServiceName::new("ns", "a");
    h.feed.update(|state| state.delete_service(&a));
    sleep(Duration::from_millis(10)).await;
    let failed = h.log.take_applies();
    assert!(
        !failed.is_empty() && failed.iter().all(|a| !a.ok),
        "{failed:?}"
    );
    assert!(failed[0].replaced.contains(&port_name("a")), "{failed:?}");
    sleep(Duration::from_secs(4)).await;
    let retries = h.log.take_applies();
    let done = retries.last().expect("retried");
    assert!(done.ok && done.full, "{retries:?}");
    assert!(
        retries.iter().all(|r| r.replaced.contains(&port_name("a"))),
        "every retry still undoes the deleted Service: {retries:?}"
    );
    // Once a sync succeeded, what it undid is not carried any further.
    h.feed.update(|state| {
        state.request_full_sync();
        true
    });
    sleep(Duration::from_secs(2)).await;
    let next = h.log.take_applies();
    assert!(
        next.iter().all(|r| r.ok && r.replaced.is_empty()),
        "{next:?}"
    );
    h.stop().await;
}
