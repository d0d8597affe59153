//! Sends the transactions of one sync. A large full sync is several transactions (parts of
//! whole Services, planned against one view of the table): each is guarded by the ruleset
//! generation the one before it left, and they are applied on a thread of their own while
//! the next part is planned, so the kernel's commit of one part — most of a cold sync's
//! time — overlaps the rendering and diffing of the next (issue 14: the two were ~0.5 and
//! ~0.2 s of a 10,000-Service cold sync, one after the other).

use std::collections::BTreeMap;
use std::sync::mpsc;

use sluice_nft::{Family, NftError, NftKernel, Transaction, next_generation};

use super::ctx::TABLE;
use super::state::{Pending, summary};

/// The applying thread stopped (it failed; its error is the sync's).
#[derive(Debug)]
pub(crate) struct Stopped;

/// Sends one sync's transactions and keeps the parts the kernel accepted.
pub(crate) struct Sender<'k, K> {
    kernel: &'k mut K,
    family: Family,
    /// The generation the next (or, once sent, the last) transaction is guarded by.
    pub(crate) at: Option<u32>,
    /// Transactions the kernel accepted.
    pub(crate) sent: usize,
    /// What they did, for the log.
    pub(crate) counts: BTreeMap<&'static str, usize>,
}

impl<'k, K: NftKernel + Send> Sender<'k, K> {
    /// Sends for `family`, the first transaction guarded by `at`.
    pub(crate) fn new(kernel: &'k mut K, family: Family, at: Option<u32>) -> Self {
        Self {
            kernel,
            family,
            at,
            sent: 0,
            counts: BTreeMap::new(),
        }
    }

    /// Applies `part`'s transaction, unless it changes nothing, and gives the part back
    /// without its operations, to be recorded.
    pub(crate) fn take(&mut self, mut part: Pending) -> Result<Pending, NftError> {
        for w in &part.warnings {
            tracing::warn!("{w}");
        }
        if !part.is_empty() {
            let tx = std::mem::replace(&mut part.tx, Transaction::new(self.family, TABLE));
            self.apply(tx)?;
        }
        // What the part and its planning freed (its operations, its batch, the kernel's
        // view it consumed) goes back now, sent or not: a restart adopting the table sends
        // nothing, and its garbage would still be resident when the record is built.
        sluice_proxy_core::memory::release();
        Ok(part)
    }

    fn apply(&mut self, tx: Transaction) -> Result<(), NftError> {
        for (k, n) in summary(&tx) {
            *self.counts.entry(k).or_default() += n;
        }
        if self.sent > 0 {
            self.at = self.at.map(next_generation);
        }
        match self.at {
            Some(g) => self.kernel.apply_at(&tx, g)?,
            None => self.kernel.apply(&tx)?,
        }
        self.sent += 1;
        Ok(())
    }

    /// Runs `plan`, applying each part it hands over on another thread while it plans the
    /// next. The hand-over is a rendezvous: one part is applied while at most one more
    /// waits, planned (~1.5 MiB of operations at [`crate::PART_OPS`]); it returns the parts
    /// applied since the last one, to be recorded while the next is applied. The kernel
    /// sees the parts in order; after a refusal the planning stops at its next hand-over,
    /// and the refusal is the result, with the parts applied and not yet handed back.
    /// Without a thread (none could be started) it applies them in turn.
    pub(crate) fn pipelined(
        &mut self,
        plan: impl FnOnce(&mut Hand<'_>) -> Handed,
    ) -> (Result<(), NftError>, Vec<Pending>) {
        let mut plan = Some(plan);
        let span = tracing::Span::current();
        let threaded = std::thread::scope(|scope| {
            let (hand, parts) = mpsc::sync_channel::<Pending>(0);
            let (done, applied) = mpsc::channel::<Pending>();
            let this = &mut *self;
            let apply = move || {
                let _in = span.enter();
                for part in parts {
                    // The receiver lives until this thread is joined: the send cannot fail.
                    let _ = done.send(this.take(part)?);
                }
                Ok(())
            };
            let spawned = std::thread::Builder::new()
                .name("nft-apply".into())
                .spawn_scoped(scope, apply);
            let applier = match spawned {
                Ok(applier) => applier,
                Err(e) => {
                    tracing::debug!("no thread to apply on ({e}): planning and applying in turn");
                    return None;
                }
            };
            let plan = plan.take().expect("the plan runs once");
            let planned = plan(&mut |part| {
                hand.send(part).map_err(|_| Stopped)?;
                Ok(applied.try_iter().collect())
            });
            drop(hand);
            let result = applier
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // The hand-over only fails once the applier stopped, which it does on an error.
            debug_assert!(result.is_err() || planned.is_ok());
            Some((result, applied.try_iter().collect()))
        });
        if let Some(outcome) = threaded {
            return outcome;
        }
        let plan = plan.take().expect("the plan runs once");
        let mut refused = None;
        let _ = plan(&mut |part| match self.take(part) {
            Ok(part) => Ok(vec![part]),
            Err(e) => {
                refused = Some(e);
                Err(Stopped)
            }
        });
        (refused.map_or(Ok(()), Err), Vec::new())
    }
}

/// Hands a planned part over to be applied; returns the parts applied since the last.
pub(crate) type Hand<'a> = dyn FnMut(Pending) -> Result<Vec<Pending>, Stopped> + 'a;

/// A plan's result: [`Stopped`] once the parts are no longer taken.
pub(crate) type Handed = Result<(), Stopped>;
