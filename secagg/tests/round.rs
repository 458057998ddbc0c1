//! Whole rounds between devices and a coordinator, in one process: the
//! sum comes out exact whoever drops at whichever stage.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Drop, config, expected_sum, run, update};
use hearth_secagg::RoundError;

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
