//! Bounded waiting: every wait in the lab has a deadline and says what it waited for.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Retries `f` every 50 ms until it returns `Some`, failing after `limit` with `what` and the
/// last error.
pub(crate) fn eventually<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!(": {e:#}"),
        }
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}{last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
