//! `sluice-proxy explain`: read the same sources the daemon reads, once, and say what
//! happens to one packet on this node (or `--from-node`).

use std::time::Duration;

use anyhow::{Context, bail};
use sluice_model::service::{IpFamily, Protocol};
use sluice_nft::Proto;
use sluice_proxy::backend::BackendOptions;
use sluice_proxy::config::NodeTopology;
use sluice_proxy::config_file::ProxyConfig;
use sluice_proxy::config_file::ProxyMode;
use sluice_proxy::explain::VerdictView;
use sluice_proxy::explain::{self, ExplainArgs, NodeContext, OutputFormat, Packet};
use sluice_proxy::nftables;
use sluice_proxy::source::ManifestsSource;

use crate::run::{families, feed, local_addresses, node_name, spawn_source};

pub(crate) async fn run(config: &ProxyConfig, args: &ExplainArgs) -> anyhow::Result<()> {
    let node = match &args.from_node {
        Some(n) => n.clone(),
        None => node_name(config)?,
    };
    let family = IpFamily::of(&args.dst.ip());
    let fams = families(config);
    if !fams.contains(&family) {
        bail!(
            "{} is {family:?}, which this proxy does not serve",
            args.dst
        );
    }
    let feed = feed(config, &node, &fams);
    if let Some(dir) = &config.manifests_dir {
        ManifestsSource::new(dir.clone(), &node).scan(&feed)?;
    } else {
        spawn_source(config, &node, &feed).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !feed.is_initialized() {
            if tokio::time::Instant::now() > deadline {
                bail!("the Services and EndpointSlices could not be listed within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let snapshot = feed
        .with_state(family, |s| s.sync().0)
        .context("no state for the destination's family")?;
    let ctx = NodeContext {
        topology: NodeTopology {
            name: node,
            zone: snapshot.node().zone.clone(),
        },
        // This node's addresses (node ports, node-originated sources); unknown for another.
        node_ips: if args.from_node.is_some() {
            Vec::new()
        } else {
            local_addresses()
        },
        pod_cidrs: config.cluster_cidrs.clone(),
    };
    let packet = Packet {
        src: args.src,
        dst: args.dst,
        protocol: args.proto,
    };
    let e = explain::explain(&snapshot, &ctx, &packet)?;
    let check = backend_check(config, &snapshot, args, &e.verdict, &ctx.node_ips);
    match args.output {
        OutputFormat::Text => {
            print!("{}", explain::render_text(&e));
            if let Some(c) = &check {
                println!(
                    "nftables rules: {} ({})",
                    c.traced,
                    if c.agrees {
                        "agrees"
                    } else {
                        "DISAGREES with the model"
                    }
                );
            }
        }
        OutputFormat::Json => {
            let mut v = serde_json::from_str::<serde_json::Value>(&explain::render_json(&e))?;
            if let Some(c) = &check {
                v["backendCheck"] =
                    serde_json::json!({"mode": "nftables", "traced": c.traced, "agrees": c.agrees});
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    match check {
        Some(c) if !c.agrees => bail!("the rendered nftables rules and the model disagree"),
        _ => Ok(()),
    }
}

/// What the rendered nftables rules do with the packet, by the tracer.
struct BackendCheck {
    traced: String,
    agrees: bool,
}

/// In nftables mode, walks the rules this proxy would program for the same snapshot and
/// compares the outcome with the model's verdict.
fn backend_check(
    config: &ProxyConfig,
    snapshot: &sluice_proxy::Snapshot,
    args: &ExplainArgs,
    verdict: &VerdictView,
    node_ips: &[std::net::IpAddr],
) -> Option<BackendCheck> {
    if config.mode != ProxyMode::Nftables {
        return None;
    }
    let family = IpFamily::of(&args.dst.ip());
    let opts = BackendOptions {
        families: vec![family],
        local_cidrs: config.cluster_cidrs.clone(),
        masquerade_all: config.masquerade_all,
        ..BackendOptions::default()
    };
    let table = nftables::rendered(&opts.nft_config(family), snapshot);
    let packet = nftables::Packet {
        src: args.src,
        dst: args.dst.ip(),
        proto: match args.proto {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
            Protocol::Sctp => Proto::Sctp,
        },
        dport: args.dst.port(),
        origin: if node_ips.contains(&args.src) {
            nftables::Origin::Local
        } else {
            nftables::Origin::Remote
        },
    };
    let outcome = nftables::Tracer::new(&table, node_ips).trace(&packet);
    let (traced, agrees) = match (&outcome, verdict) {
        (
            nftables::Outcome::Dnat {
                endpoints,
                masquerade,
            },
            VerdictView::Dnat { endpoints: model },
        ) => {
            let same = endpoints.iter().copied().collect::<Vec<_>>() == {
                let mut m = model.clone();
                m.sort();
                m
            };
            let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
            let masq = if *masquerade {
                ", source masqueraded"
            } else {
                ""
            };
            (format!("DNAT to one of {}{masq}", list.join(", ")), same)
        }
        // kube-proxy's cluster-ips-check: other ports of a ClusterIP are rejected, not
        // left alone (the model only knows Service ports, so it says "no service").
        (nftables::Outcome::Reject, VerdictView::NoService) => {
            let cluster_ip = snapshot
                .service_ports()
                .any(|p| p.cluster_ips.contains(&args.dst.ip()));
            ("REJECT (not a port of this ClusterIP)".into(), cluster_ip)
        }
        (nftables::Outcome::Reject, v) => ("REJECT".into(), *v == VerdictView::RejectNoEndpoints),
        (nftables::Outcome::Drop, v) => (
            "DROP".into(),
            matches!(
                v,
                VerdictView::DropNoLocalEndpoints | VerdictView::DropSourceRange
            ),
        ),
        (nftables::Outcome::Untouched, v) => (
            "not a Service (untouched)".into(),
            *v == VerdictView::NoService,
        ),
        (o, _) => (format!("{o:?}"), false),
    };
    Some(BackendCheck { traced, agrees })
}
