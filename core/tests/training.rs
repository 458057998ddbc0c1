//! Local training: the update is bounded, deterministic per seed, learns,
//! and carries nothing but weights.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hearth_core::testing::{RoundSettings, local_update};
use hearth_core::*;

const DAY: i64 = 86_400_000;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn store(dir: &std::path::Path) -> std::sync::Arc<Hearth> {
    let h = open(dir, KEY_A).unwrap();
    let genres = ["drama", "comedy", "horror", "kids"];
    h.upsert_catalog(
        (0..200).map(|i| item(&format!("item-{i:03}"), &format!("Title {i}"), &[genres[i % 4]])).collect(),
    )
    .unwrap();
    let t = now() - 20 * DAY;
    let events: Vec<Event> = (0..40)
        .flat_map(|n| {
            let id = format!("item-{:03}", (n * 4) % 200); // drama only
            [
                event(&id, EventKind::Play, t + n as i64 * 3_600_000),
                event(&id, EventKind::Complete, t + n as i64 * 3_600_000 + 1),
            ]
        })
        .collect();
    h.record_batch(events).unwrap();
    h
}

#[test]
fn the_update_is_clipped_deterministic_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let free = local_update(&h, 1e6, 3, 1).unwrap();
    assert_eq!(free.examples, 40);
    assert!(free.norm > 0.0);
    assert!(free.last_epoch_loss < free.first_epoch_loss, "{} -> {}", free.first_epoch_loss, free.last_epoch_loss);
    let again = local_update(&h, 1e6, 3, 1).unwrap();
    // Same history, same seed: the same update, up to the history weights
    // decaying for the milliseconds between the two calls.
    let scale = free.delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    let diff = free.delta.iter().zip(&again.delta).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-3 * scale, "updates differ by {diff} (scale {scale})");
    let other_seed = local_update(&h, 1e6, 3, 2).unwrap();
    let diff = free.delta.iter().zip(&other_seed.delta).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff > 1e-2 * scale, "another seed draws other negatives");

    for c in [0.01, 0.1, 1.0] {
        let u = local_update(&h, c, 3, 1).unwrap();
        assert!(u.norm <= c, "norm {} > C {c}", u.norm);
        if free.norm > c {
            // The same training (up to the milliseconds of decay between calls).
            assert!((u.norm_before_clip - free.norm).abs() <= 1e-3 * free.norm);
            assert!((u.norm - c).abs() < 1e-3 * c);
        }
    }
}

#[test]
fn no_history_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog((0..20).map(|i| item(&format!("i{i}"), "T", &["drama"])).collect()).unwrap();
    assert!(matches!(local_update(&h, 1.0, 1, 1), Err(HearthError::InvalidInput { .. })));
}

#[test]
fn a_training_that_blows_up_is_a_typed_update_failure_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let before = local_update(&h, 1.0, 1, 1).unwrap();
    let round = RoundSettings { learning_rate: Some(10.0), epochs: 20, ..RoundSettings::new(1.0, 1) };
    match hearth_core::testing::local_update_with(&h, &round, None) {
        Err(HearthError::Federated { kind: FederatedFailure::Update, reason }) => {
            assert!(reason.contains("diverged"), "{reason}")
        }
        other => panic!("expected a diverged update, got {other:?}"),
    }
    // The store and the model are as they were: a sane round trains as before.
    let after = local_update(&h, 1.0, 1, 1).unwrap();
    assert_eq!(after.examples, before.examples);
    assert!((after.norm_before_clip - before.norm_before_clip).abs() <= 1e-3 * before.norm_before_clip);
}

#[test]
fn a_round_can_cap_the_positives_it_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let round = RoundSettings { max_examples: Some(7), ..RoundSettings::new(1.0, 1) };
    let capped = hearth_core::testing::local_update_with(&h, &round, None).unwrap();
    assert_eq!(capped.examples, 7);
    assert_eq!(capped.steps, 1, "7 examples are one batch of the manifest's 16");
    assert_eq!(local_update(&h, 1.0, 1, 1).unwrap().examples, 40, "the default takes all 40 (at most 500)");
}

#[test]
fn a_dense_weight_scales_the_dense_part_before_clipping_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    // Where the dense parameters are: those whose gradient is not rows of
    // an id table.
    let manifest: serde_json::Value = serde_json::from_slice(&ModelPackage::builtin().manifest).unwrap();
    let mut dense = Vec::new();
    for p in manifest["parameters"].as_array().unwrap() {
        let count = p["count"].as_u64().unwrap() as usize;
        dense.extend(std::iter::repeat_n(p["gradient_rows_of"].is_null(), count));
    }
    let with = |weight: Option<f64>, clip: f64| {
        let round = RoundSettings { dense_weight: weight, ..RoundSettings::new(clip, 1) };
        hearth_core::testing::local_update_with(&h, &round, None).unwrap()
    };
    let plain = with(None, 1e6);
    let weighted = with(Some(0.1), 1e6);
    assert_eq!(plain.delta.len(), dense.len());
    let scale = plain.delta.iter().fold(0f32, |m, d| m.max(d.abs()));
    let mut moved = (0, 0);
    for ((p, w), d) in plain.delta.iter().zip(&weighted.delta).zip(&dense) {
        let want = if *d { p * 0.1 } else { *p };
        assert!((w - want).abs() <= 1e-3 * scale, "{w} vs {want}");
        if *p != 0.0 {
            if *d { moved.0 += 1 } else { moved.1 += 1 }
        }
    }
    assert!(moved.0 > 0 && moved.1 > 0, "both parts trained: {moved:?}");
    // The bound is on the weighted update, which is what is sent.
    let clipped = with(Some(0.1), 0.01);
    assert!(clipped.norm <= 0.01 && (clipped.norm_before_clip - weighted.norm).abs() <= 1e-3 * weighted.norm);
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let round = RoundSettings { dense_weight: Some(bad), ..RoundSettings::new(1.0, 1) };
        assert!(
            matches!(hearth_core::testing::local_update_with(&h, &round, None), Err(HearthError::InvalidInput { .. })),
            "{bad}"
        );
    }
}
