//! `sluice-proxy`: the per-node Service proxy, a kube-proxy replacement. Same flags, same
//! config file, same health and metrics endpoints; Services come from the Kubernetes API or,
//! standalone, from `--manifests-dir`, and are programmed by the `--proxy-mode` backend.
//! The pieces live in the library; this binary parses the configuration and wires them.

mod explain;
mod run;

/// jemalloc instead of glibc's malloc: a sync's transient allocations (the rendered and
/// diffed rules of a cold or read-back sync, tens of MiB at 10,000 Services) are freed in
/// a scattered order, and glibc keeps such freed memory resident in its per-thread arenas
/// (RSS stayed at 128 MiB over a 44 MiB live heap). jemalloc hands unused pages back to the
/// kernel after its decay time (issue 14). Its settings are compiled in: see
/// `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use sluice_proxy_core::flags::{Action, Flags, Resolved};

fn main() -> ExitCode {
    let flags = match parse_flags(std::env::args_os()) {
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
        Action::Cleanup => cleanup(&config),
        Action::InitOnly => init_only(&config),
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

/// What `--version` prints: the version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SLUICE_REVISION"),
    ")"
);

/// The command line, with [`VERSION`] as the version.
fn parse_flags(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Flags, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Flags::command()
        .version(VERSION)
        .try_get_matches_from(args)?;
    Flags::from_arg_matches(&matches)
}

/// `--cleanup`: every mode's state; each failure is reported and the others still run.
fn cleanup(config: &sluice_proxy_core::config_file::ProxyConfig) -> anyhow::Result<()> {
    let failed = sluice_proxy::dataplane::cleanup_all(&config.ebpf);
    for e in &failed {
        eprintln!("sluice-proxy: {}", sluice_proxy_core::backend::chain(e));
    }
    match failed.len() {
        0 => Ok(()),
        n => anyhow::bail!("cleanup failed for {n} proxy mode(s)"),
    }
}

/// `--init-only`: the mode's host setup (sysctls), then exit.
fn init_only(config: &sluice_proxy_core::config_file::ProxyConfig) -> anyhow::Result<()> {
    use sluice_proxy::node;
    use sluice_proxy_core::backend::Backend as _;
    let families = node::families(config);
    let facts = node::NodeFacts::local(config, None);
    let options = node::backend_options(config, &families, &facts);
    let mut backend = sluice_proxy::dataplane::Any::build(config.mode, &options)?;
    Ok(backend.init()?)
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
        // Colours only on a terminal: container logs and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
