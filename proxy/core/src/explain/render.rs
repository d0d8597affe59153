//! [`Explanation`] in plain words, and as JSON.

use std::fmt::Write;

use super::model::{EndpointView, Explanation, VerdictView};

/// The explanation as a few lines of plain English.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let p = &e.packet;
    let _ = writeln!(
        out,
        "packet:   {} {} -> {} on node {}",
        p.protocol.to_uppercase(),
        p.src,
        p.dst,
        node(&e.node)
    );
    match (&e.service_port, &e.destination) {
        (Some(name), Some(kind)) => {
            let _ = writeln!(out, "service:  {name} ({kind:?} {})", p.dst);
        }
        _ => {
            let _ = writeln!(out, "service:  none");
        }
    }
    if let Some(policy) = &e.policy {
        let short = if policy.short_circuit {
            ", short-circuited to Cluster"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "policy:   {} traffic from {}, {}: {}{short}",
            policy.traffic, policy.source, policy.field, policy.policy
        );
    }
    if let Some(ranges) = &e.source_ranges {
        let list: Vec<String> = ranges.ranges.iter().map(ToString::to_string).collect();
        let verdict = if ranges.allowed {
            "allowed"
        } else {
            "NOT allowed"
        };
        let _ = writeln!(
            out,
            "sources:  loadBalancerSourceRanges {}: {} {verdict}",
            list.join(", "),
            p.src
        );
    }
    if let Some(topology) = e.topology {
        let _ = writeln!(out, "topology: {topology}");
    }
    if e.terminating_fallback {
        let _ = writeln!(
            out,
            "fallback: no ready endpoint, using serving terminating ones"
        );
    }
    if let Some(seconds) = e.session_affinity_seconds {
        let _ = writeln!(out, "affinity: ClientIP, {seconds}s");
    }
    render_endpoints(&mut out, e);
    let _ = writeln!(out, "verdict:  {}", verdict(&e.verdict));
    for note in &e.notes {
        let _ = writeln!(out, "note:     {note}");
    }
    out
}

fn render_endpoints(out: &mut String, e: &Explanation) {
    if e.service_port.is_none() {
        return;
    }
    if e.endpoints.is_empty() {
        let _ = writeln!(out, "endpoints: none");
        return;
    }
    let _ = writeln!(out, "endpoints:");
    for ep in &e.endpoints {
        let _ = writeln!(
            out,
            "  {:<24} {:<28} {}",
            ep.address.to_string(),
            place(ep),
            eligibility(ep)
        );
    }
}

fn node(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}

fn place(ep: &EndpointView) -> String {
    let node = ep.node.as_deref().unwrap_or("?");
    match &ep.zone {
        Some(zone) => format!("node {node}, zone {zone}"),
        None => format!("node {node}"),
    }
}

fn eligibility(ep: &EndpointView) -> String {
    match ep.reason {
        None => "eligible".to_owned(),
        Some(reason) => format!("not eligible: {}", reason.describe()),
    }
}

fn verdict(v: &VerdictView) -> String {
    match v {
        VerdictView::Dnat {
            endpoints,
            masquerade,
            hairpin_masquerade,
        } => {
            let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
            let masq = match (masquerade, hairpin_masquerade) {
                (true, _) => ", source masqueraded",
                (false, true) => ", source masqueraded when it reaches itself (hairpin)",
                (false, false) => ", source kept",
            };
            format!("DNAT to one of {}{masq}", list.join(", "))
        }
        VerdictView::RejectNoEndpoints => "REJECT: the Service has no usable endpoints".to_owned(),
        VerdictView::DropNoEndpoints => {
            "DROP: the Service has no usable endpoints (this mode cannot reject)".to_owned()
        }
        VerdictView::RejectUnservedPort => {
            "REJECT: no Service serves this port of the ClusterIP".to_owned()
        }
        VerdictView::DropUnallocatedClusterIp => {
            "DROP: an unallocated address of the service CIDRs".to_owned()
        }
        VerdictView::DropNoLocalEndpoints => {
            "DROP: no usable endpoint on this node and the policy is Local".to_owned()
        }
        VerdictView::DropSourceRange => {
            "DROP: the source is outside loadBalancerSourceRanges".to_owned()
        }
        VerdictView::NoService => "no Service: the proxy does not touch this packet".to_owned(),
    }
}

/// The explanation as pretty-printed JSON.
pub fn render_json(e: &Explanation) -> String {
    // Plain data with string keys: serialisation cannot fail.
    serde_json::to_string_pretty(e).unwrap_or_default()
}
