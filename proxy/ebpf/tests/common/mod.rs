//! Guards for the kernel tests: a private bpffs mount, a child cgroup of the cgroup v2
//! hierarchy (never the root), and a client process started inside both that cgroup and a
//! test namespace. Everything is removed on drop, also when a test fails.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use sluice_proxy_ebpf::diff::diff;
use sluice_proxy_ebpf::kernel::{KernelMaps, apply_ops};
use sluice_proxy_ebpf::render::{Ids, MapSet, RenderConfig, render, union};
use sluice_testbed::NetNs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "sluice-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bpffs mounted on a fresh temporary directory; unmounted (dropping every pin) on drop.
pub(crate) struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        nix::mount::mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )?;
        Ok(Self { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A child cgroup `sluice-<tag>-<pid>-<n>` of the cgroup v2 root; its processes are killed
/// and it is removed on drop (its programs detach with it).
pub(crate) struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        let root = sluice_proxy_ebpf::pin::cgroup2_root()?;
        let path = root.join(unique(tag));
        std::fs::create_dir(&path)?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `python3 -c code` as a process in `cgroup` and namespace `ns` (killed with the
/// cgroup), stdout to `out`.
pub(crate) fn start_client(
    cgroup: &Cgroup,
    ns: &NetNs,
    code: &str,
    out: &Path,
) -> anyhow::Result<std::process::Child> {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} python3 -c \"$0\"",
        cgroup.path().display(),
        ns.name()
    );
    Ok(Command::new("sh")
        .args(["-c", &script, code])
        .stdout(std::fs::File::create(out)?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .spawn()?)
}

/// Runs `python3 -c code` as a process in `cgroup` and namespace `ns`; its stdout, or its
/// stderr as the error.
pub(crate) fn client(cgroup: &Cgroup, ns: &NetNs, code: &str) -> anyhow::Result<String> {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} python3 -c \"$0\"",
        cgroup.path().display(),
        ns.name()
    );
    let out = Command::new("sh").args(["-c", &script, code]).output()?;
    if !out.status.success() {
        anyhow::bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Serves TCP (answers `name`, then echoes what it reads until the client closes) and UDP
/// (answers `name`) on `addr` inside `ns`, for the life of the namespace's threads.
pub(crate) fn serve(
    ns: &NetNs,
    addr: std::net::SocketAddr,
    name: &'static str,
) -> anyhow::Result<()> {
    let tcp = ns.run(|| std::net::TcpListener::bind(addr))??;
    let udp = ns.run(|| std::net::UdpSocket::bind(addr))??;
    std::thread::spawn(move || {
        for stream in tcp.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut s, format!("{name}\n").as_bytes());
                let mut buf = [0u8; 256];
                while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                    if n == 0 || std::io::Write::write_all(&mut s, &buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(name.as_bytes(), from);
        }
    });
    Ok(())
}

/// The one's-complement sum of `data` as big-endian 16-bit words, not folded (a pseudo-header
/// is summed apart and added).
pub(crate) fn ones_sum(data: &[u8]) -> u32 {
    (data.chunks(2))
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Folds a one's-complement sum to 16 bits and complements it: 0 when a checksum verifies.
pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The internet checksum of `data` (0 when a header with its checksum verifies).
pub(crate) fn internet_checksum(data: &[u8]) -> u16 {
    fold(ones_sum(data))
}

/// A loaded program of `ebpf` as a tc classifier.
pub(crate) fn classifier<'a>(ebpf: &'a aya::Ebpf, name: &str) -> &'a SchedClassifier {
    ebpf.program(name).unwrap().try_into().unwrap()
}

/// The tc classifiers (`sluice_tc_ingress`, `sluice_tc_egress`) of an object loaded by
/// [`load_tc`].
pub(crate) fn tc_pair(ebpf: &aya::Ebpf) -> (&SchedClassifier, &SchedClassifier) {
    (
        classifier(ebpf, "sluice_tc_ingress"),
        classifier(ebpf, "sluice_tc_egress"),
    )
}

/// Loads the tc classifiers into the kernel (verified, not attached).
pub(crate) fn load_tc(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    for name in ["sluice_tc_ingress", "sluice_tc_egress"] {
        let prog: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into()?;
        prog.load()?;
    }
    Ok(())
}

/// The object loaded under `bpffs` with `snap` rendered by `cfg` into its maps (nothing
/// attached, no program loaded yet).
pub(crate) fn programmed(
    bpffs: &Bpffs,
    cfg: &RenderConfig,
    snap: &sluice_proxy_core::Snapshot,
) -> anyhow::Result<aya::Ebpf> {
    let want = union(render(cfg, snap, &mut Ids::default()).values());
    let mut ebpf = KernelMaps::load_object(&bpffs.path().join("t"))?;
    apply_ops(&mut ebpf, &diff(&want, &MapSet::default()))?;
    Ok(ebpf)
}

/// Runs a loaded tc program on `pkt` (`BPF_PROG_TEST_RUN`): its verdict and the packet it
/// left (at most 256 bytes).
pub(crate) fn test_run(prog: &SchedClassifier, pkt: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap();
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Ethernet + IPv4 (no options, TTL 64, checksum filled in) from `src` to `dst` carrying
/// `l4_len` zero bytes of protocol `proto` at offset 34.
pub(crate) fn ipv4_packet(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 34 + l4_len];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut p[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&u16::try_from(20 + l4_len).unwrap().to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = internet_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p
}
