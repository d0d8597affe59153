//! The lab as a container runtime: it installs the `sluice` CNI plugin and a conflist into a
//! node's directory with the plugin's own `install` command (as the DaemonSet's init container
//! does), then wires each pod by executing the plugin inside the node's namespace exactly as a
//! runtime would — `CNI_*` environment, the conflist's plugin configuration (with `name` and
//! `cniVersion` merged in) on stdin, the result JSON on stdout.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_testbed::cni;

/// One node's CNI installation.
pub(crate) struct NodeCni {
    /// The node's namespace.
    pub(crate) netns: String,
    /// The node's directory in the lab dir.
    pub(crate) dir: PathBuf,
    /// Where the plugins are (`/opt/cni/bin` on a node).
    pub(crate) bin_dir: PathBuf,
    /// Where the conflist is (`/etc/cni/net.d` on a node).
    pub(crate) conf_dir: PathBuf,
}

impl NodeCni {
    /// The lab's own layout (the binaries mode): `cni/bin` and `cni/net.d` in the node's
    /// directory.
    pub(crate) fn in_dir(netns: String, dir: PathBuf) -> Self {
        Self {
            netns,
            bin_dir: dir.join("cni/bin"),
            conf_dir: dir.join("cni/net.d"),
            dir,
        }
    }

    pub(crate) fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone()
    }

    pub(crate) fn conf_dir(&self) -> PathBuf {
        self.conf_dir.clone()
    }

    /// The conflist a runtime uses: the first `*.conflist` in the directory by name.
    pub(crate) fn conflist(&self) -> PathBuf {
        let mut lists: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
            .collect();
        lists.sort();
        lists
            .into_iter()
            .next()
            .unwrap_or_else(|| self.conf_dir.join("10-sluice.conflist"))
    }

    /// flannel's conflist shape, pointing at this node's subnet.env and stores.
    fn conflist_json(&self, subnet_file: &Path) -> Value {
        json!({
            "name": "cbr0",
            "cniVersion": "1.0.0",
            "plugins": [{
                "type": "sluice",
                "subnetFile": subnet_file,
                "dataDir": self.dir.join("cni/flannel"),
                "ipam": {"dataDir": self.dir.join("cni/networks")},
                "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            }],
        })
    }

    /// `sluice install` of `plugin` and the conflist into the node's directories.
    pub(crate) fn install(&self, plugin: &Path, subnet_file: &Path) -> anyhow::Result<()> {
        let src = self.dir.join("cni-conf.json");
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&src, self.conflist_json(subnet_file).to_string())?;
        let out = Command::new(plugin)
            .arg("install")
            .arg("--bin-dir")
            .arg(self.bin_dir())
            .arg("--conflist")
            .arg(&src)
            .arg("--conf-dir")
            .arg(self.conf_dir())
            .args(["--conf-name", "10-sluice.conflist"])
            .output()
            .context("run sluice install")?;
        if !out.status.success() {
            bail!(
                "sluice install: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// CNI ADD of `eth0` in the pod namespace `pod_netns`; returns the pod's address.
    pub(crate) fn add(&self, container_id: &str, pod_netns: &str) -> anyhow::Result<Ipv4Addr> {
        let result = self.exec("ADD", container_id, pod_netns)?;
        pod_ip(&result).with_context(|| format!("CNI ADD result {result}"))
    }

    /// CNI DEL of `eth0` in the pod namespace `pod_netns` (releases the address, removes the
    /// veth); a DEL of something already gone succeeds, as CNI requires.
    pub(crate) fn del(&self, container_id: &str, pod_netns: &str) -> anyhow::Result<()> {
        self.exec("DEL", container_id, pod_netns).map(drop)
    }

    /// Runs every plugin of the installed conflist (the lab's has one) for `command`.
    fn exec(&self, command: &str, container_id: &str, pod_netns: &str) -> anyhow::Result<Value> {
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(self.conflist())
                .with_context(|| format!("read {}", self.conflist().display()))?,
        )?;
        let mut prev = Value::Null;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let mut conf = plugin.clone();
            conf["name"] = list["name"].clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            if !prev.is_null() {
                conf["prevResult"] = prev.clone();
            }
            let kind = plugin["type"].as_str().context("plugin without type")?;
            prev = self.run_plugin(kind, command, container_id, pod_netns, &conf)?;
        }
        Ok(prev)
    }

    fn run_plugin(
        &self,
        kind: &str,
        command: &str,
        container_id: &str,
        pod_netns: &str,
        conf: &Value,
    ) -> anyhow::Result<Value> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(self.bin_dir().join(kind));
        let (netns, path) = (format!("/run/netns/{pod_netns}"), self.bin_dir());
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container_id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &path.to_string_lossy()),
        ];
        let out = cni::exec(cmd, &env, &conf.to_string())?;
        let stdout = out.stdout;
        if !out.ok {
            bail!("CNI {command} {kind}: {stdout} {}", out.stderr);
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).with_context(|| format!("CNI {command} result {stdout}"))
    }
}

/// The first IPv4 address of a CNI result.
fn pod_ip(result: &Value) -> Option<Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ip_is_read_from_a_result() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1"}]});
        assert_eq!(pod_ip(&r), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(pod_ip(&json!({})), None);
    }

    #[test]
    fn the_conflist_points_at_the_nodes_files() {
        let node = NodeCni::in_dir("lab-node1".into(), "/run/sluice-lab/node1".into());
        let c = node.conflist_json(Path::new("/run/sluice-lab/node1/subnet.env"));
        assert_eq!(c["plugins"][0]["type"], "sluice");
        assert_eq!(
            c["plugins"][0]["ipam"]["dataDir"],
            "/run/sluice-lab/node1/cni/networks"
        );
        assert_eq!(
            node.conflist(),
            PathBuf::from("/run/sluice-lab/node1/cni/net.d/10-sluice.conflist")
        );
    }
}
