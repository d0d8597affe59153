//! `sluice-proxy explain` arguments.

use std::net::{IpAddr, SocketAddr};

use sluice_model::service::Protocol;

/// `explain --src IP --dst IP:PORT [--proto tcp|udp|sctp] [--from-node NAME] [--output json]`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ExplainArgs {
    /// The packet's source address.
    #[arg(long, value_name = "IP")]
    pub src: IpAddr,
    /// The packet's destination address and port ([v6]:port for IPv6).
    #[arg(long, value_name = "IP:PORT")]
    pub dst: SocketAddr,
    /// The packet's protocol.
    #[arg(long, value_name = "PROTO", default_value = "tcp", value_parser = parse_protocol)]
    pub proto: Protocol,
    /// The node the packet arrives at or leaves from (default: this node). Its addresses
    /// come from its Node object (`status.addresses`).
    #[arg(long = "from-node", value_name = "NAME")]
    pub from_node: Option<String>,
    /// An address of the node (repeatable): replaces what the node's interfaces or its Node
    /// object say, for what-if questions.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// `text` (plain words) or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_enum)]
    pub output: OutputFormat,
}

/// How `explain` prints its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Plain words.
    Text,
    /// One JSON object.
    Json,
}

/// `tcp`, `udp` or `sctp`, any case.
pub fn parse_protocol(text: &str) -> Result<Protocol, String> {
    Protocol::from_api(&text.to_ascii_uppercase())
        .ok_or_else(|| format!("{text:?} is not a protocol (tcp, udp or sctp)"))
}
