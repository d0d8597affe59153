//! What the backend keeps of what it programmed: per owner a [`Footprint`] — set names,
//! chain names with a hash of their rules and each rule's kernel fingerprint, element keys
//! with a hash of their verdict — rather than a second copy of the ruleset. That is all a
//! diff needs: an unchanged chain is recognised by its hash (partial syncs) or by the
//! fingerprints the kernel reports (full syncs, without formatting the rules again), and
//! what goes away is deleted by name or key. At 10,000 Services × 3 endpoints the kept
//! state shrank from ~180 MiB of `Desired` pieces (a B-tree node per one-entry map) to a
//! few MiB (issue 14).
//!
//! [`Old`] is the "before" side of a diff, built from footprints or from the table the
//! kernel reports; [`crate::desired::Phases::add_against`] diffs rendered pieces against it
//! one owner at a time, so a full sync never holds the whole rendered table either.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use foldhash::quality::FixedState;

use sluice_nft::{
    ChainState, Element, ElementData, Family, Rule, SetState, TableSink, TableState, Verdict,
    fingerprint,
};

use super::desired::{ChainBody, Desired, ElemKey};
use super::packed::{Keys, Packed};

/// A stable in-process hash (foldhash's quality variant with a fixed seed): equal values,
/// equal hashes. It identifies rules, keys and verdicts, so it must spread like a random
/// 64-bit value; SipHash did too, at a tenth of a full resync that reads back (issue 14).
pub(crate) fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    FixedState::with_seed(0x9e37_79b9_7f4a_7c15).hash_one(value)
}

/// Keys that are [`hash_of`] values already are used as they are instead of hashed again
/// (a full sync's maps hold ~50,000 of them).
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by [`hash_of`] values.
pub(crate) type ByHash<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// A set of [`hash_of`] values.
pub(crate) type HashSet = std::collections::HashSet<u64, BuildHasherDefault<Prehashed>>;

/// The hash of an element's value, its verdict or its data (what makes two elements with
/// one key differ).
pub(crate) fn value_hash(verdict: Option<&Verdict>, data: Option<ElementData>) -> u64 {
    match data {
        None => hash_of(&verdict),
        Some(d) => hash_of(&(verdict, d)),
    }
}

/// One owner's programmed piece, compactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Sets and maps it defines: name and hash of the definition.
    pub(crate) sets: Vec<(Box<str>, u64)>,
    /// Chains it defines.
    pub(crate) chains: Vec<ChainPrint>,
    /// Elements it holds, per set: key and verdict hash, sorted by key.
    pub(crate) elements: Packed,
}

/// A programmed chain: its name, the hash of its rules as rendered, and each rule's kernel
/// fingerprint (what a full sync compares with the table read back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChainPrint {
    pub(crate) name: Box<str>,
    pub(crate) rules: u64,
    pub(crate) prints: Box<[u64]>,
}

impl Footprint {
    /// The footprint of `piece`; `known` gives the fingerprints of a chain whose rules hash
    /// as given when they are already known (so they are not formatted again).
    pub(crate) fn of(
        family: Family,
        piece: &Desired,
        known: impl Fn(&str, u64) -> Option<Box<[u64]>>,
    ) -> Self {
        let sets = (piece.sets.iter())
            .map(|(name, def)| (name.as_str().into(), hash_of(def)))
            .collect();
        let chains = (piece.chains.iter())
            .map(|(name, body)| {
                let rules = hash_of(&body.rules);
                let prints = known(name, rules).unwrap_or_else(|| prints_of(family, &body.rules));
                ChainPrint {
                    name: name.as_str().into(),
                    rules,
                    prints,
                }
            })
            .collect();
        let elements = Packed::new(piece.elements.iter().map(|(set, elems)| {
            let keys = elems
                .iter()
                .map(|(k, e)| (k, value_hash(e.verdict.as_ref(), e.data)));
            (set.as_str(), keys)
        }));
        Self {
            sets,
            chains,
            elements,
        }
    }

    /// The element keys it holds, with their set and verdict hash.
    pub(crate) fn keys(&self) -> Keys<'_> {
        self.elements.iter()
    }

    /// The chain called `name`.
    pub(crate) fn chain(&self, name: &str) -> Option<&ChainPrint> {
        self.chains.iter().find(|c| &*c.name == name)
    }
}

/// The kernel fingerprint of each rule.
pub(crate) fn prints_of(family: Family, rules: &[Rule]) -> Box<[u64]> {
    rules.iter().map(|r| fingerprint(family, r)).collect()
}

/// A chain on the "before" side of a diff.
#[derive(Debug)]
pub(crate) struct OldChain {
    /// The rules' hash when the chain is ours and known (from a footprint).
    rules: Option<u64>,
    /// Each rule's fingerprint (`None`: a rule we did not write), or nothing known when the
    /// chain cannot be ours (a foreign base chain).
    prints: Option<Vec<Option<u64>>>,
    /// Number of rules (a chain with rules is flushed before it is refilled or deleted).
    pub(crate) len: usize,
}

impl OldChain {
    /// Whether `new` has the same rules; `prints` gives the new rules' fingerprints.
    pub(crate) fn same(
        &self,
        new: &ChainBody,
        new_hash: u64,
        prints: impl FnOnce() -> Box<[u64]>,
    ) -> bool {
        if let Some(h) = self.rules {
            return h == new_hash;
        }
        match &self.prints {
            Some(old) if old.len() == new.rules.len() => {
                let new = prints();
                old.iter().zip(new.iter()).all(|(o, n)| *o == Some(*n))
            }
            _ => false,
        }
    }
}

/// An element on the "before" side: its verdict hash, whether a new piece of this diff
/// holds it (what is left unseen at the end is deleted), and where its key is packed.
#[derive(Debug)]
pub(crate) struct OldElem {
    pub(crate) verdict: u64,
    pub(crate) seen: bool,
    pub(crate) at: u32,
}

/// One set's elements on the "before" side, by [`key_hash`]: filled first, then sorted at
/// the first lookup and searched. A hash map's power-of-two table was up to half empty
/// (a 30,000-element set took 1.6 MiB instead of 0.7), at the peak of a full resync that
/// reads back (issue 14).
#[derive(Debug, Default)]
pub(crate) struct ElemIndex {
    entries: Vec<(u64, OldElem)>,
    sorted: bool,
}

impl ElemIndex {
    /// Adds the element whose key hashes to `key`. A later one with the same key replaces
    /// it, as a map's insert would: later elements' keys are packed further in (`at`).
    pub(crate) fn insert(&mut self, key: u64, elem: OldElem) {
        self.entries.push((key, elem));
        self.sorted = false;
    }

    /// The element whose key hashes to `key`.
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut OldElem> {
        self.settle();
        let at = (self.entries)
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()?;
        Some(&mut self.entries[at].1)
    }

    /// The elements, each key once, in no particular order.
    pub(crate) fn into_values(mut self) -> impl Iterator<Item = OldElem> {
        self.settle();
        self.entries.into_iter().map(|(_, e)| e)
    }

    /// The number of distinct keys.
    #[cfg(test)]
    pub(crate) fn len(&mut self) -> usize {
        self.settle();
        self.entries.len()
    }

    /// Sorts by key once after inserts. Of equal keys the last inserted, whose packed key
    /// is the furthest in (`at`), comes first and is the one kept.
    fn settle(&mut self) {
        if !self.sorted {
            (self.entries).sort_unstable_by_key(|(k, e)| (*k, std::cmp::Reverse(e.at)));
            self.entries.dedup_by_key(|(k, _)| *k);
            self.sorted = true;
        }
    }
}

/// An element key's hash: what the "before" side finds elements by.
pub(crate) fn key_hash(key: &ElemKey) -> u64 {
    hash_of(key)
}

/// The "before" side of a diff: what the kernel has, or what the footprints say. Elements
/// are found by the hash of their key and keep the key itself packed (what a deletion
/// needs): at 10,000 Services × 3 a read-back's ~50,000 elements as maps of `Vec` keys
/// were ~8 MiB, and their scattered blocks kept pages resident (issue 14).
#[derive(Debug, Default)]
pub(crate) struct Old {
    /// Sets: the definition's hash when known (`None`: as the kernel reports it, taken as
    /// equal to ours).
    pub(crate) sets: foldhash::HashMap<Box<str>, Option<u64>>,
    pub(crate) chains: foldhash::HashMap<Box<str>, OldChain>,
    /// Per set, elements by [`key_hash`].
    pub(crate) elements: foldhash::HashMap<Box<str>, ElemIndex>,
    /// The elements' keys, packed ([`crate::packed::push_key`]).
    pub(crate) keys: Vec<u8>,
    /// Elements the old side lacks that a new piece of this diff already added, as hashes
    /// of set and key: a plain set's key shared by two pieces is added once. (Keeping the
    /// keys themselves made a cold sync hold a second copy of every element: 8 MiB at
    /// 10,000 Services, issue 14. A map key has one holder per render, so only a plain
    /// set's key is ever added twice; a 64-bit collision would leave one element out.)
    pub(crate) added: HashSet,
}

impl Old {
    fn insert_elem(&mut self, set: &str, key: &ElemKey, verdict: u64) {
        let at = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
        crate::packed::push_key(&mut self.keys, key);
        let elems = match self.elements.get_mut(set) {
            Some(elems) => elems,
            None => self.elements.entry(set.into()).or_default(),
        };
        let seen = false;
        elems.insert(key_hash(key), OldElem { verdict, seen, at });
    }

    /// What `prints` say is programmed (one owner's, or all of them).
    pub(crate) fn of_prints<'a>(prints: impl IntoIterator<Item = &'a Footprint>) -> Self {
        let mut old = Self::default();
        for p in prints {
            for (name, h) in &p.sets {
                old.sets.insert(name.clone(), Some(*h));
            }
            for c in &p.chains {
                let chain = OldChain {
                    rules: Some(c.rules),
                    prints: None,
                    len: c.prints.len(),
                };
                old.chains.insert(c.name.clone(), chain);
            }
            for (set, k, verdict) in p.keys() {
                old.insert_elem(set, &k, verdict);
            }
        }
        old
    }

    /// What a full piece says (tests and [`crate::desired::diff`]).
    pub(crate) fn of_desired(family: Family, d: &Desired) -> Self {
        Self::of_prints([&Footprint::of(family, d, |_, _| None)])
    }

    /// What the kernel reports, streamed in by `read` (a [`TableSink`] reader: the table is
    /// never held whole); empty when there is no table.
    pub(crate) fn read_back<E>(
        read: impl FnOnce(&mut dyn TableSink) -> Result<bool, E>,
    ) -> Result<Self, E> {
        let mut old = Self::default();
        read(&mut old)?;
        old.keys.shrink_to_fit();
        Ok(old)
    }

    /// What the kernel reported as a whole table.
    pub(crate) fn of_kernel(table: TableState) -> Self {
        let read = |sink: &mut dyn TableSink| {
            table.feed(sink);
            Ok::<_, std::convert::Infallible>(true)
        };
        let Ok(old) = Self::read_back(read);
        old
    }
}

/// The "before" side is built as the kernel's dumps come, never holding the table whole. A
/// dynamic set's elements are the packet path's (session-affinity clients), never ours to
/// diff: they are left out.
impl TableSink for Old {
    fn start(&mut self) {
        *self = Self::default();
    }

    fn table(&mut self, _comment: Option<String>) {}

    fn chain(&mut self, chain: ChainState) {
        let prints =
            (!chain.unrecognised).then(|| chain.rules.iter().map(|r| r.fingerprint).collect());
        let c = OldChain {
            rules: None,
            prints,
            len: chain.rules.len(),
        };
        self.chains.insert(chain.def.name.into(), c);
    }

    fn set(&mut self, set: &SetState) {
        self.sets.insert(set.def.name.as_str().into(), None);
        if set.def.timeout.is_none() {
            self.elements
                .entry(set.def.name.as_str().into())
                .or_default();
        }
    }

    fn elements(&mut self, set: &str, elements: Vec<Element>) {
        if !self.elements.contains_key(set) {
            return;
        }
        for e in elements {
            let verdict = value_hash(e.verdict.as_ref(), e.data);
            self.insert_elem(set, &(e.key, e.prefix), verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elem(verdict: u64) -> OldElem {
        // Packed keys go in insertion order: a later insert's is further in.
        OldElem {
            verdict,
            seen: false,
            at: verdict as u32,
        }
    }

    /// The index finds what was inserted, the last of equal keys wins (as a map's insert),
    /// and an insert after a lookup is found too.
    #[test]
    fn the_element_index_finds_the_last_insert_of_a_key() {
        let mut index = ElemIndex::default();
        for (key, verdict) in [(5, 1), (3, 2), (5, 3), (9, 4)] {
            index.insert(key, elem(verdict));
        }
        assert_eq!(index.get_mut(5).map(|e| e.verdict), Some(3));
        assert_eq!(index.get_mut(3).map(|e| e.verdict), Some(2));
        assert!(index.get_mut(4).is_none());
        index.insert(4, elem(7));
        assert_eq!(index.get_mut(4).map(|e| e.verdict), Some(7));
        index.get_mut(9).unwrap().seen = true;
        assert_eq!(index.len(), 4);
        let mut values: Vec<(u64, bool)> =
            index.into_values().map(|e| (e.verdict, e.seen)).collect();
        values.sort_unstable();
        assert_eq!(values, [(2, false), (3, false), (4, true), (7, false)]);
    }
}
