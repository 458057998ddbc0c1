//! Experiments: `log_outcome` with the log at its bound (4,096 records, the
//! oldest dropped by every new one), as an app calls it when the user plays
//! an item an experiment's row showed.
//!
//! `cargo bench -p hearth-core --bench experiments`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::*;

const CATALOG: usize = 2000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = Hearth::open(HearthConfig::new(dir.path().to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32])))
        .unwrap();
    h.upsert_catalog(
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
    let row = h.rank_catalog(RankOptions { experiment: Some("home".into()), ..RankOptions::new(context) }).unwrap();
    let shown: Vec<String> = row.items.iter().map(|i| i.item_id.clone()).collect();
    for i in 0..MAX_LOG_RECORDS as usize {
        h.log_outcome("home".into(), shown[i % shown.len()].clone(), OutcomeKind::Play).unwrap();
    }

    let mut group = c.benchmark_group("experiments");
    let mut i = 0usize;
    group.bench_function("log_outcome (log full)", |b| {
        b.iter(|| {
            i += 1;
            h.log_outcome("home".into(), shown[i % shown.len()].clone(), OutcomeKind::Play).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
