//! The element keys a footprint holds, packed into one buffer per owner. At 10,000
//! Services × 3 endpoints the footprints hold ~50,000 keys; as a `Vec<KeyValue>` each (a
//! heap block of its own) plus a set name per owner and set, they were ~6.6 MiB of the
//! proxy's steady 44 MiB heap (issue 14). Packed, a hairpin key (address, address, port)
//! with its prefix and verdict hash takes 23 bytes.
//!
//! Layout: the number of elements (four bytes), then per set: the set name's length (one
//! byte) and bytes, the number of elements (four bytes), then per element: the number of
//! key values (one byte), each value as a tag byte and its bytes (IPv4 4, IPv6 16, protocol
//! 1, port 2), the prefix length (one byte, 255 for none) and the verdict hash (eight
//! bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_nft::{KeyValue, Proto};

use super::desired::ElemKey;

const V4: u8 = 0;
const V6: u8 = 1;
const PROTO: u8 = 2;
const PORT: u8 = 3;
const BUCKET: u8 = 4;
const NO_PREFIX: u8 = u8::MAX;

/// Element keys with their verdict hashes, per set, packed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Packed(Box<[u8]>);

impl Packed {
    /// Packs `sets`: each set's name with its keys and verdict hashes. Names longer than
    /// 255 bytes and sets of more than 2^32 elements cannot occur (the kernel's limits are
    /// lower); they are cut short rather than packed wrong.
    pub(crate) fn new<'a, S, K>(sets: S) -> Self
    where
        S: IntoIterator<Item = (&'a str, K)>,
        K: ExactSizeIterator<Item = (&'a ElemKey, u64)>,
    {
        // The number of elements first, so counting them decodes nothing.
        let mut out = vec![0; 4];
        let mut total = 0u32;
        for (set, keys) in sets {
            let name = &set.as_bytes()[..set.len().min(255)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n.to_le_bytes());
            for (key, verdict) in keys.take(n as usize) {
                push_key(&mut out, key);
                out.extend_from_slice(&verdict.to_le_bytes());
            }
            total = total.saturating_add(n);
        }
        out[..4].copy_from_slice(&total.to_le_bytes());
        Self(out.into_boxed_slice())
    }

    /// The number of elements.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        (self.0.first_chunk::<4>()).map_or(0, |n| u32::from_le_bytes(*n) as usize)
    }

    /// The keys, with their set and verdict hash, in the order packed.
    pub(crate) fn iter(&self) -> Keys<'_> {
        Keys {
            rest: self.0.get(4..).unwrap_or_default(),
            set: "",
            left: 0,
        }
    }
}

/// Appends `key` (its values and prefix length) to `out`.
pub(crate) fn push_key(out: &mut Vec<u8>, (values, prefix): &ElemKey) {
    out.push(values.len().min(255) as u8);
    for v in values.iter().take(255) {
        push_value(out, v);
    }
    out.push(prefix.unwrap_or(NO_PREFIX));
}

/// The key [`push_key`] appended at `at` in `bytes`.
pub(crate) fn key_at(bytes: &[u8], at: usize) -> Option<ElemKey> {
    let mut reader = Keys {
        rest: bytes.get(at..)?,
        set: "",
        left: 0,
    };
    reader.key()
}

fn push_value(out: &mut Vec<u8>, v: &KeyValue) {
    match v {
        KeyValue::Addr(IpAddr::V4(a)) => {
            out.push(V4);
            out.extend_from_slice(&a.octets());
        }
        KeyValue::Addr(IpAddr::V6(a)) => {
            out.push(V6);
            out.extend_from_slice(&a.octets());
        }
        KeyValue::Proto(p) => {
            out.push(PROTO);
            out.push(p.number());
        }
        KeyValue::Port(p) => {
            out.push(PORT);
            out.extend_from_slice(&p.to_le_bytes());
        }
        KeyValue::Bucket(b) => {
            out.push(BUCKET);
            out.extend_from_slice(&b.to_le_bytes());
        }
    }
}

/// Iterator over a [`Packed`]'s keys.
pub(crate) struct Keys<'a> {
    rest: &'a [u8],
    set: &'a str,
    left: u32,
}

impl<'a> Keys<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    fn value(&mut self) -> Option<KeyValue> {
        Some(match self.byte()? {
            V4 => KeyValue::Addr(Ipv4Addr::from(self.array::<4>()?).into()),
            V6 => KeyValue::Addr(Ipv6Addr::from(self.array::<16>()?).into()),
            PROTO => KeyValue::Proto(match self.byte()? {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                132 => Proto::Sctp,
                _ => return None,
            }),
            PORT => KeyValue::Port(u16::from_le_bytes(self.array()?)),
            BUCKET => KeyValue::Bucket(u32::from_le_bytes(self.array()?)),
            _ => return None,
        })
    }

    fn key(&mut self) -> Option<ElemKey> {
        let n = self.byte()?;
        let values = (0..n).map(|_| self.value()).collect::<Option<Vec<_>>>()?;
        let prefix = Some(self.byte()?).filter(|p| *p != NO_PREFIX);
        Some((values, prefix))
    }

    fn element(&mut self) -> Option<(ElemKey, u64)> {
        let key = self.key()?;
        let verdict = u64::from_le_bytes(self.array()?);
        Some((key, verdict))
    }
}

impl<'a> Iterator for Keys<'a> {
    type Item = (&'a str, ElemKey, u64);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left == 0 {
            let len = self.byte()?;
            self.set = std::str::from_utf8(self.take(len as usize)?).ok()?;
            self.left = u32::from_le_bytes(self.array()?);
        }
        self.left -= 1;
        let (key, verdict) = self.element()?;
        Some((self.set, key, verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = KeyValue> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| KeyValue::Addr(Ipv4Addr::from(a).into())),
            any::<[u8; 16]>().prop_map(|a| KeyValue::Addr(Ipv6Addr::from(a).into())),
            prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Sctp)]
                .prop_map(KeyValue::Proto),
            any::<u16>().prop_map(KeyValue::Port),
            any::<u32>().prop_map(KeyValue::Bucket),
        ]
    }

    type Sets = Vec<(String, Vec<(ElemKey, u64)>)>;

    fn sets() -> impl Strategy<Value = Sets> {
        let key = (prop::collection::vec(value(), 0..4), any::<Option<u8>>())
            .prop_filter("255 means no prefix", |(_, p)| *p != Some(NO_PREFIX));
        let elements = prop::collection::vec((key, any::<u64>()), 0..5);
        prop::collection::vec(("[a-z-]{1,20}", elements), 0..4)
    }

    proptest! {
        #[test]
        fn keys_come_back_as_packed(sets in sets()) {
            let packed = Packed::new(
                sets.iter().map(|(s, keys)| (s.as_str(), keys.iter().map(|(k, v)| (k, *v)))),
            );
            let back: Vec<(&str, ElemKey, u64)> = packed.iter().collect();
            let expected: Vec<(&str, ElemKey, u64)> = (sets.iter())
                .flat_map(|(s, keys)| keys.iter().map(move |(k, v)| (s.as_str(), k.clone(), *v)))
                .collect();
            prop_assert_eq!(packed.len(), expected.len());
            prop_assert_eq!(back, expected);
        }
    }

    #[test]
    fn a_hairpin_key_takes_23_bytes() {
        let key: ElemKey = (
            vec![
                KeyValue::Addr("10.0.0.1".parse().unwrap()),
                KeyValue::Addr("10.0.0.1".parse().unwrap()),
                KeyValue::Port(80),
            ],
            None,
        );
        let packed = Packed::new([("", [(&key, 7u64)].into_iter())]);
        assert_eq!(packed.0.len(), 4 + 1 + 4 + 23);
        assert_eq!(packed.len(), 1);
    }
}
