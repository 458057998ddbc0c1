//! Sync between two devices of one person, through a backend in memory:
//! the whole history (10,000 events) to a device that just joined, and an
//! incremental sync of 10 new events; and, printed once, the bytes the
//! backend holds per event beside the bytes the store seals per event.
//!
//! `cargo bench -p hearth-core --bench sync`

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hearth_core::testing::{MemoryBackend, bench_event};
use hearth_core::*;

const HISTORY: usize = 10_000;

fn store(dir: &std::path::Path, key: u8) -> Arc<Hearth> {
    Hearth::open(HearthConfig::new(dir.to_str().unwrap()), Arc::new(FixedKeyProvider::new([key; 32]))).unwrap()
}

fn pair(inviter: &Hearth, joiner: &Hearth) {
    let answer = joiner.join_device(inviter.invite_device().unwrap()).unwrap();
    let InviteReply { message: reveal, digits } = inviter.invite_answer(answer).unwrap();
    assert_eq!(joiner.join_reveal(reveal).unwrap(), digits);
    joiner.join_finish(inviter.invite_confirm(true).unwrap().unwrap(), true).unwrap();
}

fn synced(h: &Hearth, backend: &Arc<MemoryBackend>) -> SyncReport {
    let report = h.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.complete && report.refused.is_empty(), "{report:?}");
    report
}

/// The sealed bytes per event in a store's `events` table.
fn sealed_per_event(dir: &std::path::Path) -> f64 {
    let c = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    c.query_row("SELECT CAST(SUM(length(sealed)) AS REAL) / count(*) FROM events", [], |r| r.get(0)).unwrap()
}

fn bench(c: &mut Criterion) {
    let phone_dir = tempfile::tempdir().unwrap();
    let phone = store(phone_dir.path(), 1);
    phone.create_sync_group().unwrap();
    phone.record_batch((0..HISTORY as u64).map(bench_event).collect()).unwrap();
    let backend = Arc::new(MemoryBackend::default());
    synced(&phone, &backend);
    let held: usize = backend.snapshot().values().map(Vec::len).sum();
    println!(
        "{HISTORY} events: {} blobs, {held} bytes on the backend, {:.1} per event; the store seals {:.1} per event",
        backend.snapshot().len(),
        held as f64 / HISTORY as f64,
        sealed_per_event(phone_dir.path())
    );

    let mut group = c.benchmark_group("sync");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("fresh_device_10000_events", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let tv = store(dir.path(), 2);
                pair(&phone, &tv);
                (dir, tv)
            },
            |(dir, tv)| {
                assert_eq!(synced(&tv, &backend).events_received, HISTORY as u64);
                (dir, tv)
            },
            BatchSize::PerIteration,
        )
    });

    // A TV in step with the phone; each iteration, the phone records 10
    // events and syncs, then the TV takes them in.
    let tv_dir = tempfile::tempdir().unwrap();
    let tv = store(tv_dir.path(), 3);
    pair(&phone, &tv);
    synced(&tv, &backend);
    let mut next = HISTORY as u64;
    group.bench_function("incremental_10_events", |b| {
        b.iter_batched(
            || {
                phone.record_batch((next..next + 10).map(bench_event).collect()).unwrap();
                next += 10;
                synced(&phone, &backend);
            },
            |()| assert_eq!(synced(&tv, &backend).events_received, 10),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
