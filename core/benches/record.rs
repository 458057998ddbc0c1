//! Record latency and throughput of the sealed store, beside the same rows
//! written plainly with rusqlite (same SQLite settings, same JSON payload,
//! no sealing) in the same run.
//!
//! `cargo bench -p hearth-core --bench record`; the ratio sealed / plain is
//! read off the two lines of each group.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hearth_core::testing::bench_event as event;
use hearth_core::*;
use rusqlite::{Connection, params};

const BATCH: usize = 1000;

fn hearth(dir: &std::path::Path) -> Arc<Hearth> {
    let h = Hearth::open(HearthConfig::new(dir.to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32]))).unwrap();
    h.upsert_catalog(
        (0..5000)
            .map(|i| CatalogItem {
                id: format!("catalog-item-{i}"),
                title: format!("Title {i}"),
                categories: vec![format!("genre-{}", i % 20)],
                language: Some("en".into()),
                duration_ms: Some(2_700_000),
                release_year: Some(2020),
                popularity: 1.0,
                content_rating: None,
            })
            .collect(),
    )
    .unwrap();
    h
}

/// The baseline: the same SQLite settings as the store, rows in clear.
fn plain(dir: &std::path::Path) -> Connection {
    let c = Connection::open(dir.join("plain.db")).unwrap();
    let _: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.pragma_update(None, "secure_delete", "ON").unwrap();
    c.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)").unwrap();
    c
}

fn plain_insert(c: &mut Connection, next: &mut i64, events: &[Event]) {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    {
        let mut stmt = tx.prepare_cached("INSERT INTO events (id, payload) VALUES (?1, ?2)").unwrap();
        for e in events {
            stmt.execute(params![*next, serde_json::to_vec(e).unwrap()]).unwrap();
            *next += 1;
        }
    }
    tx.commit().unwrap();
}

fn single(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = hearth(dir.path());
    let mut conn = plain(dir.path());
    let mut g = c.benchmark_group("record_single");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("sealed", |b| {
        b.iter(|| {
            i += 1;
            h.record(event(i)).unwrap()
        })
    });
    let (mut next, mut j) = (1i64, 0u64);
    g.bench_function("plain", |b| {
        b.iter(|| {
            j += 1;
            plain_insert(&mut conn, &mut next, &[event(j)])
        })
    });
    g.finish();
}

fn batched(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = hearth(dir.path());
    let mut conn = plain(dir.path());
    let mut g = c.benchmark_group("record_batch_1000");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0u64;
    let mut make = move || {
        i += BATCH as u64;
        (i..i + BATCH as u64).map(event).collect::<Vec<_>>()
    };
    g.bench_function("sealed", |b| {
        b.iter_batched(&mut make, |evs| h.record_batch(evs).unwrap(), BatchSize::SmallInput)
    });
    let mut next = 1i64;
    g.bench_function("plain", |b| {
        b.iter_batched(&mut make, |evs| plain_insert(&mut conn, &mut next, &evs), BatchSize::SmallInput)
    });
    g.finish();
}

/// The profile is written behind the events (every 30 s, on `flush` and on
/// close): the cost of writing it after 1000 events on 1000 distinct items.
fn profile_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let h = hearth(dir.path());
    let mut g = c.benchmark_group("profile_write_after_1000_items");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0u64;
    g.bench_function("flush", |b| {
        b.iter_batched(
            || {
                i += BATCH as u64;
                h.record_batch((i..i + BATCH as u64).map(event).collect()).unwrap();
            },
            |()| h.flush().unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = single, batched, profile_write
}
criterion_main!(benches);
