//! [`FakeIptables`]: the iptables programs in memory, for the backend's unit tests — what
//! `iptables-restore --noflush` does to declared chains, `-X` refused while a rule still
//! jumps to the chain, jumps to missing chains refused, the whole input applied or nothing.

use std::collections::BTreeMap;

use crate::dump::{Chain, Dump, Table};
use crate::exec::{ExecError, Iptables};
use crate::rule::Rule;

/// Targets that are not chains.
const STANDARD_TARGETS: [&str; 9] = [
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "MARK",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "LOG",
];

/// In-memory tables with iptables' semantics.
#[derive(Clone, Debug)]
pub struct FakeIptables {
    tables: BTreeMap<String, Table>,
    /// Every restore input, in order.
    pub restores: Vec<String>,
    /// Every `iptables` invocation's arguments, in order.
    pub runs: Vec<String>,
    /// Number of `iptables-save` calls.
    pub saves: usize,
    /// The next restore fails (as the kernel refusing it would).
    pub fail_next_restore: bool,
}

fn builtin(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        _ => &[],
    }
}

fn new_table(name: &str) -> Table {
    Table {
        name: name.to_owned(),
        inserts: Vec::new(),
        chains: (builtin(name).iter())
            .map(|c| Chain {
                name: (*c).to_owned(),
                policy: Some("ACCEPT".into()),
                ..Chain::default()
            })
            .collect(),
    }
}

impl Default for FakeIptables {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeIptables {
    /// Empty filter, nat and mangle tables.
    pub fn new() -> Self {
        Self {
            tables: ["filter", "nat", "mangle"]
                .into_iter()
                .map(|t| (t.to_owned(), new_table(t)))
                .collect(),
            restores: Vec::new(),
            runs: Vec::new(),
            saves: 0,
            fail_next_restore: false,
        }
    }

    /// The tables as a dump.
    pub fn dump(&self) -> Dump {
        Dump {
            tables: self.tables.values().cloned().collect(),
        }
    }

    /// Chain `chain` of `table`.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.tables.get(table)?.chain(chain)
    }

    /// The last restore input.
    pub fn last_restore(&self) -> &str {
        self.restores.last().map(String::as_str).unwrap_or_default()
    }

    fn table_mut(&mut self, name: &str) -> &mut Table {
        self.tables
            .entry(name.to_owned())
            .or_insert_with(|| new_table(name))
    }
}

fn failed(program: &str, args: &str, stderr: String) -> ExecError {
    ExecError::Failed {
        program: program.into(),
        args: args.into(),
        status: 1,
        line: None,
        stderr,
    }
}

fn jumps(rule: &str) -> Option<String> {
    Rule::parse(rule).ok()?.target.map(|t| t.name)
}

/// Applies one table of restore input to `table`.
fn restore_table(table: &mut Table, input: &Table) -> Result<(), String> {
    for chain in &input.chains {
        match table.chains.iter_mut().find(|c| c.name == chain.name) {
            Some(c) => c.rules.clone_from(&chain.rules),
            None => table.chains.push(Chain {
                deleted: false,
                ..chain.clone()
            }),
        }
    }
    for gone in input.chains.iter().filter(|c| c.deleted) {
        let referenced = (table.chains.iter())
            .flat_map(|c| &c.rules)
            .any(|r| jumps(r).as_deref() == Some(&gone.name));
        if referenced {
            return Err(format!(
                "deleted chain {:?} is referenced by existing rules",
                gone.name
            ));
        }
        table.chains.retain(|c| c.name != gone.name);
    }
    for insert in &input.inserts {
        let rest = insert.strip_prefix("-I ").unwrap_or_default();
        let name = rest.split(' ').next().unwrap_or_default();
        let chain = (table.chains.iter_mut().find(|c| c.name == name))
            .ok_or_else(|| format!("{insert:?} into a missing chain"))?;
        chain.rules.insert(0, format!("-A {rest}"));
    }
    for rule in table.chains.iter().flat_map(|c| &c.rules) {
        if let Some(target) = jumps(rule)
            && !STANDARD_TARGETS.contains(&target.as_str())
            && table.chain(&target).is_none()
        {
            return Err(format!("rule {rule:?} jumps to missing chain {target:?}"));
        }
    }
    Ok(())
}

/// Quotes words holding spaces, as a shell-less argv would have kept them.
fn join_args(args: &[&str]) -> String {
    (args.iter())
        .map(|a| match a.contains(' ') {
            true => format!("\"{a}\""),
            false => (*a).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Iptables for FakeIptables {
    fn restore(&mut self, input: &str) -> Result<(), ExecError> {
        self.restores.push(input.to_owned());
        if std::mem::take(&mut self.fail_next_restore) {
            return Err(failed(
                "iptables-restore",
                "--noflush",
                "line 2 failed".into(),
            ));
        }
        let dump = Dump::parse(input).map_err(|e| failed("iptables-restore", "", e.to_string()))?;
        let mut next = self.tables.clone();
        for t in &dump.tables {
            let table = next
                .entry(t.name.clone())
                .or_insert_with(|| new_table(&t.name));
            restore_table(table, t).map_err(|e| failed("iptables-restore", "--noflush", e))?;
        }
        self.tables = next;
        Ok(())
    }

    fn save(&mut self, table: &str) -> Result<String, ExecError> {
        self.saves += 1;
        let dump = Dump {
            tables: self.tables.get(table).cloned().into_iter().collect(),
        };
        Ok(dump.to_string())
    }

    fn run(&mut self, args: &[&str]) -> Result<bool, ExecError> {
        let joined = join_args(args);
        self.runs.push(joined.clone());
        let table_at = args.iter().position(|a| *a == "-t");
        let table = table_at
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or("filter");
        let (Some(op), Some(chain)) = (args.first(), args.get(1)) else {
            return Err(failed("iptables", &joined, "no operation".into()));
        };
        let spec: Vec<&str> = (args.iter().enumerate())
            .skip(2)
            .filter(|(i, _)| table_at.is_none_or(|t| *i != t && *i != t + 1))
            .map(|(_, a)| *a)
            .collect();
        let line = format!("-A {chain} {}", join_args(&spec));
        let t = self.table_mut(table);
        let exists = t.chain(chain).is_some();
        let find = |t: &Table| -> Option<usize> {
            let want = Rule::parse(&line).ok()?;
            t.chain(chain)?
                .rules
                .iter()
                .position(|r| Rule::parse(r).ok().as_ref() == Some(&want))
        };
        Ok(match *op {
            "-N" if exists => false,
            "-N" => {
                t.chains.push(Chain {
                    name: (*chain).to_owned(),
                    ..Chain::default()
                });
                true
            }
            "-S" => exists,
            "-X" => {
                let used = (t.chains.iter().flat_map(|c| &c.rules))
                    .any(|r| jumps(r).as_deref() == Some(chain));
                if used {
                    return Err(failed("iptables", &joined, "Too many links".into()));
                }
                t.chains.retain(|c| c.name != *chain);
                exists
            }
            "-F" => match t.chains.iter_mut().find(|c| c.name == *chain) {
                Some(c) => {
                    c.rules.clear();
                    true
                }
                None => false,
            },
            "-C" => find(t).is_some(),
            "-D" => match find(t) {
                Some(i) => {
                    t.chains
                        .iter_mut()
                        .find(|c| c.name == *chain)
                        .map(|c| c.rules.remove(i));
                    true
                }
                None => false,
            },
            "-I" | "-A" => match t.chains.iter_mut().find(|c| c.name == *chain) {
                Some(c) if *op == "-I" => {
                    c.rules.insert(0, line);
                    true
                }
                Some(c) => {
                    c.rules.push(line);
                    true
                }
                None => false,
            },
            _ => return Err(failed("iptables", &joined, "unknown operation".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::words;

    #[test]
    fn noflush_restore_flushes_declared_chains_only() {
        let mut f = FakeIptables::new();
        f.restore("*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\n-A KUBE-B -j RETURN\nCOMMIT\n")
            .unwrap();
        f.restore("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j RETURN\nCOMMIT\n")
            .unwrap();
        assert_eq!(
            f.chain("nat", "KUBE-A").unwrap().rules,
            ["-A KUBE-A -j RETURN"]
        );
        assert_eq!(f.chain("nat", "KUBE-B").unwrap().rules.len(), 1);
    }

    #[test]
    fn deleting_a_referenced_chain_fails_and_changes_nothing() {
        let mut f = FakeIptables::new();
        f.restore("*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -j KUBE-B\nCOMMIT\n")
            .unwrap();
        let before = f.dump();
        assert!(
            f.restore("*nat\n:KUBE-B - [0:0]\n-X KUBE-B\nCOMMIT\n")
                .is_err()
        );
        assert_eq!(f.dump(), before);
        assert!(
            f.restore("*nat\n:KUBE-C - [0:0]\n-A KUBE-C -j KUBE-MISSING\nCOMMIT\n")
                .is_err()
        );
    }

    #[test]
    fn ensure_rule_and_chain_as_kube_proxy_calls_them() {
        let mut f = FakeIptables::new();
        assert!(f.run(&["-N", "KUBE-SERVICES", "-t", "nat"]).unwrap());
        assert!(!f.run(&["-N", "KUBE-SERVICES", "-t", "nat"]).unwrap());
        let rule = [
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ];
        let check: Vec<&str> = ["-C", "OUTPUT", "-t", "nat"]
            .into_iter()
            .chain(rule)
            .collect();
        assert!(!f.run(&check).unwrap());
        let insert: Vec<&str> = ["-I", "OUTPUT", "-t", "nat"]
            .into_iter()
            .chain(rule)
            .collect();
        assert!(f.run(&insert).unwrap());
        assert!(f.run(&check).unwrap());
        assert!(f.run(&["-S", "KUBE-SERVICES", "-t", "nat"]).unwrap());
        assert!(f.run(&["-X", "KUBE-SERVICES", "-t", "nat"]).is_err());
        assert_eq!(
            words(&f.chain("nat", "OUTPUT").unwrap().rules[0]).unwrap()[5],
            "kubernetes service portals"
        );
    }
}
