//! Starting the lab's processes: the lab daemon (then the Node objects, through its API),
//! etcd, and per node the overlay and the proxy — each detached, logging into the lab
//! directory, and waited for until it does its job (bounded).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sluice_testbed::NetNs;

use super::Lab;
use crate::api::Api;
use crate::daemons::{self, ETCD_PREFIX, ETCD_URL, SubnetManager};
use crate::labd::{API_IP, READY_FILE};
use crate::labdir::ProcRecord;
use sluice_testbed::http;

const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

impl Lab {
    pub(crate) fn labd(&mut self) -> anyhow::Result<String> {
        let mut cmd = Command::new(self.bins.lab());
        cmd.arg("--lab-dir").arg(self.dir.root()).args([
            "labd",
            "--underlay",
            &self.state.ns("underlay"),
        ]);
        let pid = self.start(None, &cmd, "labd")?;
        self.state.processes.push(ProcRecord {
            pid,
            what: "labd".into(),
        });
        self.dir.save(&self.state)?;
        let ready: Value = self.wait_for("lab daemon ready", || {
            let text = std::fs::read_to_string(self.dir.path(READY_FILE));
            match text {
                Ok(t) => Ok(Some(serde_json::from_str(&t)?)),
                Err(_) => Ok(None),
            }
        })?;
        self.state.host_url = ready["host_url"].as_str().map(str::to_owned);
        self.state.node_url = ready["node_url"].as_str().map(str::to_owned);
        self.dir.save(&self.state)?;
        std::fs::write(self.dir.path("net-conf.json"), NET_CONF)?;
        self.register_nodes()?;
        Ok(format!(
            "API {} on the underlay, {} on the host; {} Nodes registered",
            self.state.node_url.as_deref().unwrap_or("?"),
            self.state.host_url.as_deref().unwrap_or("?"),
            self.opts.nodes
        ))
    }

    /// The lab's API client (from the host).
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        Api::from_url(
            self.state
                .host_url
                .as_deref()
                .context("no API server yet")?,
        )
    }

    fn register_nodes(&self) -> anyhow::Result<()> {
        let api = self.api()?;
        let kube = self.opts.subnet_manager == SubnetManager::Kube;
        let runtime = match &self.opts.image {
            Some(_) => "podman://",
            None => "sluice-lab://netns",
        };
        for i in 1..=self.opts.nodes {
            api.create(
                "/api/v1/nodes",
                &super::nodes::node_object(i, kube, runtime),
            )?;
        }
        Ok(())
    }

    pub(crate) fn etcd(&mut self) -> anyhow::Result<String> {
        let ns = self.state.ns("underlay");
        let cmd = daemons::etcd_cmd(API_IP, &self.dir.path("etcd"));
        self.start(Some(&ns), &cmd, "etcd")?;
        let key = format!("{ETCD_PREFIX}/config");
        self.wait_for("etcd accepts the network config", || {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "etcdctl", "--endpoints", ETCD_URL])
                .args(["--dial-timeout", "1s", "put", &key, NET_CONF])
                .output()?;
            Ok(out.status.success().then_some(()))
        })?;
        Ok(format!("{ETCD_URL}, {key} = {NET_CONF}"))
    }

    pub(crate) fn overlay(&mut self) -> anyhow::Result<String> {
        let kubeconfig = self.dir.path("kubeconfig.node");
        let net_conf = self.dir.path("net-conf.json");
        for node in self.node_names() {
            if self.image.is_some() {
                self.init_containers(&node)?;
                self.start_container(&node, "overlay")?;
                continue;
            }
            std::fs::create_dir_all(self.node_dir(&node))?;
            let cmd = daemons::overlay_cmd(
                &self.bins,
                &node,
                self.opts.subnet_manager,
                &kubeconfig,
                &net_conf,
                &self.subnet_file(&node),
            );
            let ns = self.state.ns(&node);
            self.start(Some(&ns), &cmd, &format!("overlay-{node}"))?;
        }
        let mut subnets = Vec::new();
        for node in self.node_names() {
            let file = self.subnet_file(&node);
            let subnet = self.wait_for(&format!("{} written", file.display()), || {
                let Ok(env) = std::fs::read_to_string(&file) else {
                    return Ok(None);
                };
                Ok(env
                    .lines()
                    .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
                    .map(str::to_owned))
            })?;
            subnets.push(format!("{node} {subnet}"));
        }
        let from = match &self.image {
            Some(i) => format!(" (image {}, after install-cni)", i.image),
            None => String::new(),
        };
        Ok(format!("subnet.env: {}{from}", subnets.join(", ")))
    }

    /// The DaemonSet's init containers on `node`, one after the other, each to its end.
    fn init_containers(&mut self, node: &str) -> anyhow::Result<()> {
        let image = self.image.as_ref().context("no image")?;
        let host = self.node_host(node);
        host.provision_reference_plugins(&image.pod)?;
        let inits = image.pod.init_containers.clone();
        let tag = image.image.clone();
        for c in &inits {
            let name = host.container_name(&self.state.name, c);
            self.state.containers.push(name.clone());
            self.dir.save(&self.state)?;
            let out = host.run(&self.state.name, &tag, c)?.output()?;
            let log = self.dir.log(&format!("{}-{node}", c.name));
            std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())?;
            anyhow::ensure!(
                out.status.success(),
                "init container {} on {node} failed: {}{}",
                c.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        host.check_installed_plugin()?;
        Ok(())
    }

    /// Container `name` of the DaemonSet on `node`, from the image, detached.
    fn start_container(&mut self, node: &str, name: &str) -> anyhow::Result<()> {
        let image = self.image.as_ref().context("no image")?;
        let c = image.container(name)?.clone();
        let host = self.node_host(node);
        let cmd = host.run(&self.state.name, &image.image.clone(), &c)?;
        self.state
            .containers
            .push(host.container_name(&self.state.name, &c));
        self.dir.save(&self.state)?;
        self.start(None, &cmd, &format!("{name}-{node}"))?;
        Ok(())
    }

    pub(crate) fn proxy(&mut self) -> anyhow::Result<String> {
        self.start_proxies(&[])?;
        let from = match &self.image {
            Some(i) => format!(" (image {})", i.image),
            None => String::new(),
        };
        Ok(format!(
            "--proxy-mode {} on {} nodes, /healthz 200 on each{from}",
            self.opts.proxy_mode, self.opts.nodes
        ))
    }

    /// Stops every node's proxy and starts it again with `extra` flags (the conformance
    /// runner's per-scenario settings). The rules stay programmed in between: a restarted
    /// proxy adopts them.
    pub(crate) fn restart_proxies(&mut self, extra: &[String]) -> anyhow::Result<()> {
        for started in self
            .children
            .iter_mut()
            .filter(|s| s.what.starts_with("proxy-"))
        {
            let _ = started.child.kill();
            let _ = started.child.wait();
        }
        self.children.retain(|s| !s.what.starts_with("proxy-"));
        self.start_proxies(extra)
    }

    /// Starts every node's proxy with `extra` flags and waits for its `/healthz`.
    fn start_proxies(&mut self, extra: &[String]) -> anyhow::Result<()> {
        let kubeconfig = self.dir.path("kubeconfig.node");
        if crate::cgroups::ebpf(&self.state) {
            crate::cgroups::setup(&self.dir, &self.state, &self.node_names())?;
        }
        for node in self.node_names() {
            if self.image.is_some() {
                anyhow::ensure!(extra.is_empty(), "--image runs the manifest's proxy flags");
                self.start_container(&node, "proxy")?;
                continue;
            }
            let mode = &self.opts.proxy_mode;
            let mut extra = extra.to_vec();
            if crate::cgroups::ebpf(&self.state) {
                extra.extend(crate::cgroups::proxy_flags(&self.dir, &self.state, &node));
            }
            let cmd = daemons::proxy_cmd(&self.bins, &node, mode, &kubeconfig, &extra);
            let ns = self.state.ns(&node);
            self.start(Some(&ns), &cmd, &format!("proxy-{node}"))?;
        }
        let healthz: SocketAddr = ([127, 0, 0, 1], 10256).into();
        for node in self.node_names() {
            let ns = NetNs::open(&self.state.ns(&node))?;
            self.wait_for(&format!("{node} proxy /healthz 200"), || {
                let r = ns.run(|| {
                    http::request(healthz, "GET", "/healthz", None, Duration::from_secs(1))
                })??;
                Ok((r.status == 200).then_some(()))
            })?;
        }
        Ok(())
    }
}
