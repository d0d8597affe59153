//! kube-proxy's IPVS-mode ipsets: names, types, members, and the one chokepoint that writes
//! them ([`Ipset`]: `ipset restore -exist` text in, `ipset save` text out).
//!
//! The seam speaks the program's text so that its implementations are interchangeable and
//! what it writes is what operators read with `ipset save`: [`crate::nlset::NetlinkIpset`]
//! (ipset's netlink protocol, what the backend uses: 5–12× cheaper per sync than the program,
//! see the crate README), [`ExecIpset`] (the `ipset` program, as kube-proxy; the fallback
//! where the kernel refuses the netlink protocol) and [`FakeIpset`] for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use sluice_model::service::IpFamily;

/// Members per set.
pub type Entries = BTreeMap<&'static str, BTreeSet<String>>;

pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
pub const NODE_PORT_SCTP: &str = "KUBE-NODE-PORT-SCTP-HASH";
pub const NODE_PORT_LOCAL_SCTP: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";

/// Every set with its ipset type.
pub const ALL: [(&str, &str); 17] = [
    (LOOP_BACK, "hash:ip,port,ip"),
    (CLUSTER_IP, "hash:ip,port"),
    (EXTERNAL_IP, "hash:ip,port"),
    (EXTERNAL_IP_LOCAL, "hash:ip,port"),
    (LOAD_BALANCER, "hash:ip,port"),
    (LOAD_BALANCER_LOCAL, "hash:ip,port"),
    (LOAD_BALANCER_FW, "hash:ip,port"),
    (LOAD_BALANCER_SOURCE_IP, "hash:ip,port,ip"),
    (LOAD_BALANCER_SOURCE_CIDR, "hash:ip,port,net"),
    (NODE_PORT_TCP, "bitmap:port"),
    (NODE_PORT_LOCAL_TCP, "bitmap:port"),
    (NODE_PORT_UDP, "bitmap:port"),
    (NODE_PORT_LOCAL_UDP, "bitmap:port"),
    (NODE_PORT_SCTP, "hash:ip,port"),
    (NODE_PORT_LOCAL_SCTP, "hash:ip,port"),
    (HEALTH_CHECK_NODE_PORT, "bitmap:port"),
    (IPVS_IPS, "hash:ip"),
];

/// Adds `entry` to `set`.
pub fn add(entries: &mut Entries, set: &'static str, entry: String) {
    entries.entry(set).or_default().insert(entry);
}

/// Adds every member of `other`.
pub fn merge(entries: &mut Entries, other: &Entries) {
    for (set, members) in other {
        entries
            .entry(set)
            .or_default()
            .extend(members.iter().cloned());
    }
}

/// The kernel name of `set` in `family` (`KUBE-6-` prefix for IPv6).
pub fn name(set: &str, family: IpFamily) -> String {
    match family {
        IpFamily::V4 => set.to_owned(),
        // kube-proxy truncates to ipset's 31-character limit.
        IpFamily::V6 => set
            .replacen("KUBE-", "KUBE-6-", 1)
            .chars()
            .take(31)
            .collect(),
    }
}

/// `create` lines for every set of `family` (`-exist` makes them no-ops when present).
pub fn creates(family: IpFamily) -> String {
    let fam = match family {
        IpFamily::V4 => "inet",
        IpFamily::V6 => "inet6",
    };
    let mut out = String::new();
    for (set, ty) in ALL {
        let n = name(set, family);
        match ty {
            "bitmap:port" => out.push_str(&format!("create {n} {ty} range 0-65535\n")),
            _ => out.push_str(&format!(
                "create {n} {ty} family {fam} hashsize 1024 maxelem 65536\n"
            )),
        }
    }
    out
}

/// `add`/`del` lines turning `have` into `want` for `family`'s sets; only the differences.
pub fn delta(want: &Entries, have: &Entries, family: IpFamily) -> String {
    let empty = BTreeSet::new();
    let mut out = String::new();
    for (set, _) in ALL {
        let (w, h) = (
            want.get(set).unwrap_or(&empty),
            have.get(set).unwrap_or(&empty),
        );
        let n = name(set, family);
        for m in h.difference(w) {
            out.push_str(&format!("del {n} {m}\n"));
        }
        for m in w.difference(h) {
            out.push_str(&format!("add {n} {m}\n"));
        }
    }
    out
}

/// Members of `family`'s sets read from `ipset save` output (other sets ignored).
pub fn parse_save(text: &str, family: IpFamily) -> Entries {
    let by_name: BTreeMap<String, &'static str> =
        ALL.iter().map(|(s, _)| (name(s, family), *s)).collect();
    let mut out = Entries::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("add") {
            continue;
        }
        let (Some(set), Some(member)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(s) = by_name.get(set) {
            add(&mut out, s, member.to_owned());
        }
    }
    out
}

/// A failed ipset program.
#[derive(Debug, thiserror::Error)]
#[error("ipset {args}: {detail}")]
pub struct IpsetError {
    /// Its arguments.
    pub args: String,
    /// Why (stderr, or the spawn error).
    pub detail: String,
}

/// The ipset program.
pub trait Ipset: Send {
    /// `ipset restore -exist` of `input`.
    fn restore(&mut self, input: &str) -> Result<(), IpsetError>;
    /// `ipset save` (every set).
    fn save(&mut self) -> Result<String, IpsetError>;
    /// `ipset destroy NAME`; a set that does not exist is fine.
    fn destroy(&mut self, name: &str) -> Result<(), IpsetError>;
}

/// The real `ipset` program.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecIpset;

fn run(args: &[&str], stdin: Option<&str>) -> Result<String, IpsetError> {
    let err = |detail: String| IpsetError {
        args: args.join(" "),
        detail,
    };
    let mut child = Command::new("ipset")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned())),
    }
}

impl Ipset for ExecIpset {
    fn restore(&mut self, input: &str) -> Result<(), IpsetError> {
        run(&["restore", "-exist"], Some(input)).map(drop)
    }
    fn save(&mut self) -> Result<String, IpsetError> {
        run(&["save"], None)
    }
    fn destroy(&mut self, name: &str) -> Result<(), IpsetError> {
        match run(&["destroy", name], None) {
            Err(e) if e.detail.contains("does not exist") => Ok(()),
            other => other.map(drop),
        }
    }
}

/// Sets in memory, with `ipset restore -exist` semantics for create/add/del (tests).
#[derive(Debug, Default)]
pub struct FakeIpset {
    /// Members per set name.
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// Restore runs.
    pub restores: usize,
    /// Lines restored (creates excluded).
    pub lines: usize,
}

impl Ipset for FakeIpset {
    fn restore(&mut self, input: &str) -> Result<(), IpsetError> {
        self.restores += 1;
        for line in input.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["create", n, ..] => {
                    self.sets.entry((*n).to_owned()).or_default();
                }
                ["add", n, m] => {
                    self.lines += 1;
                    self.sets
                        .entry((*n).to_owned())
                        .or_default()
                        .insert((*m).into());
                }
                ["del", n, m] => {
                    self.lines += 1;
                    if let Some(s) = self.sets.get_mut(*n) {
                        s.remove(*m);
                    }
                }
                _ => {
                    return Err(IpsetError {
                        args: "restore".into(),
                        detail: format!("bad line {line:?}"),
                    });
                }
            }
        }
        Ok(())
    }
    fn save(&mut self) -> Result<String, IpsetError> {
        let mut out = String::new();
        for (n, members) in &self.sets {
            out.push_str(&format!("create {n} x\n"));
            for m in members {
                out.push_str(&format!("add {n} {m}\n"));
            }
        }
        Ok(out)
    }
    fn destroy(&mut self, name: &str) -> Result<(), IpsetError> {
        self.sets.remove(name);
        Ok(())
    }
}
