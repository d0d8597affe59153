//! Finding the real Sluice binaries and the command lines the lab runs them with: per node
//! `sluice-overlay` (flannel's flags) and `sluice-proxy` (kube-proxy's flags), and etcd for
//! the etcd subnet manager. The binaries are found next to `sluice-lab` (cargo builds them all
//! into one directory) or in `--bin-dir`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The binaries the lab runs.
#[derive(Clone, Debug)]
pub(crate) struct Binaries {
    dir: PathBuf,
    lab: PathBuf,
}

/// How a node's overlay finds its subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SubnetManager {
    /// Node `podCIDR`s and annotations in the API server (`--kube-subnet-mgr`).
    Kube,
    /// Leases in an etcd running on the underlay.
    Etcd,
}

impl SubnetManager {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Kube => "kube",
            Self::Etcd => "etcd",
        }
    }
}

/// Where etcd listens, inside the underlay namespace.
pub(crate) const ETCD_URL: &str = "http://192.168.0.1:2379";
/// flannel's etcd prefix.
pub(crate) const ETCD_PREFIX: &str = "/coreos.com/network";

impl Binaries {
    /// `dir`, or the directory of this executable; fails clearly when a binary is missing
    /// (only this one is needed when `daemons` is false: `--image` brings the others).
    pub(crate) fn find(dir: Option<PathBuf>, daemons: bool) -> anyhow::Result<Self> {
        let lab = std::env::current_exe().context("locate sluice-lab")?;
        let dir = match dir {
            Some(d) => d,
            None => lab
                .parent()
                .context("sluice-lab has no directory")?
                .to_path_buf(),
        };
        let bins = Self { dir, lab };
        for (bin, package) in [
            (bins.overlay(), "sluice-overlay"),
            (bins.proxy(), "sluice-proxy"),
            (bins.cni(), "sluice-cni"),
        ] {
            if daemons && !bin.exists() {
                bail!(
                    "{} not found: build it (cargo build -p {package}) or pass --bin-dir",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }

    pub(crate) fn overlay(&self) -> PathBuf {
        self.dir.join("sluice-overlay")
    }

    pub(crate) fn proxy(&self) -> PathBuf {
        self.dir.join("sluice-proxy")
    }

    /// The CNI plugin.
    pub(crate) fn cni(&self) -> PathBuf {
        self.dir.join("sluice")
    }

    /// This binary (re-executed as the lab daemon and as each pod's echo server).
    pub(crate) fn lab(&self) -> &Path {
        &self.lab
    }
}

/// `sluice-overlay` for `node`, with flannel's DaemonSet flags plus the lab's files.
pub(crate) fn overlay_cmd(
    bins: &Binaries,
    node: &str,
    mgr: SubnetManager,
    kubeconfig: &Path,
    net_conf: &Path,
    subnet_file: &Path,
) -> Command {
    let mut cmd = Command::new(bins.overlay());
    cmd.args(["--ip-masq", "--iface", "eth0", "--reconcile-period", "2s"]);
    match mgr {
        SubnetManager::Kube => {
            cmd.arg("--kube-subnet-mgr")
                .arg("--kubeconfig-file")
                .arg(kubeconfig)
                .arg("--net-config-path")
                .arg(net_conf);
        }
        SubnetManager::Etcd => {
            cmd.args(["--etcd-endpoints", ETCD_URL, "--etcd-prefix", ETCD_PREFIX]);
        }
    }
    cmd.arg("--subnet-file")
        .arg(subnet_file)
        .env("NODE_NAME", node)
        .env("RUST_LOG", "info");
    cmd
}

/// `sluice-proxy` for `node` with kube-proxy's flags (health and metrics on the node's
/// loopback), the conformance plan's base flags and `extra` ones (which replace a base flag of
/// the same name).
pub(crate) fn proxy_cmd(
    bins: &Binaries,
    node: &str,
    mode: &str,
    kubeconfig: &Path,
    extra: &[String],
) -> Command {
    let mut cmd = Command::new(bins.proxy());
    cmd.args(["--proxy-mode", mode])
        .args(sluice_conformance::plan::flags(node, extra))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .args(["--metrics-bind-address", "127.0.0.1:10249"])
        .args(["--min-sync-period", "100ms", "--sync-period", "30s"])
        .env("RUST_LOG", "info");
    cmd
}

/// etcd on the underlay address, data in `data`.
pub(crate) fn etcd_cmd(ip: Ipv4Addr, data: &Path) -> Command {
    let (client, peer) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
    sluice_testbed::etcd::command("sluice-lab", data, &client, &peer)
}
