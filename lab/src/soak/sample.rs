//! Resident memory and open descriptors of the lab's daemons, sampled through the soak, and
//! what "flat" means for them: the largest value of the last quarter of the run is within a
//! margin of the largest of the first quarter. Maxima, not single samples, so a collection
//! cycle or a burst of work at one instant does not decide; quarters, so the first seconds
//! (caches and pools filling) are compared with the end and not with the empty start.

use std::collections::BTreeMap;

/// Allowed growth of resident memory: the larger of this fraction and [`RSS_SLACK_KIB`].
const RSS_GROWTH: f64 = 0.20;
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// Allowed growth of open descriptors (a connection the pool holds, a log file reopened).
const FD_SLACK: u64 = 4;

/// One daemon's samples, in order.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) rss_kib: Vec<u64>,
    pub(crate) fds: Vec<u64>,
}

/// Every daemon's series, by what the lab calls it (`proxy-node1`).
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub(crate) daemons: BTreeMap<String, Series>,
}

impl Samples {
    /// Adds one sample of each `(name, pid)`; a daemon that is gone adds nothing.
    pub(crate) fn take(&mut self, daemons: &[(String, u32)]) {
        for (name, pid) in daemons {
            let (Some(rss), Some(fds)) = (rss_kib(*pid), fds(*pid)) else {
                continue;
            };
            let series = self.daemons.entry(name.clone()).or_default();
            series.rss_kib.push(rss);
            series.fds.push(fds);
        }
    }
}

/// The numbers one daemon is judged by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) first_max: u64,
    pub(crate) last_max: u64,
    pub(crate) flat: bool,
}

impl Series {
    pub(crate) fn rss(&self) -> Option<Verdict> {
        verdict(&self.rss_kib, |first| {
            let growth = (first as f64 * RSS_GROWTH) as u64;
            first + growth.max(RSS_SLACK_KIB)
        })
    }

    pub(crate) fn fds(&self) -> Option<Verdict> {
        verdict(&self.fds, |first| first + FD_SLACK)
    }
}

/// Start, end, first- and last-quarter maxima, and whether the last stays under `limit(first)`.
fn verdict(values: &[u64], limit: impl Fn(u64) -> u64) -> Option<Verdict> {
    if values.len() < 4 {
        return None;
    }
    let quarter = values.len() / 4;
    let first_max = *values[..quarter].iter().max()?;
    let last_max = *values[values.len() - quarter..].iter().max()?;
    Some(Verdict {
        start: values[0],
        end: *values.last()?,
        first_max,
        last_max,
        flat: last_max <= limit(first_max),
    })
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open descriptors of `pid`.
fn fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    u64::try_from(dir.count()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_compares_quarter_maxima_within_the_margin() {
        let s = Series {
            rss_kib: vec![
                10_000, 30_000, 30_500, 31_000, 31_000, 30_000, 32_000, 37_000,
            ],
            fds: vec![10, 12, 12, 12, 12, 12, 13, 16],
        };
        let rss = s.rss().unwrap();
        assert_eq!((rss.first_max, rss.last_max), (30_000, 37_000));
        assert!(rss.flat, "+7 MiB is within the 8 MiB slack");
        let fds = s.fds().unwrap();
        assert_eq!((fds.first_max, fds.last_max, fds.flat), (12, 16, true));
        let leaking = Series {
            rss_kib: vec![30_000, 30_000, 45_000, 60_000],
            fds: vec![10, 20, 30, 40],
        };
        assert!(!leaking.rss().unwrap().flat);
        assert!(!leaking.fds().unwrap().flat);
        assert!(Series::default().rss().is_none());
    }
}
