//! The demo's checks of the overlay and the API: pods talking across nodes over VXLAN with
//! their own addresses, `flannel.1` deleted and healed, Services created with kubectl and
//! their EndpointSlices written by the lab's controller.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use sluice_testbed::NetNs;

use super::services::{self, NAMES};
use super::traffic::{self, Proto};
use crate::echo::PORT;
use crate::labdir::PodRecord;
use crate::up::{Lab, eventually};

/// The running lab and what the checks look up in it.
pub(crate) struct Ctx<'a> {
    pub(crate) lab: &'a Lab,
    /// When kubectl created the Services (to time how soon the proxy serves them).
    pub(crate) created: std::cell::Cell<Option<Instant>>,
}

impl Ctx<'_> {
    pub(crate) fn pod(&self, name: &str) -> anyhow::Result<&PodRecord> {
        self.lab
            .state
            .pod(name)
            .with_context(|| format!("no pod {name}"))
    }

    pub(crate) fn ns(&self, role: &str) -> anyhow::Result<NetNs> {
        let name = match self.lab.state.pod(role) {
            Some(p) => p.netns.clone(),
            None => self.lab.state.ns(role),
        };
        Ok(NetNs::open(&name)?)
    }

    pub(crate) fn url(&self) -> anyhow::Result<&str> {
        self.lab.state.host_url.as_deref().context("no API server")
    }
}

/// One request between pods; passes when the right pod answered and saw the sender's own IP.
pub(crate) fn pod_to_pod(
    c: &Ctx<'_>,
    from: &str,
    to: &str,
    proto: Proto,
) -> anyhow::Result<String> {
    let (src, dst) = (c.pod(from)?, c.pod(to)?);
    let reply = traffic::one(&c.ns(from)?, proto, SocketAddr::from((dst.ip, PORT)))?;
    ensure!(reply.backend == to, "answered by {}", reply.backend);
    ensure!(
        reply.seen_source.ip() == src.ip,
        "source rewritten to {}",
        reply.seen_source
    );
    Ok(format!(
        "answered by {to}, saw source {} (no NAT)",
        reply.seen_source
    ))
}

/// Deletes node 1's VXLAN device and times how long until cross-node traffic works again.
pub(crate) fn heal(c: &Ctx<'_>) -> anyhow::Result<String> {
    c.ns("node1")?.ip(["link", "del", "flannel.1"])?;
    let start = Instant::now();
    let to = SocketAddr::from((c.pod("web-3")?.ip, PORT));
    let from = c.ns("web-1")?;
    eventually(
        "traffic after flannel.1 deleted",
        Duration::from_secs(10),
        || Ok(traffic::one(&from, Proto::Http, to).ok()),
    )?;
    Ok(format!(
        "device, neighbour, FDB and route back; traffic after {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    ))
}

/// `kubectl create -f services.yaml` from the host.
pub(crate) fn create_services(c: &Ctx<'_>) -> anyhow::Result<String> {
    let file = c.lab.dir.path("demo-services.yaml");
    std::fs::write(&file, services::YAML)?;
    let out = services::kubectl(
        c.lab.dir.root(),
        &["create", "--validate=false", "-f", &file.to_string_lossy()],
    )?;
    c.created.set(Some(Instant::now()));
    ensure!(out.lines().count() == NAMES.len(), "kubectl said: {out}");
    Ok(format!(
        "{} Services ({}) at {}",
        NAMES.len(),
        NAMES.join(", "),
        c.url()?
    ))
}

/// Waits until the controller wrote every slice with the expected number of endpoints.
pub(crate) fn slices(c: &Ctx<'_>) -> anyhow::Result<String> {
    let pods = c.lab.state.pods.len();
    let want: Vec<(String, usize)> = NAMES
        .iter()
        .map(|n| (format!("{n}-lab"), if *n == "nothing" { 0 } else { pods }))
        .collect();
    let text = eventually("EndpointSlices", Duration::from_secs(5), || {
        let out = services::kubectl(
            c.lab.dir.root(),
            &["get", "endpointslices", "-n", "default", "-o", "json"],
        )?;
        let list: serde_json::Value = serde_json::from_str(&out)?;
        let have: Vec<(String, usize)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let name = s["metadata"]["name"].as_str().unwrap_or("").to_owned();
                (name, s["endpoints"].as_array().map_or(0, Vec::len))
            })
            .collect();
        Ok(want.iter().all(|w| have.contains(w)).then_some(have))
    })?;
    let parts: Vec<String> = text.iter().map(|(n, k)| format!("{n} {k}")).collect();
    Ok(format!("kubectl get endpointslices: {}", parts.join(", ")))
}
