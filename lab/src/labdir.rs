//! The lab directory: every file the lab writes, and `state.json`, the record of everything
//! it created. Each namespace and process is recorded *before* it is created, so `down` can
//! remove a lab whose `up` crashed half-way: nothing the lab made is known only to a process
//! that may be gone.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default lab directory (tmpfs, so a reboot also clears it).
pub(crate) const DEFAULT_DIR: &str = "/run/sluice-lab";

/// Errors reading or writing the lab directory.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LabDirError {
    /// A file could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is not what this version writes.
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A pod the lab made, as `exec`, `curl` and the demo find it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PodRecord {
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) netns: String,
    pub(crate) ip: Ipv4Addr,
}

/// A process outside the lab's namespaces (only the lab daemon), killed by `down` by PID.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ProcRecord {
    pub(crate) pid: u32,
    pub(crate) what: String,
}

/// What `up` built.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct State {
    /// Prefix of every namespace name (`<name>-node1`, …).
    pub(crate) name: String,
    pub(crate) nodes: u8,
    pub(crate) subnet_manager: String,
    pub(crate) proxy_mode: String,
    /// The process that ran `up` (or `demo`).
    #[serde(default)]
    pub(crate) owner: u32,
    /// Every namespace, in creation order.
    pub(crate) namespaces: Vec<String>,
    /// Processes to kill by PID (everything else dies with its namespace).
    pub(crate) processes: Vec<ProcRecord>,
    pub(crate) pods: Vec<PodRecord>,
    /// The cluster DNS pod (`kube-system/kube-dns`), not one of the `web` pods.
    #[serde(default)]
    pub(crate) dns: Option<PodRecord>,
    /// The image the nodes run (`--image`), if any.
    #[serde(default)]
    pub(crate) image: Option<String>,
    /// Podman containers (`--image`), removed by `down` by name.
    #[serde(default)]
    pub(crate) containers: Vec<String>,
    /// The API server as seen from the host (loopback) and from the nodes (underlay).
    pub(crate) host_url: Option<String>,
    pub(crate) node_url: Option<String>,
}

impl State {
    /// The namespace name for `role` (`underlay`, `node1`, `client`, a pod name).
    pub(crate) fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    /// The pod called `name`.
    pub(crate) fn pod(&self, name: &str) -> Option<&PodRecord> {
        self.pods.iter().chain(&self.dns).find(|p| p.name == name)
    }
}

/// The lab directory.
#[derive(Clone, Debug)]
pub(crate) struct LabDir {
    root: PathBuf,
}

impl LabDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `root/rel`.
    pub(crate) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn state_file(&self) -> PathBuf {
        self.path("state.json")
    }

    /// Log file of the process `what` (`overlay-node1`, `labd`, …).
    pub(crate) fn log(&self, what: &str) -> PathBuf {
        self.path("logs").join(format!("{what}.log"))
    }

    /// Per-node directory (subnet.env, CNI files).
    pub(crate) fn node(&self, node: &str) -> PathBuf {
        self.path(node)
    }

    /// True when a lab is recorded here.
    pub(crate) fn has_state(&self) -> bool {
        self.state_file().exists()
    }

    /// Reads `state.json`.
    pub(crate) fn load(&self) -> Result<State, LabDirError> {
        let path = self.state_file();
        let text = std::fs::read_to_string(&path).map_err(|source| LabDirError::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
        if text.is_empty() {
            // Claimed by an `up` that died before writing anything.
            return Ok(State::default());
        }
        serde_json::from_str(&text).map_err(|source| LabDirError::Parse { path, source })
    }

    /// Claims the directory for a new lab: `state.json` appears complete (written to a
    /// private temporary file, then hard-linked into place, which fails if it exists), so of
    /// two concurrent `up`s exactly one wins and nobody ever reads half a record. False when a
    /// lab is recorded already.
    pub(crate) fn claim(&self, state: &State) -> Result<bool, LabDirError> {
        let path = self.state_file();
        let tmp = self.path(format!("state.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(state).map_err(|source| LabDirError::Parse {
            path: path.clone(),
            source,
        })?;
        write_atomic(&tmp, text.as_bytes())?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(LabDirError::Io {
                op: "link",
                path,
                source,
            }),
        }
    }

    /// Writes `state.json` atomically (temp file + rename), so a crash never leaves half a record.
    pub(crate) fn save(&self, state: &State) -> Result<(), LabDirError> {
        let text = serde_json::to_string_pretty(state).map_err(|source| LabDirError::Parse {
            path: self.state_file(),
            source,
        })?;
        write_atomic(&self.state_file(), text.as_bytes())
    }
}

/// Writes `path` via a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LabDirError> {
    let io = |op, source| LabDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create the directory of", e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename to", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LabDir::new(tmp.path().join("lab"));
        assert!(!dir.has_state());
        let first = State {
            name: "first".into(),
            ..State::default()
        };
        assert!(dir.claim(&first).unwrap());
        assert!(!dir.claim(&State::default()).unwrap(), "claimed twice");
        assert_eq!(dir.load().unwrap(), first);
        let state = State {
            name: "lab".into(),
            nodes: 2,
            namespaces: vec!["lab-underlay".into()],
            pods: vec![PodRecord {
                name: "web-1".into(),
                node: "node1".into(),
                netns: "lab-web-1".into(),
                ip: Ipv4Addr::new(10, 244, 1, 2),
            }],
            ..State::default()
        };
        dir.save(&state).unwrap();
        assert_eq!(dir.load().unwrap(), state);
        assert_eq!(state.ns("node1"), "lab-node1");
        assert_eq!(state.pod("web-1").unwrap().node, "node1");
        assert!(!dir.path("state.tmp").exists());
    }
}
