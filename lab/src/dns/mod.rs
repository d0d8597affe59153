//! The lab's cluster DNS (`sluice-lab dns-serve`, run by `up` as the pod `kube-dns` in
//! `kube-system`, on node 1, behind the Service `kube-system/kube-dns` at `10.96.0.10:53`
//! UDP and TCP). Like CoreDNS's kubernetes plugin it watches Services and EndpointSlices
//! through the API (with kube's watcher, from the pod's own namespace, as any pod reaches the
//! API) and answers from a [`zone::Zone`] rebuilt on every change, so a new Service answers as
//! soon as its watch event arrives. The DNS protocol is hickory-server's; clients reach it
//! through the proxy like any Service, in every proxy mode.

pub(crate) mod dig;
mod handler;
mod watch;
pub(crate) mod zone;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_server::Server;

use self::handler::{Handler, Shared};

/// The Service's address: the service CIDR's conventional `.10`.
pub(crate) const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The Service's and the pod's port.
pub(crate) const PORT: u16 = 53;

/// `resolv.conf` of a pod in namespace `ns`, as a kubelet writes it (`dnsPolicy:
/// ClusterFirst`).
pub(crate) fn resolv_conf(ns: &str) -> String {
    let d = zone::DOMAIN;
    format!("search {ns}.svc.{d} svc.{d} {d}\nnameserver {CLUSTER_IP}\noptions ndots:5\n")
}

/// Serves DNS on `listen` (UDP and TCP) with data from the API server at `api`; runs until
/// killed.
pub(crate) fn serve(api: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let zone: Shared = Arc::new(RwLock::new(zone::Zone::default()));
        let _server = start(listen, listen, zone.clone()).await?;
        println!("dns: serving {listen} (UDP, TCP), data from {api}");
        watch::run(api, zone).await
    })
}

/// A server answering from `zone` on `udp` and `tcp` (kept serving while held).
async fn start(udp: SocketAddr, tcp: SocketAddr, zone: Shared) -> anyhow::Result<Server<Handler>> {
    let mut server = Server::new(Handler { zone });
    let socket = tokio::net::UdpSocket::bind(udp)
        .await
        .with_context(|| format!("bind UDP {udp}"))?;
    let listener = tokio::net::TcpListener::bind(tcp)
        .await
        .with_context(|| format!("bind TCP {tcp}"))?;
    server.register_socket(socket);
    server.register_listener(listener, Duration::from_secs(5), 64);
    Ok(server)
}

#[cfg(test)]
mod tests;
