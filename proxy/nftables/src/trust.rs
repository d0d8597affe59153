//! When a full sync may plan against the backend's own record instead of reading the table
//! back.
//!
//! Reading a table of 10,000 Services back is most of a periodic resync's cost (the kernel's
//! rule dump restarts its walk for every message: ~0.3 s of CPU, quadratic in the rules),
//! and nearly always it finds what the proxy wrote. nf_tables numbers every commit in the
//! namespace — by anyone — with a generation. The backend records, per family, the
//! generation its record is known to describe: the one its read-back saw, moved on by each
//! of its own commits. Those commits carry the generation they were planned at
//! (`NFNL_BATCH_GENID`), so the kernel refuses one that would land on top of someone else's
//! and the next generation is known to be ours. A full sync whose family's recorded
//! generation is still current skips the read-back: nobody committed, so the table is what
//! the proxy wrote. Any other commit in the namespace (another table's owner, `nft`, a
//! drift) moves the generation and brings the read-back back, and it is done at least every
//! [`READ_BACK_EVERY`] regardless (kube-proxy rewrites everything hourly).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_nft::{Family, next_generation};

/// The longest a family goes without a read-back (kube-proxy's `FullSyncPeriod`).
pub const READ_BACK_EVERY: Duration = Duration::from_secs(3600);

/// Per family: the generation the backend's record describes, and when it was last checked
/// against the kernel.
#[derive(Debug)]
pub(crate) struct Trust {
    clean: BTreeMap<Family, u32>,
    read_at: BTreeMap<Family, Instant>,
    every: Duration,
}

impl Trust {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            clean: BTreeMap::new(),
            read_at: BTreeMap::new(),
            every,
        }
    }

    /// Whether a full sync of `family`, with the ruleset now at `now`, can trust the record.
    pub(crate) fn skip_read(&self, family: Family, now: Option<u32>) -> bool {
        let recent = (self.read_at.get(&family)).is_some_and(|t| t.elapsed() < self.every);
        now.is_some() && self.clean.get(&family).copied() == now && recent
    }

    /// After a successful sync of `family` planned at generation `at`: `read_back` when it
    /// was planned against the table read back, `committed` when it sent a transaction
    /// (guarded by `at`: the ruleset is now at the next generation, and it is ours).
    pub(crate) fn synced(
        &mut self,
        family: Family,
        at: Option<u32>,
        read_back: bool,
        committed: bool,
    ) {
        let Some(at) = at else {
            self.clean.clear();
            return;
        };
        if read_back {
            self.clean.insert(family, at);
            self.read_at.insert(family, Instant::now());
        }
        if committed {
            let next = next_generation(at);
            for g in self.clean.values_mut().filter(|g| **g == at) {
                *g = next;
            }
        }
    }

    /// After a failed sync of `family`: its record is not trusted until read back again.
    pub(crate) fn forget(&mut self, family: Family) {
        self.clean.remove(&family);
    }

    /// After `--cleanup`: nothing is trusted.
    pub(crate) fn clear(&mut self) {
        self.clean.clear();
        self.read_at.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: Family = Family::Ip;
    const V6: Family = Family::Ip6;

    #[test]
    fn only_a_read_back_makes_a_record_trusted_and_only_until_someone_else_commits() {
        let mut t = Trust::new(READ_BACK_EVERY);
        assert!(!t.skip_read(V4, Some(7)), "never read back");
        t.synced(V4, Some(7), true, false);
        assert!(t.skip_read(V4, Some(7)));
        assert!(!t.skip_read(V4, Some(8)), "someone committed");
        assert!(!t.skip_read(V4, None), "generation unknown");
        assert!(
            !t.skip_read(V6, Some(7)),
            "the other family was never read back"
        );
    }

    #[test]
    fn own_commits_keep_every_trusted_family_trusted() {
        let mut t = Trust::new(READ_BACK_EVERY);
        t.synced(V4, Some(7), true, false);
        t.synced(V6, Some(7), true, true); // read back, then committed: now 8
        assert!(t.skip_read(V4, Some(8)) && t.skip_read(V6, Some(8)));
        t.synced(V4, Some(8), false, true); // a partial sync: 9
        assert!(t.skip_read(V4, Some(9)) && t.skip_read(V6, Some(9)));
        // A partial sync after someone else's commit (10 → ours makes 11) does not vouch
        // for what that commit did.
        t.synced(V4, Some(10), false, true);
        assert!(!t.skip_read(V4, Some(11)) && !t.skip_read(V6, Some(11)));
    }

    #[test]
    fn failures_unknown_generations_and_age_end_the_trust() {
        let mut t = Trust::new(READ_BACK_EVERY);
        t.synced(V4, Some(7), true, false);
        t.forget(V4);
        assert!(!t.skip_read(V4, Some(7)));
        t.synced(V4, Some(7), true, false);
        t.synced(V6, None, true, false);
        assert!(!t.skip_read(V4, Some(7)), "a kernel without generations");
        let mut t = Trust::new(Duration::ZERO);
        t.synced(V4, Some(7), true, false);
        assert!(!t.skip_read(V4, Some(7)), "read back at least every period");
        assert_eq!(next_generation(u32::MAX), 1, "the kernel skips 0");
    }
}
