//! An in-memory Kubernetes API server for tests and the lab.
//!
//! The proxy and overlay daemons use the `kube` crate unmodified, so tests need something that
//! speaks the real API: the real URL layout, JSON bodies, `Status` errors, list + watch with
//! resource versions, bookmarks and 410 `Expired`, selectors, patches, Service ClusterIP/NodePort
//! allocation, and enough discovery and `Table` output for kubectl. This crate is that server,
//! over plain HTTP/1.1 on `127.0.0.1`, with objects stored as `serde_json::Value`.
//!
//! Deliberate simplifications (none of which kube or kubectl depend on):
//! - `limit` is ignored: lists return everything and never a `continue` token;
//! - a list at an older `resourceVersion` returns the current state (only a version older than
//!   the history is refused, with 410, for `resourceVersionMatch=Exact`);
//! - no admission, validation, authentication, finalizers or garbage collection; namespaces
//!   need not exist (`default`, `kube-system`, `kube-public` and `kube-node-lease` are created);
//! - server-side apply is refused with 415, and so are CBOR bodies; protobuf bodies (what
//!   kubectl's typed generators send: `kubectl create service|namespace|configmap|
//!   serviceaccount …`) are decoded for Services, Namespaces, ConfigMaps and ServiceAccounts
//!   only (`protobuf.rs`, with the `k8s-pb` types) and refused with 415 for other kinds; responses are always JSON (kubectl accepts
//!   it); `kubectl create -f` and `kubectl apply -f` send JSON and work;
//! - watches are served on collection URLs only (`?watch=true`), not on single-object URLs;
//! - `/openapi/v2` and `/openapi/v3` are 404 (kubectl needs `--validate=false`, and `explain`
//!   does not work);
//! - the `kubernetes` Service is not created, but its address (the CIDR's first host) is
//!   reserved, so the first allocated ClusterIP is the CIDR's second host (`10.96.0.2`).
//!
//! ```no_run
//! use sluice_test_apiserver::TestApiServer;
//! use serde_json::json;
//!
//! let server = TestApiServer::start();
//! server.write_kubeconfig("/tmp/kubeconfig").unwrap();
//! let svc = server
//!     .create(json!({"apiVersion": "v1", "kind": "Service",
//!         "metadata": {"name": "web", "namespace": "default"},
//!         "spec": {"ports": [{"port": 80}]}}))
//!     .unwrap();
//! assert_eq!(svc["spec"]["clusterIP"], "10.96.0.2");
//! server.compact(); // watches resuming from older versions now get 410 Expired
//! ```

mod allocators;
mod discovery;
mod error;
mod faults;
mod handlers;
mod history;
mod kubeconfig;
mod meta;
mod patch;
mod protobuf;
mod resources;
mod router;
mod selectors;
mod server;
mod service_defaults;
mod services;
mod shared;
mod store;
mod strategic;
mod table;
mod test_server;
mod update;
mod watch;

pub use allocators::AllocError;
pub use error::ApiError;
pub use faults::{CONTROL_PATH as FAULT_CONTROL_PATH, Fault, UnknownFault};
pub use kubeconfig::kubeconfig_yaml;
pub use resources::{RESOURCES, Resource};
pub use selectors::{FieldSelector, LabelReq, LabelSelector, SelectorError};
pub use server::StartError;
pub use test_server::{Config, TestApiServer};
