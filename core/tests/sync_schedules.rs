//! Three devices of one person, under random schedules of recording,
//! forgetting, setting changes, offline stretches, syncs cut short by the
//! backend, in random orders: after every device syncs twice more, all
//! three hold the same history (no event lost, none twice), the same
//! settings and the same epsilon spent; and a fourth device of another
//! person, syncing against the same backend throughout, reads nothing.
//!
//! `HEARTH_SYNC_SCHEDULES` sets how many schedules (1,000 by default);
//! a failure names its seed, and `HEARTH_SYNC_SEED` replays it alone.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::sync_backend::{MemoryBackend, pair};
use common::*;
use hearth_core::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITEMS: [&str; 6] = ["film-a", "film-b", "show-c", "match-d", "song-e", "news-f"];
const CATEGORIES: [&str; 4] = ["horror", "news", "sport", "kids"];

/// Every event, with how many times it is held.
fn history(h: &Hearth) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in h.recent_events(u32::MAX).unwrap() {
        *out.entry(format!("{}/{:?}/{}", e.item_id, e.kind, e.timestamp_ms)).or_default() += 1;
    }
    out
}

/// What the schedules exercised, so that a generator gone quiet fails.
#[derive(Default)]
struct Seen {
    events_held: u64,
    events_removed: u64,
    syncs_cut_short: u64,
    settings_received: u64,
}

fn run(seed: u64, seen: &mut Seen) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let devices: Vec<_> = dirs.iter().enumerate().map(|(i, d)| open(d.path(), [i as u8 + 1; 32]).unwrap()).collect();
    devices[0].create_sync_group().unwrap();
    pair(&devices[0], &devices[1]);
    pair(&devices[0], &devices[2]);
    let stranger = &devices[3];
    let theirs = stranger.create_sync_group().unwrap().device_id;
    // What the person's devices refuse: the stranger's records, nothing else.
    let only_theirs = |report: &SyncReport| {
        report.refused.iter().all(|r| r.name.starts_with(&theirs) && r.kind == RefusalKind::DoesNotOpen)
    };
    stranger.record(event("theirs", EventKind::Play, T0)).unwrap();
    let backend = Arc::new(MemoryBackend::default());
    let mut t = T0;
    let mut recorded = 0u64;
    for _ in 0..rng.random_range(5..30) {
        let d = &devices[rng.random_range(0..3)];
        match rng.random_range(0..10) {
            0..=3 => {
                let n = rng.random_range(1..4);
                let events: Vec<Event> = (0..n)
                    .map(|_| {
                        t += rng.random_range(1..5_000);
                        event(ITEMS[rng.random_range(0..ITEMS.len())], EventKind::ALL[rng.random_range(0..8)], t)
                    })
                    .collect();
                if d.record_batch(events).unwrap() != RecordOutcome::Paused {
                    recorded += n;
                }
            }
            4 => {
                d.forget_item(ITEMS[rng.random_range(0..ITEMS.len())].into()).unwrap();
            }
            5 => {
                let s = d.settings().unwrap();
                let next = match rng.random_range(0..4) {
                    0 => PrivacySettings { personalization_enabled: !s.personalization_enabled, ..s },
                    1 => PrivacySettings {
                        blocked_categories: CATEGORIES
                            .iter()
                            .filter(|_| rng.random_bool(0.5))
                            .map(|c| c.to_string())
                            .collect(),
                        ..s
                    },
                    2 => PrivacySettings { notifications_enabled: !s.notifications_enabled, ..s },
                    _ => PrivacySettings { history_paused: rng.random_bool(0.2), ..s },
                };
                d.set_settings(next).unwrap();
            }
            _ => {
                // Sometimes the backend drops out part-way.
                let cut = rng.random_bool(0.25).then(|| rng.random_range(0..6));
                backend.fail_after(cut);
                let report = d.sync(backend.clone(), SyncOptions::default()).unwrap();
                backend.fail_after(None);
                assert!(only_theirs(&report), "seed {seed}: {report:?}");
                seen.syncs_cut_short += u64::from(!report.complete);
                seen.events_removed += report.events_removed;
                if rng.random_bool(0.3) {
                    let report = stranger.sync(backend.clone(), SyncOptions::default()).unwrap();
                    assert_eq!(report.records_applied, 0, "seed {seed}: the stranger applied a record");
                }
            }
        }
    }
    for _ in 0..2 {
        for i in rand::seq::index::sample(&mut rng, 3, 3) {
            let report = devices[i].sync(backend.clone(), SyncOptions::default()).unwrap();
            assert!(report.complete && only_theirs(&report), "seed {seed}: {report:?}");
            seen.events_removed += report.events_removed;
        }
    }
    let first = history(&devices[0]);
    seen.events_held += first.len() as u64;
    seen.settings_received += u64::from(devices[0].settings().unwrap() != PrivacySettings::default());
    assert!(first.values().all(|n| *n == 1), "seed {seed}: an event held twice");
    assert!(first.len() as u64 <= recorded, "seed {seed}");
    for d in &devices[1..3] {
        assert_eq!(history(d), first, "seed {seed}: histories differ");
        assert_eq!(d.settings().unwrap(), devices[0].settings().unwrap(), "seed {seed}: settings differ");
        assert_eq!(
            d.privacy_ledger().unwrap().epsilon_spent,
            devices[0].privacy_ledger().unwrap().epsilon_spent,
            "seed {seed}"
        );
    }
    // The stranger: its own event only, and nothing of theirs in its store.
    let report = stranger.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(report.records_applied, 0);
    assert_eq!(history(stranger).keys().cloned().collect::<Vec<_>>(), vec![format!("theirs/Play/{T0}")]);
}

#[test]
fn three_devices_converge_under_random_schedules() {
    let mut seen = Seen::default();
    if let Some(seed) = std::env::var("HEARTH_SYNC_SEED").ok().and_then(|s| s.parse().ok()) {
        return run(seed, &mut seen);
    }
    let n: u64 = std::env::var("HEARTH_SYNC_SCHEDULES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000);
    for seed in 0..n {
        run(seed, &mut seen);
    }
    // The schedules did what they are for: many events converged, tombstones
    // and settings travelled, and syncs were cut short.
    assert!(seen.events_held > 5 * n, "{} events over {n} schedules", seen.events_held);
    assert!(seen.events_removed > n / 10, "{} removed", seen.events_removed);
    assert!(seen.syncs_cut_short > n / 10, "{} cut short", seen.syncs_cut_short);
    assert!(seen.settings_received > n / 4, "{} with settings changed", seen.settings_received);
    eprintln!(
        "{n} schedules: {} events converged, {} removed by tombstones, {} syncs cut short",
        seen.events_held, seen.events_removed, seen.syncs_cut_short
    );
}
