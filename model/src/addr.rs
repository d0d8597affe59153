//! Addresses of either family as plain integers, so address arithmetic (subnet ranges,
//! round-robin allocation) is written once for IPv4 and IPv6. Used by the overlay's subnet
//! allocator and the CNI plugin's IPAM.

use std::net::IpAddr;

/// `ip` as an integer and its width in bits (32 or 128).
pub fn to_bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The address `value` of a family `width` bits wide; `None` when it does not fit.
pub fn from_bits(value: u128, width: u8) -> Option<IpAddr> {
    if width == 32 {
        u32::try_from(value).ok().map(|v| IpAddr::V4(v.into()))
    } else {
        Some(IpAddr::V6(value.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_families_and_rejects_overflow() {
        for ip in ["10.244.1.2", "255.255.255.255", "fd00::1", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (v, w) = to_bits(ip);
            assert_eq!(from_bits(v, w), Some(ip));
        }
        assert_eq!(from_bits(1 << 32, 32), None);
    }
}
