//! Leases in flannel's wire formats: what flannel writes must parse, what we write must be
//! what flannel writes, and malformed input must be a clear error.

use std::collections::BTreeMap;

use sluice_overlay::lease::{self, AnnotationKeys, Lease};

/// The value flannel 0.26 writes to etcd for a vxlan node (flannel.md §5).
const FLANNEL_VALUE: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

#[test]
fn flannel_etcd_lease_round_trips_byte_for_byte() {
    let lease = Lease::from_etcd("10.5.52.0-24", FLANNEL_VALUE).unwrap();
    assert_eq!(lease.subnet.unwrap().to_string(), "10.5.52.0/24");
    assert_eq!(lease.ipv6_subnet, None);
    let vx = lease.vxlan_data(false).unwrap().unwrap();
    assert_eq!(
        (vx.vni, vx.vtep_mac.to_string().as_str()),
        (1, "c6:d2:32:6f:8f:44")
    );
    assert_eq!(lease.etcd_value(), FLANNEL_VALUE);
}

#[test]
fn dual_stack_and_v6_only_keys() {
    let (v4, v6) = lease::parse_subnet_key("10.5.1.0-24&fd00:1::-64").unwrap();
    assert_eq!(v4.unwrap().to_string(), "10.5.1.0/24");
    assert_eq!(v6.unwrap().to_string(), "fd00:1::/64");
    assert_eq!(lease::subnet_key(v4, v6), "10.5.1.0-24&fd00:1::-64");
    let (v4, v6) = lease::parse_subnet_key("fd00:1::-64").unwrap();
    assert_eq!(
        (v4, v6.map(|n| n.to_string())),
        (None, Some("fd00:1::/64".into()))
    );
}

#[test]
fn malformed_keys_and_values_are_clear_errors() {
    for (key, want) in [
        ("10.5.1.0", "no '-<len>'"),
        ("10.5.1.0-x", "not a number"),
        ("10.5.1-24", "not an IP address"),
        ("10.5.1.0-33", "prefix too long"),
        ("10.5.1.0-24&10.5.2.0-24", "two subnets of one family"),
    ] {
        let e = lease::parse_subnet_key(key).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(want), "{key}: {e}");
    }
    let e = Lease::from_etcd("10.5.1.0-24", "{not json")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("lease 10.5.1.0-24: invalid value"), "{e}");
    let bad_mac = r#"{"PublicIP":"192.168.64.3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"nope"}}"#;
    let lease = Lease::from_etcd("10.5.1.0-24", bad_mac).unwrap();
    let e = lease.vxlan_data(false).unwrap_err().to_string();
    assert!(e.contains("BackendData") && e.contains("nope"), "{e}");
}

#[test]
fn annotations_round_trip_and_unclaimed_nodes_are_ignored() {
    let keys = AnnotationKeys::default();
    let lease = Lease::from_etcd("10.244.2.0-24", FLANNEL_VALUE).unwrap();
    let published = keys.publish(&lease.attrs);
    assert_eq!(
        published
            .get("flannel.alpha.coreos.com/backend-data")
            .unwrap(),
        r#"{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}"#
    );
    assert_eq!(
        published["flannel.alpha.coreos.com/kube-subnet-manager"],
        "true"
    );
    assert_eq!(keys.read("n2", &published).unwrap(), Some(lease.attrs));
    assert_eq!(keys.read("n3", &BTreeMap::new()).unwrap(), None);
}

#[test]
fn annotation_prefixes_are_normalised_like_flannel() {
    assert_eq!(
        AnnotationKeys::new("example.com").key("public-ip"),
        "example.com/public-ip"
    );
    assert_eq!(
        AnnotationKeys::new("example.com/foo").key("public-ip"),
        "example.com/foo-public-ip"
    );
}

#[test]
fn malformed_annotations_name_node_and_key() {
    let keys = AnnotationKeys::default();
    let mut ann = BTreeMap::new();
    ann.insert(keys.key("kube-subnet-manager"), "true".to_owned());
    ann.insert(keys.key("public-ip"), "192.168.0.300".to_owned());
    let e = keys.read("n9", &ann).unwrap_err().to_string();
    assert!(
        e.contains("node n9") && e.contains("flannel.alpha.coreos.com/public-ip"),
        "{e}"
    );
    ann.insert(keys.key("public-ip"), "192.168.0.3".to_owned());
    ann.insert(keys.key("backend-data"), "{".to_owned());
    let e = keys.read("n9", &ann).unwrap_err().to_string();
    assert!(e.contains("backend-data"), "{e}");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn on_arbitrary_keys_values_and_annotations(
            key in "[0-9a-f.:&-]{0,40}",
            value in ".{0,80}",
            ann in proptest::collection::btree_map("[a-z./-]{0,30}", ".{0,20}", 0..4),
        ) {
            let _ = lease::parse_subnet_key(&key);
            if let Ok(l) = Lease::from_etcd("10.0.0.0-24", &value) {
                let _ = l.vxlan_data(false);
                let _ = l.vxlan_data(true);
            }
            let mut ann = ann;
            ann.insert("flannel.alpha.coreos.com/kube-subnet-manager".into(), "true".into());
            let _ = AnnotationKeys::default().read("n", &ann);
        }
    }
}
