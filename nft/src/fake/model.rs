//! One table of the fake and how each op changes it, with the kernel's errnos.

use std::collections::BTreeMap;

use crate::error::errno::{EBUSY, EEXIST, EINVAL, ENOENT, EOPNOTSUPP};
use crate::ir::{
    ChainDef, Element, ElementData, Family, KeyType, KeyValue, MapData, Op, Rule, SetDef, Stmt,
    Verdict,
};
use crate::state::{ChainState, RuleState, SetState, TableState, fingerprint};

/// Longest object name the kernel takes (`NFT_NAME_MAXLEN` - 1).
const MAX_NAME: usize = 255;
/// `ERANGE`: the kernel's answer to an over-long name attribute.
const ERANGE: i32 = 34;

#[derive(Clone, Debug, Default)]
pub(super) struct Table {
    comment: Option<String>,
    chains: Vec<Chain>,
    sets: Vec<Set>,
    next_handle: u64,
}

#[derive(Clone, Debug)]
struct Chain {
    def: ChainDef,
    rules: Vec<(u64, Rule)>,
}

#[derive(Clone, Debug)]
struct Set {
    def: SetDef,
    elements: BTreeMap<(Vec<KeyValue>, Option<u8>), Element>,
}

type R = Result<(), i32>;

/// Applies `op` to the table (`None`: it does not exist).
pub(super) fn apply(slot: &mut Option<Table>, family: Family, op: &Op) -> R {
    match op {
        Op::AddTable { comment } => {
            slot.get_or_insert_with(|| Table {
                comment: comment.clone(),
                next_handle: 1,
                ..Table::default()
            });
            Ok(())
        }
        Op::DeleteTable => slot.take().map(|_| ()).ok_or(ENOENT),
        _ => slot.as_mut().ok_or(ENOENT)?.apply(family, op),
    }
}

impl Table {
    fn apply(&mut self, family: Family, op: &Op) -> R {
        match op {
            Op::AddTable { .. } | Op::DeleteTable => Ok(()),
            Op::AddChain(def) => self.add_chain(def),
            Op::FlushChain(c) => {
                self.chain_mut(c)?.rules.clear();
                Ok(())
            }
            Op::DeleteChain(c) => self.delete_chain(c),
            Op::AddRule { chain, rule } => self.add_rule(chain, rule),
            Op::DeleteRule { chain, handle } => {
                let rules = &mut self.chain_mut(chain)?.rules;
                let i = rules.iter().position(|(h, _)| h == handle).ok_or(ENOENT)?;
                rules.remove(i);
                Ok(())
            }
            Op::AddSet(def) => self.add_set(def),
            Op::DeleteSet(s) => self.delete_set(s),
            Op::FlushSet(s) => {
                self.set_mut(s)?.elements.clear();
                Ok(())
            }
            Op::AddElements { set, elements } => self.add_elements(family, set, elements),
            Op::DeleteElements { set, elements } => {
                let s = self.set_mut(set)?;
                for e in elements {
                    let key = elem_key(&s.def, e);
                    s.elements.remove(&key).ok_or(ENOENT)?;
                }
                Ok(())
            }
        }
    }

    fn chain(&self, name: &str) -> Result<&Chain, i32> {
        self.chains
            .iter()
            .find(|c| c.def.name == name)
            .ok_or(ENOENT)
    }

    fn chain_mut(&mut self, name: &str) -> Result<&mut Chain, i32> {
        self.chains
            .iter_mut()
            .find(|c| c.def.name == name)
            .ok_or(ENOENT)
    }

    fn set(&self, name: &str) -> Result<&Set, i32> {
        self.sets.iter().find(|s| s.def.name == name).ok_or(ENOENT)
    }

    fn set_mut(&mut self, name: &str) -> Result<&mut Set, i32> {
        self.sets
            .iter_mut()
            .find(|s| s.def.name == name)
            .ok_or(ENOENT)
    }

    fn add_chain(&mut self, def: &ChainDef) -> R {
        if def.name.len() > MAX_NAME {
            return Err(ERANGE);
        }
        match self.chain(&def.name) {
            // The kernel will not re-hook or re-type a chain: EOPNOTSUPP.
            Ok(c) if def.base.is_some() && c.def.base != def.base => Err(EOPNOTSUPP),
            Ok(_) => Ok(()),
            Err(_) => {
                self.chains.push(Chain {
                    def: def.clone(),
                    rules: Vec::new(),
                });
                Ok(())
            }
        }
    }

    /// A jump or goto target: must exist and not be a base chain.
    fn check_target(&self, v: &Verdict) -> R {
        match target(v) {
            Some(c) if self.chain(c)?.def.base.is_some() => Err(EOPNOTSUPP),
            _ => Ok(()),
        }
    }

    fn add_rule(&mut self, chain: &str, rule: &Rule) -> R {
        self.chain(chain)?;
        for s in &rule.stmts {
            self.check_stmt(s)?;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.chain_mut(chain)?.rules.push((handle, rule.clone()));
        Ok(())
    }

    /// The objects a statement refers to exist and have the right kind.
    fn check_stmt(&self, s: &Stmt) -> R {
        match s {
            Stmt::Verdict(v) => self.check_target(v),
            Stmt::Vmap { map, .. } => require(self.set(map)?.def.verdict_map, EINVAL),
            Stmt::DaddrFromMap { map, .. } => {
                require(self.set(map)?.def.data == Some(MapData::Addr), EINVAL)
            }
            Stmt::DnatFromMap { map, .. } => {
                require(self.set(map)?.def.data == Some(MapData::AddrPort), EINVAL)
            }
            // The kernel lets any set be updated from the packet path.
            Stmt::InSet { set, .. } | Stmt::InConcat { set, .. } | Stmt::UpdateSaddr(set) => {
                self.set(set).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn delete_chain(&mut self, name: &str) -> R {
        self.chain(name)?;
        let from_rules = self
            .chains
            .iter()
            .filter(|c| c.def.name != name)
            .flat_map(|c| &c.rules)
            .flat_map(|(_, r)| &r.stmts)
            .any(|s| matches!(s, Stmt::Verdict(v) if target(v) == Some(name)));
        let from_maps = self
            .sets
            .iter()
            .flat_map(|s| s.elements.values())
            .any(|e| e.verdict.as_ref().and_then(target) == Some(name));
        if from_rules || from_maps {
            return Err(EBUSY);
        }
        self.chains.retain(|c| c.def.name != name);
        Ok(())
    }

    fn add_set(&mut self, def: &SetDef) -> R {
        if def.name.len() > MAX_NAME {
            return Err(ERANGE);
        }
        match self.set(&def.name) {
            Ok(s) => {
                let old = &s.def;
                let same = old.key == def.key
                    && old.verdict_map == def.verdict_map
                    && old.data == def.data
                    && old.interval == def.interval
                    && old.timeout.is_some() == def.timeout.is_some();
                if same { Ok(()) } else { Err(EEXIST) }
            }
            Err(_) => {
                self.sets.push(Set {
                    def: def.clone(),
                    elements: BTreeMap::new(),
                });
                Ok(())
            }
        }
    }

    fn delete_set(&mut self, name: &str) -> R {
        self.set(name)?;
        let used = self
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|(_, r)| &r.stmts)
            .any(|s| set_ref(s) == Some(name));
        if used {
            return Err(EBUSY);
        }
        self.sets.retain(|s| s.def.name != name);
        Ok(())
    }

    fn add_elements(&mut self, family: Family, set: &str, elements: &[Element]) -> R {
        let def = self.set(set)?.def.clone();
        for e in elements {
            let data_fits = match (def.data, e.data) {
                (None, None) => true,
                (Some(MapData::Addr), Some(ElementData::Addr(a))) => Family::of(a) == family,
                (Some(MapData::AddrPort), Some(ElementData::AddrPort(a, _))) => {
                    Family::of(a) == family
                }
                _ => false,
            };
            if !key_fits(family, &def.key, &e.key)
                || def.verdict_map != e.verdict.is_some()
                || !data_fits
            {
                return Err(EINVAL);
            }
            if let Some(v) = &e.verdict {
                self.check_target(v)?;
            }
            let key = elem_key(&def, e);
            let s = self.set_mut(set)?;
            match s.elements.get(&key) {
                Some(old) if old.verdict != e.verdict || old.data != e.data => return Err(EEXIST),
                Some(_) => {}
                None => {
                    let stored = Element {
                        key: key.0.clone(),
                        prefix: key.1,
                        ..e.clone()
                    };
                    s.elements.insert(key, stored);
                }
            }
        }
        Ok(())
    }

    /// The table as [`crate::NftKernel::read_table`] gives it.
    pub(super) fn state(&self, family: Family, name: &str) -> TableState {
        TableState {
            family,
            name: name.to_owned(),
            comment: self.comment.clone(),
            chains: self
                .chains
                .iter()
                .map(|c| ChainState {
                    def: c.def.clone(),
                    unrecognised: false,
                    rules: c
                        .rules
                        .iter()
                        .map(|(h, r)| RuleState {
                            handle: *h,
                            comment: r.comment.clone(),
                            fingerprint: Some(fingerprint(family, r)),
                        })
                        .collect(),
                })
                .collect(),
            sets: self
                .sets
                .iter()
                .map(|s| SetState {
                    def: s.def.clone(),
                    flags: crate::netlink::set_flags(&s.def),
                    unrecognised: false,
                    elements: s.elements.values().cloned().collect(),
                })
                .collect(),
        }
    }
}

fn require(ok: bool, errno: i32) -> R {
    if ok { Ok(()) } else { Err(errno) }
}

fn target(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
        _ => None,
    }
}

fn set_ref(s: &Stmt) -> Option<&str> {
    match s {
        Stmt::InSet { set, .. } | Stmt::InConcat { set, .. } | Stmt::UpdateSaddr(set) => Some(set),
        Stmt::Vmap { map, .. } | Stmt::DaddrFromMap { map, .. } | Stmt::DnatFromMap { map, .. } => {
            Some(map)
        }
        _ => None,
    }
}

/// True when the key's components have the set's types (addresses of the table's family).
fn key_fits(family: Family, types: &[KeyType], key: &[KeyValue]) -> bool {
    types.len() == key.len()
        && types.iter().zip(key).all(|(t, k)| match (t, k) {
            (KeyType::Addr, KeyValue::Addr(a)) => Family::of(*a) == family,
            (KeyType::Proto, KeyValue::Proto(_))
            | (KeyType::Port, KeyValue::Port(_))
            | (KeyType::Bucket, KeyValue::Bucket(_)) => true,
            _ => false,
        })
}

/// The identity of an element: its key, and for interval sets the normalized prefix.
fn elem_key(def: &SetDef, e: &Element) -> (Vec<KeyValue>, Option<u8>) {
    match (def.interval || e.prefix.is_some(), e.key.as_slice()) {
        (true, [KeyValue::Addr(a)]) => {
            let max = if a.is_ipv4() { 32 } else { 128 };
            let len = e.prefix.unwrap_or(max).min(max);
            let net = ipnet::IpNet::new(*a, len)
                .map(|n| n.network())
                .unwrap_or(*a);
            (vec![KeyValue::Addr(net)], Some(len))
        }
        _ => (e.key.clone(), None),
    }
}
