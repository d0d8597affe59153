//! `net-conf.json`: reading like flannel, defaults and checks as flannel's
//! `CheckNetworkConfig`, round trips, and errors naming file, line and key.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::json;
use sluice_model::net_conf::{BackendType, NetConf, NetConfError, SubnetRange};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// Writes `text` to a temporary `net-conf.json` and reads it back.
fn read_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<NetConf, NetConfError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net-conf.json");
    std::fs::write(&path, text).unwrap();
    let result = NetConf::read(&path);
    (dir, path, result)
}

fn check_error(text: &str) -> String {
    NetConf::parse(text)
        .unwrap()
        .check()
        .unwrap_err()
        .to_string()
}

#[test]
fn reads_flannels_manifest() {
    let conf = NetConf::read(fixture("net-conf-manifest.json")).unwrap();
    assert_eq!(conf.network, Some("10.244.0.0/16".parse().unwrap()));
    assert!(conf.enable_ipv4 && !conf.enable_ipv6 && !conf.enable_nftables);
    assert_eq!(conf.backend.backend_type, BackendType::Vxlan);
    assert_eq!((conf.backend.vni(), conf.backend.port()), (1, 8472));
    assert!(!conf.backend.direct_routing());
    let ranges = conf.check().unwrap();
    let expected = SubnetRange {
        subnet_len: 24,
        min: v4("10.244.1.0"),
        max: v4("10.244.255.0"),
    };
    assert_eq!(ranges.ipv4, Some(expected));
    assert_eq!(ranges.ipv6, None);
}

#[test]
fn reads_every_key_and_keeps_unknown_ones() {
    let conf = NetConf::read(fixture("net-conf-dual-stack.json")).unwrap();
    assert_eq!(conf.ipv6_network, Some("fd00:42::/56".parse().unwrap()));
    assert_eq!(conf.subnet_len, Some(25));
    assert_eq!(conf.subnet_min, Some(v4("10.42.2.0")));
    assert_eq!(conf.subnet_max, Some(v4("10.42.200.0")));
    assert_eq!(conf.ipv6_subnet_len, Some(64));
    assert!(conf.enable_ipv6 && conf.enable_nftables);
    let backend = &conf.backend;
    assert_eq!(
        (backend.vni(), backend.port(), backend.mtu),
        (4096, 4789, Some(1400))
    );
    assert!(backend.direct_routing());
    assert_eq!(backend.extra["GBP"], json!(true));
    assert_eq!(backend.extra["Learning"], json!(false));
    assert_eq!(conf.extra["Comment"], json!("kept"));
    let ranges = conf.check().unwrap();
    let v4_range = SubnetRange {
        subnet_len: 25,
        min: v4("10.42.2.0"),
        max: v4("10.42.200.0"),
    };
    assert_eq!(ranges.ipv4, Some(v4_range));
    let v6_range = SubnetRange {
        subnet_len: 64,
        min: v6("fd00:42:0:1::"),
        max: v6("fd00:42:0:ff::"),
    };
    assert_eq!(ranges.ipv6, Some(v6_range));
}

#[test]
fn round_trips() {
    for name in ["net-conf-manifest.json", "net-conf-dual-stack.json"] {
        let conf = NetConf::read(fixture(name)).unwrap();
        let again = NetConf::parse(&conf.to_string()).unwrap();
        assert_eq!(again, conf, "{name}");
        assert_eq!(again.to_json(), conf.to_json(), "{name}");
    }
    let minimal = NetConf::parse("{}").unwrap();
    assert_eq!(minimal.to_json(), json!({"Backend": {"Type": "vxlan"}}));
    let v6_only = NetConf::parse(r#"{"EnableIPv4": false, "EnableIPv6": true}"#).unwrap();
    assert_eq!(NetConf::parse(&v6_only.to_string()).unwrap(), v6_only);
}

#[test]
fn keys_match_case_insensitively_and_the_last_wins() {
    let text = r#"{"network": "10.1.0.0/16", "NETWORK": "10.2.3.4/16",
        "backend": {"type": "Host-GW"}, "subnetlen": null}"#;
    let conf = NetConf::parse(text).unwrap();
    assert_eq!(
        conf.network,
        Some("10.2.0.0/16".parse().unwrap()),
        "masked, last wins"
    );
    assert_eq!(conf.backend.backend_type, BackendType::HostGw);
    assert_eq!(conf.subnet_len, None, "null is absent");
    assert!(conf.extra.is_empty());
}

#[test]
fn default_subnet_lengths_follow_flannel() {
    let range = |net: &str| {
        let text = format!(r#"{{"Network": "{net}"}}"#);
        NetConf::parse(&text)
            .unwrap()
            .check()
            .unwrap()
            .ipv4
            .unwrap()
    };
    assert_eq!(range("10.0.0.0/22").subnet_len, 24);
    let small = range("192.168.5.0/24");
    assert_eq!(
        (small.subnet_len, small.min, small.max),
        (26, v4("192.168.5.64"), v4("192.168.5.192"))
    );
    assert_eq!(range("192.168.5.0/28").subnet_len, 30);
    let range6 = |net: &str| {
        let text =
            format!(r#"{{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "{net}"}}"#);
        NetConf::parse(&text)
            .unwrap()
            .check()
            .unwrap()
            .ipv6
            .unwrap()
    };
    assert_eq!(range6("fd00::/62").subnet_len, 64);
    assert_eq!(range6("fd00::/120").subnet_len, 122);
    assert_eq!(range6("fd00::/120").max, v6("fd00::c0"));
}

#[test]
fn check_errors_point_at_the_key() {
    let text = "{\n  \"Network\": \"10.0.0.0/16\",\n  \"SubnetLen\": 31\n}\n";
    let (_dir, path, conf) = read_text(text);
    let err = conf.unwrap().check().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:3:16: SubnetLen: must be at most 30, got 31",
            path.display()
        )
    );

    let cases = [
        (
            r#"{"Network": "10.0.0.0/16", "SubnetLen": 17}"#,
            "line 1, column 41: SubnetLen: must be at least 18 so that Network holds four subnets, got 17",
        ),
        (
            r#"{"Network": "10.0.0.0/29"}"#,
            "line 1, column 13: Network: too small: the smallest usable prefix is /28",
        ),
        (
            r#"{"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}"#,
            "line 1, column 41: SubnetMin: 10.1.0.0 is not inside Network",
        ),
        (
            r#"{"Network": "10.0.0.0/16", "SubnetMax": "10.0.5.128"}"#,
            "line 1, column 41: SubnetMax: 10.0.5.128 is not on a /24 boundary",
        ),
        (
            r#"{"EnableIPv4": false, "EnableIPv6": true}"#,
            "input: IPv6Network: required when EnableIPv6 is true",
        ),
        ("{}", "input: Network: required when EnableIPv4 is true"),
        (
            r#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/125"}"#,
            "line 1, column 58: IPv6Network: too small: the smallest usable prefix is /124",
        ),
        (
            r#"{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/64", "IPv6SubnetLen": 127}"#,
            "line 1, column 88: IPv6SubnetLen: must be at most 126, got 127",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(check_error(text), expected, "{text}");
    }
}

#[test]
fn parse_errors_name_file_line_and_key() {
    let cases = [
        (
            "{\n  \"Network\": \"10.0.0.0/16\",\n  \"SubnetLen\": \"24\"\n}",
            ":3:16: SubnetLen: invalid type: string \"24\", expected u32",
        ),
        (
            "{\n  \"Network\": \"10.0.0/16\"\n}",
            ":2:14: Network: invalid cidr \"10.0.0/16\"",
        ),
        (
            "{\n  \"Network\": \"fd00::/64\"\n}",
            ":2:14: Network: expected an IPv4 cidr, got \"fd00::/64\"",
        ),
        (
            "{\n  \"Backend\": {\n    \"Type\": \"wireguard\"\n  }\n}",
            ":3:13: Backend.Type: unsupported backend \"wireguard\", expected \"vxlan\" or \"host-gw\"",
        ),
        (
            "{\n  \"Backend\": {\n    \"Type\": \"vxlan\",\n    \"VNI\": -1\n  }\n}",
            ":4:12: Backend.VNI: invalid value: integer `-1`, expected u32",
        ),
        (
            "{\n  \"Backend\": {\"Port\": 70000}\n}",
            ":2:23: Backend.Port: invalid value: integer `70000`, expected u16",
        ),
        (
            "{\n  \"Backend\": \"vxlan\"\n}",
            ":2:14: Backend: invalid type: string \"vxlan\", expected a json object",
        ),
        (
            "{\n  \"SubnetMin\": \"10.0.0.300\"\n}",
            ":2:16: SubnetMin: invalid ip address \"10.0.0.300\"",
        ),
        (
            "{\n  \"Network\": \"10.0.0.0/16\",\n}",
            ":3:1: invalid json: trailing comma",
        ),
        (
            "[1, 2]",
            ":1:1: invalid json: invalid type: sequence, expected a json object",
        ),
    ];
    for (text, expected) in cases {
        let (_dir, path, result) = read_text(text);
        let err = result.unwrap_err().to_string();
        assert_eq!(err, format!("{}{expected}", path.display()), "{text}");
    }
}

#[test]
fn read_error_names_the_file() {
    let err = NetConf::read("/nonexistent/net-conf.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/net-conf.json: read: "),
        "{err}"
    );
}

mod round_trip {
    use ipnet::{Ipv4Net, Ipv6Net};
    use proptest::prelude::*;
    use sluice_model::net_conf::{BackendType, NetConf};

    fn arb_backend_type() -> impl Strategy<Value = BackendType> {
        prop_oneof![Just(BackendType::Vxlan), Just(BackendType::HostGw)]
    }

    prop_compose! {
        fn arb_conf()(
            v4 in prop::option::of((any::<u32>(), 0u8..=32)),
            v6 in prop::option::of((any::<u128>(), 0u8..=128)),
            flags in any::<(bool, bool, bool)>(),
            lens in any::<(Option<u32>, Option<u32>)>(),
            v4_bounds in any::<(Option<u32>, Option<u32>)>(),
            v6_bounds in any::<(Option<u128>, Option<u128>)>(),
            backend_type in arb_backend_type(),
            knobs in any::<(Option<u32>, Option<u16>, Option<u32>, Option<bool>)>(),
        ) -> NetConf {
            let mut conf = NetConf::default();
            conf.network = v4.map(|(ip, len)| Ipv4Net::new(ip.into(), len).unwrap().trunc());
            conf.ipv6_network = v6.map(|(ip, len)| Ipv6Net::new(ip.into(), len).unwrap().trunc());
            (conf.enable_ipv4, conf.enable_ipv6, conf.enable_nftables) = flags;
            (conf.subnet_len, conf.ipv6_subnet_len) = lens;
            conf.subnet_min = v4_bounds.0.map(Into::into);
            conf.subnet_max = v4_bounds.1.map(Into::into);
            conf.ipv6_subnet_min = v6_bounds.0.map(Into::into);
            conf.ipv6_subnet_max = v6_bounds.1.map(Into::into);
            conf.backend.backend_type = backend_type;
            (conf.backend.vni, conf.backend.port, conf.backend.mtu, conf.backend.direct_routing) = knobs;
            conf
        }
    }

    proptest! {
        #[test]
        fn parse_of_display_is_identity(conf in arb_conf()) {
            let text = conf.to_string();
            let again = NetConf::parse(&text).unwrap();
            prop_assert_eq!(&again, &conf);
            // Checking never panics, whatever the values.
            let _ = again.check();
        }
    }
}
