//! The Sluice test bed: clusters of nodes and pods built from network namespaces, traffic that
//! says who answered and whom it saw, a throw-away etcd, and (re-exported) the in-memory
//! Kubernetes API server.
//!
//! Every kernel test, the lab and the benchmarks build their clusters with it, so it is built
//! for safety first: everything lives in namespaces the test created (never the host's links,
//! routes, rules or sysctls), every object is an RAII guard that cleans up even when the test
//! panics, names are unique per process and test so tests run in parallel, and every wait is
//! bounded.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_testbed::{cluster::Cluster, require_root, traffic};
//!
//! # fn main() -> sluice_testbed::Result<()> {
//! require_root();
//! let cluster = Cluster::with_pod_routes(2)?;
//! let client = cluster.node(1)?.add_pod("client")?;
//! let web = cluster.node(2)?.add_pod("web")?;
//! let _server = traffic::EchoServer::tcp(web.ns(), "web", "0.0.0.0:8080".parse().unwrap())?;
//! let reply = traffic::tcp_request(client.ns(), (web.ip(), 8080).into(), Duration::from_secs(2))?;
//! assert_eq!(reply.backend, "web");
//! assert_eq!(reply.seen_source.ip(), client.ip());
//! # Ok(())
//! # }
//! ```

pub mod cgroup;
pub mod cluster;
mod cmd;
pub mod cni;
pub mod error;
pub mod etcd;
pub mod http;
pub mod link;
pub mod names;
pub mod netns;
pub mod process;
mod root;
mod sysctl;
pub mod traffic;
pub mod uml;

/// The in-memory Kubernetes API server (crate `sluice-test-apiserver`).
pub use sluice_test_apiserver as apiserver;

pub use error::{Error, Result};
pub use netns::NetNs;
pub use process::Process;
pub use root::{is_root, require_root};
