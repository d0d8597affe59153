//! The kernel side: a [`Transaction`] encoded as one nfnetlink batch and sent on a
//! `NETLINK_NETFILTER` socket, and tables read back for drift repair — written by hand from
//! the uapi headers (no libnftnl, no `nft` process), so one sync is one `send` and the
//! kernel's all-or-nothing batch semantics are ours.
//!
//! A refusal names the op that failed (`add rule ip sluice service-x …: No such file or
//! directory`): every message's sequence number maps back to its op.

mod consts;
mod encode;
mod expr;
mod read;

pub use read::decode_dump;
mod set;
mod udata;

use std::collections::HashMap;

use crate::error::{NftError, errno};
use crate::ir::{Family, Transaction};
use crate::kernel::NftKernel;
use crate::state::{Collect, TableSink, TableState};
use sluice_netlink::socket::{self, NETLINK_NETFILTER, Socket as NfSocket};

/// nftables through netlink, in the network namespace the socket was opened in.
pub struct Netlink {
    socket: NfSocket,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace (it stays bound to that
    /// namespace whatever the thread does later). Needs CAP_NET_ADMIN.
    pub fn open() -> Result<Self, NftError> {
        Ok(Self {
            socket: NfSocket::open(NETLINK_NETFILTER)?,
        })
    }

    /// Interval flags of the table's sets (for element ops on sets `tx` does not define).
    fn interval_flags(&mut self, tx: &Transaction) -> Result<HashMap<String, bool>, NftError> {
        if encode::sets_to_look_up(tx).is_empty() {
            return Ok(HashMap::new());
        }
        let Some(family) = tx.family else {
            return Ok(HashMap::new());
        };
        read::set_intervals(&mut self.socket, family, &tx.table)
    }
}

impl Netlink {
    fn send(&mut self, tx: &Transaction, genid: Option<u32>) -> Result<(), NftError> {
        if tx.is_empty() {
            return Ok(());
        }
        let interval = self.interval_flags(tx)?;
        let mut batch = encode::encode(tx, self.socket.next_seq(), &interval, genid)?;
        if batch.end_seq < batch.begin_seq {
            // The numbers wrapped inside the batch: answers are matched by range and ops
            // found by binary search, so number it again from 1.
            batch = encode::encode(tx, 1, &interval, genid)?;
        }
        self.socket.resume_after(batch.end_seq);
        let ack_each = batch.msgs.len() <= socket::ACK_EACH_MAX;
        if ack_each {
            batch.ack_each();
        }
        let acks = if ack_each { batch.msgs.len() } else { 0 };
        self.socket
            .ensure_buffers(batch.len(), NfSocket::ack_room(acks))?;
        let (answers, lost) = self
            .socket
            .send_batch(&batch.chunks, (batch.begin_seq, batch.end_seq))?;
        verdict(tx, &batch, &answers, lost, ack_each)
    }
}

impl NftKernel for Netlink {
    fn apply(&mut self, tx: &Transaction) -> Result<(), NftError> {
        self.send(tx, None)
    }

    fn apply_at(&mut self, tx: &Transaction, generation: u32) -> Result<(), NftError> {
        self.send(tx, Some(generation))
    }

    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        read::genid(&mut self.socket).map(Some)
    }

    fn read_table(&mut self, family: Family, name: &str) -> Result<Option<TableState>, NftError> {
        let mut table = Collect::new(family, name);
        self.read_table_into(family, name, &mut table)?;
        Ok(table.finish())
    }

    fn read_table_into(
        &mut self,
        family: Family,
        name: &str,
        sink: &mut dyn TableSink,
    ) -> Result<bool, NftError> {
        read::read_table(&mut self.socket, family, name, sink)
    }
}

/// The outcome of a batch from its answers: the first refusal (by position) names its op.
fn verdict(
    tx: &Transaction,
    batch: &encode::Batch,
    answers: &[socket::Answer],
    lost: bool,
    ack_each: bool,
) -> Result<(), NftError> {
    let refused = answers
        .iter()
        .filter(|a| a.errno != 0)
        .min_by_key(|a| a.seq.wrapping_sub(batch.begin_seq));
    if let Some(a) = refused {
        let op = match batch.op_of(a.seq) {
            Some(i) => encode::describe(tx, i),
            None if a.errno == errno::ERESTART => format!(
                "commit of {} (another process changed the ruleset since it was read)",
                table_name(tx)
            ),
            None => format!("commit of {}", table_name(tx)),
        };
        return Err(NftError::Refused {
            op,
            errno: a.errno,
            detail: a.detail.clone(),
        });
    }
    let acked = answers.iter().filter(|a| a.errno == 0).count();
    if lost || (ack_each && acked < batch.msgs.len()) {
        return Err(NftError::Lost {
            what: format!("transaction on {}", table_name(tx)),
        });
    }
    Ok(())
}

fn table_name(tx: &Transaction) -> String {
    match tx.family {
        Some(f) => format!("{} {}", f.keyword(), tx.table),
        None => tx.table.clone(),
    }
}

/// Encodes `tx` without sending it: the fake refuses exactly what the encoder refuses.
pub(crate) fn check(tx: &Transaction) -> Result<(), NftError> {
    encode::encode(tx, 0, &HashMap::new(), None).map(|_| ())
}

pub(crate) use encode::describe;
pub(crate) use set::set_flags;
