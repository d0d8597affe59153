//! What to write so the maps hold what they should: the difference between two [`MapSet`]s
//! as map operations, in the one order that never leaves a Service without backends.
//!
//! Order: new and changed slots first (a growing Service's new slots exist before its count
//! says so), then service entries (a count, flags or id switch takes effect at once), then
//! removed service entries, and removed slots last (a shrinking Service's count is already
//! lower). A reader in between sees either the old or the new backend set, never an empty one.
//! The IPv6 maps follow the same order with their own operations.

use std::collections::BTreeMap;

use sluice_ebpf_common::{Backend, Backend6, ServiceKey, ServiceKey6, ServiceValue, SlotKey};

use crate::render::MapSet;

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace a slot.
    PutSlot(SlotKey, Backend),
    /// Insert or replace a service entry.
    PutService(ServiceKey, ServiceValue),
    /// Delete a service entry.
    DeleteService(ServiceKey),
    /// Delete a slot.
    DeleteSlot(SlotKey),
    /// Allow a source prefix for a service id (its family's trie).
    PutRange(u32, ipnet::IpNet),
    /// Stop allowing it.
    DeleteRange(u32, ipnet::IpNet),
    /// Insert or replace an IPv6 slot.
    PutSlot6(SlotKey, Backend6),
    /// Insert or replace an IPv6 service entry.
    PutService6(ServiceKey6, ServiceValue),
    /// Delete an IPv6 service entry.
    DeleteService6(ServiceKey6),
    /// Delete an IPv6 slot.
    DeleteSlot6(SlotKey),
}

/// Puts for the entries of `want` that `have` lacks or holds differently.
fn puts<K: Ord + Copy, V: PartialEq + Copy>(
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
    op: impl Fn(K, V) -> Op,
    ops: &mut Vec<Op>,
) {
    for (k, v) in want {
        if have.get(k) != Some(v) {
            ops.push(op(*k, *v));
        }
    }
}

/// Deletes for the keys of `have` that `want` lacks.
fn deletes<K: Ord + Copy, V>(
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
    op: impl Fn(K) -> Op,
    ops: &mut Vec<Op>,
) {
    for k in have.keys() {
        if !want.contains_key(k) {
            ops.push(op(*k));
        }
    }
}

/// The operations that turn `have` into `want`, in safe order.
pub fn diff(want: &MapSet, have: &MapSet) -> Vec<Op> {
    let mut ops = Vec::new();
    puts(&want.slots, &have.slots, Op::PutSlot, &mut ops);
    puts(&want.slots6, &have.slots6, Op::PutSlot6, &mut ops);
    for r in want.ranges.difference(&have.ranges) {
        ops.push(Op::PutRange(r.0, r.1));
    }
    puts(&want.services, &have.services, Op::PutService, &mut ops);
    puts(&want.services6, &have.services6, Op::PutService6, &mut ops);
    deletes(&want.services, &have.services, Op::DeleteService, &mut ops);
    deletes(
        &want.services6,
        &have.services6,
        Op::DeleteService6,
        &mut ops,
    );
    deletes(&want.slots, &have.slots, Op::DeleteSlot, &mut ops);
    deletes(&want.slots6, &have.slots6, Op::DeleteSlot6, &mut ops);
    for r in have.ranges.difference(&want.ranges) {
        ops.push(Op::DeleteRange(r.0, r.1));
    }
    ops
}

/// Sorts operations gathered from several diffs into the safe order (stable within a kind).
pub fn order(ops: &mut [Op]) {
    ops.sort_by_key(|op| match op {
        Op::PutSlot(..) | Op::PutSlot6(..) | Op::PutRange(..) => 0,
        Op::PutService(..) | Op::PutService6(..) => 1,
        Op::DeleteService(..) | Op::DeleteService6(..) => 2,
        Op::DeleteSlot(..) | Op::DeleteSlot6(..) | Op::DeleteRange(..) => 3,
    });
}

/// `set` after `ops`.
pub fn apply_to(set: &mut MapSet, ops: &[Op]) {
    for op in ops {
        match op {
            Op::PutSlot(k, v) => {
                set.slots.insert(*k, *v);
            }
            Op::PutService(k, v) => {
                set.services.insert(*k, *v);
            }
            Op::DeleteService(k) => {
                set.services.remove(k);
            }
            Op::DeleteSlot(k) => {
                set.slots.remove(k);
            }
            Op::PutRange(id, net) => {
                set.ranges.insert((*id, *net));
            }
            Op::DeleteRange(id, net) => {
                set.ranges.remove(&(*id, *net));
            }
            Op::PutSlot6(k, v) => {
                set.slots6.insert(*k, *v);
            }
            Op::PutService6(k, v) => {
                set.services6.insert(*k, *v);
            }
            Op::DeleteService6(k) => {
                set.services6.remove(k);
            }
            Op::DeleteSlot6(k) => {
                set.slots6.remove(k);
            }
        }
    }
}
