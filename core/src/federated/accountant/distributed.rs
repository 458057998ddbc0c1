//! The distributed discrete Gaussian's RDP, and the general amplification
//! of a device's own coin.

use super::AccountantError;
use super::special::{ln_binomial, log_add};
use std::f64::consts::PI;

/// One round of the distributed discrete Gaussian (Kairouz, Liu, Steinke,
/// ICML 2021): the devices quantize their clipped updates at scale `scale`
/// (with conditional rounding, `hearth_secagg::quantize`) and each adds a
/// discrete Gaussian share of variance (z C s)^2 / honest before masking,
/// so the `honest` devices counted on sum to noise of std `z C s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedGaussian {
    /// z: the std of the honest devices' summed noise, in clip norms.
    pub noise_multiplier: f64,
    /// How many devices' shares are counted on (ceil of the honest
    /// fraction times the cohort).
    pub honest: u32,
    /// The clip norm C and the integers' scale s.
    pub clip_norm: f64,
    pub scale: f64,
    /// The update's length d.
    pub dimension: u64,
    /// The probability the device's own coin put its update in the sum
    /// (it adds its noise share either way, and the coordinator cannot
    /// tell which): 1 when there is no coin. Below 1, the round is the
    /// mechanism above over a Poisson sample, amplified by
    /// [`poisson_subsampled_rdp`].
    pub sampling_rate: f64,
}

impl DistributedGaussian {
    /// The round a device took part in: `cohort` devices at the start, of
    /// which it counts on `honest_fraction` (rounded up, as it sized its
    /// share: `hearth_secagg::NoiseTerms::honest`).
    /// Without a local coin: `sampling_rate` is 1.
    pub fn for_cohort(
        noise_multiplier: f64,
        honest_fraction: f64,
        cohort: u32,
        clip_norm: f64,
        scale: f64,
        dimension: u64,
    ) -> Self {
        let terms = hearth_secagg::NoiseTerms { multiplier: noise_multiplier, honest_fraction };
        DistributedGaussian {
            noise_multiplier,
            honest: terms.honest(cohort),
            clip_norm,
            scale,
            dimension,
            sampling_rate: 1.0,
        }
    }

    /// The same round with the device's coin putting its update in the sum
    /// with probability `sampling_rate`.
    pub fn with_sampling_rate(self, sampling_rate: f64) -> Self {
        DistributedGaussian { sampling_rate, ..self }
    }

    /// RDP at each of `orders` (each above 1) of one round, amplified by
    /// no coordinator's sampling (it is not trusted), only by the device's
    /// own coin: Proposition 14 of Kairouz et al. (arXiv:2102.06387), with the L2
    /// sensitivity the conditional rounding bounds (`Quantization::
    /// rounded_l2_bound`), the L1 sensitivity `D2 min(sqrt(d), D2)`, and
    /// the gap between a sum of discrete Gaussians and one discrete
    /// Gaussian of the summed variance, `tau = 10 sum_{k=1}^{n-1}
    /// exp(-2 pi^2 sigma^2 k / (k + 1))` for n shares of variance sigma^2
    /// (their theorem 1):
    ///
    /// `min(a/2 l2^2 + tau d, a/2 (l2^2 + 2 l1 tau + tau^2 d),
    /// a/2 (l2 + sqrt(d) tau)^2)`, with l1 and l2 the sensitivities over
    /// the summed noise's std. Infinite when z is 0. With a local coin
    /// (`sampling_rate` below 1), that curve amplified by
    /// [`poisson_subsampled_rdp`].
    pub fn rdp_curve(&self, orders: &[f64]) -> Result<Vec<f64>, AccountantError> {
        let z = self.noise_multiplier;
        if !(z.is_finite() && z >= 0.0) {
            return Err(AccountantError::NoiseMultiplier(z));
        }
        let q = self.sampling_rate;
        if !(0.0..=1.0).contains(&q) {
            return Err(AccountantError::SamplingRate(q));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0 && self.scale.is_finite() && self.scale > 0.0) {
            return Err(AccountantError::Terms("the clip norm and the scale must be finite and above 0"));
        }
        if self.honest == 0 || self.dimension == 0 {
            return Err(AccountantError::Terms("at least one honest device and one value"));
        }
        if let Some(&bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(AccountantError::Order(bad));
        }
        if q == 0.0 {
            return Ok(vec![0.0; orders.len()]);
        }
        if z == 0.0 {
            return Ok(vec![f64::INFINITY; orders.len()]);
        }
        let base = self.base_rdp();
        Ok(if q == 1.0 { orders.iter().map(|&a| base(a)).collect() } else { poisson_subsampled_rdp(base, q, orders) })
    }

    /// Proposition 14 at any order above 1, for terms already checked
    /// (z above 0).
    fn base_rdp(&self) -> impl Fn(f64) -> f64 + use<> {
        let z = self.noise_multiplier;
        let quantization = hearth_secagg::Quantization {
            bits: 32,
            scale: self.scale,
            clip_norm: self.clip_norm,
            max_cohort: self.honest,
        };
        let d = self.dimension as f64;
        let l2_sens = quantization.rounded_l2_bound(self.dimension as usize);
        let l1_sens = l2_sens * d.sqrt().min(l2_sens);
        let sigma = z * self.clip_norm * self.scale;
        let share_var = sigma * sigma / self.honest as f64;
        let mut tau = 0.0;
        for k in 1..self.honest {
            let k = k as f64;
            let term = (-2.0 * PI * PI * share_var * k / (k + 1.0)).exp();
            if term == 0.0 {
                // The terms only fall with k.
                break;
            }
            tau += term;
        }
        tau *= 10.0;
        let (l1, l2) = (l1_sens / sigma, l2_sens / sigma);
        move |a| {
            let one = a / 2.0 * l2 * l2 + tau * d;
            let two = a / 2.0 * (l2 * l2 + 2.0 * l1 * tau + tau * tau * d);
            let three = a / 2.0 * (l2 + d.sqrt() * tau).powi(2);
            one.min(two).min(three)
        }
    }
}

/// RDP at each of `orders` (each above 1) of a mechanism whose RDP at
/// order `a` is `base(a)`, run on a Poisson sample of rate `q` in (0, 1)
/// (each person's data is in with probability q, independently), under
/// add-or-remove-one neighbours: the general upper bound of Zhu and Wang
/// (ICML 2019, "Poisson subsampled Rényi differential privacy", theorem
/// 6), which needs nothing of the mechanism but its RDP. At an integer
/// order `a`:
///
/// `1/(a-1) ln[(1-q)^(a-1) (1 + (a-1) q) + C(a,2) q^2 (1-q)^(a-2)
/// e^base(2) + 3 sum_{l=3..a} C(a,l) q^l (1-q)^(a-l) e^((l-1) base(l))]`,
///
/// and never more than `base(a)`. Between two integer orders k < a < k+1,
/// the line between `(k-1) eps(k)` and `k eps(k+1)`: `(a-1) RDP(a)` is
/// convex in `a` (a log-moment), so the chord bounds it; from 1 to 2 the
/// chord starts at 0. Infinite where `base` is.
pub fn poisson_subsampled_rdp(base: impl Fn(f64) -> f64, q: f64, orders: &[f64]) -> Vec<f64> {
    debug_assert!(q > 0.0 && q < 1.0, "{q}");
    let top = orders.iter().fold(2.0f64, |m, a| m.max(a.ceil())) as usize;
    // base(l) for l = 0..=top (0 and 1 unused).
    let base_at: Vec<f64> = (0..=top).map(|l| if l < 2 { 0.0 } else { base(l as f64) }).collect();
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let integer = |a: usize| -> f64 {
        let n = a as f64;
        let mut total = (n - 1.0) * ln_1mq + ((n - 1.0) * q).ln_1p();
        for (l, &eps) in base_at.iter().enumerate().take(a + 1).skip(2) {
            let k = l as f64;
            let three = if l >= 3 { 3f64.ln() } else { 0.0 };
            total = log_add(total, three + ln_binomial(n, k) + k * ln_q + (n - k) * ln_1mq + (k - 1.0) * eps);
        }
        (total / (n - 1.0)).min(base_at[a])
    };
    orders
        .iter()
        .map(|&a| {
            if a.fract() == 0.0 {
                return integer(a as usize);
            }
            let k = a.floor();
            let below = if k < 2.0 { 0.0 } else { (k - 1.0) * integer(k as usize) };
            let above = k * integer(k as usize + 1);
            let chord = (k + 1.0 - a) * below + (a - k) * above;
            (chord / (a - 1.0)).min(base(a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{RdpAccountant, default_orders, rdp_curve};
    use super::*;

    #[test]
    fn accountant_general_poisson_bound_brackets_the_exact_sampled_gaussian() {
        // For the Gaussian mechanism the binomial expansion without the
        // factor 3 is exact (Mironov, Talwar, Zhang's A_a), so the general
        // bound lies between it and it plus ln(3)/(a-1) at integer orders,
        // and never above the mechanism without sampling.
        let orders = default_orders();
        for z in [0.5, 1.0, 4.0] {
            for q in [0.001, 0.05, 0.5, 0.9] {
                let exact = rdp_curve(z, q, &orders).unwrap();
                let general = poisson_subsampled_rdp(|a| a / (2.0 * z * z), q, &orders);
                for ((&a, &e), &g) in orders.iter().zip(&exact).zip(&general) {
                    if !e.is_finite() {
                        continue;
                    }
                    assert!(g <= a / (2.0 * z * z) * (1.0 + 1e-12), "z={z} q={q} order {a}: above the unsampled");
                    // (The fractional-order series is not quite monotone
                    // where the RDP is tiny: 1.634e-4 at order 1.6 against
                    // 1.612e-4 at 2 for z = 4, q = 0.05; integer orders
                    // are a finite sum.)
                    if a.fract() == 0.0 {
                        assert!(g >= e * (1.0 - 1e-12), "z={z} q={q} order {a}: general {g} below exact {e}");
                        let slack = 3f64.ln() / (a - 1.0);
                        assert!(g <= e + slack + 1e-12, "z={z} q={q} order {a}: {g} vs {e} + {slack}");
                    }
                }
            }
        }
        // A rate near 0 costs nearly nothing; an infinite base stays
        // infinite.
        let tiny = poisson_subsampled_rdp(|a| a / 2.0, 1e-9, &[2.0, 32.0]);
        assert!(tiny.iter().all(|&r| r < 1e-15), "{tiny:?}");
        assert!(poisson_subsampled_rdp(|_| f64::INFINITY, 0.1, &[2.0, 2.5]).iter().all(|r| r.is_infinite()));
    }

    #[test]
    fn a_local_coin_amplifies_a_distributed_round() {
        let round = DistributedGaussian::for_cohort(1.0, 2.0 / 3.0, 100, 1.0, 4828.0, 144_935);
        assert_eq!(round.sampling_rate, 1.0);
        let epsilon = |round: &DistributedGaussian| {
            let mut a = RdpAccountant::new();
            a.compose_distributed(round, 100).unwrap();
            a.epsilon(1e-5).unwrap()
        };
        let (all, half, tenth) =
            (epsilon(&round), epsilon(&round.with_sampling_rate(0.5)), epsilon(&round.with_sampling_rate(0.1)));
        assert!(tenth < half && half < all, "{tenth} {half} {all}");
        assert_eq!(epsilon(&round.with_sampling_rate(0.0)), 0.0);
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                RdpAccountant::new().compose_distributed(&round.with_sampling_rate(bad), 1),
                Err(AccountantError::SamplingRate(_))
            ));
        }
    }
}
