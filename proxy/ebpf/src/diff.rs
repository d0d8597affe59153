//! What to write so the maps hold what they should: the difference between two [`MapSet`]s
//! as map operations, in the one order that never leaves a Service without backends.
//!
//! Order: new and changed slots first (a growing Service's new slots exist before its count
//! says so), then service entries (a count, flags or id switch takes effect at once), then
//! removed service entries, and removed slots last (a shrinking Service's count is already
//! lower). A reader in between sees either the old or the new backend set, never an empty one.

use sluice_ebpf_common::{Backend, ServiceKey, ServiceValue, SlotKey};

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
    /// Allow a source prefix for a service id.
    PutRange(u32, ipnet::Ipv4Net),
    /// Stop allowing it.
    DeleteRange(u32, ipnet::Ipv4Net),
}

/// The operations that turn `have` into `want`, in safe order.
pub fn diff(want: &MapSet, have: &MapSet) -> Vec<Op> {
    let mut ops = Vec::new();
    for (k, v) in &want.slots {
        if have.slots.get(k) != Some(v) {
            ops.push(Op::PutSlot(*k, *v));
        }
    }
    for r in want.ranges.difference(&have.ranges) {
        ops.push(Op::PutRange(r.0, r.1));
    }
    for (k, v) in &want.services {
        if have.services.get(k) != Some(v) {
            ops.push(Op::PutService(*k, *v));
        }
    }
    for k in have.services.keys() {
        if !want.services.contains_key(k) {
            ops.push(Op::DeleteService(*k));
        }
    }
    for k in have.slots.keys() {
        if !want.slots.contains_key(k) {
            ops.push(Op::DeleteSlot(*k));
        }
    }
    for r in have.ranges.difference(&want.ranges) {
        ops.push(Op::DeleteRange(r.0, r.1));
    }
    ops
}

/// Sorts operations gathered from several diffs into the safe order (stable within a kind).
pub fn order(ops: &mut [Op]) {
    ops.sort_by_key(|op| match op {
        Op::PutSlot(..) | Op::PutRange(..) => 0,
        Op::PutService(..) => 1,
        Op::DeleteService(..) => 2,
        Op::DeleteSlot(..) | Op::DeleteRange(..) => 3,
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
        }
    }
}
