//! What the kernel reports, as a [`Desired`] the full sync can diff against. Rules are not
//! decoded back: a chain whose rule fingerprints equal those of the rules we would write
//! counts as identical (nothing to do, so a restart adopts the table without touching it);
//! any other chain — flushed by someone, holding a foreign rule, or stale — gets a
//! placeholder body that the diff flushes and refills or deletes.

use sluice_nft::{Family, Rule, Stmt, TableState, fingerprint};

use super::desired::{ChainBody, Desired};

/// The kernel's `table` seen through `want` (the full desired table).
pub(crate) fn view(family: Family, table: &TableState, want: &Desired) -> Desired {
    let mut d = Desired::default();
    for set in &table.sets {
        let def = want
            .sets
            .get(&set.def.name)
            .cloned()
            .unwrap_or_else(|| set.def.clone());
        // A dynamic set's elements are the packet path's (session-affinity clients), never
        // ours to diff: copied here they would all be deleted by every full sync.
        if def.timeout.is_none() {
            for e in &set.elements {
                d.element(&def.name, e.clone());
            }
        }
        d.set(def);
    }
    for chain in &table.chains {
        let name = &chain.def.name;
        let wanted = want.chains.get(name);
        let same = wanted.is_some_and(|w| {
            !chain.unrecognised
                && w.rules.len() == chain.rules.len()
                && w.rules
                    .iter()
                    .zip(&chain.rules)
                    .all(|(r, k)| k.fingerprint == Some(fingerprint(family, r)))
        });
        let rules = match wanted {
            Some(w) if same => w.rules.clone(),
            _ => placeholder(chain.rules.len()),
        };
        let def = wanted.map_or_else(|| chain.def.clone(), |w| w.def.clone());
        d.chains.insert(name.clone(), ChainBody { def, rules });
    }
    d
}

/// `n` rules that never equal a rendered rule (an empty chain stays empty).
fn placeholder(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|_| Rule::new(vec![Stmt::Counter]).with_comment("not ours"))
        .collect()
}
