//! `iptables-save` output and `iptables-restore` input as data: tables, their chains (with
//! the built-in chains' policy) and each chain's rules as written. The backend reads the
//! kernel's ruleset back through it to find drift, the tracer walks it, and the fake
//! `iptables-restore` applies restore input with it — so all three agree on one reading.

use std::collections::HashMap;
use std::fmt;

/// A parse failure, naming the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {problem}: {text:?}")]
pub struct DumpError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: &'static str,
    /// The line.
    pub text: String,
}

/// One table's chains in the order they were declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// `filter`, `nat`, `mangle`, …
    pub name: String,
    /// The chains, in declaration order.
    pub chains: Vec<Chain>,
    /// Restore input only: `-I CHAIN …` lines, in order, each going on top of its chain's
    /// rules (how a jump goes into a built-in chain without rewriting it).
    pub inserts: Vec<String>,
}

/// One chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// A built-in chain's policy (`ACCEPT`), `None` for a user chain (`-`).
    pub policy: Option<String>,
    /// Its rules, each the whole `-A CHAIN …` line.
    pub rules: Vec<String>,
    /// Restore input only: the chain is deleted (`-X`).
    pub deleted: bool,
}

/// A whole dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// The tables, in the order they appear.
    pub tables: Vec<Table>,
}

impl Dump {
    /// Parses `iptables-save` output or `iptables-restore` input.
    ///
    /// Linear in the input: chains are found through an index while parsing (a save of
    /// 10,000 Services has ~40,000 chains and ~110,000 rules).
    pub fn parse(text: &str) -> Result<Self, DumpError> {
        let mut dump = Dump::default();
        let mut open: Option<Table> = None;
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |problem| DumpError {
                line: i + 1,
                problem,
                text: line.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(table) = open.as_mut() else {
                let name = line
                    .strip_prefix('*')
                    .ok_or_else(|| err("expected a table"))?;
                open = Some(Table {
                    name: name.to_owned(),
                    ..Table::default()
                });
                index.clear();
                continue;
            };
            if line == "COMMIT" {
                dump.tables.extend(open.take());
            } else if let Some(decl) = line.strip_prefix(':') {
                let mut words = decl.split(' ');
                let name = words.next().unwrap_or_default();
                let policy = words.next().ok_or_else(|| err("chain without policy"))?;
                if !index.contains_key(name) {
                    index.insert(name.to_owned(), table.chains.len());
                    table.chains.push(Chain {
                        name: name.to_owned(),
                        policy: (policy != "-").then(|| policy.to_owned()),
                        ..Chain::default()
                    });
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let name = rest.split(' ').next().unwrap_or_default();
                let chain = (index.get(name))
                    .map(|&i| &mut table.chains[i])
                    .ok_or_else(|| err("rule in an undeclared chain"))?;
                if chain.deleted {
                    return Err(err("rule in a deleted chain"));
                }
                chain.rules.push(line.to_owned());
            } else if line.starts_with("-I ") {
                table.inserts.push(line.to_owned());
            } else if let Some(name) = line.strip_prefix("-X ") {
                let chain = (index.get(name))
                    .map(|&i| &mut table.chains[i])
                    .ok_or_else(|| err("deleting an undeclared chain"))?;
                if !chain.rules.is_empty() {
                    return Err(err("deleting a chain after adding rules"));
                }
                chain.deleted = true;
            } else {
                return Err(err("not a table, chain, rule or COMMIT line"));
            }
        }
        match open {
            Some(_) => Err(DumpError {
                line: text.lines().count(),
                problem: "no COMMIT",
                text: String::new(),
            }),
            None => Ok(dump),
        }
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Chain `chain` of table `table`.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.table(table)?.chain(chain)
    }
}

impl Table {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Dump {
    /// The restore-input form (user chains `- [0:0]`, built-ins with their policy).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tables {
            writeln!(f, "*{}", t.name)?;
            for c in &t.chains {
                writeln!(
                    f,
                    ":{} {} [0:0]",
                    c.name,
                    c.policy.as_deref().unwrap_or("-")
                )?;
            }
            for c in &t.chains {
                for r in &c.rules {
                    writeln!(f, "{r}")?;
                }
            }
            for c in t.chains.iter().filter(|c| c.deleted) {
                writeln!(f, "-X {}", c.name)?;
            }
            for i in &t.inserts {
                writeln!(f, "{i}")?;
            }
            writeln!(f, "COMMIT")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_output_and_restore_input_round_trip() {
        let text = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [3:180]\n\
                    :KUBE-SERVICES - [0:0]\n:KUBE-SEP-X - [0:0]\n\
                    -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
                    -X KUBE-SEP-X\n-I PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        let dump = Dump::parse(text).unwrap();
        let nat = dump.table("nat").unwrap();
        assert_eq!(nat.chains[0].policy.as_deref(), Some("ACCEPT"));
        assert_eq!(nat.chain("PREROUTING").unwrap().rules.len(), 1);
        assert!(nat.chain("KUBE-SEP-X").unwrap().deleted);
        assert_eq!(nat.inserts, ["-I PREROUTING -j KUBE-SERVICES"]);
        let again = Dump::parse(&dump.to_string()).unwrap();
        assert_eq!(again, dump);
    }

    #[test]
    fn malformed_input_names_the_line() {
        let err = Dump::parse("*nat\n-A KUBE-X -j DROP\nCOMMIT\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(Dump::parse("*nat\n:A - [0:0]\n").is_err());
        assert!(Dump::parse("-A X\n").is_err());
        assert!(Dump::parse("*nat\n:A - [0:0]\n-A A -j DROP\n-X A\nCOMMIT\n").is_err());
    }
}
