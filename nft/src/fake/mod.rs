//! An in-memory nftables with the kernel's semantics for everything the proxy does, so the
//! proxy's sync logic (incremental updates, drift repair, error handling) is unit-tested
//! without root: transactions are atomic (a refused op rolls back the whole transaction),
//! re-adding an existing table, chain or set is fine (another definition is refused: a set
//! `EEXIST`, a base chain `EOPNOTSUPP`),
//! a map key that exists with another verdict is `EEXIST` (what 6.x kernels answer), deleting something missing is
//! `ENOENT`, deleting a chain or set still referenced is `EBUSY`, and refusals name the op
//! exactly like [`crate::Netlink`]'s.
//!
//! Not modelled: hook-specific validation (e.g. `masquerade` reachable from prerouting),
//! overlapping intervals, packet-path entries of dynamic sets.

mod model;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::NftError;
use crate::ir::{Family, Transaction};
use crate::kernel::NftKernel;
use crate::state::TableState;
use model::Table;

/// A shared handle on one in-memory ruleset: clones see the same tables (give one to the
/// code under test, keep one to inspect or tamper with).
#[derive(Clone, Debug, Default)]
pub struct FakeNft(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<(Family, String), Table>,
    /// Transactions to let through, then the errno to refuse the next one with.
    fail: Option<(usize, i32)>,
    applied: usize,
    reads: usize,
    /// Moves on with every committed transaction, as the kernel's ruleset generation.
    generation: u32,
}

impl FakeNft {
    /// An empty ruleset.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next [`NftKernel::apply`] fail with `errno` (blamed on its first op)
    /// without changing anything.
    pub fn fail_next(&self, errno: i32) {
        self.fail_after(0, errno);
    }

    /// Lets `ok` more transactions through, then refuses the next one like
    /// [`Self::fail_next`].
    pub fn fail_after(&self, ok: usize, errno: i32) {
        self.lock().fail = Some((ok, errno));
    }

    /// Number of transactions applied successfully so far.
    pub fn applied(&self) -> usize {
        self.lock().applied
    }

    /// Number of tables read back so far.
    pub fn reads(&self) -> usize {
        self.lock().reads
    }

    /// Families and names of the existing tables.
    pub fn tables(&self) -> Vec<(Family, String)> {
        self.lock().tables.keys().cloned().collect()
    }
}

impl NftKernel for FakeNft {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        self.commit(tx, None)
    }

    fn apply_at(&mut self, tx: &Transaction, generation: u32) -> Result<(), NftError> {
        self.commit(tx, Some(generation))
    }

    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        Ok(Some(self.lock().generation))
    }

    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError> {
        let mut inner = self.lock();
        inner.reads += 1;
        Ok(inner
            .tables
            .get(&(family, name.to_owned()))
            .map(|t| t.state(family, name)))
    }
}

impl FakeNft {
    fn commit(&mut self, tx: &Transaction, at: Option<u32>) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        crate::netlink::check(tx)?;
        let family = tx.family.ok_or_else(|| NftError::Encode {
            op: format!("transaction on {}", tx.table),
            reason: "no family".into(),
        })?;
        let mut inner = self.lock();
        if at.is_some_and(|g| g != inner.generation) {
            let op = format!("commit of {} {}", family.keyword(), tx.table);
            return Err(NftError::refused(op, crate::error::errno::ERESTART));
        }
        match inner.fail.take() {
            Some((0, errno)) => {
                return Err(NftError::refused(crate::netlink::describe(tx, 0), errno));
            }
            Some((ok, errno)) => inner.fail = Some((ok - 1, errno)),
            None => {}
        }
        let key = (family, tx.table.clone());
        let mut table = inner.tables.get(&key).cloned();
        for (i, op) in tx.ops.iter().enumerate() {
            model::apply(&mut table, family, op)
                .map_err(|errno| NftError::refused(crate::netlink::describe(tx, i), errno))?;
        }
        match table {
            Some(t) => inner.tables.insert(key, t),
            None => inner.tables.remove(&key),
        };
        inner.applied += 1;
        inner.generation = crate::kernel::next_generation(inner.generation);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
