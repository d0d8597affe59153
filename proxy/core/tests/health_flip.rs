//! `/healthz` over HTTP follows the sync loop: 200 while updates are applied, 503 once an
//! update has waited longer than the health timeout because the backend keeps failing, and
//! 200 again after the backend recovers — kube-proxy's semantics, end to end with the
//! runner, the fake backend and the real health server.

mod pipeline;

use std::time::Duration;

use pipeline::{Pipeline, eventually, port_name};
use sluice_model::service::{Endpoint, IpFamily, ServiceName, ServicePort, SliceEndpoints};
use sluice_proxy_core::health::{self, HealthServer, StatusSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The status code of `GET path`.
async fn get(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn service(name: &str, ip: &str, endpoint: &str) -> (ServiceName, ServicePort, SliceEndpoints) {
    let svc = ServiceName::new("web", name);
    let port = ServicePort::plain(
        port_name("web", name, "http"),
        vec![ip.parse().unwrap()],
        80,
    );
    let slice = SliceEndpoints {
        service: svc.clone(),
        slice_name: format!("{name}-1"),
        family: IpFamily::V4,
        ports: [(
            port.name.clone(),
            vec![Endpoint::new(endpoint.parse().unwrap(), 8080)],
        )]
        .into(),
        warnings: vec![],
    };
    (svc, port, slice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_flips_to_503_while_applies_fail_and_back_after_recovery() {
    let pipe = Pipeline::start();
    let timeout = Duration::from_millis(400);
    let source = std::sync::Arc::new(StatusSource::new(pipe.feed.status(), timeout));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(health::serve(
        listener,
        HealthServer::new(source).router(),
        std::future::pending(),
    ));

    let (svc, port, slice) = service("a", "10.96.0.10", "10.1.0.1");
    pipe.feed.update(|s| {
        s.update_service(&svc, std::slice::from_ref(&port));
        s.update_slice(slice.clone());
        true
    });
    pipe.feed.services_listed();
    pipe.feed.slices_listed();
    pipe.settled().await;
    assert_eq!(get(addr, "/healthz").await, 200);

    // Every apply fails from now on: the queued update ages past the timeout.
    pipe.log.fail_next(usize::MAX);
    let (svc, port, slice) = service("b", "10.96.0.11", "10.1.0.2");
    pipe.feed.update(|s| {
        s.update_service(&svc, std::slice::from_ref(&port));
        s.update_slice(slice.clone());
        true
    });
    let mut code = 0;
    for _ in 0..100 {
        code = get(addr, "/healthz").await;
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 503, "healthz while applies fail");
    // livez too (as kube-proxy's: only a Node being deleted affects healthz alone).
    assert_eq!(get(addr, "/livez").await, 503);

    // The backend recovers: the retry applies the update and health comes back.
    pipe.log.fail_next(0);
    eventually("healthz 200 again", || {
        let status = pipe.feed.status();
        !status.borrow().update_pending()
    })
    .await;
    assert_eq!(get(addr, "/healthz").await, 200);
    assert_eq!(get(addr, "/livez").await, 200);
}
