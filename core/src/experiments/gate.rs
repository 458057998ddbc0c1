//! The release gate: publish a candidate model only when devices' own
//! evaluations say it beats both the published model and the fallback by
//! more than the uncertainty.
//!
//! In a model-evaluation round each device scores the candidate, the
//! published model and the fallback on engagements it held out of training,
//! and contributes `GATE_METRICS` values, each in [0, 1]: 1 (it reported),
//! its NDCG@10 under each of the three, and the squares of the two
//! differences, candidate minus published and candidate minus fallback
//! (their L2 norm is at most sqrt(6)). The sums carry Gaussian noise of std
//! sigma each.
//!
//! For each comparison the mean difference over the reporting devices is
//! D = (S_c - S_x) / N. Its variance has two parts: the devices' own
//! spread, s^2 / N with s^2 = S_sq / N - D^2 (the cohort is a sample of the
//! fleet, so the gate asks whether the fleet would gain, not only these
//! devices), and the noise's, about sigma^2 (2 + D^2 + ...) / N^2 by the delta
//! method (two noisy sums in the numerator, one in N). The candidate passes
//! a comparison when D - z se > 0, and is published when it passes both.
//! With N under 3 sigma nothing is published.

/// Values per device: [1, NDCG candidate, NDCG published, NDCG fallback,
/// (candidate - published)^2, (candidate - fallback)^2].
pub const GATE_METRICS: usize = 6;

/// The bound on a contribution's L2 norm, sqrt(GATE_METRICS): the unit of
/// an evaluation round's noise (a contribution is at most sqrt(5) long).
pub fn contribution_bound() -> f64 {
    (GATE_METRICS as f64).sqrt()
}

/// One device's evaluation of the three rankers, each NDCG@10 in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub candidate: f64,
    pub published: f64,
    pub fallback: f64,
}

impl Evaluation {
    /// The device's contribution to the gate's sums.
    pub fn contribution(&self) -> [f64; GATE_METRICS] {
        let (c, p, f) = (self.candidate.clamp(0.0, 1.0), self.published.clamp(0.0, 1.0), self.fallback.clamp(0.0, 1.0));
        [1.0, c, p, f, (c - p) * (c - p), (c - f) * (c - f)]
    }
}

/// One comparison: the candidate against the published model or the
/// fallback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The candidate's mean NDCG@10 minus the other's.
    pub difference: f64,
    /// Its interval (z standard errors either side).
    pub low: f64,
    pub high: f64,
}

/// The gate's decision and its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct GateDecision {
    pub publish: bool,
    /// The noisy count of devices that evaluated.
    pub devices: f64,
    pub candidate: f64,
    pub published: f64,
    pub fallback: f64,
    pub against_published: Comparison,
    pub against_fallback: Comparison,
}

fn compare(n: f64, sum_c: f64, sum_x: f64, sum_sq: f64, sigma: f64, z: f64) -> Comparison {
    let d = (sum_c - sum_x) / n;
    let spread = (sum_sq / n - d * d).max(0.0);
    let sampling = spread / n;
    let noise = sigma * sigma * (2.0 + d * d) / (n * n);
    let se = (sampling + noise).sqrt();
    Comparison { difference: d, low: d - z * se, high: d + z * se }
}

/// Decides from the noisy sums (`GATE_METRICS` values, in the order of
/// `Evaluation::contribution`), each with Gaussian noise of std `sigma`,
/// at `z` standard errors (1.96: a one-sided error rate of 2.5% per
/// comparison).
pub fn decide(sums: &[f64; GATE_METRICS], sigma: f64, z: f64) -> GateDecision {
    let n = sums[0];
    let unknown = Comparison { difference: 0.0, low: f64::NEG_INFINITY, high: f64::INFINITY };
    if !(n > 3.0 * sigma && n >= 2.0) {
        return GateDecision {
            publish: false,
            devices: n,
            candidate: 0.0,
            published: 0.0,
            fallback: 0.0,
            against_published: unknown,
            against_fallback: unknown,
        };
    }
    let against_published = compare(n, sums[1], sums[2], sums[4], sigma, z);
    let against_fallback = compare(n, sums[1], sums[3], sums[5], sigma, z);
    GateDecision {
        publish: against_published.low > 0.0 && against_fallback.low > 0.0,
        devices: n,
        candidate: sums[1] / n,
        published: sums[2] / n,
        fallback: sums[3] / n,
        against_published,
        against_fallback,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::experiments::standard_normal as normal;

    /// `n` devices whose NDCG@10 under the published model and the fallback
    /// is a hit at position 0 to 14 with the given chances, and whose
    /// candidate adds `gain` to the chance; noise of std `sigma`.
    fn trial(rng: &mut StdRng, n: usize, gain: f64, sigma: f64) -> GateDecision {
        let ndcg = |rng: &mut StdRng, p: f64| {
            if rng.random::<f64>() < p {
                let pos = rng.random_range(0..15usize);
                if pos < 10 { 1.0 / ((pos + 2) as f64).log2() } else { 0.0 }
            } else {
                0.0
            }
        };
        let mut sums = [0.0; GATE_METRICS];
        for _ in 0..n {
            let e =
                Evaluation { candidate: ndcg(rng, 0.10 + gain), published: ndcg(rng, 0.10), fallback: ndcg(rng, 0.09) };
            for (s, c) in sums.iter_mut().zip(e.contribution()) {
                *s += c;
            }
        }
        for s in &mut sums {
            *s += sigma * normal(rng);
        }
        decide(&sums, sigma, 1.96)
    }

    #[test]
    fn a_candidate_no_better_is_rarely_published() {
        // The candidate is the published model (gain 0): published at most
        // 2.5% of the time by design; over 400 trials, at most 20 (binomial
        // 2.5%: mean 10, std 3.1).
        let mut rng = StdRng::seed_from_u64(3);
        let published = (0..400).filter(|_| trial(&mut rng, 2000, 0.0, 5.0).publish).count();
        assert!(published <= 20, "{published} of 400 published");
        // A worse candidate, never.
        let worse = (0..200).filter(|_| trial(&mut rng, 2000, -0.05, 5.0).publish).count();
        assert_eq!(worse, 0);
    }

    #[test]
    fn a_clearly_better_candidate_is_published() {
        let mut rng = StdRng::seed_from_u64(4);
        let published = (0..200).filter(|_| trial(&mut rng, 20_000, 0.05, 5.0).publish).count();
        assert!(published >= 190, "{published} of 200 published");
    }

    /// The known answers the coordinator's port of this rule
    /// (coordinator/hearth_coordinator/gate.py) is tested against too.
    #[test]
    fn the_shared_known_answers_hold() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/gate_decisions.json")).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        let close = |got: f64, want: &serde_json::Value| match want.as_f64() {
            Some(w) => (got - w).abs() <= 1e-12 * w.abs().max(1.0),
            // No interval: too few devices.
            None => got.is_infinite(),
        };
        for case in cases {
            let f = |v: &serde_json::Value| v.as_f64().unwrap();
            let sums: Vec<f64> = case["sums"].as_array().unwrap().iter().map(f).collect();
            let got = decide(&sums.try_into().unwrap(), f(&case["sigma"]), f(&case["z"]));
            let want = &case["decision"];
            assert_eq!(got.publish, want["publish"].as_bool().unwrap(), "{case}");
            for (g, key) in [(got.devices, "devices"), (got.candidate, "candidate"), (got.published, "published")] {
                assert!(close(g, &want[key]), "{key}: {g} in {case}");
            }
            assert!(close(got.fallback, &want["fallback"]), "{case}");
            for (c, key) in [(got.against_published, "against_published"), (got.against_fallback, "against_fallback")] {
                assert!(close(c.difference, &want[key]["difference"]), "{key} in {case}");
                assert!(close(c.low, &want[key]["low"]) && close(c.high, &want[key]["high"]), "{key} in {case}");
            }
        }
    }

    #[test]
    fn too_few_devices_or_too_much_noise_publishes_nothing() {
        let sums = [20.0, 20.0, 0.0, 0.0, 20.0, 20.0];
        assert!(!decide(&sums, 10.0, 1.96).publish, "20 devices under sigma 10");
        assert!(decide(&sums, 1.0, 1.96).publish, "the same with little noise");
        assert!(!decide(&[-5.0, 1.0, 0.0, 0.0, 1.0, 1.0], 1.0, 1.96).publish);
    }
}
