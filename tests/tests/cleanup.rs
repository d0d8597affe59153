//! Kernel tests: guards leave nothing behind, and the host is never touched (need root).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use sluice_testbed::cluster::Cluster;
use sluice_testbed::link::{Address, Bridge, Veth};
use sluice_testbed::names::pid_alive;
use sluice_testbed::traffic::{self, EchoServer, Proto};
use sluice_testbed::{NetNs, require_root};

/// `ip netns list`, names only.
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Builds namespaces, links and processes, records their names and PIDs, then panics.
fn build_then_panic(names: &mut Vec<String>, pids: &mut Vec<i32>) -> Result<()> {
    let a = NetNs::new("leak-a")?;
    let b = NetNs::new("leak-b")?;
    names.extend([a.name().to_owned(), b.name().to_owned()]);
    let _veth = Veth::new(&a, "va", &b, "vb")?;
    let bridge = Bridge::new(&a, "br0")?;
    let _vb = Veth::new(&a, "vc", &b, "vd")?;
    bridge.attach("vc")?;
    let _addr = Address::new(&a, "br0", "10.1.0.1/24".parse()?)?;
    let guarded = a.spawn(Command::new("sleep").arg("1000"))?;
    pids.push(guarded.pid() as i32);
    // A daemonised process no guard knows about: the namespace's drop must kill it.
    let orphan = b.exec(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"])?;
    pids.push(orphan.trim().parse()?);
    for pid in pids.iter() {
        assert!(pid_alive(*pid));
    }
    panic!("test failure while everything is up");
}

#[test]
fn guards_leave_nothing_behind_after_a_panic() {
    require_root();
    let mut names = Vec::new();
    let mut pids = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| build_then_panic(&mut names, &mut pids)));
    assert!(
        outcome.is_err(),
        "the closure must have panicked: {outcome:?}"
    );
    assert_eq!(names.len(), 2);
    assert_eq!(pids.len(), 2);
    let left = netns_list();
    for name in &names {
        assert!(!left.contains(name), "{name} survived: {left:?}");
    }
    for pid in &pids {
        assert!(!pid_alive(*pid), "pid {pid} survived");
    }
}

/// The host's own view: links, routes, rules, nft ruleset, forwarding.
fn host_snapshot() -> Vec<String> {
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    vec![
        run(&["ip", "-o", "link", "show"]),
        run(&["ip", "-o", "addr", "show"]),
        run(&["ip", "route", "show", "table", "all"]),
        run(&["ip", "rule", "show"]),
        run(&["nft", "list", "ruleset"]),
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
    ]
}

#[test]
fn a_full_cluster_leaves_the_host_unchanged() -> Result<()> {
    require_root();
    let before = host_snapshot();
    {
        let cluster = Cluster::with_pod_routes(2)?;
        let client = cluster.node(1)?.add_pod("client")?;
        let web = cluster.node(2)?.add_pod("web")?;
        let _bare = cluster.node(2)?.bare_pod("bare")?;
        let _srv = EchoServer::tcp(web.ns(), "web", "0.0.0.0:80".parse()?)?;
        let tally = traffic::tally(
            client.ns(),
            Proto::Tcp,
            (web.ip(), 80).into(),
            5,
            Duration::from_secs(2),
        )?;
        assert_eq!(tally.count("web"), 5, "{tally:?}");
    }
    assert_eq!(host_snapshot(), before);
    Ok(())
}
