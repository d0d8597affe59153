//! Ethernet addresses as flannel writes them (`12:c6:65:89:b4:e3`, lowercase), because VTEP
//! MACs travel through annotations and etcd leases as text and must compare equal after a
//! round trip — a MAC that "changes" by case would churn FDB entries on every peer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// Text that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: want six hex pairs separated by ':'")]
pub struct MacError(pub String);

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        match parts.next() {
            None => Ok(Self(out)),
            Some(_) => Err(err()),
        }
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_any_case_and_prints_lowercase() {
        let mac: Mac = "12:C6:65:89:b4:E3".parse().unwrap();
        assert_eq!(mac.to_string(), "12:c6:65:89:b4:e3");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "12:c6:65:89:b4",
            "12:c6:65:89:b4:e3:00",
            "1:c6:65:89:b4:e3",
            "zz:c6:65:89:b4:e3",
            "12-c6-65-89-b4-e3",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn text_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = Mac(bytes);
            prop_assert_eq!(mac.to_string().parse::<Mac>().unwrap(), mac);
        }
    }
}
