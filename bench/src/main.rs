//! `sluice-bench`: standalone packet and control-plane benchmarks.
//!
//! The workspace, shared model and test bed exist; this binary's behaviour is built in its own
//! issue. Until then it says so and exits non-zero, so nothing mistakes it for a working daemon.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("sluice-bench: not built yet in this version of Sluice");
    ExitCode::from(2)
}
