//! Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021,
//! "Differentially private learning with adaptive clipping"): the clip
//! norm C follows a quantile of the devices' update norms instead of being
//! tuned by hand, with its own small share of the privacy budget.
//!
//! Each round every device also reports one bit, whether its update's norm
//! was within the round's C. The coordinator adds Gaussian noise of std
//! `sigma_b` to the count of those bits and moves C geometrically towards
//! the target quantile gamma:
//!
//! `C <- C exp(-eta (b - gamma))`, with `b` the noisy count over the cohort.
//!
//! A bit changes the count by at most 1 (by 1/2 about its mean), so the
//! round is one Gaussian mechanism over the pair (update, bit) whose noise
//! multiplier z satisfies `z^-2 = z_update^-2 + (2 sigma_b)^-2` (their
//! theorem 1): for the z a round announces, the update's own noise is
//! [`AdaptiveClip::update_noise_multiplier`], a little above z, and the
//! accountant composes z as before.

use anyhow::{Result, anyhow};
use rand::rngs::StdRng;

use crate::fedavg::normal;

/// The state and terms of adaptive clipping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClip {
    /// The clip norm of the round under way.
    pub clip: f64,
    /// gamma: the share of updates the clip norm should leave unclipped.
    pub quantile: f64,
    /// eta: the geometric step of the clip norm.
    pub learning_rate: f64,
    /// sigma_b: the std of the noise on the count of unclipped updates.
    pub count_noise: f64,
}

impl AdaptiveClip {
    /// Starts from `clip` (above 0); `quantile` in (0, 1), `learning_rate`
    /// above 0, `count_noise` at least 0.
    pub fn new(clip: f64, quantile: f64, learning_rate: f64, count_noise: f64) -> Result<AdaptiveClip> {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(anyhow!("the initial clip norm must be above 0, got {clip}"));
        }
        if !(quantile > 0.0 && quantile < 1.0) {
            return Err(anyhow!("the target quantile must be in (0, 1), got {quantile}"));
        }
        if !(learning_rate.is_finite() && learning_rate > 0.0) {
            return Err(anyhow!("the clip learning rate must be above 0, got {learning_rate}"));
        }
        if !(count_noise.is_finite() && count_noise >= 0.0) {
            return Err(anyhow!("the count noise must be at least 0, got {count_noise}"));
        }
        Ok(AdaptiveClip { clip, quantile, learning_rate, count_noise })
    }

    /// The noise multiplier of the update itself when the round as a whole
    /// (update and bit) has noise multiplier `z`: `(z^-2 - (2 sigma_b)^-2)
    /// ^-1/2`. 0 stays 0 (no noise at all); an error when the count's noise
    /// alone is below what z asks for (sigma_b < z / 2).
    pub fn update_noise_multiplier(&self, z: f64) -> Result<f64> {
        if z == 0.0 {
            return Ok(0.0);
        }
        let rest = z.powi(-2) - (2.0 * self.count_noise).powi(-2);
        // NaN (z not a number) is refused too.
        if rest.is_nan() || rest <= 0.0 {
            return Err(anyhow!(
                "the count's noise (std {}) is too small for a noise multiplier of {z}: at least {} is needed",
                self.count_noise,
                z / 2.0
            ));
        }
        Ok(rest.powf(-0.5))
    }

    /// Moves the clip norm after a round whose `norms` (before clipping)
    /// came from the cohort: the unclipped count, noised, over the cohort.
    /// Returns the noisy share of unclipped updates. Nothing changes for an
    /// empty round.
    pub fn update(&mut self, norms: &[f64], rng: &mut StdRng) -> Option<f64> {
        if norms.is_empty() {
            return None;
        }
        let unclipped = norms.iter().filter(|&&n| n <= self.clip).count() as f64;
        let noise = if self.count_noise > 0.0 { self.count_noise * normal(rng) } else { 0.0 };
        let share = (unclipped + noise) / norms.len() as f64;
        self.clip *= (-self.learning_rate * (share - self.quantile)).exp();
        Some(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The clip norm after `rounds` rounds of `cohort` norms drawn by
    /// `draw`.
    fn run(clip: &mut AdaptiveClip, rounds: usize, cohort: usize, draw: impl Fn(&mut StdRng) -> f64) -> f64 {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..rounds {
            let norms: Vec<f64> = (0..cohort).map(|_| draw(&mut rng)).collect();
            clip.update(&norms, &mut rng);
        }
        clip.clip
    }

    #[test]
    fn the_clip_norm_follows_a_known_quantile_of_synthetic_norms() {
        // Norms uniform in [0, 2): the gamma-quantile is 2 gamma. Log-normal
        // norms exp(N(0, 1)): the median is 1, the 0.9-quantile e^1.2816.
        let uniform = |rng: &mut StdRng| 2.0 * rng.random::<f64>();
        let lognormal = |rng: &mut StdRng| normal(rng).exp();
        for (gamma, want, draw) in [
            (0.5, 1.0, &uniform as &dyn Fn(&mut StdRng) -> f64),
            (0.8, 1.6, &uniform),
            (0.5, 1.0, &lognormal),
            (0.9, 1.2816f64.exp(), &lognormal),
        ] {
            // From far below and far above, without noise and with the
            // paper's count noise (cohort / 20).
            for start in [0.01, 50.0] {
                for sigma_b in [0.0, 50.0] {
                    let mut clip = AdaptiveClip::new(start, gamma, 0.2, sigma_b).unwrap();
                    let got = run(&mut clip, 300, 1000, draw);
                    assert!(
                        (got / want - 1.0).abs() < 0.06,
                        "gamma {gamma} from {start}, sigma_b {sigma_b}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_update_keeps_what_the_count_does_not_spend() {
        let clip = AdaptiveClip::new(1.0, 0.5, 0.2, 5.0).unwrap();
        // z^-2 = z_u^-2 + (2 sigma_b)^-2: with sigma_b = 5 and z = 1, z_u is
        // 1 / sqrt(1 - 1/100).
        let zu = clip.update_noise_multiplier(1.0).unwrap();
        assert!((zu - (1.0f64 - 0.01).powf(-0.5)).abs() < 1e-12, "{zu}");
        assert_eq!(clip.update_noise_multiplier(0.0).unwrap(), 0.0);
        // A count noise of std below z / 2 cannot carry z.
        assert!(clip.update_noise_multiplier(10.0).is_err());
        assert!(AdaptiveClip::new(1.0, 0.5, 0.2, 0.0).unwrap().update_noise_multiplier(1.0).is_err());
        for (c, g, lr, s) in [(0.0, 0.5, 0.2, 1.0), (1.0, 1.0, 0.2, 1.0), (1.0, 0.5, 0.0, 1.0), (1.0, 0.5, 0.2, -1.0)] {
            assert!(AdaptiveClip::new(c, g, lr, s).is_err(), "{c} {g} {lr} {s}");
        }
        // An empty round changes nothing.
        let mut clip = AdaptiveClip::new(1.0, 0.5, 0.2, 5.0).unwrap();
        assert_eq!(clip.update(&[], &mut StdRng::seed_from_u64(1)), None);
        assert_eq!(clip.clip, 1.0);
    }
}
