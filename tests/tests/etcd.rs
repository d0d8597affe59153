//! Kernel-free but root-run tests of the throw-away etcd.

use std::time::Instant;

use anyhow::Result;
use sluice_testbed::etcd::Etcd;
use sluice_testbed::names::pid_alive;
use sluice_testbed::require_root;

#[test]
fn etcd_starts_serves_and_stops_by_pid() -> Result<()> {
    require_root();
    let start = Instant::now();
    let etcd = Etcd::start()?;
    eprintln!("etcd healthy after {:?}", start.elapsed());
    assert!(etcd.healthy());
    assert!(etcd.client_url().starts_with("http://127.0.0.1:"));
    let key = "/coreos.com/network/subnets/10.244.1.0-24";
    assert_eq!(etcd.get(key)?, None);
    etcd.put(key, r#"{"PublicIP":"192.168.0.11"}"#)?;
    assert_eq!(
        etcd.get(key)?.as_deref(),
        Some(r#"{"PublicIP":"192.168.0.11"}"#)
    );
    if which("etcdctl") {
        let out = etcd.etcdctl(["get", "--print-value-only", key])?;
        assert_eq!(out.trim(), r#"{"PublicIP":"192.168.0.11"}"#);
        etcd.etcdctl(["put", "/sluice/x", "y"])?;
        assert_eq!(etcd.get("/sluice/x")?.as_deref(), Some("y"));
    }
    let pid = etcd.pid() as i32;
    assert!(pid_alive(pid));
    drop(etcd);
    assert!(!pid_alive(pid));
    Ok(())
}

#[test]
fn two_etcds_run_side_by_side() -> Result<()> {
    require_root();
    let a = Etcd::start()?;
    let b = Etcd::start()?;
    assert_ne!(a.client_url(), b.client_url());
    a.put("/k", "a")?;
    assert_eq!(b.get("/k")?, None);
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[test]
fn sweep_kills_etcds_whose_test_process_died() -> Result<()> {
    require_root();
    // Run this process's automatic first-use sweep now, so it cannot kill the orphan early.
    let _ = sluice_testbed::names::netns_name("warm-up");
    let mut dead = std::process::Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    let dir = tempfile::Builder::new()
        .prefix("sl-etcd-")
        .tempdir()?
        .keep();
    let name = format!("sl-etcd-{dead_pid}-0");
    let (client, peer) = (free_url()?, free_url()?);
    let mut orphan = sluice_testbed::etcd::command(&name, &dir.join("data"), &client, &peer)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        orphan.try_wait()?.is_none(),
        "the orphan etcd must be running"
    );
    sluice_testbed::names::sweep_stale();
    let start = Instant::now();
    while orphan.try_wait()?.is_none() {
        assert!(
            start.elapsed().as_secs() < 5,
            "stale etcd survived the sweep"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!dir.exists(), "stale etcd data dir survived");
    Ok(())
}

/// A loopback URL with a port that was free a moment ago.
fn free_url() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("http://{}", listener.local_addr()?))
}

#[test]
fn etcd_inside_a_namespace_serves_the_nodes() {
    sluice_testbed::require_root();
    let cluster = sluice_testbed::cluster::Cluster::new(1).unwrap();
    let underlay = cluster.underlay();
    let ip = std::net::Ipv4Addr::new(192, 168, 0, 1);
    let _addr = sluice_testbed::link::Address::new(
        underlay.ns(),
        underlay.bridge().name(),
        ipnet::Ipv4Net::new(ip, 24).unwrap(),
    )
    .unwrap();
    let etcd = sluice_testbed::etcd::Etcd::start_in(underlay.ns(), ip).unwrap();
    assert_eq!(etcd.client_url(), "http://192.168.0.1:2379");
    etcd.put("/k", "v").unwrap();
    assert_eq!(etcd.get("/k").unwrap().as_deref(), Some("v"));
    assert!(etcd.etcdctl(["get", "/k"]).unwrap().contains('v'));
    let addr = etcd.client_addr();
    let timeout = std::time::Duration::from_secs(1);
    let from_node = cluster
        .node(1)
        .unwrap()
        .ns()
        .run(move || std::net::TcpStream::connect_timeout(&addr, timeout).is_ok());
    assert!(from_node.unwrap(), "a node reaches etcd over the underlay");
}
