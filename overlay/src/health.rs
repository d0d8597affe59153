//! `/healthz`: 200 while reconciles keep succeeding, 503 once the last good one is older than
//! two periods (the loop is stuck or every reconcile fails) — so a liveness probe restarts a
//! daemon that stopped healing, which flannel's always-200 endpoint cannot do. A peer lease
//! that is skipped as invalid does not count against health (one bad peer must not make
//! every node's probe fail): it is listed in the body and counted on `/metrics`, which
//! serves the same state in the Prometheus text format.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::time::Instant;

use crate::sync::SharedHealth;
use crate::validate::Reason;

/// The verdict and JSON body for the current health state.
pub fn verdict(health: &SharedHealth, period: Duration, now: Instant) -> (StatusCode, String) {
    let h = health.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let fresh = h
        .last_ok
        .is_some_and(|t| now.duration_since(t) <= period * 2);
    let age = h.last_ok.map(|t| now.duration_since(t).as_secs_f64());
    let skipped: Vec<String> = h.skipped.iter().map(ToString::to_string).collect();
    let body = serde_json::json!({
        "healthy": fresh,
        "reconciles": h.reconciles,
        "secondsSinceLastGoodReconcile": age,
        "lastError": h.last_error,
        "skippedLeases": skipped,
    });
    let code = if fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

/// The metrics in the Prometheus text exposition format.
pub fn metrics(health: &SharedHealth) -> String {
    let h = health.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| [(String::new(), v)];
    metric(
        "sluice_overlay_reconciles_total",
        "counter",
        "Reconciles run since the daemon started.",
        &one(h.reconciles),
    );
    metric(
        "sluice_overlay_reconcile_failures_total",
        "counter",
        "Reconciles that failed or left kernel operations failed.",
        &one(h.failed_reconciles),
    );
    let by_reason: Vec<(String, u64)> = Reason::ALL
        .iter()
        .map(|r| {
            let n = h.skipped.iter().filter(|s| s.reason == *r).count();
            (format!("{{reason=\"{}\"}}", r.label()), n as u64)
        })
        .collect();
    metric(
        "sluice_overlay_skipped_leases",
        "gauge",
        "Peer leases (or their routes) the last reconcile did not program, by reason.",
        &by_reason,
    );
    out
}

#[derive(Clone)]
struct Ctx {
    health: SharedHealth,
    period: Duration,
}

async fn healthz(State(ctx): State<Ctx>) -> (StatusCode, String) {
    verdict(&ctx.health, ctx.period, Instant::now())
}

async fn metrics_route(
    State(ctx): State<Ctx>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics(&ctx.health),
    )
}

/// Serves `/healthz` and `/metrics` on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    health: SharedHealth,
    period: Duration,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_route))
        .with_state(Ctx { health, period });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sync::Health;

    #[tokio::test(start_paused = true)]
    async fn healthy_only_while_reconciles_are_recent() {
        let period = Duration::from_secs(10);
        let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
        assert_eq!(
            verdict(&health, period, Instant::now()).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.lock().unwrap().last_ok = Some(Instant::now());
        assert_eq!(verdict(&health, period, Instant::now()).0, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(21)).await;
        let (code, body) = verdict(&health, period, Instant::now());
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""healthy":false"#), "{body}");
    }

    #[tokio::test]
    async fn serves_http_on_loopback() {
        let health: SharedHealth = Arc::new(Mutex::new(Health::default()));
        health.lock().unwrap().last_ok = Some(Instant::now());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = tokio::spawn(serve(addr, health, Duration::from_secs(10)));
        let mut reply = String::new();
        for _ in 0..50 {
            if let Ok(r) = http_get(addr).await {
                reply = r;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains(r#""healthy":true"#), "{reply}");
    }

    async fn http_get(addr: SocketAddr) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }
}
