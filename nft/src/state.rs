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
