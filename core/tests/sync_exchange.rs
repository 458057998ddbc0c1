//! Sync between one person's devices through a backend that keeps every
//! byte it is given: what converges, what the backend can read (nothing),
//! and what is refused.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::sync_backend::{MemoryBackend, pair, sync};
use common::*;
use hearth_core::sync::records::{BLOB_SIZES, RecordError};
use hearth_core::*;

struct Devices {
    _dirs: Vec<tempfile::TempDir>,
    all: Vec<Arc<Hearth>>,
}

/// `n` stores of one person, the first holding the group and the others
/// paired into it.
fn person(n: usize) -> Devices {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let all: Vec<_> = dirs.iter().enumerate().map(|(i, d)| open(d.path(), [i as u8 + 1; 32]).unwrap()).collect();
    all[0].create_sync_group().unwrap();
    for other in &all[1..] {
        pair(&all[0], other);
    }
    Devices { _dirs: dirs, all }
}

/// The history as a set: what the person did, wherever it was recorded.
fn history(h: &Hearth) -> BTreeSet<String> {
    h.recent_events(u32::MAX)
        .unwrap()
        .iter()
        .map(|e| format!("{}/{:?}/{}", e.item_id, e.kind, e.timestamp_ms))
        .collect()
}

#[test]
fn the_tv_gets_the_phones_history_settings_and_tombstones() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    phone.record_batch((0..50).map(|i| event(&format!("film-{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
    phone.set_blocked_categories(vec!["horror".into()]).unwrap();
    tv.record(event("match-1", EventKind::Complete, T0 + 100)).unwrap();
    let sent = sync(phone, &backend);
    assert_eq!(sent.events_sent, 50);
    let got = sync(tv, &backend);
    assert_eq!(got.events_received, 50);
    assert_eq!(got.events_sent, 1);
    sync(phone, &backend);
    assert_eq!(history(phone), history(tv));
    assert_eq!(phone.event_count().unwrap(), 51);
    assert_eq!(tv.settings().unwrap().blocked_categories, vec!["horror".to_string()]);
    let status = tv.sync_status().unwrap();
    assert_eq!(status.group, tv.sync_group().unwrap());
    assert_eq!((status.key_epoch, status.devices, status.records_waiting), (1, 2, 0));
    assert!(status.last_sync_complete && status.last_sync_ms.is_some());
    // A second sync with nothing new moves nothing.
    let idle = sync(tv, &backend);
    assert_eq!((idle.records_sent, idle.records_applied), (0, 0));
    // Forgotten on the TV, gone on the phone; the phone's own events of it
    // too, and an event the TV imports later from an offline copy is not
    // brought back.
    assert_eq!(tv.forget_item("film-3".into()).unwrap(), 1);
    sync(tv, &backend);
    let applied = sync(phone, &backend);
    assert_eq!(applied.events_removed, 1);
    assert!(!history(phone).iter().any(|e| e.starts_with("film-3/")));
    assert_eq!(history(phone), history(tv));
}

#[test]
fn the_backend_holds_only_sealed_blobs_of_the_bucket_sizes() {
    let d = person(2);
    let backend = Arc::new(MemoryBackend::default());
    let phone = &d.all[0];
    phone.upsert_catalog(vec![item("tt0111161", "The Shawshank Redemption", &["Drama"])]).unwrap();
    let mut events: Vec<Event> =
        (0..400).map(|i| event(&format!("tt{:07}", 1_000 + i), EventKind::Complete, T0 + i * 7_919)).collect();
    events.push(event("tt0111161", EventKind::Like, T0 + 5));
    phone.record_batch(events.clone()).unwrap();
    phone.set_blocked_categories(vec!["Documentary".into()]).unwrap();
    phone.set_retention_days(Some(3000)).unwrap();
    phone.forget_item("tt0001000".into()).unwrap();
    sync(phone, &backend);
    sync(&d.all[1], &backend);
    let held = backend.snapshot();
    assert!(!held.is_empty());
    let mut needles: Vec<Vec<u8>> = vec![
        b"tt0111161".to_vec(),
        b"Shawshank".to_vec(),
        b"Drama".to_vec(),
        b"Documentary".to_vec(),
        b"blocked_categories".to_vec(),
        b"retention".to_vec(),
        b"tt0001000".to_vec(),
        b"en-GB".to_vec(),
        b"item_id".to_vec(),
    ];
    for e in &events {
        needles.push(e.item_id.as_bytes().to_vec());
        needles.push(e.timestamp_ms.to_string().into_bytes());
        needles.push(e.timestamp_ms.to_le_bytes().to_vec());
        needles.push(e.timestamp_ms.to_be_bytes().to_vec());
    }
    for (name, blob) in &held {
        assert!(BLOB_SIZES.contains(&blob.len()), "{name}: {} bytes", blob.len());
        for needle in &needles {
            assert!(!contains(blob, needle), "{name} holds {:?}", String::from_utf8_lossy(needle));
            assert!(!contains(name.as_bytes(), needle));
        }
    }
}

#[test]
fn a_tampered_replayed_truncated_or_foreign_blob_changes_nothing() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    phone.record_batch((0..20).map(|i| event(&format!("a-{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
    sync(phone, &backend);
    let (name, good) = backend.snapshot().into_iter().next().unwrap();
    let before = tv.export_json().unwrap();
    let before_settings = tv.settings().unwrap();
    let without_time = |doc: &str| {
        let mut v: serde_json::Value = serde_json::from_str(doc).unwrap();
        v.as_object_mut().unwrap().remove("exported_at_ms");
        v
    };

    // Another person's group writes under the same name.
    let other = person(1);
    let foreign = Arc::new(MemoryBackend::default());
    other.all[0].record(event("theirs", EventKind::Play, T0)).unwrap();
    sync(&other.all[0], &foreign);
    let (_, theirs) = foreign.snapshot().into_iter().next().unwrap();

    let mut flipped = good.clone();
    flipped[40] ^= 0x80;
    let mut cases = vec![
        ("tampered", flipped, RecordError::Unsealed),
        ("truncated", good[..good.len() - 1].to_vec(), RecordError::Malformed("not one of the padded sizes")),
        ("foreign", theirs, RecordError::Unsealed),
    ];
    for (what, bytes, want) in cases.drain(..) {
        backend.blobs.lock().unwrap().insert(name.clone(), bytes);
        let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
        assert_eq!(report.records_applied, 0, "{what}");
        assert_eq!(report.refused, vec![RefusedRecord::new(name.clone(), &want)], "{what}");
        assert_eq!(without_time(&tv.export_json().unwrap()), without_time(&before), "{what}: something changed");
        assert_eq!(tv.settings().unwrap(), before_settings);
    }
    // Moved: the phone's first record under its second name.
    backend.blobs.lock().unwrap().insert(name.clone(), good.clone());
    let second = name.replace("-0000000001", "-0000000002");
    backend.blobs.lock().unwrap().insert(second.clone(), good.clone());
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(report.records_applied, 1);
    assert_eq!(report.refused, vec![RefusedRecord::new(second.clone(), &RecordError::Unsealed)]);
    assert_eq!(tv.event_count().unwrap(), 20);
    // Replayed: the same record again applies nothing more.
    backend.blobs.lock().unwrap().remove(&second);
    let report = sync(tv, &backend);
    assert_eq!(report.records_applied, 0);
    assert_eq!(tv.event_count().unwrap(), 20);
    // And the other person's device, pointed at this backend, reads nothing.
    let report = other.all[0].sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(report.records_applied, 0);
    assert!(report.refused.iter().all(|r| r.kind == RefusalKind::DoesNotOpen), "{report:?}");
    assert_eq!(other.all[0].event_count().unwrap(), 1);
}

#[test]
fn a_sync_cut_off_at_any_call_loses_nothing_and_duplicates_nothing() {
    let lone_dir = tempfile::tempdir().unwrap();
    assert_eq!(open(lone_dir.path(), KEY_A).unwrap().sync_status().unwrap(), SyncStatus::default());
    for cut in 0..12 {
        let d = person(2);
        let (phone, tv) = (&d.all[0], &d.all[1]);
        let backend = Arc::new(MemoryBackend::default());
        phone.record_batch((0..30).map(|i| event(&format!("p-{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
        tv.record_batch((0..30).map(|i| event(&format!("t-{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
        sync(phone, &backend);
        backend.fail_after(Some(cut));
        let cut_short = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
        backend.fail_after(None);
        if !cut_short.complete {
            assert!(cut_short.transport_error.is_some());
            assert!(!tv.sync_status().unwrap().last_sync_complete);
        }
        let rest = sync(tv, &backend);
        // Every one of the TV's events is reported sent once, by the sync
        // whose put the backend took.
        assert_eq!(cut_short.events_sent + rest.events_sent, 30, "cut after {cut} calls");
        sync(phone, &backend);
        assert_eq!(tv.event_count().unwrap(), 60, "cut after {cut} calls");
        assert_eq!(phone.event_count().unwrap(), 60, "cut after {cut} calls");
        assert_eq!(history(phone), history(tv));
    }
}

#[test]
fn the_persons_budget_counts_every_devices_ledger() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    // A ledger entry on the phone (brought in as an import would).
    let scratch = tempfile::tempdir().unwrap();
    let donor = open(scratch.path(), KEY_A).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&donor.export_json().unwrap()).unwrap();
    doc["privacy_ledger"] = serde_json::json!([{
        "run_id": 7, "round": 1, "at_ms": T0, "status": "Sent", "bytes_sent": 1000,
        "norm_before_clip": 1.0, "norm_after_clip": 1.0, "clip_norm": 1.0,
        "noise_multiplier": 1.0, "sampling_rate": 0.01, "epsilon_total": 0.5
    }]);
    phone.import_json(doc.to_string()).unwrap();
    let on_phone = phone.privacy_ledger().unwrap().epsilon_spent;
    assert!(on_phone > 0.0 && on_phone.is_finite());
    assert_eq!(tv.privacy_ledger().unwrap().epsilon_spent, 0.0);
    sync(phone, &backend);
    sync(tv, &backend);
    let ledger = tv.privacy_ledger().unwrap();
    assert!(ledger.entries.is_empty(), "the TV's own ledger stays its own");
    assert_eq!(ledger.epsilon_spent, on_phone);
}

/// A device of the group writes only for itself: a record under its name
/// that stamps a setting as another device's, or announces other keys for
/// a device already known, is refused whole, though its writer signed it;
/// and a record under a device's name that it did not sign (another device
/// of the group, holding the group's key, wrote it) is refused too.
#[test]
fn a_record_cannot_speak_for_another_device() {
    use hearth_core::sync::records::{RecordKey, RecordName};
    use hearth_core::testing::{sync_group_key, sync_own_chain, sync_signed_body};
    let d = person(3);
    let (phone, tv, tablet) = (&d.all[0], &d.all[1], &d.all[2]);
    let backend = Arc::new(MemoryBackend::default());
    sync(phone, &backend);
    sync(tv, &backend);
    sync(tablet, &backend);
    sync(tv, &backend);
    let key = sync_group_key(phone).unwrap();
    let phone_id = phone.sync_group().unwrap().unwrap().device_id;
    let device: [u8; 8] = std::array::from_fn(|i| u8::from_str_radix(&phone_id[2 * i..2 * i + 2], 16).unwrap());
    let next = RecordName { device, seq: 2 };
    let phone_chain = sync_own_chain(phone).unwrap();
    let hex64 = "ab".repeat(32);
    let opt_in = r#"{"changes":[{"kind":"setting","field":"federated_opt_in","value":true,"at":{"ms":9000000000000,"n":0,"device":"PHONE"}}]}"#;
    let refuse = |plain: Vec<u8>, kind: RefusalKind, what: &str| {
        let blob = RecordKey::new(&key, 1).seal(&next, &plain, [4; 12]).unwrap();
        backend.blobs.lock().unwrap().insert(next.encode(), blob);
        let before = tv.settings().unwrap();
        let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
        assert_eq!(report.records_applied, 0, "{what}");
        assert_eq!(report.refused.iter().map(|r| r.kind).collect::<Vec<_>>(), vec![kind], "{what}: {report:?}");
        assert_eq!(tv.settings().unwrap(), before, "{what}");
    };
    for body in [
        opt_in.replace("PHONE", "ffffffffffffffff"),
        format!(r#"{{"changes":[{{"kind":"member","agreement":"{hex64}","signing":"{hex64}","joined_ms":1}}]}}"#),
        r#"{"changes":[{"kind":"ledger","entry":{"run_id":1,"round":1,"at_ms":1,"status":"Sent","bytes_sent":1,"norm_before_clip":1.0,"norm_after_clip":1.0,"clip_norm":1.0,"noise_multiplier":1.0,"sampling_rate":0.01,"epsilon_total":-5.0}}]}"#.to_string(),
    ] {
        let signed = sync_signed_body(phone, 1, &next.encode(), &phone_chain, body.as_bytes()).unwrap();
        refuse(signed, RefusalKind::NotValid, &body);
    }
    // The phone's own setting, stamped as the phone's, but signed by the
    // tablet (which holds the group key): refused; unsigned, refused.
    let as_phone = opt_in.replace("PHONE", &phone_id);
    let by_tablet = sync_signed_body(tablet, 1, &next.encode(), &phone_chain, as_phone.as_bytes()).unwrap();
    refuse(by_tablet, RefusalKind::NotSignedByWriter, "signed by the tablet");
    let mut unsigned = vec![0u8; 64];
    unsigned.extend_from_slice(as_phone.as_bytes());
    refuse(unsigned, RefusalKind::NotSignedByWriter, "not signed");
    refuse(as_phone.as_bytes().to_vec(), RefusalKind::NotValid, "no signature at all");
    // Signed by the phone, it is the phone's own change: applied.
    backend.blobs.lock().unwrap().remove(&next.encode());
    let signed = sync_signed_body(phone, 1, &next.encode(), &phone_chain, as_phone.as_bytes()).unwrap();
    let blob = RecordKey::new(&key, 1).seal(&next, &signed, [5; 12]).unwrap();
    backend.blobs.lock().unwrap().insert(next.encode(), blob);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(report.records_applied, 1, "{report:?}");
    assert!(tv.settings().unwrap().federated_opt_in);
}

#[test]
fn event_ids_are_never_given_twice_so_no_new_event_is_left_unsent() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    phone.record_batch(vec![event("a", EventKind::Play, T0), event("b", EventKind::Play, T0 + 1)]).unwrap();
    sync(phone, &backend);
    // The newest event goes, the store reopens, a new event comes.
    phone.forget_item("b".into()).unwrap();
    let tv = tv.clone();
    let Devices { _dirs: dirs, all } = d;
    drop(all);
    let phone = open(dirs[0].path(), [1; 32]).unwrap();
    phone.record(event("c", EventKind::Play, T0 + 2)).unwrap();
    sync(&phone, &backend);
    sync(&tv, &backend);
    assert_eq!(history(&tv), history(&phone));
    assert!(history(&tv).iter().any(|e| e.starts_with("c/")));
    // And an id too long to be an item's is refused before anything.
    assert!(matches!(phone.forget_item("x".repeat(300)), Err(HearthError::InvalidInput { .. })));
}

/// The backend, calling back while a sync is under way: the person changes
/// a setting and forgets an item on the syncing device meanwhile.
struct Meanwhile {
    inner: Arc<MemoryBackend>,
    device: Arc<Hearth>,
    done: std::sync::atomic::AtomicBool,
}

impl SyncTransport for Meanwhile {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        self.inner.put(name, blob)
    }
    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        self.inner.list()
    }
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.device.set_federated_opt_in(true).unwrap();
            self.device.forget_item("mine".into()).unwrap();
        }
        self.inner.get(name)
    }
    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        self.inner.delete(name)
    }
}

#[test]
fn what_the_person_changes_during_a_sync_is_not_lost() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    tv.record(event("mine", EventKind::Play, T0)).unwrap();
    sync(tv, &backend);
    phone.record(event("other", EventKind::Play, T0 + 1)).unwrap();
    sync(phone, &backend);
    assert!(history(phone).iter().any(|e| e.starts_with("mine/")));
    // The TV has seen the phone's stamps (so its change comes after them
    // by the clock, not concurrently within one millisecond); the phone
    // changes another setting, which the TV takes in during its sync.
    sync(tv, &backend);
    phone.set_notifications_enabled(false).unwrap();
    sync(phone, &backend);
    let meanwhile = Meanwhile { inner: backend.clone(), device: tv.clone(), done: false.into() };
    let report = tv.sync(Arc::new(meanwhile), SyncOptions::default()).unwrap();
    assert!(report.complete && report.records_applied == 1, "{report:?}");
    sync(tv, &backend);
    sync(phone, &backend);
    assert!(phone.settings().unwrap().federated_opt_in, "the setting changed during the sync was lost");
    assert!(!tv.settings().unwrap().notifications_enabled);
    assert!(!history(phone).iter().any(|e| e.starts_with("mine/")), "the forget made during the sync was lost");
    assert_eq!(history(phone), history(tv));
}

/// A device whose first sync carries more than one record of history
/// announces its keys in the first of them, so a device that has never
/// heard of it checks every one.
#[test]
fn a_first_sync_of_many_records_is_checked_from_its_first() {
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    phone.record_batch((0..3_000).map(hearth_core::testing::bench_event).collect()).unwrap();
    let sent = sync(phone, &backend);
    assert!(sent.records_sent >= 3, "{sent:?}");
    assert_eq!(sync(tv, &backend).events_received, 3_000);
}

/// A purge taken from another device is that device's to send: this one
/// does not send it again as its own (one device that took a purge does
/// not speak it to the group in its own name).
#[test]
fn a_purge_taken_from_another_device_is_not_sent_again_as_ones_own() {
    use hearth_core::sync::changes::{Body, Change};
    use hearth_core::sync::records::{RecordKey, RecordName};
    let d = person(2);
    let (phone, tv) = (&d.all[0], &d.all[1]);
    let backend = Arc::new(MemoryBackend::default());
    phone.record(event("old", EventKind::Play, T0)).unwrap();
    sync(phone, &backend);
    sync(tv, &backend);
    phone.set_retention_days(Some(30)).unwrap();
    phone.purge_expired().unwrap();
    sync(phone, &backend);
    assert_eq!(sync(tv, &backend).events_removed, 1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    tv.record(event("new", EventKind::Play, now - 60_000)).unwrap();
    sync(tv, &backend);
    let key = hearth_core::testing::sync_group_key(tv).unwrap();
    let tv_id = tv.sync_group().unwrap().unwrap().device_id;
    let mut read = 0;
    for (name, blob) in backend.snapshot() {
        if !name.starts_with(&tv_id) {
            continue;
        }
        let plain = RecordKey::new(&key, 1).open(&RecordName::parse(&name).unwrap(), &blob).unwrap();
        let body = Body::decode(&plain[64..]).unwrap();
        assert!(!body.changes.iter().any(|c| matches!(c, Change::Purge { .. })), "{name}: {:?}", body.changes);
        read += 1;
    }
    assert!(read >= 2);
}
