//! `rank` end to end (features from the sealed profile, tract inference,
//! re-ranking, reasons) for 100, 500 and 2,000 candidates over a
//! 10,000-event history, and bare inference through the tract plan.
//!
//! `cargo bench -p hearth-core --bench rank`. One thread: tract runs each
//! call on the calling thread.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hearth_core::testing::{Inference, InferenceInputs};
use hearth_core::*;

const CATALOG: usize = 5000;
const HISTORY: usize = 10_000;

fn store(dir: &std::path::Path) -> Arc<Hearth> {
    let h = common::open_store(dir);
    h.upsert_catalog(common::catalog(CATALOG)).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let events: Vec<Event> = (0..HISTORY)
        .map(|i| Event {
            item_id: format!("catalog-item-{}", (i * 7919) % CATALOG),
            kind: [EventKind::Play, EventKind::Complete, EventKind::Skip, EventKind::Impression][i % 4],
            timestamp_ms: now - 90 * 86_400_000 + i as i64 * 700_000,
            position_ms: None,
            duration_ms: None,
            context: EventContext { device: DeviceClass::Tv, local_hour: (i % 24) as u8, locale: None },
        })
        .collect();
    h.record_batch(events).unwrap();
    h.flush().unwrap();
    h
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = store(dir.path());
    let context = RankContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) };
    let mut group = c.benchmark_group("rank");
    group.measurement_time(Duration::from_secs(5));
    for n in [100usize, 500, 2000] {
        let candidates: Vec<Candidate> =
            (0..n).map(|i| Candidate::id(format!("catalog-item-{}", (i * 13) % CATALOG))).collect();
        let options =
            RankOptions { limit: 20, diversity: Diversity::Mmr { lambda: 0.7 }, ..RankOptions::new(context.clone()) };
        let row = h.rank(candidates.clone(), options.clone()).unwrap();
        assert!(matches!(row.ranker, Ranker::Model { .. }));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("end_to_end", n), &n, |b, _| {
            b.iter(|| h.rank(candidates.clone(), options.clone()).unwrap())
        });
    }
    group.finish();

    let model = Inference::builtin();
    let mut group = c.benchmark_group("inference");
    for n in [100usize, 500, 2000] {
        let inputs = InferenceInputs::synthetic(n, 50, 1);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("tract", n), &n, |b, _| b.iter(|| model.score(&inputs)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
