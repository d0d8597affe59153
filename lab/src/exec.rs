//! `sluice-lab exec NAME -- CMD…` and `sluice-lab curl NAME URL`: run something inside a lab
//! pod (or node, the client, the underlay) — the lab's stand-in for `kubectl exec`, since its
//! pods are namespaces, not containers.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use sluice_testbed::NetNs;

use crate::labdir::{LabDir, State};
use sluice_testbed::http;

/// The namespace called `name` in the lab: a pod, `nodeN`, `client` or `underlay`.
fn namespace(state: &State, name: &str) -> anyhow::Result<String> {
    let ns = match state.pod(name) {
        Some(p) => p.netns.clone(),
        None => state.ns(name),
    };
    if !state.namespaces.contains(&ns) || !NetNs::exists(&ns) {
        let pods: Vec<&str> = state.pods.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no pod or namespace {name} in the lab (pods: {}; also node1.., client, underlay)",
            pods.join(", ")
        );
    }
    Ok(ns)
}

/// `program` inside namespace `ns` (`ip netns exec`, so with the pod's own `/etc` files such
/// as its `resolv.conf`); in ebpf mode in the node's cgroup, as the pod's processes are.
pub(crate) fn in_pod(ns: &str, program: &str) -> Command {
    match crate::cgroups::sender_cgroup(ns) {
        Some(cg) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("echo $$ > \"$0\" && exec \"$@\"")
                .arg(cg.join("cgroup.procs"));
            c.args(["ip", "netns", "exec", ns, program]);
            c
        }
        None => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}

/// Runs `cmd` inside `name` with our stdio; its exit code becomes ours.
pub(crate) fn exec(dir: &LabDir, name: &str, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let state = dir.load().context("is the lab up?")?;
    let ns = namespace(&state, name)?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given: sluice-lab exec {name} -- CMD…");
    };
    crate::cgroups::register(dir, &state);
    let mut command = in_pod(&ns, program);
    let status = command
        .args(args)
        .status()
        .with_context(|| format!("run {program} in {ns}"))?;
    Ok(ExitCode::from(
        u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
    ))
}

/// GETs `url` (`http://IP:PORT/path`) from inside `name` and prints the body.
pub(crate) fn curl(dir: &LabDir, name: &str, url: &str) -> anyhow::Result<ExitCode> {
    let state = dir.load().context("is the lab up?")?;
    let ns = NetNs::open(&namespace(&state, name)?)?;
    let (addr, path) = split_url(url)?;
    crate::cgroups::register(dir, &state);
    let _cgroup = crate::cgroups::join(ns.name());
    let resp = ns.run(|| http::request(addr, "GET", &path, None, Duration::from_secs(5)))??;
    print!("{}", resp.body);
    if !(200..300).contains(&resp.status) {
        eprintln!("HTTP {}", resp.status);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice-lab dig NAME QUERY TYPE`: one query to the cluster DNS from inside `name`; prints
/// the response code and the answers; exits 1 unless the code is NOERROR.
pub(crate) fn dig(dir: &LabDir, name: &str, query: &str, kind: &str) -> anyhow::Result<ExitCode> {
    let state = dir.load().context("is the lab up?")?;
    let ns = namespace(&state, name)?;
    crate::cgroups::register(dir, &state);
    let (code, answers) = crate::dns::dig::query(&ns, query, kind)?;
    // As dig prints it: NOERROR, NXDOMAIN, REFUSED…
    println!("status: {}", format!("{code:?}").to_uppercase());
    for a in &answers {
        println!("{a}");
    }
    Ok(
        if code == hickory_server::proto::op::ResponseCode::NoError {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// `http://IP[:PORT][/path]` → address and path (this process runs with the host's
/// resolver, so names are for `sluice-lab exec POD -- curl http://NAME/`, which uses the pod's).
fn split_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let addr = match host.parse() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            host.parse().with_context(|| {
                format!("{url}: host must be an IP (by name: sluice-lab exec POD -- curl {url})")
            })?,
            80,
        ),
    };
    Ok((addr, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        let (a, p) = split_url("http://10.96.0.2/x?y=1").unwrap();
        assert_eq!(
            (a.to_string().as_str(), p.as_str()),
            ("10.96.0.2:80", "/x?y=1")
        );
        let (a, p) = split_url("192.168.0.11:30080").unwrap();
        assert_eq!(
            (a.to_string().as_str(), p.as_str()),
            ("192.168.0.11:30080", "/")
        );
        assert!(split_url("http://web/").is_err());
    }
}
