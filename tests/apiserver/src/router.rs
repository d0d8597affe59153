//! HTTP routing: discovery documents by fixed path, everything else by parsing the URL.
//!
//! Resource URLs have many shapes (`/api/v1/services`, `/api/v1/namespaces/x/services/y/status`,
//! `/apis/discovery.k8s.io/v1/...`) that are easier to parse once than to spell as routes, so
//! one fallback handler parses them into a [`ResourcePath`] and hands over to `handlers`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{self, Verdict};
use crate::handlers;
use crate::resources::Resource;
use crate::shared::Shared;

/// A parsed resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    /// The kind addressed.
    pub(crate) resource: &'static Resource,
    /// The namespace segment, if any.
    pub(crate) namespace: Option<String>,
    /// The object name, if any.
    pub(crate) name: Option<String>,
    /// The subresource (`status`), if any.
    pub(crate) subresource: Option<String>,
}

/// The router over shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// A JSON response with the given status.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cut = match faults::intercept(&shared, &method, &uri).await {
        Verdict::Serve => None,
        Verdict::ServeAndCut(after) => Some(after),
        Verdict::Answer(response) => {
            tracing::debug!(%method, uri = %uri, status = response.status().as_u16(), "faulted");
            return response;
        }
    };
    let response = match discovery_doc(&shared, uri.path()) {
        Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc)),
        Some(_) => Err(ApiError::MethodNotAllowed),
        None => match parse_path(uri.path()) {
            Some(path) => handlers::handle(&shared, &method, &path, &uri, &headers, &body),
            None => Err(ApiError::UnknownPath),
        },
    };
    let mut response = response.unwrap_or_else(IntoResponse::into_response);
    if let Some(after) = cut {
        response = cut_after(response, after);
    } else if faults::is_watch(&uri) {
        response = end_on(response, faults::watch_breaker(&shared));
    }
    tracing::debug!(%method, uri = %uri, status = response.status().as_u16(), "request");
    response
}

/// Ends `response`'s body after `after` (a watch cut by [`faults::Fault::DropWatches`]).
fn cut_after(response: Response, after: std::time::Duration) -> Response {
    use futures::StreamExt as _;
    let (parts, body) = response.into_parts();
    let stream = body
        .into_data_stream()
        .take_until(tokio::time::sleep(after));
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

/// Ends `response`'s body when `breaker` resolves (a fault that ends watches).
fn end_on(
    response: Response,
    breaker: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response {
    use futures::StreamExt as _;
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().take_until(breaker);
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

fn discovery_doc(shared: &Shared, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["api"] => Some(discovery::core_versions(shared.addr)),
        ["api", v] => discovery::resource_list("", v),
        ["apis"] => Some(discovery::group_list()),
        ["apis", g] => discovery::group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        ["healthz" | "readyz" | "livez"] => Some(Value::String("ok".to_owned())),
        _ => None,
    }
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` resource URLs.
#[must_use]
pub(crate) fn parse_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, ..] if *plural != "status" && *plural != "finalize" => {
            (Some((*ns).to_owned()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return None,
    };
    let resource = Resource::find(group, version, plural)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    Some(ResourcePath {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_urls() {
        let p = parse_path("/api/v1/namespaces/default/services/web/status").unwrap();
        assert_eq!(p.resource.plural, "services");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = parse_path("/api/v1/services").unwrap();
        assert!(p.namespace.is_none() && p.name.is_none());
        let p = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (p.resource.plural, p.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let p = parse_path("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = parse_path("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices").unwrap();
        assert_eq!(p.resource.kind, "EndpointSlice");
        assert!(parse_path("/api/v1/namespaces/a/nodes").is_none());
        assert!(parse_path("/apis/apps/v1/deployments").is_none());
    }
}
