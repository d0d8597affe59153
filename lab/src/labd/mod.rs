//! The lab daemon (`sluice-lab labd`, started by `up`, killed by `down`): it holds the
//! in-memory API server (listening on the underlay for the nodes, forwarded to the host's
//! loopback for kubectl) and runs the EndpointSlice controller and the node lifecycle
//! (`Ready` conditions), so creating a Service with
//! a selector is all a user does. It runs in the host namespace (for the loopback listener)
//! and enters the underlay only on the threads that need it.

mod controller;
mod forward;
mod nodes;
pub(crate) mod slices;

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use anyhow::Context;
use serde_json::json;
use sluice_testbed::NetNs;
use sluice_testbed::apiserver::{Config, TestApiServer, kubeconfig_yaml};

use crate::labdir::{LabDir, write_atomic};

/// The API server's address on the underlay.
pub(crate) const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

/// Written once the server listens: `{"host_url": …, "node_url": …}`.
pub(crate) const READY_FILE: &str = "api.json";

/// Runs until killed.
pub(crate) fn run(dir: &LabDir, underlay: &str) -> anyhow::Result<()> {
    let underlay = NetNs::open(underlay)?;
    let config = Config {
        bind: IpAddr::V4(API_IP),
        ..Config::default()
    };
    let server = underlay
        .run(move || TestApiServer::start_with(config))?
        .context("start the API server on the underlay")?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1")?;
    let host_url = format!("http://{}", listener.local_addr()?);
    forward::spawn(&underlay, listener, server.addr())?;
    write_atomic(
        &dir.path("kubeconfig"),
        kubeconfig_yaml(&host_url).as_bytes(),
    )?;
    write_atomic(
        &dir.path("kubeconfig.node"),
        server.kubeconfig_yaml().as_bytes(),
    )?;
    let ready = json!({"host_url": host_url, "node_url": server.url()});
    write_atomic(&dir.path(READY_FILE), ready.to_string().as_bytes())?;
    println!("API server {} (host: {host_url})", server.url());
    let server = std::sync::Arc::new(server);
    let (lifecycle, lab) = (server.clone(), dir.clone());
    std::thread::Builder::new()
        .name("node-lifecycle".into())
        .spawn(move || nodes::run(&lifecycle, &lab))?;
    controller::run(&server)
}
