//! The chokepoint between the proxy and nftables: apply a transaction, read a table back.
//! The real implementation is [`crate::netlink::Netlink`]; [`crate::fake::FakeNft`] keeps
//! the same semantics in memory for tests that cannot be root.

use crate::error::NftError;
use crate::ir::{Family, Transaction};
use crate::state::{TableSink, TableState};

/// nftables as the proxy sees it.
pub trait NftKernel {
    /// Applies `tx` atomically: every op or none. A refusal names the op that failed.
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Reads table `family`/`name` back; `None` when it does not exist.
    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError>;

    /// Reads table `family`/`name` back into `sink`, piece by piece where the kernel allows
    /// (netlink: never holding the table whole); `false` when it does not exist. By default
    /// [`NftKernel::read_table`]'s answer, fed in.
    fn read_table_into(
        &mut self,
        family: Family,
        name: &str,
        sink: &mut dyn TableSink,
    ) -> Result<bool, NftError> {
        let table = self.read_table(family, name)?;
        let found = table.is_some();
        if let Some(t) = table {
            t.feed(sink);
        }
        Ok(found)
    }

    /// The ruleset's generation: every commit in the namespace, by anyone, moves it on by
    /// one (`NFT_MSG_GETGEN`). `None` where it is not known; a caller then cannot tell
    /// whether anyone else changed the ruleset, and must read it back.
    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        Ok(None)
    }

    /// [`NftKernel::apply`], but only while the ruleset is still at `generation` (it is then
    /// at [`next_generation`]`(generation)` after); otherwise nothing is applied and the
    /// refusal's errno is `ERESTART`. Callers use it only where [`NftKernel::generation`] is
    /// known, so a kernel that reports a generation must implement it.
    fn apply_at(&mut self, tx: &Transaction, generation: u32) -> Result<(), NftError> {
        let _ = generation;
        self.apply(tx)
    }
}

/// The generation after one commit at `generation` (the kernel skips 0).
pub fn next_generation(generation: u32) -> u32 {
    match generation.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

impl<K: NftKernel + ?Sized> NftKernel for Box<K> {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        (**self).apply(tx)
    }

    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError> {
        (**self).read_table(family, name)
    }

    fn read_table_into(
        &mut self,
        family: Family,
        name: &str,
        sink: &mut dyn TableSink,
    ) -> Result<bool, NftError> {
        (**self).read_table_into(family, name, sink)
    }

    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        (**self).generation()
    }

    fn apply_at(&mut self, tx: &Transaction, generation: u32) -> Result<(), NftError> {
        (**self).apply_at(tx, generation)
    }
}
