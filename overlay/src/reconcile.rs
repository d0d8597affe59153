//! One reconcile: make the kernel hold exactly the desired overlay state, whatever happened
//! to it in between. Run after every lease change and periodically, it is what makes the
//! overlay heal where flannel does not: a deleted device is recreated *and all peer state
//! replayed* (it died with the device), deleted routes, neighbours and FDB entries come
//! back, and entries nobody desires any more (an expired peer, a peer's old MAC) go. A
//! destination someone else routes on purpose (a connected route, a static one) is left to
//! them and reported instead of replaced.

use ipnet::IpNet;

use crate::desired::Desired;
use crate::kernel::{Kernel, VxlanSpec};
use crate::plan::Plan;

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The device was missing and has been created.
    pub device_created: bool,
    /// The device existed with other settings and has been recreated.
    pub device_replaced: bool,
    /// Kernel operations applied.
    pub operations: usize,
    /// Operations that failed (they are retried by the next reconcile).
    pub failures: Vec<String>,
    /// Desired routes left out because someone else's route holds the destination, with
    /// that route's protocol number.
    pub blocked: Vec<(IpNet, u8)>,
}

impl Outcome {
    /// True when the kernel already held the desired state.
    pub fn was_converged(&self) -> bool {
        !self.device_created && !self.device_replaced && self.operations == 0
    }
}

/// Makes `kernel` hold `desired`. `devices` are the VXLAN devices (one per family; none for
/// host-gw); `networks` bounds which routes are ours.
pub async fn reconcile<K: Kernel>(
    kernel: &mut K,
    devices: &[VxlanSpec],
    networks: &[IpNet],
    desired: &Desired,
) -> Result<Outcome, K::Error> {
    let mut out = Outcome::default();
    let mut names = Vec::new();
    for spec in devices {
        match kernel.device(&spec.name).await? {
            Some(found) if spec.matches(&found) => {}
            Some(_) => {
                kernel.delete_device(&spec.name).await?;
                kernel.create_device(spec).await?;
                out.device_replaced = true;
            }
            None => {
                kernel.create_device(spec).await?;
                out.device_created = true;
            }
        }
        names.push(spec.name.clone());
    }
    let observed = kernel.observe(&names, networks).await?;
    out.blocked = desired
        .routes
        .keys()
        .filter_map(|dst| observed.foreign.get(dst).map(|proto| (*dst, *proto)))
        .collect();
    let plan = if out.blocked.is_empty() {
        Plan::between(&observed.state, desired)
    } else {
        let mut free = desired.clone();
        for (dst, _) in &out.blocked {
            free.routes.remove(dst);
        }
        Plan::between(&observed.state, &free)
    };
    out.operations = plan.len();
    if !plan.is_empty() {
        out.failures = kernel
            .apply(&plan)
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    Ok(out)
}
