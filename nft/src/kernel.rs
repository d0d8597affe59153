//! The chokepoint between the proxy and nftables: apply a transaction, read a table back.
//! The real implementation is [`crate::netlink::Netlink`]; [`crate::fake::FakeNft`] keeps
//! the same semantics in memory for tests that cannot be root.

use crate::error::NftError;
use crate::ir::{Family, Transaction};
use crate::state::TableState;

/// nftables as the proxy sees it.
pub trait NftKernel {
    /// Applies `tx` atomically: every op or none. A refusal names the op that failed.
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError>;

    /// Reads table `family`/`name` back; `None` when it does not exist.
    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError>;
}

impl<K: NftKernel + ?Sized> NftKernel for Box<K> {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        (**self).apply(tx)
    }

    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError> {
        (**self).read_table(family, name)
    }
}
