//! The change an SCTP packet's CRC32c undergoes when its ports are rewritten, computed
//! without reading the packet.
//!
//! SCTP has no pseudo-header, so rewriting addresses leaves its checksum alone; rewriting a
//! port does not, and CRC32c is no one's-complement sum the kernel's `l4_csum_replace` can
//! patch. Walking the whole packet in tc (what LoxiLB does, with tail calls) costs a loop
//! per byte; Cilium does not rewrite SCTP ports at all (port must equal targetPort). A CRC
//! is linear over GF(2), though: for two messages of the same length,
//! `crc(a) ^ crc(b) = raw(a ^ b)` (the register fed from zero, no final inversion), and
//! `a ^ b` is zero except in the 4 port bytes at the start. So the change is `raw(the 4
//! changed bytes)` moved through the rest of the message's zero bytes — a multiplication by
//! `x^(8n)` modulo the polynomial (zlib's `crc32_combine`) — about a thousand bounded loop
//! steps, whatever the packet's size, and every byte of it verifier-friendly.
//!
//! Representation: reflected, as the CRC register itself (bit 31 is `x^0`).

/// CRC32c (Castagnoli), reflected.
pub const POLY: u32 = 0x82F6_3B78;

/// All ones when `bit`'s lowest bit is set, else zero. The functions below choose with
/// this, never with a branch on data, so the verifier walks one path through their loops
/// instead of two per bit (it cannot merge the paths: their values differ). The bit goes
/// through `black_box` so LLVM cannot see it is 0 or 1: it would turn the product into a
/// sign extension (`<<63`, `s>>63`), whose [-1, 0] range the verifier forks on.
#[inline(always)]
fn mask(bit: u32) -> u32 {
    core::hint::black_box(bit & 1).wrapping_mul(u32::MAX)
}

/// One bit step of the register: divide by `x`, reduce.
#[inline(always)]
fn step(crc: u32) -> u32 {
    (crc >> 1) ^ (POLY & mask(crc))
}

/// `a · b` modulo [`POLY`].
#[inline(always)]
pub fn mul(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    let mut i = 0;
    while i < 32 {
        p ^= b & mask(a >> (31 - i));
        b = step(b);
        i += 1;
    }
    p
}

/// `x^(8·n)` modulo [`POLY`]: what feeding `n` zero bytes multiplies the register by.
#[inline(always)]
pub fn zero_bytes(n: u32) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut square = 1u32 << 23; // x^8: one byte
    let mut n = n;
    let mut i = 0;
    // An IP packet is shorter than 2^17 bytes.
    while i < 17 {
        let m = mask(n);
        p = (mul(square, p) & m) | (p & !m);
        square = mul(square, square);
        n >>= 1;
        i += 1;
    }
    p
}

/// The register after feeding `bytes` from zero, without the final inversion.
#[inline(always)]
pub fn raw(bytes: [u8; 4]) -> u32 {
    let mut crc = 0u32;
    let mut i = 0;
    while i < 4 {
        crc ^= u32::from(bytes[i]);
        let mut bit = 0;
        while bit < 8 {
            crc = step(crc);
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// What to XOR into the CRC32c of a `len`-byte SCTP packet (common header and chunks) when
/// its first four bytes — source and destination port, as on the wire — change by `xor`.
/// `len` below 4 is no SCTP packet: nothing changes.
#[inline(always)]
pub fn port_delta(xor: [u8; 4], len: u32) -> u32 {
    let delta = mul(zero_bytes(len.wrapping_sub(4)), raw(xor));
    delta & mask(u32::from(len >= 4))
}

/// CRC32c of `data` bit by bit, as SCTP computes it over a packet whose checksum field is
/// zero (RFC 9260): the reference the tests check the programs against.
pub fn checksum(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        let mut bit = 0;
        while bit < 8 {
            crc = step(crc);
            bit += 1;
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc32c(data: &[u8]) -> u32 {
        checksum(data)
    }

    /// A small deterministic generator (no dependencies in this crate).
    fn bytes(seed: &mut u64, n: usize) -> [u8; 2048] {
        let mut out = [0u8; 2048];
        for b in out.iter_mut().take(n) {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (*seed >> 33) as u8;
        }
        out
    }

    #[test]
    fn the_reference_is_crc32c() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn the_delta_turns_the_old_crc_into_the_new_one_for_every_length() {
        let mut seed = 7;
        for len in (4..=64).chain([100, 255, 256, 1000, 1480, 2048]) {
            for _ in 0..4 {
                let mut pkt = bytes(&mut seed, len);
                let pkt = &mut pkt[..len];
                if len >= 12 {
                    pkt[8..12].fill(0); // the checksum field counts as zero
                }
                let old = crc32c(pkt);
                let new_ports = bytes(&mut seed, 4);
                let mut xor = [0u8; 4];
                for i in 0..4 {
                    xor[i] = pkt[i] ^ new_ports[i];
                    pkt[i] = new_ports[i];
                }
                let len32 = u32::try_from(len).unwrap();
                assert_eq!(old ^ port_delta(xor, len32), crc32c(pkt), "length {len}");
            }
        }
    }

    #[test]
    fn no_change_is_no_delta() {
        assert_eq!(port_delta([0; 4], 1500), 0);
        assert_eq!(port_delta([1, 2, 3, 4], 3), 0);
    }

    #[test]
    fn zero_bytes_agrees_with_feeding_zeros() {
        for n in [0u32, 1, 2, 3, 7, 8, 100, 1476] {
            let mut crc = 0x1234_5678u32;
            for _ in 0..n * 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
            assert_eq!(mul(zero_bytes(n), 0x1234_5678), crc, "{n} zero bytes");
        }
    }
}
