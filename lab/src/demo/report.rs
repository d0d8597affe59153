//! The demo's results table: each check is printed as it finishes (so a slow step shows
//! progress), and a summary decides the exit code.

use std::time::{Duration, Instant};

/// One finished check.
struct Row {
    what: String,
    detail: String,
    ok: bool,
    took: Duration,
}

/// Collects and prints check results.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Prints the table header.
    pub(crate) fn header(&self) {
        println!("{:<48} {:<6} {:>9}  detail", "check", "result", "time");
        println!("{}", "-".repeat(100));
    }

    /// Runs `check`, records and prints its outcome. The closure returns the detail text.
    pub(crate) fn check<F>(&mut self, what: &str, check: F) -> bool
    where
        F: FnOnce() -> anyhow::Result<String>,
    {
        let start = Instant::now();
        let (ok, detail) = match check() {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("{e:#}")),
        };
        let row = Row {
            what: what.to_owned(),
            detail,
            ok,
            took: start.elapsed(),
        };
        println!(
            "{:<48} {:<6} {:>7.1}ms  {}",
            row.what,
            if row.ok { "pass" } else { "FAIL" },
            row.took.as_secs_f64() * 1e3,
            row.detail
        );
        self.rows.push(row);
        ok
    }

    /// Prints the summary line; true when every check passed.
    pub(crate) fn finish(&self) -> bool {
        let failed = self.rows.iter().filter(|r| !r.ok).count();
        println!("{}", "-".repeat(100));
        println!("{} passed, {} failed", self.rows.len() - failed, failed);
        failed == 0
    }
}
