//! What the backend believes is programmed, one piece per owner (the base ruleset, each
//! Service's ClusterIPs, each Service port), and the planning of a sync against it. A partial
//! sync re-renders and diffs only the owners of the changed ports; a full sync diffs
//! everything against what the kernel reports (repairing drift). Nothing is recorded until
//! the kernel accepted the transaction ([`Pending::commit`]), so a failed apply leaves the
//! beliefs as they were and the next (full) sync starts from the truth.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sluice_model::service::{ServiceName, ServicePortName};
use sluice_nft::{Op, Transaction};

use super::base::render_base;
use super::ctx::{NftConfig, TABLE};
use super::desired::{Desired, ElemKey, Phases};
use super::port::{render_cluster_ips, render_port};
use sluice_proxy_core::{Changes, Snapshot};

/// Who a piece of the ruleset belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Owner {
    /// Maps, base chains, dispatch chains.
    Base,
    /// A Service's `cluster-ips` elements (shared by its ports).
    Service(ServiceName),
    /// Everything else of one port.
    Port(ServicePortName),
}

/// One family's programmed state.
#[derive(Debug)]
pub struct NftState {
    cfg: NftConfig,
    pieces: HashMap<Owner, Desired>,
    /// Which owners hold each element key. A map key has one holder (two Services claiming
    /// one external IP and port must not fail the whole transaction: the first keeps it); a
    /// plain set's key may be shared (one endpoint in two Services' hairpin elements) and
    /// is only deleted when its last holder lets go.
    claims: HashMap<(String, ElemKey), BTreeSet<Owner>>,
}

/// A planned sync: the transaction and the pieces to record once it is applied.
#[derive(Debug)]
pub struct Pending {
    /// What to send to the kernel.
    pub tx: Transaction,
    pieces: Vec<(Owner, Option<Desired>)>,
    /// A full sync: every owner was rendered, the claims are rebuilt from the pieces.
    full: bool,
    /// Conflicts found while rendering, for the log.
    pub warnings: Vec<String>,
}

impl NftState {
    /// Nothing programmed yet.
    pub fn new(cfg: NftConfig) -> Self {
        Self {
            cfg,
            pieces: HashMap::new(),
            claims: HashMap::new(),
        }
    }

    /// The settings this state renders with.
    pub fn config(&self) -> &NftConfig {
        &self.cfg
    }

    /// Everything believed programmed, as one piece (for the tracer and tests).
    pub fn programmed(&self) -> Desired {
        let mut all = Desired::default();
        let mut owners: Vec<&Owner> = self.pieces.keys().collect();
        owners.sort();
        for o in owners {
            all.merge(&self.pieces[o]);
        }
        all
    }

    /// Plans a sync of the ports in `changes` (and their Services) only.
    pub fn plan_partial(&mut self, snap: &Snapshot, changes: &Changes) -> Pending {
        let mut owners: BTreeSet<Owner> = BTreeSet::new();
        for port in &changes.ports {
            owners.insert(Owner::Port(port.clone()));
            owners.insert(Owner::Service(port.service()));
        }
        if !self.pieces.contains_key(&Owner::Base) {
            owners.insert(Owner::Base);
        }
        let mut pending = self.render(snap, owners, false);
        let kept = self.held_after(&pending);
        let mut phases = Phases::default();
        let empty = Desired::default();
        let mut deleted = HashSet::new();
        for (owner, new) in &pending.pieces {
            let old = self.pieces.get(owner).unwrap_or(&empty);
            let new = new.as_ref().unwrap_or(&empty);
            let old = without_deleted(without_shared(old, new, &kept), new, &mut deleted);
            phases.add(&old, new);
        }
        pending.tx = self.transaction(phases, !self.pieces.contains_key(&Owner::Base));
        pending
    }

    /// Shared (plain set) keys the owners in `pending` give up that stay programmed anyway:
    /// held by an owner it does not re-render, or by one of its new pieces. A map key has
    /// one holder: one that changes hands is deleted and re-added (the transaction's phases
    /// order that). Looks only at what the touched owners held: O(what changed).
    fn held_after(&self, pending: &Pending) -> HashSet<(String, ElemKey)> {
        let touched: BTreeSet<&Owner> = pending.pieces.iter().map(|(o, _)| o).collect();
        let new_keys: HashSet<(&String, &ElemKey)> = pending
            .pieces
            .iter()
            .filter_map(|(_, p)| p.as_ref())
            .flat_map(|p| {
                p.elements
                    .iter()
                    .flat_map(|(set, e)| e.keys().map(move |k| (set, k)))
            })
            .collect();
        let mut kept = HashSet::new();
        for owner in &touched {
            let Some(old) = self.pieces.get(*owner) else {
                continue;
            };
            for (set, elems) in &old.elements {
                for (key, _) in elems.iter().filter(|(_, e)| e.verdict.is_none()) {
                    let k = (set.clone(), key.clone());
                    let elsewhere = self
                        .claims
                        .get(&k)
                        .is_some_and(|h| h.iter().any(|o| !touched.contains(o)));
                    if elsewhere || new_keys.contains(&(set, key)) {
                        kept.insert(k);
                    }
                }
            }
        }
        kept
    }

    /// Plans a full sync: every owner re-rendered, diffed against `kernel` (what the kernel
    /// has, when it could be read) or else against the beliefs.
    pub fn plan_full(&mut self, snap: &Snapshot, kernel: Option<Desired>) -> Pending {
        let beliefs = self.programmed();
        self.plan_full_against(snap, |_| kernel.unwrap_or(beliefs))
    }

    /// Plans a full sync against what `kernel` makes of the whole desired table.
    pub fn plan_full_against(
        &mut self,
        snap: &Snapshot,
        kernel: impl FnOnce(&Desired) -> Desired,
    ) -> Pending {
        let mut owners: BTreeSet<Owner> = self.pieces.keys().cloned().collect();
        owners.insert(Owner::Base);
        for port in snap.service_ports() {
            owners.insert(Owner::Port(port.name.clone()));
            owners.insert(Owner::Service(port.name.service()));
        }
        // A full render settles every conflict afresh (the claims are rebuilt on commit).
        let mut pending = self.render(snap, owners, true);
        let mut new = Desired::default();
        for piece in pending.pieces.iter().filter_map(|(_, p)| p.as_ref()) {
            new.merge(piece);
        }
        let old = kernel(&new);
        let mut phases = Phases::default();
        phases.add(&old, &new);
        pending.tx = self.transaction(phases, true);
        pending
    }

    fn transaction(&self, phases: Phases, with_table: bool) -> Transaction {
        let mut tx = Transaction::new(self.cfg.family, TABLE);
        let ops = phases.into_ops();
        if with_table {
            tx.push(Op::AddTable {
                comment: Some("rules for sluice-proxy".into()),
            });
        }
        tx.ops.extend(ops);
        tx
    }

    /// Renders the new piece of each owner (`None`: the owner is gone).
    fn render(&self, snap: &Snapshot, owners: BTreeSet<Owner>, full: bool) -> Pending {
        let mut pending = Pending {
            tx: Transaction::default(),
            pieces: Vec::new(),
            full,
            warnings: Vec::new(),
        };
        let mut claims = Claims {
            state: self,
            touched: &owners,
            full,
            taken: HashMap::new(),
        };
        for owner in owners.iter().cloned() {
            let piece = match &owner {
                Owner::Base => Some(render_base(&self.cfg)),
                Owner::Service(s) => {
                    let ips: Vec<_> = snap
                        .ports_of(s)
                        .next()
                        .map(|p| p.cluster_ips.clone())
                        .unwrap_or_default();
                    (!ips.is_empty()).then(|| render_cluster_ips(&ips))
                }
                Owner::Port(name) => self.render_port(snap, name),
            };
            let piece = piece.map(|p| claims.claim(&owner, p, &mut pending.warnings));
            pending.pieces.push((owner, piece));
        }
        pending
    }

    fn render_port(&self, snap: &Snapshot, name: &ServicePortName) -> Option<Desired> {
        let port = snap.service_port(name)?;
        let cat = snap.categorize(name)?;
        Some(render_port(&self.cfg, port, &cat))
    }
}

/// Who gets each map key in one render: the first claimant of this render, else (in a
/// partial sync) the holder among the owners not re-rendered; the kernel takes one verdict
/// per key, so the others drop theirs with a warning. Plain set elements are shared. A
/// loser that is not re-rendered when the holder lets go gets the key at the next full sync.
struct Claims<'a> {
    state: &'a NftState,
    touched: &'a BTreeSet<Owner>,
    full: bool,
    taken: HashMap<(String, ElemKey), Owner>,
}

impl Claims<'_> {
    fn claim(&mut self, owner: &Owner, mut piece: Desired, warnings: &mut Vec<String>) -> Desired {
        for (set, elems) in &mut piece.elements {
            elems.retain(|key, e| {
                if e.verdict.is_none() {
                    return true;
                }
                let k = (set.clone(), key.clone());
                let holder = self
                    .taken
                    .get(&k)
                    .cloned()
                    .or_else(|| self.untouched_holder(&k));
                match holder {
                    Some(h) if &h != owner => {
                        warnings.push(format!(
                            "{owner:?} and {h:?} both claim {set} element {key:?}; {h:?} keeps it"
                        ));
                        false
                    }
                    _ => {
                        self.taken.insert(k, owner.clone());
                        true
                    }
                }
            });
        }
        piece
    }

    fn untouched_holder(&self, k: &(String, ElemKey)) -> Option<Owner> {
        if self.full {
            return None;
        }
        let holders = self.state.claims.get(k)?;
        holders.iter().find(|o| !self.touched.contains(*o)).cloned()
    }
}

impl Pending {
    /// Records the pieces as programmed: call once the kernel accepted [`Self::tx`].
    pub fn commit(self, state: &mut NftState) {
        if self.full {
            state.claims.clear();
        }
        for (owner, piece) in self.pieces {
            if let Some(old) = state.pieces.remove(&owner) {
                for (set, elems) in old.elements {
                    for key in elems.into_keys() {
                        let k = (set.clone(), key);
                        if let Some(holders) = state.claims.get_mut(&k) {
                            holders.remove(&owner);
                            if holders.is_empty() {
                                state.claims.remove(&k);
                            }
                        }
                    }
                }
            }
            if let Some(p) = piece {
                for (set, elems) in &p.elements {
                    for key in elems.keys() {
                        // Rendering kept a map key in one piece only.
                        let k = (set.clone(), key.clone());
                        state.claims.entry(k).or_default().insert(owner.clone());
                    }
                }
                state.pieces.insert(owner, p);
            }
        }
    }

    /// Number of operations, for the sync span.
    pub fn len(&self) -> usize {
        self.tx.ops.len()
    }

    /// True when the kernel needs no change.
    pub fn is_empty(&self) -> bool {
        self.tx.ops.iter().all(|o| matches!(o, Op::AddTable { .. }))
    }
}

/// `old` without the elements it gives up (absent from `new`) that another owner still
/// holds, so the diff does not delete them.
fn without_shared(old: &Desired, new: &Desired, kept: &HashSet<(String, ElemKey)>) -> Desired {
    let mut out = old.clone();
    for (set, elems) in &mut out.elements {
        let mine = new.elements.get(set);
        elems.retain(|k, _| {
            mine.is_some_and(|m| m.contains_key(k)) || !kept.contains(&(set.clone(), k.clone()))
        });
    }
    out
}

/// `old` without the shared (plain set) keys an earlier owner of this transaction already
/// deletes: two owners giving up one key (a Service's TCP and UDP ports share the `hairpin`
/// element of an endpoint port) must delete it once — the kernel refuses a second delete
/// (ENOENT) and with it the whole transaction. Records the keys `old` → `new` deletes.
fn without_deleted(
    mut old: Desired,
    new: &Desired,
    deleted: &mut HashSet<(String, ElemKey)>,
) -> Desired {
    for (set, elems) in &mut old.elements {
        let mine = new.elements.get(set);
        elems.retain(|k, e| {
            if e.verdict.is_some() || mine.is_some_and(|m| m.contains_key(k)) {
                return true;
            }
            deleted.insert((set.clone(), k.clone()))
        });
    }
    old
}

/// Counts of what a transaction does, for the sync's tracing span.
pub fn summary(tx: &Transaction) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for op in &tx.ops {
        let k = match op {
            Op::AddTable { .. } | Op::DeleteTable => "table",
            Op::AddChain(_) => "chains_added",
            Op::FlushChain(_) => "chains_flushed",
            Op::DeleteChain(_) => "chains_deleted",
            Op::AddRule { .. } => "rules",
            Op::AddSet(_) | Op::DeleteSet(_) | Op::FlushSet(_) => "sets",
            Op::AddElements { elements, .. } | Op::DeleteElements { elements, .. } => {
                *out.entry("elements").or_default() += elements.len();
                continue;
            }
            #[allow(
                unreachable_patterns,
                reason = "the IR may grow ops the summary does not count"
            )]
            _ => "other",
        };
        *out.entry(k).or_default() += 1;
    }
    out
}

/// The whole table `cfg` renders for `snap`, as one piece (for `explain` and the tracer).
pub fn rendered(cfg: &NftConfig, snap: &Snapshot) -> Desired {
    let mut state = NftState::new(cfg.clone());
    state
        .plan_full(snap, Some(Desired::default()))
        .commit(&mut state);
    state.programmed()
}
