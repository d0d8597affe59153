//! Each pod's own `/etc/resolv.conf`, without touching the host's: iproute2's per-namespace
//! configuration. `ip netns exec NS …` (how the lab starts every pod process and how
//! `sluice-lab exec` enters a pod) runs the command in a new mount namespace and bind-mounts
//! each file of `/etc/netns/NS/` over the same name in `/etc` — so a pod's processes read
//! `/etc/netns/NS/resolv.conf` as `/etc/resolv.conf` and nobody else does. `up` writes the
//! file when it creates the pod; `down` removes the directory with the namespace (and
//! `/etc/netns` once empty).

use std::path::PathBuf;

use anyhow::Context;

/// The per-namespace configuration directory of `netns`.
fn dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Writes the `resolv.conf` of a pod in namespace `netns` (its Kubernetes namespace:
/// `pod_namespace`).
pub(crate) fn write(netns: &str, pod_namespace: &str) -> anyhow::Result<()> {
    let d = dir(netns);
    // Another lab's `down` may remove an empty /etc/netns meanwhile: one retry.
    std::fs::create_dir_all(&d)
        .or_else(|_| std::fs::create_dir_all(&d))
        .with_context(|| format!("create {}", d.display()))?;
    let file = d.join("resolv.conf");
    std::fs::write(&file, crate::dns::resolv_conf(pod_namespace))
        .with_context(|| format!("write {}", file.display()))
}

/// Removes what [`write`] made for `netns` (nothing there is fine).
pub(crate) fn remove(netns: &str) -> anyhow::Result<bool> {
    let d = dir(netns);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => {
            // /etc/netns itself when no other lab (or anyone) has an entry there.
            let _ = std::fs::remove_dir("/etc/netns");
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("remove {}", d.display())),
    }
}
