//! Watch streams: one JSON event per line over a chunked response.
//!
//! Semantics follow the real API where clients depend on them: no version or "0" starts with
//! synthetic ADDED events for the current objects; a version older than the history yields an
//! `ERROR` event carrying a 410 `Expired` Status (inside an HTTP 200, as the real server sends
//! it); bookmarks carry the version up to which this stream has seen every change; an object
//! that moves in or out of a selector appears as ADDED or DELETED.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::history::{Event, EventType};
use crate::meta::meta_str;
use crate::resources::Resource;
use crate::selectors::Selectors;
use crate::shared::Shared;

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub(crate) struct WatchRequest {
    /// The kind watched.
    pub(crate) resource: &'static Resource,
    /// Namespace, or all.
    pub(crate) namespace: Option<String>,
    /// Label and field selectors.
    pub(crate) selectors: Selectors,
    /// `resourceVersion`, if given and not "0".
    pub(crate) since: Option<u64>,
    /// `timeoutSeconds`.
    pub(crate) timeout: Option<Duration>,
    /// `allowWatchBookmarks`.
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents`.
    pub(crate) initial_events: bool,
    /// Objects are sent as one-row `Table`s (kubectl `get --watch`).
    pub(crate) table: bool,
}

/// Starts a watch task and returns the streaming response body.
pub(crate) fn start(shared: Arc<Shared>, req: WatchRequest) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut watch = Watch {
            shared,
            req,
            tx,
            pos: 0,
        };
        watch.run().await;
    });
    Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
}

struct Watch {
    shared: Arc<Shared>,
    req: WatchRequest,
    tx: mpsc::Sender<Bytes>,
    /// Every change up to this version has been delivered.
    pos: u64,
}

/// What woke the watch loop.
enum Step {
    Deliver,
    Bookmark,
    End,
}

/// Marker: the stream must end.
struct End;

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({ "type": kind, "object": object }).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl Watch {
    async fn run(&mut self) {
        let mut changed = self.shared.changed.subscribe();
        let mut closer = self.shared.closer.subscribe();
        let mut paused = self.shared.paused.subscribe();
        changed.borrow_and_update();
        closer.borrow_and_update();
        let held = *paused.borrow_and_update();
        if self.begin().await.is_err() || self.deliver(held).await.is_err() {
            return;
        }
        let deadline = self.req.timeout.map(|t| tokio::time::Instant::now() + t);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
        tokio::pin!(sleep);
        let mut tick = tokio::time::interval(self.shared.config.bookmark_interval);
        tick.tick().await;
        loop {
            let step = tokio::select! {
                _ = changed.changed() => Step::Deliver,
                _ = paused.changed() => Step::Deliver,
                _ = tick.tick(), if self.req.bookmarks => Step::Bookmark,
                _ = closer.changed() => Step::End,
                () = &mut sleep => Step::End,
                () = self.tx.closed() => Step::End,
            };
            let held = *paused.borrow_and_update();
            let result = match step {
                Step::Deliver => self.deliver(held).await,
                Step::Bookmark if !held => self.bookmark(false).await,
                Step::Bookmark => Ok(()),
                Step::End => Err(End),
            };
            if result.is_err() {
                return;
            }
        }
    }

    /// Sends the initial state or checks the starting version.
    async fn begin(&mut self) -> Result<(), End> {
        let start = self.initial_state();
        let initial = match start {
            Err(e) => return self.send_error(&e).await,
            Ok(initial) => initial,
        };
        for obj in initial {
            self.send_object("ADDED", &obj).await?;
        }
        if self.req.initial_events {
            self.bookmark(true).await?;
        }
        Ok(())
    }

    /// Sets the starting position; the objects to send as synthetic ADDED events, if any.
    fn initial_state(&mut self) -> Result<Vec<Value>, ApiError> {
        let store = self.shared.read();
        self.pos = store.resource_version();
        match self.req.since {
            Some(rv) if rv < store.history().oldest() => Err(ApiError::Expired {
                requested: rv,
                oldest: store.history().oldest(),
            }),
            Some(rv) => {
                self.pos = rv.min(self.pos);
                Ok(Vec::new())
            }
            None => Ok(store.list(
                self.req.resource,
                self.req.namespace.as_deref(),
                &self.req.selectors,
            )),
        }
    }

    async fn deliver(&mut self, paused: bool) -> Result<(), End> {
        if paused {
            return Ok(());
        }
        let events = self.pending();
        match events {
            (Err(e), _) => self.send_error(&e).await,
            (Ok(events), rv) => {
                for e in events {
                    if let Some((kind, obj)) = self.translate(&e) {
                        self.send_object(kind, obj).await?;
                    }
                }
                self.pos = rv;
                Ok(())
            }
        }
    }

    fn pending(&self) -> (Result<Vec<Arc<Event>>, ApiError>, u64) {
        let store = self.shared.read();
        (store.history().since(self.pos), store.resource_version())
    }

    /// The event as this stream's filter sees it, if at all.
    fn translate<'e>(&self, e: &'e Event) -> Option<(&'static str, &'e Value)> {
        if !std::ptr::eq(e.resource, self.req.resource) {
            return None;
        }
        if let Some(ns) = &self.req.namespace
            && meta_str(&e.object, "namespace") != ns
        {
            return None;
        }
        let now = self.req.selectors.matches(&e.object);
        let before = e
            .previous
            .as_ref()
            .is_some_and(|p| self.req.selectors.matches(p));
        match (e.kind, before, now) {
            (EventType::Modified, true, true) => Some(("MODIFIED", &e.object)),
            (EventType::Modified, true, false) => Some(("DELETED", &e.object)),
            (EventType::Modified, false, true) => Some(("ADDED", &e.object)),
            (_, _, false) => None,
            (kind, _, true) => Some((kind.as_str(), &e.object)),
        }
    }

    async fn bookmark(&mut self, initial_end: bool) -> Result<(), End> {
        let mut meta = json!({ "resourceVersion": self.pos.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj = json!({
            "kind": self.req.resource.kind,
            "apiVersion": self.req.resource.api_version(),
            "metadata": meta,
        });
        self.send(line("BOOKMARK", &obj)).await
    }

    async fn send_object(&mut self, kind: &str, obj: &Value) -> Result<(), End> {
        if !self.req.table {
            return self.send(line(kind, obj)).await;
        }
        let rv = meta_str(obj, "resourceVersion").parse().unwrap_or(self.pos);
        let table = crate::table::table(self.req.resource, std::slice::from_ref(obj), rv);
        self.send(line(kind, &table)).await
    }

    async fn send_error(&mut self, e: &ApiError) -> Result<(), End> {
        self.send(line("ERROR", &e.to_status())).await?;
        Err(End)
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        self.tx.send(bytes).await.map_err(|_| End)
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
