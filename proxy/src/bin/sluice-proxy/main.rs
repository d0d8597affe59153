//! `sluice-proxy`: the per-node Service proxy, a kube-proxy replacement. Same flags, same
//! config file, same health and metrics endpoints; Services come from the Kubernetes API or,
//! standalone, from `--manifests-dir`, and are programmed by the `--proxy-mode` backend.
//! The pieces live in the library; this binary parses the configuration and wires them.

mod explain;
mod run;

use std::process::ExitCode;

use sluice_proxy_core::flags::{Action, Flags, Resolved};

fn main() -> ExitCode {
    let flags = match Flags::parse_args(std::env::args_os()) {
        Ok(f) => f,
        // --help and --version print and exit 0; a bad flag or value exits 1, as kube-proxy.
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        Err(e) => e.exit(),
    };
    let Resolved {
        config,
        action,
        ignored_flags,
    } = match flags.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.verbosity);
    for flag in ignored_flags {
        tracing::warn!("{flag} has no effect: --config was given and sets it");
    }
    let result = match action {
        Action::WriteConfig(path) => sluice_proxy_core::config_file::write(&path, &config)
            .map(|()| println!("wrote {}", path.display()))
            .map_err(anyhow::Error::from),
        Action::Cleanup => sluice_proxy::dataplane::Any::cleanup_all().map_err(anyhow::Error::from),
        Action::InitOnly => Ok(()),
        Action::Explain(args) => runtime().and_then(|rt| rt.block_on(explain::run(&config, &args))),
        Action::Run => runtime().and_then(|rt| rt.block_on(run::run(config))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `-v N` as kube-proxy's klog levels: 0-1 info, 2-3 debug, 4+ trace; `RUST_LOG` wins.
fn init_logging(verbosity: u32) {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
