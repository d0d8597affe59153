//! What the backend believes is programmed, one [`Footprint`] per owner (the base ruleset,
//! each Service's ClusterIPs, each Service port), and the planning of a sync against it. A
//! partial sync re-renders and diffs only the owners of the changed ports; a full sync
//! renders every owner one at a time and diffs it against what the kernel reports
//! (repairing drift), so neither the rendered table nor a copy of it is ever held whole; a
//! large one is sent in parts of whole Services ([`NftState::plan_full_parts`]), so neither
//! are its operations nor their netlink encoding.
//! Nothing is recorded until the kernel accepted a transaction ([`NftState::record`]): a
//! failed apply leaves the beliefs of what it would have changed as they were, and the
//! next (full) sync reads the truth back.

use std::collections::{BTreeMap, BTreeSet};

use sluice_model::service::{ServiceName, ServicePort, ServicePortName};
use sluice_nft::{Op, TableState, Transaction};

use super::base::{render_base, render_hooks};
use super::ctx::{NftConfig, TABLE};
use super::desired::{ChainBody, Desired, ElemKey, Phases};
use super::port::{render_cluster_ips, render_port};
use super::print::{ByHash, Footprint, HashSet, Old, hash_of, prints_of, value_hash};
use sluice_proxy_core::{Changes, Snapshot};

/// Who a piece of the ruleset belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Owner {
    /// Maps, sets, dispatch chains.
    Base,
    /// The base chains at the netfilter hooks, through which alone packets (and the
    /// kernel's validation of the chain graph) enter the table. Last in a full sync: every
    /// commit that adds jumps makes nf_tables walk the graph reachable from the hooks, so
    /// a table created in parts is walked once, when its last part hooks it in, instead of
    /// once per part (~120 ms of a 10,000-Service cold sync) — and no Service is live
    /// before all are, as with one transaction.
    Hooks,
    /// A Service's `cluster-ips` elements (shared by its ports).
    Service(ServiceName),
    /// Everything else of one port.
    Port(ServicePortName),
}

/// An element's identity across owners: a hash of its set and key (64 bits: a collision
/// is as likely as a random 64-bit match, and costs a missed conflict warning).
type ClaimKey = u64;

fn claim_key(set: &str, key: &ElemKey) -> ClaimKey {
    hash_of(&(set, key))
}

/// Who holds each element key.
type ClaimMap = ByHash<Vec<Owner>>;

/// What a full sync is planned against.
#[derive(Debug)]
pub(crate) enum Against {
    /// What the kernel reported ([`Old::read_back`]): drift is repaired.
    Kernel(Box<Old>),
    /// The backend's own record (the generation vouches that nobody else committed).
    Record,
}

/// Where an owner goes in a full sync: the base ruleset first, then Service by Service —
/// its ClusterIPs, then its ports — so a part boundary before a Service never splits one;
/// the hooks last.
fn by_service(o: &Owner) -> (u8, Option<(&str, &str)>, Option<&ServicePortName>) {
    match o {
        Owner::Base => (0, None, None),
        Owner::Hooks => (2, None, None),
        Owner::Service(s) => (1, Some((&s.namespace, &s.name)), None),
        Owner::Port(p) => (1, Some((&p.namespace, &p.name)), Some(p)),
    }
}

/// One part of a full sync being planned.
struct Part {
    phases: Phases,
    pieces: Vec<(Owner, Option<Footprint>)>,
    warnings: Vec<String>,
    /// The first part (it creates the table).
    first: bool,
}

impl Part {
    fn new(first: bool) -> Self {
        Self {
            phases: Phases::default(),
            pieces: Vec::new(),
            warnings: Vec::new(),
            first,
        }
    }
}

/// One family's programmed state.
#[derive(Debug)]
pub struct NftState {
    cfg: NftConfig,
    pieces: foldhash::HashMap<Owner, Footprint>,
    /// Which owners hold each element key. A map key has one holder (two Services claiming
    /// one external IP and port must not fail the whole transaction: the first keeps it); a
    /// plain set's key may be shared (one endpoint in two Services' hairpin elements) and
    /// is only deleted when its last holder lets go.
    claims: ClaimMap,
    /// Parts of a full sync were recorded since the last [`Self::record`].
    full_recorded: bool,
}

/// A planned sync: the transaction and the footprints to record once it is applied.
#[derive(Debug)]
pub struct Pending {
    /// What to send to the kernel.
    pub tx: Transaction,
    pieces: Vec<(Owner, Option<Footprint>)>,
    /// A full sync: every owner was rendered.
    full: bool,
    /// Conflicts found while rendering, for the log.
    pub warnings: Vec<String>,
}

impl NftState {
    /// Nothing programmed yet.
    pub fn new(cfg: NftConfig) -> Self {
        Self {
            cfg,
            pieces: Default::default(),
            claims: ClaimMap::default(),
            full_recorded: false,
        }
    }

    /// The settings this state renders with.
    pub fn config(&self) -> &NftConfig {
        &self.cfg
    }

    /// The whole table `snap` renders to, as one piece (for the tracer, `explain` and
    /// tests; the daemon never builds it).
    pub fn render_all(&self, snap: &Snapshot) -> Desired {
        let owners = self.full_owners(snap);
        let mut claims = Claims::full();
        let mut all = Desired::default();
        for (owner, port) in &owners {
            if let Some(piece) = self.render_one(snap, owner, *port) {
                all.merge(&claims.claim(owner, piece, &mut Vec::new()));
            }
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
        let with_table = !self.pieces.contains_key(&Owner::Base);
        for fixed in [Owner::Base, Owner::Hooks] {
            if !self.pieces.contains_key(&fixed) {
                owners.insert(fixed);
            }
        }
        let mut warnings = Vec::new();
        let mut claims = Claims::partial(self, &owners);
        let rendered: Vec<(Owner, Option<Desired>)> = (owners.iter())
            .map(|o| {
                let piece = self.render_one(snap, o, None);
                let piece = piece.map(|p| claims.claim(o, p, &mut warnings));
                (o.clone(), piece)
            })
            .collect();
        let kept = self.held_after(&rendered);
        let mut phases = Phases::default();
        let mut pieces = Vec::with_capacity(rendered.len());
        for (owner, new) in rendered {
            let mut old = Old::of_prints(self.pieces.get(&owner));
            let print = self.diff_piece(&owner, new.as_ref(), &mut phases, &mut old);
            phases.finish(old, |set, key| kept.contains(&claim_key(set, key)));
            pieces.extend(self.to_record(&owner, print));
        }
        Pending {
            tx: self.transaction(phases, with_table),
            pieces,
            full: false,
            warnings,
        }
    }

    /// `owner`'s new footprint (`None`: it is gone) as a piece to record, unless it is the
    /// one recorded: most owners of a full resync, whose single part held a second copy of
    /// every footprint until it was recorded (~6 MiB of its peak at 10,000 Services), and
    /// re-recording them rebuilt every claim (a quarter of its time; issue 14).
    fn to_record(
        &self,
        owner: &Owner,
        print: Option<Footprint>,
    ) -> Option<(Owner, Option<Footprint>)> {
        (self.pieces.get(owner) != print.as_ref()).then(|| (owner.clone(), print))
    }

    /// Diffs `owner`'s new piece (`None`: it is gone) into `phases` against `old` and
    /// returns the piece's footprint. A chain's rule fingerprints are formatted at most once:
    /// the diff may need them (a chain `old` has whose rules changed or are not known), the
    /// footprint needs them for every chain — formatted twice, they were a tenth of a
    /// restart's first sync (issue 14).
    fn diff_piece(
        &self,
        owner: &Owner,
        new: Option<&Desired>,
        phases: &mut Phases,
        old: &mut Old,
    ) -> Option<Footprint> {
        let empty = Desired::default();
        // A chain's fingerprints are known when its rules hash as recorded.
        let recorded = self.pieces.get(owner);
        let known = |name: &str, h: u64| {
            let chain = recorded?.chain(name)?;
            (chain.rules == h).then(|| chain.prints.clone())
        };
        let mut formatted: Vec<(String, u64, Box<[u64]>)> = Vec::new();
        let mut prints = |name: &str, body: &ChainBody, h: u64| {
            known(name, h).unwrap_or_else(|| {
                let p = prints_of(self.cfg.family, &body.rules);
                formatted.push((name.to_owned(), h, p.clone()));
                p
            })
        };
        phases.add_against(old, new.unwrap_or(&empty), &mut prints);
        let again = |name: &str, h: u64| {
            (formatted.iter())
                .find(|(n, fh, _)| n == name && *fh == h)
                .map(|(_, _, p)| p.clone())
        };
        new.map(|piece| {
            Footprint::of(self.cfg.family, piece, |name, h| {
                known(name, h).or_else(|| again(name, h))
            })
        })
    }

    /// Shared (plain set) keys the owners rendered give up that stay programmed anyway:
    /// held by an owner not re-rendered, or by one of the new pieces. A map key has one
    /// holder: one that changes hands is deleted and re-added (the transaction's phases
    /// order that). Looks only at what the touched owners held: O(what changed).
    fn held_after(&self, rendered: &[(Owner, Option<Desired>)]) -> HashSet {
        let touched: BTreeSet<&Owner> = rendered.iter().map(|(o, _)| o).collect();
        let new_keys: HashSet = (rendered.iter())
            .filter_map(|(_, p)| p.as_ref())
            .flat_map(|p| {
                (p.elements.iter()).flat_map(|(set, e)| e.keys().map(move |k| claim_key(set, k)))
            })
            .collect();
        let plain = value_hash(None, None);
        let mut kept = HashSet::default();
        for owner in &touched {
            let Some(old) = self.pieces.get(*owner) else {
                continue;
            };
            for (set, key, _) in old.keys().filter(|(_, _, v)| *v == plain) {
                let k = claim_key(set, &key);
                let elsewhere =
                    (self.claims.get(&k)).is_some_and(|h| h.iter().any(|o| !touched.contains(o)));
                if elsewhere || new_keys.contains(&k) {
                    kept.insert(k);
                }
            }
        }
        kept
    }

    /// Plans a full sync: every owner re-rendered, diffed against `kernel` (what the kernel
    /// has, when it could be read) or else against the beliefs; one transaction.
    pub fn plan_full(&mut self, snap: &Snapshot, kernel: Option<TableState>) -> Pending {
        let against = match kernel {
            Some(table) => Against::Kernel(Box::new(Old::of_kernel(table))),
            None => Against::Record,
        };
        self.plan_full_whole(snap, against)
    }

    /// Plans a full sync against what the kernel reports (`None`: the table does not
    /// exist), as one transaction.
    pub fn plan_full_kernel(&mut self, snap: &Snapshot, kernel: Option<TableState>) -> Pending {
        let old = kernel.map(Old::of_kernel).unwrap_or_default();
        self.plan_full_whole(snap, Against::Kernel(Box::new(old)))
    }

    fn plan_full_whole(&mut self, snap: &Snapshot, against: Against) -> Pending {
        let mut whole = None;
        let unbounded = self.plan_full_parts(snap, against, usize::MAX, &mut |p| {
            whole = Some(p);
            Ok::<_, std::convert::Infallible>(Vec::new())
        });
        let Ok(()) = unbounded;
        whole.expect("an unbounded full plan is one part")
    }

    /// The owners of a full sync in [`by_service`] order: the snapshot's, each Service's
    /// and port's with the port it renders from (a Service's first), and those recorded
    /// that it no longer has (their pieces go).
    fn full_owners<'s>(&self, snap: &'s Snapshot) -> Vec<(Owner, Option<&'s ServicePort>)> {
        // At most a Service and a port per port: sized once, not doubled into.
        let mut owners = Vec::with_capacity(2 * snap.len() + 2);
        owners.push((Owner::Base, None));
        // The snapshot's ports come sorted by name: Service by Service, as `by_service` wants.
        for port in snap.service_ports() {
            let service = port.name.service();
            let same =
                |p: &ServicePortName| p.namespace == service.namespace && p.name == service.name;
            if !matches!(owners.last(), Some((Owner::Port(p), _)) if same(p)) {
                owners.push((Owner::Service(service), Some(port)));
            }
            owners.push((Owner::Port(port.name.clone()), Some(port)));
        }
        owners.push((Owner::Hooks, None));
        // Owners recorded that the snapshot no longer has are rare (a sync that failed after
        // a deletion): counted first, so the record is searched, and the list sorted, only
        // when there are some (both were a tenth of a full resync that reads back, issue 14).
        let held = (owners.iter())
            .filter(|(o, _)| self.pieces.contains_key(o))
            .count();
        if held < self.pieces.len() {
            let gone = self.pieces.keys().filter(|o| match o {
                Owner::Base | Owner::Hooks => false,
                Owner::Service(s) => snap.ports_of(s).next().is_none(),
                Owner::Port(p) => snap.service_port(p).is_none(),
            });
            owners.extend(gone.map(|o| (o.clone(), None)));
            owners.sort_unstable_by(|(a, _), (b, _)| by_service(a).cmp(&by_service(b)));
        }
        debug_assert!(owners.is_sorted_by(|(a, _), (b, _)| by_service(a) <= by_service(b)));
        owners
    }

    /// Plans a full sync in parts of about `limit` operations (elements counted one by one)
    /// and hands each to `send` as it is complete, so the operations and the encoded batch
    /// of a large sync are never held whole (issue 14: at 10,000 Services they were ~22 and
    /// ~21 MiB, together the daemon's peak). A part holds whole Services — a Service's
    /// ClusterIP elements with every port's chains and map elements — so no VIP is ever
    /// half programmed; the base ruleset comes first, the hooks ([`Owner::Hooks`]) and the
    /// deletions of what nobody owns any more last. `send` must apply the parts in order (a
    /// later part's rules jump to chains an earlier part created); it may apply one while
    /// the next is planned. It returns the parts the kernel accepted since it was last
    /// called, which are recorded at once; the caller records the rest, and ends the sync,
    /// with [`Self::record`].
    pub(crate) fn plan_full_parts<E>(
        &mut self,
        snap: &Snapshot,
        against: Against,
        limit: usize,
        send: &mut dyn FnMut(Pending) -> Result<Vec<Pending>, E>,
    ) -> Result<(), E> {
        let mut old = match against {
            Against::Kernel(old) => *old,
            Against::Record => Old::of_prints(self.pieces.values()),
        };
        let owners = self.full_owners(snap);
        // Room for every owner at once: a map that doubles holds its old and new buckets
        // together, the peak of a large sync.
        self.pieces
            .reserve(owners.len().saturating_sub(self.pieces.len()));
        // A full render settles every conflict afresh (the record's claims follow).
        let mut claims = Claims::full();
        let mut part = Part::new(true);
        for (owner, port) in &owners {
            // The first part is small: the kernel starts on it while the next is planned.
            let cap = if part.first { limit / 8 } else { limit };
            if part.phases.weight() >= cap && !matches!(owner, Owner::Port(_)) {
                let next = Part::new(false);
                let accepted = send(self.part_pending(std::mem::replace(&mut part, next)))?;
                self.record_accepted(accepted);
            }
            let piece = self.render_one(snap, owner, *port);
            let piece = piece.map(|p| claims.claim(owner, p, &mut part.warnings));
            // A gone owner's leftovers are deleted at the end, with everything else `old`
            // still holds.
            let print = match &piece {
                Some(p) => self.diff_piece(owner, Some(p), &mut part.phases, &mut old),
                None => None,
            };
            part.pieces.extend(self.to_record(owner, print));
        }
        part.phases.finish(old, |_, _| false);
        let accepted = send(self.part_pending(part))?;
        self.record_accepted(accepted);
        Ok(())
    }

    fn part_pending(&self, part: Part) -> Pending {
        Pending {
            tx: self.transaction(part.phases, part.first),
            pieces: part.pieces,
            full: true,
            warnings: part.warnings,
        }
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

    /// Renders the new piece of one owner (`None`: the owner is gone); `port` is the one
    /// it renders from when the caller has it (else it is looked up).
    fn render_one(
        &self,
        snap: &Snapshot,
        owner: &Owner,
        port: Option<&ServicePort>,
    ) -> Option<Desired> {
        match owner {
            Owner::Base => Some(render_base(&self.cfg)),
            Owner::Hooks => Some(render_hooks()),
            Owner::Service(s) => {
                let port = port.or_else(|| snap.ports_of(s).next());
                let ips = port.map(|p| p.cluster_ips.clone()).unwrap_or_default();
                (!ips.is_empty()).then(|| render_cluster_ips(&ips))
            }
            Owner::Port(name) => {
                let port = port.or_else(|| snap.service_port(name))?;
                Some(render_port(&self.cfg, port, &snap.categorize_port(port)))
            }
        }
    }
}

/// What a state believes is programmed, in numbers (tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Believed {
    pub(crate) chains: BTreeSet<String>,
    pub(crate) elements: BTreeMap<String, usize>,
}

#[cfg(test)]
impl NftState {
    /// Whether the claims are exactly those the recorded pieces make.
    pub(crate) fn claims_match_pieces(&self) -> bool {
        let mut derived = ClaimMap::default();
        for (owner, piece) in &self.pieces {
            for (set, key, _) in piece.keys() {
                claim(&mut derived, owner, set, &key);
            }
        }
        let sorted = |m: &ClaimMap| -> BTreeMap<ClaimKey, BTreeSet<Owner>> {
            (m.iter())
                .map(|(k, v)| (*k, v.iter().cloned().collect()))
                .collect()
        };
        sorted(&derived) == sorted(&self.claims)
    }

    pub(crate) fn believed(&self) -> Believed {
        let mut b = Believed {
            chains: BTreeSet::new(),
            elements: BTreeMap::new(),
        };
        let mut keys = BTreeSet::new();
        for p in self.pieces.values() {
            b.chains.extend(p.chains.iter().map(|c| c.name.to_string()));
            keys.extend(p.keys().map(|(set, key, _)| (set, key)));
        }
        for (set, _) in keys {
            *b.elements.entry(set.to_owned()).or_default() += 1;
        }
        b
    }
}

/// Who gets each map key in one render: the first claimant of this render, else (in a
/// partial sync) the holder among the owners not re-rendered; the kernel takes one verdict
/// per key, so the others drop theirs with a warning. Plain set elements are shared. A
/// loser that is not re-rendered when the holder lets go gets the key at the next full sync.
struct Claims<'a> {
    /// A partial sync's: the recorded holders, and the owners re-rendered.
    kept: Option<(&'a ClaimMap, &'a BTreeSet<Owner>)>,
    /// The owners rendered, by reference: a full render claims ~20,000 keys.
    taken: ByHash<&'a Owner>,
}

impl<'a> Claims<'a> {
    /// A full render's: every conflict settled afresh.
    fn full() -> Self {
        Self {
            kept: None,
            taken: ByHash::default(),
        }
    }

    /// A partial render's, of the owners `touched`.
    fn partial(state: &'a NftState, touched: &'a BTreeSet<Owner>) -> Self {
        Self {
            kept: Some((&state.claims, touched)),
            taken: ByHash::default(),
        }
    }

    fn claim(
        &mut self,
        owner: &'a Owner,
        mut piece: Desired,
        warnings: &mut Vec<String>,
    ) -> Desired {
        for (set, elems) in &mut piece.elements {
            elems.retain(|key, e| {
                if e.verdict.is_none() && e.data.is_none() {
                    return true;
                }
                let k = claim_key(set, key);
                let holder = (self.taken.get(&k).copied()).or_else(|| self.untouched_holder(k));
                match holder {
                    Some(h) if h != owner => {
                        warnings.push(format!(
                            "{owner:?} and {h:?} both claim {set} element {key:?}; {h:?} keeps it"
                        ));
                        false
                    }
                    _ => {
                        self.taken.insert(k, owner);
                        true
                    }
                }
            });
        }
        piece
    }

    fn untouched_holder(&self, k: ClaimKey) -> Option<&'a Owner> {
        let (claims, touched) = self.kept?;
        let holders = claims.get(&k)?;
        holders.iter().find(|o| !touched.contains(*o))
    }
}

impl Pending {
    /// Records the pieces as programmed: call once the kernel accepted [`Self::tx`].
    pub fn commit(self, state: &mut NftState) {
        state.record(vec![self], true);
    }

    /// How many owners' footprints it would record (tests).
    #[cfg(test)]
    pub(crate) fn to_record_len(&self) -> usize {
        self.pieces.len()
    }

    /// True when the kernel needs no change.
    pub fn is_empty(&self) -> bool {
        self.tx.ops.iter().all(|o| matches!(o, Op::AddTable { .. }))
    }
}

impl NftState {
    /// Records the parts of one sync the kernel accepted, in order, and ends the sync.
    /// `complete`: every part was; a full sync's maps are then sized to what they hold.
    pub fn record(&mut self, parts: Vec<Pending>, complete: bool) {
        self.record_accepted(parts);
        // The maps grew by doubling during a full sync (~2.5 MiB at 10,000 Services).
        if std::mem::take(&mut self.full_recorded) && complete {
            self.pieces.shrink_to_fit();
            self.claims.shrink_to_fit();
        }
    }

    /// Records parts the kernel accepted, owner by owner (a full sync's while it goes on):
    /// the claims always stay those the recorded pieces make, so a sync that fails half-way
    /// leaves nothing to repair.
    pub(crate) fn record_accepted(&mut self, parts: Vec<Pending>) {
        for part in parts {
            self.full_recorded |= part.full;
            for (owner, piece) in part.pieces {
                self.record_piece(owner, piece);
            }
        }
    }

    /// Replaces `owner`'s footprint and its claims (the plans leave out unchanged ones:
    /// [`Self::to_record`]).
    fn record_piece(&mut self, owner: Owner, piece: Option<Footprint>) {
        if let Some(old) = self.pieces.remove(&owner) {
            for (set, key, _) in old.keys() {
                let k = claim_key(set, &key);
                if let Some(holders) = self.claims.get_mut(&k) {
                    holders.retain(|o| o != &owner);
                    if holders.is_empty() {
                        self.claims.remove(&k);
                    }
                }
            }
        }
        if let Some(p) = piece {
            for (set, key, _) in p.keys() {
                claim(&mut self.claims, &owner, set, &key);
            }
            self.pieces.insert(owner, p);
        }
    }
}

/// Adds `owner` to the holders of `set`'s `key` (rendering kept a map key in one piece).
fn claim(claims: &mut ClaimMap, owner: &Owner, set: &str, key: &ElemKey) {
    // Nearly every key has one holder: room for one, not the default four.
    let holders = (claims.entry(claim_key(set, key))).or_insert_with(|| Vec::with_capacity(1));
    if !holders.contains(owner) {
        holders.push(owner.clone());
    }
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
    NftState::new(cfg.clone()).render_all(snap)
}
