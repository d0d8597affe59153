//! The lab's node lifecycle: what a kubelet's status updates and the node-lifecycle
//! controller do together in a cluster, done by the lab daemon for every node. Once a second
//! it looks for the node's daemons (`sluice-overlay` and `sluice-proxy`, processes in the
//! node's network namespace); while both run the node is `Ready=True`. When they have been
//! missing for [`GRACE`] the condition turns `Unknown` (both gone: "stopped posting node
//! status", as upstream after its grace period) or `False` (one gone: the node is up, its
//! network is not). Written only on a change — no periodic heartbeat, so the store (and every
//! watcher) sees one write per transition.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_testbed::NetNs;
use sluice_testbed::apiserver::TestApiServer;

use crate::labdir::LabDir;

/// How long a node's daemons may be missing before its condition says so (upstream's
/// `--node-monitor-grace-period` is 50 s; a lab is watched by people waiting for it).
pub(crate) const GRACE: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_secs(1);
/// The daemons a lab node runs.
pub(crate) const DAEMONS: [&str; 2] = ["sluice-overlay", "sluice-proxy"];

/// The `Ready` condition's (status, reason, message) for a node whose `running` daemons were
/// seen; `missing_for`: how long one has been missing (zero while all run).
pub(crate) fn ready(
    running: &[&str],
    missing_for: Duration,
) -> Option<(&'static str, &'static str, String)> {
    let missing: Vec<&str> = DAEMONS
        .into_iter()
        .filter(|d| !running.contains(d))
        .collect();
    if missing.is_empty() {
        return Some((
            "True",
            "KubeletReady",
            "sluice-overlay and sluice-proxy are running".into(),
        ));
    }
    if missing_for < GRACE {
        return None;
    }
    if missing.len() == DAEMONS.len() {
        return Some((
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status (no Sluice daemon runs on the node).".into(),
        ));
    }
    Some((
        "False",
        "KubeletNotReady",
        format!("{} is not running", missing.join(", ")),
    ))
}

/// The conditions written for `ready`: `Ready` and the pressure conditions (which follow
/// `Ready` to `Unknown` as upstream's controller sets them).
fn conditions(status: &str, reason: &str, message: &str, now: &str) -> Value {
    let pressure = |kind: &str, ok_reason: &str| {
        let s = if status == "Unknown" {
            "Unknown"
        } else {
            "False"
        };
        json!({"type": kind, "status": s, "reason": ok_reason, "message": "",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        pressure("MemoryPressure", "KubeletHasSufficientMemory"),
        pressure("DiskPressure", "KubeletHasNoDiskPressure"),
        pressure("PIDPressure", "KubeletHasSufficientPID"),
        {"type": "Ready", "status": status, "reason": reason, "message": message,
         "lastHeartbeatTime": now, "lastTransitionTime": now},
    ])
}

/// Writes `ready` into Node `name` unless it says so already.
pub(crate) fn apply(
    server: &TestApiServer,
    name: &str,
    (status, reason, message): (&str, &str, String),
) -> anyhow::Result<bool> {
    let mut node = server.get("nodes", "", name)?;
    let conds = node["status"]["conditions"].as_array();
    let have = conds.and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    if have.is_some_and(|c| c["status"] == status && c["reason"] == reason) {
        return Ok(false);
    }
    node["status"]["conditions"] = conditions(status, reason, &message, &crate::api::now());
    server.update_status(node)?;
    Ok(true)
}

/// The daemons running per network namespace (keyed by the namespace's inode): one pass
/// over `/proc` per tick, whatever the number of nodes.
fn daemons_by_netns() -> HashMap<u64, Vec<&'static str>> {
    let mut out: HashMap<u64, Vec<&'static str>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(raw) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw);
        let Some(daemon) = DAEMONS.into_iter().find(|d| cmd.contains(d)) else {
            continue;
        };
        if let Ok(meta) = std::fs::metadata(path.join("ns/net")) {
            let seen = out.entry(meta.ino()).or_default();
            if !seen.contains(&daemon) {
                seen.push(daemon);
            }
        }
    }
    out
}

/// The inode of the named network namespace (`/run/netns/NAME`).
fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(NetNs::open(name).ok()?.path())
        .ok()
        .map(|m| m.ino())
}

/// Runs forever (on its own thread).
pub(crate) fn run(server: &TestApiServer, dir: &LabDir) -> ! {
    let start = Instant::now();
    let mut healthy_at: HashMap<String, Instant> = HashMap::new();
    loop {
        std::thread::sleep(TICK);
        let Ok(state) = dir.load() else { continue };
        let Ok(nodes) = server.list("nodes") else {
            continue;
        };
        let running = daemons_by_netns();
        for node in nodes {
            let name = node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let seen = netns_inode(&state.ns(&name))
                .and_then(|ino| running.get(&ino).cloned())
                .unwrap_or_default();
            let now = Instant::now();
            if seen.len() == DAEMONS.len() {
                healthy_at.insert(name.clone(), now);
            }
            let since = healthy_at.get(&name).copied().unwrap_or(start);
            if let Some(want) = ready(&seen, now.duration_since(since))
                && let Err(e) = apply(server, &name, want)
            {
                eprintln!("node lifecycle {name}: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_daemons_after_the_grace_period() {
        let both = ["sluice-overlay", "sluice-proxy"];
        assert_eq!(ready(&both, Duration::ZERO).unwrap().0, "True");
        assert_eq!(ready(&[], GRACE / 2), None, "within the grace period");
        assert_eq!(ready(&[], GRACE).unwrap().1, "NodeStatusUnknown");
        let (status, _, msg) = ready(&["sluice-overlay"], GRACE).unwrap();
        assert_eq!(
            (status, msg.as_str()),
            ("False", "sluice-proxy is not running")
        );
    }

    #[test]
    fn a_change_is_written_once() {
        let server = TestApiServer::start();
        server
            .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
            .unwrap();
        let up = || ready(&DAEMONS, Duration::ZERO).unwrap();
        assert!(apply(&server, "n1", up()).unwrap());
        assert!(!apply(&server, "n1", up()).unwrap(), "no heartbeat writes");
        let conds = &server.get("nodes", "", "n1").unwrap()["status"]["conditions"];
        assert_eq!(conds[3]["type"], "Ready");
        assert_eq!(conds[3]["status"], "True");
        assert!(apply(&server, "n1", ready(&[], GRACE).unwrap()).unwrap());
        let conds = &server.get("nodes", "", "n1").unwrap()["status"]["conditions"];
        assert_eq!(conds[3]["status"], "Unknown");
        assert_eq!(conds[0]["status"], "Unknown");
    }
}
