//! `sluice-proxy explain`: read the same sources the daemon reads, once, and say what
//! happens to one packet on this node (or `--from-node`).

use std::time::Duration;

use anyhow::{Context, bail};
use sluice_model::service::IpFamily;
use sluice_proxy::config::NodeTopology;
use sluice_proxy::config_file::ProxyConfig;
use sluice_proxy::explain::{self, ExplainArgs, NodeContext, OutputFormat, Packet};
use sluice_proxy::source::ManifestsSource;

use crate::run::{families, feed, node_name, spawn_source};

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
        node_ips: Vec::new(),
        pod_cidrs: config.cluster_cidrs.clone(),
    };
    let packet = Packet {
        src: args.src,
        dst: args.dst,
        protocol: args.proto,
    };
    let e = explain::explain(&snapshot, &ctx, &packet)?;
    match args.output {
        OutputFormat::Text => print!("{}", explain::render_text(&e)),
        OutputFormat::Json => println!("{}", explain::render_json(&e)),
    }
    Ok(())
}
