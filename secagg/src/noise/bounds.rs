//! Certified bounds on exp(-x) for a rational x >= 0, as fixed-point
//! integers: `lo / 2^p <= exp(-x) <= hi / 2^p`, at any precision p. The
//! table sampler builds its table from them and decides, in the rare case
//! its 64-bit bounds cannot, whether a uniform lies below exp(-x) times a
//! rational, reading more of the uniform and more bits of the bound until
//! they part (so the decision is exact, never a rounding).
//!
//! Every step rounds in the direction that keeps the bound a bound: the
//! Taylor series of exp(-y) for y <= 1/2 is alternating with terms that
//! fall, so stopping after a negative term leaves a lower bound and after
//! a positive one an upper bound; each term is rounded down for the lower
//! and up for the upper side; x = y * 2^s is undone by s squarings, each
//! rounded the same way.

use num_bigint::BigUint;
use num_traits::{One, Zero};

/// `(lo, hi)` with lo / 2^p <= exp(-num / den) <= hi / 2^p (den > 0).
pub(crate) fn exp_neg(num: &BigUint, den: &BigUint, p: u32) -> (BigUint, BigUint) {
    debug_assert!(!den.is_zero());
    let one = BigUint::one() << p;
    if num.is_zero() {
        return (one.clone(), one);
    }
    // x / 2^s <= 1/2.
    let mut s = 0u32;
    while num * 2u32 > den << s {
        s += 1;
    }
    // Each squaring can double the error: s guard bits, and 8 more.
    let q = p + s + 8;
    let scaled = num << q;
    let den_s = den << s;
    let y_lo = &scaled / &den_s;
    let y_hi = if (&y_lo * &den_s) == scaled { y_lo.clone() } else { &y_lo + 1u32 };
    // exp(-y) falls in y: the lower bound at y_hi, the upper at y_lo.
    let mut lo = series(&y_hi, q).0;
    let mut hi = series(&y_lo, q).1;
    let unit = BigUint::one() << q;
    for _ in 0..s {
        lo = (&lo * &lo) >> q;
        let sq = &hi * &hi;
        hi = ceil_shift(&sq, q);
    }
    if hi > unit {
        hi = unit;
    }
    (lo >> (q - p), ceil_shift(&hi, q - p))
}

/// Bounds on exp(-y / 2^q) for y <= 2^(q-1), both at 2^q.
fn series(y: &BigUint, q: u32) -> (BigUint, BigUint) {
    let unit = BigUint::one() << q;
    // Terms y^k / k! rounded down and up.
    let (mut down, mut up) = (unit.clone(), unit.clone());
    let (mut even_down, mut even_up) = (unit.clone(), unit.clone());
    let (mut odd_down, mut odd_up) = (BigUint::zero(), BigUint::zero());
    let mut k = 1u32;
    loop {
        down = (&down * y) >> q;
        down /= k;
        let next = &up * y;
        up = ceil_div(&ceil_shift(&next, q), &BigUint::from(k));
        if k % 2 == 1 {
            odd_down += &down;
            odd_up += &up;
            // Stop after an odd term once the terms are below a unit: the
            // lower bound ends here, the upper takes one even term more.
            if up <= BigUint::one() {
                let last = ceil_div(&ceil_shift(&(&up * y), q), &BigUint::from(k + 1));
                let lo = even_down.clone().max(odd_up.clone()) - &odd_up;
                let hi = (&even_up + last) - odd_down.min(even_up.clone());
                return (lo, hi);
            }
        } else {
            even_down += &down;
            even_up += &up;
        }
        k += 1;
    }
}

/// ceil(v / 2^s).
pub(crate) fn ceil_shift(v: &BigUint, s: u32) -> BigUint {
    let floor = v >> s;
    if (&floor << s) == *v { floor } else { floor + 1u32 }
}

/// ceil(a / b), b > 0.
pub(crate) fn ceil_div(a: &BigUint, b: &BigUint) -> BigUint {
    let floor = a / b;
    if (&floor * b) == *a { floor } else { floor + 1u32 }
}

/// Fixed point with 127 fractional bits in a u128 (1.0 is 2^127): the
/// table's weights, built by a recurrence of products.
pub(crate) const FRACTION: u32 = 127;

/// floor(a * b / 2^127) and ceil(a * b / 2^127), for a, b <= 2^127.
pub(crate) fn mul_down_up(a: u128, b: u128) -> (u128, u128) {
    let (hi, lo) = mul_wide(a, b);
    let floor = (hi << 1) | (lo >> 127);
    let exact = lo & (u128::MAX >> 1) == 0;
    (floor, if exact { floor } else { floor + 1 })
}

/// The 256-bit product a * b as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & u64::MAX as u128);
    let (b1, b0) = (b >> 64, b & u64::MAX as u128);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 64) + (p01 & u64::MAX as u128) + (p10 & u64::MAX as u128);
    let lo = (p00 & u64::MAX as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// [`exp_neg`] at the fixed point's 127 bits, as u128s.
pub(crate) fn exp_neg_fixed(num: u128, den: u128) -> (u128, u128) {
    let (lo, hi) = exp_neg(&BigUint::from(num), &BigUint::from(den), FRACTION);
    let cast = |v: BigUint| u128::try_from(v).expect("a bound on exp(-x) is at most 1");
    (cast(lo), cast(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_f64(v: &BigUint, p: u32) -> f64 {
        let bits = v.bits() as i64;
        let shift = (bits - 60).max(0) as u32;
        let top: u64 = u64::try_from(v >> shift).unwrap();
        top as f64 * 2f64.powi(shift as i32 - p as i32)
    }

    #[test]
    fn bounds_hold_and_are_tight() {
        for (num, den) in [(0u64, 1u64), (1, 3), (1, 2), (1, 1), (7, 3), (123_456, 1000), (1, 1 << 40), (49, 2)] {
            for p in [64u32, 127, 300] {
                let (lo, hi) = exp_neg(&BigUint::from(num), &BigUint::from(den), p);
                let want = (-(num as f64) / den as f64).exp();
                assert!(lo <= hi, "{num}/{den} at {p}");
                // Tight: a few units apart at precision p.
                assert!(&hi - &lo <= BigUint::from(16u32), "{num}/{den} at {p}: {lo} {hi}");
                let (l, h) = (as_f64(&lo, p), as_f64(&hi, p));
                assert!(l <= want * (1.0 + 1e-12) && h >= want * (1.0 - 1e-12), "{num}/{den}: {l} {want} {h}");
            }
        }
    }

    #[test]
    fn bounds_bracket_a_known_value_to_many_digits() {
        // exp(-1) to 60 decimal digits, as an integer over 10^60.
        let e_inv = "367879441171442321595523770161460867445811131031767834507836";
        let e_inv: BigUint = e_inv.parse().unwrap();
        let ten60 = BigUint::from(10u32).pow(60);
        let (lo, hi) = exp_neg(&BigUint::one(), &BigUint::one(), 190);
        // lo / 2^190 <= e_inv / 10^60 (which is below exp(-1) by < 10^-60) + 10^-60.
        assert!(&lo * &ten60 <= (&e_inv + 1u32) << 190u32);
        assert!(&hi * &ten60 >= &e_inv << 190u32);
    }

    #[test]
    fn wide_products_round_both_ways() {
        let one = 1u128 << 127;
        assert_eq!(mul_down_up(one, one), (one, one));
        assert_eq!(mul_down_up(one, 12345), (12345, 12345));
        let (d, u) = mul_down_up(one / 3, one / 3);
        assert_eq!(u, d + 1);
        let exact = BigUint::from(one / 3) * BigUint::from(one / 3);
        assert_eq!(BigUint::from(d), &exact >> 127u32);
        let (d, u) = mul_down_up(u128::MAX >> 1, u128::MAX >> 1);
        let exact = BigUint::from(u128::MAX >> 1).pow(2);
        assert_eq!(BigUint::from(d), &exact >> 127u32);
        assert_eq!(BigUint::from(u), ceil_shift(&exact, 127));
    }
}
