//! The ruleset IR: tables, sets and maps, chains, rules made of statements, set elements, and
//! the operations of one transaction.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// Address family of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `ip`.
    Ip,
    /// `ip6`.
    Ip6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::Ip } else { Self::Ip6 }
    }

    /// nft's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
        }
    }
}

/// Transport protocols the proxy matches (IANA numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// 132.
    Sctp,
}

impl Proto {
    /// The protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// nft's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A packet field a rule or a map lookup reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Source address (of the table's family).
    Saddr,
    /// Destination address.
    Daddr,
    /// `meta l4proto`.
    L4Proto,
    /// `th dport` (transport header destination port, any of TCP/UDP/SCTP).
    Dport,
    /// `ct original ip daddr` / `ct original ip6 daddr`: the destination the connection was
    /// opened to, whatever the packet's header says now.
    CtOriginalDaddr,
    /// `numgen random mod <modulus>`: a random bucket in `0..modulus` (in a map key: which
    /// of a Service's endpoints).
    Numgen(u32),
}

/// The type of one component of a set key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyType {
    /// `ipv4_addr` / `ipv6_addr` by the table's family.
    Addr,
    /// `inet_proto`.
    Proto,
    /// `inet_service`.
    Port,
    /// A bucket drawn by `numgen` (a 4-byte integer: nft declares such keys with `typeof`).
    Bucket,
}

/// One component of an element's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    /// An address.
    Addr(IpAddr),
    /// A protocol.
    Proto(Proto),
    /// A port.
    Port(u16),
    /// A bucket.
    Bucket(u32),
}

/// What a data map (not a verdict map) maps its keys to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapData {
    /// An address of the table's family (`: ipv4_addr`).
    Addr,
    /// An address and a port (`: ipv4_addr . inet_service`): a `dnat` target.
    AddrPort,
}

/// The value of a data map's element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementData {
    /// An address.
    Addr(IpAddr),
    /// An address and a port.
    AddrPort(IpAddr, u16),
}

/// Where a rule or a map element sends the packet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Continue in `chain`, come back after.
    Jump(String),
    /// Continue in `chain`, do not come back.
    Goto(String),
    /// Back to the calling chain.
    Return,
    /// Accept.
    Accept,
    /// Drop.
    Drop,
}

/// A set or map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetDef {
    /// Name.
    pub name: String,
    /// Key components (more than one = concatenation).
    pub key: Vec<KeyType>,
    /// A verdict map (`: verdict`) rather than a plain set.
    pub verdict_map: bool,
    /// A data map's value (never with `verdict_map`).
    pub data: Option<MapData>,
    /// Elements are prefixes (`flags interval`).
    pub interval: bool,
    /// Elements expire after this long and the packet path may add them
    /// (`flags dynamic,timeout; timeout N`): session-affinity sets.
    pub timeout: Option<Duration>,
    /// Comment.
    pub comment: Option<String>,
}

impl SetDef {
    /// A plain set of `key`: no flags, timeout or comment (struct update adds them).
    pub fn set(name: impl Into<String>, key: Vec<KeyType>) -> Self {
        Self {
            name: name.into(),
            key,
            verdict_map: false,
            data: None,
            interval: false,
            timeout: None,
            comment: None,
        }
    }

    /// A verdict map keyed by `key`.
    pub fn verdict_map(name: impl Into<String>, key: Vec<KeyType>) -> Self {
        Self {
            verdict_map: true,
            ..Self::set(name, key)
        }
    }

    /// A data map from `key` to `data`.
    pub fn data_map(name: impl Into<String>, key: Vec<KeyType>, data: MapData) -> Self {
        Self {
            data: Some(data),
            ..Self::set(name, key)
        }
    }
}

/// The hook of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `prerouting`.
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

/// A base chain's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
}

/// What makes a chain a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// Its type.
    pub kind: ChainType,
    /// Its hook.
    pub hook: Hook,
    /// Its priority (numeric: `dstnat` is -100, `srcnat` 100, `filter` 0).
    pub priority: i32,
}

/// A chain (`base` set: attached to a hook, policy accept).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainDef {
    /// Name.
    pub name: String,
    /// Hook, type and priority of a base chain.
    pub base: Option<BaseChain>,
}

/// One statement of a rule; a rule's statements run in order, matches stopping it early.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// `ct state new`.
    CtStateNew,
    /// `<field> [!=] @set` (one field: a set lookup).
    InSet {
        /// The field looked up.
        field: Field,
        /// The set.
        set: String,
        /// `!=`.
        negate: bool,
    },
    /// `<fields concatenated> @set`: a lookup of a concatenated key, e.g. `ip saddr . ip
    /// daddr @hairpin` (a packet an endpoint sent to itself through its Service).
    InConcat {
        /// The key, in order.
        key: Vec<Field>,
        /// The set.
        set: String,
    },
    /// `<field> [!=] <prefix>` on an address field (a host address is a /32 or /128).
    Prefix {
        /// `Saddr` or `Daddr`.
        field: Field,
        /// The prefix.
        net: IpNet,
        /// `!=`.
        negate: bool,
    },
    /// `meta l4proto <proto>`.
    L4Proto(Proto),
    /// `fib saddr type local` (`Saddr`) or `fib daddr type local` (`Daddr`).
    FibLocal(Field),
    /// `iifname [!=] "<name>"`, or with `prefix` `iifname [!=] "<name>*"` (the local-traffic
    /// detectors `BridgeInterface` and `InterfaceNamePrefix`).
    IifName {
        /// The interface name, or the prefix.
        name: String,
        /// Match names starting with `name`.
        prefix: bool,
        /// `!=`.
        negate: bool,
    },
    /// `mark and <mask> == 0`.
    MarkClear(u32),
    /// `ip daddr set <fields concatenated> map @map` (`ip6` in an ip6 table): the packet's
    /// destination becomes the map's value, an address. A scratch value the next rules read,
    /// in a field the `dnat` that follows rewrites anyway.
    DaddrFromMap {
        /// The key, in order.
        key: Vec<Field>,
        /// The map (`MapData::Addr`).
        map: String,
    },
    /// `dnat ip to <fields concatenated> map @map` (after an `L4Proto` match): the
    /// destination is the map's value, an address and a port.
    DnatFromMap {
        /// The key, in order.
        key: Vec<Field>,
        /// The map (`MapData::AddrPort`).
        map: String,
    },
    /// `<fields concatenated> vmap @map`.
    Vmap {
        /// The key, in order.
        key: Vec<Field>,
        /// The verdict map.
        map: String,
    },
    /// `numgen random mod <modulus> == 0`: true with probability 1/modulus. A service chain
    /// picks endpoint i of n with `numgen random mod (n - i) == 0 … dnat to …` (plain rules
    /// load linearly; a jump into a large shared map makes every commit re-validate all of it).
    Numgen {
        /// The modulus (the number of endpoints still to choose from).
        modulus: u32,
    },
    /// `mark set mark or <bits>`.
    MarkOr(u32),
    /// `mark set mark xor <bits>`.
    MarkXor(u32),
    /// `update @set { ip saddr }` (a session-affinity set).
    UpdateSaddr(String),
    /// `dnat to <addr>:<port>` (after an `L4Proto` match).
    Dnat {
        /// Endpoint address.
        addr: IpAddr,
        /// Endpoint port.
        port: u16,
    },
    /// `masquerade [fully-random]`.
    Masquerade {
        /// `fully-random`.
        fully_random: bool,
    },
    /// `reject` (ICMP port unreachable) or `reject with tcp reset`.
    Reject {
        /// TCP reset instead of ICMP.
        tcp_reset: bool,
    },
    /// `counter`.
    Counter,
    /// A terminal verdict.
    Verdict(Verdict),
}

/// A rule: statements and an optional comment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The statements, in order.
    pub stmts: Vec<Stmt>,
    /// Comment (also kept in the rule's userdata).
    pub comment: Option<String>,
}

impl Rule {
    /// A rule without comment.
    pub fn new(stmts: Vec<Stmt>) -> Self {
        Self {
            stmts,
            comment: None,
        }
    }

    /// The same rule with a comment.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// An element of a set or map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The key components (prefix elements of interval sets use `Addr` with `prefix`).
    pub key: Vec<KeyValue>,
    /// Prefix length of an interval element.
    pub prefix: Option<u8>,
    /// The verdict of a map element.
    pub verdict: Option<Verdict>,
    /// The value of a data map's element.
    pub data: Option<ElementData>,
    /// Comment.
    pub comment: Option<String>,
}

impl Element {
    /// A set element.
    pub fn key(key: Vec<KeyValue>) -> Self {
        Self {
            key,
            prefix: None,
            verdict: None,
            data: None,
            comment: None,
        }
    }

    /// A map element.
    pub fn map(key: Vec<KeyValue>, verdict: Verdict) -> Self {
        Self {
            verdict: Some(verdict),
            ..Self::key(key)
        }
    }

    /// A data map's element.
    pub fn data(key: Vec<KeyValue>, data: ElementData) -> Self {
        Self {
            data: Some(data),
            ..Self::key(key)
        }
    }
}

/// One operation of a transaction, on the transaction's table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Create the table if missing (never fails when it exists).
    AddTable {
        /// Comment.
        comment: Option<String>,
    },
    /// Delete the table and everything in it.
    DeleteTable,
    /// Create a chain if missing.
    AddChain(ChainDef),
    /// Delete all rules of a chain.
    FlushChain(String),
    /// Delete an (empty, unreferenced) chain.
    DeleteChain(String),
    /// Append a rule to a chain.
    AddRule {
        /// The chain.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// Delete one rule by its kernel handle (from [`crate::TableState`]): drift repair.
    DeleteRule {
        /// The chain.
        chain: String,
        /// The rule's handle.
        handle: u64,
    },
    /// Create a set or map if missing.
    AddSet(SetDef),
    /// Delete a set or map.
    DeleteSet(String),
    /// Remove every element of a set or map.
    FlushSet(String),
    /// Add elements (a key that exists with another verdict must be deleted first).
    AddElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<Element>,
    },
    /// Delete elements by key.
    DeleteElements {
        /// The set.
        set: String,
        /// The elements (only keys and prefixes matter).
        elements: Vec<Element>,
    },
}

/// A transaction on one table: applied atomically, all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The table's family (`None` only for an empty transaction).
    pub family: Option<Family>,
    /// The table's name.
    pub table: String,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction on `family`/`table`.
    pub fn new(family: Family, table: impl Into<String>) -> Self {
        Self {
            family: Some(family),
            table: table.into(),
            ops: Vec::new(),
        }
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
