//! The netlink ipset client against the real kernel, side by side with the `ipset` program:
//! the same restore text goes to [`ExecIpset`] in one fresh network namespace and to
//! [`NetlinkIpset`] in another, and `ipset save` must print the same sets, headers and members
//! in both (the random `initval` aside) — every set type and family the IPVS mode uses,
//! member removal included. Also: the client's own save text is the program's, refusals come
//! back typed with their line, and the cost figures (`cost_against_ipset_restore`, ignored;
//! run with `cargo test -p sluice-proxy-ipvs --test kernel_ipset -- --ignored --nocapture`).
//!
//! Sets belong to a network namespace, so none of this touches the host's own sets.

use std::time::{Duration, Instant};

use sluice_model::service::IpFamily;
use sluice_proxy_ipvs::nlset::{KernelIpset, NlIpsetError, Refusal};
use sluice_proxy_ipvs::sets::{self, Entries};
use sluice_proxy_ipvs::{ExecIpset, Ipset, NetlinkIpset};
use sluice_testbed::{NetNs, require_root};

fn program(ns: &NetNs, input: &str) {
    let input = input.to_owned();
    ns.run(move || ExecIpset.restore(&input)).unwrap().unwrap();
}

fn netlink(ns: &NetNs, input: &str) {
    let input = input.to_owned();
    ns.run(move || NetlinkIpset::open().unwrap().restore(&input))
        .unwrap()
        .unwrap();
}

/// `ipset save` by the program, `initval` masked, lines sorted (a hash set lists its members
/// in the order of its random `initval`).
fn saved(ns: &NetNs) -> Vec<String> {
    let text = ns.exec(["ipset", "save"]).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| match l.find(" initval ") {
            Some(i) => format!("{} initval -", &l[..i]),
            None => l.to_owned(),
        })
        .collect();
    lines.sort();
    lines
}

/// Lines in one and not the other (empty when equal).
fn differences(a: &[String], b: &[String]) -> Vec<String> {
    let only = |x: &[String], y: &[String], tag: &str| {
        x.iter()
            .filter(|l| !y.contains(l))
            .map(|l| format!("{tag} {l}"))
            .collect::<Vec<_>>()
    };
    [only(a, b, "program only:"), only(b, a, "netlink only:")].concat()
}

fn members(family: IpFamily, n: usize) -> Entries {
    let v4 = family == IpFamily::V4;
    let ip = |i: usize| match v4 {
        true => format!("10.96.{}.{}", i / 250, i % 250 + 1),
        false => format!("fd00::{:x}", i + 1),
    };
    let (node, client, net) = match v4 {
        true => ("10.0.0.1", "10.244.1.5", "203.0.113.0/24"),
        false => ("fd10::1", "fd44::5", "2001:db8::/64"),
    };
    let host = if v4 { "203.0.113.7" } else { "2001:db8::7" };
    let mut e = Entries::new();
    for i in 0..n {
        sets::add(&mut e, sets::CLUSTER_IP, format!("{},tcp:80", ip(i)));
    }
    for (set, m) in [
        (sets::CLUSTER_IP, format!("{},udp:53", ip(1))),
        (sets::CLUSTER_IP, format!("{},sctp:9000", ip(2))),
        (sets::LOOP_BACK, format!("{client},tcp:80,{client}")),
        (sets::EXTERNAL_IP, format!("{},tcp:80", ip(3))),
        (sets::EXTERNAL_IP_LOCAL, format!("{},udp:80", ip(3))),
        (sets::LOAD_BALANCER, format!("{},tcp:443", ip(4))),
        (sets::LOAD_BALANCER_LOCAL, format!("{},tcp:443", ip(4))),
        (sets::LOAD_BALANCER_FW, format!("{},tcp:443", ip(4))),
        (
            sets::LOAD_BALANCER_SOURCE_IP,
            format!("{},tcp:443,{node}", ip(4)),
        ),
        (
            sets::LOAD_BALANCER_SOURCE_CIDR,
            format!("{},tcp:443,{net}", ip(4)),
        ),
        (
            sets::LOAD_BALANCER_SOURCE_CIDR,
            format!("{},tcp:443,{host}", ip(4)),
        ),
        (sets::NODE_PORT_TCP, "30080".into()),
        (sets::NODE_PORT_LOCAL_TCP, "30081".into()),
        (sets::NODE_PORT_UDP, "30053".into()),
        (sets::NODE_PORT_LOCAL_UDP, "30054".into()),
        (sets::NODE_PORT_SCTP, format!("{node},sctp:30090")),
        (sets::NODE_PORT_LOCAL_SCTP, format!("{node},sctp:30091")),
        (sets::HEALTH_CHECK_NODE_PORT, "32000".into()),
        (sets::IPVS_IPS, ip(0)),
    ] {
        sets::add(&mut e, set, m);
    }
    e
}

#[test]
fn netlink_programs_exactly_what_ipset_restore_programs() {
    require_root();
    let (a, b) = (
        NetNs::new("ipset-exec").unwrap(),
        NetNs::new("ipset-nl").unwrap(),
    );
    let both = |input: &str| {
        program(&a, input);
        netlink(&b, input);
        let (pa, pb) = (saved(&a), saved(&b));
        let diff = differences(&pa, &pb);
        assert!(diff.is_empty(), "{}", diff.join("\n"));
        assert_eq!(pa.len(), pb.len());
        b.exec(["ipset", "save"]).unwrap()
    };
    let empty = Entries::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        both(&sets::creates(family));
        // Twice: `-exist` makes a create of an existing set a no-op.
        both(&sets::creates(family));
        // 1,000 ClusterIPs: more than one ADD message per set.
        let first = members(family, 1000);
        both(&sets::delta(&first, &empty, family));
        // Members go and come: half the ClusterIPs, the load balancer's source ranges.
        let mut second = members(family, 500);
        second.remove(sets::LOAD_BALANCER_SOURCE_CIDR);
        sets::add(&mut second, sets::NODE_PORT_TCP, "31000".into());
        let text = both(&sets::delta(&second, &first, family));
        assert_eq!(sets::parse_save(&text, family), second);
        // The client's own save is the program's, byte for byte.
        let own = b
            .run(|| NetlinkIpset::open().unwrap().dump())
            .unwrap()
            .unwrap();
        assert_eq!(own, b.exec(["ipset", "save"]).unwrap());
    }
    for (set, _) in sets::ALL {
        let name = sets::name(set, IpFamily::V6);
        b.run(move || NetlinkIpset::open().unwrap().destroy_set(&name))
            .unwrap()
            .unwrap();
    }
    let left = b.exec(["ipset", "list", "-n"]).unwrap();
    assert_eq!(left.lines().count(), sets::ALL.len(), "{left}");
    assert!(!left.contains("KUBE-6-"), "{left}");
}

#[test]
fn refusals_come_back_typed_with_their_line() {
    require_root();
    let ns = NetNs::new("ipset-err").unwrap();
    let result = ns
        .run(|| {
            let mut nl = NetlinkIpset::open()?;
            nl.destroy_set("NOT-THERE")?;
            let full = nl.apply(
                "create T hash:ip family inet hashsize 64 maxelem 1\nadd T 10.0.0.1\nadd T 10.0.0.2\n",
            );
            let clash = nl.apply("create T hash:ip,port family inet hashsize 64 maxelem 1\n");
            let missing = nl.apply("add NOT-THERE 10.0.0.1\n");
            let garbage = nl.apply("create T hash:ip family inet\nadd T 10.0.0\n");
            assert!(matches!(KernelIpset::open(), KernelIpset::Netlink(_)));
            Ok::<_, NlIpsetError>((full, clash, missing, garbage))
        })
        .unwrap()
        .unwrap();
    match result.0 {
        Err(NlIpsetError::Refused {
            line: Some(3),
            refusal: Refusal::HashFull,
            ..
        }) => {}
        other => panic!("full set: {other:?}"),
    }
    match result.1 {
        Err(NlIpsetError::Refused {
            refusal: Refusal::ExistSetname2,
            ..
        }) => {}
        other => panic!("clash: {other:?}"),
    }
    match result.2 {
        Err(NlIpsetError::Refused {
            refusal: Refusal::NoSuchSet,
            ..
        }) => {}
        other => panic!("missing set: {other:?}"),
    }
    assert!(
        matches!(result.3, Err(NlIpsetError::BadLine { line: 2, .. })),
        "{:?}",
        result.3
    );
    assert_eq!(
        ns.exec(["ipset", "save"]).unwrap().matches("add T").count(),
        1
    );
}

/// A full sync's set work as the backend does it: `create -exist` of every set, `ipset save`,
/// and the differences (if any) in one restore.
fn full_sync(ipset: &mut dyn Ipset, want: &Entries) {
    ipset.restore(&sets::creates(IpFamily::V4)).unwrap();
    let have = sets::parse_save(&ipset.save().unwrap(), IpFamily::V4);
    let delta = sets::delta(want, &have, IpFamily::V4);
    if !delta.is_empty() {
        ipset.restore(&delta).unwrap();
    }
}

/// A partial sync's: the differences against what the last sync programmed.
fn partial_sync(ipset: &mut dyn Ipset, want: &Entries, last: &Entries) {
    let delta = sets::delta(want, last, IpFamily::V4);
    if !delta.is_empty() {
        ipset.restore(&delta).unwrap();
    }
}

const SERVICES: usize = 10_000;
const NODE_PORTS: usize = 2_000;
const ROUNDS: usize = 7;

/// 10,000 ClusterIP Services, 2,000 of them NodePorts.
fn cluster(extra: Option<usize>) -> Entries {
    let mut e = Entries::new();
    let ip = |i: usize| {
        format!(
            "10.{}.{}.{},tcp:80",
            96 + i / 62_500,
            i / 250 % 250,
            i % 250 + 1
        )
    };
    for i in 0..SERVICES {
        sets::add(&mut e, sets::CLUSTER_IP, ip(i));
    }
    for p in 0..NODE_PORTS {
        sets::add(&mut e, sets::NODE_PORT_TCP, (30_000 + p).to_string());
    }
    if let Some(i) = extra {
        sets::add(&mut e, sets::CLUSTER_IP, ip(i));
    }
    e
}

/// One round of the three cases: cold fill (full sync into no sets), one member changed
/// (partial sync, then the same change by a full sync), nothing changed (full sync).
fn round(ipset: &mut dyn Ipset) -> [Duration; 4] {
    for (set, _) in sets::ALL {
        ipset.destroy(set).unwrap();
    }
    let (base, one) = (cluster(None), cluster(Some(SERVICES)));
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let cold = time(&mut || full_sync(ipset, &base));
    let partial = time(&mut || partial_sync(ipset, &one, &base));
    let full_one = time(&mut || full_sync(ipset, &base));
    let nothing = time(&mut || full_sync(ipset, &base));
    [cold, partial, full_one, nothing]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "cost figures; run with --ignored --nocapture (in --release)"]
fn cost_against_ipset_restore() {
    require_root();
    let (a, b) = (
        NetNs::new("ipset-cost-exec").unwrap(),
        NetNs::new("ipset-cost-nl").unwrap(),
    );
    let (mut program, mut netlink) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        program.push(a.run(|| round(&mut ExecIpset)).unwrap());
        netlink.push(b.run(|| round(&mut NetlinkIpset::open().unwrap())).unwrap());
    }
    let cases = [
        "(a) cold fill, 10,000 ClusterIPs + 2,000 node ports (full sync)",
        "(b) one member changed, partial sync",
        "(b') one member changed, full sync",
        "(c) nothing changed, full sync",
    ];
    println!("| case | ipset restore (ms) | netlink (ms) | restore / netlink |");
    println!("|---|---:|---:|---:|");
    for (i, case) in cases.iter().enumerate() {
        let p = median(program.iter().map(|r| r[i]).collect());
        let n = median(netlink.iter().map(|r| r[i]).collect());
        println!(
            "| {case} | {:.2} | {:.2} | {:.1}× |",
            p.as_secs_f64() * 1e3,
            n.as_secs_f64() * 1e3,
            p.as_secs_f64() / n.as_secs_f64()
        );
    }
    // Both programmed the same thing.
    assert!(differences(&saved(&a), &saved(&b)).is_empty());
}
