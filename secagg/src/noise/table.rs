//! The fast exact sampler: rejection from a table envelope, with the
//! acceptance decided by certified 64-bit bounds and, when those cannot
//! decide (about once in 2^60 draws), exactly by reading more of the
//! uniform against a tighter bound.
//!
//! The target is w(x) = exp(-x^2 / (2 sigma^2)) on the integers. For
//! |x| = a up to T (about 7 sigma), the envelope is an integer m_a >=
//! w(a) 2^B, and the tail |x| > T is one more slot of integer weight whose
//! envelope falls geometrically by a dyadic ratio rho = 1 - 2^-k that the
//! Gaussian falls faster than. One draw:
//!
//! 1. a slot, with probability its integer weight over the table's total
//!    (a uniform integer below the total, found in the cumulative table):
//!    |x| = 0 weighs m_0, |x| = a >= 1 weighs 2 m_a (one per sign), the
//!    tail 2 M_t; then a sign bit for a >= 1, and for the tail a geometric
//!    j (stop with probability 2^-k) for |x| = T + 1 + j;
//! 2. accept with probability r = w(|x|) 2^B / m_a (in the tail,
//!    w(|x|) 2^(B + k(j+1)) / (M_t (2^k - 1)^j)), which is at most 1 because
//!    the envelope bounds w from above: a uniform V in [0, 1) is compared
//!    with certified bounds lo <= r <= hi; V < lo accepts, V >= hi
//!    refuses, and in between (or in the tail, always) [`below_exactly`]
//!    decides V < r by exact integer arithmetic;
//! 3. refused: draw again.
//!
//! Accepted x has probability proportional to m_|x| r = w(|x|) 2^B, so
//! the output is the discrete Gaussian exactly: the only approximations
//! are the bounds, and they only choose which path decides. A draw costs
//! two 64-bit words and a bit of the CSPRNG and a lookup; the envelope is
//! within 2^-30 or so of w, so almost every draw is accepted.

use num_bigint::BigUint;
use num_traits::One;

use super::RandomBits;
use super::bounds::{FRACTION, exp_neg, exp_neg_fixed, mul_down_up};

/// The largest table: sigma up to about 9,000 (beyond it the rejection
/// sampler of Canonne, Kamath and Steinke, as fast per value but without
/// a table, is used).
pub(crate) const MAX_SLOTS: usize = 1 << 16;

/// Bits of the guide table that finds a slot's neighbourhood in O(1).
const GUIDE_BITS: u32 = 12;

#[derive(Debug, Clone)]
pub struct Table {
    /// sigma^2 = num / den.
    num: u64,
    den: u64,
    /// The envelope's scale 2^B.
    b: u32,
    /// The tail's ratio 1 - 2^-k.
    k: u32,
    /// The tail's weight per sign, M_t.
    tail: u64,
    /// m_a for a = 0..=T.
    m: Vec<u64>,
    /// The acceptance's certified bounds as 64-bit fractions: V < lo[a]
    /// accepts, V >= hi[a] (V below 2^64 - 1) refuses.
    lo: Vec<u64>,
    hi: Vec<u64>,
    /// cum[i] = the weight of slots before i (slot T + 1 is the tail);
    /// cum[T + 2] = the total.
    cum: Vec<u64>,
    guide: Vec<u32>,
    guide_shift: u32,
}

impl Table {
    /// The table for sigma^2 = num / den with T = 7 (floor(sigma) + 1),
    /// or None when it would have more than [`MAX_SLOTS`] slots.
    pub(crate) fn new(num: u64, den: u64, floor_sigma: u64) -> Option<Table> {
        let t = 7 * (floor_sigma + 1);
        if t as usize + 2 > MAX_SLOTS {
            return None;
        }
        Some(Table::with_cut(num, den, t, 0))
    }

    /// The table with the body up to T = `t` and the acceptance bounds
    /// coarsened to their top 64 - `coarse` bits (0 in use; tests widen
    /// the bounds so the exact path runs often).
    pub(crate) fn with_cut(num: u64, den: u64, t: u64, coarse: u32) -> Table {
        let t = t as usize;
        // w(a) = exp(-a^2 den / (2 num)) = w(a-1) c g^(a-1), with
        // c = exp(-den / (2 num)), g = exp(-den / num).
        let c = exp_neg_fixed(den as u128, 2 * num as u128);
        let g = exp_neg_fixed(den as u128, num as u128);
        let one = 1u128 << FRACTION;
        let (mut w_lo, mut w_hi) = (Vec::with_capacity(t + 2), Vec::with_capacity(t + 2));
        let (mut lo, mut hi) = (one, one);
        let mut f = c;
        for _ in 0..=t + 1 {
            w_lo.push(lo);
            w_hi.push(hi);
            lo = mul_down_up(lo, f.0).0;
            hi = mul_down_up(hi, f.1).1;
            f = (mul_down_up(f.0, g.0).0, mul_down_up(f.1, g.1).1);
        }
        // The tail: w(T+1+j) <= w(T+1) exp(-(T+1) j den / num), and the
        // smallest k with 2^-k <= 1 - exp(-(T+1) den / num).
        let rho = exp_neg(&BigUint::from((t as u128 + 1) * den as u128), &BigUint::from(num), 64).1;
        let gap = (BigUint::one() << 64u32) - rho.min(BigUint::one() << 64u32);
        let mut k = 1u32;
        while (BigUint::one() << (64 - k)) > gap {
            k += 1;
        }
        // 2^B: the total weight near 2^62, so it fits below 2^63.
        let unit = |v: u128| v as f64 / one as f64;
        let body: f64 = w_hi[..=t].iter().enumerate().map(|(a, &w)| if a == 0 { unit(w) } else { 2.0 * unit(w) }).sum();
        let mass = body + 2.0 * unit(w_hi[t + 1]) * 2f64.powi(k as i32);
        let mut b = (62.0 - mass.log2()).floor().clamp(0.0, 62.0) as u32;
        loop {
            if let Some(table) = Table::at_scale(num, den, b, k, &w_lo[..=t], &w_hi, coarse) {
                return table;
            }
            b -= 1;
        }
    }

    fn at_scale(num: u64, den: u64, b: u32, k: u32, w_lo: &[u128], w_hi: &[u128], coarse: u32) -> Option<Table> {
        let t = w_lo.len() - 1;
        let ceil_shift = |v: u128, s: u32| (v >> s) + u128::from(v & ((1u128 << s) - 1) != 0);
        let m: Vec<u64> = w_hi[..=t].iter().map(|&w| ceil_shift(w, FRACTION - b) as u64).collect();
        let tail = u64::try_from(ceil_shift(w_hi[t + 1], FRACTION - b - k)).ok()?;
        let mut cum = Vec::with_capacity(t + 3);
        let mut total: u64 = 0;
        for (a, &ma) in m.iter().enumerate() {
            cum.push(total);
            total = total.checked_add(if a == 0 { ma } else { ma.checked_mul(2)? })?;
        }
        cum.push(total);
        total = total.checked_add(tail.checked_mul(2)?)?;
        cum.push(total);
        if total > 1 << 63 {
            return None;
        }
        // r_a 2^64 = w(a) 2^(B + 64 - 127) / m_a.
        let (mut lo, mut hi) = (Vec::with_capacity(t + 1), Vec::with_capacity(t + 1));
        let mask = if coarse == 0 { u64::MAX } else { u64::MAX << coarse };
        for a in 0..=t {
            let ma = m[a] as u128;
            let l = (w_lo[a] >> (63 - b)) / ma;
            let h = ceil_shift(w_hi[a], 63 - b).div_ceil(ma);
            lo.push((l.min(u64::MAX as u128) as u64) & mask);
            let h = if coarse == 0 { h } else { (h + (1u128 << coarse) - 1) & !((1u128 << coarse) - 1) };
            hi.push(h.min(u64::MAX as u128) as u64);
        }
        let bits = 64 - total.leading_zeros();
        let guide_shift = bits.saturating_sub(GUIDE_BITS);
        let guide = (0..=(total >> guide_shift))
            .map(|j| (cum.partition_point(|&c| c <= j << guide_shift) - 1) as u32)
            .collect();
        Some(Table { num, den, b, k, tail, m, lo, hi, cum, guide, guide_shift })
    }

    /// One value.
    pub(crate) fn sample(&self, bits: &mut RandomBits) -> i64 {
        let t = self.m.len() - 1;
        loop {
            let u = below(bits, self.cum[t + 2]);
            let slot = self.slot(u);
            if slot == t + 1 {
                if let Some(x) = self.tail(bits) {
                    return x;
                }
                continue;
            }
            if slot == 0 {
                // m_0 = 2^B exactly: r = 1.
                return 0;
            }
            let negative = bits.take(1) == 1;
            let v = bits.take(64);
            let accept = if v < self.lo[slot] {
                true
            } else if v >= self.hi[slot] && v != u64::MAX {
                false
            } else {
                let square = BigUint::from(slot as u128 * slot as u128 * self.den as u128);
                below_exactly(bits, v, &square, 2 * self.num as u128, self.b, &BigUint::from(self.m[slot]))
            };
            if accept {
                return if negative { -(slot as i64) } else { slot as i64 };
            }
        }
    }

    /// The slot whose cumulative range holds u.
    fn slot(&self, u: u64) -> usize {
        let mut i = self.guide[(u >> self.guide_shift) as usize] as usize;
        while self.cum[i + 1] <= u {
            i += 1;
        }
        i
    }

    /// A draw from the tail's slot: the value, or None when refused.
    fn tail(&self, bits: &mut RandomBits) -> Option<i64> {
        let t = (self.m.len() - 1) as u64;
        let negative = bits.take(1) == 1;
        let mut j: u32 = 0;
        while bits.take(self.k) != 0 {
            j += 1;
        }
        let a = (t + 1 + j as u64) as u128;
        let v = bits.take(64);
        let square = BigUint::from(a) * a * self.den;
        let ratio = (BigUint::one() << self.k) - 1u32;
        let envelope = BigUint::from(self.tail) * ratio.pow(j);
        let shift = self.b + self.k * (j + 1);
        below_exactly(bits, v, &square, 2 * self.num as u128, shift, &envelope).then_some(if negative {
            -(a as i64)
        } else {
            a as i64
        })
    }
}

/// Is V < exp(-num / den) 2^shift / envelope, for the uniform V in [0, 1)
/// whose first 64 bits are `v` and whose further bits are read from
/// `bits` as needed? Exact: each step either decides with certainty or
/// reads 64 bits more and tightens the bound by 64 bits (the chance of a
/// further step falls by about 2^-64 each time).
fn below_exactly(bits: &mut RandomBits, v: u64, num: &BigUint, den: u128, shift: u32, envelope: &BigUint) -> bool {
    let den = BigUint::from(den);
    let mut v = BigUint::from(v);
    let mut n = 64u32;
    let mut p = 128u32;
    loop {
        // V in [v, v + 1) / 2^n; exp(-x) in [lo, hi] / 2^p.
        // V < r  <=  (v + 1) 2^-n <= lo 2^(shift - p) / envelope.
        let (lo, hi) = exp_neg(num, &den, p);
        let left = (&v * envelope) << p;
        let right_lo = lo << (shift + n);
        let right_hi = hi << (shift + n);
        if (&left + (envelope << p)) <= right_lo {
            return true;
        }
        if left >= right_hi {
            return false;
        }
        v = (v << 64u32) + bits.take(64);
        n += 64;
        p += 64;
    }
}

/// A uniform integer below n (1 <= n <= 2^63), by Lemire's multiply and
/// reject (exactly uniform; one 64-bit word almost always).
fn below(bits: &mut RandomBits, n: u64) -> u64 {
    debug_assert!(n >= 1);
    loop {
        let x = bits.take(64);
        let m = x as u128 * n as u128;
        let low = m as u64;
        if low < n && low < n.wrapping_neg() % n {
            continue;
        }
        return (m >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rng(seed: u8) -> RandomBits {
        RandomBits::new(ChaCha20Rng::from_seed([seed; 32]))
    }

    #[test]
    fn known_answers_agree_with_an_independent_implementation() {
        // secagg/tests/reference/discrete_gaussian.py's table_sample: the
        // same algorithm with 120-digit decimals, over the same stream.
        let cases: [(u8, u64, u64, [i64; 12]); 5] = [
            (7, 1, 2, [0, 0, 0, -1, 0, -1, -1, -1, -1, 0, -1, 0]),
            (7, 2, 1, [0, 1, 3, 2, 2, -1, 3, -2, -1, -2, -2, 0]),
            (8, 10_000, 3, [47, 93, -22, -50, -57, -46, -13, -16, -6, -59, 125, 9]),
            (9, 1_000_000, 1, [-794, -537, -269, -916, -425, -48, -1068, -261, -73, 217, -1793, -1314]),
            (10, 81_000_000, 1, [5235, -7122, 3263, 865, -9210, -6734, 3066, 5467, -6281, 1434, 401, -3296]),
        ];
        for (seed, num, den, want) in cases {
            let sigma = (num as f64 / den as f64).sqrt() as u64;
            let table = Table::new(num, den, sigma).unwrap();
            let mut r = rng(seed);
            let got: Vec<i64> = (0..12).map(|_| table.sample(&mut r)).collect();
            assert_eq!(got, want, "seed {seed}, sigma^2 = {num}/{den}");
        }
    }

    #[test]
    fn the_envelope_bounds_the_gaussian_and_the_total_fits() {
        for (num, den) in [(1u64, 2u64), (1, 1), (40, 1), (250_000, 1), (10_000, 3), (81_000_000, 1)] {
            let sigma = (num as f64 / den as f64).sqrt();
            let table = Table::new(num, den, sigma as u64).unwrap();
            let t = table.m.len() - 1;
            assert!(t as f64 >= 7.0 * sigma);
            assert!(table.cum[t + 2] <= 1 << 63 && table.cum[t + 2] > 1 << 61, "{num}/{den}");
            for a in [0, 1, t / 2, t] {
                let w = (-(a as f64).powi(2) * den as f64 / (2.0 * num as f64)).exp() * 2f64.powi(table.b as i32);
                assert!(
                    table.m[a] as f64 >= w * (1.0 - 1e-12) && (table.m[a] as f64) < w * (1.0 + 1e-12) + 1.5,
                    "{num}/{den} a {a}: {} {w} b {}",
                    table.m[a],
                    table.b
                );
                assert!(table.lo[a] <= table.hi[a]);
                let r = w / table.m[a] as f64 * 2f64.powi(64);
                assert!((table.lo[a] as f64) <= r * (1.0 + 1e-12) && (table.hi[a] as f64) >= r * (1.0 - 1e-12));
            }
            // The tail's ratio is the smallest dyadic one above the Gaussian's fall.
            let fall = (-((t + 1) as f64) * den as f64 / num as f64).exp();
            assert!(1.0 - 2f64.powi(-(table.k as i32)) >= fall);
            assert!(table.k == 1 || 1.0 - 2f64.powi(1 - table.k as i32) < fall);
        }
        assert!(Table::new(1 << 40, 1 << 10, 32_768).is_none());
    }

    #[test]
    fn the_guide_finds_every_slot() {
        let table = Table::new(10_000, 1, 100).unwrap();
        let total = table.cum[table.cum.len() - 1];
        for u in [0, 1, total / 3, total / 2, total - 1].into_iter().chain((0..2000).map(|i| i * (total / 2000))) {
            let slot = table.slot(u);
            assert!(table.cum[slot] <= u && u < table.cum[slot + 1], "{u}");
        }
    }

    #[test]
    fn lemire_is_uniform_below_its_bound() {
        let mut r = rng(3);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[below(&mut r, 7) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        assert!((0..1000).all(|_| below(&mut r, 1 << 63) < 1 << 63));
        assert!((0..100).all(|_| below(&mut r, 1) == 0));
    }

    #[test]
    fn the_exact_decision_matches_the_bound_far_from_it_and_reads_more_near_it() {
        // r = exp(-1) 2^2 / 3 = 0.4905...
        let (num, den) = (BigUint::one(), 1u128);
        let r = (-1f64).exp() * 4.0 / 3.0;
        let mut bits = rng(5);
        let three = BigUint::from(3u32);
        for v in [0u64, 1 << 62, (0.49 * 2f64.powi(64)) as u64, (0.50 * 2f64.powi(64)) as u64, u64::MAX] {
            let got = below_exactly(&mut bits, v, &num, den, 2, &three);
            assert_eq!(got, (v as f64) < r * 2f64.powi(64), "{v} {r}");
        }
        // At r's own first 64 bits the next word decides.
        // V in [at, at + 1) 2^-64 is below r with probability r 2^64 - at.
        let scaled = (exp_neg(&num, &BigUint::one(), 200).0 << 2u32) / 3u32;
        let at = u64::try_from(&scaled >> 136u32).unwrap();
        let fraction = u64::try_from((&scaled >> 72u32) & BigUint::from(u64::MAX)).unwrap() as f64 / 2f64.powi(64);
        let hits = (0..4000).filter(|_| below_exactly(&mut bits, at, &num, den, 2, &three)).count() as f64;
        let sd = (fraction * (1.0 - fraction) / 4000.0).sqrt();
        assert!((hits / 4000.0 - fraction).abs() < 5.0 * sd + 1e-3, "{hits} vs {fraction}");
    }
}
