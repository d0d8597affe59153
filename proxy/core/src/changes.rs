//! What changed since the last sync, so a backend can apply only that.
//!
//! kube-proxy reports changed Services; Sluice reports the Service *ports*
//! whose [`ServicePort`](sluice_model::service::ServicePort) or merged
//! endpoints differ, which is what a backend keys its chains, maps or
//! virtual servers by. A port in the set but absent from the snapshot was
//! removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use sluice_model::service::{Protocol, ServiceName, ServicePort, ServicePortName};

/// The delta between the previous sync and this one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Reprogram everything: first sync, node topology changed, or a full
    /// sync was requested (after a failed apply, or periodically).
    pub full: bool,
    /// The full sync was asked for only by the period (`--sync-period`): nothing else needs
    /// every Service reprogrammed. A backend that can vouch its dataplane is still what it
    /// programmed may treat it as a partial sync of [`Changes::ports`] (kube-proxy's periodic
    /// syncs are partial too; it reprograms everything hourly).
    pub periodic: bool,
    /// Service ports whose definition or endpoints changed.
    pub ports: BTreeSet<ServicePortName>,
    /// Of [`Changes::ports`], those whose unanswered TCP/SCTP flows may have gone stale: new
    /// ports (a SYN may have come before their rules) and ports that lost a serving
    /// endpoint (a SYN may have been DNATed to it). An endpoint added to a port that had
    /// rules strands no flow, so its sync needs no conntrack dump (unless UDP).
    pub at_risk: BTreeSet<ServicePortName>,
    /// The previous definitions of the ports whose definition changed or that went away:
    /// what a backend (or the conntrack reconciliation) may need to undo.
    pub replaced: Vec<Arc<ServicePort>>,
    /// How many Services had a definition change.
    pub service_changes: usize,
    /// How many Services had an endpoints change.
    pub endpoint_changes: usize,
    /// Last-change trigger times of the EndpointSlice updates this sync
    /// applies, oldest first, for `kubeproxy_network_programming_duration_seconds`
    /// (the caller skips times from before it started, as kube-proxy does).
    pub trigger_times: Vec<SystemTime>,
}

impl Changes {
    /// Nothing to do: not a full sync and no port changed.
    pub fn is_empty(&self) -> bool {
        !self.full && self.ports.is_empty()
    }

    /// The Services owning the changed ports.
    pub fn services(&self) -> BTreeSet<ServiceName> {
        self.ports.iter().map(ServicePortName::service).collect()
    }

    /// Whether a UDP port changed: stale UDP conntrack entries may need
    /// cleaning after the apply (kube-proxy's `ConntrackCleanupRequired`).
    pub fn udp_changed(&self) -> bool {
        self.ports.iter().any(|port| port.protocol == Protocol::Udp)
    }
}
