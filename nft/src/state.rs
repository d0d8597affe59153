//! What is programmed, as read back from the kernel (or the fake): the proxy's periodic full
//! sync compares it with what it rendered and repairs the difference.
//!
//! Rules are not decoded back into statements: each rule we write carries, next to its
//! comment, a fingerprint of its nft text in its userdata, so recognising "the same rule"
//! costs one integer compare. Rules written by someone else have no fingerprint.

use crate::ir::{ChainDef, Element, Family, Rule, SetDef};
use crate::text;

/// A table as programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableState {
    /// Family.
    pub family: Family,
    /// Name.
    pub name: String,
    /// Comment.
    pub comment: Option<String>,
    /// Chains in kernel order (creation order).
    pub chains: Vec<ChainState>,
    /// Sets and maps in kernel order.
    pub sets: Vec<SetState>,
}

impl TableState {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&ChainState> {
        self.chains.iter().find(|c| c.def.name == name)
    }

    /// The set called `name`.
    pub fn set(&self, name: &str) -> Option<&SetState> {
        self.sets.iter().find(|s| s.def.name == name)
    }
}

/// Receives a table read back piece by piece ([`crate::NftKernel::read_table_into`]), so a
/// reader that streams never holds it whole: at 10,000 Services × 3 a [`TableState`] was
/// ~15 MiB, most of it elements, on top of what the reader builds from it (issue 14: the
/// peak of a full resync that reads back).
pub trait TableSink {
    /// A read of the table starts (again, after the ruleset changed while it was read):
    /// whatever came before is forgotten.
    fn start(&mut self);
    /// The table exists, with this comment; called first.
    fn table(&mut self, comment: Option<String>);
    /// A chain, with its rules; in kernel order.
    fn chain(&mut self, chain: ChainState);
    /// A set or map, without its elements; in kernel order, before any of its elements.
    fn set(&mut self, set: &SetState);
    /// Elements of set `set`, in any order and in as many calls as it takes (none for a set
    /// whose key types are not known: [`SetState::unrecognised`]).
    fn elements(&mut self, set: &str, elements: Vec<Element>);
}

/// A [`TableSink`] that keeps the whole table ([`crate::NftKernel::read_table`]'s answer).
#[derive(Debug)]
pub struct Collect {
    table: Option<TableState>,
    family: Family,
    name: String,
}

impl Collect {
    /// Collects table `family`/`name`.
    pub fn new(family: Family, name: &str) -> Self {
        Self {
            table: None,
            family,
            name: name.to_owned(),
        }
    }

    /// The table, its sets' elements sorted; `None` when it was not found.
    pub fn finish(self) -> Option<TableState> {
        let mut table = self.table?;
        for set in &mut table.sets {
            set.elements.sort_unstable();
        }
        Some(table)
    }
}

impl TableSink for Collect {
    fn start(&mut self) {
        self.table = None;
    }

    fn table(&mut self, comment: Option<String>) {
        self.table = Some(TableState {
            family: self.family,
            name: self.name.clone(),
            comment,
            chains: Vec::new(),
            sets: Vec::new(),
        });
    }

    fn chain(&mut self, chain: ChainState) {
        if let Some(t) = &mut self.table {
            t.chains.push(chain);
        }
    }

    fn set(&mut self, set: &SetState) {
        if let Some(t) = &mut self.table {
            t.sets.push(set.clone());
        }
    }

    fn elements(&mut self, set: &str, elements: Vec<Element>) {
        let sets = self.table.iter_mut().flat_map(|t| t.sets.iter_mut());
        if let Some(s) = sets.rev().find(|s| s.def.name == set) {
            s.elements.extend(elements);
        }
    }
}

impl TableState {
    /// Hands the table to `sink` as a reader that streams would.
    pub fn feed(self, sink: &mut dyn TableSink) {
        sink.start();
        sink.table(self.comment);
        for chain in self.chains {
            sink.chain(chain);
        }
        for mut set in self.sets {
            let elements = std::mem::take(&mut set.elements);
            sink.set(&set);
            if !set.unrecognised {
                sink.elements(&set.def.name, elements);
            }
        }
    }
}

/// A chain and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    /// Name and (for a base chain) hook, type and priority.
    pub def: ChainDef,
    /// True when the chain is a base chain whose hook or type the IR cannot express (someone
    /// else's chain); `def.base` is then `None`.
    pub unrecognised: bool,
    /// Rules in order.
    pub rules: Vec<RuleState>,
}

/// One rule as programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleState {
    /// The kernel's handle (for `Op::DeleteRule`).
    pub handle: u64,
    /// Comment.
    pub comment: Option<String>,
    /// [`fingerprint`] of the rule as written, when we wrote it.
    pub fingerprint: Option<u64>,
}

/// A set or map and its elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetState {
    /// The definition as far as the kernel keeps it (key types, map, interval, timeout,
    /// comment).
    pub def: SetDef,
    /// The kernel's set flags (`NFT_SET_*`).
    pub flags: u32,
    /// True when the key types are not ones the IR knows (elements are then left empty).
    pub unrecognised: bool,
    /// Elements, sorted. Interval sets give one element per prefix; dynamic sets give the
    /// packet path's entries (keys only).
    pub elements: Vec<Element>,
}

/// A stable 64-bit fingerprint of a rule (FNV-1a of its nft text, comment included): stored
/// in the rule's userdata, stable across processes and builds.
pub fn fingerprint(family: Family, rule: &Rule) -> u64 {
    fnv1a(text::rule_text(family, rule).as_bytes())
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Stmt, Verdict};

    #[test]
    fn fingerprints_are_stable_and_tell_rules_apart() {
        let a = Rule::new(vec![Stmt::Verdict(Verdict::Jump("x".into()))]);
        let b = Rule::new(vec![Stmt::Verdict(Verdict::Jump("y".into()))]);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fingerprint(Family::Ip, &a),
            fingerprint(Family::Ip, &a.clone())
        );
        assert_ne!(fingerprint(Family::Ip, &a), fingerprint(Family::Ip, &b));
        let commented = a.clone().with_comment("c");
        assert_ne!(
            fingerprint(Family::Ip, &a),
            fingerprint(Family::Ip, &commented)
        );
    }
}
