//! Helpers the kernel tests of the real binary share.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Retries `f` until it returns `Some` or `limit` passes.
pub(crate) fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ip:port`.
pub(crate) fn vip(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}
