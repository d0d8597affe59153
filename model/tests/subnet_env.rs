//! `subnet.env`: byte-exact against flannel's writer, parsing like flannel's CNI
//! plugin, errors naming file, line and key, atomic writes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use sluice_model::subnet_env::{SubnetEnv, SubnetEnvError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn v4(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}

fn v6(text: &str) -> Ipv6Net {
    text.parse().unwrap()
}

/// What flannel's `WriteSubnetFile` writes for a 1500-byte NIC with vxlan.
fn ipv4_env() -> SubnetEnv {
    SubnetEnv {
        networks: vec![v4("10.244.0.0/16")],
        subnet: Some(SubnetEnv::first_host_v4(v4("10.244.1.0/24"))),
        ipv6_networks: vec![],
        ipv6_subnet: None,
        mtu: 1450,
        ipmasq: true,
    }
}

#[test]
fn writes_flannel_bytes() {
    let golden = std::fs::read_to_string(fixture("subnet-ipv4.env")).unwrap();
    assert_eq!(ipv4_env().to_string(), golden);

    let dual = SubnetEnv {
        ipv6_networks: vec![v6("2001:cafe:42::/56")],
        ipv6_subnet: Some(SubnetEnv::first_host_v6(v6("2001:cafe:42::/64"))),
        ipmasq: false,
        ..ipv4_env()
    };
    let golden = std::fs::read_to_string(fixture("subnet-dual-stack.env")).unwrap();
    assert_eq!(dual.to_string(), golden);
}

#[test]
fn golden_files_round_trip_byte_for_byte() {
    for name in [
        "subnet-ipv4.env",
        "subnet-dual-stack.env",
        "subnet-ipv6-only.env",
        "subnet-multi-network.env",
    ] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let env = SubnetEnv::read(fixture(name)).unwrap();
        assert_eq!(env.to_string(), text, "{name}");
    }
}

#[test]
fn reads_like_the_cni_plugin() {
    let env = SubnetEnv::read(fixture("subnet-multi-network.env")).unwrap();
    assert_eq!(env.networks, vec![v4("10.42.0.0/16"), v4("10.43.0.0/16")]);
    assert_eq!(env.subnet, Some(v4("10.42.7.1/24")));
    assert_eq!(env.subnet_network(), Some(v4("10.42.7.0/24")));

    let env = SubnetEnv::read(fixture("subnet-ipv6-only.env")).unwrap();
    assert!(env.networks.is_empty() && env.subnet.is_none());
    assert_eq!(env.ipv6_subnet_network(), Some(v6("fd00:10:244:1::/64")));
    assert_eq!(env.mtu, 8950);
}

#[test]
fn lenient_where_flannel_is() {
    let text = "# written by hand\r\n\
        FLANNEL_NETWORK=10.0.0.0/16,10.1.0.0/16,10.0.9.9/16\r\n\
        FLANNEL_SUBNET=10.0.3.1/24\r\n\
        OTHER=whatever\r\n\
        FLANNEL_MTU=1400\r\n\
        FLANNEL_MTU=01450\r\n\
        FLANNEL_IPMASQ=yes\r\n";
    let env = SubnetEnv::parse(text).unwrap();
    assert_eq!(
        env.networks,
        vec![v4("10.0.0.0/16"), v4("10.1.0.0/16")],
        "deduped"
    );
    assert_eq!(env.mtu, 1450, "the last value wins");
    assert!(!env.ipmasq, "only the text `true` is true");
}

fn error_text(text: &str) -> String {
    SubnetEnv::parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subnet.env");
    let text = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=abc\n";
    std::fs::write(&path, text).unwrap();
    let err = SubnetEnv::read(&path).unwrap_err();
    let expected = format!("{}:3: FLANNEL_MTU: invalid number \"abc\"", path.display());
    assert_eq!(err.to_string(), expected);
    assert!(matches!(
        err,
        SubnetEnvError::Value {
            key: "FLANNEL_MTU",
            ..
        }
    ));
}

#[test]
fn malformed_values() {
    let cases = [
        (
            "FLANNEL_MTU=+1450",
            "line 1: FLANNEL_MTU: invalid number \"+1450\"",
        ),
        (
            "FLANNEL_MTU= 1450",
            "line 1: FLANNEL_MTU: invalid number \" 1450\"",
        ),
        (
            "FLANNEL_MTU=4294967296",
            "line 1: FLANNEL_MTU: invalid number \"4294967296\"",
        ),
        ("\nFLANNEL_SUBNET", "line 2: FLANNEL_SUBNET: missing '='"),
        (
            "FLANNEL_SUBNET=10.244.1.1",
            "line 1: FLANNEL_SUBNET: invalid cidr \"10.244.1.1\"",
        ),
        (
            "FLANNEL_SUBNET=10.244.1.1/33",
            "line 1: FLANNEL_SUBNET: invalid cidr \"10.244.1.1/33\"",
        ),
        (
            "FLANNEL_SUBNET=010.244.1.1/24",
            "line 1: FLANNEL_SUBNET: invalid cidr \"010.244.1.1/24\"",
        ),
        (
            "FLANNEL_NETWORK=10.0.0.0/8,fd00::/8",
            "line 1: FLANNEL_NETWORK: expected an IPv4 cidr, got \"fd00::/8\"",
        ),
        (
            "FLANNEL_IPV6_SUBNET=10.0.0.1/24",
            "line 1: FLANNEL_IPV6_SUBNET: expected an IPv6 cidr, got \"10.0.0.1/24\"",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error_text(text), expected, "{text:?}");
    }
}

#[test]
fn missing_keys_are_listed() {
    assert_eq!(
        error_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_IPMASQ=true\n"),
        "input: missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subnet.env");
    std::fs::write(&path, "").unwrap();
    let err = SubnetEnv::read(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: missing FLANNEL_NETWORK", path.display())),
        "{err}"
    );
}

#[test]
fn read_error_names_the_file() {
    let err = SubnetEnv::read("/nonexistent/flannel/subnet.env").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/flannel/subnet.env: read: "),
        "{err}"
    );
}

#[test]
fn write_atomic_creates_the_directory_and_a_0644_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/flannel/subnet.env");
    ipv4_env().write_atomic(&path).unwrap();
    let golden = std::fs::read_to_string(fixture("subnet-ipv4.env")).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), golden);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);

    let replaced = SubnetEnv {
        mtu: 1400,
        ..ipv4_env()
    };
    replaced.write_atomic(&path).unwrap();
    assert_eq!(SubnetEnv::read(&path).unwrap(), replaced);
    let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left behind");
}

fn arb_v4() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(ip, len)| Ipv4Net::new(ip.into(), len).unwrap())
}

fn arb_v6() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128).prop_map(|(ip, len)| Ipv6Net::new(ip.into(), len).unwrap())
}

fn dedup<N: Copy + PartialEq>(nets: Vec<N>, masked: fn(&N) -> N) -> Vec<N> {
    let mut out: Vec<N> = Vec::new();
    for net in nets {
        if !out.iter().any(|seen| masked(seen) == masked(&net)) {
            out.push(net);
        }
    }
    out
}

fn arb_env() -> impl Strategy<Value = SubnetEnv> {
    let v4s = prop::collection::vec(arb_v4(), 0..4).prop_map(|n| dedup(n, Ipv4Net::trunc));
    let v6s = prop::collection::vec(arb_v6(), 0..4).prop_map(|n| dedup(n, Ipv6Net::trunc));
    let nets = (
        v4s,
        prop::option::of(arb_v4()),
        v6s,
        prop::option::of(arb_v6()),
    );
    (nets, any::<u32>(), any::<bool>()).prop_map(
        |((networks, subnet, ipv6_networks, ipv6_subnet), mtu, ipmasq)| SubnetEnv {
            networks,
            subnet,
            ipv6_networks,
            ipv6_subnet,
            mtu,
            ipmasq,
        },
    )
}

proptest! {
    #[test]
    fn round_trips(env in arb_env()) {
        let complete = (!env.networks.is_empty() || !env.ipv6_networks.is_empty())
            && (env.subnet.is_some() || env.ipv6_subnet.is_some());
        prop_assume!(complete);
        let text = env.to_string();
        prop_assert_eq!(SubnetEnv::parse(&text).unwrap(), env);
        prop_assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
    }
}
