//! The real `sluice-overlay` binary, kube subnet manager, on test-bed nodes: the test API
//! server is served on the underlay (192.168.0.1), each node's daemon runs in its namespace,
//! pods on different nodes talk over the overlay it builds; it heals, restarts with the same
//! lease, peers with a flannel node, runs host-gw, and refuses an unusable podCIDR clearly.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sluice_testbed::cluster::{Cluster, Node, Pod, UnderlayApi};
use sluice_testbed::traffic::{self, EchoServer};
use sluice_testbed::{Process, require_root};

const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const VXLAN_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const ANN: &str = "flannel.alpha.coreos.com";

/// The test API server, served on the underlay at [`API_IP`] so node namespaces reach it,
/// with a kubeconfig and net-conf.json in a temp dir.
struct Api(UnderlayApi);

impl std::ops::Deref for Api {
    type Target = UnderlayApi;

    fn deref(&self) -> &UnderlayApi {
        &self.0
    }
}

impl Api {
    fn start(cluster: &Cluster, net_conf: &str) -> Self {
        let api = cluster.underlay().api_server(API_IP).unwrap();
        std::fs::write(api.dir().join("net-conf.json"), net_conf).unwrap();
        Self(api)
    }

    /// Registers `node` with `pod_cidr` and extra `annotations`.
    fn add_node(&self, node: &Node, pod_cidr: &str, annotations: serde_json::Value) {
        self.server
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name(), "annotations": annotations},
                "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}}))
            .unwrap();
    }

    /// Registers every node with its test-bed pod CIDR.
    fn add_nodes(&self, cluster: &Cluster) {
        for node in cluster.nodes() {
            self.add_node(node, &node.pod_cidr().to_string(), json!({}));
        }
    }

    fn annotation(&self, node: &Node, key: &str) -> Option<String> {
        let obj = self.server.get("nodes", "", node.name()).ok()?;
        obj["metadata"]["annotations"][format!("{ANN}/{key}")]
            .as_str()
            .map(str::to_owned)
    }

    /// Starts the daemon on `node`: a 1 s reconcile period and the API's files, unless
    /// `extra` names those flags itself.
    fn daemon(&self, node: &Node, extra: &[&str]) -> Process {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-overlay"));
        let defaults = [
            ("--reconcile-period", "1s".into()),
            ("--kubeconfig", self.dir().join("kubeconfig")),
            ("--net-config-path", self.dir().join("net-conf.json")),
            ("--subnet-file", self.subnet_file(node)),
        ];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                cmd.arg(flag).arg(value);
            }
        }
        cmd.args(["--kube-subnet-mgr", "--iface", "eth0"])
            .args(extra)
            .env("NODE_NAME", node.name())
            .env("RUST_LOG", "info");
        node.ns().spawn(&cmd).unwrap()
    }

    fn subnet_file(&self, node: &Node) -> PathBuf {
        self.dir().join(node.name()).join("subnet.env")
    }
}

/// Polls `check` for up to 10 s.
fn eventually(what: &str, check: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(10), check);
}

fn talks(from: &Pod, to: &Pod) -> bool {
    let addr = SocketAddr::new(to.ip().into(), 9000);
    traffic::tcp_request(from.ns(), addr, Duration::from_millis(300))
        .is_ok_and(|r| r.backend == to.name() && r.seen_source.ip() == IpAddr::from(from.ip()))
}

/// A pod on each node with an echo server, and a check that they talk both ways.
fn pods_talk(n1: &Node, n2: &Node) -> (Pod, Pod, Vec<EchoServer>) {
    let a = n1.add_pod("a").unwrap();
    let b = n2.add_pod("b").unwrap();
    let any = SocketAddr::from(([0, 0, 0, 0], 9000));
    let servers = vec![
        EchoServer::tcp(a.ns(), "a", any).unwrap(),
        EchoServer::tcp(b.ns(), "b", any).unwrap(),
    ];
    eventually("pod a -> pod b across nodes", || talks(&a, &b));
    assert!(talks(&b, &a), "pod b -> pod a");
    (a, b, servers)
}

#[test]
fn kube_mode_overlay_connects_pods_heals_and_restarts_with_the_same_lease() {
    require_root();
    let cluster = Cluster::new(3).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    api.add_nodes(&cluster);
    let (n1, n2, n3) = (
        cluster.node(1).unwrap(),
        cluster.node(2).unwrap(),
        cluster.node(3).unwrap(),
    );
    let mut d1 = api.daemon(n1, &["--ip-masq"]);
    let _others = (api.daemon(n2, &[]), api.daemon(n3, &[]));
    eventually("subnet.env on every node", || {
        cluster.nodes().iter().all(|n| api.subnet_file(n).exists())
    });
    let env1 = std::fs::read_to_string(api.subnet_file(n1)).unwrap();
    assert_eq!(
        env1,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    assert_eq!(
        api.annotation(n1, "public-ip").as_deref(),
        Some("192.168.0.11")
    );
    assert_eq!(
        api.annotation(n1, "kube-subnet-manager").as_deref(),
        Some("true")
    );
    let backend_data = api.annotation(n1, "backend-data").unwrap();
    let masq = n1
        .ns()
        .exec(["nft", "list", "table", "ip", "sluice-overlay"])
        .unwrap();
    assert!(
        masq.contains("masquerade"),
        "--ip-masq installs its table: {masq}"
    );
    let routes = |n: &Node| n.ns().ip(["route", "show", "proto", "83"]).unwrap();
    eventually("every node routes to both peers", || {
        cluster
            .nodes()
            .iter()
            .all(|n| routes(n).lines().count() == 2)
    });

    let (a, b, _servers) = pods_talk(n1, n2);

    // Someone deletes flannel.1: it comes back with its peers.
    n1.ns().ip(["link", "del", "flannel.1"]).unwrap();
    eventually("overlay healed after flannel.1 was deleted", || {
        talks(&a, &b)
    });

    // A restart keeps the subnet and the VTEP MAC (so peers need no change), and no route
    // is removed anywhere meanwhile: `ip monitor` would print "Deleted".
    let monitors: Vec<Process> = [n1, n2]
        .iter()
        .map(|n| {
            n.ns()
                .spawn(Command::new("ip").args(["monitor", "route"]))
                .unwrap()
        })
        .collect();
    d1.stop();
    let mut d1 = api.daemon(n1, &["--ip-masq"]);
    eventually("restarted daemon took its lease", || {
        d1.logs().contains("lease acquired")
    });
    std::thread::sleep(Duration::from_millis(1500)); // a reconcile period after the restart
    assert_eq!(api.annotation(n1, "backend-data"), Some(backend_data));
    assert_eq!(std::fs::read_to_string(api.subnet_file(n1)).unwrap(), env1);
    for m in &monitors {
        assert!(
            !m.logs().contains("Deleted"),
            "a route was removed:\n{}",
            m.logs()
        );
    }
    assert!(
        talks(&a, &b) && talks(&b, &a),
        "traffic survives the restart"
    );
    assert!(
        d1.try_wait().unwrap().is_none(),
        "daemon still running:\n{}",
        d1.log_tail(20)
    );
}

#[test]
fn host_gw_routes_pods_via_the_peers_underlay_address() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(
        &cluster,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
    );
    api.add_nodes(&cluster);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let (_d1, _d2) = (api.daemon(n1, &[]), api.daemon(n2, &[]));
    let (_a, _b, _servers) = pods_talk(n1, n2);
    let route = n1.ns().ip(["route", "show", "10.244.2.0/24"]).unwrap();
    assert!(
        route.contains("via 192.168.0.12 dev eth0 proto 83"),
        "{route}"
    );
    let links = n1.ns().ip(["-o", "link"]).unwrap();
    assert!(
        !links.contains("flannel."),
        "host-gw needs no VXLAN device: {links}"
    );
    assert_eq!(
        api.annotation(n1, "backend-type").as_deref(),
        Some("host-gw")
    );
}

/// Node 2 plays a flannel node: its annotations are flannel's, its kernel is programmed with
/// the commands flannel's VXLAN backend issues. Node 1 runs Sluice. Their pods must talk.
#[test]
fn a_flannel_node_and_a_sluice_node_are_peers() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let flannel_mac = "0e:aa:bb:cc:dd:02";
    api.add_node(n1, "10.244.1.0/24", json!({}));
    api.add_node(
        n2,
        "10.244.2.0/24",
        json!({
            format!("{ANN}/backend-data"): format!(r#"{{"VNI":1,"VtepMAC":"{flannel_mac}"}}"#),
            format!("{ANN}/backend-type"): "vxlan",
            format!("{ANN}/kube-subnet-manager"): "true",
            format!("{ANN}/public-ip"): "192.168.0.12",
        }),
    );
    let flannel = |cmd: &str| n2.ns().exec(cmd.split_whitespace()).unwrap();
    flannel(
        "ip link add flannel.1 type vxlan id 1 local 192.168.0.12 dev eth0 dstport 8472 nolearning",
    );
    flannel(&format!(
        "ip link set flannel.1 address {flannel_mac} mtu 1450 up"
    ));
    flannel("ip addr add 10.244.2.0/32 dev flannel.1");

    let d1 = api.daemon(n1, &[]);
    let mut sluice_mac = None;
    eventually("node 1's annotations", || {
        sluice_mac = api
            .annotation(n1, "backend-data")
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
            .and_then(|v| v["VtepMAC"].as_str().map(str::to_owned));
        sluice_mac.is_some()
    });
    // What flannel does on node 2 when it learns node 1's lease (flannel.md §7).
    let mac = sluice_mac.unwrap();
    flannel(&format!(
        "ip neigh replace 10.244.1.0 lladdr {mac} dev flannel.1 nud permanent"
    ));
    flannel(&format!(
        "bridge fdb replace {mac} dev flannel.1 dst 192.168.0.11 self permanent"
    ));
    flannel("ip route replace 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink");

    let (_a, _b, _servers) = pods_talk(n1, n2);
    let fdb = n1
        .ns()
        .exec(["bridge", "fdb", "show", "dev", "flannel.1"])
        .unwrap();
    let want = format!("{flannel_mac} dst 192.168.0.12 self permanent");
    assert!(fdb.contains(&want), "{fdb}\n{}", d1.log_tail(20));
}

/// A podCIDR outside the configured Network can never work: the daemon says so and exits.
#[test]
fn a_pod_cidr_outside_the_network_is_a_clear_fatal_error() {
    require_root();
    let cluster = Cluster::new(1).unwrap();
    let api = Api::start(&cluster, r#"{"Network":"10.244.0.0/16"}"#);
    let n1 = cluster.node(1).unwrap();
    api.add_node(n1, "10.99.1.0/24", json!({}));
    let mut d = api.daemon(n1, &[]);
    let status = d.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    let logs = d.logs();
    let want = "pod cidr 10.99.1.0/24 is outside the network 10.244.0.0/16";
    assert!(logs.contains(want), "{logs}");
    assert!(
        !api.subnet_file(n1).exists(),
        "no subnet.env for a lease it could not take"
    );
}

/// With a one-hour reconcile period only the netlink deletion events can explain a repair.
#[test]
fn deletions_are_repaired_at_once_not_at_the_next_period() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    api.add_nodes(&cluster);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let slow = ["--reconcile-period", "1h"];
    let (_d1, _d2) = (api.daemon(n1, &slow), api.daemon(n2, &slow));
    let route = || n1.ns().ip(["route", "show", "10.244.2.0/24"]).unwrap();
    eventually("node 1's route to node 2", || route().contains("flannel.1"));
    n1.ns().ip(["route", "del", "10.244.2.0/24"]).unwrap();
    eventually("route restored by the deletion event", || {
        route().contains("flannel.1")
    });
    n1.ns().ip(["link", "del", "flannel.1"]).unwrap();
    eventually("device and route restored", || {
        route().contains("flannel.1")
    });
    let (_a, _b, _servers) = pods_talk(n1, n2);
}

/// `EnableIPv6`: each node gets a second VXLAN device (`flannel-v6.1`) over its IPv6
/// underlay address, publishes `public-ipv6` and `backend-v6-data`, writes the IPv6 keys of
/// subnet.env, and pods talk over IPv6 across nodes.
#[test]
fn dual_stack_overlay_carries_ipv6_pod_traffic() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let conf = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48","Backend":{"Type":"vxlan"}}"#;
    let api = Api::start(&cluster, conf);
    let v6_cidr = |i: u8| format!("fd00:10:244:{i}::/64");
    for node in cluster.nodes() {
        let i = node.index();
        let (v4, v6) = (node.pod_cidr().to_string(), v6_cidr(i));
        api.server
            .create(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name()},
                "spec": {"podCIDR": v4, "podCIDRs": [v4, v6]}}),
            )
            .unwrap();
        let ns = node.ns();
        ns.ip([
            "addr",
            "add",
            &format!("fd00:192:168::1{i}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
        ns.sysctl_set("net.ipv6.conf.all.forwarding", "1").unwrap();
    }
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let (_d1, _d2) = (api.daemon(n1, &[]), api.daemon(n2, &[]));
    eventually("subnet.env with IPv6 keys", || {
        std::fs::read_to_string(api.subnet_file(n1))
            .is_ok_and(|e| e.contains("FLANNEL_IPV6_SUBNET"))
    });
    let env = std::fs::read_to_string(api.subnet_file(n1)).unwrap();
    assert_eq!(
        env,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/48\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
    );
    assert_eq!(
        api.annotation(n1, "public-ipv6").as_deref(),
        Some("fd00:192:168::11")
    );
    assert!(
        api.annotation(n1, "backend-v6-data")
            .is_some_and(|d| d.contains("VtepMAC"))
    );

    // Pods with an IPv6 address from their node's v6 subnet, gateway ::1 on the node bridge.
    let pods: Vec<Pod> = [(n1, "a"), (n2, "b")]
        .into_iter()
        .map(|(node, name)| {
            let pod = node.add_pod(name).unwrap();
            let i = node.index();
            node.ns()
                .ip([
                    "addr",
                    "add",
                    &format!("fd00:10:244:{i}::1/64"),
                    "dev",
                    "tb0",
                    "nodad",
                ])
                .unwrap();
            pod.ns()
                .ip([
                    "addr",
                    "add",
                    &format!("fd00:10:244:{i}::2/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ])
                .unwrap();
            pod.ns()
                .ip([
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd00:10:244:{i}::1"),
                ])
                .unwrap();
            pod
        })
        .collect();
    let any6: SocketAddr = "[::]:9001".parse().unwrap();
    let _sb = EchoServer::tcp(pods[1].ns(), "b", any6).unwrap();
    let target: SocketAddr = "[fd00:10:244:2::2]:9001".parse().unwrap();
    let mut last = None;
    eventually("IPv6 pod a -> pod b over flannel-v6.1", || {
        last = Some(traffic::tcp_request(
            pods[0].ns(),
            target,
            Duration::from_millis(300),
        ));
        matches!(&last, Some(Ok(r)) if r.backend == "b")
    });
    let reply = last.unwrap().unwrap();
    assert_eq!(
        reply.seen_source.ip().to_string(),
        "fd00:10:244:1::2",
        "no NAT"
    );
    let link = n1
        .ns()
        .exec(["ip", "-d", "link", "show", "flannel-v6.1"])
        .unwrap();
    assert!(
        link.contains("vxlan id 1") && link.contains("local fd00:192:168::11"),
        "{link}"
    );
}

/// Issue 15 bug 2, kube mode: this node's annotations overwritten with garbage or removed
/// are published again while it runs, and garbage found there at start is replaced (it used
/// to make "read own node" fail, and be retried, forever).
#[test]
fn own_annotations_are_repaired_and_garbage_does_not_block_a_restart() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    api.add_nodes(&cluster);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let mut d1 = api.daemon(n1, &[]);
    let _d2 = api.daemon(n2, &[]);
    let (a, b, _servers) = pods_talk(n1, n2);
    let ours = || api.annotation(n1, "public-ip").as_deref() == Some("192.168.0.11");
    let scribble = |public_ip: Option<&str>| {
        let mut node = api.server.get("nodes", "", n1.name()).unwrap();
        let ann = node["metadata"]["annotations"].as_object_mut().unwrap();
        match public_ip {
            Some(ip) => {
                ann.insert(format!("{ANN}/public-ip"), json!(ip));
                ann.insert(format!("{ANN}/backend-data"), json!("{not json"));
            }
            None => ann.retain(|k, _| !k.starts_with(ANN)),
        }
        api.server.update(node).unwrap();
    };
    scribble(Some("banana"));
    eventually("own annotations repaired after garbage", ours);
    scribble(None);
    eventually("own annotations repaired after removal", || {
        ours() && api.annotation(n1, "kube-subnet-manager").as_deref() == Some("true")
    });

    d1.stop();
    scribble(Some("banana"));
    let mut d1 = api.daemon(n1, &[]);
    eventually("restarted daemon replaced the garbage", ours);
    eventually("pods talk after the restart", || {
        talks(&a, &b) && talks(&b, &a)
    });
    assert!(d1.try_wait().unwrap().is_none(), "{}", d1.log_tail(20));
}

/// Issue 15 bugs 5 and 7: files that cannot be what they should be, and an MTU the underlay
/// cannot carry, stop the daemon at once with an error naming the problem — before, a FIFO
/// as kubeconfig blocked it forever, a huge one was read whole, the MTU failed every
/// reconcile, and a FIFO as --subnet-file was replaced by a regular file.
#[test]
fn unusable_files_and_settings_are_clear_fatal_errors() {
    require_root();
    let cluster = Cluster::new(1).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    api.add_nodes(&cluster);
    let n1 = cluster.node(1).unwrap();
    let dir = api.dir();
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mtu_conf = dir.join("mtu.json");
    std::fs::write(
        &mtu_conf,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1480}}"#,
    )
    .unwrap();
    let fifo_s = fifo.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--kubeconfig", fifo_s],
            "not a regular file (it is a FIFO)",
        ),
        (
            &["--kubeconfig", big.to_str().unwrap()],
            "larger than 4 MiB (the limit for this input)",
        ),
        (
            &["--net-config-path", fifo_s],
            "not a regular file (it is a FIFO)",
        ),
        (
            &["--net-config-path", mtu_conf.to_str().unwrap()],
            "Backend.MTU 1480 does not fit eth0 (MTU 1500) with the 50-byte encapsulation: at most 1450",
        ),
        (
            &["--subnet-file", fifo_s],
            "not a regular file (it is a FIFO); refusing to replace it",
        ),
    ];
    for (args, want) in cases {
        let mut d = api.daemon(n1, args);
        let status = d.wait_timeout(Duration::from_secs(10));
        let logs = d.logs();
        assert!(
            status.is_ok_and(|s| !s.success()),
            "{args:?} should stop the daemon:\n{logs}"
        );
        assert!(logs.contains(want), "{args:?}: want {want:?} in\n{logs}");
    }
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced"
    );
}

/// Issue 11: `--ip-masq` programs its table through netlink (no `nft` process) and the
/// periodic reconcile repairs it: someone deleting the table, one of its rules, or adding a
/// rule of their own to it is undone within a reconcile period.
#[test]
fn the_masquerade_table_is_repaired_like_the_rest_of_the_overlay() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    api.add_nodes(&cluster);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    let d1 = api.daemon(n1, &["--ip-masq"]);
    let _d2 = api.daemon(n2, &[]);
    let list = || {
        n1.ns()
            .exec(["nft", "-a", "list", "table", "ip", "sluice-overlay"])
            .unwrap_or_default()
    };
    let whole = || {
        let t = list();
        t.matches("masquerade fully-random").count() == 2
            && t.matches(" accept ").count() == 2
            && !t.contains("drop")
    };
    eventually("the masquerade table", whole);
    let before = list();

    n1.ns()
        .exec(["nft", "delete", "table", "ip", "sluice-overlay"])
        .unwrap();
    eventually("table deleted: rebuilt", whole);

    let handle = list()
        .lines()
        .find(|l| l.contains("masquerade"))
        .and_then(|l| l.rsplit("handle ").next())
        .map(|h| h.trim().to_owned())
        .unwrap();
    n1.ns()
        .exec([
            "nft",
            "delete",
            "rule",
            "ip",
            "sluice-overlay",
            "postrouting",
            "handle",
            &handle,
        ])
        .unwrap();
    eventually("rule deleted: rebuilt", whole);

    n1.ns()
        .exec([
            "nft",
            "add",
            "rule",
            "ip",
            "sluice-overlay",
            "forward",
            "drop",
        ])
        .unwrap();
    eventually("foreign rule removed", whole);
    let strip = |t: &str| -> String {
        t.lines()
            .map(|l| l.split(" # handle").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&list()), strip(&before), "{}", d1.log_tail(20));
    assert!(
        d1.logs()
            .contains("masquerade table ip sluice-overlay written")
    );
}

/// A dual-stack peer (IPv6 podCIDR, public-ipv6, backend-v6-data, as flannel writes them) next
/// to a node running IPv4 only: its IPv4 subnet is routed, its IPv6 one ignored. The IPv6
/// route used to be programmed via a `flannel-v6.1` this node does not have, failing every
/// reconcile (and /healthz) for good. Found while writing the lease validation.
#[test]
fn a_dual_stack_peer_next_to_an_ipv4_only_node_is_routed_for_ipv4() {
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    api.add_node(n1, "10.244.1.0/24", json!({}));
    api.server
        .create(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n2.name(), "annotations": {
                format!("{ANN}/kube-subnet-manager"): "true",
                format!("{ANN}/backend-type"): "vxlan",
                format!("{ANN}/public-ip"): "192.168.0.12",
                format!("{ANN}/public-ipv6"): "fd00:192:168::12",
                format!("{ANN}/backend-data"): r#"{"VNI":1,"VtepMAC":"0e:aa:bb:cc:dd:02"}"#,
                format!("{ANN}/backend-v6-data"): r#"{"VNI":1,"VtepMAC":"0e:aa:bb:cc:dd:03"}"#,
            }},
            "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}}))
        .unwrap();
    let d1 = api.daemon(
        n1,
        &["--healthz-ip", "127.0.0.1", "--healthz-port", "10261"],
    );
    eventually("route to the peer's IPv4 subnet", || {
        n1.ns()
            .ip(["route", "show", "10.244.2.0/24"])
            .unwrap()
            .contains("flannel.1")
    });
    std::thread::sleep(Duration::from_secs(3)); // two periods and one more
    let addr = SocketAddr::from(([127, 0, 0, 1], 10261));
    let health = n1
        .ns()
        .run(|| {
            sluice_testbed::http::request(addr, "GET", "/healthz", None, Duration::from_secs(2))
        })
        .unwrap();
    let status = health.as_ref().map(|r| r.status).ok();
    assert_eq!(status, Some(200), "{health:?}\n{}", d1.log_tail(20));
}

/// A peer Node with flannel's VXLAN annotations for `cidr`, at underlay address `ip`.
fn fake_peer(api: &Api, name: &str, cidr: &str, ip: &str, mac: &str) {
    api.server
        .create(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {
                format!("{ANN}/kube-subnet-manager"): "true",
                format!("{ANN}/backend-type"): "vxlan",
                format!("{ANN}/public-ip"): ip,
                format!("{ANN}/backend-data"): format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
            }},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}))
        .unwrap();
}

/// Issue 15, API server faults against the overlay in kube mode: watches dropped, 410 Gone,
/// 500s and a hanging server, one after the other. During each the routes stay and the
/// daemon runs; after each a peer that joined during the fault is routed. `/healthz` is
/// recorded: the overlay's health is about its reconciles of the kernel, which go on from
/// what it knows, so it stays 200.
#[test]
fn api_server_faults_keep_the_routes_and_the_overlay_converges_after_each() {
    use sluice_test_apiserver::Fault;
    require_root();
    let cluster = Cluster::new(2).unwrap();
    let api = Api::start(&cluster, VXLAN_CONF);
    let (n1, n2) = (cluster.node(1).unwrap(), cluster.node(2).unwrap());
    api.add_node(n1, "10.244.1.0/24", json!({}));
    fake_peer(
        &api,
        n2.name(),
        "10.244.2.0/24",
        "192.168.0.12",
        "0e:aa:bb:cc:dd:02",
    );
    let mut d1 = api.daemon(
        n1,
        &["--healthz-ip", "127.0.0.1", "--healthz-port", "10262"],
    );
    let routes = || (n1.ns().ip(["route", "show", "dev", "flannel.1"])).unwrap_or_default();
    eventually("route to node 2", || routes().contains("10.244.2.0/24"));
    let addr = SocketAddr::from(([127, 0, 0, 1], 10262));
    let health = || {
        n1.ns()
            .run(|| {
                sluice_testbed::http::request(addr, "GET", "/healthz", None, Duration::from_secs(2))
            })
            .ok()
            .and_then(Result::ok)
            .map_or(0, |r| r.status)
    };
    for (i, fault) in Fault::ALL.into_iter().enumerate() {
        let before = routes();
        api.server.set_fault(fault);
        let n = 20 + i;
        let cidr = format!("10.244.{n}.0/24");
        fake_peer(
            &api,
            &format!("peer-{n}"),
            &cidr,
            &format!("192.168.0.{n}"),
            &format!("0e:aa:bb:cc:dd:{n:02x}"),
        );
        let mut codes = Vec::new();
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(500));
            codes.push(health());
            assert!(
                routes().contains("10.244.2.0/24"),
                "{fault}: route to node 2 kept:\n{}",
                routes()
            );
        }
        assert!(
            d1.try_wait().unwrap().is_none(),
            "{fault}: {}",
            d1.log_tail(20)
        );
        assert!(
            codes.iter().all(|c| *c == 200),
            "{fault}: /healthz during the fault: {codes:?}"
        );
        api.server.clear_fault();
        eventually(
            &format!("{fault}: the peer that joined meanwhile is routed"),
            || routes().contains(&cidr),
        );
        assert!(routes().contains(before.lines().next().unwrap_or("")));
    }
}
