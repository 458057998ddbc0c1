//! Discrete Gaussian noise, sampled exactly: the device's share of a
//! round's differential-privacy noise, added to its quantized update
//! before masking, so the noise is in the sum whatever the coordinator
//! does (the distributed discrete Gaussian of Kairouz, Liu and Steinke,
//! ICML 2021).
//!
//! Both samplers are exact: only integer arithmetic and uniform bits from
//! the CSPRNG decide a value, so no floating-point rounding shapes the
//! output (Mironov, CCS 2012, shows how such rounding leaks). The variance
//! is a rational `num / den`.
//!
//! - [`Sampler`] (what a device uses): rejection from a table envelope
//!   with exact acceptance ([`table`]), about 20 ns a value, for sigma up
//!   to about 9,000;
//! - [`DiscreteGaussian::sample_by_rejection`]: the sampler of Canonne,
//!   Kamath and Steinke ("The discrete Gaussian for differential privacy",
//!   NeurIPS 2020, algorithms 1 to 3), every probability an exact rational
//!   in u128, no table, about 145 ns a value whatever the variance; the
//!   [`Sampler`] falls back to it beyond the table's reach.

use chacha20::ChaCha20Rng;
use rand_core::Rng;

use crate::quantize::{Quantization, QuantizeError};

mod bounds;
pub(crate) mod table;

use table::Table;

/// The discrete Gaussian on the integers: P(x) proportional to
/// exp(-x^2 / (2 sigma^2)), with sigma^2 = `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    num: u64,
    den: u64,
    /// The discrete Laplace scale the sampler proposes from: floor(sigma) + 1.
    t: u64,
}

/// The noise a round asks of its devices (distributed DP): each device
/// adds a discrete Gaussian share to its quantized update before masking,
/// sized so that the shares of the honest part of the cohort alone sum to
/// noise of standard deviation `multiplier * clip_norm` (in the update's
/// units), whatever the others do. The coordinator adds nothing and cannot
/// take any out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseTerms {
    /// z: the std of the honest devices' summed noise, in clip norms.
    pub multiplier: f64,
    /// The fraction of the cohort assumed honest and surviving (the app's
    /// choice on the device, 2/3 by default; the coordinator's for its
    /// wrap margin).
    pub honest_fraction: f64,
}

impl NoiseTerms {
    /// How many of `cohort` devices are counted on: ceil(fraction * cohort).
    pub fn honest(&self, cohort: u32) -> u32 {
        ((self.honest_fraction * cohort as f64).ceil() as u32).clamp(1, cohort.max(1))
    }

    /// One device's share, as a variance in the quantized units (clip norm
    /// `clip_norm`, scale `scale`): (z C s)^2 / honest.
    pub fn share_variance(&self, clip_norm: f64, scale: f64, cohort: u32) -> f64 {
        (self.multiplier * clip_norm * scale).powi(2) / self.honest(cohort) as f64
    }

    /// The std of the noise when all of `max_cohort` devices add their
    /// share, in clip norms (for the wrap margin): z sqrt(max / honest).
    pub fn sum_std(&self, cohort: u32, max_cohort: u32) -> f64 {
        self.multiplier * (max_cohort as f64 / self.honest(cohort) as f64).sqrt()
    }

    /// The largest scale a round of `cohort` devices, summing at most
    /// `max_cohort` updates clipped to `clip_norm` modulo 2^bits, can take
    /// with room for every device's share of this noise (no room when the
    /// terms are not [`Self::valid`]).
    pub fn largest_scale(&self, bits: u32, clip_norm: f64, cohort: u32, max_cohort: u32) -> f64 {
        let noise_std = if self.valid() { self.sum_std(cohort, max_cohort) } else { 0.0 };
        Quantization::largest_scale_with_noise(bits, clip_norm, max_cohort, noise_std)
    }

    /// Checks that a sum of `q.max_cohort` updates, with every device's
    /// share of noise for a round of `cohort`, cannot wrap modulo 2^bits
    /// (within [`crate::quantize::NOISE_MARGIN`] standard deviations).
    pub fn check_room(&self, q: &Quantization, cohort: u32) -> Result<(), QuantizeError> {
        q.check_with_noise(self.sum_std(cohort, q.max_cohort) * q.clip_norm * q.scale)
    }

    /// Whether the terms can be used: z finite and at least 0, the fraction
    /// in (0, 1].
    pub fn valid(&self) -> bool {
        self.multiplier.is_finite()
            && self.multiplier >= 0.0
            && self.honest_fraction.is_finite()
            && self.honest_fraction > 0.0
            && self.honest_fraction <= 1.0
    }
}

/// Terms the sampler cannot hold exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    #[error("a variance of {num}/{den} is outside 0 < sigma^2 <= 2^40 with a denominator of 1 to 2^16")]
    Variance { num: u64, den: u64 },
}

/// The largest variance (sigma about 10^6, far above any round's share).
pub const MAX_VARIANCE: u64 = 1 << 40;
/// The largest denominator of a variance.
pub const MAX_DENOMINATOR: u64 = 1 << 16;

impl DiscreteGaussian {
    /// sigma^2 = `num / den`, 0 < sigma^2 <= 2^40, 1 <= den <= 2^16: the
    /// bounds keep every quantity of the sampler within u128.
    pub fn new(num: u64, den: u64) -> Result<Self, NoiseError> {
        if num == 0 || den == 0 || den > MAX_DENOMINATOR || num / den >= MAX_VARIANCE {
            return Err(NoiseError::Variance { num, den });
        }
        // floor(sigma) = the largest s with s^2 <= num / den.
        let mut s = ((num as f64 / den as f64).sqrt() as u64).saturating_sub(1);
        while (s as u128 + 1).pow(2) * den as u128 <= num as u128 {
            s += 1;
        }
        while s > 0 && (s as u128).pow(2) * den as u128 > num as u128 {
            s -= 1;
        }
        Ok(DiscreteGaussian { num, den, t: s + 1 })
    }

    /// The discrete Gaussian of variance parameter at least `variance`
    /// (rounded up to a multiple of 2^-16).
    pub fn at_least(variance: f64) -> Result<Self, NoiseError> {
        let scaled = (variance * MAX_DENOMINATOR as f64).ceil();
        if !(scaled >= 1.0 && scaled < (MAX_VARIANCE * MAX_DENOMINATOR) as f64) {
            return Err(NoiseError::Variance {
                num: scaled.max(0.0).min(u64::MAX as f64) as u64,
                den: MAX_DENOMINATOR,
            });
        }
        DiscreteGaussian::new(scaled as u64, MAX_DENOMINATOR)
    }

    /// The variance parameter sigma^2 as a float (for reports; the
    /// sampler never uses it).
    pub fn variance(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// The sampler for this variance: its table built once (a fraction of
    /// a millisecond for a device's share), then shared by every value.
    pub fn sampler(&self) -> Sampler {
        match Table::new(self.num, self.den, self.t - 1) {
            Some(table) => Sampler::Table(Box::new(table)),
            None => Sampler::Rejection(*self),
        }
    }

    /// One value by Canonne, Kamath and Steinke's algorithm 3 (exact, no
    /// table, slower): a discrete Laplace proposal of scale t,
    /// accepted with probability exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)),
    /// which is exp(-(|y| t den - num)^2 / (2 num den t^2)).
    pub fn sample_by_rejection(&self, bits: &mut RandomBits) -> i64 {
        let (num, den, t) = (self.num as u128, self.den as u128, self.t as u128);
        let gamma_den = 2 * num * den * t * t;
        loop {
            let y = discrete_laplace(bits, self.t);
            // |y| t den - num, squared; a proposal so far out that this
            // overflows is accepted with probability below exp(-2^60):
            // taken as refused.
            let Some(scaled) = (y.unsigned_abs() as u128).checked_mul(t * den) else { continue };
            let diff = scaled.abs_diff(num);
            let Some(gamma_num) = diff.checked_mul(diff) else { continue };
            if bernoulli_exp(bits, gamma_num, gamma_den) {
                return y;
            }
        }
    }

    /// Adds one value to each of `acc`, modulo 2^bits (bits 1 to 32).
    pub fn add_to(&self, random: &mut RandomBits, acc: &mut [u32], bits: u32) {
        self.sampler().add_to(random, acc, bits)
    }

    /// [`Self::add_to`] on up to `threads` threads at once, each over its
    /// own slice of `acc` with its own stream from `stream` (every value
    /// is still an independent draw; the work is the same, the wait is
    /// shorter on a device with idle cores).
    pub fn add_to_parallel<E: Send>(
        &self,
        acc: &mut [u32],
        bits: u32,
        threads: usize,
        mut stream: impl FnMut() -> Result<RandomBits, E>,
    ) -> Result<(), E> {
        let chunk = acc.len().div_ceil(threads.max(1)).max(1);
        let mut parts = Vec::new();
        for part in acc.chunks_mut(chunk) {
            parts.push((part, stream()?));
        }
        let Some((first, mut first_stream)) = parts.pop() else { return Ok(()) };
        let sampler = self.sampler();
        let sampler = &sampler;
        std::thread::scope(|s| {
            for (part, mut random) in parts {
                s.spawn(move || sampler.add_to(&mut random, part, bits));
            }
            sampler.add_to(&mut first_stream, first, bits);
        });
        Ok(())
    }
}

/// A discrete Gaussian ready to draw from: its table when sigma is within
/// the table's reach, else the table-free rejection sampler. Both exact.
#[derive(Debug, Clone)]
pub enum Sampler {
    Table(Box<Table>),
    Rejection(DiscreteGaussian),
}

impl Sampler {
    /// One value.
    pub fn sample(&self, bits: &mut RandomBits) -> i64 {
        match self {
            Sampler::Table(table) => table.sample(bits),
            Sampler::Rejection(g) => g.sample_by_rejection(bits),
        }
    }

    /// Adds one value to each of `acc`, modulo 2^bits (bits 1 to 32).
    pub fn add_to(&self, random: &mut RandomBits, acc: &mut [u32], bits: u32) {
        let mask = u32::MAX >> (32 - bits.clamp(1, 32));
        for a in acc {
            *a = (*a as i64).wrapping_add(self.sample(random)) as u32 & mask;
        }
    }
}

/// The CSPRNG's output as a little-endian bit stream (its 64-bit words in
/// order, low bits first), read a few bits at a time: a Bernoulli(1/3)
/// takes 2 bits of keystream, not 64, and the sampler is bound by the
/// keystream it reads.
pub struct RandomBits {
    rng: ChaCha20Rng,
    buf: u64,
    left: u32,
}

impl RandomBits {
    pub fn new(rng: ChaCha20Rng) -> Self {
        RandomBits { rng, buf: 0, left: 0 }
    }

    /// The next `b` bits of the stream (1 to 64) as an integer, the first
    /// bit lowest.
    pub(crate) fn take(&mut self, b: u32) -> u64 {
        debug_assert!((1..=64).contains(&b));
        if b <= self.left {
            let v = self.buf & (u64::MAX >> (64 - b));
            self.buf = self.buf.checked_shr(b).unwrap_or(0);
            self.left -= b;
            return v;
        }
        let (low, have) = (self.buf, self.left);
        let next = self.rng.next_u64();
        let need = b - have;
        let v = low | (next & (u64::MAX >> (64 - need))).checked_shl(have).unwrap_or(0);
        self.buf = next.checked_shr(need).unwrap_or(0);
        self.left = 64 - need;
        v
    }
}

/// A uniform integer in `0..n` (n > 0): as many bits as n - 1 has, again
/// until below n (no modulo bias; under two tries on average).
fn uniform_below(bits: &mut RandomBits, n: u64) -> u64 {
    debug_assert!(n > 0);
    let width = 64 - (n - 1).leading_zeros();
    if width == 0 {
        return 0;
    }
    loop {
        let v = bits.take(width);
        if v < n {
            return v;
        }
    }
}

/// True with probability num / den (num <= den, den <= 2^127), reading
/// two bits on average whatever den is: the stream's bits are the binary
/// digits of a uniform U in [0, 1), compared with those of num / den
/// (worked out by long division) until they differ; U < num / den decides.
/// When the rest of num / den's digits are all 0 and U has matched so
/// far, U >= num / den: false.
fn bernoulli(bits: &mut RandomBits, num: u128, den: u128) -> bool {
    debug_assert!(num <= den && den <= 1 << 127);
    if num >= den {
        return true;
    }
    let mut rest = num;
    while rest != 0 {
        rest <<= 1;
        let digit = rest >= den;
        if digit {
            rest -= den;
        }
        let u = bits.take(1) == 1;
        if u != digit {
            return digit;
        }
    }
    false
}

/// True with probability exp(-num / den) (algorithm 1): for gamma =
/// num/den <= 1, the parity of the first k with Bernoulli(gamma / k)
/// false; above 1, floor(gamma) draws of exp(-1) and one of the rest.
fn bernoulli_exp(bits: &mut RandomBits, num: u128, den: u128) -> bool {
    if num < den {
        return bernoulli_exp_at_most_one(bits, num, den);
    }
    let whole = num / den;
    for _ in 0..whole {
        if !bernoulli_exp_at_most_one(bits, 1, 1) {
            return false;
        }
    }
    let rest = num - whole * den;
    rest == 0 || bernoulli_exp_at_most_one(bits, rest, den)
}

fn bernoulli_exp_at_most_one(bits: &mut RandomBits, num: u128, den: u128) -> bool {
    let mut k: u128 = 1;
    // den * k stays far below 2^127: k past a few dozen has probability
    // below gamma^k / k!.
    while bernoulli(bits, num, den.saturating_mul(k).min(1 << 127)) {
        k += 1;
    }
    k % 2 == 1
}

/// The discrete Laplace of scale t (algorithm 2): P(x) proportional to
/// exp(-|x| / t).
fn discrete_laplace(bits: &mut RandomBits, t: u64) -> i64 {
    loop {
        let u = uniform_below(bits, t);
        if !bernoulli_exp(bits, u as u128, t as u128) {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp_at_most_one(bits, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let negative = bernoulli(bits, 1, 2);
        if negative && x == 0 {
            continue;
        }
        let x = x.min(i64::MAX as u64) as i64;
        return if negative { -x } else { x };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn rng() -> RandomBits {
        RandomBits::new(ChaCha20Rng::from_seed([7; 32]))
    }

    #[test]
    fn the_proposal_scale_is_floor_sigma_plus_one() {
        for (num, den, t) in
            [(1, 2, 1), (1, 1, 2), (3, 1, 2), (4, 1, 3), (99, 1, 10), (100, 1, 11), (1 << 40, 1 << 16, 4097)]
        {
            assert_eq!(DiscreteGaussian::new(num, den).unwrap().t, t, "{num}/{den}");
        }
        for (num, den) in [(0, 1), (1, 0), (1, 1 << 17), (1 << 40, 1)] {
            assert!(DiscreteGaussian::new(num, den).is_err(), "{num}/{den}");
        }
    }

    #[test]
    fn known_answers_agree_with_an_independent_implementation() {
        // secagg/tests/reference/discrete_gaussian.py: the same algorithms
        // in Python's integers, over the same ChaCha20 stream.
        let cases: [(u8, u64, u64, [i64; 12]); 4] = [
            (7, 1, 2, [1, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0]),
            (7, 2, 1, [2, 0, 0, 1, 0, 1, 4, 0, -2, -1, 0, -1]),
            (8, 10_000, 3, [-2, 55, 16, 55, -56, 12, 67, 3, 10, 29, -103, -19]),
            (9, 1_000_000, 1, [513, -1741, 935, 764, -1961, -316, -477, 179, 865, -161, 486, 1567]),
        ];
        for (seed, num, den, want) in cases {
            let g = DiscreteGaussian::new(num, den).unwrap();
            let mut r = RandomBits::new(ChaCha20Rng::from_seed([seed; 32]));
            let got: Vec<i64> = (0..12).map(|_| g.sample_by_rejection(&mut r)).collect();
            assert_eq!(got, want, "seed {seed}, sigma^2 = {num}/{den}");
        }
    }

    #[test]
    fn the_largest_scale_leaves_room_for_every_share_and_no_more() {
        let noise = NoiseTerms { multiplier: 1.0, honest_fraction: 2.0 / 3.0 };
        let scale = noise.largest_scale(20, 0.5, 90, 100);
        assert_eq!(scale, Quantization::largest_scale_with_noise(20, 0.5, 100, noise.sum_std(90, 100)));
        let at = |scale| Quantization { bits: 20, scale, clip_norm: 0.5, max_cohort: 100 };
        assert!(noise.check_room(&at(scale), 90).is_ok());
        assert!(noise.check_room(&at(scale * 1.01), 90).is_err());
        // Terms no round can use leave room for no noise.
        let bad = NoiseTerms { multiplier: f64::NAN, honest_fraction: 2.0 / 3.0 };
        assert_eq!(bad.largest_scale(20, 0.5, 90, 100), Quantization::largest_scale(20, 0.5, 100));
    }

    #[test]
    fn bernoulli_exp_has_its_probability() {
        let mut r = rng();
        for (num, den) in [(0u128, 1u128), (1, 3), (1, 1), (5, 2), (7, 1)] {
            let n = 200_000;
            let hits = (0..n).filter(|_| bernoulli_exp(&mut r, num, den)).count() as f64;
            let p = (-(num as f64) / den as f64).exp();
            let sd = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            assert!((hits / n as f64 - p).abs() < 5.0 * sd + 1e-9, "exp(-{num}/{den}): {} vs {p}", hits / n as f64);
        }
    }

    #[test]
    fn random_bits_read_the_generators_words_low_bits_first() {
        let words: Vec<u64> = {
            let mut g = ChaCha20Rng::from_seed([7; 32]);
            (0..3).map(|_| g.next_u64()).collect()
        };
        let mut r = rng();
        assert_eq!(r.take(3), words[0] & 7);
        assert_eq!(r.take(64), words[0] >> 3 | (words[1] & 7) << 61);
        assert_eq!(r.take(61), words[1] >> 3);
        assert_eq!(r.take(64), words[2]);
    }

    #[test]
    fn uniform_below_covers_its_range_evenly() {
        let mut r = rng();
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[uniform_below(&mut r, 7) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        let big = (1u64 << 60) + 12_345;
        assert!((0..1000).all(|_| uniform_below(&mut r, big) < big));
    }

    #[test]
    fn bernoulli_has_its_probability_in_two_bits_on_average() {
        let mut r = rng();
        let n = 200_000;
        for (num, den) in [(1u128, 2u128), (1, 3), (2, 3), (5, 7), (12_345, 1 << 100), ((1 << 112) / 3, 1 << 112)] {
            let before = r.rng.get_word_pos() as f64 * 32.0 - r.left as f64;
            let hits = (0..n).filter(|_| bernoulli(&mut r, num, den)).count() as f64;
            let used = r.rng.get_word_pos() as f64 * 32.0 - r.left as f64 - before;
            let p = num as f64 / den as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            assert!((hits / n as f64 - p).abs() < 5.0 * sd + 1e-6, "{num}/{den}: {} vs {p}", hits / n as f64);
            assert!(used / (n as f64) < 2.05, "{num}/{den}: {} bits a draw", used / n as f64);
        }
        assert!(!bernoulli(&mut r, 0, 5) && bernoulli(&mut r, 5, 5));
    }
}
