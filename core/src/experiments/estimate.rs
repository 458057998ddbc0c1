//! From the per-arm sums of many devices' reports, with Gaussian noise of a
//! known standard deviation on every sum, to per-arm estimates with
//! intervals.
//!
//! An arm's metric is the mean over its reporting devices of their
//! per-device means: S / N, S the metric's noisy sum and N the noisy count
//! of reporting devices, each with independent noise of std sigma. Its
//! standard error from the noise, by the delta method, is
//! sigma * sqrt(1 + (S/N)^2) / N, and the interval is the estimate plus or
//! minus `z` of them, cut to [0, 1]. The interval covers the value the
//! devices' own reports give (the mean over the arm's devices), which is what
//! the noise hides; how far that is from another population's value is
//! sampling, which the count of devices says. When N is under 3 sigma the
//! count itself is not known well enough and the interval is [0, 1].

use super::report::REPORT_METRICS;

/// One metric of one arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricEstimate {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl MetricEstimate {
    pub fn covers(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

/// One arm's estimates.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmEstimate {
    pub arm_index: usize,
    /// The noisy count of devices that reported for the arm.
    pub devices: f64,
    pub ndcg_at_10: MetricEstimate,
    pub hit_rate_at_10: MetricEstimate,
    pub engaged_rate: MetricEstimate,
    pub completion_rate: MetricEstimate,
}

fn ratio(sum: f64, count: f64, sigma: f64, z: f64) -> MetricEstimate {
    if !(count > 3.0 * sigma && count > 0.0) {
        let r = if count > 0.0 { (sum / count).clamp(0.0, 1.0) } else { 0.0 };
        return MetricEstimate { estimate: r, low: 0.0, high: 1.0 };
    }
    let r = sum / count;
    let se = sigma * (1.0 + r * r).sqrt() / count;
    MetricEstimate {
        estimate: r.clamp(0.0, 1.0),
        low: (r - z * se).clamp(0.0, 1.0),
        high: (r + z * se).clamp(0.0, 1.0),
    }
}

/// Per-arm estimates from `sums` (`REPORT_METRICS` values per arm, in the
/// order of `ExperimentReport::contribution`), each sum carrying Gaussian
/// noise of std `sigma`; intervals of `z` standard errors (1.96 for 95%).
pub fn estimate(sums: &[f64], sigma: f64, z: f64) -> Vec<ArmEstimate> {
    sums.chunks_exact(REPORT_METRICS as usize)
        .enumerate()
        .map(|(arm_index, s)| ArmEstimate {
            arm_index,
            devices: s[0],
            ndcg_at_10: ratio(s[1], s[0], sigma, z),
            hit_rate_at_10: ratio(s[2], s[0], sigma, z),
            engaged_rate: ratio(s[3], s[0], sigma, z),
            completion_rate: ratio(s[4], s[0], sigma, z),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::experiments::standard_normal as normal;

    #[test]
    fn ninety_five_percent_intervals_cover_about_ninety_five_percent_of_the_time() {
        // 400 devices in an arm with a true mean NDCG of 0.12, noise of
        // std 8 on each sum: 2,000 trials.
        let mut rng = StdRng::seed_from_u64(11);
        let (n, truth, sigma) = (400.0, 0.12, 8.0);
        let trials = 2000;
        let mut covered = 0;
        for _ in 0..trials {
            let sums = [n + sigma * normal(&mut rng), n * truth + sigma * normal(&mut rng), 0.0, 0.0, 0.0];
            if estimate(&sums, sigma, 1.96)[0].ndcg_at_10.covers(truth) {
                covered += 1;
            }
        }
        // Binomial(2000, 0.95): std 9.7 trials.
        let rate = covered as f64 / trials as f64;
        assert!((rate - 0.95).abs() < 0.02, "coverage {rate}");
    }

    /// The known answers the coordinator's port of this rule
    /// (coordinator/hearth_coordinator/estimate.py) is tested against too.
    #[test]
    fn the_shared_known_answers_hold() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/experiment_estimates.json")).unwrap();
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        let close = |got: f64, want: &serde_json::Value| (got - f(want)).abs() <= 1e-12 * f(want).abs().max(1.0);
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 6);
        for case in cases {
            let sums: Vec<f64> = case["sums"].as_array().unwrap().iter().map(f).collect();
            let got = estimate(&sums, f(&case["sigma"]), f(&case["z"]));
            let want = case["arms"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{case}");
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.arm_index as u64, w["arm_index"].as_u64().unwrap());
                assert!(close(g.devices, &w["devices"]), "{case}");
                for (m, key) in [
                    (g.ndcg_at_10, "ndcg_at_10"),
                    (g.hit_rate_at_10, "hit_rate_at_10"),
                    (g.engaged_rate, "engaged_rate"),
                    (g.completion_rate, "completion_rate"),
                ] {
                    let w = &w[key];
                    assert!(close(m.estimate, &w["estimate"]) && close(m.low, &w["low"]), "{key} in {case}");
                    assert!(close(m.high, &w["high"]), "{key} in {case}");
                }
            }
        }
    }

    #[test]
    fn a_count_lost_in_the_noise_gives_the_whole_range() {
        let e = estimate(&[10.0, 5.0, 0.0, 0.0, 0.0], 8.0, 1.96);
        assert_eq!((e[0].ndcg_at_10.low, e[0].ndcg_at_10.high), (0.0, 1.0));
        let e = estimate(&[-4.0, 5.0, 0.0, 0.0, 0.0], 8.0, 1.96);
        assert_eq!((e[0].ndcg_at_10.low, e[0].ndcg_at_10.high), (0.0, 1.0));
        assert!(e[0].ndcg_at_10.estimate.is_finite());
    }
}
