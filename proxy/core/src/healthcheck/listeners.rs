//! One HTTP server per Service on its health-check node port, on each bind
//! address, and the handler that answers every path.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use sluice_model::service::ServiceName;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{Counts, HealthCheckError, ProxyHealthy};
use crate::health::json_response;

/// The open listeners of every Service.
pub(super) struct Listeners {
    runtime: Handle,
    bind_ips: Option<Vec<IpAddr>>,
    counts: Counts,
    proxy_healthy: ProxyHealthy,
    open: BTreeMap<ServiceName, Open>,
}

struct Open {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        // Aborting the accept loop drops the listening socket at once.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Listeners {
    pub(super) fn new(
        runtime: Handle,
        bind_ips: Option<Vec<IpAddr>>,
        counts: Counts,
        proxy_healthy: ProxyHealthy,
    ) -> Self {
        Self {
            runtime,
            bind_ips,
            counts,
            proxy_healthy,
            open: BTreeMap::new(),
        }
    }

    pub(super) fn ports(&self) -> BTreeMap<ServiceName, u16> {
        (self.open.iter())
            .map(|(s, o)| (s.clone(), o.port))
            .collect()
    }

    pub(super) fn set_counts(&self, counts: BTreeMap<ServiceName, usize>) {
        if let Ok(mut shared) = self.counts.write() {
            *shared = counts;
        }
    }

    /// Closes listeners no longer wanted (or on another port), opens the
    /// missing ones; a failed open is reported and retried next time.
    pub(super) fn reconcile(
        &mut self,
        wanted: &BTreeMap<ServiceName, u16>,
    ) -> Vec<HealthCheckError> {
        self.open
            .retain(|service, open| wanted.get(service) == Some(&open.port));
        let mut errors = Vec::new();
        for (service, port) in wanted {
            if self.open.contains_key(service) {
                continue;
            }
            match self.listen(service, *port) {
                Ok(open) => {
                    tracing::info!(%service, port, "opened health check node port");
                    self.open.insert(service.clone(), open);
                }
                Err(error) => errors.push(error),
            }
        }
        errors
    }

    fn listen(&self, service: &ServiceName, port: u16) -> Result<Open, HealthCheckError> {
        let _guard = self.runtime.enter();
        let mut open = Open {
            port,
            tasks: Vec::new(),
        };
        let router = self.router(service);
        for ip in self.addresses() {
            let listener = bind(SocketAddr::new(ip, port)).map_err(|source| HealthCheckError {
                service: service.clone(),
                port,
                ip,
                source,
            })?;
            let router = router.clone();
            open.tasks.push(self.runtime.spawn(async move {
                let _ = axum::serve(listener, router).await;
            }));
        }
        Ok(open)
    }

    /// The bind addresses: the node IPs, or the dual-stack wildcard.
    fn addresses(&self) -> Vec<IpAddr> {
        match &self.bind_ips {
            None => vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            Some(ips) => ips.clone(),
        }
    }

    fn router(&self, service: &ServiceName) -> Router {
        let (service, counts, healthy) = (
            service.clone(),
            self.counts.clone(),
            self.proxy_healthy.clone(),
        );
        Router::new().fallback(move || {
            let count = (counts.read().ok())
                .and_then(|c| c.get(&service).copied())
                .unwrap_or(0);
            let response = answer(&service, count, healthy());
            async move { response }
        })
    }
}

/// Binds with `SO_REUSEADDR`, so a port closed a moment ago can be reopened.
/// The IPv6 wildcard falls back to IPv4's on hosts without IPv6.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let attempt = |addr: SocketAddr| {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    match attempt(addr) {
        Err(_) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            attempt(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        result => result,
    }
}

/// kube-proxy's answer: 200 iff local endpoints and a healthy proxy.
pub(super) fn answer(service: &ServiceName, count: usize, proxy_healthy: bool) -> Response {
    let code = match count > 0 && proxy_healthy {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = json_response(code, body(service, count, proxy_healthy));
    if let Ok(weight) = HeaderValue::from_str(&count.to_string()) {
        (response.headers_mut()).insert("X-Load-Balancing-Endpoint-Weight", weight);
    }
    response
}

/// The body exactly as kube-proxy prints it (tab-indented).
pub(super) fn body(service: &ServiceName, count: usize, proxy_healthy: bool) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name)
    )
}
