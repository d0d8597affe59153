//! A throw-away etcd (Debian's `etcd-server`) for the overlay's subnet registry: on loopback
//! for tests that talk to it in-process, or inside a test-bed namespace (the underlay) so
//! daemons running in node namespaces can reach it.
//!
//! Free ports are picked by the kernel and the data dir is private, so tests run in parallel;
//! the daemon is stopped by PID (never by name) and its data dir removed on drop. Start-up is
//! retried a few times because a picked port can be taken before etcd binds it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::cmd;
use crate::error::{Error, Result};
use crate::http;
use crate::names;
use crate::netns::NetNs;
use crate::process::Process;

/// Bound on waiting for etcd to become healthy (it takes about 1 s).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);
/// Health poll interval.
const HEALTH_POLL: Duration = Duration::from_millis(20);
/// Per-request bound for the HTTP calls.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Start attempts (port races).
const ATTEMPTS: usize = 3;

/// A running etcd; stopped by PID and its data removed on drop.
#[derive(Debug)]
pub struct Etcd {
    process: Process,
    /// How it was started (`--name`, data dir, URLs), for [`Etcd::start_again`].
    cmd: Command,
    /// The namespace it runs in, when not the host's.
    ns: Option<NetNs>,
    client_addr: SocketAddr,
    client_url: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on free loopback ports with a fresh data dir and waits until it is healthy.
    pub fn start() -> Result<Self> {
        Self::start_at(None, Ipv4Addr::LOCALHOST)
    }

    /// Starts etcd inside `ns`, listening on `ip` (an address of that namespace) on the
    /// standard ports 2379/2380, which are free in a namespace of our own.
    pub fn start_in(ns: &NetNs, ip: Ipv4Addr) -> Result<Self> {
        Self::start_at(Some(ns), ip)
    }

    fn start_at(ns: Option<&NetNs>, ip: Ipv4Addr) -> Result<Self> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match Self::try_start(ns, ip) {
                Ok(etcd) => return Ok(etcd),
                Err(e @ Error::Exited { .. })
                    if e.to_string().contains("address already in use") =>
                {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::protocol("start etcd", "no attempt made")))
    }

    fn try_start(ns: Option<&NetNs>, ip: Ipv4Addr) -> Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("sl-etcd-")
            .tempdir()
            .map_err(|e| Error::io("create etcd data dir", e))?;
        let (client, peer) = match ns {
            Some(_) => (2379, 2380),
            None => free_ports()?,
        };
        let client_url = format!("http://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        // `sl-etcd-<pid>-<n>`: lets `names::sweep_stale` find it if this process is SIGKILLed.
        let name = names::netns_name("etcd");
        let cmd = command(&name, &data.path().join("data"), &client_url, &peer_url);
        let process = spawn(ns, &cmd, &client_url)?;
        let mut etcd = Self {
            process,
            cmd,
            ns: ns.cloned(),
            client_addr: SocketAddr::from((ip, client)),
            client_url,
            _data: data,
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// Polls `/health` until it says true, the process exits, or [`HEALTH_TIMEOUT`] passes.
    fn wait_healthy(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < HEALTH_TIMEOUT {
            if let Some(status) = self.process.try_wait()? {
                return Err(Error::Exited {
                    op: format!("wait for {} to become healthy", self.process.label()),
                    status: status.to_string(),
                    log: self.process.log_tail(20),
                });
            }
            if self.healthy() {
                tracing::debug!("etcd healthy after {:?}", start.elapsed());
                return Ok(());
            }
            thread::sleep(HEALTH_POLL);
        }
        Err(Error::Timeout {
            op: format!("wait for {} to become healthy", self.process.label()),
            after_ms: HEALTH_TIMEOUT.as_millis(),
        })
    }

    /// True when `GET /health` answers `"health":"true"`.
    pub fn healthy(&self) -> bool {
        matches!(
            self.http("GET", "/health", None),
            Ok(r) if r.status == 200 && r.body.contains(r#""health":"true""#)
        )
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (what flanneld's `--etcd-endpoints` takes).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its output so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Puts `key = value` through the v3 JSON gateway.
    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        let body = serde_json::json!({ "key": B64.encode(key), "value": B64.encode(value) });
        self.gateway("/v3/kv/put", &body).map(drop)
    }

    /// Gets `key` through the v3 JSON gateway; `None` when absent.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let op = format!("etcd get {key}");
        let body = serde_json::json!({ "key": B64.encode(key) });
        let answer = self.gateway("/v3/kv/range", &body)?;
        let Some(encoded) = answer.pointer("/kvs/0/value") else {
            return Ok(None);
        };
        let encoded = encoded.as_str().unwrap_or("");
        let bytes = B64
            .decode(encoded)
            .map_err(|e| Error::protocol(op.clone(), format!("value not base64: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| Error::protocol(op, format!("value not UTF-8: {e}")))
    }

    /// POSTs `body` to a gateway path and returns the JSON answer.
    fn gateway(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let op = format!("POST {}{path}", self.client_url);
        let http::Response { status, body: text } =
            self.http("POST", path, Some(&body.to_string()))?;
        if status != 200 {
            return Err(Error::protocol(op, format!("status {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| Error::protocol(op, format!("not JSON: {e}")))
    }

    /// One HTTP request to the client port, from inside etcd's namespace when it has one.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> Result<http::Response> {
        let addr = self.client_addr;
        match &self.ns {
            None => http::request(addr, method, path, body, HTTP_TIMEOUT),
            Some(ns) => ns.run(|| http::request(addr, method, path, body, HTTP_TIMEOUT))?,
        }
    }

    /// Runs `etcdctl --endpoints <url> args…` (API v3; needs Debian's `etcd-client`).
    pub fn etcdctl<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
        let endpoints = format!("--endpoints={}", self.client_url);
        let line = cmd::render(
            "etcdctl",
            std::iter::once(endpoints.as_str().as_ref()).chain(args.iter().map(|a| a.as_os_str())),
        );
        if let Some(ns) = &self.ns {
            let all = std::iter::once("etcdctl".into())
                .chain(std::iter::once(endpoints.into()))
                .chain(args);
            return ns.exec(all.collect::<Vec<std::ffi::OsString>>());
        }
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(&endpoints)
            .args(&args)
            .output()
            .map_err(|e| Error::io(line.clone(), e))?;
        cmd::check(line, output)
    }

    /// Freezes etcd (SIGSTOP by PID): clients see an etcd that no longer answers, as in a
    /// network partition, while its data and leases survive for [`Etcd::resume`].
    pub fn pause(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, sig).map_err(|e| Error::sys(format!("{sig} etcd {pid}"), e))
    }

    /// Stops etcd now (SIGTERM by PID, then SIGKILL). Idempotent; drop does it too.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts a stopped etcd again with the same name, data and addresses (its keys and
    /// leases survive, as across a real restart) and waits until it is healthy.
    pub fn start_again(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(self.ns.as_ref(), &self.cmd, &self.client_url)?;
        self.wait_healthy()
    }
}

/// Runs an etcd command line in `ns` (or here).
fn spawn(ns: Option<&NetNs>, cmd: &Command, client_url: &str) -> Result<Process> {
    match ns {
        Some(ns) => ns.spawn(cmd),
        None => {
            let mut copy = Command::new(cmd.get_program());
            copy.args(cmd.get_args());
            Process::spawn(copy, format!("etcd on {client_url}"), None)
        }
    }
}

/// Kills etcds started by test-bed processes that are gone and removes their data dirs.
///
/// Recognised by `--name sl-etcd-<pid>-<n>` on their command line; returns their PIDs.
pub(crate) fn sweep_stale() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()));
    let mut killed = Vec::new();
    for pid in pids {
        let Some(args) = cmdline(pid) else { continue };
        let Some(owner) = stale_owner(&args) else {
            continue;
        };
        if names::pid_alive(owner) {
            continue;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        remove_data_dir(&args);
        killed.push(pid);
    }
    killed
}

/// The arguments of process `pid`.
fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// For a test-bed etcd's arguments, the PID of the process that started it.
fn stale_owner(args: &[String]) -> Option<i32> {
    if !args.first()?.ends_with("etcd") {
        return None;
    }
    let at = args.iter().position(|a| a == "--name")?;
    let name = args.get(at + 1)?;
    name.starts_with("sl-etcd-")
        .then(|| names::embedded_pid(name))
        .flatten()
}

/// Removes the `sl-etcd-*` temporary directory holding a stale etcd's `--data-dir`.
fn remove_data_dir(args: &[String]) {
    let Some(at) = args.iter().position(|a| a == "--data-dir") else {
        return;
    };
    let Some(parent) = args
        .get(at + 1)
        .map(std::path::Path::new)
        .and_then(|p| p.parent())
    else {
        return;
    };
    let ours = parent
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("sl-etcd-"));
    if ours && let Err(e) = std::fs::remove_dir_all(parent) {
        tracing::warn!("remove stale etcd data {}: {e}", parent.display());
    }
}

/// Two distinct free loopback ports (both held until both are known).
fn free_ports() -> Result<(u16, u16)> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr().map(|a| (l, a.port())))
            .map_err(|e| Error::io("pick a free port on 127.0.0.1", e))
    };
    let (_a, client) = bind()?;
    let (_b, peer) = bind()?;
    Ok((client, peer))
}

/// The command line of a one-member etcd cluster `name` with its data in `data_dir`, serving
/// clients on `client_url` and peers on `peer_url` (the test bed's, the lab's and the tests'
/// stand-alone etcds all start this way).
pub fn command(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> Command {
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", name, "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")]);
    cmd
}
