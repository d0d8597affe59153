//! `sluice`, the CNI plugin: bridge + veth + host-local-compatible IPAM in one exec, and a
//! drop-in for flannel's CNI plugin (same conflist keys, same subnet.env). Small and fast: it
//! sits on every pod's start-up path, so no async runtime and no Kubernetes client.
//!
//! [`run`] is the whole plugin as a function of its environment and stdin, so every spec
//! behaviour is tested without exec; `main.rs` only does I/O.

mod add;
mod attach;
mod check;
pub mod config;
mod config_types;
mod del;
pub use del::reap_link;
pub mod env;
pub mod error;
mod gc;
pub mod install;
pub mod ipam;
mod log;
pub mod masq;
pub mod netns;
pub mod nl;
pub mod plan;
pub mod result;
mod status;
pub mod version;

use std::collections::BTreeMap;

use config::NetConf;
use env::{Command, Env};
use error::CniError;

/// One invocation's outcome: what to print on stdout and whether it is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The result or error JSON (empty for commands without a result).
    pub stdout: String,
    /// True when the plugin must exit non-zero.
    pub failed: bool,
}

/// How DEL removes the veth pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Teardown {
    /// Delete it and wait for the kernel (tests, library use).
    #[default]
    Wait,
    /// Hand the deletion to a detached `<exe> reap-link NAME` and return at once: the
    /// kernel's unregistering of a device (an RCU barrier, ~15 ms here) is most of a DEL,
    /// and nothing a runtime does next needs the old device gone (an ADD of the same
    /// attachment removes a leftover itself).
    Detached(std::path::PathBuf),
}

/// Runs one CNI invocation.
pub fn run(vars: &BTreeMap<String, String>, stdin: &[u8]) -> Outcome {
    run_with(vars, stdin, &Teardown::Wait)
}

/// Runs one CNI invocation with the given DEL teardown.
pub fn run_with(vars: &BTreeMap<String, String>, stdin: &[u8], teardown: &Teardown) -> Outcome {
    let start = std::time::Instant::now();
    let version = input_version(stdin);
    let result = dispatch(vars, stdin, teardown);
    log::record(vars, stdin, &result, start.elapsed());
    match result {
        Ok(stdout) => Outcome {
            stdout,
            failed: false,
        },
        Err(e) => Outcome {
            stdout: e.to_json(&version),
            failed: true,
        },
    }
}

fn dispatch(
    vars: &BTreeMap<String, String>,
    stdin: &[u8],
    teardown: &Teardown,
) -> Result<String, CniError> {
    let env = Env::from_map(vars)?;
    if env.command == Command::Version {
        return Ok(version::version_result(&input_version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    version::check(&conf.cni_version, env.command)?;
    match env.command {
        Command::Status => status::status(&conf).map(|()| String::new()),
        Command::Add => add::add(&env, &conf),
        Command::Del => del::del(&env, &conf, teardown),
        Command::Check => check::check(&env, &conf),
        Command::Gc => gc::gc(&conf),
        Command::Version => Ok(String::new()),
    }
}

/// The `cniVersion` of stdin, for answering in kind even when the rest is unusable.
fn input_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| version::LATEST.to_owned())
}
