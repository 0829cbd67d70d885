//! MurmurHash3 x86_32 (seed 0), written to be fed incrementally so that the
//! bucketing key of `fractional` (usually `flagKey + targetingKey`, or a `cat`)
//! is hashed without ever being concatenated into a heap string.
//!
//! Also a small FxHash-style hasher for the flag-key index: flag keys come from
//! the operator's own configuration, so a DoS-resistant hash buys nothing and
//! SipHash would cost a large share of a static evaluation.

use std::hash::{BuildHasherDefault, Hasher};

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Streaming MurmurHash3 x86_32 with seed 0 (the seed flagd uses).
#[derive(Debug, Clone, Default)]
pub(crate) struct Murmur3 {
    h1: u32,
    /// Bytes not yet forming a full 4-byte block, little-endian packed.
    tail: u32,
    tail_len: u32,
    total_len: u32,
}

#[inline]
fn mix_k1(mut k1: u32) -> u32 {
    k1 = k1.wrapping_mul(C1);
    k1 = k1.rotate_left(15);
    k1.wrapping_mul(C2)
}

impl Murmur3 {
    #[inline]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn block(&mut self, k1: u32) {
        self.h1 ^= mix_k1(k1);
        self.h1 = self.h1.rotate_left(13);
        self.h1 = self.h1.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    /// Feeds `bytes`; equivalent to hashing the concatenation of every call.
    #[inline]
    pub(crate) fn write(&mut self, mut bytes: &[u8]) {
        self.total_len = self.total_len.wrapping_add(bytes.len() as u32);
        // Complete a pending partial block first.
        while self.tail_len > 0 && !bytes.is_empty() {
            self.tail |= u32::from(bytes[0]) << (8 * self.tail_len);
            self.tail_len += 1;
            bytes = &bytes[1..];
            if self.tail_len == 4 {
                let k = self.tail;
                self.block(k);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        let mut chunks = bytes.chunks_exact(4);
        for c in &mut chunks {
            self.block(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        for (i, b) in chunks.remainder().iter().enumerate() {
            self.tail |= u32::from(*b) << (8 * i);
            self.tail_len += 1;
        }
    }

    #[inline]
    pub(crate) fn finish(&self) -> u32 {
        let mut h1 = self.h1;
        if self.tail_len > 0 {
            h1 ^= mix_k1(self.tail);
        }
        h1 ^= self.total_len;
        h1 ^= h1 >> 16;
        h1 = h1.wrapping_mul(0x85eb_ca6b);
        h1 ^= h1 >> 13;
        h1 = h1.wrapping_mul(0xc2b2_ae35);
        h1 ^= h1 >> 16;
        h1
    }
}

impl std::fmt::Write for Murmur3 {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// One-shot MurmurHash3 x86_32, seed 0.
pub fn murmur3_x86_32(bytes: &[u8]) -> u32 {
    let mut h = Murmur3::new();
    h.write(bytes);
    h.finish()
}

/// Maps a 32-bit hash onto `[0, total_weight)` with integer arithmetic only:
/// `(hash * total_weight) >> 32`, exactly as flagd's `distributeValue`.
#[inline]
pub fn bucket(hash: u32, total_weight: u32) -> u64 {
    (u64::from(hash) * u64::from(total_weight)) >> 32
}

/// FxHash-style hasher for the flag index (keys are operator-controlled).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Assembled in a register: a copy through a stack buffer stalls store forwarding.
            let mut word = 0u64;
            for (i, b) in rest.iter().enumerate() {
                word |= u64::from(*b) << (8 * i);
            }
            self.add(word);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// String equality for the short keys of the hot path (flag keys, attribute
/// names, variant names), inlined instead of a call to `memcmp`.
#[inline(always)]
pub(crate) fn fast_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        u64::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3], s[at + 4], s[at + 5], s[at + 6], s[at + 7]])
    };
    let half = |s: &[u8], at: usize| u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]);
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

fn fx_hash(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

/// An open-addressing table from flag key to index: compares a stored hash
/// before the key bytes, and the bytes with [`fast_eq`].
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    /// `(hash, index + 1)`; 0 marks an empty slot.
    slots: Box<[(u64, u32)]>,
    mask: usize,
}

impl KeyIndex {
    /// Builds the index of `keys` (assumed distinct).
    pub(crate) fn new<'k>(keys: impl ExactSizeIterator<Item = &'k str>) -> KeyIndex {
        let cap = (keys.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![(0u64, 0u32); cap].into_boxed_slice();
        let mask = cap - 1;
        for (i, k) in keys.enumerate() {
            let h = fx_hash(k);
            let mut at = (h as usize) & mask;
            while slots[at].1 != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = (h, i as u32 + 1);
        }
        KeyIndex { slots, mask }
    }

    /// The index of `key`, given the key of each index.
    #[inline]
    pub(crate) fn get<'k>(&self, key: &str, key_of: impl Fn(usize) -> &'k str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let h = fx_hash(key);
        let mut at = (h as usize) & self.mask;
        loop {
            let (sh, si) = self.slots[at];
            if si == 0 {
                return None;
            }
            let i = si as usize - 1;
            if sh == h && fast_eq(key_of(i), key) {
                return Some(i);
            }
            at = (at + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_eq_agrees_with_eq() {
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "abd",
            "abcd",
            "abce",
            "abcdefg",
            "abcdefh",
            "abcdefgh",
            "abcdefgi",
            "0123456789abcdef",
            "0123456789abcdeg",
            "0123456789abcdefg",
            "0123456789abcdefh",
            "é",
            "ée",
        ];
        for a in words {
            for b in words {
                assert_eq!(fast_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn key_index_finds_every_key_and_nothing_else() {
        let keys: Vec<String> = (0..300).map(|i| format!("flag-{i}")).collect();
        let ix = KeyIndex::new(keys.iter().map(String::as_str));
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(ix.get(k, |j| keys[j].as_str()), Some(i));
        }
        assert_eq!(ix.get("flag-300", |j| keys[j].as_str()), None);
        assert_eq!(KeyIndex::default().get("x", |j| keys[j].as_str()), None);
    }

    #[test]
    fn streaming_equals_one_shot_for_every_split() {
        let data = b"fractional-flagjack and some more bytes 0123456789";
        let whole = murmur3_x86_32(data);
        for a in 0..data.len() {
            for b in a..data.len() {
                let mut h = Murmur3::new();
                h.write(&data[..a]);
                h.write(&data[a..b]);
                h.write(&data[b..]);
                assert_eq!(h.finish(), whole, "split at {a},{b}");
            }
        }
    }
}
