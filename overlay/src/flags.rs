//! Command-line flags, named as flannel's so an operator can swap the image and keep the
//! DaemonSet's arguments; each can also come from flannel's `FLANNELD_<FLAG>` environment
//! variable. Validation that needs no I/O happens here, so a bad flag fails before the
//! daemon touches anything (a zero `--reconcile-period` used to panic after the lease was
//! already taken).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::etcd_mgr::DEFAULT_PREFIX;
use crate::lease::DEFAULT_ANNOTATION_PREFIX;

/// sluice-overlay: flannel-compatible VXLAN / host-gw overlay that heals itself.
#[derive(Clone, Debug, Parser, PartialEq)]
#[command(
    name = "sluice-overlay",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SLUICE_REVISION"), ")")
)]
pub struct Flags {
    /// Use the Kubernetes API (node podCIDRs + annotations) instead of etcd.
    #[arg(long, env = "FLANNELD_KUBE_SUBNET_MGR")]
    pub kube_subnet_mgr: bool,

    /// Kubeconfig file (in-cluster configuration when empty).
    #[arg(long, visible_alias = "kubeconfig", env = "FLANNELD_KUBECONFIG_FILE")]
    pub kubeconfig_file: Option<PathBuf>,

    /// Node annotation prefix for lease attributes.
    #[arg(long, default_value = DEFAULT_ANNOTATION_PREFIX, env = "FLANNELD_KUBE_ANNOTATION_PREFIX")]
    pub kube_annotation_prefix: String,

    /// Path of net-conf.json (kube subnet manager; etcd mode reads `<prefix>/config`).
    #[arg(
        long,
        default_value = "/etc/kube-flannel/net-conf.json",
        env = "FLANNELD_NET_CONFIG_PATH"
    )]
    pub net_config_path: PathBuf,

    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ',',
        env = "FLANNELD_ETCD_ENDPOINTS"
    )]
    pub etcd_endpoints: Vec<String>,

    /// etcd key prefix.
    #[arg(long, default_value = DEFAULT_PREFIX, env = "FLANNELD_ETCD_PREFIX")]
    pub etcd_prefix: String,

    /// Underlay interface (name or address); the default route's interface when absent.
    #[arg(long, env = "FLANNELD_IFACE")]
    pub iface: Option<String>,

    /// Address to advertise to peers (defaults to the interface's address).
    #[arg(long, env = "FLANNELD_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// IPv6 address to advertise to peers (defaults to the interface's global IPv6 address).
    #[arg(long, env = "FLANNELD_PUBLIC_IPV6")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,

    /// Where to write subnet.env for the CNI plugin.
    #[arg(long, default_value = sluice_model::subnet_env::DEFAULT_PATH, env = "FLANNELD_SUBNET_FILE")]
    pub subnet_file: PathBuf,

    /// Masquerade traffic from the pod network to destinations outside it.
    #[arg(long, env = "FLANNELD_IP_MASQ")]
    pub ip_masq: bool,

    /// Minutes before lease expiry to renew it (etcd mode).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=1439), env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN")]
    pub subnet_lease_renew_margin: u64,

    /// TTL of etcd leases (Sluice; flannel fixes it at 24 h).
    #[arg(long, default_value = "24h", value_parser = parse_period)]
    pub subnet_lease_ttl: Duration,

    /// Address for the health endpoint.
    #[arg(long, default_value = "0.0.0.0", env = "FLANNELD_HEALTHZ_IP")]
    pub healthz_ip: IpAddr,

    /// Port for the health endpoint (0 disables it).
    #[arg(long, default_value_t = 0, env = "FLANNELD_HEALTHZ_PORT")]
    pub healthz_port: u16,

    /// How often to re-check the kernel state against the leases (Sluice).
    #[arg(long, default_value = "10s", value_parser = parse_period)]
    pub reconcile_period: Duration,

    /// This node's name (the Node object in kube mode).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

impl Flags {
    /// The renewal margin as a duration.
    pub fn renew_margin(&self) -> Duration {
        Duration::from_secs(self.subnet_lease_renew_margin * 60)
    }

    /// How long after a (re)newal the next renewal is due: the margin before expiry, or
    /// half the TTL when the margin does not fit inside it (short test TTLs).
    pub fn renew_after(&self) -> Duration {
        let margin = self.renew_margin();
        if margin < self.subnet_lease_ttl {
            self.subnet_lease_ttl - margin
        } else {
            self.subnet_lease_ttl / 2
        }
    }
}

/// The longest period or TTL accepted: a year (timers further out overflow the clock).
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);

/// Parses `500ms`, `10s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: missing unit (ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a number of {unit}"))?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?}: too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    }
}

/// A period or TTL: a duration above zero (a zero timer period panics, a zero TTL renews in
/// a busy loop) and at most [`MAX_PERIOD`].
pub fn parse_period(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?}: must be more than zero")),
        d if d > MAX_PERIOD => Err(format!("{text:?}: must be at most a year (8760h)")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(std::iter::once("sluice-overlay").chain(args.iter().copied()))
    }

    #[test]
    fn flannels_daemonset_arguments_parse() {
        let f = parse(&["--ip-masq", "--kube-subnet-mgr", "--iface", "eth0"]).unwrap();
        assert!(f.ip_masq && f.kube_subnet_mgr);
        assert_eq!(f.iface.as_deref(), Some("eth0"));
        assert_eq!(f.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(f.etcd_prefix, "/coreos.com/network");
        assert_eq!(f.renew_margin(), Duration::from_secs(3600));
        assert_eq!(f.reconcile_period, Duration::from_secs(10));
        assert_eq!(f.renew_after(), Duration::from_secs(23 * 3600));
        let short = parse(&["--subnet-lease-ttl", "4s"]).unwrap();
        assert_eq!(short.renew_after(), Duration::from_secs(2));
    }

    #[test]
    fn kubeconfig_has_both_names_and_endpoints_split_on_commas() {
        let f = parse(&[
            "--kubeconfig",
            "/k",
            "--etcd-endpoints",
            "http://a:1,http://b:2",
        ])
        .unwrap();
        assert_eq!(f.kubeconfig_file, Some(PathBuf::from("/k")));
        assert_eq!(f.etcd_endpoints, ["http://a:1", "http://b:2"]);
        let f = parse(&["--kubeconfig-file", "/k2"]).unwrap();
        assert_eq!(f.kubeconfig_file, Some(PathBuf::from("/k2")));
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        for (args, flag) in [
            (&["--public-ip", "1.2.3"][..], "--public-ip"),
            (
                &["--subnet-lease-renew-margin", "1440"][..],
                "--subnet-lease-renew-margin",
            ),
            (&["--reconcile-period", "10"][..], "--reconcile-period"),
            (&["--reconcile-period", "0s"][..], "--reconcile-period"),
            (&["--reconcile-period", "0ms"][..], "--reconcile-period"),
            (&["--subnet-lease-ttl", "0h"][..], "--subnet-lease-ttl"),
            (&["--reconcile-period", "9999h"][..], "--reconcile-period"),
            (
                &["--reconcile-period", "99999999999999999h"][..],
                "--reconcile-period",
            ),
            (&["--no-such-flag"][..], "--no-such-flag"),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").is_err() && parse_duration("5d").is_err());
        assert_eq!(
            parse_duration("18446744073709551615h").unwrap_err(),
            "\"18446744073709551615h\": too large"
        );
        assert_eq!(parse_period("8760h").unwrap(), MAX_PERIOD);
    }
}
