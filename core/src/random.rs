//! Random numbers. [`SplitMix`] is seeded, for draws that must repeat
//! from a seed: exploration slots, negative sampling, simulated reports.
//! [`SystemWords`] reads the system's CSPRNG, for draws that must not be
//! predictable: the randomized responses a device sends, the stochastic
//! rounding of an update. Keys and nonces take `ring::rand::SystemRandom`
//! directly.

use ring::rand::{SecureRandom, SystemRandom};

/// A small deterministic generator (SplitMix64).
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// 64-bit words from the system's CSPRNG, read a block at a time. A failed
/// read gives zero words and is remembered: check [`SystemWords::failed`]
/// before using what was drawn.
pub(crate) struct SystemWords {
    rng: SystemRandom,
    block: Vec<u8>,
    at: usize,
    failed: bool,
}

impl SystemWords {
    const BLOCK: usize = 8 * 1024;

    pub(crate) fn new() -> Self {
        SystemWords { rng: SystemRandom::new(), block: vec![0; Self::BLOCK], at: Self::BLOCK, failed: false }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        if self.at == self.block.len() {
            if self.rng.fill(&mut self.block).is_err() {
                self.failed = true;
                self.block.fill(0);
            }
            self.at = 0;
        }
        let word = u64::from_le_bytes(self.block[self.at..self.at + 8].try_into().expect("eight bytes"));
        self.at += 8;
        word
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed
    }
}
