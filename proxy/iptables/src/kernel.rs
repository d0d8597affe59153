//! The backend on a real host: the iptables programs of the variant the host uses (or the
//! one `--iptables-variant` names) and ctnetlink for the conntrack reconciler.

use sluice_conntrack::Conntrack;
use sluice_proxy_core::backend::{BackendError, BackendOptions, ProxyMode};

use crate::backend::IptablesBackend;
use crate::config::IptConfig;
use crate::exec::{Exec, Variant};

/// The iptables backend over the real programs.
pub type KernelIptables = IptablesBackend<Exec, Conntrack>;

impl KernelIptables {
    /// Picks the variant, checks its programs run, and renders with `opts`. nfacct counters
    /// are not used (Sluice does not create them; their rules are left out as kube-proxy
    /// leaves them out when it cannot create the counters).
    pub fn open(opts: &BackendOptions) -> Result<Self, BackendError> {
        let fail =
            |what: String, source: Box<dyn std::error::Error + Send + Sync>| BackendError::Open {
                mode: ProxyMode::Iptables,
                what,
                source,
            };
        let variant = match opts.iptables_variant.as_deref() {
            None => Variant::detect(),
            Some(v) => Variant::parse(v).ok_or_else(|| {
                fail(
                    format!("iptables variant {v:?}"),
                    "not nft or legacy".into(),
                )
            })?,
        };
        tracing::info!(variant = variant.as_str(), "iptables mode");
        let mut families = Vec::new();
        for family in &opts.families {
            let exec = Exec::new(*family, variant);
            let random_fully = exec
                .supports_random_fully()
                .map_err(|e| fail(format!("{family:?} iptables"), e.into()))?;
            families.push((exec, IptConfig::of(opts, *family, random_fully, false)));
        }
        let conntrack = Conntrack::open().map_err(|e| fail("ctnetlink".into(), e.into()))?;
        Ok(Self::new(families, conntrack))
    }
}
