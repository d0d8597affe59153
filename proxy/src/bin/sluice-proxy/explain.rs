//! `sluice-proxy explain`: read the same sources the daemon reads, once, and say what
//! happens to one packet on this node (or `--from-node`).

use std::time::Duration;

use anyhow::{Context, bail};
use sluice_model::service::IpFamily;
use sluice_proxy_core::config::NodeTopology;
use sluice_proxy_core::config_file::ProxyConfig;
use sluice_proxy_core::config_file::ProxyMode;
use sluice_proxy_core::explain::VerdictView;
use sluice_proxy_core::explain::{self, ExplainArgs, NodeContext, OutputFormat, Packet};
use sluice_proxy_core::source::ManifestsSource;
use sluice_proxy_nftables as nftables;

use crate::run::{backend_options, families, feed, local_addresses, node_name, spawn_source};

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
    snapshot: &sluice_proxy_core::Snapshot,
    args: &ExplainArgs,
    verdict: &VerdictView,
    node_ips: &[std::net::IpAddr],
) -> Option<BackendCheck> {
    if config.mode != ProxyMode::Nftables {
        return None;
    }
    let family = IpFamily::of(&args.dst.ip());
    // The daemon's own rendering settings, so the check traces what it programs.
    let opts = backend_options(config, &[family]);
    let cfg = nftables::NftConfig::of(&opts, family);
    let table = nftables::rendered(&cfg, snapshot);
    let packet = nftables::Packet {
        src: args.src,
        dst: args.dst.ip(),
        proto: nftables::proto(args.proto),
        dport: args.dst.port(),
        origin: if node_ips.contains(&args.src) {
            nftables::Origin::Local
        } else {
            nftables::Origin::Remote
        },
    };
    let outcome = nftables::Tracer::new(&table, node_ips).trace(&packet);
    let unserved = nftables::Unserved::of(snapshot, &cfg, args.dst.ip());
    let agrees = outcome.agrees_with(verdict, unserved);
    let traced = outcome.describe();
    Some(BackendCheck { traced, agrees })
}
