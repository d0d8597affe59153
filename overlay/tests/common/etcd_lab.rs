//! A test-bed cluster with a real etcd on the underlay (192.168.0.1), for the daemon in etcd
//! mode: each node's daemon is the real binary in its namespace, with `/healthz` and
//! `/metrics` on the node's loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_testbed::cluster::{Cluster, Node};
use sluice_testbed::etcd::Etcd;
use sluice_testbed::link::Address;
use sluice_testbed::{Process, http};

/// Where etcd listens, on the underlay.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// flannel's key prefix.
pub const PREFIX: &str = "/coreos.com/network";
/// The health port every daemon serves on its node's loopback.
pub const HEALTH_PORT: u16 = 10_260;
/// The network configuration of the lab.
pub const CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// A cluster with etcd served on the underlay, configured with a VXLAN network.
pub struct EtcdLab {
    pub cluster: Cluster,
    pub etcd: Etcd,
    pub dir: tempfile::TempDir,
    _ip: Address,
}

impl EtcdLab {
    /// `nodes` nodes and etcd holding [`CONF`].
    pub fn start(nodes: u8) -> Self {
        Self::start_with(nodes, CONF)
    }

    /// `nodes` nodes and etcd holding `conf`.
    pub fn start_with(nodes: u8, conf: &str) -> Self {
        let cluster = Cluster::new(nodes).unwrap();
        let underlay = cluster.underlay();
        let cidr = ipnet::Ipv4Net::new(ETCD_IP, 24).unwrap();
        let ip = Address::new(underlay.ns(), underlay.bridge().name(), cidr).unwrap();
        let etcd = Etcd::start_in(underlay.ns(), ETCD_IP).unwrap();
        etcd.put(&format!("{PREFIX}/config"), conf).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Self {
            cluster,
            etcd,
            dir,
            _ip: ip,
        }
    }

    pub fn subnet_file(&self, node: &Node) -> PathBuf {
        self.dir.path().join(node.name()).join("subnet.env")
    }

    /// Writes the subnet.env a previous run on `node` would have left: its test-bed CIDR.
    pub fn previous_run(&self, node: &Node) {
        let env = format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
            node.gateway()
        );
        let file = self.subnet_file(node);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, env).unwrap();
    }

    /// The daemon on `node` with lease TTL `ttl` and a 1 s reconcile period.
    pub fn daemon(&self, node: &Node, ttl: &str) -> Process {
        self.daemon_with(node, ttl, &[])
    }

    /// The same with `extra` flags (which replace the defaults they name).
    pub fn daemon_with(&self, node: &Node, ttl: &str, extra: &[&str]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-overlay"));
        let port = HEALTH_PORT.to_string();
        let defaults = [
            ("--reconcile-period", "1s"),
            ("--subnet-lease-ttl", ttl),
            ("--healthz-ip", "127.0.0.1"),
            ("--healthz-port", &port),
        ];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.args([
            "--etcd-endpoints",
            self.etcd.client_url(),
            "--etcd-prefix",
            PREFIX,
            "--iface",
            "eth0",
        ])
        .arg("--subnet-file")
        .arg(self.subnet_file(node))
        .args(extra)
        .env("RUST_LOG", "info");
        node.ns().spawn(&cmd).unwrap()
    }

    /// The etcd key of node `i`'s test-bed subnet.
    pub fn key(i: u8) -> String {
        format!("{PREFIX}/subnets/10.244.{i}.0-24")
    }

    /// How many leases etcd holds.
    pub fn leases(&self) -> usize {
        let prefix = format!("{PREFIX}/subnets/");
        self.etcd
            .etcdctl(["get", "--prefix", "--keys-only", prefix.as_str()])
            .map(|out| out.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    }

    /// Deletes `key` from etcd.
    pub fn delete(&self, key: &str) {
        self.etcd.etcdctl(["del", key]).unwrap();
    }

    /// The subnet the daemon on `node` wrote, as `10.244.x.0/24`.
    pub fn subnet_of(&self, node: &Node) -> String {
        let env = std::fs::read_to_string(self.subnet_file(node)).unwrap();
        let line = env
            .lines()
            .find(|l| l.starts_with("FLANNEL_SUBNET="))
            .unwrap();
        let net: ipnet::Ipv4Net = line["FLANNEL_SUBNET=".len()..].parse().unwrap();
        net.trunc().to_string()
    }

    /// `GET path` from the daemon's health port on `node`; `None` when it does not answer.
    pub fn get(&self, node: &Node, path: &str) -> Option<http::Response> {
        let addr = SocketAddr::from(([127, 0, 0, 1], HEALTH_PORT));
        let timeout = Duration::from_secs(2);
        node.ns()
            .run(|| http::request(addr, "GET", path, None, timeout))
            .ok()?
            .ok()
    }
}
