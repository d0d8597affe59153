//! The plugin against what a broken runtime, a careless operator or another process can hand
//! it (issue 15): oversized stdin, a store holding files it cannot read, values of the wrong
//! type, a `CNI_NETNS` that is no network namespace, an overlong container ID, ADD ∥ DEL ∥
//! ADD of one attachment, and a masquerade entry nobody owns any more. Each gets a clear
//! error or is skipped with a log line — never a panic, a blocked network or a leak.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{BIN, Node, Out, with_prev};
use serde_json::{Value, json};
use sluice_testbed::NetNs;

fn env<'a>(command: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

/// The addresses in the masquerade set of network `cbr0`.
fn masqueraded(node: &Node) -> BTreeSet<String> {
    let Ok(text) = node
        .ns
        .exec(["nft", "-j", "list", "set", "ip", "sluice-cni", "pods-cbr0"])
    else {
        return BTreeSet::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn stdin_larger_than_a_config_can_be_is_refused() {
    let node = Node::new();
    let mut conf = node.conf("1.0.0", json!({})).to_string();
    conf.push_str(&" ".repeat(2 << 20));
    let out = node
        .ns
        .run(|| sluice_testbed::cni::exec(Command::new(BIN), &[("CNI_COMMAND", "VERSION")], &conf));
    let out = out.unwrap().unwrap();
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stdout.contains("larger than 1 MiB"), "{}", out.stdout);
}

/// Issue 15 bug 6: each of these made every ADD and DEL of the network fail (code 999).
#[test]
fn files_the_store_cannot_read_are_skipped_not_fatal() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let store = node.ipam_dir().join("cbr0");
    std::fs::create_dir_all(store.join("10.244.1.50")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/sl-target", store.join("10.244.1.51")).unwrap();
    std::fs::write(store.join("10.244.1.52"), [0xff, 0xfe, 0x0d, 0x0a]).unwrap();
    std::fs::File::create(store.join("10.244.1.53"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let pod = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["address"], "10.244.1.2/24");
    let check = node.cmd(
        "CHECK",
        "c1",
        "eth0",
        &pod.path(),
        &with_prev(&conf, &add.json),
    );
    assert!(check.ok, "{}", check.stdout);
    let del = node.cmd("DEL", "c1", "eth0", &pod.path(), &conf);
    assert!(del.ok, "{}", del.stdout);
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = node.exec(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")], &gc);
    assert!(out.ok, "{}", out.stdout);
    for name in ["10.244.1.50", "10.244.1.51", "10.244.1.52", "10.244.1.53"] {
        assert!(
            std::fs::symlink_metadata(store.join(name)).is_ok(),
            "{name} is not the plugin's to remove"
        );
    }
    // Their addresses are never handed out either.
    let mut got = BTreeSet::new();
    let pods: Vec<NetNs> = (0..3).map(|_| NetNs::new("cni-pod").unwrap()).collect();
    for (i, pod) in pods.iter().enumerate() {
        let want = format!("10.244.1.{}", 50 + i);
        let c = node.conf("1.0.0", json!({"runtimeConfig": {"ips": [want]}}));
        let out = node.cmd("ADD", &format!("r{i}"), "eth0", &pod.path(), &c);
        got.insert(out.ok);
    }
    assert_eq!(got, BTreeSet::from([false]), "taken addresses stay taken");
}

fn add_with(node: &Node, extra: Value) -> Out {
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.0.0", extra);
    node.cmd("ADD", "c1", "eth0", &pod.path(), &conf)
}

/// Issue 15 bug 7: `"dns": 123` went into the result, a wrong-typed `ipam` or `dataDir`
/// silently fell back (`""` meant the working directory), a string where a list belongs was
/// ignored.
#[test]
fn values_of_the_wrong_type_are_invalid_config() {
    let node = Node::new();
    let cases = [
        (json!({"dns": 123}), "dns"),
        (json!({"dns": {"nameservers": "10.96.0.10"}}), "dns"),
        (json!({"ipam": "host-local"}), "ipam"),
        (json!({"ipam": {"dataDir": 5}}), "ipam.dataDir"),
        (json!({"ipam": {"dataDir": "relative/dir"}}), "ipam.dataDir"),
        (json!({"subnetFile": ""}), "subnetFile"),
        (json!({"dataDir": "scratch"}), "dataDir"),
        (
            json!({"runtimeConfig": {"ips": "10.244.1.9"}}),
            "runtimeConfig.ips",
        ),
        (json!({"runtimeConfig": {"mac": 5}}), "runtimeConfig.mac"),
        (json!({"args": {"cni": {"ips": [7]}}}), "args.cni.ips"),
        (json!({"name": "n".repeat(200)}), "name"),
        // Found by the cni_config fuzz target: a previous plugin's `dns` was passed on.
        (
            json!({"prevResult": {"cniVersion": "1.0.0", "dns": 44}}),
            "prevResult.dns",
        ),
        (
            json!({"prevResult": {"cniVersion": "1.0.0", "ips": "x"}}),
            "prevResult.ips",
        ),
    ];
    for (extra, key) in cases {
        let out = add_with(&node, extra.clone());
        assert!(!out.ok, "{extra}: {}", out.stdout);
        assert_eq!(out.code(), 7, "{extra}: {}", out.stdout);
        let msg = out.json["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(key), "{extra}: {msg}");
        assert!(node.reservations().is_empty(), "{extra}: reserved");
    }
    // The empty dataDir case, run where a fallback to the working directory would show.
    let cwd = tempfile::tempdir().unwrap();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node
        .conf("1.0.0", json!({"ipam": {"dataDir": ""}}))
        .to_string();
    let netns = pod.path().display().to_string();
    let out = node
        .ns
        .run(|| {
            let mut cmd = Command::new(BIN);
            cmd.current_dir(cwd.path());
            sluice_testbed::cni::exec(cmd, &env("ADD", "c1", &netns), &conf)
        })
        .unwrap()
        .unwrap();
    assert!(
        !out.ok && out.stdout.contains("ipam.dataDir"),
        "{}",
        out.stdout
    );
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "a store in the working directory: {left:?}"
    );
    let fine = add_with(
        &node,
        json!({"dns": {"nameservers": ["10.96.0.10"], "search": ["svc"]}}),
    );
    assert!(fine.ok, "{}", fine.stdout);
    assert_eq!(fine.json["dns"]["search"][0], "svc");
}

/// Issue 15 bug 7: a `CNI_NETNS` that is a plain file or another kind of namespace failed as
/// "create veth … Invalid argument".
#[test]
fn a_netns_path_that_is_no_network_namespace_says_so() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netns");
    std::fs::write(&file, "").unwrap();
    for (path, what) in [
        (file.as_path(), "not a namespace"),
        (Path::new("/proc/self/ns/mnt"), "not a network namespace"),
    ] {
        let out = node.cmd("ADD", "c1", "eth0", path, &conf);
        assert_eq!(out.code(), 4, "{}", out.stdout);
        let msg = out.json["msg"].as_str().unwrap();
        assert!(msg.contains("CNI_NETNS") && msg.contains(what), "{msg}");
        assert!(node.reservations().is_empty());
        assert!(node.host_veths().is_empty());
    }
}

/// Issue 15 bug 7: a container ID too long for the host link's alias failed ADD with ERANGE.
/// The alias is shortened with a hash, and GC still finds the link.
#[test]
fn an_overlong_container_id_works_and_gc_still_finds_its_link() {
    let node = Node::new();
    let conf = node.conf("1.1.0", json!({}));
    let long = format!("c{}", "0123456789abcdef".repeat(20));
    let pod = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", &long, "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let check = node.cmd(
        "CHECK",
        &long,
        "eth0",
        &pod.path(),
        &with_prev(&conf, &add.json),
    );
    assert!(check.ok, "{}", check.stdout);
    let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": long, "ifname": "eth0"}]);
    assert!(node.exec(&gc_env, &gc).ok);
    assert_eq!(node.host_veths().len(), 1, "kept");
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = node.exec(&gc_env, &gc);
    assert!(out.ok, "{}", out.stdout);
    assert!(node.host_veths_after_teardown().is_empty(), "GC found it");
    assert!(node.reservations().is_empty());
}

/// Issue 15 bug 7: ADD ∥ DEL ∥ ADD of one attachment could release the reservation while the
/// interface stayed configured, and leak its masquerade entry. Serialised per attachment,
/// every interleaving ends consistent: reserved ⇔ wired ⇔ masqueraded.
#[test]
fn add_del_add_of_one_attachment_race_to_a_consistent_state() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({"delegate": {"ipMasq": true}}));
    for round in 0..25 {
        let pod = NetNs::new("cni-race").unwrap();
        let path = pod.path();
        std::thread::scope(|s| {
            for command in ["ADD", "DEL", "ADD"] {
                let (node, conf, path) = (&node, &conf, &path);
                s.spawn(move || node.cmd(command, "racer", "eth0", path, conf));
            }
        });
        let reserved: BTreeSet<String> =
            node.reservations().into_iter().map(|(ip, _)| ip).collect();
        let wired = sluice_testbed::link::link_names(&pod)
            .unwrap()
            .contains(&"eth0".to_owned());
        let masq = masqueraded(&node);
        assert_eq!(
            (!reserved.is_empty(), &masq),
            (wired, &reserved),
            "round {round}: reserved {reserved:?}, eth0 in the pod {wired}, masqueraded {masq:?}"
        );
        assert!(node.cmd("DEL", "racer", "eth0", &path, &conf).ok);
        assert!(node.reservations().is_empty() && masqueraded(&node).is_empty());
    }
}

/// Issue 15 bug 7: a masquerade entry whose address nobody holds (left by a crash or a race)
/// stayed forever; GC removes it.
#[test]
fn gc_removes_masquerade_entries_nobody_holds() {
    let node = Node::new();
    let conf = node.conf("1.1.0", json!({"delegate": {"ipMasq": true}}));
    let pod = NetNs::new("cni-pod").unwrap();
    assert!(node.cmd("ADD", "keep", "eth0", &pod.path(), &conf).ok);
    node.ns
        .exec([
            "nft",
            "add",
            "element",
            "ip",
            "sluice-cni",
            "pods-cbr0",
            "{ 10.244.1.99 }",
        ])
        .unwrap();
    assert_eq!(masqueraded(&node).len(), 2);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = node.exec(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")], &gc);
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(
        masqueraded(&node),
        BTreeSet::from(["10.244.1.2".to_owned()])
    );
}

/// `logFile` naming a FIFO nobody reads used to block every invocation forever (opening a
/// FIFO for writing waits for a reader); only a regular file (or none yet) is logged to.
#[test]
fn a_log_file_that_is_no_regular_file_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cni.log");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "sluice", "logFile": fifo});
    let mut child = Command::new(BIN)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.is_some_and(|s| s.success()), "blocked on the FIFO");
}

/// A size-limited tmpfs mounted over the IPAM store for the test's life (unmounted, lazily,
/// on drop, also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "sl-ipam",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn veths(ns: &NetNs) -> usize {
    ns.ip(["-o", "link", "show", "type", "veth"])
        .unwrap_or_default()
        .lines()
        .count()
}

/// The kernel refuses to store a reservation (a full file system under the IPAM store): ADD
/// fails with a clear CNI error and leaves nothing behind — no reservation, no veth, no
/// address or interface in the pod, no masquerade entry — and works again once there is room.
#[test]
fn a_full_ipam_store_fails_add_cleanly_and_recovers() {
    let node = Node::new();
    let _tmpfs = Tmpfs::mount(&node.ipam_dir(), "64k");
    let conf = node.conf("1.0.0", json!({}));
    let first = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &first.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let (reserved, links, masq) = (node.reservations(), veths(&node.ns), masqueraded(&node));

    fill(&node.ipam_dir().join("filler"));
    let pod = NetNs::new("cni-pod").unwrap();
    let full = node.cmd("ADD", "c2", "eth0", &pod.path(), &conf);
    assert!(!full.ok, "ADD on a full store: {}", full.stdout);
    let msg = full.json["msg"].as_str().unwrap_or_default().to_owned()
        + " "
        + full.json["details"].as_str().unwrap_or_default();
    assert!(
        msg.contains("No space left on device") || msg.contains("ENOSPC"),
        "the error says why: {}",
        full.stdout
    );
    assert_eq!(node.reservations(), reserved, "no reservation left behind");
    assert_eq!(veths(&node.ns), links, "no veth left behind");
    assert_eq!(masqueraded(&node), masq, "no masquerade entry left behind");
    let inside = pod.ip(["-o", "link"]).unwrap();
    assert!(
        !inside.contains("eth0"),
        "no interface in the pod: {inside}"
    );
    // A DEL for the failed ADD, as a runtime sends it, succeeds.
    let del = node.cmd("DEL", "c2", "eth0", &pod.path(), &conf);
    assert!(del.ok, "{}", del.stdout);

    std::fs::remove_file(node.ipam_dir().join("filler")).unwrap();
    let again = node.cmd("ADD", "c2", "eth0", &pod.path(), &conf);
    assert!(again.ok, "ADD once there is room: {}", again.stdout);
    for (id, ns) in [("c1", &first), ("c2", &pod)] {
        let del = node.cmd("DEL", id, "eth0", &ns.path(), &conf);
        assert!(del.ok, "{}", del.stdout);
    }
    assert!(node.reservations().is_empty());
}
