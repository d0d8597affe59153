//! The HTTP side: axum routes for `/healthz` and `/livez`.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::report::{HealthInputs, Probe, evaluate};
use crate::metrics::Metrics;
use crate::runner::SyncStatus;

/// Where the server gets fresh [`HealthInputs`] for each request.
pub trait HealthSource: Send + Sync + 'static {
    /// The inputs as of now.
    fn inputs(&self) -> HealthInputs;
}

/// The runner's published status plus the health timeout.
#[derive(Clone, Debug)]
pub struct StatusSource {
    status: watch::Receiver<SyncStatus>,
    timeout: Duration,
}

impl StatusSource {
    /// `status` from `Feed::status()`, `timeout` from
    /// [`crate::config_file::ProxyConfig::health_timeout`].
    pub fn new(status: watch::Receiver<SyncStatus>, timeout: Duration) -> Self {
        Self { status, timeout }
    }
}

impl HealthSource for StatusSource {
    fn inputs(&self) -> HealthInputs {
        HealthInputs::from_status(&self.status.borrow(), self.timeout)
    }
}

/// Inputs set directly (tests, or a caller with its own bookkeeping).
impl HealthSource for RwLock<HealthInputs> {
    fn inputs(&self) -> HealthInputs {
        self.read().map(|inputs| inputs.clone()).unwrap_or_default()
    }
}

/// The `/healthz` + `/livez` service.
#[derive(Clone)]
pub struct HealthServer {
    source: Arc<dyn HealthSource>,
    metrics: Option<Metrics>,
}

impl HealthServer {
    /// A server answering from `source`.
    pub fn new(source: Arc<dyn HealthSource>) -> Self {
        Self {
            source,
            metrics: None,
        }
    }

    /// Also count answers in `kubeproxy_proxy_{healthz,livez}_total{code}`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The routes; any method, exact paths, 404 elsewhere (as Go's mux).
    pub fn router(&self) -> Router {
        let healthz = self.clone();
        let livez = self.clone();
        Router::new()
            .route(
                "/healthz",
                any(move || answer(healthz.clone(), Probe::Healthz)),
            )
            .route("/livez", any(move || answer(livez.clone(), Probe::Livez)))
    }

    /// The status code and JSON body for one probe at `now`.
    pub fn respond(&self, probe: Probe, now: SystemTime) -> (StatusCode, String) {
        let report = evaluate(&self.source.inputs(), probe, now);
        let code = match report.healthy {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        if let Some(metrics) = &self.metrics {
            match probe {
                Probe::Healthz => metrics.inc_healthz(code.as_u16()),
                Probe::Livez => metrics.inc_livez(code.as_u16()),
            }
        }
        (code, serde_json::to_string(&report).unwrap_or_default())
    }
}

async fn answer(server: HealthServer, probe: Probe) -> Response {
    let (code, body) = server.respond(probe, SystemTime::now());
    json_response(code, body)
}

/// A JSON answer with kube-proxy's two headers (`Content-Type:
/// application/json`, `X-Content-Type-Options: nosniff`).
pub fn json_response(code: StatusCode, body: String) -> Response {
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
