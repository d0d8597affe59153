//! Removing another mode's rules from tables that a starting mode shares with it. The
//! iptables and IPVS modes both write `KUBE-SERVICES`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`,
//! `KUBE-FORWARD` and `KUBE-PROXY-FIREWALL`, so neither mode's whole cleanup can run when the
//! other starts (it would tear down the starting mode's live rules on every restart). What
//! can go is what only the other mode has: its own chains, the rules in any surviving chain
//! that jump to them or match its ipsets, and its jumps from the built-in chains that the
//! starting mode does not write identically. The shared chains keep the rest until the
//! starting mode's first full sync rewrites them.
//!
//! The selection is the caller's ([`Foreign`]); this module reads the tables
//! (`iptables-save`), rewrites each surviving user chain that had such rules and deletes the
//! foreign chains in one `iptables-restore --noflush` per table (atomic per table), and
//! removes the few rules in built-in chains with `iptables -D` (a restore would have to
//! rewrite the built-in chain, which holds other programs' rules too).

use crate::dump::{Chain, Dump};
use crate::exec::{ExecError, Iptables};
use crate::jumps::{JUMPS, jump_line};
use crate::rule::{Rule, words};

/// What of another mode is to go.
pub struct Foreign<'a> {
    /// `(table, chain)`: a chain that only the other mode has.
    pub chain: &'a dyn Fn(&str, &str) -> bool,
    /// An ipset only the other mode has: rules matching it go (the set cannot be destroyed
    /// while a rule matches it).
    pub set: &'a dyn Fn(&str) -> bool,
    /// `(table, "-A CHAIN …")`: further rules of the other mode (its jumps into shared chains
    /// that the starting mode writes differently).
    pub rules: &'a [(&'a str, String)],
}

/// The tables either mode writes.
const TABLES: [&str; 3] = ["nat", "filter", "mangle"];

/// What was removed, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// `table/chain` of each deleted chain.
    pub chains: Vec<String>,
    /// How many rules were taken out of surviving chains.
    pub rules: usize,
}

/// Removes what `foreign` selects from every table; a table whose removal fails is reported
/// after the others were still attempted.
pub fn remove_foreign(ipt: &mut impl Iptables, foreign: &Foreign) -> Result<Removed, ExecError> {
    let mut removed = Removed::default();
    let mut first = None;
    for table in TABLES {
        if let Err(e) = remove_in_table(ipt, table, foreign, &mut removed) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(removed), Err)
}

fn remove_in_table(
    ipt: &mut impl Iptables,
    table: &str,
    foreign: &Foreign,
    removed: &mut Removed,
) -> Result<(), ExecError> {
    let saved = match ipt.save(table) {
        // A table this kernel does not have (ip6tables nat in a minimal kernel) holds nothing.
        Err(e) if e.is_not_found() => return Ok(()),
        other => other?,
    };
    let dump = Dump::parse(&saved).unwrap_or_default();
    let Some(t) = dump.table(table) else {
        return Ok(());
    };
    let doomed: Vec<&Chain> = (t.chains.iter())
        .filter(|c| c.policy.is_none() && (foreign.chain)(table, &c.name))
        .collect();
    let extra: Vec<Rule> = (foreign.rules.iter())
        .filter(|(t, _)| *t == table)
        .filter_map(|(_, l)| Rule::parse(l).ok())
        .collect();
    let goes = |rule: &str| {
        references(rule, |c| doomed.iter().any(|d| d.name == c), foreign.set)
            || Rule::parse(rule).is_ok_and(|r| extra.contains(&r))
    };
    let mut input = format!("*{table}\n");
    let mut builtin_deletes = Vec::new();
    for c in t
        .chains
        .iter()
        .filter(|c| !doomed.iter().any(|d| d.name == c.name))
    {
        let (gone, kept): (Vec<&String>, Vec<&String>) = c.rules.iter().partition(|r| goes(r));
        if gone.is_empty() {
            continue;
        }
        removed.rules += gone.len();
        match c.policy {
            Some(_) => builtin_deletes.extend(gone),
            None => {
                input.push_str(&format!(":{} - [0:0]\n", c.name));
                for r in kept {
                    input.push_str(r);
                    input.push('\n');
                }
            }
        }
    }
    // Built-in chains first: their jumps may lead into the chains deleted below.
    for rule in builtin_deletes {
        let w = words(rule).unwrap_or_default();
        let Some((chain, spec)) = w.get(1).zip(w.get(2..)) else {
            continue;
        };
        let mut args = vec!["-D", chain.as_str(), "-t", table];
        args.extend(spec.iter().map(String::as_str));
        match ipt.run(&args) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    for c in &doomed {
        input.push_str(&format!(":{} - [0:0]\n", c.name));
    }
    for c in &doomed {
        input.push_str(&format!("-X {}\n", c.name));
        removed.chains.push(format!("{table}/{}", c.name));
    }
    if input.lines().count() == 1 {
        return Ok(());
    }
    input.push_str("COMMIT\n");
    ipt.restore(&input)
}

/// Whether `rule` jumps or goes to a chain `chain` selects or matches a set `set` selects.
fn references(rule: &str, chain: impl Fn(&str) -> bool, set: &dyn Fn(&str) -> bool) -> bool {
    let w = words(rule).unwrap_or_default();
    w.windows(2).any(|p| match p[0].as_str() {
        "-j" | "-g" | "--jump" | "--goto" => chain(&p[1]),
        "--match-set" => set(&p[1]),
        _ => false,
    })
}

/// Whether `chain` of `table` is one the iptables mode writes (its fixed chains and, in
/// nat, its per-Service chains).
pub fn is_iptables_chain(table: &str, chain: &str) -> bool {
    use crate::cleanup::{FILTER_CHAINS, NAT_CHAINS};
    use crate::names::{KUBE_PROXY_CANARY, is_service_chain};
    match table {
        "nat" => NAT_CHAINS.contains(&chain) || is_service_chain(chain),
        "filter" => FILTER_CHAINS.contains(&chain),
        "mangle" => chain == KUBE_PROXY_CANARY,
        _ => false,
    }
}

/// The iptables mode's jumps from the built-in chains: `(table, "-A FROM …")`.
pub fn iptables_jumps() -> Vec<(&'static str, String)> {
    JUMPS.iter().map(|j| (j.table, jump_line(j))).collect()
}
