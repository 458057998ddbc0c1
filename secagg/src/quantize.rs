//! Integers for a secure sum: a clipped update scaled, rounded at random
//! to integers, taken modulo 2^b, packed b bits each; sums of such vectors
//! modulo 2^b, and the float sum recovered from them.
//!
//! Secure aggregation adds masked vectors in a ring (here the integers
//! modulo 2^b), so the update must be integers first. The round announces
//! b, the scale s and the largest cohort n it will sum; a device checks
//! that the sum of n updates clipped to C cannot wrap,
//! `n * (C * s + 1) < 2^(b - 1)`, before it quantizes anything (with
//! distributed noise, also leaving room for [`NOISE_MARGIN`] standard
//! deviations of the summed noise).
//!
//! Rounding is stochastic (up with probability equal to the fraction), so
//! it is unbiased: `E[q(x)] = s * x`. Its error on one coordinate of the
//! sum of n updates has variance at most n / 4 (at most 1/4 per device),
//! so a standard deviation of at most `sqrt(n) / (2 s)` in the units of the
//! update. The random bits come from a CSPRNG (`crate::csprng`): a
//! rounding that could be predicted would say something of the value
//! rounded.

use rand_core::Rng;

use crate::csprng;

/// Why a round's quantization is refused or a vector cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error("bits must be 8 to 32, not {0}")]
    Bits(u32),
    #[error("the scale must be a finite number above 0")]
    Scale,
    #[error("the clip norm must be a finite number above 0")]
    ClipNorm,
    #[error("the cohort must be at least 1")]
    Cohort,
    #[error("a sum of {cohort} updates clipped to {clip_norm} at scale {scale} can wrap modulo 2^{bits}")]
    CanWrap { cohort: u32, clip_norm: f64, scale: f64, bits: u32 },
    #[error("a value is not finite or above the clip norm")]
    OutOfRange,
    #[error("{0} packed bytes do not hold {1} values of {2} bits")]
    Packing(usize, usize, u32),
    #[error("the system random generator failed")]
    Random,
    #[error("{0} roundings in a row passed the norm bound")]
    Rounding(usize),
}

/// Conditional randomized rounding's beta (the paper's experiments use
/// exp(-1/2)): a rounding above the bound is drawn again.
pub const ROUNDING_BETA: f64 = 0.606_530_659_712_633_4;

/// Draws of a rounding before giving up (each passes the bound with
/// probability at most beta: 100 all do with probability below 1e-21).
const MAX_ROUNDINGS: usize = 100;

/// Standard deviations of a sum's noise kept clear of wrapping: a
/// coordinate's noise passes 7 standard deviations with probability about
/// 2.6e-12 (and then wraps that coordinate alone).
pub const NOISE_MARGIN: f64 = 7.0;

/// The terms a round announces for its integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantization {
    /// Values are integers modulo 2^bits (8 to 32).
    pub bits: u32,
    /// A value x becomes about `x * scale`.
    pub scale: f64,
    /// The L2 bound every update was clipped to (so every coordinate is
    /// within it too).
    pub clip_norm: f64,
    /// The most updates the round will add up.
    pub max_cohort: u32,
}

impl Quantization {
    /// The largest scale at which `max_cohort` updates clipped to
    /// `clip_norm` sum without wrapping modulo 2^bits, with a margin of one
    /// bit's worth for the stochastic rounding.
    pub fn largest_scale(bits: u32, clip_norm: f64, max_cohort: u32) -> f64 {
        Quantization::largest_scale_with_noise(bits, clip_norm, max_cohort, 0.0)
    }

    /// As [`Self::largest_scale`], when the sum also carries noise of
    /// standard deviation `noise_std * clip_norm` (in the update's units):
    /// room is left for [`NOISE_MARGIN`] standard deviations of it.
    pub fn largest_scale_with_noise(bits: u32, clip_norm: f64, max_cohort: u32, noise_std: f64) -> f64 {
        let n = max_cohort.max(1) as f64;
        let room = 2f64.powi(bits as i32 - 1) - 2.0 * n;
        (room / (clip_norm * (n + NOISE_MARGIN * noise_std.max(0.0)))).max(0.0)
    }

    /// Checks the terms: a device refuses a round whose sum could wrap.
    pub fn check(&self) -> Result<(), QuantizeError> {
        self.check_with_noise(0.0)
    }

    /// As [`Self::check`], for a sum that also carries noise of standard
    /// deviation `sum_noise_std` in the quantized units: the sum of
    /// `max_cohort` updates plus [`NOISE_MARGIN`] standard deviations of
    /// the noise must not wrap.
    pub fn check_with_noise(&self, sum_noise_std: f64) -> Result<(), QuantizeError> {
        if !(8..=32).contains(&self.bits) {
            return Err(QuantizeError::Bits(self.bits));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(QuantizeError::Scale);
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(QuantizeError::ClipNorm);
        }
        if self.max_cohort == 0 {
            return Err(QuantizeError::Cohort);
        }
        // Each rounded coordinate is at most C s + 1 in magnitude; the
        // signed sum must stay within (-2^(b-1), 2^(b-1)).
        let worst = self.max_cohort as f64 * (self.clip_norm * self.scale + 1.0) + NOISE_MARGIN * sum_noise_std;
        if sum_noise_std.is_nan() || sum_noise_std < 0.0 || worst >= 2f64.powi(self.bits as i32 - 1) {
            return Err(QuantizeError::CanWrap {
                cohort: self.max_cohort,
                clip_norm: self.clip_norm,
                scale: self.scale,
                bits: self.bits,
            });
        }
        Ok(())
    }

    fn mask(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// `x` (clipped to `clip_norm`) as integers modulo 2^bits, rounded at
    /// random with a CSPRNG keyed from the system's.
    pub fn quantize(&self, x: &[f32]) -> Result<Vec<u32>, QuantizeError> {
        let mut rng = csprng::system_seeded().map_err(|_| QuantizeError::Random)?;
        self.quantize_with(x, || rng.next_u64())
    }

    /// As [`Self::quantize`], with the random words from `next_u64` (tests
    /// pass a seeded generator; the product always uses the CSPRNG).
    ///
    /// The rounding is conditional (Kairouz, Liu, Steinke, ICML 2021,
    /// section 4.1): one whose L2 norm passes [`Self::rounded_l2_bound`] is
    /// drawn again, so the sensitivity the accountant uses holds for every
    /// update sent. A draw passes the bound with probability at most
    /// [`ROUNDING_BETA`].
    pub fn quantize_with(&self, x: &[f32], mut next_u64: impl FnMut() -> u64) -> Result<Vec<u32>, QuantizeError> {
        self.check()?;
        if x.iter().any(|&v| !(v as f64).is_finite() || (v as f64).abs() > self.clip_norm * (1.0 + 1e-6)) {
            return Err(QuantizeError::OutOfRange);
        }
        let mask = self.mask();
        let bound = self.rounded_l2_bound(x.len());
        let mut out = Vec::with_capacity(x.len());
        for _ in 0..MAX_ROUNDINGS {
            out.clear();
            let mut norm2 = 0.0;
            for &v in x {
                let y = v as f64 * self.scale;
                let low = y.floor();
                // Up with probability y - floor(y), from 53 random bits.
                let u = (next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let rounded: f64 = if u < y - low { low + 1.0 } else { low };
                norm2 += rounded * rounded;
                out.push((rounded as i64 as u64 & mask) as u32);
            }
            if norm2 <= bound * bound {
                return Ok(out);
            }
        }
        Err(QuantizeError::Rounding(MAX_ROUNDINGS))
    }

    /// The largest L2 norm of a quantized update of `dim` values (in the
    /// quantized units): the smaller of `C s + sqrt(d)` (any rounding) and
    /// Kairouz et al.'s bound for conditional rounding at [`ROUNDING_BETA`],
    /// `sqrt((C s)^2 + d/4 + sqrt(2 ln(1/beta)) (C s + sqrt(d)/2))`. The
    /// sensitivity of a round's sum to one device.
    pub fn rounded_l2_bound(&self, dim: usize) -> f64 {
        let c = self.clip_norm * self.scale;
        let d = dim as f64;
        let any = c + d.sqrt();
        let conditional = (c * c + d / 4.0 + (2.0 * (1.0 / ROUNDING_BETA).ln()).sqrt() * (c + d.sqrt() / 2.0)).sqrt();
        any.min(conditional)
    }

    /// `acc += v` modulo 2^bits, element by element.
    pub fn add_into(&self, acc: &mut [u32], v: &[u32]) {
        let mask = self.mask();
        for (a, b) in acc.iter_mut().zip(v) {
            *a = ((*a as u64 + *b as u64) & mask) as u32;
        }
    }

    /// The float sum that a sum modulo 2^bits stands for (each value read
    /// as a signed integer, then divided by the scale).
    pub fn dequantize_sum(&self, sum: &[u32]) -> Vec<f64> {
        let half = 1i64 << (self.bits - 1);
        let modulus = 1i64 << self.bits;
        sum.iter()
            .map(|&v| {
                let v = v as i64;
                let signed = if v >= half { v - modulus } else { v };
                signed as f64 / self.scale
            })
            .collect()
    }

    /// The standard deviation that stochastic rounding adds to one
    /// coordinate of a sum of `n` updates, at most (in the update's units).
    pub fn rounding_std_bound(&self, n: u32) -> f64 {
        (n as f64).sqrt() / (2.0 * self.scale)
    }
}

/// Values of `bits` bits each (the low bits of each u32), packed little
/// end first into bytes.
pub fn pack(values: &[u32], bits: u32) -> Vec<u8> {
    let mask = if bits >= 32 { u64::from(u32::MAX) } else { (1u64 << bits) - 1 };
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    // Bits waiting to be written, lowest first: fewer than 8 between
    // values, so at most 7 + 32 after one is added.
    let (mut acc, mut held) = (0u64, 0u32);
    for &v in values {
        acc |= (u64::from(v) & mask) << held;
        held += bits;
        while held >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            held -= 8;
        }
    }
    if held > 0 {
        out.push(acc as u8);
    }
    out
}

/// The `n` values of `bits` bits packed in `bytes`; the bytes must be
/// exactly as many as they take, with the unused high bits zero.
pub fn unpack(bytes: &[u8], bits: u32, n: usize) -> Result<Vec<u32>, QuantizeError> {
    let total = n.checked_mul(bits as usize).ok_or(QuantizeError::Packing(bytes.len(), n, bits))?;
    if !(1..=32).contains(&bits) || bytes.len() != total.div_ceil(8) {
        return Err(QuantizeError::Packing(bytes.len(), n, bits));
    }
    if total % 8 != 0 && bytes[bytes.len() - 1] >> (total % 8) != 0 {
        return Err(QuantizeError::Packing(bytes.len(), n, bits));
    }
    let mask = if bits >= 32 { u64::from(u32::MAX) } else { (1u64 << bits) - 1 };
    let mut out = Vec::with_capacity(n);
    let mut next = bytes.iter();
    let (mut acc, mut held) = (0u64, 0u32);
    for _ in 0..n {
        while held < bits {
            // The length check above guarantees the bytes are there.
            acc |= u64::from(*next.next().expect("checked length")) << held;
            held += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        held -= bits;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// A seeded generator, for draws the tests repeat.
    struct Seeded(ChaCha20Rng);

    impl Seeded {
        fn new(seed: u64) -> Self {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            Seeded(ChaCha20Rng::from_seed(key))
        }

        fn next_u64(&mut self) -> u64 {
            self.0.next_u64()
        }
    }

    fn terms(bits: u32, n: u32) -> Quantization {
        let clip_norm = 1.0;
        Quantization { bits, scale: Quantization::largest_scale(bits, clip_norm, n), clip_norm, max_cohort: n }
    }

    /// A vector of norm `norm` (at most 1) with mixed signs.
    fn update(len: usize, seed: u64, norm: f64) -> Vec<f32> {
        let mut rng = Seeded::new(seed);
        let raw: Vec<f64> = (0..len).map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5).collect();
        let n = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
        raw.iter().map(|x| (x / n * norm) as f32).collect()
    }

    #[test]
    fn terms_that_can_wrap_are_refused() {
        assert_eq!(terms(16, 100).check(), Ok(()));
        let too_fine = Quantization { scale: terms(16, 100).scale * 1.1, ..terms(16, 100) };
        assert!(matches!(too_fine.check(), Err(QuantizeError::CanWrap { .. })));
        assert_eq!(Quantization { bits: 40, ..terms(16, 100) }.check(), Err(QuantizeError::Bits(40)));
        assert_eq!(Quantization { bits: 4, ..terms(16, 100) }.check(), Err(QuantizeError::Bits(4)));
        assert_eq!(Quantization { scale: f64::NAN, ..terms(16, 100) }.check(), Err(QuantizeError::Scale));
        assert_eq!(Quantization { clip_norm: 0.0, ..terms(16, 100) }.check(), Err(QuantizeError::ClipNorm));
        assert_eq!(Quantization { max_cohort: 0, ..terms(16, 100) }.check(), Err(QuantizeError::Cohort));
        // A value outside the clip norm, or not finite, is never encoded.
        let q = terms(16, 100);
        assert_eq!(q.quantize(&[0.5, 1.5]), Err(QuantizeError::OutOfRange));
        assert_eq!(q.quantize(&[f32::NAN]), Err(QuantizeError::OutOfRange));
    }

    #[test]
    fn every_rounding_sent_is_within_the_norm_bound_the_accountant_uses() {
        let q = terms(20, 100);
        let len = 1_000;
        // At the clip norm, roundings are within the bound (drawn again
        // when not: they cost the accountant nothing beyond it).
        let x = update(len, 3, 1.0);
        let bound = q.rounded_l2_bound(len);
        assert!(bound < q.clip_norm * q.scale + (len as f64).sqrt(), "the conditional bound is the tighter one");
        for seed in 0..50 {
            let mut rng = Seeded::new(seed);
            let v = q.quantize_with(&x, || rng.next_u64()).unwrap();
            let norm2: f64 = v
                .iter()
                .map(|&u| if u >= 1 << 19 { u as f64 - (1u64 << 20) as f64 } else { u as f64 })
                .map(|f| f * f)
                .sum();
            assert!(norm2.sqrt() <= bound, "{} > {bound}", norm2.sqrt());
        }
        // A generator that always rounds away from zero on the positive
        // side (every value up) passes the bound every time: refused, not
        // sent.
        let up: Vec<f32> = vec![1.0 / (len as f32).sqrt() * 0.999; len];
        assert_eq!(q.quantize_with(&up, || 0), Err(QuantizeError::Rounding(MAX_ROUNDINGS)));
    }

    #[test]
    fn the_largest_cohort_at_the_extremes_does_not_wrap() {
        // Every device sends +C (or -C) on the same coordinate: the worst
        // case, at the largest scale the terms allow.
        for bits in [8, 12, 16, 20, 24, 32] {
            for n in [1u32, 10, 100, 1000] {
                let q = terms(bits, n);
                if q.check().is_err() {
                    // Too few bits for this cohort at any scale: refused.
                    assert_eq!(q.check(), Err(QuantizeError::Scale), "bits {bits} n {n}");
                    continue;
                }
                for sign in [1.0f32, -1.0] {
                    let mut acc = vec![0u32; 1];
                    for _ in 0..n {
                        q.add_into(&mut acc, &q.quantize(&[sign]).unwrap());
                    }
                    let sum = q.dequantize_sum(&acc)[0];
                    let want = sign as f64 * n as f64;
                    assert!((sum - want).abs() <= n as f64 / q.scale + 1e-9, "bits {bits} n {n}: {sum} vs {want}");
                }
            }
        }
    }

    #[test]
    fn the_sum_round_trips_within_the_stated_error_and_is_unbiased() {
        let (n, len) = (100u32, 2_000);
        let q = terms(20, n);
        let updates: Vec<Vec<f32>> = (0..n).map(|i| update(len, i as u64 + 1, 1.0)).collect();
        let mut acc = vec![0u32; len];
        for u in &updates {
            q.add_into(&mut acc, &q.quantize(u).unwrap());
        }
        let got = q.dequantize_sum(&acc);
        let want: Vec<f64> = (0..len).map(|j| updates.iter().map(|u| u[j] as f64).sum()).collect();
        let errors: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
        let mean = errors.iter().sum::<f64>() / len as f64;
        let std = (errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / len as f64).sqrt();
        let bound = q.rounding_std_bound(n);
        assert!(std <= bound, "error std {std:e} above the bound {bound:e}");
        // Unbiased: the mean error is within a few standard errors of 0.
        assert!(mean.abs() < 5.0 * bound / (len as f64).sqrt(), "mean error {mean:e}");
        // And the error is small against the values: at 20 bits and 100
        // devices, under 1% of a coordinate's typical size.
        let typical = (want.iter().map(|w| w * w).sum::<f64>() / len as f64).sqrt();
        assert!(std < 0.01 * typical, "error std {std:e} against values of {typical:e}");
    }

    #[test]
    fn rounding_goes_up_with_the_probability_of_the_fraction() {
        let q = Quantization { bits: 16, scale: 1.0, clip_norm: 1.0, max_cohort: 1 };
        let mut rng = Seeded::new(9);
        let ups = (0..100_000).filter(|_| q.quantize_with(&[0.25], || rng.next_u64()).unwrap()[0] == 1).count();
        // Binomial(100,000, 0.25): std 137.
        assert!((ups as i64 - 25_000).abs() < 700, "{ups}");
        // Negative values wrap to the top of the ring.
        let mut rng = Seeded::new(10);
        let v = q.quantize_with(&[-1.0], || rng.next_u64()).unwrap()[0];
        assert_eq!(v, 0xffff);
        assert_eq!(q.dequantize_sum(&[v]), vec![-1.0]);
    }

    #[test]
    fn packing_round_trips_and_refuses_what_does_not_fit() {
        let mut rng = Seeded::new(3);
        for bits in [1u32, 7, 8, 12, 16, 20, 31, 32] {
            for n in [0usize, 1, 5, 33] {
                let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
                let values: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32 & mask).collect();
                let packed = pack(&values, bits);
                assert_eq!(packed.len(), (n * bits as usize).div_ceil(8));
                assert_eq!(unpack(&packed, bits, n).unwrap(), values, "bits {bits} n {n}");
            }
        }
        // Known answer: 12-bit 0xabc, 0x123 -> bc 3a 12.
        assert_eq!(pack(&[0xabc, 0x123], 12), vec![0xbc, 0x3a, 0x12]);
        assert!(unpack(&[0xbc, 0x3a], 12, 2).is_err());
        assert!(unpack(&[0xbc, 0x3a, 0x12, 0], 12, 2).is_err());
        // Unused high bits must be zero: 12 bits of 0xfff then four stray bits.
        assert!(unpack(&[0xff, 0xff], 12, 1).is_err());
        assert!(unpack(&[], 0, 1).is_err());
    }
}
