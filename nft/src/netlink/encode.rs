//! A [`Transaction`] as one nfnetlink batch: `BATCH_BEGIN`, one or more messages per op
//! (element lists are split so no attribute outgrows its 16-bit length), `BATCH_END`. Every
//! message's sequence number maps back to its op, so a refusal names the op.

use std::collections::HashMap;

use super::consts::*;
use super::expr::{self, nfproto};
use super::set;
use super::udata::{self, Udata};
use crate::error::NftError;
use crate::ir::{BaseChain, ChainType, Element, Family, Hook, Op, Rule, Transaction};
use crate::state::fingerprint;
use crate::text;
use sluice_netlink::Writer;

/// Element bytes per message before a new message is started (well under 64 KiB).
const ELEMENT_CHUNK: usize = 32 * 1024;

/// Bytes per chunk of an encoded batch: a message starts a new chunk once this much is
/// written (messages stay under 64 KiB, so a chunk rarely grows past it). At most 1,024
/// chunks go in one `sendmsg` (`UIO_MAXIOV`): 1 GiB, far past any ruleset.
const CHUNK: usize = 1 << 20;
/// Room a chunk is given up front: growing one by doubling copied each ~1 MiB chunk
/// twice over, ~6 % of a cold sync's applying thread (issue 14).
const CHUNK_ROOM: usize = CHUNK + CHUNK / 8;
/// About the bytes of one encoded element (a hairpin element is ~60), to size a chunk.
const ELEMENT_BYTES: usize = 96;

/// Room for the first chunk: about what `tx` encodes to, at most [`CHUNK_ROOM`] (a
/// partial sync's few messages get a few KiB).
fn first_chunk(tx: &Transaction) -> usize {
    let bytes: usize = (tx.ops.iter())
        .map(|op| match op {
            Op::AddElements { elements, .. } | Op::DeleteElements { elements, .. } => {
                256 + elements.len() * ELEMENT_BYTES
            }
            _ => 512,
        })
        .sum();
    (bytes + 256).min(CHUNK_ROOM)
}

/// An encoded transaction.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The datagram, in chunks of about [`CHUNK`] bytes; no message straddles two.
    pub(crate) chunks: Vec<Vec<u8>>,
    /// Sequence number of `BATCH_BEGIN` (the kernel blames it for commit failures).
    pub(crate) begin_seq: u32,
    /// Sequence number of `BATCH_END`.
    pub(crate) end_seq: u32,
    /// `(seq, op index, chunk, offset in the chunk)` of every op message, in order.
    pub(crate) msgs: Vec<(u32, usize, usize, usize)>,
}

impl Batch {
    /// The op index of message `seq`.
    pub(crate) fn op_of(&self, seq: u32) -> Option<usize> {
        self.msgs
            .binary_search_by_key(&seq, |m| m.0)
            .ok()
            .map(|i| self.msgs[i].1)
    }

    /// The datagram's length.
    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Sets `NLM_F_ACK` on every op message.
    pub(crate) fn ack_each(&mut self) {
        for &(_, _, chunk, off) in &self.msgs {
            let bytes = &mut self.chunks[chunk];
            let f = u16::from_ne_bytes([bytes[off + 6], bytes[off + 7]]) | NLM_F_ACK;
            bytes[off + 6..off + 8].copy_from_slice(&f.to_ne_bytes());
        }
    }

    /// The datagram in one piece (tests and the fuzz seed).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// A short description of op `i` of `tx` for error messages.
pub(crate) fn describe(tx: &Transaction, i: usize) -> String {
    let (Some(family), Some(op)) = (tx.family, tx.ops.get(i)) else {
        return format!("transaction on {}", tx.table);
    };
    shorten(text::op_text(family, &tx.table, op))
}

fn shorten(mut s: String) -> String {
    const MAX: usize = 200;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" …");
    }
    s
}

/// Sets whose element ops need to know whether the set is an interval set but that the
/// transaction does not define (the caller looks them up in the kernel).
pub(crate) fn sets_to_look_up(tx: &Transaction) -> Vec<String> {
    let mut defined = Vec::new();
    let mut out = Vec::new();
    for op in &tx.ops {
        match op {
            Op::AddSet(s) => defined.push(s.name.as_str()),
            Op::AddElements { set, elements } | Op::DeleteElements { set, elements }
                if !defined.contains(&set.as_str())
                    && elements
                        .iter()
                        .any(|e| e.prefix.is_none() && is_one_addr(e))
                    && !out.contains(set) =>
            {
                out.push(set.clone());
            }
            _ => {}
        }
    }
    out
}

fn is_one_addr(e: &Element) -> bool {
    matches!(e.key.as_slice(), [crate::ir::KeyValue::Addr(_)])
}

/// Encodes `tx`; `interval` tells for sets not defined in `tx` whether they are interval
/// sets. Sequence numbers start at `seq`. With `genid`, the kernel applies the batch only
/// at that ruleset generation.
pub(crate) fn encode(
    tx: &Transaction,
    seq: u32,
    interval: &HashMap<String, bool>,
    genid: Option<u32>,
) -> Result<Batch, NftError> {
    let family = tx.family.ok_or_else(|| NftError::Encode {
        op: format!("transaction on {}", tx.table),
        reason: "no family".into(),
    })?;
    let mut enc = Encoder {
        w: Writer::with_capacity(first_chunk(tx)),
        chunks: Vec::new(),
        family,
        table: &tx.table,
        seq,
        msgs: Vec::new(),
        interval: interval.clone(),
        set_id: 0,
    };
    let begin_seq = enc.next_seq();
    let start = enc.w.begin_msg(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        begin_seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    if let Some(generation) = genid {
        enc.w.u32(NFNL_BATCH_GENID, generation);
    }
    enc.w.end_msg(start);
    for (i, op) in tx.ops.iter().enumerate() {
        enc.op(i, op).map_err(|reason| NftError::Encode {
            op: describe(tx, i),
            reason,
        })?;
    }
    let end_seq = enc.next_seq();
    let start = enc.w.begin_msg(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end_seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    enc.w.end_msg(start);
    enc.chunks.push(enc.w.into_inner());
    Ok(Batch {
        chunks: enc.chunks,
        begin_seq,
        end_seq,
        msgs: enc.msgs,
    })
}

struct Encoder<'a> {
    /// The chunk being written.
    w: Writer,
    /// The chunks written before it.
    chunks: Vec<Vec<u8>>,
    family: Family,
    table: &'a str,
    seq: u32,
    msgs: Vec<(u32, usize, usize, usize)>,
    interval: HashMap<String, bool>,
    set_id: u32,
}

impl Encoder<'_> {
    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// One nf_tables message for op `i`.
    fn msg(
        &mut self,
        i: usize,
        ty: u8,
        flags: u16,
        body: impl FnOnce(&mut Writer),
    ) -> Result<(), String> {
        if self.w.len() >= CHUNK {
            let full = std::mem::replace(&mut self.w, Writer::with_capacity(CHUNK_ROOM));
            self.chunks.push(full.into_inner());
        }
        let seq = self.next_seq();
        let nl_ty = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(ty);
        let start = self
            .w
            .begin_msg(nl_ty, NLM_F_REQUEST | flags, seq, nfproto(self.family), 0);
        body(&mut self.w);
        self.w.end_msg(start);
        if self.w.overflowed() {
            return Err("an attribute is longer than 64 KiB".into());
        }
        self.msgs.push((seq, i, self.chunks.len(), start));
        Ok(())
    }

    fn op(&mut self, i: usize, op: &Op) -> Result<(), String> {
        let table = self.table;
        match op {
            Op::AddTable { comment } => self.msg(i, NFT_MSG_NEWTABLE, NLM_F_CREATE, |w| {
                w.str(NFTA_TABLE_NAME, table);
                w.u32(NFTA_TABLE_FLAGS, 0);
                if let Some(c) = comment {
                    w.bytes(
                        NFTA_TABLE_USERDATA,
                        Udata::new().string(udata::COMMENT, c).bytes(),
                    );
                }
            }),
            Op::DeleteTable => self.msg(i, NFT_MSG_DELTABLE, 0, |w| w.str(NFTA_TABLE_NAME, table)),
            Op::AddChain(c) => self.msg(i, NFT_MSG_NEWCHAIN, NLM_F_CREATE, |w| {
                w.str(NFTA_CHAIN_TABLE, table);
                w.str(NFTA_CHAIN_NAME, &c.name);
                if let Some(b) = c.base {
                    base_chain(w, b);
                }
            }),
            Op::FlushChain(c) => self.msg(i, NFT_MSG_DELRULE, 0, |w| {
                w.str(NFTA_RULE_TABLE, table);
                w.str(NFTA_RULE_CHAIN, c);
            }),
            Op::DeleteChain(c) => self.msg(i, NFT_MSG_DELCHAIN, 0, |w| {
                w.str(NFTA_CHAIN_TABLE, table);
                w.str(NFTA_CHAIN_NAME, c);
            }),
            Op::AddRule { chain, rule } => self.rule(i, chain, rule),
            Op::DeleteRule { chain, handle } => self.msg(i, NFT_MSG_DELRULE, 0, |w| {
                w.str(NFTA_RULE_TABLE, table);
                w.str(NFTA_RULE_CHAIN, chain);
                w.u64(NFTA_RULE_HANDLE, *handle);
            }),
            Op::AddSet(s) => {
                if s.key.is_empty() {
                    return Err("a set needs a key".into());
                }
                self.interval.insert(s.name.clone(), s.interval);
                self.set_id += 1;
                let (family, id) = (self.family, self.set_id);
                self.msg(i, NFT_MSG_NEWSET, NLM_F_CREATE, |w| {
                    set::set_attrs(w, family, table, s, id);
                })
            }
            Op::DeleteSet(s) => self.msg(i, NFT_MSG_DELSET, 0, |w| {
                w.str(NFTA_SET_TABLE, table);
                w.str(NFTA_SET_NAME, s);
            }),
            Op::FlushSet(s) => self.msg(i, NFT_MSG_DELSETELEM, 0, |w| {
                w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.str(NFTA_SET_ELEM_LIST_SET, s);
            }),
            Op::AddElements { set, elements } => {
                self.elements(i, NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elements, true)
            }
            Op::DeleteElements { set, elements } => {
                self.elements(i, NFT_MSG_DELSETELEM, 0, set, elements, false)
            }
        }
    }

    fn rule(&mut self, i: usize, chain: &str, rule: &Rule) -> Result<(), String> {
        let mut ud = Udata::new();
        if let Some(c) = &rule.comment {
            if c.len() > udata::MAX_COMMENT {
                return Err(format!("comment longer than {} bytes", udata::MAX_COMMENT));
            }
            ud.string(udata::COMMENT, c);
        }
        ud.put(
            udata::RULE_FINGERPRINT,
            &fingerprint(self.family, rule).to_le_bytes(),
        );
        let (table, family) = (self.table, self.family);
        // The expressions are written in place (a refused one fails the whole batch).
        let mut exprs = Ok(());
        self.msg(i, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, |w| {
            w.str(NFTA_RULE_TABLE, table);
            w.str(NFTA_RULE_CHAIN, chain);
            w.nest(NFTA_RULE_EXPRESSIONS, |w| {
                exprs = expr::stmts(w, family, &rule.stmts);
            });
            w.bytes(NFTA_RULE_USERDATA, ud.bytes());
        })?;
        exprs
    }

    /// Element lists, split into messages of at most [`ELEMENT_CHUNK`] element bytes. An
    /// empty list sends nothing (an element message without elements would flush the set).
    fn elements(
        &mut self,
        i: usize,
        ty: u8,
        flags: u16,
        set: &str,
        elements: &[Element],
        full: bool,
    ) -> Result<(), String> {
        let interval = self.interval.get(set).copied().unwrap_or(false);
        let table = self.table;
        // Written in place, message by message (a list in a buffer of its own was copied).
        let mut left = elements.iter().peekable();
        let mut encoded = Ok(());
        while left.peek().is_some() && encoded.is_ok() {
            self.msg(i, ty, flags, |w| {
                w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.str(NFTA_SET_ELEM_LIST_SET, set);
                w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                    let start = w.len();
                    while w.len() - start < ELEMENT_CHUNK
                        && let Some(e) = left.next()
                    {
                        encoded = set::element(w, e, interval, full);
                        if encoded.is_err() {
                            break;
                        }
                    }
                });
            })?;
        }
        encoded
    }
}

fn base_chain(w: &mut Writer, b: BaseChain) {
    let kind = match b.kind {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    };
    w.str(NFTA_CHAIN_TYPE, kind);
    w.u32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
    w.nest(NFTA_CHAIN_HOOK, |w| {
        w.u32(NFTA_HOOK_HOOKNUM, hook_num(b.hook));
        w.u32(NFTA_HOOK_PRIORITY, b.priority as u32);
    });
}

/// `NF_INET_*` of a hook.
pub(crate) fn hook_num(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ChainDef, KeyValue, Stmt, Verdict};
    use sluice_netlink::messages;

    fn tx() -> Transaction {
        let mut tx = Transaction::new(Family::Ip, "sluice");
        tx.push(Op::AddTable { comment: None });
        tx.push(Op::AddChain(ChainDef {
            name: "x".into(),
            base: None,
        }));
        tx.push(Op::AddRule {
            chain: "x".into(),
            rule: Rule::new(vec![Stmt::Counter]),
        });
        tx
    }

    /// The read-back decoder reads the encoder's messages (the kernel's dump answers have the
    /// same layout): table comment, chains, rules with comment and fingerprint, verdict-map
    /// elements. `SLUICE_BLESS=1` writes the bytes as the `nft_dump` fuzz seed.
    #[test]
    fn the_read_back_decoder_reads_what_the_encoder_writes() {
        use crate::ir::{BaseChain, ChainType, Hook, KeyType, SetDef};
        let mut tx = Transaction::new(Family::Ip, "sluice");
        tx.push(Op::AddTable {
            comment: Some("rules for sluice-proxy".into()),
        });
        tx.push(Op::AddChain(ChainDef {
            name: "nat-prerouting".into(),
            base: Some(BaseChain {
                kind: ChainType::Nat,
                hook: Hook::Prerouting,
                priority: -100,
            }),
        }));
        tx.push(Op::AddChain(ChainDef {
            name: "x".into(),
            base: None,
        }));
        tx.push(Op::AddRule {
            chain: "x".into(),
            rule: Rule::new(vec![Stmt::Counter]).with_comment("hello"),
        });
        let mut map = SetDef::verdict_map("ports", vec![KeyType::Port]);
        map.comment = Some("a map".into());
        tx.push(Op::AddSet(map));
        tx.push(Op::AddElements {
            set: "ports".into(),
            elements: vec![Element::map(
                vec![KeyValue::Port(80)],
                Verdict::Goto("x".into()),
            )],
        });
        let b = encode(&tx, 1, &HashMap::new(), None).unwrap();
        if std::env::var_os("SLUICE_BLESS").is_some() {
            let seed = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fuzz/corpus/nft_dump/encoded-table"
            );
            std::fs::write(seed, b.bytes()).unwrap();
        }
        let table = super::super::decode_dump(Family::Ip, "sluice", &b.bytes()).unwrap();
        assert_eq!(table.comment.as_deref(), Some("rules for sluice-proxy"));
        let names: Vec<&str> = table.chains.iter().map(|c| &*c.def.name).collect();
        assert_eq!(names, ["nat-prerouting", "x"]);
        assert!(table.chains[0].def.base.is_some());
        assert_eq!(table.chains[1].rules[0].comment.as_deref(), Some("hello"));
        assert!(table.chains[1].rules[0].fingerprint.is_some());
        assert_eq!(table.sets[0].elements.len(), 1, "{:?}", table.sets);
        assert_eq!(
            super::super::decode_dump(Family::Ip, "other", &b.bytes()),
            None
        );
    }

    /// Rules are grouped by chain as they come; a chain whose rules come in two runs gets
    /// both, in order, and a chain with none gets none.
    #[test]
    fn read_back_rules_keep_their_chain_and_order() {
        let mut tx = Transaction::new(Family::Ip, "sluice");
        tx.push(Op::AddTable { comment: None });
        for name in ["x", "y", "z"] {
            tx.push(Op::AddChain(ChainDef {
                name: name.into(),
                base: None,
            }));
        }
        for (chain, comment) in [("x", "1"), ("x", "2"), ("y", "3"), ("x", "4")] {
            tx.push(Op::AddRule {
                chain: chain.into(),
                rule: Rule::new(vec![Stmt::Counter]).with_comment(comment),
            });
        }
        let b = encode(&tx, 1, &HashMap::new(), None).unwrap();
        let table = super::super::decode_dump(Family::Ip, "sluice", &b.bytes()).unwrap();
        let comments = |name: &str| -> Vec<String> {
            let chain = table.chains.iter().find(|c| c.def.name == name).unwrap();
            (chain.rules.iter())
                .filter_map(|r| r.comment.clone())
                .collect()
        };
        assert_eq!(comments("x"), ["1", "2", "4"]);
        assert_eq!(comments("y"), ["3"]);
        assert!(comments("z").is_empty());
    }

    #[test]
    fn batches_frame_ops_and_map_sequence_numbers_back() {
        let mut b = encode(&tx(), 100, &HashMap::new(), None).unwrap();
        b.ack_each();
        let bytes = b.bytes();
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[4].ty, NFNL_MSG_BATCH_END);
        assert_eq!((b.begin_seq, b.end_seq), (100, 104));
        assert_eq!(msgs[3].ty, (10 << 8) | u16::from(NFT_MSG_NEWRULE));
        assert!(msgs[1..4].iter().all(|m| m.flags & NLM_F_ACK != 0));
        assert_eq!(msgs[0].flags & NLM_F_ACK, 0);
        assert_eq!(b.op_of(103), Some(2));
        assert_eq!(describe(&tx(), 2), "add rule ip sluice x counter");
    }

    #[test]
    fn a_large_batch_is_cut_into_chunks_between_messages() {
        let mut tx = Transaction::new(Family::Ip, "sluice");
        for i in 0..30_000 {
            tx.push(Op::AddChain(ChainDef {
                name: format!("endpoint-{i:0>40}"),
                base: None,
            }));
        }
        let mut b = encode(&tx, 1, &HashMap::new(), None).unwrap();
        b.ack_each();
        assert!(b.chunks.len() > 1, "{} bytes in one chunk", b.len());
        // Every chunk holds whole messages, and together they are the batch, in order.
        let per_chunk: usize = (b.chunks.iter()).map(|c| messages(c).count()).sum();
        let bytes = b.bytes();
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!((per_chunk, msgs.len()), (30_002, 30_002));
        assert!(b.chunks.iter().all(|c| c.len() <= CHUNK + CHUNK / 8));
        assert!(msgs[1..30_001].iter().all(|m| m.flags & NLM_F_ACK != 0));
        assert_eq!(msgs.last().unwrap().ty, NFNL_MSG_BATCH_END);
        assert_eq!(b.op_of(30_001), Some(29_999));
    }

    #[test]
    fn big_element_lists_are_split_and_empty_ones_send_nothing() {
        let elements: Vec<Element> = (0..5000u16)
            .map(|i| {
                Element::map(
                    vec![KeyValue::Port(i)],
                    Verdict::Goto(format!("endpoint-{i:0>40}")),
                )
            })
            .collect();
        let mut tx = Transaction::new(Family::Ip, "sluice");
        tx.push(Op::AddTable { comment: None });
        tx.push(Op::AddSet(crate::ir::SetDef::verdict_map(
            "buckets",
            vec![crate::ir::KeyType::Port],
        )));
        tx.push(Op::AddElements {
            set: "buckets".into(),
            elements: elements.clone(),
        });
        tx.push(Op::DeleteElements {
            set: "buckets".into(),
            elements: vec![],
        });
        let b = encode(&tx, 1, &HashMap::new(), None).unwrap();
        let lists = b.msgs.iter().filter(|m| m.1 == 2).count();
        assert!(lists > 5, "{lists} element messages");
        assert!(b.msgs.iter().all(|m| m.1 <= 2));
        // Every element arrives once, in order, across the messages.
        let table = super::super::decode_dump(Family::Ip, "sluice", &b.bytes()).unwrap();
        assert_eq!(table.sets[0].elements.len(), elements.len());
        let mut sorted = elements;
        sorted.sort();
        assert_eq!(table.sets[0].elements, sorted);
    }
}
