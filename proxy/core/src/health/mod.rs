//! `/healthz` and `/livez` on `--healthz-bind-address`, with kube-proxy's
//! JSON body, headers, status codes and counters.
//!
//! Load balancers probe `/healthz` to stop sending traffic to a node whose
//! proxy is stuck or whose Node is being deleted; the kubelet's liveness
//! probe uses `/livez`, which ignores the Node so that a draining node's
//! proxy is not restarted. Both must therefore mean exactly what they mean
//! in kube-proxy: unhealthy (503) when an update has been queued and not
//! applied within 2 × `--sync-period`; `/healthz` also 503 while the Node is
//! being deleted. The decision is the pure [`evaluate`] over
//! [`HealthInputs`]; the server asks a [`HealthSource`] for fresh inputs on
//! every request, so it never caches a stale answer. The runner's
//! `watch::Receiver<SyncStatus>` is a source as it is ([`StatusSource`]).

mod report;
mod server;

#[cfg(test)]
mod tests;

pub use report::{
    FamilyHealth, FamilyReport, HealthInputs, HealthReport, Probe, evaluate, proxy_healthy, rfc3339,
};
pub use server::{HealthServer, HealthSource, StatusSource, json_response, serve};
