//! Netlink framing by hand: messages (`nlmsghdr` + `nfgenmsg`) and attributes (4-byte aligned
//! TLVs, nestable), written into one growing buffer and read back as borrowed slices.
//!
//! nf_tables needs nothing more than this, and writing it ourselves keeps the batch a single
//! `Vec<u8>` we can size the socket buffer for, instead of a tree of typed messages. Generic
//! netlink's `genlmsghdr` is four bytes too (`cmd`, `version`, reserved), so
//! [`Writer::begin_genl`] shares the framing.

use crate::consts::{NLA_F_NESTED, NLA_TYPE_MASK};

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nfgenmsg`.
pub const NFGENMSG_LEN: usize = 4;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends messages and attributes to one buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    /// A nest grew past the 16-bit attribute length.
    overflow: bool,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `bytes` (no reallocation until they are written).
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            overflow: false,
        }
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// True when some nest outgrew its 16-bit length (the caller must split the message).
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Starts a netfilter message (`nlmsghdr` + `nfgenmsg`); returns its start for
    /// [`Writer::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Starts a generic netlink message (`nlmsghdr` + `genlmsghdr`) of family id `ty`;
    /// returns its start for [`Writer::end_msg`].
    pub fn begin_genl(&mut self, ty: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(cmd);
        self.buf.push(version);
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        start
    }

    /// Starts a message with its own fixed header `header` after the `nlmsghdr` (rtnetlink's
    /// `ifinfomsg`, `ifaddrmsg`); returns its start for [`Writer::end_msg`].
    pub fn begin_raw(&mut self, ty: u16, flags: u16, seq: u32, header: &[u8]) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(header);
        self.pad();
        start
    }

    /// A native-endian u32 attribute (generic netlink's `NLA_U32`).
    pub fn u32_ne(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_ne_bytes());
    }

    /// A native-endian u16 attribute.
    pub fn u16_ne(&mut self, ty: u16, v: u16) {
        self.bytes(ty, &v.to_ne_bytes());
    }

    /// A big-endian u16 attribute (ports).
    pub fn u16_be(&mut self, ty: u16, v: u16) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// Finishes the message started at `start` (patches its length).
    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// An attribute with raw payload.
    pub fn bytes(&mut self, ty: u16, data: &[u8]) {
        self.header(ty, data.len());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// An attribute's header for a payload of `len` bytes (flagged when it cannot fit).
    fn header(&mut self, ty: u16, len: usize) {
        let len = 4 + len;
        if len > usize::from(u16::MAX) {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
    }

    /// A big-endian u32 attribute (`NLA_U32` in nf_tables is network order).
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// A big-endian u64 attribute.
    pub fn u64(&mut self, ty: u16, v: u64) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// A u8 attribute.
    pub fn u8(&mut self, ty: u16, v: u8) {
        self.bytes(ty, &[v]);
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) {
        // Written in place: a copy per string was an allocation for every expression name
        // of a large batch (~190,000 in a cold sync of 10,000 Services, issue 14).
        self.header(ty, s.len() + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    /// A nested attribute whose content `f` writes.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        f(self);
        let len = self.buf.len() - start;
        if len > usize::from(u16::MAX) {
            self.overflow = true;
        }
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    /// Appends already encoded attributes.
    pub fn raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len()) - self.buf.len();
        self.buf.extend(std::iter::repeat_n(0, n));
    }
}

/// One received netlink message.
#[derive(Clone, Copy, Debug)]
pub struct Msg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the header.
    pub payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The attributes after the `nfgenmsg` header.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload.get(NFGENMSG_LEN..).unwrap_or(&[]))
    }
}

/// The messages in a received datagram (truncated trailing bytes are ignored).
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(buf[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

/// Iterator over attributes: `(type without flag bits, payload)`.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    data: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Attributes in `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The payload of the first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.clone().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    /// A big-endian u32 attribute.
    pub fn u32(&self, ty: u16) -> Option<u32> {
        self.get(ty).and_then(be_u32)
    }

    /// A string attribute (up to its NUL).
    pub fn str(&self, ty: u16) -> Option<String> {
        self.get(ty).map(cstr)
    }

    /// A string attribute's bytes up to its NUL, without a copy (for comparing names).
    pub fn name(&self, ty: u16) -> Option<&'a [u8]> {
        self.get(ty).map(until_nul)
    }

    /// The attributes nested in attribute `ty`.
    pub fn nested(&self, ty: u16) -> Option<Attrs<'a>> {
        self.get(ty).map(Attrs::new)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.data[0], self.data[1]]));
        let ty = u16::from_ne_bytes([self.data[2], self.data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.data.len() {
            self.data = &[];
            return None;
        }
        let value = &self.data[4..len];
        self.data = &self.data[align4(len).min(self.data.len())..];
        Some((ty, value))
    }
}

/// A big-endian u32.
pub fn be_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

/// A big-endian u64.
pub fn be_u64(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

/// A string up to its first NUL, lossily decoded.
pub fn cstr(data: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(data)).into_owned()
}

fn until_nul(data: &[u8]) -> &[u8] {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    &data[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding_and_nesting() {
        let mut w = Writer::new();
        let start = w.begin_msg(0x0a06, 1, 7, 2, 0);
        w.str(1, "sluice");
        w.nest(4, |w| {
            w.u32(1, 3);
            w.u8(2, 9);
        });
        w.u64(3, 42);
        w.end_msg(start);
        let buf = w.into_inner();
        let msgs: Vec<Msg<'_>> = messages(&buf).collect();
        assert_eq!(msgs.len(), 1);
        let m = msgs[0];
        assert_eq!((m.ty, m.flags, m.seq, m.payload[0]), (0x0a06, 1, 7, 2));
        let a = m.attrs();
        assert_eq!(a.str(1).as_deref(), Some("sluice"));
        let inner = a.nested(4).unwrap();
        assert_eq!(inner.u32(1), Some(3));
        assert_eq!(inner.get(2), Some(&[9u8][..]));
        assert_eq!(a.get(3).and_then(be_u64), Some(42));
    }

    #[test]
    fn a_string_is_its_bytes_and_a_nul_padded() {
        for s in ["", "a", "abc", "abcd", "sluice-proxy"] {
            let (mut by_str, mut by_bytes) = (Writer::new(), Writer::new());
            by_str.str(7, s);
            by_bytes.bytes(7, &[s.as_bytes(), &[0]].concat());
            assert_eq!(by_str.into_inner(), by_bytes.into_inner(), "{s:?}");
        }
        let mut w = Writer::new();
        w.str(1, &"x".repeat(70_000));
        assert!(w.overflowed());
    }

    #[test]
    fn oversized_nests_are_flagged() {
        let mut w = Writer::new();
        w.nest(1, |w| w.bytes(2, &[0; 70_000]));
        assert!(w.overflowed());
    }
}
