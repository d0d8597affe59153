//! Finding and starting the real Sluice binaries inside node namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sluice_testbed::Process;
use sluice_testbed::cluster::Node;

/// Where the daemons' binaries are.
pub(crate) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// `dir`, or the directory of this executable (cargo puts every binary of the workspace
    /// there); checks that the binaries exist so a missing build fails with a clear message.
    pub(crate) fn find(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()
                .context("locate sluice-lab")?
                .parent()
                .context("sluice-lab has no directory")?
                .to_path_buf(),
        };
        let bins = Self { dir };
        if !bins.overlay().exists() {
            bail!(
                "{} not found: build it (cargo build -p sluice-overlay) or pass --bin-dir",
                bins.overlay().display()
            );
        }
        Ok(bins)
    }

    fn overlay(&self) -> PathBuf {
        self.dir.join("sluice-overlay")
    }

    /// Starts `sluice-overlay` (kube subnet manager) in `node`, configured from `dir`.
    pub(crate) fn start_overlay(&self, node: &Node, dir: &Path) -> anyhow::Result<Process> {
        let mut cmd = Command::new(self.overlay());
        cmd.args([
            "--kube-subnet-mgr",
            "--iface",
            "eth0",
            "--reconcile-period",
            "2s",
        ])
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--net-config-path")
        .arg(dir.join("net-conf.json"))
        .arg("--subnet-file")
        .arg(subnet_file(dir, node))
        .env("NODE_NAME", node.name());
        Ok(node.ns().spawn(&cmd)?)
    }
}

/// Where the daemon on `node` writes its subnet.env.
pub(crate) fn subnet_file(dir: &Path, node: &Node) -> PathBuf {
    dir.join(node.name()).join("subnet.env")
}
