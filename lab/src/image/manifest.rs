//! The DaemonSet of `deploy/sluice.yaml`, read as a kubelet reads it: per container its
//! image, command and arguments (with `$(VAR)` expanded from its environment), environment
//! (the downward API's `spec.nodeName`), volume mounts resolved to their volumes (hostPath or
//! the ConfigMap's files), capabilities and security settings. The lab runs the image with
//! exactly these, so the manifest is the only copy of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

/// The manifest in this repository (what the lab runs unless told otherwise).
pub(crate) fn default_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sluice.yaml");
    path.canonicalize().unwrap_or(path)
}

/// Where a volume's files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A directory or file of the node (`hostPath`), with its `type` ("" when unset).
    HostPath { path: PathBuf, kind: String },
    /// The files of a ConfigMap of the manifest: file name → content.
    ConfigMap {
        name: String,
        files: BTreeMap<String, String>,
    },
}

/// One `volumeMounts` entry, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    pub(crate) volume: String,
    pub(crate) mount_path: PathBuf,
    pub(crate) read_only: bool,
    pub(crate) source: Source,
}

/// How an environment variable gets its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EnvValue {
    Literal(String),
    /// `valueFrom.fieldRef.fieldPath: spec.nodeName`.
    NodeName,
}

/// One container (or init container) of the DaemonSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) command: Vec<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, EnvValue)>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) caps_add: Vec<String>,
    pub(crate) caps_drop: Vec<String>,
    pub(crate) privileged: bool,
    pub(crate) read_only_root: bool,
    /// `allowPrivilegeEscalation` (true unless set to false, as in Kubernetes).
    pub(crate) privilege_escalation: bool,
    pub(crate) run_as_user: Option<u32>,
}

/// The DaemonSet's pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pod {
    pub(crate) host_network: bool,
    pub(crate) init_containers: Vec<Container>,
    pub(crate) containers: Vec<Container>,
}

impl Container {
    /// The environment for `node`.
    pub(crate) fn env_for(&self, node: &str) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    EnvValue::Literal(s) => s.clone(),
                    EnvValue::NodeName => node.to_owned(),
                };
                (k.clone(), value)
            })
            .collect()
    }

    /// `command` + `args` with `$(VAR)` references expanded from the container's environment
    /// for `node`, as the kubelet does (`$$` is a literal `$`; an unknown reference stays).
    pub(crate) fn argv(&self, node: &str) -> Vec<String> {
        let env: BTreeMap<String, String> = self.env_for(node).into_iter().collect();
        self.command
            .iter()
            .chain(&self.args)
            .map(|a| expand(a, &env))
            .collect()
    }
}

/// Kubernetes' `$(VAR)` expansion.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(value) = env.get(&body[..end])
        {
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Reads the DaemonSet (and the ConfigMaps its volumes name) from the manifest at `path`.
pub(crate) fn load(path: &Path) -> anyhow::Result<Pod> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// Parses a multi-document manifest holding one DaemonSet.
pub(crate) fn parse(text: &str) -> anyhow::Result<Pod> {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()?;
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .filter_map(|d| {
            let name = d["metadata"]["name"].as_str()?.to_owned();
            let data = serde_json::from_value(d["data"].clone()).ok()?;
            Some((name, data))
        })
        .collect();
    let mut daemonsets = docs.iter().filter(|d| d["kind"] == "DaemonSet");
    let ds = daemonsets.next().context("no DaemonSet")?;
    if daemonsets.next().is_some() {
        bail!("more than one DaemonSet");
    }
    let spec = &ds["spec"]["template"]["spec"];
    let mut volumes = BTreeMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let name = str_of(v, "name")?;
        let source = if let Some(h) = v.get("hostPath") {
            Source::HostPath {
                path: str_of(h, "path")?.into(),
                kind: h["type"].as_str().unwrap_or("").to_owned(),
            }
        } else if let Some(c) = v.get("configMap") {
            let cm = str_of(c, "name")?;
            let files = config_maps
                .get(&cm)
                .with_context(|| format!("volume {name}: no ConfigMap {cm} in the manifest"))?
                .clone();
            Source::ConfigMap { name: cm, files }
        } else {
            bail!("volume {name}: only hostPath and configMap volumes are supported");
        };
        volumes.insert(name, source);
    }
    let containers = |key: &str| -> anyhow::Result<Vec<Container>> {
        spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| container(c, &volumes))
            .collect()
    };
    Ok(Pod {
        host_network: spec["hostNetwork"].as_bool().unwrap_or(false),
        init_containers: containers("initContainers")?,
        containers: containers("containers")?,
    })
}

fn str_of(v: &Value, key: &str) -> anyhow::Result<String> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{key} missing in {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn container(c: &Value, volumes: &BTreeMap<String, Source>) -> anyhow::Result<Container> {
    let name = str_of(c, "name")?;
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let key = str_of(e, "name")?;
        let value = if let Some(v) = e["value"].as_str() {
            EnvValue::Literal(v.to_owned())
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            EnvValue::NodeName
        } else {
            bail!("container {name}: env {key}: only values and spec.nodeName are supported");
        };
        env.push((key, value));
    }
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = str_of(m, "name")?;
        let source = volumes
            .get(&volume)
            .with_context(|| format!("container {name}: no volume {volume}"))?
            .clone();
        mounts.push(Mount {
            volume,
            mount_path: str_of(m, "mountPath")?.into(),
            read_only: m["readOnly"].as_bool().unwrap_or(false),
            source,
        });
    }
    let sc = &c["securityContext"];
    Ok(Container {
        image: str_of(c, "image")?,
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        mounts,
        caps_add: strings(&sc["capabilities"]["add"]),
        caps_drop: strings(&sc["capabilities"]["drop"]),
        privileged: sc["privileged"].as_bool().unwrap_or(false),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        privilege_escalation: sc["allowPrivilegeEscalation"].as_bool().unwrap_or(true),
        run_as_user: sc["runAsUser"]
            .as_u64()
            .map(u32::try_from)
            .transpose()
            .context("runAsUser")?,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_manifest_parses() {
        let pod = load(&default_path()).unwrap();
        assert!(pod.host_network);
        let names: Vec<&str> = pod
            .init_containers
            .iter()
            .chain(&pod.containers)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["install-cni", "overlay", "proxy"]);
        let proxy = &pod.containers[1];
        let argv = proxy.argv("node7");
        assert!(
            argv.contains(&"--hostname-override=node7".to_owned()),
            "{argv:?}"
        );
        let config = proxy
            .mounts
            .iter()
            .find(|m| m.mount_path == Path::new("/etc/sluice"))
            .unwrap();
        let Source::ConfigMap { files, .. } = &config.source else {
            panic!("{config:?}")
        };
        assert!(files.contains_key("kube-proxy.yaml"));
    }

    #[test]
    fn variables_expand_as_the_kubelet_does() {
        let env: BTreeMap<String, String> = [("A".to_owned(), "x".to_owned())].into();
        assert_eq!(expand("--n=$(A)", &env), "--n=x");
        assert_eq!(expand("$$(A) $(B) $", &env), "$(A) $(B) $");
    }
}
