//! The verbs on resource URLs: get, list, watch, create, update, patch, delete.
//!
//! Query parameters are read the way kube and kubectl send them. `limit` paginates a JSON
//! list as the real API server does (kube's watcher lists 500 objects a page): a page holds
//! at most `limit` objects in namespace/name order, and `metadata.continue` (with
//! `remainingItemCount`) when more follow; a continued page has the first page's
//! `resourceVersion`. Unlike the real server, which serves every page from the first page's
//! snapshot, a continued page shows the objects as they are now — objects changed between
//! pages come with newer versions, which the watch from the list's version delivers anyway.
//! Tables (`kubectl get`) are never paginated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::patch;
use crate::router::{ResourcePath, json_response};
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::shared::Shared;
use crate::table;
use crate::watch::{self, WatchRequest};

type Params = HashMap<String, String>;

/// Serves one request on a resource URL.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    path: &ResourcePath,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let Query(params): Query<Params> = Query::try_from_uri(uri)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?;
    let status_only = match path.subresource.as_deref() {
        None => false,
        Some("status") if path.resource.has_status => true,
        Some(other) => {
            return Err(ApiError::not_found(
                &format!("{}/{other}", path.resource.plural),
                path.name.as_deref().unwrap_or(""),
            ));
        }
    };
    let ns = path.namespace.clone().unwrap_or_default();
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(name) = path.name.as_deref() else {
        let req = Req {
            method,
            params: &params,
            accept: header("accept"),
            content_type: header("content-type"),
            body,
        };
        return collection(shared, path, &req);
    };
    if path.resource.namespaced && path.namespace.is_none() {
        return Err(ApiError::not_found(path.resource.plural, name));
    }
    let res = path.resource;
    let obj = match *method {
        Method::GET => shared.read().get(res, &ns, name)?,
        Method::PUT => shared.write(|s| {
            s.update(
                res,
                &ns,
                name,
                parse_body(body, header("content-type"))?,
                status_only,
            )
        })?,
        Method::PATCH => {
            let ct = header("content-type");
            shared.write(|s| {
                let mut doc = s.get(res, &ns, name)?;
                patch::apply(&mut doc, ct, body)?;
                s.update(res, &ns, name, doc, status_only)
            })?
        }
        Method::DELETE => shared.write(|s| s.delete(res, &ns, name))?,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    if *method == Method::GET && table::wanted(header("accept")) {
        let rv = shared.read().resource_version();
        return Ok(json_response(
            StatusCode::OK,
            &table::table(res, &[obj], rv),
        ));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// A request on a collection URL.
struct Req<'a> {
    method: &'a Method,
    params: &'a Params,
    accept: &'a str,
    content_type: &'a str,
    body: &'a Bytes,
}

fn collection(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    req: &Req<'_>,
) -> Result<Response, ApiError> {
    let (method, params, accept) = (req.method, req.params, req.accept);
    let res = path.resource;
    let sel = selectors(params)?;
    match (method, path.namespace.as_deref()) {
        (&Method::GET, ns) if is_true(params.get("watch")) => {
            Ok(watch_response(shared, path, ns, sel, req)?)
        }
        (&Method::GET, ns) => {
            // Tables (`kubectl get`) come whole; JSON lists in pages when asked.
            let table = table::wanted(accept);
            let limit = (params.get("limit").and_then(|l| l.parse().ok()))
                .filter(|l| *l > 0 && !table)
                .unwrap_or(usize::MAX);
            let after = params.get("continue").filter(|c| !c.is_empty() && !table);
            let after = after.map(|c| Continue::decode(c)).transpose()?;
            let (items, next, rv) = {
                let store = shared.read();
                check_exact(params, store.history().oldest())?;
                let rv = after.as_ref().map_or(store.resource_version(), |c| c.rv);
                let key = after.map(|c| c.key);
                let (items, next) = store.list_page(res, ns, &sel, key.as_ref(), limit);
                (items, next, rv)
            };
            if table {
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(res, &items, rv),
                ));
            }
            let mut doc = list_doc(path, items, rv);
            if let Some((key, remaining)) = next {
                doc["metadata"]["continue"] = Continue { rv, key }.encode().into();
                doc["metadata"]["remainingItemCount"] = remaining.into();
            }
            Ok(json_response(StatusCode::OK, &doc))
        }
        (&Method::POST, Some(ns)) => {
            let obj =
                shared.write(|s| s.create(res, ns, parse_body(req.body, req.content_type)?))?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        (&Method::POST, None) if !res.namespaced => {
            let obj =
                shared.write(|s| s.create(res, "", parse_body(req.body, req.content_type)?))?;
            Ok(json_response(StatusCode::CREATED, &obj))
        }
        (&Method::DELETE, ns) if ns.is_some() || !res.namespaced => {
            let (items, rv) = shared.write(|s| {
                let doomed = s.list(res, ns, &sel);
                let gone: Vec<Value> = doomed
                    .iter()
                    .filter_map(|o| {
                        s.delete(
                            res,
                            crate::meta::meta_str(o, "namespace"),
                            crate::meta::meta_str(o, "name"),
                        )
                        .ok()
                    })
                    .collect();
                (gone, s.resource_version())
            });
            Ok(json_response(StatusCode::OK, &list_doc(path, items, rv)))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Where a paginated list goes on: the list's version and the last key returned. Opaque to
/// clients (hex of `rv/namespace/name`), as the real server's base64 tokens are.
struct Continue {
    rv: u64,
    key: crate::store::ObjectKey,
}

impl Continue {
    fn encode(&self) -> String {
        let text = format!("{}/{}/{}", self.rv, self.key.0, self.key.1);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| {
                token
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '/');
        let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let rv = rv.parse().map_err(|_| bad())?;
        Ok(Self {
            rv,
            key: (ns.to_owned(), name.to_owned()),
        })
    }
}

fn list_doc(path: &ResourcePath, items: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": format!("{}List", path.resource.kind),
        "apiVersion": path.resource.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
        "items": items,
    })
}

/// `resourceVersionMatch=Exact` for a forgotten version is 410, as from a compacted etcd.
fn check_exact(params: &Params, oldest: u64) -> Result<(), ApiError> {
    if params.get("resourceVersionMatch").map(String::as_str) != Some("Exact") {
        return Ok(());
    }
    let rv = parse_rv(params.get("resourceVersion"))?.unwrap_or(0);
    if rv < oldest {
        return Err(ApiError::Expired {
            requested: rv,
            oldest,
        });
    }
    Ok(())
}

fn watch_response(
    shared: &Arc<Shared>,
    path: &ResourcePath,
    ns: Option<&str>,
    selectors: Selectors,
    req: &Req<'_>,
) -> Result<Response, ApiError> {
    let params = req.params;
    let timeout = params
        .get("timeoutSeconds")
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds {t:?}")))
        })
        .transpose()?
        .map(Duration::from_secs);
    let req = WatchRequest {
        resource: path.resource,
        namespace: ns.map(str::to_owned),
        selectors,
        since: parse_rv(params.get("resourceVersion"))?.filter(|rv| *rv != 0),
        timeout,
        bookmarks: is_true(params.get("allowWatchBookmarks")),
        initial_events: is_true(params.get("sendInitialEvents")),
        table: table::wanted(req.accept),
    };
    let body: Body = watch::start(Arc::clone(shared), req);
    Ok((StatusCode::OK, [("content-type", "application/json")], body).into_response())
}

fn selectors(params: &Params) -> Result<Selectors, ApiError> {
    let bad = |e: crate::selectors::SelectorError| ApiError::BadRequest(e.to_string());
    Ok(Selectors {
        labels: LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
            .map_err(bad)?,
        fields: FieldSelector::parse(params.get("fieldSelector").map_or("", String::as_str))
            .map_err(bad)?,
    })
}

fn parse_rv(raw: Option<&String>) -> Result<Option<u64>, ApiError> {
    match raw.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("invalid resource version {s:?}"))),
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

/// Decodes a JSON (or YAML) body, or a protobuf one of the kinds [`protobuf::KINDS`]; other
/// protobuf and all CBOR bodies are refused with 415.
fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return crate::protobuf::decode(body);
    }
    if content_type.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
        )));
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::BadRequest(format!("unable to decode the request body: {e}")))
}
