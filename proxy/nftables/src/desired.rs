//! A piece of ruleset — sets, chains with their rules, map elements — and the diff between
//! two pieces as one ordered list of nftables operations. The backend keeps one piece per
//! owner (the base ruleset, each Service, each Service port), so a sync that changes one
//! Service port diffs only that port's piece: O(what changed).

use std::collections::{BTreeMap, BTreeSet};

use sluice_nft::{ChainDef, Element, KeyValue, Op, Rule, SetDef};

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

/// Operations sorted into the phases of a transaction: new sets, new chains, refilled chains,
/// element deletions, element additions, stale chains flushed, stale chains deleted, stale
/// sets deleted. Diffs of several pieces (owners) go into one `Phases`, so an element one
/// owner gives up is deleted before another owner's element with the same key is added.
#[derive(Debug, Default)]
pub struct Phases {
    phases: [Vec<Op>; 8],
}

impl Phases {
    /// Adds the operations that turn `old` into `new`.
    pub fn add(&mut self, old: &Desired, new: &Desired) {
        let [
            sets,
            chains,
            refills,
            elem_del,
            elem_add,
            flush,
            chain_del,
            set_del,
        ] = &mut self.phases;
        for (name, set) in &new.sets {
            if old.sets.get(name) != Some(set) {
                sets.push(Op::AddSet(set.clone()));
            }
        }
        for (name, chain) in &new.chains {
            let old_chain = old.chains.get(name);
            if old_chain.is_none() {
                chains.push(Op::AddChain(chain.def.clone()));
            }
            if old_chain.map(|c| &c.rules) == Some(&chain.rules) {
                continue;
            }
            if old_chain.is_some_and(|c| !c.rules.is_empty()) {
                refills.push(Op::FlushChain(name.clone()));
            }
            refills.extend(chain.rules.iter().map(|r| Op::AddRule {
                chain: name.clone(),
                rule: r.clone(),
            }));
        }
        element_ops(old, new, elem_del, elem_add);
        for (name, chain) in &old.chains {
            if new.chains.contains_key(name) {
                continue;
            }
            if !chain.rules.is_empty() {
                flush.push(Op::FlushChain(name.clone()));
            }
            chain_del.push(Op::DeleteChain(name.clone()));
        }
        for name in old.sets.keys() {
            if !new.sets.contains_key(name) {
                set_del.push(Op::DeleteSet(name.clone()));
            }
        }
    }

    /// The operations, phase by phase.
    pub fn into_ops(self) -> Vec<Op> {
        self.phases.into_iter().flatten().collect()
    }
}

/// Deletions (removed keys and keys whose verdict changed) and additions.
fn element_ops(old: &Desired, new: &Desired, dels: &mut Vec<Op>, adds: &mut Vec<Op>) {
    let empty = BTreeMap::new();
    let sets: BTreeSet<&String> = old.elements.keys().chain(new.elements.keys()).collect();
    for set in sets {
        let (o, n) = (
            old.elements.get(set).unwrap_or(&empty),
            new.elements.get(set).unwrap_or(&empty),
        );
        let deleted: Vec<Element> = o
            .iter()
            .filter(|(k, e)| n.get(*k).is_none_or(|ne| ne.verdict != e.verdict))
            .map(|(_, e)| e.clone())
            .collect();
        // A set that is dropped takes its elements with it; only a surviving set's go one by one.
        let set_dropped = old.sets.contains_key(set) && !new.sets.contains_key(set);
        if !deleted.is_empty() && !set_dropped {
            dels.push(Op::DeleteElements {
                set: set.clone(),
                elements: deleted,
            });
        }
        let added: Vec<Element> = n
            .iter()
            .filter(|(k, e)| o.get(*k).is_none_or(|oe| oe.verdict != e.verdict))
            .map(|(_, e)| e.clone())
            .collect();
        if !added.is_empty() {
            adds.push(Op::AddElements {
                set: set.clone(),
                elements: added,
            });
        }
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
