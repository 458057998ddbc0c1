//! Whole rounds between devices and a coordinator, in one process: the
//! sum comes out exact whoever drops at whichever stage.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Drop, config, expected_sum, run, run_configured, update};
use hearth_secagg::{NoiseTerms, RoundError};

#[test]
fn with_no_dropout_the_sum_is_exact() {
    for (n, degree) in [(10, 100), (30, 8)] {
        let outcome = run(n, degree, &BTreeMap::new());
        let aggregate = outcome.result.as_ref().unwrap();
        assert_eq!(aggregate.survivors.len(), n);
        assert_eq!(aggregate.sum, expected_sum(&outcome, &aggregate.survivors));
        // And it dequantizes to the float sum, within the rounding.
        let q = config(n, degree).quantization;
        let got = aggregate.dequantized(&q);
        for (i, g) in got.iter().enumerate() {
            let want: f64 = aggregate.survivors.iter().map(|&node| update(node)[i] as f64).sum();
            assert!((g - want).abs() <= n as f64 / q.scale, "{g} vs {want}");
        }
    }
}

#[test]
fn devices_dropping_at_every_stage_leave_the_survivors_sum_exact() {
    // A complete graph of 20 (threshold 13 of 19: five may drop) and a
    // sparse one of 40 (threshold 8 of 12: four may drop, even if all are
    // one device's neighbours).
    let node = |i: u64| i * 1000 + 7;
    for (n, degree, base, twice) in [(20usize, 100usize, 1u64, true), (40, 12, 3, false)] {
        let mut drops: BTreeMap<u64, Drop> = [
            (node(base), Drop::Setup),
            (node(base + 1), Drop::AfterKeys),
            (node(base + 3), Drop::AfterShares),
            (node(base + 5), Drop::AfterMasked),
        ]
        .into();
        if twice {
            drops.insert(node(base + 6), Drop::AfterShares);
        }
        let outcome = run(n, degree, &drops);
        let aggregate = outcome.result.as_ref().unwrap();
        let survivors: BTreeSet<u64> = aggregate.survivors.iter().copied().collect();
        // Survivors are the devices whose masked vector arrived: those that
        // dropped only at the unmask stage are in.
        let lost: BTreeSet<u64> =
            drops.iter().filter(|(_, d)| **d != Drop::AfterMasked).map(|(node, _)| *node).collect();
        assert_eq!(survivors.len(), n - lost.len());
        assert!(survivors.is_disjoint(&lost));
        assert_eq!(aggregate.sum, expected_sum(&outcome, &aggregate.survivors), "n {n}");
        assert_eq!(aggregate.dropped[0], vec![node(base)]);
        assert_eq!(aggregate.dropped[1], vec![node(base + 1)]);
        let mut after_shares = vec![node(base + 3)];
        if twice {
            after_shares.push(node(base + 6));
        }
        assert_eq!(aggregate.dropped[2], after_shares);
        assert_eq!(aggregate.dropped[3], vec![node(base + 5)]);
    }
}

#[test]
fn too_many_dropouts_fail_the_round_without_a_partial_sum() {
    // 10 devices, complete graph, threshold 6 of 9: five drop before the
    // masked stage, so no one has 6 surviving neighbours.
    let drops: BTreeMap<u64, Drop> = (1..=5).map(|i| (i * 1000 + 7, Drop::AfterShares)).collect();
    let outcome = run(10, 100, &drops);
    assert!(matches!(outcome.result, Err(RoundError::TooFewSurvivors { stage: "masked-input", .. })));
}

#[test]
fn bad_replies_are_refused_and_the_round_goes_on() {
    let node = |i: u64| i * 1000 + 7;
    let drops: BTreeMap<u64, Drop> = (0..4).map(|stage| (node(stage as u64 + 2), Drop::Garbage(stage))).collect();
    let outcome = run(20, 100, &drops);
    let aggregate = outcome.result.as_ref().unwrap();
    // The device that garbled its unmask reply had sent its masked vector:
    // it is in the sum; the three others are not.
    assert_eq!(aggregate.survivors.len(), 17);
    assert!(aggregate.survivors.contains(&node(5)));
    assert_eq!(aggregate.sum, expected_sum(&outcome, &aggregate.survivors));
    assert_eq!(aggregate.rejected.len(), 12);
    assert_eq!(aggregate.dropped.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
}

/// A config whose devices add distributed noise (z = 1, 2/3 honest), at
/// the largest scale that leaves room for it.
fn noisy(n: usize, degree: usize) -> hearth_secagg::RoundConfig {
    let noise = NoiseTerms { multiplier: 1.0, honest_fraction: 2.0 / 3.0 };
    let mut c = config(n, degree);
    let q = &mut c.quantization;
    q.max_cohort = n as u32;
    q.scale = noise.largest_scale(q.bits, q.clip_norm, n as u32, q.max_cohort);
    c.noise = noise;
    c
}

#[test]
fn with_distributed_noise_the_sum_carries_every_devices_share() {
    let n = 12;
    let config = noisy(n, 100);
    let outcome = run_configured(config.clone(), n, &BTreeMap::new(), &update);
    let aggregate = outcome.result.as_ref().unwrap();
    assert_eq!(aggregate.survivors.len(), n);
    // What the sum holds beyond the devices' own quantized updates: their
    // noise shares, each of variance (z C s)^2 / ceil(2/3 n).
    let exact = expected_sum(&outcome, &aggregate.survivors);
    let q = &config.quantization;
    let noise = centred(&aggregate.sum, &exact, q.bits);
    let variance = noise.iter().map(|v| v * v).sum::<f64>() / noise.len() as f64;
    let want = n as f64 * config.noise.share_variance(q.clip_norm, q.scale, n as u32);
    // 300 coordinates: the sample variance is within 35% (5 of its
    // standard deviations, sqrt(2/300) each) of the true one.
    assert!((variance / want - 1.0).abs() < 0.35, "noise variance {variance:.0}, announced {want:.0}");
    // In the update's units: the honest 8 devices' shares alone give z C.
    let honest_std = (8.0 * config.noise.share_variance(q.clip_norm, q.scale, n as u32)).sqrt() / q.scale;
    assert!((honest_std - 1.0).abs() < 1e-3, "{honest_std}");
}

/// The sum's difference from `exact`, as signed integers.
fn centred(sum: &[u32], exact: &[u32], bits: u32) -> Vec<f64> {
    sum.iter()
        .zip(exact)
        .map(|(&got, &want)| {
            let d = got.wrapping_sub(want) & ((1 << bits) - 1);
            if d >= 1 << (bits - 1) { d as f64 - (1u64 << bits) as f64 } else { d as f64 }
        })
        .collect()
}

#[test]
fn with_a_local_coin_the_sum_holds_the_kept_updates_and_everyones_noise() {
    // 30 devices with the same update, each keeping it with probability
    // 1/2: the sum is the kept devices' quantized updates plus all 30
    // noise shares. The coordinator sees the same kind of reply from
    // every device.
    let n = 30;
    let config = hearth_secagg::RoundConfig { sampling_rate: 0.5, ..noisy(n, 100) };
    let a = 0.9 / (common::LEN as f32).sqrt();
    let outcome = run_configured(config.clone(), n, &BTreeMap::new(), &|_| vec![a; common::LEN]);
    let aggregate = outcome.result.as_ref().unwrap();
    assert_eq!(aggregate.survivors.len(), n);
    assert_eq!(outcome.coins.len(), n);
    assert!(outcome.coins.values().all(|c| c.rate == 0.5));
    let kept: Vec<u64> = outcome.coins.iter().filter(|(_, c)| c.included).map(|(&node, _)| node).collect();
    // Binomial(30, 1/2): 15 +- 2.7; all or none would be a broken coin.
    assert!((4..=26).contains(&kept.len()), "{} kept", kept.len());
    let q = &config.quantization;
    let want = n as f64 * config.noise.share_variance(q.clip_norm, q.scale, n as u32);
    let moments = |exact: &[u32]| {
        let noise = centred(&aggregate.sum, exact, q.bits);
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        (mean, noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / noise.len() as f64)
    };
    // Five standard errors of a mean of LEN noise values.
    let slack = 5.0 * (want / common::LEN as f64).sqrt();
    let (mean, variance) = moments(&expected_sum(&outcome, &kept));
    assert!(mean.abs() < slack, "mean {mean:.0}, slack {slack:.0}");
    assert!((variance / want - 1.0).abs() < 0.35, "noise variance {variance:.0}, announced {want:.0}");
    // Against every device's update, the left-out ones are missing.
    let (mean, _) = moments(&expected_sum(&outcome, &aggregate.survivors));
    let missing = (n - kept.len()) as f64 * a as f64 * q.scale;
    assert!((mean + missing).abs() < slack, "mean {mean:.0}, {missing:.0} missing");
    // Masked vectors are the same size whatever the coin said.
    let sizes: BTreeSet<usize> = outcome.received.iter().filter(|(s, _, _)| *s == 2).map(|(_, _, b)| b.len()).collect();
    assert_eq!(sizes.len(), 1, "{sizes:?}");
}

#[test]
fn with_distributed_noise_too_few_survivors_fail_the_round_before_any_unmasking() {
    // 30 devices of degree 8 (threshold 6 of 8): the shares would allow 7
    // survivors, but the noise was sized for ceil(2/3 * 30) = 20 of them.
    let n = 30;
    let cohort: Vec<u64> = (1..=n as u64).map(|i| i * 1000 + 7).collect();
    let drops: BTreeMap<u64, Drop> = cohort.iter().take(11).map(|&node| (node, Drop::AfterShares)).collect();
    let outcome = run_configured(noisy(n, 8), n, &drops, &update);
    match outcome.result {
        Err(RoundError::TooFewSurvivors { survivors: 19, needed: 20, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Nothing was asked of the devices after their masked vectors.
    assert!(outcome.received.iter().all(|(stage, _, _)| *stage < 3));
}
