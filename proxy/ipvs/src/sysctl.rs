//! The sysctls kube-proxy's IPVS mode sets (per network namespace): IPVS keeps conntrack
//! entries so the iptables rules see its traffic (`vs/conntrack`), drops connections to
//! deleted real servers at once (`vs/expire_nodest_conn`) and persistence templates to
//! quiesced ones (`vs/expire_quiescent_template`); forwarding on; strict ARP when asked.
//! `vs/conn_reuse_mode` is left to the kernel: kube-proxy sets it to 0 only on kernels older
//! than 5.9, whose port-reuse handling it works around.

use std::io;

/// (path under /proc/sys, value).
pub const SYSCTLS: [(&str, &str); 4] = [
    ("net/ipv4/vs/conntrack", "1"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
    ("net/ipv4/vs/expire_quiescent_template", "1"),
    ("net/ipv4/ip_forward", "1"),
];

/// `--ipvs-strict-arp`.
pub const STRICT_ARP: [(&str, &str); 2] = [
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
];

/// Sets each sysctl that differs.
pub fn set_all(strict_arp: bool) -> io::Result<()> {
    let extra: &[(&str, &str)] = if strict_arp { &STRICT_ARP } else { &[] };
    for (path, value) in SYSCTLS.iter().chain(extra) {
        let full = format!("/proc/sys/{path}");
        if std::fs::read_to_string(&full)?.trim() != *value {
            tracing::info!("setting {} = {value}", path.replace('/', "."));
            std::fs::write(&full, value)?;
        }
    }
    Ok(())
}
