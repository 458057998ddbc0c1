//! The device's RDP accountant against Google's dp_accounting: every case of
//! `fixtures/dp_accounting_epsilons.json` (made by
//! `tests/federated/accountant_fixture.py` with the pinned dp_accounting)
//! within 1% relative, and the accountant's monotonicity.

use hearth_core::federated::accountant::{AccountantError, RdpAccountant};
use serde_json::Value;
use std::collections::HashMap;

const FIXTURE: &str = include_str!("fixtures/dp_accounting_epsilons.json");
const TOLERANCE: f64 = 0.01;

fn epsilon(segments: &[(f64, f64, u64)], delta: f64) -> f64 {
    let mut accountant = RdpAccountant::new();
    for &(z, q, rounds) in segments {
        accountant.compose(z, q, rounds).unwrap();
    }
    accountant.epsilon(delta).unwrap()
}

#[test]
fn accountant_matches_dp_accounting_within_one_percent() {
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let version = fixture["dp_accounting"].as_str().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 240, "{} cases", cases.len());
    let mut worst = (0.0f64, String::new());
    let mut failures = Vec::new();
    let mut same_order = 0;
    let mut ledgers: HashMap<String, RdpAccountant> = HashMap::new();
    for case in cases {
        let segments: Vec<(f64, f64, u64)> = case["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["noise_multiplier"].as_f64().unwrap(),
                    s["sampling_rate"].as_f64().unwrap(),
                    s["rounds"].as_u64().unwrap(),
                )
            })
            .collect();
        let delta = case["delta"].as_f64().unwrap();
        let want = case["epsilon"].as_f64().unwrap();
        // Each ledger comes once per delta: compose it once.
        let name = case["name"].as_str().unwrap();
        let accountant = ledgers.entry(name.to_string()).or_insert_with(|| {
            let mut accountant = RdpAccountant::new();
            for &(z, q, rounds) in &segments {
                accountant.compose(z, q, rounds).unwrap();
            }
            accountant
        });
        let got = accountant.epsilon_and_order(delta).unwrap();
        if got.order == case["order"].as_f64().unwrap() {
            same_order += 1;
        }
        let gap = if want == 0.0 { got.epsilon.abs() } else { ((got.epsilon - want) / want).abs() };
        let label = format!("{name} delta={delta}: {} vs dp_accounting {want}", got.epsilon);
        if gap.is_nan() || gap > TOLERANCE {
            failures.push(label.clone());
        }
        if gap.is_nan() || gap > worst.0 {
            worst = (gap, label);
        }
    }
    println!(
        "accountant vs dp_accounting {version}: {} cases, worst relative gap {:.3e} ({}), same optimal order in {same_order}",
        cases.len(),
        worst.0,
        worst.1
    );
    assert!(failures.is_empty(), "{} cases off by more than 1%:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn accountant_epsilon_grows_with_rounds_and_sampling_rate_and_falls_with_noise() {
    let delta = 1e-5;
    for z in [0.8, 1.0, 3.0] {
        for q in [0.01, 0.1, 1.0] {
            let by_rounds: Vec<f64> = [1, 10, 100, 1000].iter().map(|&t| epsilon(&[(z, q, t)], delta)).collect();
            assert!(by_rounds.windows(2).all(|w| w[0] < w[1]), "z={z} q={q}: {by_rounds:?}");
        }
        for t in [1, 100] {
            let by_q: Vec<f64> = [0.001, 0.01, 0.1, 0.5, 1.0].iter().map(|&q| epsilon(&[(z, q, t)], delta)).collect();
            assert!(by_q.windows(2).all(|w| w[0] <= w[1]), "z={z} T={t}: {by_q:?}");
            assert!(by_q[4] > by_q[0], "z={z} T={t}: {by_q:?}");
        }
    }
    for (q, t) in [(0.01, 100), (0.1, 10), (1.0, 1)] {
        let by_z: Vec<f64> = [0.5, 0.8, 1.0, 1.5, 3.0, 10.0].iter().map(|&z| epsilon(&[(z, q, t)], delta)).collect();
        assert!(by_z.windows(2).all(|w| w[0] > w[1]), "q={q} T={t}: {by_z:?}");
    }
    // A smaller delta costs more epsilon.
    assert!(epsilon(&[(1.0, 0.01, 100)], 1e-6) > epsilon(&[(1.0, 0.01, 100)], 1e-5));
    // Composition is additive: one call of 30 rounds, or three of 10.
    let once = epsilon(&[(1.0, 0.05, 30)], delta);
    let thrice = epsilon(&[(1.0, 0.05, 10), (1.0, 0.05, 10), (1.0, 0.05, 10)], delta);
    assert!(((once - thrice) / once).abs() < 1e-12, "{once} vs {thrice}");
}

#[test]
fn accountant_zero_sampling_spends_nothing_and_zero_noise_everything() {
    assert_eq!(epsilon(&[(1.0, 0.0, 1000)], 1e-5), 0.0);
    assert_eq!(epsilon(&[(0.0, 0.0, 10)], 1e-5), 0.0);
    assert_eq!(epsilon(&[(0.0, 0.01, 1)], 1e-5), f64::INFINITY);
    assert_eq!(epsilon(&[(1.0, 0.01, 10), (0.0, 0.5, 1)], 1e-5), f64::INFINITY);
    assert_eq!(epsilon(&[], 1e-5), 0.0);
    let mut accountant = RdpAccountant::new();
    assert_eq!(accountant.compose(1.0, 2.0, 1), Err(AccountantError::SamplingRate(2.0)));
    assert_eq!(accountant.epsilon(0.0), Err(AccountantError::Delta(0.0)));
}

const DDG_FIXTURE: &str = include_str!("fixtures/ddg_epsilons.json");

#[test]
fn distributed_rounds_match_the_papers_accounting_within_one_percent() {
    // tests/federated/ddg_fixture.py: Kairouz, Liu and Steinke's proposition
    // 14 for the distributed discrete Gaussian (checked there against their
    // reference implementation), amplified by a device's coin with Zhu and
    // Wang's general Poisson bound, converted by dp_accounting.
    use hearth_core::federated::accountant::DistributedGaussian;
    let fixture: Value = serde_json::from_str(DDG_FIXTURE).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 500, "{} cases", cases.len());
    let coins = cases.iter().filter(|c| c["sampling_rate"].as_f64().unwrap() < 1.0).count();
    assert!(coins >= 200, "{coins} cases with a local coin");
    let mut failures = Vec::new();
    for case in cases {
        let round = DistributedGaussian {
            noise_multiplier: case["noise_multiplier"].as_f64().unwrap(),
            honest: case["honest"].as_u64().unwrap() as u32,
            clip_norm: case["clip_norm"].as_f64().unwrap(),
            scale: case["scale"].as_f64().unwrap(),
            dimension: case["dimension"].as_u64().unwrap(),
            sampling_rate: case["sampling_rate"].as_f64().unwrap(),
        };
        let mut accountant = RdpAccountant::new();
        accountant.compose_distributed(&round, case["rounds"].as_u64().unwrap()).unwrap();
        let got = accountant.epsilon(case["delta"].as_f64().unwrap()).unwrap();
        let want = case["epsilon"].as_f64().unwrap();
        if ((got - want) / want).abs() > TOLERANCE {
            failures.push(format!("{}: {got} vs {want}", case["name"].as_str().unwrap()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases off by more than 1%:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_distributed_round_costs_what_a_central_one_does_and_a_little_more() {
    use hearth_core::federated::accountant::DistributedGaussian;
    // 100 honest devices, z = 1, 20 bits: the rounding's extra sensitivity
    // and the sum of discrete Gaussians cost a few percent over the
    // continuous Gaussian of the same z.
    let round = DistributedGaussian {
        noise_multiplier: 1.0,
        honest: 100,
        clip_norm: 1.0,
        scale: 4828.0,
        dimension: 144_935,
        sampling_rate: 1.0,
    };
    let mut distributed = RdpAccountant::new();
    distributed.compose_distributed(&round, 10).unwrap();
    let mut central = RdpAccountant::new();
    central.compose(1.0, 1.0, 10).unwrap();
    let (d, c) = (distributed.epsilon(1e-5).unwrap(), central.epsilon(1e-5).unwrap());
    assert!(d > c && d < 1.1 * c, "distributed {d}, central {c}");
    // No noise is infinite; nonsense terms are refused.
    let mut a = RdpAccountant::new();
    a.compose_distributed(&DistributedGaussian { noise_multiplier: 0.0, ..round }, 1).unwrap();
    assert_eq!(a.epsilon(1e-5).unwrap(), f64::INFINITY);
    for bad in [
        DistributedGaussian { noise_multiplier: f64::NAN, ..round },
        DistributedGaussian { honest: 0, ..round },
        DistributedGaussian { scale: 0.0, ..round },
        DistributedGaussian { dimension: 0, ..round },
    ] {
        assert!(RdpAccountant::new().compose_distributed(&bad, 1).is_err(), "{bad:?}");
    }
}
