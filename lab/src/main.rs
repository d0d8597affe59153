//! `sluice-lab`: a whole cluster's dataplane on one machine — nodes and pods in network
//! namespaces, the real Sluice daemons in each node, pods wired by the real CNI plugin, the
//! in-memory API server on the underlay with an EndpointSlice controller — in seconds, with no
//! Docker. `up` builds it and leaves it running, `down` removes it, `exec`/`curl` run things
//! inside it, and `demo` builds one, checks it with real traffic and removes it. Needs root.

mod api;
mod cgroups;
mod cni;
mod conformance;
mod daemons;
mod demo;
mod dns;
mod down;
mod echo;
mod exec;
mod image;
mod labd;
mod labdir;
mod resolv;
mod soak;
mod spawn;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::daemons::{Binaries, SubnetManager};
use crate::labdir::LabDir;

/// Sluice's lab: a cluster's dataplane in network namespaces on this machine.
#[derive(Parser)]
#[command(name = "sluice-lab", version)]
struct Cli {
    /// Where the Sluice binaries are (default: next to this one, as cargo builds them).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// The lab directory: state, kubeconfig, logs [default: /run/sluice-lab; demo:
    /// /run/sluice-lab-demo].
    #[arg(long, global = true)]
    lab_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `--image`: run the DaemonSet's containers from an image instead of the binaries.
#[derive(clap::Args, Clone, Debug)]
struct ImageArgs {
    /// Run install-cni, the overlay and the proxy from this image (podman), with the
    /// DaemonSet's command lines, volumes and capabilities from --manifest [default: the
    /// image the manifest names, as scripts/image tags it].
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "IMAGE")]
    image: Option<String>,
    /// The manifest whose DaemonSet --image runs [default: deploy/sluice.yaml of this
    /// repository].
    #[arg(long, requires = "image")]
    manifest: Option<PathBuf>,
}

impl ImageArgs {
    fn manifest(&self) -> PathBuf {
        self.manifest
            .clone()
            .unwrap_or_else(image::manifest::default_path)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Build a lab and leave it running.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        #[arg(long, default_value_t = 2)]
        pods_per_node: u8,
        /// sluice-proxy's --proxy-mode.
        #[arg(long, default_value = "nftables")]
        proxy_mode: String,
        #[arg(long, value_enum, default_value = "kube")]
        subnet_manager: SubnetManager,
        /// Prefix of the lab's namespace names.
        #[arg(long, default_value = "lab")]
        name: String,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Remove everything the lab created (also after a failed or killed `up`).
    Down,
    /// Run a command inside a lab pod, node (node1..), `client` or `underlay`.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// HTTP GET from inside a lab pod (or node, client), printing the answer.
    Curl { name: String, url: String },
    /// One DNS query to the cluster DNS (10.96.0.10) from inside a lab pod: `dig web-1
    /// _http._tcp.web.default.svc.cluster.local SRV`.
    Dig {
        name: String,
        query: String,
        #[arg(default_value = "A")]
        kind: String,
    },
    /// Build a 2-node lab, check Services with real traffic, print the results, remove it.
    Demo {
        #[arg(long, default_value = "lab-demo")]
        name: String,
        /// sluice-proxy's --proxy-mode.
        #[arg(long, default_value = "nftables")]
        proxy_mode: String,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Run the Service conformance suite with real traffic in a 2-node lab, print the
    /// results, remove the lab.
    Conformance {
        /// sluice-proxy's --proxy-mode.
        #[arg(long, default_value = "nftables")]
        proxy_mode: String,
        /// Only these scenarios (repeatable; default: all).
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Prefix of the lab's namespace names.
        #[arg(long, default_value = "lab-conf")]
        name: String,
    },
    /// Build a 2-node lab, churn it (pods through CNI, rolling endpoints, Services created
    /// and deleted) while clients talk to Services with ready endpoints, check that nothing
    /// failed, grew or leaked, print the figures, remove the lab.
    Soak {
        /// How long to churn (`90s`, `10m`).
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// sluice-proxy's --proxy-mode.
        #[arg(long, default_value = "nftables")]
        proxy_mode: String,
        /// Prefix of the lab's namespace names.
        #[arg(long, default_value = "lab-soak")]
        name: String,
        /// Copy the lab's logs (daemons, pods) into this directory before removing it.
        #[arg(long)]
        keep_logs: Option<PathBuf>,
    },
    /// The lab daemon (started by `up`).
    #[command(hide = true)]
    Labd {
        #[arg(long)]
        underlay: String,
    },
    /// A pod's echo server (started by `up` inside the pod).
    #[command(hide = true)]
    PodServe {
        #[arg(long)]
        name: String,
        /// A port to serve on (TCP and UDP); repeatable.
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// The cluster DNS server (started by `up` inside the kube-dns pod).
    #[command(hide = true)]
    DnsServe {
        /// The API server's URL (as a pod reaches it).
        #[arg(long)]
        api: String,
        #[arg(long, default_value = "0.0.0.0:53")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !sluice_testbed::is_root() {
        eprintln!("sluice-lab: must run as root (it builds network namespaces)");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let default = match cli.command {
        Command::Demo { .. } => "/run/sluice-lab-demo",
        Command::Conformance { .. } => "/run/sluice-lab-conformance",
        Command::Soak { .. } => "/run/sluice-lab-soak",
        _ => labdir::DEFAULT_DIR,
    };
    let root = cli.lab_dir.unwrap_or_else(|| default.into());
    let root = std::path::absolute(&root).context("lab directory")?;
    let dir = LabDir::new(root);
    match cli.command {
        Command::Up {
            nodes,
            pods_per_node,
            proxy_mode,
            subnet_manager,
            name,
            image,
        } => {
            let opts = up::Options {
                name,
                nodes,
                pods_per_node,
                proxy_mode,
                subnet_manager,
                manifest: image.manifest(),
                image: image.image,
            };
            let bins = Binaries::find(cli.bin_dir, opts.image.is_none())?;
            cmd_up(dir, bins, opts)
        }
        Command::Down => {
            let r = down::run(&dir)?;
            println!(
                "removed {} namespaces, {} lab daemon(s), {} container(s) and {}",
                r.namespaces,
                r.processes,
                r.containers,
                dir.root().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { name, cmd } => exec::exec(&dir, &name, &cmd),
        Command::Curl { name, url } => exec::curl(&dir, &name, &url),
        Command::Dig { name, query, kind } => exec::dig(&dir, &name, &query, &kind),
        Command::Demo {
            name,
            proxy_mode,
            image,
        } => {
            let bins = Binaries::find(cli.bin_dir, image.image.is_none())?;
            let manifest = image.manifest();
            Ok(demo::run(
                dir,
                bins,
                name,
                proxy_mode,
                image.image,
                manifest,
            ))
        }
        Command::Conformance {
            proxy_mode,
            scenarios,
            name,
        } => Ok(conformance::run(
            dir,
            Binaries::find(cli.bin_dir, true)?,
            conformance::Options {
                mode: proxy_mode,
                only: scenarios,
                name,
            },
        )),
        Command::Soak {
            duration,
            proxy_mode,
            name,
            keep_logs,
        } => Ok(soak::run(
            dir,
            Binaries::find(cli.bin_dir, true)?,
            soak::SoakOptions {
                name,
                proxy_mode,
                duration,
                keep_logs,
            },
        )),
        Command::Labd { underlay } => labd::run(&dir, &underlay).map(|()| ExitCode::SUCCESS),
        Command::PodServe { name, ports } => echo::serve(&name, &ports).map(|()| ExitCode::SUCCESS),
        Command::DnsServe { api, listen } => dns::serve(&api, listen).map(|()| ExitCode::SUCCESS),
    }
}

/// A Go-style duration (`90s`, `10m`, `1h30m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    sluice_proxy_core::config_file::duration::parse(text).map_err(|e| e.to_string())
}

/// Runs every step with progress; on failure removes what was built.
fn cmd_up(dir: LabDir, bins: Binaries, opts: up::Options) -> anyhow::Result<ExitCode> {
    let mut lab = up::Lab::begin(dir.clone(), bins, opts)?;
    for (what, step) in lab.steps() {
        let start = std::time::Instant::now();
        match step(&mut lab) {
            Ok(detail) => println!(
                "{what:<44} {:>7.0} ms  {detail}",
                start.elapsed().as_secs_f64() * 1e3
            ),
            Err(e) => {
                eprintln!("{what}: FAILED: {e:#}\nremoving the partial lab");
                down::run(&dir)?;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    up::print_usage(&dir, &lab.state);
    Ok(ExitCode::SUCCESS)
}
