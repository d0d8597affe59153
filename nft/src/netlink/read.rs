//! Reading a table back: the table, its chains, its rules (handle, comment, fingerprint),
//! its sets and their elements, from separate dumps. The generation id is read before and
//! after; a change in between (or an interrupted dump) means a retry, so the picture is
//! consistent.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use super::consts::*;
use super::encode::hook_num;
use super::expr::nfproto;
use super::set::{self, RawElement};
use super::udata;
use crate::error::{NftError, errno};
use crate::ir::{BaseChain, ChainDef, ChainType, Element, Family, Hook, SetDef};
use crate::state::{ChainState, Collect, RuleState, SetState, TableSink, TableState};
use sluice_netlink::{Attrs, Msg, Socket as NfSocket, be_u64};

const ATTEMPTS: usize = 5;

fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg)
}

/// Reads table `family`/`name` into `sink`; `false` when it does not exist.
pub(crate) fn read_table(
    s: &mut NfSocket,
    family: Family,
    name: &str,
    sink: &mut dyn TableSink,
) -> Result<bool, NftError> {
    let mut found = false;
    for _ in 0..ATTEMPTS {
        let before = genid(s)?;
        sink.start();
        let complete;
        (found, complete) = read_once(s, family, name, sink)?;
        if complete && genid(s)? == before {
            return Ok(found);
        }
    }
    // A ruleset that changes all the time: the last picture rather than nothing.
    Ok(found)
}

pub(super) fn genid(s: &mut NfSocket) -> Result<u32, NftError> {
    let mut id = 0;
    // An empty GETGEN request is never invalid to nf_tables: EINVAL is nfnetlink saying
    // the subsystem is not there.
    let refused_by_nfnetlink = |e: NftError| match e.errno() {
        Some(errno::EINVAL) => NftError::NotInKernel,
        _ => e,
    };
    s.request::<NftError>(
        "get ruleset generation",
        nft_type(NFT_MSG_GETGEN),
        NFPROTO_UNSPEC,
        false,
        |_| {},
        |m| {
            id = m.attrs().u32(NFTA_GEN_ID).unwrap_or(0);
            Ok(())
        },
    )
    .map_err(refused_by_nfnetlink)?;
    Ok(id)
}

/// One read of the table into `sink`: whether it exists, and whether every dump was
/// consistent.
fn read_once(
    s: &mut NfSocket,
    family: Family,
    name: &str,
    sink: &mut dyn TableSink,
) -> Result<(bool, bool), NftError> {
    let what = format!("list table {} {name}", family.keyword());
    let pf = nfproto(family);
    let mut comment = None;
    let found = s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETTABLE),
        pf,
        false,
        |w| w.str(NFTA_TABLE_NAME, name),
        |m| {
            comment = m
                .attrs()
                .get(NFTA_TABLE_USERDATA)
                .and_then(|u| udata::string(u, udata::COMMENT));
            Ok(())
        },
    );
    match found {
        Err(e) if e.errno() == Some(errno::ENOENT) => return Ok((false, true)),
        other => other?,
    };
    sink.table(comment);
    let mut complete = true;
    let mut chains = Vec::new();
    complete &= s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETCHAIN),
        pf,
        true,
        |_| {},
        |m| {
            let a = m.attrs();
            if a.name(NFTA_CHAIN_TABLE) == Some(name.as_bytes()) {
                chains.push(decode_chain(&a));
            }
            Ok(())
        },
    )?;
    let mut rules = ByChain::default();
    complete &= s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETRULE),
        pf,
        true,
        |w| w.str(NFTA_RULE_TABLE, name),
        |m| {
            let a = m.attrs();
            if a.name(NFTA_RULE_TABLE) == Some(name.as_bytes()) {
                let chain = a.name(NFTA_RULE_CHAIN).unwrap_or_default();
                rules.push(chain, decode_rule(&a));
            }
            Ok(())
        },
    )?;
    rules.hand_out(&mut chains);
    for chain in chains {
        sink.chain(chain);
    }
    let mut sets = Vec::new();
    complete &= s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETSET),
        pf,
        true,
        |w| w.str(NFTA_SET_TABLE, name),
        |m| {
            let a = m.attrs();
            if a.name(NFTA_SET_TABLE) == Some(name.as_bytes()) {
                sets.push(decode_set(family, &a));
            }
            Ok(())
        },
    )?;
    for set in &sets {
        sink.set(set);
        complete &= read_elements(s, family, name, set, sink)?;
    }
    Ok((true, complete))
}

/// Whether each set of the table is an interval set (one dump of set headers, no elements).
pub(crate) fn set_intervals(
    s: &mut NfSocket,
    family: Family,
    table: &str,
) -> Result<HashMap<String, bool>, NftError> {
    let what = format!("list sets {} {table}", family.keyword());
    let mut out = HashMap::new();
    let res = s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETSET),
        nfproto(family),
        true,
        |w| w.str(NFTA_SET_TABLE, table),
        |m| {
            let a = m.attrs();
            if a.str(NFTA_SET_TABLE).as_deref() == Some(table) {
                let set = decode_set(family, &a);
                out.insert(set.def.name, set.def.interval);
            }
            Ok(())
        },
    );
    match res {
        Err(e) if e.errno() == Some(errno::ENOENT) => Ok(out),
        other => other.map(|_| out),
    }
}

/// Decodes the messages of a table's dumps — table, chain, rule, set and set-element
/// messages in any order, as the kernel sends them — into the same [`TableState`] a read
/// returns, without a socket: the read-back decoder as the fuzz target `nft_dump` drives it
/// with arbitrary kernel answers. `None` without a table message for `name`.
pub fn decode_dump(family: Family, name: &str, datagram: &[u8]) -> Option<TableState> {
    let mut table = None;
    let mut chains = Vec::new();
    let mut rules = ByChain::default();
    let mut sets = Vec::new();
    let mut elements: HashMap<String, Vec<RawElement>> = HashMap::new();
    for m in sluice_netlink::messages(datagram) {
        let a = m.attrs();
        match m.ty {
            t if t == nft_type(NFT_MSG_NEWTABLE)
                && a.str(NFTA_TABLE_NAME).as_deref() == Some(name) =>
            {
                let ud = a.get(NFTA_TABLE_USERDATA);
                table = Some(ud.and_then(|u| udata::string(u, udata::COMMENT)));
            }
            t if t == nft_type(NFT_MSG_NEWCHAIN) => chains.push(decode_chain(&a)),
            t if t == nft_type(NFT_MSG_NEWRULE) => {
                rules.push(a.name(NFTA_RULE_CHAIN).unwrap_or_default(), decode_rule(&a));
            }
            t if t == nft_type(NFT_MSG_NEWSET) => sets.push(decode_set(family, &a)),
            t if t == nft_type(NFT_MSG_NEWSETELEM) => {
                let set = a.str(NFTA_SET_ELEM_LIST_SET).unwrap_or_default();
                if let Some(list) = a.nested(NFTA_SET_ELEM_LIST_ELEMENTS) {
                    let raw = list.filter_map(|(_, e)| set::raw_element(Attrs::new(e)));
                    elements.entry(set).or_default().extend(raw);
                }
            }
            _ => {}
        }
    }
    // Assembled as a read from the socket is: the same sink, in the same order.
    let mut out = Collect::new(family, name);
    out.start();
    out.table(table?);
    rules.hand_out(&mut chains);
    for chain in chains {
        out.chain(chain);
    }
    for set in &sets {
        out.set(set);
        let raw = elements.remove(&set.def.name).unwrap_or_default();
        if !set.unrecognised {
            out.elements(&set.def.name, decode_elements(family, &set.def, raw));
        }
    }
    out.finish()
}

/// A rule dump's rules, grouped by chain as they come: the kernel sends a chain's rules
/// together, so each rule is compared with the last chain's name instead of allocating its
/// chain's name and hashing it (a tenth of reading back 30,000 rules, issue 14).
#[derive(Default)]
struct ByChain {
    groups: Vec<(String, Vec<RuleState>)>,
}

impl ByChain {
    fn push(&mut self, chain: &[u8], rule: RuleState) {
        match self.groups.last_mut() {
            Some((name, rules)) if name.as_bytes() == chain => rules.push(rule),
            _ => {
                let name = String::from_utf8_lossy(chain).into_owned();
                self.groups.push((name, vec![rule]));
            }
        }
    }

    /// Gives each chain its rules (a chain met twice gets both groups, in order).
    fn hand_out(self, chains: &mut [ChainState]) {
        let mut by_name: HashMap<String, Vec<RuleState>> =
            HashMap::with_capacity(self.groups.len());
        for (name, rules) in self.groups {
            match by_name.entry(name) {
                Entry::Occupied(mut e) => e.get_mut().extend(rules),
                Entry::Vacant(e) => _ = e.insert(rules),
            }
        }
        for c in chains {
            c.rules = by_name.remove(&c.def.name).unwrap_or_default();
        }
    }
}

fn decode_chain(a: &Attrs<'_>) -> ChainState {
    let name = a.str(NFTA_CHAIN_NAME).unwrap_or_default();
    let hook = a.nested(NFTA_CHAIN_HOOK);
    let base = hook.as_ref().and_then(|h| {
        let num = h.u32(NFTA_HOOK_HOOKNUM)?;
        let hook = [
            Hook::Prerouting,
            Hook::Input,
            Hook::Forward,
            Hook::Output,
            Hook::Postrouting,
        ]
        .into_iter()
        .find(|k| hook_num(*k) == num)?;
        let kind = match a.str(NFTA_CHAIN_TYPE)?.as_str() {
            "filter" => ChainType::Filter,
            "nat" => ChainType::Nat,
            _ => return None,
        };
        let priority = h.u32(NFTA_HOOK_PRIORITY)? as i32;
        Some(BaseChain {
            kind,
            hook,
            priority,
        })
    });
    ChainState {
        unrecognised: hook.is_some() && base.is_none(),
        def: ChainDef { name, base },
        rules: Vec::new(),
    }
}

fn decode_rule(a: &Attrs<'_>) -> RuleState {
    let ud = a.get(NFTA_RULE_USERDATA).unwrap_or(&[]);
    let fingerprint = udata::records(ud)
        .find(|(t, _)| *t == udata::RULE_FINGERPRINT)
        .and_then(|(_, v)| Some(u64::from_le_bytes(v.try_into().ok()?)));
    RuleState {
        handle: a.get(NFTA_RULE_HANDLE).and_then(be_u64).unwrap_or(0),
        comment: udata::string(ud, udata::COMMENT),
        fingerprint,
    }
}

fn decode_set(family: Family, a: &Attrs<'_>) -> SetState {
    let flags = a.u32(NFTA_SET_FLAGS).unwrap_or(0);
    let key = a
        .u32(NFTA_SET_KEY_TYPE)
        .and_then(|t| set::key_types(family, t))
        .filter(|k| Some(set::key_info(family, k).len) == a.u32(NFTA_SET_KEY_LEN));
    let is_map = flags & NFT_SET_MAP != 0;
    let verdict_map = is_map && a.u32(NFTA_SET_DATA_TYPE) == Some(NFT_DATA_VERDICT);
    let data = (is_map && !verdict_map)
        .then(|| {
            let (ty, len) = (a.u32(NFTA_SET_DATA_TYPE)?, a.u32(NFTA_SET_DATA_LEN)?);
            set::data_type(family, ty, len)
        })
        .flatten();
    let timeout = (flags & NFT_SET_TIMEOUT != 0)
        .then(|| Duration::from_millis(a.get(NFTA_SET_TIMEOUT).and_then(be_u64).unwrap_or(0)));
    let comment = a
        .get(NFTA_SET_USERDATA)
        .and_then(|u| udata::string(u, udata::SET_COMMENT));
    SetState {
        unrecognised: key.is_none() || (is_map && !verdict_map && data.is_none()),
        def: SetDef {
            name: a.str(NFTA_SET_NAME).unwrap_or_default(),
            key: key.unwrap_or_default(),
            verdict_map,
            data,
            interval: flags & NFT_SET_INTERVAL != 0,
            timeout,
            comment,
        },
        flags,
        elements: Vec::new(),
    }
}

/// Streams `set`'s elements into `sink` a message at a time; an interval set's are paired
/// into prefixes, so they are handed over together at the end (such sets are small).
fn read_elements(
    s: &mut NfSocket,
    family: Family,
    table: &str,
    set: &SetState,
    sink: &mut dyn TableSink,
) -> Result<bool, NftError> {
    if set.unrecognised {
        return Ok(true);
    }
    let def = &set.def;
    let what = format!("list set {} {table} {}", family.keyword(), def.name);
    let mut intervals: Vec<RawElement> = Vec::new();
    let complete = s.request::<NftError>(
        &what,
        nft_type(NFT_MSG_GETSETELEM),
        nfproto(family),
        true,
        |w| {
            w.str(NFTA_SET_ELEM_LIST_TABLE, table);
            w.str(NFTA_SET_ELEM_LIST_SET, &def.name);
        },
        |m: Msg<'_>| {
            if let Some(list) = m.attrs().nested(NFTA_SET_ELEM_LIST_ELEMENTS) {
                let raw = list.filter_map(|(_, e)| set::raw_element(Attrs::new(e)));
                if def.interval {
                    intervals.extend(raw);
                } else {
                    sink.elements(&def.name, decode_keys(family, def, raw));
                }
            }
            Ok(())
        },
    )?;
    if def.interval {
        sink.elements(&def.name, decode_elements(family, def, intervals));
    }
    Ok(complete)
}

/// Elements of a set that is not an interval set, from their raw attributes.
fn decode_keys(
    family: Family,
    def: &SetDef,
    raw: impl IntoIterator<Item = RawElement>,
) -> Vec<Element> {
    (raw.into_iter())
        .filter_map(|r| {
            let data = match (def.data, &r.value) {
                (Some(d), Some(v)) => Some(set::decode_data(family, d, v)?),
                _ => None,
            };
            Some(Element {
                key: set::decode_key(family, &def.key, &r.key)?,
                prefix: None,
                verdict: r.verdict,
                data,
                comment: r.comment,
            })
        })
        .collect()
}

/// A set's elements from their raw attributes: intervals paired, keys decoded.
fn decode_elements(family: Family, def: &SetDef, raw: Vec<RawElement>) -> Vec<Element> {
    match def.interval {
        true => set::pair_intervals(raw),
        false => decode_keys(family, def, raw),
    }
}
