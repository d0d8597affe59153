//! A piece of ruleset — sets, chains with their rules, map elements — and the diff between
//! what is programmed and new pieces as one ordered list of nftables operations. The backend
//! renders one piece per owner (the base ruleset, each Service, each Service port) and keeps
//! only its [`Footprint`](crate::print::Footprint), so a sync that changes one Service port
//! diffs only that port's piece: O(what changed).

use std::collections::{BTreeMap, HashSet};

use sluice_nft::{ChainDef, Element, KeyValue, Op, Rule, SetDef};

use super::packed::key_at;
use super::print::{Old, hash_of, key_hash, value_hash};

/// A map or set element's identity: its key and, for interval sets, its prefix length.
pub type ElemKey = (Vec<KeyValue>, Option<u8>);

/// A chain and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBody {
    /// Name and hook.
    pub def: ChainDef,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

/// Part of a table's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Sets and maps defined by this piece.
    pub sets: BTreeMap<String, SetDef>,
    /// Chains defined by this piece.
    pub chains: BTreeMap<String, ChainBody>,
    /// Elements this piece puts into sets and maps (its own or others').
    pub elements: BTreeMap<String, BTreeMap<ElemKey, Element>>,
}

impl Desired {
    /// Adds a chain with its rules.
    pub fn chain(&mut self, def: ChainDef, rules: Vec<Rule>) {
        self.chains
            .insert(def.name.clone(), ChainBody { def, rules });
    }

    /// Adds a regular chain with its rules.
    pub fn regular(&mut self, name: &str, rules: Vec<Rule>) {
        self.chain(
            ChainDef {
                name: name.to_owned(),
                base: None,
            },
            rules,
        );
    }

    /// Adds a set or map.
    pub fn set(&mut self, def: SetDef) {
        self.sets.insert(def.name.clone(), def);
    }

    /// Adds an element to `set`.
    pub fn element(&mut self, set: &str, e: Element) {
        self.elements
            .entry(set.to_owned())
            .or_default()
            .insert((e.key.clone(), e.prefix), e);
    }

    /// Merges `other` into this piece (the union of pieces is the whole table).
    pub fn merge(&mut self, other: &Desired) {
        self.sets.extend(other.sets.clone());
        self.chains.extend(other.chains.clone());
        for (set, elems) in &other.elements {
            self.elements
                .entry(set.clone())
                .or_default()
                .extend(elems.clone());
        }
    }
}

/// The operations that turn `old` into `new`, ordered so that every object exists before it
/// is referenced and is unreferenced before it is deleted (see [`Phases`]).
pub fn diff(old: &Desired, new: &Desired) -> Vec<Op> {
    let mut phases = Phases::default();
    phases.add(old, new);
    phases.into_ops()
}

/// Gives a new chain's rule fingerprints: its name, body and rules hash.
pub(crate) type PrintsOf<'a> = dyn FnMut(&str, &ChainBody, u64) -> Box<[u64]> + 'a;

/// Operations sorted into the phases of a transaction: new sets, new chains, refilled chains,
/// element deletions, element additions, stale chains flushed, stale chains deleted, stale
/// sets deleted. Diffs of several pieces (owners) go into one `Phases`, so an element one
/// owner gives up is deleted before another owner's element with the same key is added;
/// elements are gathered per set, so a full sync sends one element message per set rather
/// than one per owner.
#[derive(Debug, Default)]
pub struct Phases {
    sets: Vec<Op>,
    chains: Vec<Op>,
    refills: Vec<Op>,
    elem_del: BTreeMap<String, Vec<Element>>,
    elem_add: BTreeMap<String, Vec<Element>>,
    flush: Vec<Op>,
    chain_del: Vec<Op>,
    set_del: Vec<Op>,
    /// The elements `elem_del` already holds: two owners giving up one shared key (a
    /// Service's TCP and UDP ports share the `hairpin` element of an endpoint port) delete
    /// it once — the kernel refuses a second delete (ENOENT) and with it the transaction.
    deleted: HashSet<(Box<str>, ElemKey)>,
}

impl Phases {
    /// Adds the operations that turn `old` into `new` (whole pieces; tests and tools).
    pub fn add(&mut self, old: &Desired, new: &Desired) {
        // The family only matters for kernel fingerprints, which this diff does not use.
        let mut before = Old::of_desired(sluice_nft::Family::Ip, old);
        self.add_against(&mut before, new, &mut |_, _, _| Box::default());
        self.finish(before, |_, _| false);
    }

    /// Adds the operations that turn what `old` has of `new`'s objects into `new`, and
    /// marks them in `old` as wanted ([`Self::finish`] deletes what nobody wanted).
    /// `prints` gives a new chain's rule fingerprints (name, body, rules hash) when `old`
    /// came from the kernel.
    pub(crate) fn add_against(&mut self, old: &mut Old, new: &Desired, prints: &mut PrintsOf<'_>) {
        for (name, set) in &new.sets {
            match old.sets.remove(name.as_str()) {
                Some(None) => {}
                Some(Some(h)) if h == hash_of(set) => {}
                _ => self.sets.push(Op::AddSet(set.clone())),
            }
        }
        for (name, chain) in &new.chains {
            let h = hash_of(&chain.rules);
            match old.chains.remove(name.as_str()) {
                None => self.chains.push(Op::AddChain(chain.def.clone())),
                Some(c) if c.same(chain, h, || prints(name, chain, h)) => continue,
                Some(c) if c.len > 0 => self.refills.push(Op::FlushChain(name.clone())),
                Some(_) => {}
            }
            self.refills.extend(chain.rules.iter().map(|r| Op::AddRule {
                chain: name.clone(),
                rule: r.clone(),
            }));
        }
        for (set, elems) in &new.elements {
            let mut before = old.elements.get_mut(set.as_str());
            let (mut dels, mut adds) = (Vec::new(), Vec::new());
            for (k, e) in elems {
                let v = value_hash(e.verdict.as_ref(), e.data);
                match before.as_mut().and_then(|b| b.get_mut(key_hash(k))) {
                    Some(o) if o.verdict == v => o.seen = true,
                    Some(o) => {
                        if !o.seen {
                            dels.push(Element {
                                prefix: e.prefix,
                                ..Element::key(e.key.clone())
                            });
                        }
                        (o.verdict, o.seen) = (v, true);
                        adds.push(e.clone());
                    }
                    None => {
                        if old.added.insert(hash_of(&(set.as_str(), k))) {
                            adds.push(e.clone());
                        }
                    }
                }
            }
            if !dels.is_empty() {
                self.elem_del.entry(set.clone()).or_default().extend(dels);
            }
            if !adds.is_empty() {
                self.elem_add.entry(set.clone()).or_default().extend(adds);
            }
        }
    }

    /// Deletes what `old` has that no piece added since it was built wanted, except the
    /// elements `keep` names (held by someone else); a set that goes takes its elements.
    pub(crate) fn finish(&mut self, old: Old, keep: impl Fn(&str, &ElemKey) -> bool) {
        let mut sets: Vec<Box<str>> = old.sets.into_keys().collect();
        sets.sort();
        let mut elements: Vec<_> = old.elements.into_iter().collect();
        elements.sort_by(|a, b| a.0.cmp(&b.0));
        for (set, elems) in elements {
            if sets.binary_search(&set).is_ok() {
                continue;
            }
            let gone: Vec<Element> = (elems.into_values())
                .filter(|e| !e.seen)
                .filter_map(|e| key_at(&old.keys, e.at as usize))
                .filter(|k| !keep(&set, k))
                .filter(|k| self.deleted.insert((set.clone(), k.clone())))
                .map(|(key, prefix)| Element {
                    prefix,
                    ..Element::key(key)
                })
                .collect();
            if !gone.is_empty() {
                self.elem_del.entry(set.into()).or_default().extend(gone);
            }
        }
        let mut chains: Vec<_> = old.chains.into_iter().collect();
        chains.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, chain) in chains {
            if chain.len > 0 {
                self.flush.push(Op::FlushChain(name.clone().into()));
            }
            self.chain_del.push(Op::DeleteChain(name.into()));
        }
        (self.set_del).extend(sets.into_iter().map(|s| Op::DeleteSet(s.into())));
    }

    /// How much it holds: operations, with each element counted (what a part of a full
    /// sync is bounded by).
    pub fn weight(&self) -> usize {
        let elements = |m: &BTreeMap<String, Vec<Element>>| m.values().map(Vec::len).sum::<usize>();
        let ops = [
            &self.sets,
            &self.chains,
            &self.refills,
            &self.flush,
            &self.chain_del,
        ];
        ops.iter().map(|o| o.len()).sum::<usize>()
            + self.set_del.len()
            + elements(&self.elem_del)
            + elements(&self.elem_add)
    }

    /// The operations, phase by phase.
    pub fn into_ops(self) -> Vec<Op> {
        let elements = |m: BTreeMap<String, Vec<Element>>, del: bool| {
            m.into_iter().map(move |(set, mut elements)| {
                elements.sort_unstable();
                match del {
                    true => Op::DeleteElements { set, elements },
                    false => Op::AddElements { set, elements },
                }
            })
        };
        let mut ops = self.sets;
        ops.extend(self.chains);
        ops.extend(self.refills);
        ops.extend(elements(self.elem_del, true));
        ops.extend(elements(self.elem_add, false));
        ops.extend(self.flush);
        ops.extend(self.chain_del);
        ops.extend(self.set_del);
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_nft::{KeyType, Stmt, Verdict};

    fn map() -> SetDef {
        SetDef::verdict_map("m", vec![KeyType::Port])
    }

    fn piece(chains: &[(&str, u32)], elems: &[(u16, &str)]) -> Desired {
        let mut d = Desired::default();
        for (name, mark) in chains {
            d.regular(name, vec![Rule::new(vec![Stmt::MarkOr(*mark)])]);
        }
        for (k, chain) in elems {
            d.element(
                "m",
                Element::map(vec![KeyValue::Port(*k)], Verdict::Goto((*chain).into())),
            );
        }
        d
    }

    #[test]
    fn identical_pieces_need_nothing() {
        let a = piece(&[("a", 1)], &[(1, "a")]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn a_new_piece_creates_chains_before_elements_point_at_them() {
        let mut new = piece(&[("a", 1)], &[(1, "a")]);
        new.set(map());
        let ops = diff(&Desired::default(), &new);
        let kinds: Vec<&str> = ops
            .iter()
            .map(|o| match o {
                Op::AddSet(_) => "set",
                Op::AddChain(_) => "chain",
                Op::AddRule { .. } => "rule",
                Op::AddElements { .. } => "elements",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["set", "chain", "rule", "elements"]);
    }

    #[test]
    fn changes_touch_only_what_changed_and_stale_chains_go_last() {
        let old = piece(&[("a", 1), ("b", 2), ("c", 3)], &[(1, "a"), (2, "b")]);
        let new = piece(&[("a", 1), ("b", 9)], &[(1, "a"), (2, "a"), (3, "b")]);
        let ops = diff(&old, &new);
        let text: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        assert!(
            matches!(&ops[0], Op::FlushChain(c) if c == "b"),
            "{text:#?}"
        );
        assert!(matches!(&ops[1], Op::AddRule { chain, .. } if chain == "b"));
        // Key 2 changed verdict: deleted then re-added; key 3 is new; key 1 untouched.
        assert!(matches!(&ops[2], Op::DeleteElements { elements, .. } if elements.len() == 1));
        assert!(matches!(&ops[3], Op::AddElements { elements, .. } if elements.len() == 2));
        assert_eq!(
            &ops[4..],
            [Op::FlushChain("c".into()), Op::DeleteChain("c".into())]
        );
    }
}
