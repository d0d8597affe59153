//! The plugin on a real kernel, run as a runtime runs it: exec'd inside a node namespace with
//! the `CNI_*` environment, attaching pod namespaces. Items of the conformance checklist
//! (cni-plugin/CONFORMANCE.md) are named in each test.

mod common;

use common::{Node, with_prev};
use serde_json::json;
use sluice_testbed::NetNs;

/// #12 #14 #15 #16 #23 #28 #38: every result version, checked against the kernel, then
/// undone completely.
#[test]
fn add_matches_the_kernel_in_every_version_and_del_undoes_it() {
    let node = Node::new();
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        // Round-robin: each ADD takes the address after the last one handed out.
        let ip = format!("10.244.1.{}", 2 + i);
        let pod = NetNs::new("cni-pod").unwrap();
        let conf = node.conf(version, json!({"foo": 1}));
        let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
        assert!(add.ok, "{version}: {}", add.stdout);
        let r = &add.json;
        assert_eq!(r["cniVersion"], version);
        assert_eq!(
            r["ips"][0].get("version").is_some(),
            version < "1.0.0",
            "{version}"
        );
        assert_eq!(r["ips"][0]["address"], format!("{ip}/24"));
        assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(r["ips"][0]["interface"], 2);
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
        );
        let ifaces = r["interfaces"].as_array().unwrap();
        assert_eq!(ifaces[0]["name"], "cni0");
        assert_eq!(ifaces[2]["name"], "eth0");
        assert_eq!(ifaces[2]["sandbox"], pod.path().display().to_string());
        // MACs as the kernel has them, on both sides.
        for (i, ns) in [(0, &node.ns), (1, &node.ns), (2, &pod)] {
            let name = ifaces[i]["name"].as_str().unwrap();
            let link = Node::ip_json(ns, &["link", "show", name]);
            assert_eq!(link[0]["address"], ifaces[i]["mac"], "{version} {name}");
        }
        let eth0 = Node::ip_json(&pod, &["addr", "show", "eth0"]);
        assert!(eth0[0]["flags"].as_array().unwrap().contains(&json!("UP")));
        assert_eq!(eth0[0]["mtu"], 1450);
        assert_eq!(eth0[0]["addr_info"][0]["local"], ip);
        let routes = Node::ip_json(&pod, &["route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], "10.244.1.1");
        assert_eq!(node.reservations(), vec![(ip.clone(), "c1\r\neth0".into())]);

        let del = node.cmd("DEL", "c1", "eth0", &pod.path(), &with_prev(&conf, r));
        assert!(del.ok && del.stdout.is_empty(), "{}", del.stdout);
        assert!(node.reservations().is_empty());
        let left = node.host_veths_after_teardown();
        assert!(left.is_empty(), "{left:?}");
        assert!(
            !sluice_testbed::link::link_names(&pod)
                .unwrap()
                .contains(&"eth0".into())
        );
    }
}

/// #13 #20: a pre-existing interface fails ADD after the address was reserved; nothing leaks.
#[test]
fn a_failed_add_releases_its_address_and_host_link() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    pod.ip([
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    let add = node.cmd(
        "ADD",
        "c1",
        "eth0",
        &pod.path(),
        &node.conf("1.0.0", json!({})),
    );
    assert!(!add.ok);
    assert!(
        add.json["msg"].as_str().unwrap().contains("already exists"),
        "{}",
        add.stdout
    );
    assert!(
        node.reservations().is_empty(),
        "leaked {:?}",
        node.reservations()
    );
    assert!(node.host_veths().is_empty());
}

/// #19: a second ADD of the same attachment takes no second address.
#[test]
fn a_repeated_add_takes_no_second_address() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.0.0", json!({}));
    assert!(node.cmd("ADD", "c1", "eth0", &pod.path(), &conf).ok);
    let again = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(!again.ok);
    assert!(
        again.json["msg"]
            .as_str()
            .unwrap()
            .contains("duplicate allocation")
    );
    assert_eq!(
        node.reservations().len(),
        1,
        "the first ADD's address stays"
    );
    assert_eq!(node.host_veths().len(), 1);
}

/// #17 #39: a previous plugin's result is carried and extended; `dns` comes back.
#[test]
fn a_previous_result_is_extended_and_dns_returned() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":pod.path()}],
        "ips":[{"address":"127.0.0.1/8","interface":0}],"routes":[],"dns":{}});
    let conf = node.conf(
        "1.0.0",
        json!({"prevResult": prev, "dns": {"nameservers": ["10.96.0.10"]}}),
    );
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["interfaces"][0]["name"], "lo");
    assert_eq!(add.json["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(add.json["ips"][1]["interface"], 3);
    assert_eq!(add.json["dns"]["nameservers"][0], "10.96.0.10");
}

/// #18: the `ips` and `mac` capabilities are honoured.
#[test]
fn requested_ip_and_mac_are_honoured() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf(
        "1.1.0",
        json!({"runtimeConfig": {"ips": ["10.244.1.77/24"], "mac": "0a:58:0a:f4:01:4d"}}),
    );
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    assert_eq!(add.json["ips"][0]["address"], "10.244.1.77/24");
    assert_eq!(add.json["interfaces"][2]["mac"], "0a:58:0a:f4:01:4d");
    let taken = node.cmd("ADD", "c2", "eth1", &pod.path(), &conf);
    assert!(
        !taken.ok && taken.stdout.contains("already allocated"),
        "{}",
        taken.stdout
    );
    assert_eq!(node.reservations().len(), 1);
}

/// #22: exhaustion is an error, never a duplicate.
#[test]
fn exhaustion_is_an_error_never_a_duplicate() {
    let node = Node::new();
    std::fs::write(
        node.subnet_file(),
        common::SUBNET_ENV.replace("10.244.1.1/24", "10.244.1.1/29"),
    )
    .unwrap();
    let conf = node.conf("1.0.0", json!({}));
    let mut got = Vec::new();
    let mut pods = Vec::new();
    for i in 0..6 {
        pods.push(NetNs::new("cni-pod").unwrap());
        let out = node.cmd("ADD", &format!("c{i}"), "eth0", &pods[i].path(), &conf);
        if !out.ok {
            assert!(
                out.stdout.contains("no IP addresses available"),
                "{}",
                out.stdout
            );
            break;
        }
        got.push(out.json["ips"][0]["address"].as_str().unwrap().to_owned());
    }
    // .2 .3 .4 .5 .6: not the network, the gateway (.1) or the broadcast address (.7).
    assert_eq!(
        got,
        [
            "10.244.1.2/29",
            "10.244.1.3/29",
            "10.244.1.4/29",
            "10.244.1.5/29",
            "10.244.1.6/29"
        ]
    );
}

/// #24 #25 #26 #27: DEL twice, DEL of a stranger, DEL without netns and after the netns is gone.
#[test]
fn del_is_idempotent_and_frees_the_address_without_the_netns() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let pod = NetNs::new("cni-pod").unwrap();
    let path = pod.path();
    assert!(node.cmd("ADD", "c1", "eth0", &path, &conf).ok);
    drop(pod);
    assert!(!path.exists());
    let del = node.cmd("DEL", "c1", "eth0", &path, &with_prev(&conf, &json!({})));
    assert!(del.ok, "{}", del.stdout);
    assert!(node.reservations().is_empty());
    assert!(node.cmd("DEL", "c1", "eth0", &path, &conf).ok, "second DEL");
    assert!(
        node.cmd("DEL", "never", "eth0", &path, &conf).ok,
        "never added"
    );
    let pod = NetNs::new("cni-pod").unwrap();
    assert!(node.cmd("ADD", "c2", "eth0", &pod.path(), &conf).ok);
    let no_netns = node.exec(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &conf,
    );
    assert!(no_netns.ok, "{}", no_netns.stdout);
    assert!(node.reservations().is_empty());
    assert!(node.host_veths_after_teardown().is_empty());
}

/// #29 #30 #31 #32 #33: CHECK passes right after ADD, tolerates a later plugin's route and
/// fails when any part of the result is gone.
#[test]
fn check_verifies_everything_the_result_claims() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.1.0", json!({}));
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    let check = |what: &str| {
        let out = node.cmd(
            "CHECK",
            "c1",
            "eth0",
            &pod.path(),
            &with_prev(&conf, &add.json),
        );
        (out.ok, format!("{what}: {}", out.stdout))
    };
    let (ok, why) = check("right after ADD");
    assert!(ok, "{why}");
    pod.ip(["route", "add", "192.0.2.0/24", "via", "10.244.1.1"])
        .unwrap();
    pod.ip(["link", "set", "eth0", "address", "0a:00:00:00:00:09"])
        .unwrap();
    let (ok, why) = check("extra route, new MAC");
    assert!(ok, "{why}");

    let no_prev = node.cmd("CHECK", "c1", "eth0", &pod.path(), &conf);
    assert!(!no_prev.ok && no_prev.stdout.contains("prevResult"));
    let old = node.cmd(
        "CHECK",
        "c1",
        "eth0",
        &pod.path(),
        &with_prev(&node.conf("0.3.1", json!({})), &add.json),
    );
    assert_eq!(old.code(), 1);

    pod.ip(["route", "del", "default"]).unwrap();
    let (ok, why) = check("no default route");
    assert!(!ok && why.contains("route 0.0.0.0/0"), "{why}");
    pod.ip(["route", "add", "default", "via", "10.244.1.1"])
        .unwrap();
    let file = node.ipam_dir().join("cbr0/10.244.1.2");
    std::fs::remove_file(&file).unwrap();
    let (ok, why) = check("no reservation");
    assert!(!ok && why.contains("not reserved"), "{why}");
    std::fs::write(&file, "c1\r\neth0").unwrap();
    pod.ip(["addr", "del", "10.244.1.2/24", "dev", "eth0"])
        .unwrap();
    let (ok, why) = check("no address");
    assert!(!ok && why.contains("lacks address"), "{why}");
    // Deleting the address took the default route with it; put both back.
    pod.ip(["addr", "add", "10.244.1.2/24", "dev", "eth0"])
        .unwrap();
    pod.ip(["route", "add", "default", "via", "10.244.1.1"])
        .unwrap();
    let (ok, why) = check("address back");
    assert!(ok, "{why}");
    node.ns.ip(["link", "del", &node.host_veths()[0]]).unwrap();
    let (ok, why) = check("no veth");
    assert!(!ok && why.contains("host interface"), "{why}");
}

/// A link of another plugin that happens to carry the host end's name is neither taken
/// over by ADD nor deleted by its rollback or by DEL.
#[test]
fn a_foreign_link_with_the_host_name_is_left_alone() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let pod = NetNs::new("cni-pod").unwrap();
    // Learn the host end's name, then give it to a foreign veth.
    assert!(node.cmd("ADD", "c1", "eth0", &pod.path(), &conf).ok);
    let name = node.host_veths()[0].clone();
    assert!(node.cmd("DEL", "c1", "eth0", &pod.path(), &conf).ok);
    assert!(node.host_veths_after_teardown().is_empty());
    node.ns
        .ip([
            "link", "add", &name, "type", "veth", "peer", "name", "foreign0",
        ])
        .unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(
        !add.ok && add.stdout.contains("already exists"),
        "{}",
        add.stdout
    );
    assert!(node.reservations().is_empty(), "rolled back");
    assert!(node.cmd("DEL", "c1", "eth0", &pod.path(), &conf).ok);
    let names = sluice_testbed::link::link_names(&node.ns).unwrap();
    assert!(
        names.contains(&name) && names.contains(&"foreign0".to_owned()),
        "{names:?}"
    );
}

/// Hairpin for real: a pod reaching itself through an address the node DNATs back to it
/// (as a Service would) is answered — the frame goes back out the port it came in on.
#[test]
fn a_pod_reaches_itself_through_a_dnat_on_the_node() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let pod = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let _server =
        sluice_testbed::traffic::EchoServer::tcp(&pod, "self", "0.0.0.0:8080".parse().unwrap())
            .unwrap();
    node.ns
        .exec([
            "nft",
            "add table ip t; \
             add chain ip t pre { type nat hook prerouting priority -100; }; \
             add chain ip t post { type nat hook postrouting priority 100; }; \
             add rule ip t pre ip daddr 10.96.0.1 tcp dport 80 dnat to 10.244.1.2:8080; \
             add rule ip t post ip saddr 10.244.1.2 ip daddr 10.244.1.2 masquerade",
        ])
        .unwrap();
    let reply = sluice_testbed::traffic::tcp_request(
        &pod,
        "10.96.0.1:80".parse().unwrap(),
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(reply.backend, "self");
}

/// Dual stack: with an IPv6 subnet in subnet.env the pod gets an address and a default
/// route per family, and DEL releases both.
#[test]
fn dual_stack_attachments() {
    let node = Node::new();
    std::fs::write(
        node.subnet_file(),
        format!(
            "{}FLANNEL_IPV6_NETWORK=fd00:10::/56\nFLANNEL_IPV6_SUBNET=fd00:10:0:1::1/64\n",
            common::SUBNET_ENV
        ),
    )
    .unwrap();
    let conf = node.conf("1.1.0", json!({}));
    let pod = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let addrs: Vec<&str> = add.json["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.244.1.2/24", "fd00:10:0:1::2/64"]);
    let v6 = Node::ip_json(&pod, &["-6", "route", "show", "default"]);
    assert_eq!(v6[0]["gateway"], "fd00:10:0:1::1");
    let eth0 = Node::ip_json(&pod, &["-6", "addr", "show", "eth0"]);
    assert!(eth0.to_string().contains("fd00:10:0:1::2"), "{eth0}");
    let check = node.cmd(
        "CHECK",
        "c1",
        "eth0",
        &pod.path(),
        &with_prev(&conf, &add.json),
    );
    assert!(check.ok, "{}", check.stdout);
    assert_eq!(node.reservations().len(), 2);
    assert!(node.cmd("DEL", "c1", "eth0", &pod.path(), &conf).ok);
    assert!(node.reservations().is_empty());
}

/// #35: GC releases what is not listed (both keys), keeps what is; GC needs 1.1.0.
#[test]
fn gc_releases_unlisted_attachments_only() {
    let node = Node::new();
    let conf = node.conf("1.1.0", json!({}));
    let pods: Vec<NetNs> = (0..3).map(|_| NetNs::new("cni-pod").unwrap()).collect();
    for (id, pod) in ["keep", "drop1", "drop2"].into_iter().zip(&pods) {
        assert!(
            node.cmd("ADD", id, &format!("e-{id}"), &pod.path(), &conf)
                .ok
        );
    }
    assert_eq!(node.host_veths().len(), 3);
    let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([{"containerID": "keep", "ifname": "e-keep"}]);
    let out = node.exec(&gc_env, &gc);
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(
        node.reservations(),
        vec![("10.244.1.2".into(), "keep\r\ne-keep".into())]
    );
    assert_eq!(node.host_veths().len(), 1);
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(node.exec(&gc_env, &gc).ok);
    assert!(node.reservations().is_empty() && node.host_veths().is_empty());
    gc["cniVersion"] = json!("1.0.0");
    assert_eq!(node.exec(&gc_env, &gc).code(), 1);
}

/// #10 #11: the plugin's own netns is refused (code 8); ADD before the overlay is up is
/// "try again later" (11).
#[test]
fn own_netns_and_missing_subnet_env_have_their_codes() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let own = node.cmd(
        "ADD",
        "c1",
        "eth0",
        std::path::Path::new("/proc/self/ns/net"),
        &conf,
    );
    assert_eq!(own.code(), 8, "{}", own.stdout);
    std::fs::remove_file(node.subnet_file()).unwrap();
    let pod = NetNs::new("cni-pod").unwrap();
    let early = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert_eq!(early.code(), 11, "{}", early.stdout);
    assert!(node.reservations().is_empty());
}

/// Two pods on one node reach each other through the bridge; the host port is in hairpin
/// mode; the node reaches the pods through the gateway.
#[test]
fn pods_on_one_bridge_talk_and_hairpin_is_on() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let a = NetNs::new("cni-pod").unwrap();
    let b = NetNs::new("cni-pod").unwrap();
    assert!(node.cmd("ADD", "a", "eth0", &a.path(), &conf).ok);
    assert!(node.cmd("ADD", "b", "eth0", &b.path(), &conf).ok);
    a.exec(["ping", "-c1", "-W2", "10.244.1.3"]).unwrap();
    node.ns.exec(["ping", "-c1", "-W2", "10.244.1.2"]).unwrap();
    for veth in node.host_veths() {
        let d = Node::ip_json(&node.ns, &["-d", "link", "show", &veth]);
        assert_eq!(
            d[0]["linkinfo"]["info_slave_data"]["hairpin"], true,
            "{veth}"
        );
        assert_eq!(d[0]["master"], "cni0");
    }
}

/// #21: 100 parallel ADDs get 100 distinct addresses; parallel DELs leave the store empty.
#[test]
fn a_hundred_parallel_adds_and_dels() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({}));
    let pods: Vec<NetNs> = (0..100).map(|_| NetNs::new("cni-par").unwrap()).collect();
    let results: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || {
                    let out = node.cmd("ADD", &format!("p{i}"), "eth0", &p.path(), conf);
                    assert!(out.ok, "{}", out.stdout);
                    out.json["ips"][0]["address"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<_> = results.iter().collect();
    assert_eq!(distinct.len(), 100);
    assert_eq!(node.reservations().len(), 100);
    assert_eq!(node.host_veths().len(), 100);
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            s.spawn(move || {
                let out = node.cmd("DEL", &format!("p{i}"), "eth0", &p.path(), conf);
                assert!(out.ok, "{}", out.stdout);
            });
        }
    });
    assert!(node.reservations().is_empty());
    assert!(node.host_veths_after_teardown().is_empty());
}

/// `ipMasq`: the pod's address joins the network's masquerade set; DEL takes it out.
#[test]
fn ip_masq_adds_and_removes_the_pod() {
    let node = Node::new();
    let conf = node.conf("1.0.0", json!({"delegate": {"ipMasq": true}}));
    let pod = NetNs::new("cni-pod").unwrap();
    let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
    assert!(add.ok, "{}", add.stdout);
    let table = node
        .ns
        .exec(["nft", "list", "table", "ip", "sluice-cni"])
        .unwrap();
    assert!(table.contains("10.244.1.2"), "{table}");
    assert!(
        table.contains("ip saddr @pods-cbr0 ip daddr != @keep-cbr0 masquerade")
            && table.contains("elements = { 10.244.0.0/16, 224.0.0.0/4 }"),
        "{table}"
    );
    // Real traffic to a host outside the cluster networks leaves with the node's address.
    let outside = NetNs::new("cni-out").unwrap();
    let _veth = sluice_testbed::link::Veth::new(&node.ns, "out0", &outside, "eth0").unwrap();
    let _a = sluice_testbed::link::Address::new(&node.ns, "out0", "192.0.2.1/24".parse().unwrap())
        .unwrap();
    let _b = sluice_testbed::link::Address::new(&outside, "eth0", "192.0.2.2/24".parse().unwrap())
        .unwrap();
    let server = sluice_testbed::traffic::EchoServer::tcp(
        &outside,
        "outside",
        "192.0.2.2:8080".parse().unwrap(),
    )
    .unwrap();
    let reply = sluice_testbed::traffic::tcp_request(
        &pod,
        server.local_addr(),
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        reply.seen_source.ip().to_string(),
        "192.0.2.1",
        "masqueraded to the node"
    );

    assert!(node.cmd("DEL", "c1", "eth0", &pod.path(), &conf).ok);
    let table = node
        .ns
        .exec(["nft", "list", "table", "ip", "sluice-cni"])
        .unwrap();
    assert!(!table.contains("10.244.1.2"), "{table}");
}

/// Drop-in for flannel: installed under the name `flannel`, the same conflist works.
#[test]
fn works_installed_as_flannel() {
    let node = Node::new();
    let bin = node.dir.path().join("flannel");
    std::fs::copy(common::BIN, &bin).unwrap();
    let pod = NetNs::new("cni-pod").unwrap();
    let netns = pod.path().display().to_string();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    let out = node.exec_bin(&bin, &env, &node.conf("1.0.0", json!({})));
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(out.json["ips"][0]["address"], "10.244.1.2/24");
}

/// DEL returns before the kernel has torn the pair down (a detached `reap-link` finishes
/// it): an immediate ADD of the same attachment into the same pod still works, many times.
#[test]
fn add_right_after_del_of_the_same_attachment_works() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.0.0", json!({}));
    for round in 0..10 {
        let add = node.cmd("ADD", "c1", "eth0", &pod.path(), &conf);
        assert!(add.ok, "round {round}: {}", add.stdout);
        let del = node.cmd("DEL", "c1", "eth0", &pod.path(), &conf);
        assert!(del.ok, "round {round}: {}", del.stdout);
    }
    assert!(node.reservations().is_empty());
    assert!(node.host_veths_after_teardown().is_empty());
    let left = sluice_testbed::link::link_names(&pod).unwrap();
    assert!(!left.contains(&"eth0".to_owned()), "{left:?}");
}

/// The same with another container in the same pod namespace right after a DEL: the pod's
/// old `eth0` (its pair released, teardown still running) does not block the new one, while
/// an `eth0` that belongs to a live attachment still does.
#[test]
fn add_after_del_of_another_container_in_the_same_netns_works() {
    let node = Node::new();
    let pod = NetNs::new("cni-pod").unwrap();
    let conf = node.conf("1.0.0", json!({}));
    for round in 0..10 {
        let id = format!("c{round}");
        let add = node.cmd("ADD", &id, "eth0", &pod.path(), &conf);
        assert!(add.ok, "round {round}: {}", add.stdout);
        assert!(node.cmd("DEL", &id, "eth0", &pod.path(), &conf).ok);
    }
    assert!(node.cmd("ADD", "live", "eth0", &pod.path(), &conf).ok);
    let blocked = node.cmd("ADD", "other", "eth0", &pod.path(), &conf);
    assert!(
        !blocked.ok && blocked.stdout.contains("already exists"),
        "{}",
        blocked.stdout
    );
    assert_eq!(
        node.reservations().len(),
        1,
        "the refused ADD released its address"
    );
}
