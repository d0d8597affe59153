//! What to change, pure: the real servers of one virtual server, held against what is
//! programmed (read back on full syncs, remembered on partial ones).

use std::collections::BTreeSet;

use crate::types::{RealServer, RsKey};

/// The changes to one virtual server's real servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsDiff {
    /// To add with weight 1.
    pub add: Vec<RsKey>,
    /// Present with another weight (a terminating one coming back, drift): set weight 1.
    pub reweight: Vec<RsKey>,
    /// Present, no longer wanted, not already terminating: to remove (gracefully for TCP).
    pub remove: Vec<RsKey>,
}

impl RsDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.reweight.is_empty() && self.remove.is_empty()
    }
}

/// `have` → `want`; `terminating` says which present real servers are already being
/// removed gracefully (left alone unless wanted again).
pub fn real_servers(
    want: &BTreeSet<RsKey>,
    have: &[RealServer],
    terminating: impl Fn(&RsKey) -> bool,
) -> RsDiff {
    let mut d = RsDiff::default();
    let present: BTreeSet<RsKey> = have.iter().map(|r| r.key).collect();
    for r in have {
        match want.contains(&r.key) {
            true if r.weight != 1 || terminating(&r.key) => d.reweight.push(r.key),
            true => {}
            false if !terminating(&r.key) => d.remove.push(r.key),
            false => {}
        }
    }
    d.add = want.difference(&present).copied().collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(last: u8, weight: i32) -> RealServer {
        RealServer::new(std::net::IpAddr::from([10, 244, 0, last]), 80, weight)
    }

    #[test]
    fn adds_removes_and_reweights_only_what_differs() {
        let want: BTreeSet<RsKey> = [rs(1, 1).key, rs(2, 1).key, rs(4, 1).key].into();
        let have = [rs(1, 1), rs(2, 0), rs(3, 1)];
        let d = real_servers(&want, &have, |_| false);
        assert_eq!(d.add, vec![rs(4, 1).key]);
        assert_eq!(d.reweight, vec![rs(2, 1).key]);
        assert_eq!(d.remove, vec![rs(3, 1).key]);
        assert!(real_servers(&want, &[rs(1, 1), rs(2, 1), rs(4, 1)], |_| false).is_empty());
    }

    #[test]
    fn terminating_real_servers_are_left_alone_until_wanted_again() {
        let want: BTreeSet<RsKey> = [rs(1, 1).key].into();
        let have = [rs(1, 1), rs(2, 0)];
        let d = real_servers(&want, &have, |k| *k == rs(2, 0).key);
        assert!(d.is_empty(), "{d:?}");
        let want: BTreeSet<RsKey> = [rs(1, 1).key, rs(2, 1).key].into();
        let d = real_servers(&want, &have, |k| *k == rs(2, 0).key);
        assert_eq!(d.reweight, vec![rs(2, 1).key]);
    }
}
