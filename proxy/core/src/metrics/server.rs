//! The `/metrics` route.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Metrics;

/// The content type `prometheus-client`'s text encoder produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`; serve it with [`crate::health::serve`].
pub fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(move || answer(metrics.clone())))
}

async fn answer(metrics: Metrics) -> Response {
    let mut response = metrics.encode().into_response();
    (response.headers_mut()).insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
