//! `ipMasq`: pods' traffic leaving the cluster networks is masqueraded, in Sluice's own
//! nftables table (`ip sluice-cni` / `ip6 sluice-cni`), one set of pod addresses and one NAT
//! chain per network. Each ADD or DEL is one `nft -f -` transaction: the table, set and chain
//! are declared idempotently, the chain's rules rebuilt, the pod's address added or removed.
//! Only runs when `ipMasq` is on; flannel's default leaves masquerading to the overlay daemon.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

/// The nft program to run, overridable for tests.
const NFT: &str = "nft";

/// Why the masquerade rules could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("ipMasq: nft failed: {0}")]
pub struct MasqError(String);

/// The nftables script that masquerades `pod` (in `subnet`) for network `net`, leaving alone
/// the cluster networks and multicast.
pub fn add_script(net: &str, pod: IpAddr, subnet: IpNet, cluster: &[IpNet]) -> String {
    let (family, ty, multicast) = family(pod);
    let set = set_name(net);
    let chain = format!("post-{}", set_suffix(net));
    let mut skip: Vec<String> = cluster.iter().map(ToString::to_string).collect();
    if !cluster.iter().any(|c| c.contains(&subnet.trunc())) {
        skip.push(subnet.trunc().to_string());
    }
    skip.push(multicast.to_owned());
    format!(
        "table {family} sluice-cni {{\n\
         \tset {set} {{ type {ty}; }}\n\
         \tchain {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         }}\n\
         flush chain {family} sluice-cni {chain}\n\
         add rule {family} sluice-cni {chain} {family} saddr @{set} {family} daddr != {{ {} }} masquerade\n\
         add element {family} sluice-cni {set} {{ {pod} }}\n",
        skip.join(", ")
    )
}

/// The nftables script that stops masquerading `pod`.
pub fn del_script(net: &str, pod: IpAddr) -> String {
    let (family, _, _) = family(pod);
    format!(
        "delete element {family} sluice-cni {} {{ {pod} }}\n",
        set_name(net)
    )
}

/// Runs a script through `nft -f -` as one transaction.
pub fn apply(script: &str) -> Result<(), MasqError> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| MasqError(format!("cannot run {NFT}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| MasqError(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| MasqError(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MasqError(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

fn family(ip: IpAddr) -> (&'static str, &'static str, &'static str) {
    match ip {
        IpAddr::V4(_) => ("ip", "ipv4_addr", "224.0.0.0/4"),
        IpAddr::V6(_) => ("ip6", "ipv6_addr", "ff00::/8"),
    }
}

fn set_name(net: &str) -> String {
    format!("pods-{}", set_suffix(net))
}

/// Network names allow `[a-zA-Z0-9_.-]`, all valid in nft identifiers after a letter.
fn set_suffix(net: &str) -> String {
    net.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_add_script_skips_cluster_networks_and_multicast() {
        let s = add_script(
            "cbr0",
            "10.244.1.5".parse().unwrap(),
            "10.244.1.1/24".parse().unwrap(),
            &["10.244.0.0/16".parse().unwrap()],
        );
        assert!(
            add_script(
                "n",
                "10.9.0.5".parse().unwrap(),
                "10.9.0.0/24".parse().unwrap(),
                &[]
            )
            .contains("ip daddr != { 10.9.0.0/24, 224.0.0.0/4 }")
        );
        assert!(s.contains("set pods-cbr0 { type ipv4_addr; }"), "{s}");
        assert!(s.contains(
            "add rule ip sluice-cni post-cbr0 ip saddr @pods-cbr0 ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } masquerade"
        ), "{s}");
        assert!(s.ends_with("add element ip sluice-cni pods-cbr0 { 10.244.1.5 }\n"));
        assert_eq!(
            del_script("cbr0", "fd00::5".parse().unwrap()),
            "delete element ip6 sluice-cni pods-cbr0 { fd00::5 }\n"
        );
    }
}
