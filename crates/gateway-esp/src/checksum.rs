//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624):
//! the one implementation for everything in user space that builds or
//! rewrites IP, UDP, TCP and ICMP headers (the ESP engine's outer headers,
//! the workers' ICMP errors, MSS clamping and checksum completion, the
//! benchmarks' and tests' packets). The XDP programs keep their own,
//! written for the verifier.

/// Adds the big-endian 16-bit words of `data` (an odd last byte padded
/// with zero) to `acc`, unfolded; fold the result with [`fold`]. Sums of
/// pieces add up (`add(add(0, a), b)` is the sum of `a` then `b` as long
/// as `a` has an even length).
///
/// Eight bytes per step in native order with end-around carry, folded and
/// byte-swapped once at the end (RFC 1071 §2(B): the sum does not depend on
/// byte order up to that swap). The workers run it over every full-size
/// segment whose checksum the sender left to offload.
pub fn add(acc: u64, data: &[u8]) -> u64 {
    let mut wide: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let (s, carry) = wide.overflowing_add(u64::from_ne_bytes([
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
        ]));
        wide = s + u64::from(carry);
    }
    // Native-order 16-bit sum of the 8-byte words, then to big-endian.
    let native = fold(wide);
    let mut acc = acc + u64::from(u16::from_be(native));
    let mut pairs = words.remainder().chunks_exact(2);
    for w in &mut pairs {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a ones'-complement accumulator to 16 bits (not inverted).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field for an accumulator: folded and inverted.
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The checksum of `data` (for a header whose checksum field is zero; over
/// a header that carries its checksum, a valid one gives 0).
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// RFC 1624 eqn. 3: the checksum `check` after a 16-bit word of what it
/// covers changes from `old` to `new`.
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!check) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Word by word, as RFC 1071 describes it.
    fn by_words(b: &[u8]) -> u16 {
        let mut acc = 0u64;
        for c in b.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        fold(acc)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        assert_eq!(
            fold(add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
        // An odd length pads with zero.
        assert_eq!(checksum(&[0xab]), !0xab00);
    }

    #[test]
    fn the_wide_sum_equals_the_word_by_word_sum() {
        // Bytes chosen to carry often: long runs of 0xff, then a pattern.
        let mut data = vec![0xffu8; 3000];
        for (i, b) in data.iter_mut().enumerate().skip(1500) {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        for start in 0..9 {
            for len in (0..80).chain([1399, 1400, 1401, 1480, 1500 - start]) {
                let b = &data[1490 - start..1490 - start + len];
                assert_eq!(fold(add(0, b)), by_words(b), "start {start} len {len}");
                let acc = 0x1_2345;
                assert_eq!(
                    fold(add(acc, b)),
                    fold(u64::from(by_words(b)) + acc),
                    "start {start} len {len} with acc"
                );
            }
        }
    }

    #[test]
    fn a_valid_header_checksums_to_zero_and_updates_stay_valid() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&h);
        assert_eq!(c, 0xb861, "RFC 1071 example header (Wikipedia's)");
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
        // TTL 64 → 63: the incremental update matches a recomputation.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 63;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let updated = replace16(c, old, new);
        h[10..12].copy_from_slice(&updated.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }
}
