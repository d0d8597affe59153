//! Why each endpoint is, or is not, a candidate: the categorisation's
//! filters replayed per endpoint, in the order kube-proxy applies them.

use sluice_model::service::{Endpoint, ServicePort};

use super::model::{EndpointView, Exclusion};
use crate::config::NodeTopology;
use crate::topology::{Categorized, TopologyMode};

/// One view per endpoint; `use_local` selects the set the packet uses.
pub(super) fn endpoint_views(
    endpoints: &[Endpoint],
    port: &ServicePort,
    cat: &Categorized<'_>,
    use_local: bool,
    node: &NodeTopology,
) -> Vec<EndpointView> {
    let chosen = match use_local {
        true => cat.local.as_deref(),
        false => cat.cluster.as_deref(),
    }
    .unwrap_or(&[]);
    (endpoints.iter())
        .map(|ep| {
            let eligible = chosen.iter().any(|c| c.addr() == ep.addr());
            EndpointView {
                address: ep.addr(),
                node: ep.node_name.as_deref().map(str::to_owned),
                zone: ep.zone.as_deref().map(str::to_owned),
                eligible,
                reason: (!eligible).then(|| exclusion(ep, port, cat, use_local, node)),
            }
        })
        .collect()
}

fn exclusion(
    ep: &Endpoint,
    port: &ServicePort,
    cat: &Categorized<'_>,
    use_local: bool,
    node: &NodeTopology,
) -> Exclusion {
    if use_local && !ep.is_local(&node.name) {
        return Exclusion::NotLocal;
    }
    if ep.is_ready(port.publish_not_ready_addresses) {
        // Ready but left out: only topology narrows a set of ready endpoints.
        return match cat.topology {
            TopologyMode::PreferSameNode => Exclusion::OtherNode,
            _ => Exclusion::OtherZone,
        };
    }
    match (ep.terminating, ep.serving) {
        (true, true) => Exclusion::Terminating,
        (true, false) => Exclusion::TerminatingNotServing,
        (false, _) => Exclusion::NotReady,
    }
}
