//! A full sync's restore input, written into `iptables-restore` while it reads it.
//!
//! Why: at 10,000 Services rendering the 110,000 rules takes ~80 ms, a tenth of an
//! iptables-legacy restore of them. Rendered a chunk of Service ports at a time and written
//! as it comes, the rendering runs while the program parses what came before, and the proxy
//! adds next to nothing to the program's own time.
//!
//! The input differs from [`Rendered::text`](crate::Rendered::text) only in order, where
//! iptables-restore allows it: each chunk declares its own chains right before their rules
//! (a rule may only jump to a declared chain), and the rules of the top-level chains —
//! declared, so flushed, at the start — come after every chunk, since they jump into the
//! chunks' chains; the nat table comes before the filter table, whose rules are known only
//! once every port is rendered (each table is committed on its own, as before). Chains are
//! created in the same order, and every chain holds the same rules in the same order, so
//! `iptables-save` shows what it shows after the buffered text.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

use sluice_model::service::{ServiceName, ServicePort};
use sluice_proxy_core::Snapshot;

use crate::config::IptConfig;
use crate::dump::{Chain, Dump};
use crate::jumps::Missing;
use crate::names::{KUBE_PROXY_CANARY, is_service_chain};
use crate::render::{
    Active, Buffers, ChainOut, Scope, TableOut, by_service, large_cluster, render_ports, tail,
    top_level,
};
use crate::rule::Rule;

/// Service ports rendered and written at a time: ~1,100 rules, ~100 KB, about a millisecond
/// of rendering against several of parsing.
const CHUNK: usize = 100;

/// One full sync: what it is given, and what writing it found.
pub(crate) struct FullSync<'a> {
    cfg: &'a IptConfig,
    snap: &'a Snapshot,
    missing: &'a Missing,
    /// The kernel's nat chains of ours, and whether this sync declared each.
    kernel: HashMap<&'a str, (&'a Chain, bool)>,
    /// What was written, once it was.
    pub(crate) done: Option<Done>,
}

/// What a written full sync amounts to.
pub(crate) struct Done {
    /// Every per-Service chain in use, by Service.
    pub(crate) active: BTreeMap<ServiceName, BTreeSet<String>>,
    /// Rules written to filter and nat.
    pub(crate) filter: usize,
    pub(crate) nat: usize,
    /// nat rules of chains the kernel already holds as rendered, not rewritten.
    pub(crate) skipped_nat: usize,
    /// Chains of ours nothing uses any more, deleted.
    pub(crate) stale: usize,
}

impl<'a> FullSync<'a> {
    pub(crate) fn new(
        cfg: &'a IptConfig,
        snap: &'a Snapshot,
        kernel: &'a Dump,
        missing: &'a Missing,
    ) -> Self {
        let kernel = (kernel.table("nat").map(|t| t.chains.as_slice()))
            .unwrap_or_default()
            .iter()
            .filter(|c| is_service_chain(&c.name))
            .map(|c| (c.name.as_str(), (c, false)))
            .collect();
        Self {
            cfg,
            snap,
            missing,
            kernel,
            done: None,
        }
    }

    /// Writes the whole input: mangle (only what it lacks), nat, filter.
    pub(crate) fn write(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut tops = Buffers::default();
        top_level(self.cfg, &mut tops);
        self.section_head(out, "mangle", &TableOut::default(), true)?;
        self.section_head(out, "nat", &tops.nat, false)?;
        let ports: Vec<&ServicePort> = self.snap.service_ports().collect();
        let large = large_cluster(self.snap);
        let (mut active, mut nat, mut skipped_nat) = (Active::new(), 0, 0);
        for chunk in ports.chunks(CHUNK) {
            let mut b = Buffers::default();
            render_ports(
                self.cfg,
                self.snap,
                Scope::All,
                large,
                chunk,
                &mut b,
                &mut active,
            );
            let mut written = Vec::new();
            for chain in std::mem::take(&mut b.nat.chains) {
                if !is_service_chain(&chain.name) {
                    if !tops.nat.order().any(|c| c == chain.name) {
                        writeln!(out, ":{} - [0:0]", chain.name)?;
                    }
                    let i = tops.nat.declare(&chain.name);
                    tops.nat.chains[i].text.push_str(&chain.text);
                    tops.nat.chains[i].rules += chain.rules;
                    continue;
                }
                if self.unchanged(&chain) {
                    skipped_nat += chain.rules;
                    continue;
                }
                writeln!(out, ":{} - [0:0]", chain.name)?;
                written.push(chain);
            }
            for chain in written {
                out.write_all(chain.text.as_bytes())?;
                nat += chain.rules;
            }
            tops.filter.append(b.filter);
        }
        tail(self.cfg, &mut tops);
        write_rules(out, &tops.nat)?;
        nat += tops.nat.len();
        let stale = self.stale();
        for c in &stale {
            writeln!(out, ":{c} - [0:0]")?;
        }
        for c in &stale {
            writeln!(out, "-X {c}")?;
        }
        self.section_tail(out, "nat")?;
        self.section_head(out, "filter", &tops.filter, false)?;
        write_rules(out, &tops.filter)?;
        self.section_tail(out, "filter")?;
        self.done = Some(Done {
            active: by_service(active),
            filter: tops.filter.len(),
            nat,
            skipped_nat,
            stale: stale.len(),
        });
        Ok(())
    }

    /// Whether the kernel holds `chain` as rendered (marking it declared either way).
    fn unchanged(&mut self, chain: &ChainOut) -> bool {
        let Some((kernel, declared)) = self.kernel.get_mut(chain.name.as_str()) else {
            return false;
        };
        *declared = true;
        same_rules(&kernel.rules, chain.text.lines(), chain.rules)
    }

    /// The kernel's chains of ours this sync did not declare, by name.
    fn stale(&self) -> Vec<String> {
        let mut stale: Vec<&str> = (self.kernel.iter())
            .filter(|(_, (_, declared))| !declared)
            .map(|(name, _)| *name)
            .collect();
        stale.sort_unstable();
        stale.into_iter().map(str::to_owned).collect()
    }

    /// `*TABLE` and its chain lines (the canary's where it lacks one); a mangle section
    /// only when mangle lacks something (`optional`).
    fn section_head(
        &self,
        out: &mut dyn Write,
        table: &str,
        t: &TableOut,
        optional: bool,
    ) -> io::Result<()> {
        let (canary, jumps) = self.missing.of_table(table);
        if optional && !canary && jumps.is_empty() {
            return Ok(());
        }
        writeln!(out, "*{table}")?;
        for c in t.order() {
            writeln!(out, ":{c} - [0:0]")?;
        }
        if canary {
            writeln!(out, ":{KUBE_PROXY_CANARY} - [0:0]")?;
        }
        if optional {
            self.section_tail(out, table)?;
        }
        Ok(())
    }

    /// The jumps `table` lacks, inserted after its chains exist, and `COMMIT`.
    fn section_tail(&self, out: &mut dyn Write, table: &str) -> io::Result<()> {
        for j in self.missing.of_table(table).1 {
            writeln!(out, "{j}")?;
        }
        writeln!(out, "COMMIT")
    }
}

fn write_rules(out: &mut dyn Write, t: &TableOut) -> io::Result<()> {
    t.chains
        .iter()
        .try_for_each(|c| out.write_all(c.text.as_bytes()))
}

/// Whether the kernel's rules of a chain are the rendered ones (both read canonically).
pub(crate) fn same_rules<'r>(
    kernel: &[String],
    rendered: impl Iterator<Item = &'r str>,
    count: usize,
) -> bool {
    kernel.len() == count
        && kernel
            .iter()
            .zip(rendered)
            .all(|(k, r)| match (Rule::parse(k), Rule::parse(r)) {
                (Ok(k), Ok(r)) => k == r,
                _ => false,
            })
}
