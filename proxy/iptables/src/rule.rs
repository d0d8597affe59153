//! One rule as data, read from restore input or from `iptables-save` output, in a canonical
//! form where both readings of the same rule compare equal.
//!
//! `iptables-save` does not print rules as they were written: the base matches move to the
//! front (`-s`, `-d`, `-i`, `-o`, `-p`), addresses gain a prefix length, comments are always
//! quoted, `MARK --or-mark M` comes back as `--set-xmark M/M`, `recent` lists its options in
//! its own order with its defaults added, REJECT names its default, and a probability comes
//! back as the kernel's fixed-point value printed with eleven digits. [`Rule::parse`] undoes
//! all of that, so the backend can tell a chain that drifted from one that is only printed
//! differently, and the tracer reads one form.

use std::net::IpAddr;

use ipnet::IpNet;

/// A base match (`[!] -s|-d|-i|-o|-p VALUE`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Base {
    /// The option letter: `s`, `d`, `i`, `o` or `p`.
    pub flag: char,
    /// `!` before it.
    pub negated: bool,
    /// Its value (addresses as CIDRs).
    pub value: String,
}

/// One option of a match or target: `[!] --name values…`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Opt {
    /// The option without its dashes.
    pub name: String,
    /// `!` before it.
    pub negated: bool,
    /// Its values.
    pub values: Vec<String>,
}

/// A match module (`-m NAME opts…`) or the target (`-j NAME opts…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The module or target name.
    pub name: String,
    /// Its options, sorted by name (their order carries no meaning).
    pub opts: Vec<Opt>,
}

impl Part {
    /// The values of option `name`.
    pub fn opt(&self, name: &str) -> Option<&Opt> {
        self.opts.iter().find(|o| o.name == name)
    }

    /// The first value of option `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.opt(name)?.values.first().map(String::as_str)
    }
}

/// A rule in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is in.
    pub chain: String,
    /// Base matches, sorted.
    pub base: Vec<Base>,
    /// Match modules in order.
    pub matches: Vec<Part>,
    /// The target, if any (a rule without one only counts).
    pub target: Option<Part>,
}

/// Why a rule line could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// Not an `-A CHAIN …` line.
    #[error("not a rule: {0:?}")]
    NotARule(String),
    /// A quote is not closed.
    #[error("unterminated quote in {0:?}")]
    Quote(String),
    /// A word where an option was expected.
    #[error("unexpected {word:?} in {line:?}")]
    Unexpected {
        /// The word.
        word: String,
        /// The line.
        line: String,
    },
}

/// Splits a rule line into words, as iptables-restore does: double quotes group, a backslash
/// escapes a quote inside them.
pub fn words(line: &str) -> Result<Vec<String>, RuleError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(RuleError::Quote(line.to_owned()));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

impl Rule {
    /// Reads `-A CHAIN …` (restore input or save output).
    pub fn parse(line: &str) -> Result<Self, RuleError> {
        let words = words(line)?;
        let mut it = words.into_iter().peekable();
        if it.next().as_deref() != Some("-A") {
            return Err(RuleError::NotARule(line.to_owned()));
        }
        let chain = it
            .next()
            .ok_or_else(|| RuleError::NotARule(line.to_owned()))?;
        let mut rule = Rule {
            chain,
            base: Vec::new(),
            matches: Vec::new(),
            target: None,
        };
        let unexpected = |word: String| RuleError::Unexpected {
            word,
            line: line.to_owned(),
        };
        let mut negated = false;
        while let Some(w) = it.next() {
            match w.as_str() {
                "!" => negated = true,
                "-s" | "-d" | "-i" | "-o" | "-p" | "--source" | "--destination" | "--protocol"
                | "--in-interface" | "--out-interface" => {
                    let value = it.next().ok_or_else(|| unexpected(w.clone()))?;
                    let flag = base_flag(&w);
                    let value = match flag {
                        's' | 'd' => cidr(&value),
                        _ => value,
                    };
                    rule.base.push(Base {
                        flag,
                        negated: std::mem::take(&mut negated),
                        value,
                    });
                }
                "-m" | "--match" => {
                    let name = it.next().ok_or_else(|| unexpected(w))?;
                    rule.matches.push(Part {
                        name,
                        opts: Vec::new(),
                    });
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    let name = it.next().ok_or_else(|| unexpected(w))?;
                    rule.target = Some(Part {
                        name,
                        opts: Vec::new(),
                    });
                }
                opt if opt.starts_with("--") => {
                    let mut values = Vec::new();
                    while let Some(v) = it.next_if(|v| !v.starts_with('-') && v != "!") {
                        values.push(v);
                    }
                    let part = match rule.target.as_mut() {
                        Some(t) => t,
                        None => rule
                            .matches
                            .last_mut()
                            .ok_or_else(|| unexpected(w.clone()))?,
                    };
                    part.opts.push(Opt {
                        name: opt.trim_start_matches('-').to_owned(),
                        negated: std::mem::take(&mut negated),
                        values,
                    });
                }
                _ => return Err(unexpected(w)),
            }
        }
        rule.canonicalize();
        Ok(rule)
    }

    fn canonicalize(&mut self) {
        self.base.sort();
        for part in self.matches.iter_mut().chain(self.target.as_mut()) {
            canonical_part(part);
            part.opts.sort();
        }
    }

    /// The match module `name`.
    pub fn module(&self, name: &str) -> Option<&Part> {
        self.matches.iter().find(|m| m.name == name)
    }

    /// The base match with letter `flag`.
    pub fn base(&self, flag: char) -> Option<&Base> {
        self.base.iter().find(|b| b.flag == flag)
    }

    /// The comment, if any.
    pub fn comment(&self) -> Option<&str> {
        self.module("comment")?.value("comment")
    }

    /// The target's name.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.name.as_str())
    }
}

fn base_flag(w: &str) -> char {
    match w {
        "--source" => 's',
        "--destination" => 'd',
        "--protocol" => 'p',
        "--in-interface" => 'i',
        "--out-interface" => 'o',
        _ => w.chars().nth(1).unwrap_or('?'),
    }
}

/// An address as a CIDR (`10.0.0.1` → `10.0.0.1/32`), a CIDR masked to its network.
fn cidr(value: &str) -> String {
    if let Ok(net) = value.parse::<IpNet>() {
        return net.trunc().to_string();
    }
    match value.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip).to_string(),
        Err(_) => value.to_owned(),
    }
}

/// `0x004000` and `0x4000` alike; `M/M` per half.
fn hex(value: &str) -> String {
    value
        .split('/')
        .map(
            |v| match u32::from_str_radix(v.trim_start_matches("0x"), 16) {
                Ok(n) if v.starts_with("0x") => format!("{n:#x}"),
                _ => v.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn set_opt(part: &mut Part, name: &str, values: Vec<String>) {
    part.opts.retain(|o| o.name != name);
    part.opts.push(Opt {
        name: name.into(),
        negated: false,
        values,
    });
}

fn canonical_part(part: &mut Part) {
    match part.name.as_str() {
        "mark" => {
            for o in &mut part.opts {
                o.values = o.values.iter().map(|v| hex(v)).collect();
            }
        }
        "MARK" => {
            let rewrite = |o: &Opt| -> Option<String> {
                let v = o.values.first()?;
                Some(match o.name.as_str() {
                    "or-mark" => format!("{}/{}", hex(v), hex(v)),
                    "xor-mark" => format!("{}/0x0", hex(v)),
                    "set-mark" if !v.contains('/') => format!("{}/0xffffffff", hex(v)),
                    "set-mark" | "set-xmark" => hex(v),
                    _ => return None,
                })
            };
            if let Some(v) = part.opts.iter().find_map(rewrite) {
                part.opts.clear();
                set_opt(part, "set-xmark", vec![v]);
            }
        }
        "recent" => {
            let default_mask = |o: &Opt| {
                o.name == "mask"
                    && ["255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
                        .contains(&o.values.first().map(String::as_str).unwrap_or_default())
            };
            part.opts
                .retain(|o| !default_mask(o) && o.name != "rsource");
        }
        "statistic" => {
            for o in part.opts.iter_mut().filter(|o| o.name == "probability") {
                if let Some(p) = o.values.first().and_then(|v| v.parse::<f64>().ok()) {
                    o.values = vec![fixed_point(p).to_string()];
                }
            }
        }
        "conntrack" => {
            for o in part.opts.iter_mut().filter(|o| o.name == "ctstate") {
                if let Some(v) = o.values.first_mut() {
                    let mut states: Vec<&str> = v.split(',').collect();
                    states.sort_unstable();
                    *v = states.join(",");
                }
            }
        }
        "REJECT" => part.opts.retain(|o| {
            !(o.name == "reject-with"
                && ["icmp-port-unreachable", "icmp6-port-unreachable"]
                    .contains(&o.values.first().map(String::as_str).unwrap_or_default()))
        }),
        _ => {}
    }
}

/// A probability as the kernel holds it (`xt_statistic`: a 31-bit fraction).
pub fn fixed_point(p: f64) -> u32 {
    (p * f64::from(0x8000_0000u32)).round() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(written: &str, saved: &str) {
        assert_eq!(
            Rule::parse(written).unwrap(),
            Rule::parse(saved).unwrap(),
            "{written}"
        );
    }

    #[test]
    fn iptables_save_reads_back_as_written() {
        // Pairs seen on this kernel: restore input, then what iptables-save printed.
        same(
            "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
        );
        same(
            "-A KUBE-SVC-X -m comment --comment \"c\" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.44/32 -p tcp -m comment --comment \"c\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
        );
        same(
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x004000",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        );
        same(
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        );
        same(
            "-A KUBE-SVC-X -m comment --comment \"a -> b\" -m recent --name KUBE-SEP-Y --rcheck --seconds 10800 --reap -j KUBE-SEP-Y",
            "-A KUBE-SVC-X -m comment --comment \"a -> b\" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -j KUBE-SEP-Y",
        );
        same(
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-Y",
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-Y",
        );
        same(
            "-A KUBE-SERVICES -m comment --comment \"x has no endpoints\" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT",
            "-A KUBE-SERVICES -d 172.30.0.46/32 -p tcp -m comment --comment \"x has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
        );
        same(
            "-A KUBE-SEP-X -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-X -s 10.180.0.5/32 -m comment --comment \"ns4/svc4:p80\" -j KUBE-MARK-MASQ",
        );
    }

    #[test]
    fn different_rules_stay_different() {
        let a = Rule::parse("-A X -d 10.0.0.1 -j DROP").unwrap();
        for other in [
            "-A X ! -d 10.0.0.1 -j DROP",
            "-A X -d 10.0.0.2 -j DROP",
            "-A Y -d 10.0.0.1 -j DROP",
            "-A X -d 10.0.0.1 -j ACCEPT",
        ] {
            assert_ne!(a, Rule::parse(other).unwrap(), "{other}");
        }
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(Rule::parse("-A X -m comment --comment \"open").is_err());
        assert!(Rule::parse("-I X -j DROP").is_err());
        assert!(Rule::parse("-A X --dport 80").is_err());
        assert!(Rule::parse("-A X bogus").is_err());
    }
}
