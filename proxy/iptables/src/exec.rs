//! The one place the iptables backend touches the kernel: the `iptables`,
//! `iptables-save` and `iptables-restore` programs (`ip6tables*` for IPv6), of the
//! variant — nf_tables or legacy x_tables — the host's rules already use.
//!
//! [`Iptables`] is the chokepoint; [`Exec`] runs the programs, `FakeIptables` (tests)
//! keeps the tables in memory with iptables-restore's `--noflush` semantics.

use std::io::{self, BufWriter, Write};
use std::process::{Command, Stdio};

use sluice_model::service::IpFamily;

/// A failed iptables program.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: i32,
        /// What it printed on stderr.
        stderr: String,
        /// For a restore, the input line it names (`line N failed`).
        line: Option<usize>,
    },
}

impl ExecError {
    /// Whether the program said that what it was asked to change is not there (kube-proxy's
    /// `IsNotFoundError`): a rule, chain, target or table.
    pub fn is_not_found(&self) -> bool {
        let Self::Failed { stderr, .. } = self else {
            return false;
        };
        [
            "No chain/target/match by that name",
            "No such file or directory",
            "does a matching rule exist",
            "does not exist",
        ]
        .iter()
        .any(|m| stderr.contains(m))
    }

    /// The restore input line the kernel or the parser refused, if named.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Failed { line, .. } => *line,
            Self::Spawn { .. } => None,
        }
    }
}

/// What writes a restore input.
pub type Writes<'a> = dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a;

/// The iptables programs of one family.
pub trait Iptables: Send {
    /// `iptables-restore --noflush --counters` of `input`: chains declared in it are
    /// flushed (created if missing) and refilled, others are left alone.
    fn restore(&mut self, input: &str) -> Result<(), ExecError>;

    /// [`Self::restore`] of the input `write` writes, while the program reads it: a large
    /// input is made while the program parses what came before. By default it is made
    /// first, then restored.
    fn restore_with(&mut self, write: &mut Writes<'_>) -> Result<(), ExecError> {
        let mut input = Vec::new();
        write(&mut input).map_err(|source| ExecError::Spawn {
            program: "iptables-restore (its input)".into(),
            source,
        })?;
        self.restore(&String::from_utf8_lossy(&input))
    }

    /// `iptables-save -t TABLE`.
    fn save(&mut self, table: &str) -> Result<String, ExecError>;

    /// `iptables -w 5 -W 100000 ARGS`: `Ok(true)` on success, `Ok(false)` when it exits 1
    /// (a chain or rule that does not exist, a chain that already does), an error otherwise.
    fn run(&mut self, args: &[&str]) -> Result<bool, ExecError>;
}

/// Which iptables: rules in nf_tables (`iptables-nft`) or in the legacy x_tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft*`.
    Nft,
    /// `iptables-legacy*`.
    Legacy,
}

impl Variant {
    /// The name as the programs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        }
    }

    /// Parses `nft` / `legacy`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nft" => Some(Self::Nft),
            "legacy" => Some(Self::Legacy),
            _ => None,
        }
    }

    /// The variant kube-proxy's image (iptables-wrapper) would pick: the one holding the
    /// kubelet's mangle chains (`KUBE-IPTABLES-HINT`, `KUBE-KUBELET-CANARY`), nf_tables
    /// first; nf_tables when neither does. `iptables-legacy-save` is run without `-t` so it
    /// never creates a table that did not exist.
    pub fn detect() -> Self {
        let has_hint = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| hint(&String::from_utf8_lossy(&o.stdout)))
        };
        for program in ["iptables-nft-save", "ip6tables-nft-save"] {
            if has_hint(program, &["-t", "mangle"]) {
                return Self::Nft;
            }
        }
        for program in ["iptables-legacy-save", "ip6tables-legacy-save"] {
            if has_hint(program, &[]) {
                return Self::Legacy;
            }
        }
        Self::Nft
    }
}

impl Variant {
    /// Whether this variant's tables hold kube-proxy's (or Sluice's) chains, in either
    /// family; read without `-t`, so no table is created by looking.
    pub fn holds_proxy_chains(self) -> bool {
        ["iptables", "ip6tables"].into_iter().any(|base| {
            Command::new(format!("{base}-{}-save", self.as_str()))
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| {
                    let text = String::from_utf8_lossy(&o.stdout);
                    text.lines().any(|l| {
                        l.starts_with(":KUBE-PROXY-CANARY ") || l.starts_with(":KUBE-SERVICES ")
                    })
                })
        })
    }
}

/// Whether save output declares a kubelet chain.
fn hint(save: &str) -> bool {
    save.lines()
        .any(|l| l.starts_with(":KUBE-IPTABLES-HINT ") || l.starts_with(":KUBE-KUBELET-CANARY "))
}

/// The real programs.
#[derive(Clone, Debug)]
pub struct Exec {
    base: &'static str,
    variant: Variant,
}

impl Exec {
    /// The programs of `family` in `variant`.
    pub fn new(family: IpFamily, variant: Variant) -> Self {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        Self { base, variant }
    }

    fn program(&self, suffix: &str) -> String {
        format!("{}-{}{suffix}", self.base, self.variant.as_str())
    }

    fn exec(&self, suffix: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ExecError> {
        match stdin {
            Some(input) => {
                self.exec_with(suffix, args, Some(&mut |w| w.write_all(input.as_bytes())))
            }
            None => self.exec_with(suffix, args, None),
        }
    }

    /// Runs the program, its stdin written by `stdin` while it runs. A program that fails
    /// before reading all of it (a broken pipe) is reported by its own failure.
    fn exec_with(
        &self,
        suffix: &str,
        args: &[&str],
        stdin: Option<&mut Writes<'_>>,
    ) -> Result<String, ExecError> {
        let program = self.program(suffix);
        let spawn = |source| ExecError::Spawn {
            program: program.clone(),
            source,
        };
        let mut child = Command::new(&program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        let mut written = Ok(());
        if let (Some(write), Some(pipe)) = (stdin, child.stdin.take()) {
            let mut pipe = BufWriter::with_capacity(1 << 16, pipe);
            written = write(&mut pipe).and_then(|()| pipe.flush());
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if out.status.success() {
            written.map_err(spawn)?;
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(ExecError::Failed {
            line: failed_line(&stderr),
            program,
            args: args.join(" "),
            status: out.status.code().unwrap_or(-1),
            stderr,
        })
    }
}

/// `iptables-restore: line 12 failed` → 12.
fn failed_line(stderr: &str) -> Option<usize> {
    let rest = stderr.split("line ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The lock and wait flags kube-proxy passes (iptables ≥ 1.6.2).
const WAIT: [&str; 4] = ["-w", "5", "-W", "100000"];

impl Exec {
    /// Whether `MASQUERADE --random-fully` is understood (iptables ≥ 1.6.2); an error when
    /// the program does not run at all.
    pub fn supports_random_fully(&self) -> Result<bool, ExecError> {
        let out = self.exec("", &["--version"], None)?;
        Ok(version(&out).is_some_and(|v| v >= (1, 6, 2)))
    }
}

/// `iptables v1.8.9 (nf_tables)` → (1, 8, 9).
fn version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

impl Iptables for Exec {
    fn restore(&mut self, input: &str) -> Result<(), ExecError> {
        let mut args = WAIT.to_vec();
        args.extend(["--noflush", "--counters"]);
        self.exec("-restore", &args, Some(input)).map(drop)
    }

    fn restore_with(&mut self, write: &mut Writes<'_>) -> Result<(), ExecError> {
        let mut args = WAIT.to_vec();
        args.extend(["--noflush", "--counters"]);
        self.exec_with("-restore", &args, Some(write)).map(drop)
    }

    fn save(&mut self, table: &str) -> Result<String, ExecError> {
        self.exec("-save", &["-t", table], None)
    }

    fn run(&mut self, args: &[&str]) -> Result<bool, ExecError> {
        let mut all = WAIT.to_vec();
        all.extend_from_slice(args);
        match self.exec("", &all, None) {
            Ok(_) => Ok(true),
            Err(ExecError::Failed { status: 1, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_line_is_read_from_stderr() {
        assert_eq!(failed_line("iptables-restore: line 12 failed"), Some(12));
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (nf_tables): line 3 failed: x"),
            Some(3)
        );
        assert_eq!(
            failed_line("Another app is currently holding the xtables lock"),
            None
        );
    }

    #[test]
    fn versions_are_read_as_iptables_prints_them() {
        assert_eq!(version("iptables v1.8.9 (nf_tables)\n"), Some((1, 8, 9)));
        assert_eq!(version("iptables v1.6.1"), Some((1, 6, 1)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn kubelet_chains_mark_the_variant() {
        assert!(hint("*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"));
        assert!(!hint("*mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"));
    }

    #[test]
    fn programs_are_named_by_family_and_variant() {
        assert_eq!(
            Exec::new(IpFamily::V6, Variant::Legacy).program("-save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(
            Exec::new(IpFamily::V4, Variant::Nft).program(""),
            "iptables-nft"
        );
    }
}
