//! Experiments, on a store with a history of 10,000 events and the
//! experiment log at its bound (4,096 records, the oldest dropped by every
//! new one): `log_outcome`, as an app calls it when the user plays an item
//! an experiment's row showed, and `experiment_report`, which reads the
//! whole log; and the release gate's `evaluate_candidate` on a store of the
//! same size.
//!
//! `cargo bench -p hearth-core --bench experiments`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::*;

const CATALOG: usize = 2000;
const HISTORY: usize = 10_000;

fn catalog() -> Vec<CatalogItem> {
    (0..CATALOG)
        .map(|i| CatalogItem {
            id: format!("catalog-item-{i}"),
            title: format!("Title {i}"),
            categories: vec!["drama".into()],
            language: None,
            duration_ms: Some(2_700_000),
            release_year: None,
            popularity: i as f64,
            content_rating: None,
        })
        .collect()
}

/// A play of catalog item `item` at `at_ms`.
fn play(item: usize, at_ms: i64) -> Event {
    Event {
        item_id: format!("catalog-item-{item}"),
        kind: EventKind::Play,
        timestamp_ms: at_ms,
        position_ms: Some(600_000),
        duration_ms: Some(2_700_000),
        context: EventContext { device: DeviceClass::Tv, local_hour: (at_ms / 3_600_000 % 24) as u8, locale: None },
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = Hearth::open(HearthConfig::new(dir.path().to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32])))
        .unwrap();
    h.upsert_catalog(catalog()).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = now - 56 * 86_400_000;
    h.record_batch(
        (0..HISTORY)
            .map(|i| Event {
                kind: [EventKind::Play, EventKind::Progress, EventKind::Complete][i % 3],
                ..play((i * 7919) % CATALOG, start + i as i64 * 480_000)
            })
            .collect(),
    )
    .unwrap();
    let arm = |name: &str, treatment| ExperimentArm { name: name.into(), share: 1.0, treatment };
    h.define_experiment(Experiment {
        id: "home".into(),
        arms: vec![arm("model", ArmTreatment::Model), arm("fallback", ArmTreatment::Fallback)],
    })
    .unwrap();
    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: None };
    // Every item has a completion in this history: keep them in the row.
    let options =
        RankOptions { experiment: Some("home".into()), exclude_completed: false, ..RankOptions::new(context) };
    let row = h.rank_catalog(options.clone()).unwrap();
    assert_eq!(row.items.len(), 20);
    let shown: Vec<String> = row.items.iter().map(|i| i.item_id.clone()).collect();
    // A row, then plays of what it showed, a row every 8 records.
    for i in 0..MAX_LOG_RECORDS as usize {
        if i % 8 == 0 {
            h.rank_catalog(options.clone()).unwrap();
        } else {
            h.log_outcome("home".into(), shown[i % shown.len()].clone(), OutcomeKind::Play).unwrap();
        }
    }

    let mut group = c.benchmark_group("experiments");
    let mut i = 0usize;
    group.bench_function("log_outcome (log full)", |b| {
        b.iter(|| {
            i += 1;
            h.log_outcome("home".into(), shown[i % shown.len()].clone(), OutcomeKind::Play).unwrap()
        })
    });
    group.bench_function("experiment_report (log full)", |b| b.iter(|| h.experiment_report("home".into()).unwrap()));

    // The release gate's evaluation on a device that never contributed: its
    // newest 10 first engagements, each ranked among the ~1,500 catalog
    // items not yet watched then, by the candidate, the installed model and
    // the fallback, after the 10,000-event history is replayed.
    let dir = tempfile::tempdir().unwrap();
    let e = Hearth::open(HearthConfig::new(dir.path().to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32])))
        .unwrap();
    e.upsert_catalog(catalog()).unwrap();
    e.record_batch(
        (0..HISTORY)
            .map(|i| {
                // 500 items played over and over, then 10 new ones.
                let item = if i < HISTORY - 10 { (i * 7919) % 500 } else { 500 + i - (HISTORY - 10) };
                play(item, start + i as i64 * 480_000)
            })
            .collect(),
    )
    .unwrap();
    let candidate = ModelPackage::builtin();
    let held_out = e.evaluate_candidate(&candidate).unwrap().unwrap();
    assert_eq!(held_out.engagements, HELD_OUT_MAX);
    group.sample_size(20);
    group.bench_function("evaluate_candidate (10,000 events, 10 held out, 2,000 items)", |b| {
        b.iter(|| e.evaluate_candidate(&candidate).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
