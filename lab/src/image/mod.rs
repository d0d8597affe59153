//! `--image`: the lab's nodes run the Sluice *image* as a kubelet runs the DaemonSet of
//! `deploy/sluice.yaml` — its init container (`sluice install`, writing the CNI plugin and the
//! conflist into the node's directories), then the overlay and the proxy, each with `podman
//! run` in the node's network namespace (`hostNetwork`), with the manifest's command, args,
//! environment, volumes, capabilities and security settings. Nothing of the pod spec is
//! repeated here: it is read from the manifest ([`manifest`]).
//!
//! What a lab node cannot share with a real one, and so is the lab's: every node lives in this
//! machine's one filesystem, so each node's host paths (`/run/flannel`, `/opt/cni/bin`, …) are
//! directories under the node's lab directory (only the kernel's `/lib/modules` is the real
//! one, read-only), and the CNI conflist the ConfigMap holds gets that node's paths for the
//! files the plugin reads and writes on the host; the API server is the lab's (a kubeconfig
//! mounted and named by `KUBECONFIG`, in place of the service-account token a kubelet mounts);
//! `--proxy-mode` replaces the ConfigMap's `mode`. Podman never touches the host's network: the
//! containers join the lab's namespaces (`--network ns:`), and runc with cgroupfs is used
//! (this machine's hybrid cgroups are refused by crun).

#[cfg(test)]
mod drift;
pub(crate) mod manifest;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use self::manifest::{Container, Mount, Pod, Source};

/// Where the lab's kubeconfig is mounted in the containers.
const KUBECONFIG_IN_CONTAINER: &str = "/var/lib/sluice-lab/kubeconfig";
/// Host paths every lab node shares with the machine when mounted read-only.
const SHARED_HOST_PATHS: [&str; 1] = ["/lib/modules"];
/// The reference plugins a node has next to Sluice's (Debian's containernetworking-plugins).
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Where podman keeps its (unused) network configuration: not the host's /etc/cni/net.d, so
/// running the lab leaves no file there.
const PODMAN_NETWORK_DIR: &str = "/var/lib/containers/sluice/net.d";

/// `podman` with the settings this machine needs (runc with cgroupfs; events in a file, not
/// the journal; its network configuration off the host's CNI directory).
pub(crate) fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--network-config-dir",
        PODMAN_NETWORK_DIR,
    ]);
    cmd
}

/// `--ulimit`s within this process's own hard limits. Podman's defaults for root (1048576
/// open files) are above them here, and raising a limit takes CAP_SYS_RESOURCE, which root on
/// this machine does not have: runc would fail to start every container. A kubelet's
/// containers likewise get the runtime's limits.
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = |name: &str| -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().nth(1)?.parse().ok()
    };
    let nofile = hard("Max open files").unwrap_or(1024).min(1 << 20);
    let nproc = hard("Max processes").unwrap_or(4096).min(32768);
    vec![
        format!("--ulimit=nofile={nofile}:{nofile}"),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// Runs `podman args…`, failing with its stderr.
pub(crate) fn podman_output(args: &[&str]) -> anyhow::Result<String> {
    let out = podman().args(args).output().context("run podman")?;
    if !out.status.success() {
        bail!(
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the container `name` if it exists (`down`); true when one was removed.
pub(crate) fn remove_container(name: &str) -> bool {
    let exists = container_exists(name);
    if exists {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", "--ignore", name])
            .output();
    }
    exists
}

/// True when a container called `name` exists.
pub(crate) fn container_exists(name: &str) -> bool {
    podman()
        .args(["container", "exists", name])
        .status()
        .is_ok_and(|s| s.success())
}

/// The image a lab runs and the pod spec it runs it with.
#[derive(Clone, Debug)]
pub(crate) struct ImageRun {
    pub(crate) image: String,
    pub(crate) pod: Pod,
}

impl ImageRun {
    /// Reads the manifest and checks that podman has `image` (empty: the manifest's).
    pub(crate) fn new(image: &str, manifest: &Path) -> anyhow::Result<Self> {
        let pod = manifest::load(manifest)?;
        if !pod.host_network {
            bail!("{}: the DaemonSet is not hostNetwork", manifest.display());
        }
        let image = match image {
            "" => pod
                .containers
                .first()
                .map(|c| c.image.clone())
                .context("the DaemonSet has no container")?,
            named => named.to_owned(),
        };
        let image = image.as_str();
        let id = podman_output(&["image", "inspect", "--format", "{{.Id}}", image])
            .with_context(|| format!("image {image} (build it: scripts/image)"))?;
        if id.trim().is_empty() {
            bail!("image {image} not found");
        }
        Ok(Self {
            image: image.to_owned(),
            pod,
        })
    }

    /// The container called `name`, init or not.
    pub(crate) fn container(&self, name: &str) -> anyhow::Result<&Container> {
        self.pod
            .init_containers
            .iter()
            .chain(&self.pod.containers)
            .find(|c| c.name == name)
            .with_context(|| format!("the DaemonSet has no container {name}"))
    }
}

/// One lab node as the kubelet sees it: its namespace and its own "host" filesystem.
#[derive(Clone, Debug)]
pub(crate) struct NodeHost {
    pub(crate) node: String,
    pub(crate) netns: String,
    /// The node's directory in the lab dir; its `host/` is the node's `/`.
    pub(crate) dir: PathBuf,
    /// The lab's kubeconfig for the nodes.
    pub(crate) kubeconfig: PathBuf,
    /// `--proxy-mode`, written into the ConfigMap's kube-proxy.yaml.
    pub(crate) proxy_mode: String,
}

impl NodeHost {
    /// Where the node's host path `path` is on this machine.
    pub(crate) fn host_path(&self, path: &Path) -> PathBuf {
        self.dir
            .join("host")
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    fn config_map_dir(&self, name: &str) -> PathBuf {
        self.dir.join("configmaps").join(name)
    }

    /// This machine's side of `mount`, created as the kubelet would (hostPath types, the
    /// ConfigMap's files).
    fn volume(&self, mount: &Mount) -> anyhow::Result<PathBuf> {
        match &mount.source {
            Source::HostPath { path, kind } => {
                if mount.read_only
                    && SHARED_HOST_PATHS.iter().any(|p| Path::new(p) == path)
                    && path.exists()
                {
                    return Ok(path.clone());
                }
                let here = self.host_path(path);
                match kind.as_str() {
                    "FileOrCreate" | "File" => {
                        if let Some(parent) = here.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        if !here.exists() {
                            std::fs::write(&here, b"")?;
                        }
                    }
                    _ => std::fs::create_dir_all(&here)?,
                }
                Ok(here)
            }
            Source::ConfigMap { name, files } => {
                let dir = self.config_map_dir(name);
                std::fs::create_dir_all(&dir)?;
                for (file, content) in files {
                    let content = self.adjust(file, content)?;
                    std::fs::write(dir.join(file), content)
                        .with_context(|| format!("write {}", dir.join(file).display()))?;
                }
                Ok(dir)
            }
        }
    }

    /// The lab's changes to the ConfigMap's files: the CNI plugin's host files in this node's
    /// directories, and the proxy mode asked for.
    fn adjust(&self, file: &str, content: &str) -> anyhow::Result<String> {
        match file {
            "cni-conf.json" => {
                let mut list: Value = serde_json::from_str(content).context(file.to_owned())?;
                for plugin in list["plugins"].as_array_mut().into_iter().flatten() {
                    if plugin["type"] == "sluice" {
                        let at = |p: &str| self.host_path(Path::new(p)).display().to_string();
                        plugin["subnetFile"] = at("/run/flannel/subnet.env").into();
                        plugin["dataDir"] = at("/var/lib/cni/flannel").into();
                        plugin["ipam"]["dataDir"] = at("/var/lib/cni/networks").into();
                    }
                }
                Ok(serde_json::to_string_pretty(&list)?)
            }
            "kube-proxy.yaml" => {
                let mut config: serde_yaml::Value =
                    serde_yaml::from_str(content).context(file.to_owned())?;
                config["mode"] = self.proxy_mode.clone().into();
                Ok(serde_yaml::to_string(&config)?)
            }
            _ => Ok(content.to_owned()),
        }
    }

    /// The name of container `c`'s podman container on this node.
    pub(crate) fn container_name(&self, lab: &str, c: &Container) -> String {
        format!("{lab}-{}-{}", self.node, c.name)
    }

    /// `podman run` of container `c` of the DaemonSet on this node, in the foreground (the
    /// process ends when the container does; `--rm` removes it then).
    pub(crate) fn run(&self, lab: &str, image: &str, c: &Container) -> anyhow::Result<Command> {
        let argv = c.argv(&self.node);
        let Some((program, args)) = argv.split_first() else {
            bail!("container {} has no command", c.name);
        };
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--pull", "never", "--name"])
            .arg(self.container_name(lab, c))
            .arg(format!("--network=ns:/run/netns/{}", self.netns))
            .args(ulimits());
        if c.privileged {
            cmd.arg("--privileged");
        }
        for cap in &c.caps_drop {
            cmd.arg(format!("--cap-drop={}", cap.to_lowercase()));
        }
        for cap in &c.caps_add {
            cmd.arg(format!("--cap-add={}", cap.to_lowercase()));
        }
        if c.read_only_root {
            // As in Kubernetes: no writable /tmp or /run unless a volume says so.
            cmd.args(["--read-only", "--read-only-tmpfs=false"]);
        }
        if !c.privilege_escalation {
            cmd.args(["--security-opt", "no-new-privileges"]);
        }
        if let Some(uid) = c.run_as_user {
            cmd.arg(format!("--user={uid}"));
        }
        for (key, value) in c.env_for(&self.node) {
            cmd.arg("--env").arg(format!("{key}={value}"));
        }
        cmd.arg("--env")
            .arg(format!("KUBECONFIG={KUBECONFIG_IN_CONTAINER}"))
            .arg("--volume")
            .arg(format!(
                "{}:{KUBECONFIG_IN_CONTAINER}:ro",
                self.kubeconfig.display()
            ));
        for mount in &c.mounts {
            let here = self.volume(mount)?;
            // ConfigMap volumes are read-only in Kubernetes whatever the mount says.
            let ro = mount.read_only || matches!(mount.source, Source::ConfigMap { .. });
            cmd.arg("--volume").arg(format!(
                "{}:{}{}",
                here.display(),
                mount.mount_path.display(),
                if ro { ":ro" } else { "" }
            ));
        }
        cmd.arg("--entrypoint").arg(program).arg(image).args(args);
        Ok(cmd)
    }

    /// The node's reference CNI plugins (`portmap`, …) that the conflist chains after Sluice,
    /// as a node has them in /opt/cni/bin before the DaemonSet runs.
    pub(crate) fn provision_reference_plugins(&self, pod: &Pod) -> anyhow::Result<()> {
        let bin = self.host_path(Path::new("/opt/cni/bin"));
        std::fs::create_dir_all(&bin)?;
        let conflists = pod
            .init_containers
            .iter()
            .chain(&pod.containers)
            .flat_map(|c| &c.mounts)
            .filter_map(|m| match &m.source {
                Source::ConfigMap { files, .. } => files.get("cni-conf.json"),
                Source::HostPath { .. } => None,
            });
        for text in conflists {
            let list: Value = serde_json::from_str(text)?;
            for plugin in list["plugins"].as_array().into_iter().flatten() {
                let Some(kind) = plugin["type"].as_str() else {
                    continue;
                };
                let reference = Path::new(REFERENCE_PLUGINS).join(kind);
                if kind != "sluice" && kind != "flannel" {
                    std::fs::copy(&reference, bin.join(kind)).with_context(|| {
                        format!(
                            "the conflist chains {kind}: copy {} (Debian's \
                             containernetworking-plugins)",
                            reference.display()
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Checks what the init containers installed on the host: the plugin, statically linked.
    pub(crate) fn check_installed_plugin(&self) -> anyhow::Result<String> {
        let plugin = self.host_path(Path::new("/opt/cni/bin/sluice"));
        let bytes = std::fs::read(&plugin).with_context(|| format!("read {}", plugin.display()))?;
        if !is_static_elf(&bytes) {
            bail!("{} is dynamically linked", plugin.display());
        }
        Ok(format!(
            "{} ({} KB, static)",
            plugin.display(),
            bytes.len() / 1024
        ))
    }
}

/// True when `bytes` are a 64-bit little-endian ELF executable with no program interpreter
/// (`PT_INTERP`): statically linked, so it runs on any distribution's host.
pub(crate) fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELF magic, 64-bit, little-endian.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff + i * usize::from(phentsize);
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_static() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(!is_static_elf(&ls));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn the_lab_sets_the_node_paths_of_the_conflist_and_the_proxy_mode() {
        let host = NodeHost {
            node: "node1".into(),
            netns: "lab-node1".into(),
            dir: "/run/l/node1".into(),
            kubeconfig: "/run/l/kubeconfig".into(),
            proxy_mode: "iptables".into(),
        };
        let conf = r#"{"name":"cbr0","plugins":[{"type":"sluice"},{"type":"portmap"}]}"#;
        let list: Value =
            serde_json::from_str(&host.adjust("cni-conf.json", conf).unwrap()).unwrap();
        assert_eq!(
            list["plugins"][0]["subnetFile"],
            "/run/l/node1/host/run/flannel/subnet.env"
        );
        assert_eq!(list["plugins"][1], serde_json::json!({"type": "portmap"}));
        let kp = host
            .adjust(
                "kube-proxy.yaml",
                "kind: KubeProxyConfiguration\nmode: nftables\n",
            )
            .unwrap();
        assert!(kp.contains("mode: iptables"), "{kp}");
    }
}
