//! The API server's validation of the fields the proxy programs
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/core/validation`,
//! `pkg/apis/discovery/validation`), so that every source — the API watch and
//! `--manifests-dir` alike — hands the dataplane only objects a cluster could
//! hold.
//!
//! Why the proxy checks again what the API server already checked: in
//! standalone mode nothing else does, and the names end up in kernel objects
//! with hard limits (an nftables chain name is at most 255 bytes: a 250-byte
//! Service name made every transaction fail), while addresses end up in
//! REJECT and DNAT rules (a `clusterIP: 127.0.0.1` without endpoints refused
//! all of the node's loopback TCP). The messages are upstream's wording, so
//! an operator reads the same reason `kubectl apply` would have given.

use std::net::{IpAddr, Ipv4Addr};

/// Longest DNS-1123 / DNS-1035 label.
const LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain.
const SUBDOMAIN_MAX: usize = 253;

/// `IsDNS1035Label`: Service names.
pub fn dns1035_label(value: &str) -> Result<(), String> {
    let ok = label_shape(value, |b| b.is_ascii_lowercase());
    check_label(
        value,
        ok,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', \
         start with an alphabetic character, and end with an alphanumeric character",
    )
}

/// `IsDNS1123Label`: namespaces, Service and EndpointSlice port names.
pub fn dns1123_label(value: &str) -> Result<(), String> {
    let ok = label_shape(value, |b| b.is_ascii_lowercase() || b.is_ascii_digit());
    check_label(
        value,
        ok,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character",
    )
}

/// `IsDNS1123Subdomain`: EndpointSlice and Node names.
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.len() > SUBDOMAIN_MAX {
        return Err(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    let ok = !value.is_empty()
        && value
            .split('.')
            .all(|part| label_shape(part, |b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    match ok {
        true => Ok(()),
        false => Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
                .to_owned(),
        ),
    }
}

/// `IsValidLabelValue`: the `kubernetes.io/service-name` label of a slice.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let ok = value.is_empty()
        || (bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    match ok {
        true => Ok(()),
        false => Err(
            "a valid label must be an empty string or consist of alphanumeric \
             characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                .to_owned(),
        ),
    }
}

/// `ValidateNonSpecialIP` / `ValidateEndpointIP`: what no endpoint, external IP or
/// load-balancer IP may be.
pub fn non_special_ip(ip: IpAddr) -> Result<(), String> {
    let reason = match ip {
        ip if ip.is_unspecified() => "may not be unspecified (0.0.0.0, ::)",
        ip if ip.is_loopback() => "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        IpAddr::V4(v4) if v4.is_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        }
        IpAddr::V4(v4) if v4.octets()[..3] == [224, 0, 0] => {
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xff00 && v6.segments()[0] & 0xf == 2 => {
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
        }
        _ => return Ok(()),
    };
    Err(reason.to_owned())
}

/// A cluster IP: beyond [`non_special_ip`], never broadcast or multicast (the API server's
/// allocator only hands out addresses of a unicast service CIDR; standalone mode has no
/// allocator, so the proxy refuses what no allocator could have given).
pub fn cluster_ip(ip: IpAddr) -> Result<(), String> {
    non_special_ip(ip)?;
    match ip {
        IpAddr::V4(Ipv4Addr::BROADCAST) => Err("may not be the broadcast address".to_owned()),
        ip if ip.is_multicast() => Err("may not be a multicast address".to_owned()),
        _ => Ok(()),
    }
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?` with `first` deciding the first byte.
fn label_shape(value: &str, first: impl Fn(u8) -> bool) -> bool {
    let bytes = value.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let end = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(|b| first(*b))
        && bytes.last().is_some_and(end)
        && bytes.iter().all(inner)
}

fn check_label(value: &str, ok: bool, shape: &str) -> Result<(), String> {
    if value.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    match ok {
        true => Ok(()),
        false => Err(shape.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(dns1035_label("web-1").is_ok());
        assert!(dns1035_label("1web").is_err());
        assert!(dns1035_label("web-").is_err());
        assert!(dns1035_label("Web").is_err());
        assert!(dns1035_label("").is_err());
        assert!(dns1035_label(&"a".repeat(63)).is_ok());
        assert_eq!(
            dns1035_label(&"a".repeat(64)).unwrap_err(),
            "must be no more than 63 characters"
        );
        assert!(dns1123_label("1web").is_ok());
        assert!(dns1123_label("a_b").is_err());
        assert!(dns1123_subdomain("web-abc.x").is_ok());
        assert!(dns1123_subdomain("web..x").is_err());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("My_svc.1").is_ok());
        assert!(label_value("-x").is_err());
    }

    #[test]
    fn special_ips() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1.2.3",
            "::",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(non_special_ip(ip).is_err(), "{bad}");
            assert!(cluster_ip(ip).is_err(), "{bad}");
        }
        for bad in ["255.255.255.255", "239.1.1.1", "ff05::1"] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(cluster_ip(ip).is_err(), "{bad}");
        }
        for good in ["10.96.0.1", "192.0.2.1", "fd00::1", "2001:db8::1"] {
            assert!(cluster_ip(good.parse().unwrap()).is_ok(), "{good}");
        }
    }
}
