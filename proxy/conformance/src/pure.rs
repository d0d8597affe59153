//! Runners 1 and 2, without a kernel: for the node a packet meets, the scenario's objects are
//! fed to that node's proxy state exactly as its sources would, then
//! 1. the model (`explain`) says what happens to the packet, and
//! 2. the mode's tracer walks the rules the mode renders for the same state,
//!
//! and each is held against what the scenario expects of that mode.

use std::net::IpAddr;

use sluice_model::service::IpFamily;
use sluice_proxy::dataplane;
use sluice_proxy::node::{self, NodeFacts};
use sluice_proxy_core::backend::{BackendOptions, ProxyMode};
use sluice_proxy_core::config_file::ProxyConfig;
use sluice_proxy_core::explain::{
    self, BackendCheck, NodeContext, Origin, Outcome, Packet, VerdictView,
};
use sluice_proxy_core::flags::Flags;
use sluice_proxy_core::runner::Feed;
use sluice_proxy_core::{Snapshot, TrackerConfig};

/// A tracer run: [`dataplane::check`] over the rendering or [`dataplane::check_programmed`].
type CheckFn = fn(
    ProxyMode,
    &BackendOptions,
    &Snapshot,
    &NodeContext,
    &Packet,
    &VerdictView,
) -> Option<BackendCheck>;

use crate::plan::{self, NodePlan};
use crate::scenario::{Expect, Masquerade, PacketSpec, Scenario};

/// What one runner made of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It did what the scenario expects.
    Pass(String),
    /// It did something else.
    Fail(String),
    /// This runner cannot check it for this mode, and why.
    NotApplicable(String),
}

/// One node's view of a scenario for one mode: the state its proxy would sync, and the
/// settings its rules would be rendered with.
pub struct NodeWorld {
    mode: ProxyMode,
    snapshots: Vec<Snapshot>,
    options: BackendOptions,
    context: NodeContext,
}

impl NodeWorld {
    /// `scenario` as the proxy in `mode` on `node` sees it.
    pub fn new(scenario: &Scenario, node: &NodePlan, mode: ProxyMode) -> Result<Self, String> {
        let config = proxy_config(scenario, node, mode)?;
        let families = node::families(&config);
        let feed =
            Feed::new((families.iter()).map(|f| TrackerConfig::for_proxy(&config, *f, node.name)));
        let objects = format!("{}\n{}", scenario.objects, plan::node_objects());
        for object in sluice_proxy_core::source::parse(&objects)?.objects {
            object.feed(&feed, node.name);
        }
        feed.services_listed();
        feed.slices_listed();
        let snapshots: Vec<Snapshot> = (families.iter())
            .filter_map(|f| feed.with_state(*f, |s| s.sync().0))
            .collect();
        let topology = snapshots
            .first()
            .map(|s| s.node().clone())
            .unwrap_or_default();
        let mut facts = NodeFacts::from_addresses(&config, node.addresses(), Some(&topology));
        facts.pod_cidrs = vec![node.pod_cidr(), node.pod_cidr6()];
        let options = node::backend_options(&config, &families, &facts);
        let dialect = dataplane::dialect(mode, &options);
        let context = node::node_context(&options, &facts, topology, dialect);
        Ok(Self {
            mode,
            snapshots,
            options,
            context,
        })
    }

    fn snapshot(&self, dst: IpAddr) -> Option<&Snapshot> {
        (self.snapshots.iter()).find(|s| s.family() == IpFamily::of(&dst))
    }

    /// Runner 1: the model's verdict for `spec`, held against the expectation.
    pub fn model(&self, spec: &PacketSpec) -> Verdict {
        let packet = packet(spec);
        let Some(snapshot) = self.snapshot(packet.dst.ip()) else {
            return Verdict::Fail(format!("the proxy serves no {:?}", packet.dst.ip()));
        };
        let e = match explain::explain(snapshot, &self.context, &packet) {
            Ok(e) => e,
            Err(err) => return Verdict::Fail(err.to_string()),
        };
        let got = model_words(&e.verdict, e.session_affinity_seconds.is_some());
        let want = spec.expected(self.mode.as_str());
        match model_matches(want, &e.verdict, e.session_affinity_seconds.is_some()) {
            true => Verdict::Pass(got),
            false => Verdict::Fail(got),
        }
    }

    /// Runner 2: the mode's tracer over the rules it renders, held against the expectation.
    pub fn tracer(&self, spec: &PacketSpec) -> Verdict {
        self.traced_by(spec, dataplane::check, false)
    }

    /// Traces `spec`'s packet with `check` (over the rendering, or over what is programmed)
    /// and holds the outcome against the expectation; `with_source` names what was traced.
    fn traced_by(&self, spec: &PacketSpec, check: CheckFn, with_source: bool) -> Verdict {
        let packet = packet(spec);
        let Some(snapshot) = self.snapshot(packet.dst.ip()) else {
            return Verdict::Fail(format!("the proxy serves no {:?}", packet.dst.ip()));
        };
        // The verdict only decides `agrees`; the outcome is held against the scenario.
        let view = &VerdictView::NoService;
        let Some(check) = check(
            self.mode,
            &self.options,
            snapshot,
            &self.context,
            &packet,
            view,
        ) else {
            return Verdict::NotApplicable(format!(
                "{} mode programs no {:?} rules or maps to trace",
                self.mode,
                snapshot.family()
            ));
        };
        let got = match with_source {
            true => format!("{} ({})", check.traced.describe(), check.source),
            false => check.traced.describe(),
        };
        match traced_matches(spec.expected(self.mode.as_str()), &check.traced, packet.src) {
            true => Verdict::Pass(got),
            false => Verdict::Fail(got),
        }
    }

    /// Programs this node's snapshots into the kernel of the calling thread's network
    /// namespace through the mode's real backend (a full sync per family), for
    /// [`Self::programmed`]; the backend is returned so the caller cleans up.
    pub fn program(&self, iptables_variant: Option<&str>) -> Result<dataplane::Any, String> {
        use sluice_proxy_core::backend::Backend as _;
        let options = BackendOptions {
            iptables_variant: iptables_variant.map(str::to_owned),
            ..self.options.clone()
        };
        let err =
            |e: sluice_proxy_core::backend::BackendError| sluice_proxy_core::backend::chain(&e);
        let mut backend = dataplane::Any::build(self.mode, &options).map_err(err)?;
        backend.init().map_err(err)?;
        for snapshot in &self.snapshots {
            let changes = sluice_proxy_core::Changes {
                full: true,
                ..Default::default()
            };
            backend.apply(snapshot, &changes).map_err(err)?;
        }
        Ok(backend)
    }

    /// Runner 2 over what [`Self::program`] put in the kernel, read back (where the mode can
    /// read its state back; its rendering otherwise), held against the expectation.
    pub fn programmed(&self, spec: &PacketSpec) -> Verdict {
        self.traced_by(spec, dataplane::check_programmed, true)
    }

    /// Where the packet enters this node's rules.
    pub fn origin(&self, spec: &PacketSpec) -> Origin {
        Origin::of(&packet(spec), &self.context)
    }
}

/// The proxy's configuration on `node` in `mode` for `scenario`: the lab's flags, then the
/// scenario's.
pub fn proxy_config(
    scenario: &Scenario,
    node: &NodePlan,
    mode: ProxyMode,
) -> Result<ProxyConfig, String> {
    let mut args = vec![
        "sluice-proxy".to_owned(),
        "--proxy-mode".into(),
        mode.to_string(),
    ];
    args.extend(plan::flags(node.name, &scenario.proxy));
    let flags = Flags::parse_args(&args).map_err(|e| e.to_string())?;
    Ok(flags.resolve().map_err(|e| e.to_string())?.config)
}

fn packet(spec: &PacketSpec) -> Packet {
    Packet {
        src: spec.from.ip(spec.to.0.ip()),
        dst: spec.to.0,
        protocol: spec.proto,
    }
}

fn model_matches(want: &Expect, got: &VerdictView, sticky_got: bool) -> bool {
    use VerdictView as V;
    match (want, got) {
        (
            Expect::Dnat {
                endpoints,
                masquerade,
                sticky,
            },
            V::Dnat {
                endpoints: e,
                masquerade: m,
                hairpin_masquerade: h,
            },
        ) => {
            let mut e = e.clone();
            e.sort();
            let masq = match masquerade {
                Masquerade::Yes => *m,
                Masquerade::No => !*m && !*h,
                Masquerade::Hairpin => !*m && *h,
            };
            *endpoints == e && masq && *sticky == sticky_got
        }
        (Expect::Reject, V::RejectNoEndpoints | V::RejectUnservedPort) => true,
        (
            Expect::Drop,
            V::DropNoEndpoints
            | V::DropNoLocalEndpoints
            | V::DropSourceRange
            | V::DropUnallocatedClusterIp,
        ) => true,
        (Expect::Untouched, V::NoService) => true,
        _ => false,
    }
}

fn model_words(v: &VerdictView, sticky: bool) -> String {
    match v {
        VerdictView::Dnat {
            endpoints,
            masquerade,
            hairpin_masquerade,
        } => Expect::Dnat {
            endpoints: {
                let mut e = endpoints.clone();
                e.sort();
                e
            },
            masquerade: match (masquerade, hairpin_masquerade) {
                (true, _) => Masquerade::Yes,
                (false, true) => Masquerade::Hairpin,
                (false, false) => Masquerade::No,
            },
            sticky,
        }
        .to_string(),
        VerdictView::RejectNoEndpoints | VerdictView::RejectUnservedPort => "REJECT".into(),
        VerdictView::NoService => "untouched".into(),
        _ => "DROP".into(),
    }
}

fn traced_matches(want: &Expect, got: &Outcome, src: IpAddr) -> bool {
    match (want, got) {
        (
            Expect::Dnat {
                endpoints,
                masquerade,
                ..
            },
            Outcome::Dnat { endpoints: traced },
        ) => {
            traced.len() == endpoints.len()
                && endpoints.iter().all(|e| {
                    let masq = match masquerade {
                        Masquerade::Yes => true,
                        Masquerade::No => false,
                        Masquerade::Hairpin => e.ip() == src,
                    };
                    traced.get(e) == Some(&masq)
                })
        }
        (Expect::Reject, Outcome::Reject)
        | (Expect::Drop, Outcome::Drop)
        | (Expect::Untouched, Outcome::Untouched) => true,
        _ => false,
    }
}
