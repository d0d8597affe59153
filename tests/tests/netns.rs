//! Kernel tests of namespaces, processes and sysctls (need root).

use std::net::{Ipv4Addr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use sluice_testbed::link::Veth;
use sluice_testbed::names::{self, pid_alive};
use sluice_testbed::{NetNs, require_root};

/// Interface names as the calling *thread* sees them.
fn thread_links() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn run_executes_inside_the_namespace() -> Result<()> {
    require_root();
    let a = NetNs::new("run-a")?;
    let b = NetNs::new("run-b")?;
    let _veth = Veth::new(&a, "probe-a", &b, "probe-b")?;
    let host = thread_links();
    let inside = a.run(thread_links)?;
    assert_eq!(inside, vec!["lo".to_owned(), "probe-a".to_owned()]);
    assert_ne!(host, inside);
    assert!(!host.contains(&"probe-a".to_owned()));
    // A port bound inside is free outside: separate stacks.
    let inner = a.run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))??;
    let outer = TcpListener::bind(inner.local_addr()?)?;
    drop((inner, outer));
    Ok(())
}

#[test]
fn run_propagates_panics() -> Result<()> {
    require_root();
    let ns = NetNs::new("panic")?;
    let caught = catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("boom inside"))));
    let payload = caught.expect_err("the panic must reach the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom inside"));
    Ok(())
}

#[test]
fn exec_returns_stdout_and_errors_name_the_command() -> Result<()> {
    require_root();
    let ns = NetNs::new("exec")?;
    let out = ns.exec(["ip", "-o", "link"])?;
    assert!(out.contains("lo:"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let err = ns
        .exec(["sh", "-c", "echo oops >&2; exit 3"])
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("ip netns exec {}", ns.name())),
        "{msg}"
    );
    assert!(msg.ends_with("oops"), "{msg}");
    Ok(())
}

#[test]
fn spawned_process_runs_inside_and_is_killed_on_drop() -> Result<()> {
    require_root();
    let ns = NetNs::new("spawn")?;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo $SL_PROBE; exec sleep 1000"])
        .env("SL_PROBE", "hello");
    let mut proc = ns.spawn(&cmd)?;
    let pid = proc.pid() as i32;
    // `ip netns exec` execs the command, so the guarded PID is the command's own.
    std::thread::sleep(Duration::from_millis(100));
    assert!(ns.pids()?.contains(&pid), "{:?}", ns.pids()?);
    assert!(proc.try_wait()?.is_none());
    assert!(proc.logs().contains("hello"), "{}", proc.logs());
    drop(proc);
    assert!(!pid_alive(pid));
    Ok(())
}

#[test]
fn sysctls_are_per_namespace() -> Result<()> {
    require_root();
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
    let ns = NetNs::new("sysctl")?;
    assert_eq!(ns.sysctl_get("net.ipv4.ip_forward")?, "0");
    ns.set_ip_forward(true)?;
    assert_eq!(ns.sysctl_get("net.ipv4.ip_forward")?, "1");
    let seen = ns.exec(["cat", "/proc/sys/net/ipv4/ip_forward"])?;
    assert_eq!(seen.trim(), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
        host_before
    );
    assert!(ns.sysctl_set("kernel.hostname", "x").is_err());
    Ok(())
}

#[test]
fn sweep_removes_namespaces_of_dead_processes() -> Result<()> {
    require_root();
    // Run this process's automatic first-use sweep now, so it cannot race the one below.
    let _ = names::netns_name("warm-up");
    let mut dead = Command::new("true").spawn()?;
    let dead_pid = dead.id();
    dead.wait()?;
    let name = format!("sl-stale-{dead_pid}-0");
    let status = Command::new("ip").args(["netns", "add", &name]).status()?;
    assert!(status.success());
    let out = Command::new("ip")
        .args(["netns", "exec", &name, "sh", "-c"])
        .arg("sleep 1000 >/dev/null 2>&1 & echo $!")
        .output()?;
    let orphan: i32 = String::from_utf8(out.stdout)?.trim().parse()?;
    assert!(pid_alive(orphan));
    let removed = names::sweep_stale();
    // Another test process's first-use sweep may have been quicker; either way it must be gone.
    assert!(
        removed.contains(&name) || !NetNs::exists(&name),
        "{removed:?}"
    );
    assert!(!NetNs::exists(&name));
    assert!(!pid_alive(orphan));
    Ok(())
}

#[test]
fn persistent_namespaces_outlive_their_handles_until_removed() -> Result<()> {
    require_root();
    let name = format!("lab-tb-{}", std::process::id());
    let ns = NetNs::persistent(&name)?;
    assert!(ns.ip(["link", "show", "lo"])?.contains("UP"));
    drop(ns);
    assert!(NetNs::exists(&name), "dropping the handle removed it");
    // Never swept: the name carries no test-bed PID.
    assert_eq!(names::embedded_pid(&name), None);
    let opened = NetNs::open(&name)?;
    assert_eq!(opened.run(thread_links)?, ["lo"]);
    drop(opened);
    assert!(NetNs::exists(&name));
    assert!(
        NetNs::persistent(&name).is_err(),
        "a second create must fail"
    );
    NetNs::remove(&name)?;
    assert!(!NetNs::exists(&name));
    assert!(NetNs::open(&name).is_err());
    NetNs::remove(&name)?;
    Ok(())
}
