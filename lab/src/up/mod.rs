//! `sluice-lab up`: builds the lab step by step — namespaces, the lab daemon (API server and
//! EndpointSlice controller), etcd when asked, the real `sluice-overlay` and `sluice-proxy` in
//! every node, pods wired by the real CNI plugin, the cluster DNS — and leaves it running. Every step records
//! what it creates in the lab directory first, so `down` can always clean up; the steps are
//! also the demo's first rows.

pub(crate) mod dns;
pub(crate) mod network;
mod nodes;
mod pods;
mod start;
mod usage;
mod wait;

use std::path::PathBuf;

use anyhow::bail;
use sluice_testbed::NetNs;

use crate::daemons::{Binaries, SubnetManager};
use crate::image::{ImageRun, NodeHost};
use crate::labdir::{LabDir, State};

pub(crate) use pods::{set_ready, status as pod_status};
pub(crate) use usage::print as print_usage;
pub(crate) use wait::eventually;

/// What to build.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Prefix of every namespace name.
    pub(crate) name: String,
    pub(crate) nodes: u8,
    pub(crate) pods_per_node: u8,
    pub(crate) proxy_mode: String,
    pub(crate) subnet_manager: SubnetManager,
    /// Run the overlay, the proxy and the CNI install from this image, as the DaemonSet of
    /// `manifest` says (`--image`); the binaries next to this one otherwise.
    pub(crate) image: Option<String>,
    pub(crate) manifest: PathBuf,
}

/// A step: what it does (for progress and the demo's table) and how.
pub(crate) type Step = (&'static str, fn(&mut Lab) -> anyhow::Result<String>);

/// A lab being built (or, for the demo, running).
pub(crate) struct Lab {
    pub(crate) dir: LabDir,
    pub(crate) state: State,
    bins: Binaries,
    opts: Options,
    /// The image and the DaemonSet's pod spec, with `--image`.
    image: Option<ImageRun>,
    /// Our direct children; never waited for (they outlive `up`), kept so none is reaped early.
    children: Vec<wait::Started>,
}

impl Lab {
    /// Starts recording a new lab in `dir`; refuses when one is recorded there already.
    pub(crate) fn begin(dir: LabDir, bins: Binaries, opts: Options) -> anyhow::Result<Self> {
        if !(1..=200).contains(&opts.nodes) || !(1..=50).contains(&opts.pods_per_node) {
            bail!("--nodes must be 1..=200 and --pods-per-node 1..=50");
        }
        let image = match &opts.image {
            Some(image) => {
                if opts.subnet_manager != SubnetManager::Kube {
                    bail!("--image runs the DaemonSet, which uses the kube subnet manager");
                }
                Some(ImageRun::new(image, &opts.manifest)?)
            }
            None => None,
        };
        let state = State {
            name: opts.name.clone(),
            nodes: opts.nodes,
            subnet_manager: opts.subnet_manager.as_str().to_owned(),
            proxy_mode: opts.proxy_mode.clone(),
            owner: std::process::id(),
            image: opts.image.clone(),
            ..State::default()
        };
        if !dir.claim(&state)? {
            bail!(
                "a lab is already recorded in {}: run `sluice-lab down` first",
                dir.root().display()
            );
        }
        Ok(Self {
            dir,
            state,
            bins,
            opts,
            image,
            children: Vec::new(),
        })
    }

    /// Every step `up` runs, in order.
    pub(crate) fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = vec![
            ("namespaces: underlay, nodes, client", Self::network),
            ("lab daemon: API server + EndpointSlice ctl", Self::labd),
        ];
        if self.opts.subnet_manager == SubnetManager::Etcd {
            steps.push(("etcd on the underlay", Self::etcd));
        }
        steps.extend([
            ("sluice-overlay on every node", Self::overlay as _),
            ("sluice-proxy on every node", Self::proxy as _),
            ("pods via the sluice CNI plugin (ADD)", Self::pods as _),
            ("cluster DNS: kube-dns pod + Service", Self::dns as _),
        ]);
        steps
    }

    /// Records namespace `role` and creates it.
    pub(crate) fn namespace(&mut self, role: &str) -> anyhow::Result<NetNs> {
        let name = self.state.ns(role);
        if NetNs::exists(&name) {
            // Not ours: never recorded, so `down` of this lab leaves it alone.
            bail!("namespace {name} exists already (another lab? use --name or its down)");
        }
        self.state.namespaces.push(name.clone());
        self.dir.save(&self.state)?;
        match NetNs::persistent(&name) {
            Ok(ns) => Ok(ns),
            Err(e) => {
                // Someone else created it meanwhile: not ours to remove.
                self.state.namespaces.pop();
                self.dir.save(&self.state)?;
                Err(e.into())
            }
        }
    }

    /// The node names, `node1`….
    pub(crate) fn node_names(&self) -> Vec<String> {
        (1..=self.opts.nodes).map(|i| format!("node{i}")).collect()
    }

    /// The binaries the lab runs.
    pub(crate) fn bins(&self) -> &Binaries {
        &self.bins
    }

    /// Forgets namespace `name` (after removing it): `down` no longer looks for it.
    pub(crate) fn forget_namespace(&mut self, name: &str) -> anyhow::Result<()> {
        self.state.namespaces.retain(|n| n != name);
        self.dir.save(&self.state)?;
        Ok(())
    }

    /// The PIDs of the daemons the lab started (`overlay-node1`, `proxy-node1`, `labd`…).
    pub(crate) fn daemon_pids(&self) -> Vec<(String, u32)> {
        (self.children.iter())
            .filter(|s| !s.what.starts_with("pod-"))
            .map(|s| (s.what.clone(), s.child.id()))
            .collect()
    }

    pub(crate) fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.node(node)
    }

    fn subnet_file(&self, node: &str) -> PathBuf {
        match self.image {
            // The overlay's default, in the node's run-flannel hostPath.
            Some(_) => self
                .node_host(node)
                .host_path(sluice_model::subnet_env::DEFAULT_PATH.as_ref()),
            None => self.node_dir(node).join("subnet.env"),
        }
    }

    /// `node` as a kubelet running the image sees it.
    pub(crate) fn node_host(&self, node: &str) -> NodeHost {
        NodeHost {
            node: node.to_owned(),
            netns: self.state.ns(node),
            dir: self.node_dir(node),
            kubeconfig: self.dir.path("kubeconfig.node"),
            proxy_mode: self.opts.proxy_mode.clone(),
        }
    }
}
