//! A node for the plugin: a network namespace standing in for the host (the plugin runs inside
//! it, as a runtime would exec it), its subnet.env and IPAM store in a temporary directory, and
//! pod namespaces to attach.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different part of the harness"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice_testbed::NetNs;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// flannel's subnet.env for node 1 of 10.244.0.0/16.
pub const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// One node: its namespace and its files.
pub struct Node {
    /// The node's ("host's") network namespace.
    pub ns: NetNs,
    /// Holds subnet.env, the IPAM store and flannel's scratch dir.
    pub dir: tempfile::TempDir,
}

/// What one invocation printed.
#[derive(Debug)]
pub struct Out {
    /// Exit status 0.
    pub ok: bool,
    /// Parsed stdout (`Null` when empty).
    pub json: Value,
    /// Raw stdout.
    pub stdout: String,
}

impl Out {
    /// The error code of a failed call.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.stdout);
        self.json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }
}

impl Node {
    /// A node with flannel's subnet.env for 10.244.1.0/24.
    pub fn new() -> Self {
        sluice_testbed::require_root();
        let node = Self {
            ns: NetNs::new("cni-node").unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(node.subnet_file(), SUBNET_ENV).unwrap();
        node
    }

    /// Path of subnet.env.
    pub fn subnet_file(&self) -> PathBuf {
        self.dir.path().join("subnet.env")
    }

    /// The IPAM store root.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("networks")
    }

    /// flannel-style config with this node's files; `extra` is merged in.
    pub fn conf(&self, version: &str, extra: Value) -> Value {
        let mut conf = serde_json::json!({
            "cniVersion": version,
            "name": "cbr0",
            "type": "flannel",
            "subnetFile": self.subnet_file(),
            "dataDir": self.dir.path().join("flannel"),
            "ipam": {"dataDir": self.ipam_dir()},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        });
        merge(&mut conf, extra);
        conf
    }

    /// Runs the plugin inside the node namespace.
    pub fn exec(&self, env: &[(&str, &str)], stdin: &Value) -> Out {
        self.exec_bin(Path::new(BIN), env, stdin)
    }

    /// Runs a plugin binary inside the node namespace.
    pub fn exec_bin(&self, bin: &Path, env: &[(&str, &str)], stdin: &Value) -> Out {
        self.ns
            .run(|| run_plugin(bin, env, &stdin.to_string()))
            .unwrap()
    }

    /// ADD/DEL/CHECK of `id`/`ifname` in `pod`.
    pub fn cmd(&self, command: &str, id: &str, ifname: &str, pod: &Path, conf: &Value) -> Out {
        let netns = pod.display().to_string();
        self.exec(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            conf,
        )
    }

    /// The reservation files of network `cbr0`: (address, content).
    pub fn reservations(&self) -> Vec<(String, String)> {
        let dir = self.ipam_dir().join("cbr0");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        name.parse::<std::net::IpAddr>().ok()?;
                        Some((name, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// `ip -j <args>` in `ns`, parsed.
    pub fn ip_json(ns: &NetNs, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        serde_json::from_str(&ns.ip(full).unwrap()).unwrap()
    }

    /// The node's host veths once DEL's detached teardown had time to finish: DEL returns
    /// before the kernel has unregistered the pair (waits up to 5 s for none to be left).
    pub fn host_veths_after_teardown(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = self.host_veths();
            if left.is_empty() || std::time::Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Names of the node's links starting with `veth`.
    pub fn host_veths(&self) -> Vec<String> {
        sluice_testbed::link::link_names(&self.ns)
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("veth"))
            .collect()
    }
}

/// Runs a plugin binary as a runtime does (only the given environment, config on stdin), in
/// the calling thread's namespace.
pub fn run_plugin(bin: &Path, env: &[(&str, &str)], stdin: &str) -> Out {
    let out = sluice_testbed::cni::exec(Command::new(bin), env, stdin).unwrap();
    let stdout = out.stdout;
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {stdout}"))
    };
    Out {
        ok: out.ok,
        json,
        stdout,
    }
}

/// Merges `extra`'s keys into `base` (objects recursively).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A configuration with `prevResult` set to an earlier result.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
