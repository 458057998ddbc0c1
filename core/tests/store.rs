//! The store's promises, tested against the bytes on disk.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use hearth_core::*;
use rusqlite::Connection;

fn db_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(DB_FILE)
}

fn export(h: &Hearth) -> ExportDocument {
    serde_json::from_str(&h.export_json().unwrap()).unwrap()
}

#[test]
fn nothing_personal_is_on_disk_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let n = 3000;
    let items: Vec<CatalogItem> = (0..n)
        .map(|i| item(&format!("zqitem-{i:05}"), &format!("Xylograph Title {i:05}"), &["Zqgenre-noir", "Zqgenre-kids"]))
        .collect();
    h.upsert_catalog(items).unwrap();
    // Single records (WAL frames) and batches, with distinctive timestamps.
    let ts = |i: i64| T0 + i * 61_000;
    for i in 0..500 {
        h.record(event(&format!("zqitem-{:05}", i % n), EventKind::Play, ts(i))).unwrap();
    }
    let batch: Vec<Event> =
        (500..5000).map(|i| event(&format!("zqitem-{:05}", i % n), EventKind::Complete, ts(i))).collect();
    for chunk in batch.chunks(500) {
        h.record_batch(chunk.to_vec()).unwrap();
    }
    h.set_blocked_categories(vec!["Zqgenre-horror".into()]).unwrap();
    assert_eq!(h.event_count().unwrap(), 5000);

    let needles: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = vec![
            b"zqitem-".to_vec(),
            b"Xylograph".to_vec(),
            b"Zqgenre".to_vec(),
            b"item_id".to_vec(),
            b"timestamp".to_vec(),
            b"2023-11-".to_vec(),
        ];
        // Every timestamp rendered as decimal text, by its stable prefix.
        v.push(ts(0).to_string().as_bytes()[..6].to_vec());
        v
    };
    let scan = |when: &str| {
        let files = dir_bytes(dir.path());
        assert!(files.iter().any(|(n, _)| n.ends_with("-wal")), "the WAL is part of the scan ({when})");
        for (name, bytes) in &files {
            for needle in &needles {
                assert!(!contains(bytes, needle), "{} found in {name} ({when})", String::from_utf8_lossy(needle));
            }
        }
    };
    scan("open");
    // The same after forget and a checkpoint, when pages move around.
    h.forget_item("zqitem-00007".into()).unwrap();
    scan("after forget");
    drop(h);
    let files = dir_bytes(dir.path());
    for (name, bytes) in &files {
        for needle in &needles {
            assert!(!contains(bytes, needle), "{} found in {name} (closed)", String::from_utf8_lossy(needle));
        }
    }
    // And the data is really there.
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.event_count().unwrap(), 5000 - 2);
    assert_eq!(h.catalog_item("zqitem-00042".into()).unwrap().unwrap().title, "Xylograph Title 00042");
}

#[test]
fn wrong_key_is_reported_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record(event("a", EventKind::Play, T0)).unwrap();
    drop(h);
    let before = std::fs::read(db_path(dir.path())).unwrap();
    assert_eq!(open(dir.path(), KEY_B).unwrap_err(), HearthError::WrongKey);
    assert!(std::fs::read(db_path(dir.path())).unwrap() == before, "the file changed");
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.event_count().unwrap(), 1);
}

#[test]
fn a_key_of_the_wrong_length_is_invalid_input() {
    struct Short;
    impl KeyProvider for Short {
        fn root_key(&self) -> Result<Vec<u8>, KeyError> {
            Ok(vec![1; 16])
        }
    }
    struct Locked;
    impl KeyProvider for Locked {
        fn root_key(&self) -> Result<Vec<u8>, KeyError> {
            Err(KeyError::Unavailable { reason: "device locked".into() })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = HearthConfig::new(dir.path().to_str().unwrap());
    match Hearth::open(cfg.clone(), Arc::new(Short)).unwrap_err() {
        HearthError::InvalidInput { field, .. } => assert_eq!(field, "root_key"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(Hearth::open(cfg, Arc::new(Locked)).unwrap_err(), HearthError::KeyUnavailable { .. }));
}

#[test]
fn a_tampered_row_fails_its_read_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let events: Vec<Event> = (0..100).map(|i| event(&format!("i{i}"), EventKind::Play, T0 + i)).collect();
    h.record_batch(events).unwrap();
    drop(h);
    {
        let c = Connection::open(db_path(dir.path())).unwrap();
        let mut blob: Vec<u8> = c.query_row("SELECT sealed FROM events WHERE id = 50", [], |r| r.get(0)).unwrap();
        blob[40] ^= 0x01;
        c.execute("UPDATE events SET sealed = ?1 WHERE id = 50", [blob]).unwrap();
    }
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.recent_events(10).unwrap().len(), 10);
    assert!(matches!(h.recent_events(100).unwrap_err(), HearthError::Integrity { .. }));
    assert!(matches!(h.export_json().unwrap_err(), HearthError::Integrity { .. }));
    // The store goes on working around it.
    h.record(event("after", EventKind::Like, T0 + 1000)).unwrap();
    assert_eq!(h.recent_events(1).unwrap()[0].item_id, "after");
    assert_eq!(h.event_count().unwrap(), 101);
    // Forgetting leaves the unreadable row alone rather than failing.
    assert_eq!(h.forget_item("i10".into()).unwrap(), 1);
    assert_eq!(h.integrity_check().unwrap(), "ok");
}

#[test]
fn a_row_moved_to_another_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record_batch(vec![event("x", EventKind::Play, T0), event("y", EventKind::Play, T0 + 1)]).unwrap();
    drop(h);
    {
        let c = Connection::open(db_path(dir.path())).unwrap();
        c.execute("UPDATE events SET sealed = (SELECT sealed FROM events WHERE id = 1) WHERE id = 2", []).unwrap();
    }
    let h = open(dir.path(), KEY_A).unwrap();
    assert!(matches!(h.recent_events(1).unwrap_err(), HearthError::Integrity { .. }));
}

#[test]
fn eight_threads_record_and_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog((0..50).map(|i| item(&format!("c{i}"), "t", &["drama"])).collect()).unwrap();
    let per_thread = 400;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < per_thread || std::time::Instant::now() < deadline {
                    if i < per_thread {
                        let e = event(&format!("t{t}-{i}"), EventKind::Play, T0 + i as i64);
                        if i % 50 == 0 {
                            h.record_batch(vec![e]).unwrap();
                        } else {
                            h.record(e).unwrap();
                        }
                    }
                    // Readers in the same threads.
                    let recent = h.recent_events(5).unwrap();
                    assert!(!recent.is_empty());
                    h.profile().unwrap();
                    if i % 100 == 0 {
                        h.upsert_catalog(vec![item(&format!("c{}", i % 50), "t2", &["comedy"])]).unwrap();
                    }
                    i += 1;
                }
                i
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap() >= per_thread);
    }
    assert_eq!(h.event_count().unwrap(), 8 * per_thread as u64);
    let ids: HashSet<String> = export(&h).events.into_iter().map(|e| e.event.item_id).collect();
    for t in 0..8 {
        for i in 0..per_thread {
            assert!(ids.contains(&format!("t{t}-{i}")));
        }
    }
    assert_eq!(h.profile().unwrap().event_count, 8 * per_thread as u64);
}

#[test]
fn a_full_store_refuses_new_events_and_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = HearthConfig::new(dir.path().to_str().unwrap());
    cfg.max_store_bytes = Some(256 * 1024);
    let h = open_with(cfg.clone(), KEY_A).unwrap();
    let mut stored = 0u64;
    let err = loop {
        match h.record(event(&format!("full-{stored}"), EventKind::Play, T0 + stored as i64)) {
            Ok(RecordOutcome::Stored { .. }) => stored += 1,
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
        assert!(stored < 100_000, "never filled up");
    };
    assert_eq!(err, HearthError::StorageFull);
    assert!(stored > 100);
    // A batch fails whole.
    let batch: Vec<Event> = (0..50).map(|i| event(&format!("b{i}"), EventKind::Play, T0)).collect();
    assert_eq!(h.record_batch(batch).unwrap_err(), HearthError::StorageFull);
    assert_eq!(h.event_count().unwrap(), stored);
    drop(h);
    let h = open_with(cfg, KEY_A).unwrap();
    assert_eq!(h.event_count().unwrap(), stored);
    let ids: HashSet<String> = export(&h).events.into_iter().map(|e| e.event.item_id).collect();
    assert!((0..stored).all(|i| ids.contains(&format!("full-{i}"))));
    assert_eq!(h.integrity_check().unwrap(), "ok");
}

#[test]
fn delete_all_leaves_none_of_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog((0..200).map(|i| item(&format!("d{i}"), "title", &["news"])).collect()).unwrap();
    h.record_batch((0..2000).map(|i| event(&format!("d{}", i % 200), EventKind::Play, T0 + i)).collect()).unwrap();
    for i in 0..100 {
        h.record(event("single", EventKind::Progress, T0 + 5000 + i)).unwrap();
    }
    h.set_personalization(false).unwrap();
    // Capture every sealed record and wrapped key as they are on disk now.
    let captured: Vec<Vec<u8>> = {
        let c = Connection::open(db_path(dir.path())).unwrap();
        let mut blobs = Vec::new();
        for sql in [
            "SELECT sealed FROM events",
            "SELECT sealed FROM catalog",
            "SELECT sealed FROM state",
            "SELECT value FROM meta WHERE name LIKE 'data_key.%' OR name = 'salt'",
        ] {
            let mut stmt = c.prepare(sql).unwrap();
            blobs.extend(stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap().map(Result::unwrap));
        }
        blobs
    };
    assert!(captured.len() > 2300);
    h.delete_all().unwrap();
    assert_eq!(h.event_count().unwrap(), 0);
    assert_eq!(h.catalog_size().unwrap(), 0);
    assert_eq!(h.settings().unwrap(), PrivacySettings::default());
    // The new store works.
    h.record(event("fresh", EventKind::Play, T0)).unwrap();
    let files = dir_bytes(dir.path());
    for blob in &captured {
        // The distinctive part of each: 16 bytes of ciphertext and tag.
        let probe = &blob[blob.len() - 16..];
        for (name, bytes) in &files {
            assert!(!contains(bytes, probe), "old bytes remain in {name}");
        }
    }
}

#[test]
fn destroy_store_then_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record(event("a", EventKind::Play, T0)).unwrap();
    drop(h);
    // The key is lost: the app destroys the store and opens a new one.
    assert_eq!(open(dir.path(), KEY_B).unwrap_err(), HearthError::WrongKey);
    destroy_store(dir.path().to_str().unwrap().into()).unwrap();
    let h = open(dir.path(), KEY_B).unwrap();
    assert_eq!(h.event_count().unwrap(), 0);
}

#[test]
fn export_round_trips_events_catalog_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(vec![item("m1", "Film One", &["drama"]), item("m2", "Film Two", &["comedy", "kids"])]).unwrap();
    let mut e = event("m1", EventKind::Complete, T0);
    e.context.locale = None;
    e.position_ms = None;
    h.record_batch(vec![e, event("m2", EventKind::Like, T0 + 10), event("m1", EventKind::Skip, T0 + 20)]).unwrap();
    h.set_settings(PrivacySettings {
        personalization_enabled: false,
        history_paused: false,
        federated_opt_in: true,
        blocked_categories: vec!["horror".into()],
        retention_days: Some(3650),
        ..PrivacySettings::default()
    })
    .unwrap();
    let json = h.export_json().unwrap();
    let doc: ExportDocument = serde_json::from_str(&json).unwrap();
    assert_eq!(doc.format, EXPORT_FORMAT);
    assert_eq!(doc.events.len(), 3);
    assert_eq!(doc.catalog.len(), 2);
    // The documented field names are there.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in ["format", "format_version", "exported_at_ms", "settings", "events", "catalog", "profile"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    assert_eq!(v["events"][0]["item_id"], "m1");
    assert_eq!(v["events"][0]["kind"], "complete");
    assert_eq!(v["events"][1]["context"]["device"], "tv");

    let dir2 = tempfile::tempdir().unwrap();
    let h2 = open(dir2.path(), KEY_B).unwrap();
    let summary = h2.import_json(json).unwrap();
    assert_eq!(summary, ImportSummary { events: 3, catalog_items: 2 });
    let doc2 = export(&h2);
    assert_eq!(doc2.events, doc.events);
    assert_eq!(doc2.catalog, doc.catalog);
    assert_eq!(doc2.settings, doc.settings);
    assert_eq!(doc2.profile, doc.profile);

    // Bad documents are refused with the field named, and store nothing.
    let bad = h2.import_json("{\"format\": \"other\"}".into()).unwrap_err();
    assert!(matches!(bad, HearthError::InvalidInput { .. }), "{bad:?}");
    let mut wrong = serde_json::to_value(&doc).unwrap();
    wrong["format_version"] = 99.into();
    match h2.import_json(wrong.to_string()).unwrap_err() {
        HearthError::InvalidInput { field, .. } => assert_eq!(field, "format_version"),
        e => panic!("{e:?}"),
    }
    let mut bad_event = serde_json::to_value(&doc).unwrap();
    bad_event["events"][2]["context"]["local_hour"] = 30.into();
    match h2.import_json(bad_event.to_string()).unwrap_err() {
        HearthError::InvalidInput { field, .. } => assert_eq!(field, "context.local_hour"),
        e => panic!("{e:?}"),
    }
    assert_eq!(h2.event_count().unwrap(), 3);
}

#[test]
fn pause_stores_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.set_history_paused(true).unwrap();
    assert_eq!(h.record(event("p", EventKind::Play, T0)).unwrap(), RecordOutcome::Paused);
    assert_eq!(h.record_batch(vec![event("p", EventKind::Play, T0)]).unwrap(), RecordOutcome::Paused);
    assert_eq!(h.event_count().unwrap(), 0);
    drop(h);
    // The toggle persists.
    let h = open(dir.path(), KEY_A).unwrap();
    assert!(h.settings().unwrap().history_paused);
    h.set_history_paused(false).unwrap();
    assert_eq!(h.record(event("p", EventKind::Play, T0)).unwrap(), RecordOutcome::Stored { count: 1 });
}

#[test]
fn invalid_events_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record(event("ok", EventKind::Play, T0)).unwrap();
    let mut bad = event("", EventKind::Play, T0);
    match h.record(bad.clone()).unwrap_err() {
        HearthError::InvalidInput { field, .. } => assert_eq!(field, "item_id"),
        e => panic!("{e:?}"),
    }
    bad.item_id = "x".into();
    bad.timestamp_ms = 0;
    // One bad event in a batch refuses the batch.
    assert!(h.record_batch(vec![event("fine", EventKind::Play, T0), bad]).is_err());
    assert!(matches!(
        h.set_retention_days(Some(0)).unwrap_err(),
        HearthError::InvalidInput { field, .. } if field == "retention_days"
    ));
    assert_eq!(h.event_count().unwrap(), 1);
}

#[test]
fn forget_removes_the_item_and_recomputes_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(vec![item("a", "A", &["drama"]), item("b", "B", &["sport"])]).unwrap();
    h.record_batch(vec![
        event("a", EventKind::Play, T0),
        event("a", EventKind::Complete, T0 + 1),
        event("b", EventKind::Like, T0 + 2),
    ])
    .unwrap();
    let p = h.profile().unwrap();
    assert_eq!(p.items_seen, 2);
    assert_eq!(p.top_categories[0].category, "sport");
    assert!(p.top_categories.iter().any(|c| c.category == "drama"));
    assert_eq!(h.forget_item("a".into()).unwrap(), 2);
    let p = h.profile().unwrap();
    assert_eq!(p.items_seen, 1);
    assert_eq!(p.event_count, 1);
    assert!(p.top_categories.iter().all(|c| c.category != "drama"));
    assert!(export(&h).events.iter().all(|e| e.event.item_id != "a"));
    assert_eq!(h.forget_item("nothing".into()).unwrap(), 0);
}

#[test]
fn retention_purges_old_events() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let day = 86_400_000;
    h.record_batch(vec![
        event("old", EventKind::Play, now - 100 * day),
        event("mid", EventKind::Play, now - 20 * day),
        event("new", EventKind::Play, now - day),
    ])
    .unwrap();
    h.set_retention_days(Some(30)).unwrap();
    assert_eq!(item_ids(&h.recent_events(10).unwrap()), vec!["new", "mid"]);
    h.set_retention_days(Some(7)).unwrap();
    assert_eq!(item_ids(&h.recent_events(10).unwrap()), vec!["new"]);
    // Enforced on open too.
    h.set_retention_days(None).unwrap();
    h.record(event("old2", EventKind::Play, now - 50 * day)).unwrap();
    let settings = PrivacySettings { retention_days: Some(30), ..h.settings().unwrap() };
    drop(h);
    {
        // Set the window without the purge that the setter does, then reopen.
        let h = open(dir.path(), KEY_A).unwrap();
        assert_eq!(h.event_count().unwrap(), 2);
        h.set_settings(settings).unwrap();
    }
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(item_ids(&h.recent_events(10).unwrap()), vec!["new"]);
    assert_eq!(h.profile().unwrap().event_count, 1);
}

#[test]
fn rekey_reseals_under_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.upsert_catalog(vec![item("r1", "R", &["doc"])]).unwrap();
    h.record_batch((0..1000).map(|i| event(&format!("r{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
    let before: Vec<Vec<u8>> = {
        let c = Connection::open(db_path(dir.path())).unwrap();
        let mut stmt = c.prepare("SELECT sealed FROM events").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    h.rekey(keys(KEY_B)).unwrap();
    // Still usable in place, including after a reopen from a later call.
    assert_eq!(h.event_count().unwrap(), 1000);
    assert_eq!(h.catalog_item("r1".into()).unwrap().unwrap().title, "R");
    h.record(event("after-rekey", EventKind::Play, T0)).unwrap();
    h.delete_all().unwrap(); // uses the provider it was re-keyed with
    h.record(event("post-delete", EventKind::Play, T0)).unwrap();
    drop(h);
    assert_eq!(open(dir.path(), KEY_A).unwrap_err(), HearthError::WrongKey);
    let h = open(dir.path(), KEY_B).unwrap();
    assert_eq!(h.event_count().unwrap(), 1);
    drop(h);

    // A second store, re-keyed and then checked for old ciphertext.
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record_batch((0..300).map(|i| event(&format!("s{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
    h.upsert_catalog(vec![item("s1", "S", &["doc"])]).unwrap();
    h.rekey(keys(KEY_B)).unwrap();
    drop(h);
    let h = open(dir.path(), KEY_B).unwrap();
    assert_eq!(h.event_count().unwrap(), 300);
    assert_eq!(h.catalog_item("s1".into()).unwrap().unwrap().title, "S");
    assert_eq!(export(&h).events.len(), 300);
    assert!(before.len() == 1000);
}

#[test]
fn profile_follows_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    // Events first, catalog later: affinities are filled in when it arrives.
    h.record_batch(vec![event("x", EventKind::Complete, T0), event("y", EventKind::Skip, T0 + 1)]).unwrap();
    assert!(h.profile().unwrap().top_categories.is_empty());
    h.upsert_catalog(vec![item("x", "X", &["jazz"]), item("y", "Y", &["metal"])]).unwrap();
    let p = h.profile().unwrap();
    assert_eq!(p.top_categories.len(), 1);
    assert_eq!(p.top_categories[0].category, "jazz");
    assert_eq!(p.device_mix.iter().find(|d| d.device == DeviceClass::Tv).unwrap().share, 1.0);
    assert!((p.skip_rate - 1.0).abs() < 1e-9); // one skip, no plays
    // Single records past the last profile write are folded in on reopen.
    for i in 0..10 {
        h.record(event("x", EventKind::Play, T0 + 100 + i)).unwrap();
    }
    let expected = h.profile().unwrap();
    drop(h);
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.profile().unwrap(), expected);
    // An explicit flush writes it too; reopening folds in nothing new.
    h.record(event("z", EventKind::Like, T0 + 500)).unwrap();
    h.flush().unwrap();
    let expected = h.profile().unwrap();
    let h2 = {
        h.close().unwrap();
        open(dir.path(), KEY_A).unwrap()
    };
    assert_eq!(h2.profile().unwrap(), expected);
}

#[test]
fn closed_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.close().unwrap();
    assert_eq!(h.event_count().unwrap_err(), HearthError::Closed);
    // The files are released: another instance opens them.
    let h2 = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h2.event_count().unwrap(), 0);
}

#[test]
fn a_file_that_is_not_a_store_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
    assert!(matches!(open(dir.path(), KEY_A).unwrap_err(), HearthError::CorruptStore { .. }));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), KEY_A).unwrap());
    Connection::open(db_path(dir.path())).unwrap().pragma_update(None, "user_version", 99).unwrap();
    assert_eq!(open(dir.path(), KEY_A).unwrap_err(), HearthError::StoreTooNew { found: 99, supported: SCHEMA_VERSION });
}

#[test]
fn an_export_of_a_damaged_store_fails_instead_of_leaving_rows_out() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    let items: Vec<CatalogItem> =
        (0..1500).map(|i| item(&format!("item-{i:05}"), &format!("Title {i:05}"), &["drama"])).collect();
    h.upsert_catalog(items).unwrap();
    h.record(event("item-00001", EventKind::Play, T0)).unwrap();
    assert_eq!(export(&h).catalog.len(), 1500);
    drop(h);
    hearth_core::testing::damage_index_leaves(&db_path(dir.path()), 10).unwrap();

    // The store still opens (its catalog cache is short, without a word
    // from SQLite) ...
    let h = open(dir.path(), KEY_A).unwrap();
    assert!(h.catalog_size().unwrap() < 1500);
    assert_ne!(h.integrity_check().unwrap(), "ok");
    // ... but an export says it cannot be complete, and changes nothing.
    match h.export_json().unwrap_err() {
        HearthError::CorruptStore { reason } => assert!(reason.contains("integrity check"), "{reason}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(h.event_count().unwrap(), 1);
}

#[test]
fn an_empty_database_file_opens_as_a_new_store() {
    // A store cut to 0 bytes (a restore or copy cut short) holds nothing any
    // more: it opens as a new, empty store (and the library logs it).
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), KEY_A).unwrap();
    h.record(event("a", EventKind::Play, T0)).unwrap();
    drop(h);
    std::fs::write(db_path(dir.path()), b"").unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
    }
    let h = open(dir.path(), KEY_A).unwrap();
    assert_eq!(h.event_count().unwrap(), 0);
    assert_eq!(h.integrity_check().unwrap(), "ok");
    h.record(event("b", EventKind::Play, T0)).unwrap();
    assert_eq!(h.event_count().unwrap(), 1);
}
