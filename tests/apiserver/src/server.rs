//! Running the HTTP server on its own thread and runtime.
//!
//! Owning the runtime lets plain `#[test]` functions use the server, and keeps it alive
//! independently of whichever runtime (if any) the test's client runs on.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::shared::Shared;

/// A server thread and how to stop it.
#[derive(Debug)]
pub(crate) struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Binding or configuring the listener failed.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Binds `ip` on a free port (in the calling thread's network namespace).
pub(crate) fn bind(ip: IpAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind((ip, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves `shared` on `listener` from a new thread.
pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> Result<Running, StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("test-apiserver")
        .enable_all()
        .build()?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("test-apiserver".into())
        .spawn(move || {
            runtime.block_on(serve(listener, shared, stopped));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(Running {
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "test api server cannot adopt its listener");
            return;
        }
    };
    let app = crate::router::router(Arc::clone(&shared));
    let (stopping, mut stopping_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let _ = stopped.await;
        shared.close_watches();
        stopping.send_replace(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    // Connections that clients keep open must not keep the test process waiting.
    let grace = async move {
        let _ = stopping_rx.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        result = server => if let Err(e) = result {
            tracing::error!(error = %e, "test api server failed");
        },
        () = grace => {}
    }
}

impl Running {
    /// Stops the server, waiting at most about a second for open connections.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
