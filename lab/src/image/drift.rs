//! The manifest against the image and the binaries it runs: a flag a binary no longer
//! accepts, a path no volume holds, a binary the image lacks, a capability beyond the ones the
//! daemons need, a second image name, or the two image definitions parting ways fails here —
//! before anyone applies the manifest. Each container's command line goes through the very
//! parser of the binary it runs (after `$(VAR)` expansion, as the kubelet does); what the
//! binaries need at run time (capabilities, mounts) is proven by `sluice-lab demo --image`,
//! which runs the image with exactly these settings.

use std::path::{Path, PathBuf};

use super::manifest::{self, Container, Mount, Pod, Source};

fn pod() -> Pod {
    manifest::load(&manifest::default_path()).unwrap()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    pod.init_containers
        .iter()
        .chain(&pod.containers)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The mount of `c` that holds `path`, and the path inside the volume.
fn mount_of<'a>(c: &'a Container, path: &Path) -> Option<(&'a Mount, PathBuf)> {
    c.mounts
        .iter()
        .filter_map(|m| Some((m, path.strip_prefix(&m.mount_path).ok()?.to_owned())))
        .max_by_key(|(m, _)| m.mount_path.as_os_str().len())
}

/// The volumes of `c` as directories under `root` (the ConfigMap's files written), and its
/// command line with every path on a volume moved there — the container's view, outside it.
fn outside(c: &Container, root: &Path, argv: &[String]) -> Vec<String> {
    for m in &c.mounts {
        let dir = root.join(&m.volume);
        std::fs::create_dir_all(&dir).unwrap();
        if let Source::ConfigMap { files, .. } = &m.source {
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
    }
    argv.iter()
        .map(|arg| {
            let (prefix, value) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (format!("{flag}="), value),
                _ => (String::new(), arg.as_str()),
            };
            match mount_of(c, Path::new(value)) {
                Some((m, rest)) if value.starts_with('/') => {
                    format!("{prefix}{}", root.join(&m.volume).join(rest).display())
                }
                _ => arg.clone(),
            }
        })
        .collect()
}

/// Asserts that `path` (inside container `c`) is on a volume of the given kind.
fn on_volume(c: &Container, path: &Path, host_path: bool) {
    let (m, rest) = mount_of(c, path)
        .unwrap_or_else(|| panic!("{}: {} is on no volume", c.name, path.display()));
    match &m.source {
        Source::HostPath { .. } => assert!(host_path, "{}: {} is a hostPath", c.name, m.volume),
        Source::ConfigMap { files, name } => {
            assert!(!host_path, "{}: {} is a ConfigMap", c.name, m.volume);
            let key = rest.to_string_lossy();
            assert!(files.contains_key(&*key), "ConfigMap {name} has no {key}");
        }
    }
}

#[test]
fn install_cni_command_parses_and_installs_onto_the_hosts_directories() {
    let pod = pod();
    let c = container(&pod, "install-cni");
    let argv = c.argv("node1");
    assert_eq!(argv[..2], ["/usr/local/bin/sluice", "install"]);
    let install = sluice_cni::install::Install::from_args(&argv[2..])
        .unwrap_or_else(|e| panic!("sluice install refuses the manifest's command line: {e}"));
    on_volume(c, &install.bin_dir, true);
    on_volume(c, &install.conf_dir, true);
    let (conflist, name) = install.conflist.clone().expect("a conflist");
    on_volume(c, &conflist, false);
    assert!(name.ends_with(".conflist"), "{name}");

    // And it runs: the binary and the conflist land in the hostPath volumes.
    let root = tempfile::tempdir().unwrap();
    let moved = outside(c, root.path(), &argv);
    let mut install = sluice_cni::install::Install::from_args(&moved[2..]).unwrap();
    install.binary = root.path().join("plugin");
    std::fs::write(&install.binary, b"\x7fELF").unwrap();
    let written = install.run().unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    let text = std::fs::read_to_string(&written[2]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["plugins"][0]["type"], "sluice");
}

#[test]
fn overlay_command_parses_with_the_overlays_flags() {
    use clap::Parser;
    let pod = pod();
    let c = container(&pod, "overlay");
    let argv = c.argv("node1");
    assert_eq!(argv[0], "/usr/local/bin/sluice-overlay");
    let flags = sluice_overlay::flags::Flags::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the overlay refuses the manifest's command line: {e}"));
    assert!(
        flags.kube_subnet_mgr,
        "the DaemonSet uses the kube subnet manager"
    );
    on_volume(c, &flags.net_config_path, false);
    on_volume(c, &flags.subnet_file, true);
    // The config it reads parses with the daemon's own code.
    let root = tempfile::tempdir().unwrap();
    let moved =
        sluice_overlay::flags::Flags::try_parse_from(outside(c, root.path(), &argv)).unwrap();
    let text = std::fs::read_to_string(&moved.net_config_path).unwrap();
    sluice_model::net_conf::NetConf::parse(&text)
        .unwrap()
        .check()
        .unwrap();
    // NODE_NAME (the downward API) is the node name the overlay uses.
    assert!(
        c.env_for("node1")
            .contains(&("NODE_NAME".into(), "node1".into()))
    );
}

#[test]
fn proxy_command_parses_and_resolves_with_every_flag_taking_effect() {
    let pod = pod();
    let c = container(&pod, "proxy");
    let argv = c.argv("node1");
    assert_eq!(argv[0], "/usr/local/bin/sluice-proxy");
    let root = tempfile::tempdir().unwrap();
    let moved = outside(c, root.path(), &argv);
    let flags = sluice_proxy_core::flags::Flags::parse_args(&moved)
        .unwrap_or_else(|e| panic!("the proxy refuses the manifest's command line: {e}"));
    let config = flags.config.clone().expect("--config");
    on_volume(
        c,
        Path::new(
            argv.iter()
                .find_map(|a| a.strip_prefix("--config="))
                .unwrap(),
        ),
        false,
    );
    assert!(config.starts_with(root.path()));
    let resolved = flags
        .resolve()
        .unwrap_or_else(|e| panic!("the proxy refuses the manifest's configuration: {e}"));
    assert!(
        matches!(resolved.action, sluice_proxy_core::flags::Action::Run),
        "{:?}",
        resolved.action
    );
    assert!(
        resolved.ignored_flags.is_empty(),
        "flags the config file overrides, so they do nothing: {:?}",
        resolved.ignored_flags
    );
    assert_eq!(resolved.config.hostname_override.as_deref(), Some("node1"));
}

#[test]
fn every_command_is_a_binary_the_image_holds() {
    let contents = std::fs::read_to_string(repo("deploy/image/contents.txt")).unwrap();
    let pod = pod();
    for c in pod.init_containers.iter().chain(&pod.containers) {
        let entry = format!("f .{}", c.command[0]);
        assert!(
            contents.lines().any(|l| l == entry),
            "{}: {} is not in deploy/image/contents.txt",
            c.name,
            c.command[0]
        );
    }
}

#[test]
fn the_image_is_named_once_and_carries_the_workspace_version() {
    let text = std::fs::read_to_string(manifest::default_path()).unwrap();
    assert_eq!(text.matches("image: &image ").count(), 1);
    assert_eq!(text.matches("image:").count(), 3, "one anchor, two aliases");
    let pod = pod();
    let want = format!("sluice:{}", env!("CARGO_PKG_VERSION"));
    for c in pod.init_containers.iter().chain(&pod.containers) {
        assert_eq!(c.image, want, "{}", c.name);
    }
}

#[test]
fn least_privilege() {
    let pod = pod();
    for c in pod.init_containers.iter().chain(&pod.containers) {
        assert!(!c.privileged, "{}", c.name);
        assert_eq!(c.caps_drop, ["ALL"], "{}", c.name);
        assert!(!c.privilege_escalation, "{}", c.name);
        assert!(c.read_only_root, "{}", c.name);
        for cap in &c.caps_add {
            // BPF and PERFMON: the proxy's ebpf mode only (see the manifest's comment).
            let ebpf = c.name == "proxy" && ["BPF", "PERFMON"].contains(&cap.as_str());
            assert!(
                ["NET_ADMIN", "NET_RAW", "SYS_RESOURCE"].contains(&cap.as_str()) || ebpf,
                "{}: {cap}",
                c.name
            );
            assert_ne!(
                cap, "SYS_ADMIN",
                "{}: nothing mounts in a container",
                c.name
            );
        }
    }
    assert!(container(&pod, "install-cni").caps_add.is_empty());
}

/// The proxy's ebpf mode: its pin directory is on the node's bpffs and its cgroup is the
/// node's cgroup2 hierarchy (hostPaths, not the container's own view), both as the flags name
/// them after the config file is read.
#[test]
fn the_proxys_ebpf_paths_are_the_nodes_bpffs_and_cgroup2() {
    let pod = pod();
    let c = container(&pod, "proxy");
    let argv = c.argv("node1");
    let root = tempfile::tempdir().unwrap();
    let moved = outside(c, root.path(), &argv);
    let resolved = sluice_proxy_core::flags::Flags::parse_args(&moved)
        .unwrap()
        .resolve()
        .unwrap();
    let host_path_of = |path: &Path| {
        let (m, rest) =
            mount_of(c, path).unwrap_or_else(|| panic!("{} is on no volume", path.display()));
        match &m.source {
            Source::HostPath { path, .. } => path.join(rest),
            Source::ConfigMap { name, .. } => panic!("{} is in ConfigMap {name}", m.volume),
        }
    };
    let flag = |name: &str| {
        let value = argv
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")));
        PathBuf::from(value.unwrap_or_else(|| panic!("no --{name}")))
    };
    assert!(resolved.config.ebpf.pin_dir.is_some() && resolved.config.ebpf.cgroup.is_some());
    assert_eq!(
        host_path_of(&flag("ebpf-pin-dir")),
        Path::new("/sys/fs/bpf/sluice")
    );
    assert_eq!(
        host_path_of(&flag("ebpf-cgroup")),
        Path::new("/sys/fs/cgroup")
    );
}

#[test]
fn both_image_definitions_end_in_the_same_image_stage() {
    let stage = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(repo(path)).unwrap();
        let marker = "# --- the image";
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("{path}: no {marker}"));
        text[at..]
            .lines()
            .filter(|l| !l.starts_with("COPY "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        stage("deploy/Containerfile"),
        stage("deploy/image/Containerfile.rootfs")
    );
}
