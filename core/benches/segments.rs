//! Segments and notification decisions over a 10,000-event history (56 days,
//! 2,000 items): `segments()` when the activity summary is current (every
//! call after the first: it is folded as events arrive), the first call
//! after opening (the summary is built from the sealed history), recording
//! one event with the summary current, and `should_notify` (a held
//! decision: the longest retry search).
//!
//! `cargo bench -p hearth-core --bench segments`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hearth_core::*;

const CATALOG: usize = 2000;
const HISTORY: usize = 10_000;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn open(dir: &std::path::Path) -> Arc<Hearth> {
    Hearth::open(HearthConfig::new(dir.to_str().unwrap()), Arc::new(FixedKeyProvider::new([7; 32]))).unwrap()
}

fn event(i: usize, t: i64) -> Event {
    Event {
        item_id: format!("catalog-item-{}", (i * 7919) % CATALOG),
        kind: [EventKind::Play, EventKind::Progress, EventKind::Complete, EventKind::Impression][i % 4],
        timestamp_ms: t,
        position_ms: Some(600_000),
        duration_ms: Some(2_700_000),
        context: EventContext { device: DeviceClass::Tv, local_hour: (i % 24) as u8, locale: None },
    }
}

fn fill(h: &Hearth) {
    let genres = ["drama", "comedy", "thriller", "kids", "sport", "news", "documentary", "music"];
    h.upsert_catalog(
        (0..CATALOG)
            .map(|i| CatalogItem {
                id: format!("catalog-item-{i}"),
                title: format!("Title {i}"),
                categories: vec![genres[i % 8].into()],
                language: None,
                duration_ms: Some(2_700_000),
                release_year: None,
                popularity: 1.0,
                content_rating: None,
            })
            .collect(),
    )
    .unwrap();
    // 56 days of evenings: about 180 events a day in bursts (sessions).
    let start = now() - 56 * 86_400_000;
    let events: Vec<Event> =
        (0..HISTORY).map(|i| event(i, start + (i / 180) as i64 * 86_400_000 + (i % 180) as i64 * 60_000)).collect();
    h.record_batch(events).unwrap();
    h.flush().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let h = open(dir.path());
        fill(&h);
        h.close().unwrap();
    }
    let mut group = c.benchmark_group("segments");
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("first call after open (summary built from 10k sealed events)", |b| {
        b.iter_batched(|| open(dir.path()), |h| h.segments().unwrap(), BatchSize::PerIteration)
    });

    let h = open(dir.path());
    h.segments().unwrap();
    group.bench_function("segments, summary current", |b| b.iter(|| h.segments().unwrap()));

    let mut i = HISTORY;
    group.bench_function("record one event, summary current", |b| {
        b.iter(|| {
            i += 1;
            h.record(event(i, now())).unwrap()
        })
    });

    // A cap of 0 holds every candidate: the decision reads the policy and
    // the log of sends and searches nine local days for a retry time (the
    // longest search there is), and writes nothing.
    h.set_notification_policy(NotificationPolicy {
        max_per_day: 0,
        max_per_week: 700,
        quiet_start_minute: 22 * 60,
        quiet_end_minute: 8 * 60,
    })
    .unwrap();
    let candidate = NotificationCandidate {
        kind: NotificationKind::NewEpisode,
        item_id: Some("catalog-item-3".into()),
        category: None,
        urgency: Urgency::Normal,
        time_zone: "America/New_York".into(),
        at_ms: None,
    };
    group.bench_function("should_notify (held, retry searched)", |b| {
        b.iter(|| h.should_notify(candidate.clone()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
