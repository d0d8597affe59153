//! Faults a test switches on to see what a client does when the API server misbehaves the way
//! real ones do: a load balancer that cuts watches, a compacted etcd (410 Gone), an overloaded
//! or broken server (500), a server that accepts connections and never answers.
//!
//! One fault at a time, switched from the test's handle ([`crate::TestApiServer::set_fault`])
//! or over HTTP (`PUT /sluice-test/fault?fault=hang`, `DELETE /sluice-test/fault`,
//! `GET /sluice-test/fault`), so a lab driving the server from another process can inject
//! them too. The control path itself is never faulted. Each fault is checked at the start of
//! every request, so switching it off takes effect for the next request (and releases the
//! ones a hang is holding).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::router::json_response;
use crate::shared::Shared;
use crate::store::Store;

/// The control path.
pub const CONTROL_PATH: &str = "/sluice-test/fault";

/// How long a watch lives while [`Fault::DropWatches`] is on. Not zero: a client re-watches at
/// once after a stream that ended without an error (no backoff), and a stream cut before it
/// started would make that a busy loop of requests rather than a flaky network.
const DROP_AFTER: Duration = Duration::from_millis(200);

/// A way the server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Open watch streams end now; new ones are cut [`DROP_AFTER`] after they start (a load
    /// balancer or a proxy in between dropping long connections). Lists and writes work.
    DropWatches,
    /// The history is compacted, as etcd compacts it: open watches end, every watch that
    /// resumes from a `resourceVersion` gets an `ERROR` event with a 410 `Expired` Status (in
    /// an HTTP 200, as the real server sends it), every list at a `resourceVersion` other than
    /// `0` (or an `Exact` one) is answered HTTP 410. Lists at `0` or with none work: a client
    /// recovers by re-listing, as it must.
    Gone,
    /// Every API request is answered 500 `InternalError`; open watches end.
    ServerError,
    /// Every API request waits without an answer until the fault is switched off (then it is
    /// served); open watches hold back events and bookmarks meanwhile.
    Hang,
}

impl Fault {
    /// Every fault, for tests that try each.
    pub const ALL: [Self; 4] = [Self::DropWatches, Self::Gone, Self::ServerError, Self::Hang];

    /// The name on the control path.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DropWatches => "drop-watches",
            Self::Gone => "gone",
            Self::ServerError => "server-error",
            Self::Hang => "hang",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?} (drop-watches, gone, server-error, hang)")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// Switches `fault` on (or every fault off), with its effect on what is open now.
pub(crate) fn set(shared: &Shared, fault: Option<Fault>) {
    let before = shared.fault.send_replace(fault);
    match fault {
        Some(Fault::DropWatches | Fault::ServerError) => shared.close_watches(),
        Some(Fault::Gone) => {
            shared.write(Store::compact);
            shared.close_watches();
        }
        Some(Fault::Hang) => drop(shared.paused.send_replace(true)),
        None => {}
    }
    if before == Some(Fault::Hang) && fault != Some(Fault::Hang) {
        shared.paused.send_replace(false);
    }
    tracing::info!(
        fault = fault.map_or("none", Fault::as_str),
        "test api server fault"
    );
}

/// What a request meets before it is served.
pub(crate) enum Verdict {
    /// Serve it normally.
    Serve,
    /// Serve it, and cut the watch it opens after a while.
    ServeAndCut(Duration),
    /// Answer this instead.
    Answer(Response),
}

/// Applies the current fault to a request: the control path is answered here, a hang waits
/// for its end.
pub(crate) async fn intercept(shared: &Shared, method: &Method, uri: &Uri) -> Verdict {
    if uri.path() == CONTROL_PATH {
        return Verdict::Answer(control(shared, method, uri));
    }
    let mut fault = shared.fault.subscribe();
    if *fault.borrow_and_update() == Some(Fault::Hang) {
        let _ = fault.wait_for(|f| *f != Some(Fault::Hang)).await;
    }
    let current = *fault.borrow();
    let query = Query::of(uri);
    match current {
        None | Some(Fault::Hang) => Verdict::Serve,
        Some(Fault::DropWatches) if query.watch => Verdict::ServeAndCut(DROP_AFTER),
        Some(Fault::DropWatches) => Verdict::Serve,
        Some(Fault::ServerError) => Verdict::Answer(
            ApiError::Internal("injected fault: server-error".to_owned()).into_response(),
        ),
        Some(Fault::Gone) => gone(shared, method, &query),
    }
}

/// Resolves when a fault that ends watch streams is switched on: a stream opened just before
/// the switch (its request passed [`intercept`] but it had not yet subscribed to the closer)
/// must end too.
pub(crate) fn watch_breaker(shared: &Shared) -> impl std::future::Future<Output = ()> + use<> {
    let mut fault = shared.fault.subscribe();
    async move {
        let ends = |f: &Option<Fault>| {
            matches!(
                f,
                Some(Fault::DropWatches | Fault::Gone | Fault::ServerError)
            )
        };
        let _ = fault.wait_for(ends).await;
    }
}

/// Whether `uri` asks for a watch.
pub(crate) fn is_watch(uri: &Uri) -> bool {
    Query::of(uri).watch
}

/// The 410 a compacted server gives to a request that names a version, if this one does.
fn gone(shared: &Shared, method: &Method, query: &Query) -> Verdict {
    let Some(rv) = query.resource_version.filter(|_| *method == Method::GET) else {
        return Verdict::Serve;
    };
    if rv == 0 && !query.exact {
        return Verdict::Serve;
    }
    let oldest = shared.read().history().oldest().max(rv.saturating_add(1));
    let expired = ApiError::Expired {
        requested: rv,
        oldest,
    };
    if query.watch {
        let line = format!(
            "{}\n",
            json!({"type": "ERROR", "object": expired.to_status()})
        );
        let response = (
            StatusCode::OK,
            [("content-type", "application/json")],
            Body::from(line),
        );
        return Verdict::Answer(response.into_response());
    }
    Verdict::Answer(expired.into_response())
}

/// The query parameters faults look at.
#[derive(Debug, Default)]
struct Query {
    watch: bool,
    resource_version: Option<u64>,
    exact: bool,
}

impl Query {
    fn of(uri: &Uri) -> Self {
        let mut q = Self::default();
        for pair in uri.query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("watch", v)) => q.watch = matches!(v, "true" | "1"),
                Some(("resourceVersion", v)) => q.resource_version = v.parse().ok(),
                Some(("resourceVersionMatch", v)) => q.exact = v == "Exact",
                _ => {}
            }
        }
        q
    }
}

/// `GET` shows the fault, `PUT ?fault=NAME` sets one, `DELETE` clears it.
fn control(shared: &Shared, method: &Method, uri: &Uri) -> Response {
    let wanted = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("fault="));
    let outcome = match (method, wanted) {
        (&Method::GET, _) => Ok(()),
        (&Method::DELETE, _) => {
            set(shared, None);
            Ok(())
        }
        (&Method::PUT | &Method::POST, Some(name)) => match name.parse::<Fault>() {
            Ok(f) => {
                set(shared, Some(f));
                Ok(())
            }
            Err(e) => Err(ApiError::BadRequest(e.to_string())),
        },
        (&Method::PUT | &Method::POST, None) => {
            Err(ApiError::BadRequest("PUT ?fault=NAME".to_owned()))
        }
        _ => Err(ApiError::MethodNotAllowed),
    };
    match outcome {
        Ok(()) => {
            let now = *shared.fault.borrow();
            json_response(StatusCode::OK, &json!({"fault": now.map(Fault::as_str)}))
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.as_str().parse::<Fault>(), Ok(f));
        }
        assert!("nope".parse::<Fault>().is_err());
    }

    #[test]
    fn queries_are_read_as_clients_send_them() {
        let uri: Uri = "/api/v1/services?resourceVersion=12&watch=true&allowWatchBookmarks=true"
            .parse()
            .unwrap();
        let q = Query::of(&uri);
        assert!(q.watch && !q.exact);
        assert_eq!(q.resource_version, Some(12));
        let q = Query::of(
            &"/api/v1/services?limit=500&resourceVersion=0"
                .parse()
                .unwrap(),
        );
        assert_eq!((q.watch, q.resource_version), (false, Some(0)));
    }
}
