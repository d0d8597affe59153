//! `sluice-proxy explain`: read the same sources the daemon reads, once, and say what
//! happens to one packet on this node (or `--from-node`), then trace the same packet
//! through the rules the proxy mode programs and say whether they agree.

use std::time::Duration;

use anyhow::{Context, bail};
use sluice_model::service::IpFamily;
use sluice_proxy::dataplane;
use sluice_proxy::node::{self, NodeFacts};
use sluice_proxy_core::config::NodeTopology;
use sluice_proxy_core::config_file::ProxyConfig;
use sluice_proxy_core::explain::{self, ExplainArgs, OutputFormat, Packet};
use sluice_proxy_core::runner::Feed;
use sluice_proxy_core::source::ManifestsSource;

use crate::run::{feed, kube_client, node_name, spawn_source, this_node};

pub(crate) async fn run(config: &ProxyConfig, args: &ExplainArgs) -> anyhow::Result<()> {
    let node = match &args.from_node {
        Some(n) => n.clone(),
        None => node_name(config)?,
    };
    let family = IpFamily::of(&args.dst.ip());
    let fams = node::families(config);
    if !fams.contains(&family) {
        bail!(
            "{} is {family:?}, which this proxy does not serve",
            args.dst
        );
    }
    let feed = feed(config, &node, &fams);
    let client = match &config.manifests_dir {
        Some(_) => None,
        None => Some(kube_client(config).await?),
    };
    load(config, &node, &feed, client.clone()).await?;
    let snapshot = feed
        .with_state(family, |s| s.sync().0)
        .context("no state for the destination's family")?;
    let topology = snapshot.node().clone();
    let facts = facts(config, args, &node, &topology, client.as_ref()).await?;
    let opts = node::backend_options(config, &[family], &facts);
    let dialect = dataplane::dialect(config.mode, &opts);
    let ctx = node::node_context(&opts, &facts, topology, dialect);
    let packet = Packet {
        src: args.src,
        dst: args.dst,
        protocol: args.proto,
    };
    let e = explain::explain(&snapshot, &ctx, &packet)?;
    // On this node the rules are read back from the kernel where the mode can; for another
    // node (`--from-node`) only its rendering can be traced.
    let check = match args.from_node {
        None => {
            dataplane::check_programmed(config.mode, &opts, &snapshot, &ctx, &packet, &e.verdict)
        }
        Some(_) => dataplane::check(config.mode, &opts, &snapshot, &ctx, &packet, &e.verdict),
    };
    match args.output {
        OutputFormat::Text => {
            print!("{}", explain::render_text(&e));
            if let Some(c) = &check {
                println!("{}", c.describe());
            }
        }
        OutputFormat::Json => {
            let mut v = serde_json::from_str::<serde_json::Value>(&explain::render_json(&e))?;
            if let Some(c) = &check {
                v["backendCheck"] = c.json();
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    match check {
        Some(c) if !c.agrees => bail!("the {} rules and the model disagree", c.mode),
        _ => Ok(()),
    }
}

/// Feeds the Services, EndpointSlices and the node's Node object, once.
async fn load(
    config: &ProxyConfig,
    node: &str,
    feed: &Feed,
    client: Option<kube::Client>,
) -> anyhow::Result<()> {
    if let Some(dir) = &config.manifests_dir {
        ManifestsSource::new(dir.clone(), node).scan(feed)?;
        return Ok(());
    }
    spawn_source(config, node, feed, client).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !feed.is_initialized() {
        if tokio::time::Instant::now() > deadline {
            bail!("the Services and EndpointSlices could not be listed within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Node watch runs beside the lists; give it a moment to deliver.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// The node's addresses: `--node-ip` when given; for another node, its Node object's; for
/// this node, its interfaces'.
async fn facts(
    config: &ProxyConfig,
    args: &ExplainArgs,
    node: &str,
    topology: &NodeTopology,
    client: Option<&kube::Client>,
) -> anyhow::Result<NodeFacts> {
    if !args.node_ips.is_empty() {
        return Ok(NodeFacts::from_addresses(
            config,
            args.node_ips.clone(),
            None,
        ));
    }
    if args.from_node.is_none() {
        return Ok(this_node(config, node, client).await);
    }
    if topology.addresses.is_empty() {
        bail!(
            "node {node} has no addresses: no Node object named {node} with status.addresses \
             was found (give them with --node-ip)"
        );
    }
    Ok(NodeFacts::from_addresses(
        config,
        topology.addresses.clone(),
        Some(topology),
    ))
}
