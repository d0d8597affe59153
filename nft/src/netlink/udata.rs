//! nft's userdata format (libnftnl `udata`): a byte string of `type (u8), len (u8), value`
//! records. `nft list` reads comments (type 0 for tables, rules and elements; 7 for sets) and
//! a set's key description from it; it skips record types it does not know, which is where a
//! rule's fingerprint goes.

/// Comment of a table, rule or set element (`NFTNL_UDATA_*_COMMENT`).
pub(crate) const COMMENT: u8 = 0;
/// The rule fingerprint: a type no nft version uses for rules (its parser ignores unknown
/// types), 8 bytes little-endian.
pub(crate) const RULE_FINGERPRINT: u8 = 0xf5;
/// `NFTNL_UDATA_SET_KEYBYTEORDER`.
pub(crate) const SET_KEYBYTEORDER: u8 = 0;
/// `NFTNL_UDATA_SET_DATABYTEORDER`.
pub(crate) const SET_DATABYTEORDER: u8 = 1;
/// `NFTNL_UDATA_SET_KEY_TYPEOF`.
pub(crate) const SET_KEY_TYPEOF: u8 = 3;
/// `NFTNL_UDATA_SET_DATA_TYPEOF`.
pub(crate) const SET_DATA_TYPEOF: u8 = 4;
/// `NFTNL_UDATA_SET_DATA_INTERVAL`.
pub(crate) const SET_DATA_INTERVAL: u8 = 6;
/// `NFTNL_UDATA_SET_COMMENT`.
pub(crate) const SET_COMMENT: u8 = 7;

/// Longest comment we store: records have a one-byte length and include the NUL.
pub(crate) const MAX_COMMENT: usize = 254;

/// Builds a userdata string.
#[derive(Debug, Default)]
pub(crate) struct Udata(Vec<u8>);

impl Udata {
    /// An empty one.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A record (values longer than 255 bytes are the caller's bug; they are cut).
    pub(crate) fn put(&mut self, ty: u8, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(255)];
        self.0.push(ty);
        self.0.push(value.len() as u8);
        self.0.extend_from_slice(value);
        self
    }

    /// A host-endian u32 record (nft's byte-order and typeof fields).
    pub(crate) fn u32(&mut self, ty: u8, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string record.
    pub(crate) fn string(&mut self, ty: u8, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v)
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when nothing was put.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The records of a userdata string (a truncated record ends the walk).
pub(crate) fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&ty, rest) = data.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        data = &rest[usize::from(len)..];
        Some((ty, value))
    })
}

/// The string record of type `ty`.
pub(crate) fn string(data: &[u8], ty: u8) -> Option<String> {
    records(data)
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| sluice_netlink::cstr(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut u = Udata::new();
        u.string(COMMENT, "ns/svc:http")
            .put(RULE_FINGERPRINT, &7u64.to_le_bytes());
        assert_eq!(&u.bytes()[..2], &[0, 12]);
        assert_eq!(string(u.bytes(), COMMENT).as_deref(), Some("ns/svc:http"));
        let fp = records(u.bytes()).find(|(t, _)| *t == RULE_FINGERPRINT);
        assert_eq!(
            fp.map(|(_, v)| v.to_vec()),
            Some(7u64.to_le_bytes().to_vec())
        );
        assert_eq!(records(&[0, 5, 1]).count(), 0);
    }
}
