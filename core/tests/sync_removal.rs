//! Removing a device from the person's group: it reads nothing written
//! afterwards (tried with the key it held), the group applies nothing it
//! writes afterwards, and a device that joins later still reads the whole
//! history. Deleting everywhere deletes on every device of the group, and
//! nothing of another person's.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sync_backend::{MemoryBackend, pair, sync};
use common::*;
use hearth_core::sync::changes::{CHAIN_START, chain, sign_body};
use hearth_core::sync::records::{RecordError, RecordKey, RecordName, blob_epoch};
use hearth_core::sync::rotation::DeviceKeys;
use hearth_core::testing::sync_group_key;
use hearth_core::*;

fn history(h: &Hearth) -> BTreeSet<String> {
    h.recent_events(u32::MAX).unwrap().iter().map(|e| format!("{}/{}", e.item_id, e.timestamp_ms)).collect()
}

fn device_bytes(id: &str) -> [u8; 8] {
    std::array::from_fn(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
}

#[test]
fn a_removed_device_reads_nothing_written_afterwards() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv, new_tv] = [0, 1, 2, 3].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tablet);
    pair(&phone, &tv);
    phone.record(event("before-1", EventKind::Play, T0)).unwrap();
    tablet.record(event("tablet-1", EventKind::Play, T0 + 1)).unwrap();
    for d in [&phone, &tablet, &tv, &phone] {
        sync(d, &backend);
    }
    let tablet_id = tablet.sync_group().unwrap().unwrap().device_id;
    let devices = phone.sync_devices().unwrap();
    assert_eq!(devices.len(), 3, "{devices:?}");
    assert!(devices.iter().any(|d| d.device_id == tablet_id && !d.removed && !d.this_device));
    // What the tablet holds, as a thief of it would.
    let stolen = sync_group_key(&tablet).unwrap();
    let before: BTreeSet<String> = backend.snapshot().into_keys().collect();

    // A device not in the group, or this one, cannot be removed.
    assert!(matches!(phone.remove_sync_device(backend.clone(), "00".repeat(8)), Err(HearthError::InvalidInput { .. })));
    let own = phone.sync_group().unwrap().unwrap().device_id;
    assert!(matches!(phone.remove_sync_device(backend.clone(), own), Err(HearthError::InvalidInput { .. })));

    let report = phone.remove_sync_device(backend.clone(), tablet_id.clone()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(phone.sync_devices().unwrap().iter().any(|d| d.device_id == tablet_id && d.removed));
    phone.record(event("after-1", EventKind::Complete, T0 + 10)).unwrap();
    phone.set_blocked_categories(vec!["after".into()]).unwrap();
    sync(&phone, &backend);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.complete && report.refused.is_empty(), "{report:?}");
    tv.record(event("after-tv", EventKind::Play, T0 + 11)).unwrap();
    sync(&tv, &backend);
    sync(&phone, &backend);
    assert!(history(&tv).contains(&format!("after-1/{}", T0 + 10)));
    assert_eq!(history(&tv), history(&phone));

    // Every blob written since, opened with every key the tablet held, at
    // every epoch: nothing opens.
    let after = backend.snapshot();
    let new: Vec<_> = after.iter().filter(|(n, _)| !before.contains(*n) && !n.starts_with("keys-")).collect();
    assert!(new.len() >= 2, "{:?}", after.keys().collect::<Vec<_>>());
    for (name, blob) in &new {
        let record = RecordName::parse(name).unwrap();
        assert_eq!(blob_epoch(blob).unwrap(), 2, "{name}");
        for epoch in [1, 2] {
            assert!(RecordKey::new(&stolen, epoch).open(&record, blob).is_err(), "{name} opened with the stolen key");
        }
    }
    // The tablet itself, syncing: it learns it was removed and leaves, with
    // nothing of what was written since.
    let report = tablet.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.removed_from_group, "{report:?}");
    assert_eq!(tablet.sync_group().unwrap(), None);
    assert!(!history(&tablet).iter().any(|e| e.starts_with("after")));
    assert!(tablet.settings().unwrap().blocked_categories.is_empty());

    // A record it writes after its removal (here, forged with its old key
    // as a tablet that never synced again would) is refused by the group.
    let applied = {
        let mut n = 1;
        while after.contains_key(&RecordName { device: device_bytes(&tablet_id), seq: n + 1 }.encode()) {
            n += 1;
        }
        n
    };
    let late = RecordName { device: device_bytes(&tablet_id), seq: applied + 1 };
    let body = br#"{"changes":[]}"#;
    backend.blobs.lock().unwrap().insert(late.encode(), RecordKey::new(&stolen, 1).seal(&late, body, [9; 12]).unwrap());
    let report = phone.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(report.refused, vec![RefusedRecord::new(late.encode(), &RecordError::FromRemovedDevice)]);

    // Nor can it write in the name of a device that stays: under the TV's
    // next number, sealed with the old key it holds, a record that forgets
    // the phone's history does not carry the TV's signature.
    let tv_id = tv.sync_group().unwrap().unwrap().device_id;
    let mut tv_next = RecordName { device: device_bytes(&tv_id), seq: 1 };
    while backend.snapshot().contains_key(&tv_next.encode()) {
        tv_next.seq += 1;
    }
    let forger = DeviceKeys::generate().unwrap();
    let json = format!(r#"{{"changes":[{{"kind":"forget","item_id":"before-1","through_ms":{}}}]}}"#, T0 + 100);
    let (plain, _) = sign_body(&forger, &stolen.group_id, 1, &tv_next.encode(), &CHAIN_START, json.as_bytes());
    let forged = RecordKey::new(&stolen, 1).seal(&tv_next, &plain, [7; 12]).unwrap();
    backend.blobs.lock().unwrap().insert(tv_next.encode(), forged);
    let held = history(&phone);
    let report = phone.sync(backend.clone(), SyncOptions::default()).unwrap();
    let forged = RefusedRecord::new(tv_next.encode(), &RecordError::BadSignature);
    assert!(report.refused.contains(&forged), "{report:?}");
    assert_eq!(report.records_applied, 0, "{report:?}");
    assert_eq!(history(&phone), held);
    backend.blobs.lock().unwrap().remove(&tv_next.encode());
    // Nor as a device the group never saw, announcing keys of its own in
    // its first record and turning federated learning on for the person.
    let (agreement, signing) = forger.public();
    let ghost = RecordName { device: [0x66; 8], seq: 1 };
    let json = format!(
        r#"{{"changes":[{{"kind":"member","agreement":"{agreement}","signing":"{signing}","joined_ms":1}},{{"kind":"setting","field":"federated_opt_in","value":true,"at":{{"ms":9000000000000,"n":0,"device":"6666666666666666"}}}}]}}"#
    );
    let (plain, _) = sign_body(&forger, &stolen.group_id, 1, &ghost.encode(), &CHAIN_START, json.as_bytes());
    let forged = RecordKey::new(&stolen, 1).seal(&ghost, &plain, [6; 12]).unwrap();
    backend.blobs.lock().unwrap().insert(ghost.encode(), forged);
    for d in [&phone, &tv] {
        let report = d.sync(backend.clone(), SyncOptions::default()).unwrap();
        assert!(report.refused.contains(&RefusedRecord::new(ghost.encode(), &RecordError::NotKept)), "{report:?}");
        assert!(!d.settings().unwrap().federated_opt_in);
        assert!(!d.sync_devices().unwrap().iter().any(|m| m.device_id == "6666666666666666"));
    }
    backend.blobs.lock().unwrap().remove(&ghost.encode());

    // Nor can it wipe the group with the key it held.
    let wipe = RecordKey::new(&stolen, 1).seal_named("wipe", br#"{"wipe_ms":1}"#, [8; 12]).unwrap();
    backend.blobs.lock().unwrap().insert("wipe".into(), wipe);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(!report.wiped, "{report:?}");
    assert!(tv.event_count().unwrap() > 0);
    backend.blobs.lock().unwrap().remove("wipe");

    // A TV paired after the removal reads the whole history, the records
    // under the first key included, and nothing of the tablet's after.
    pair(&phone, &new_tv);
    let report = new_tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.refused.iter().all(|r| r.kind == RefusalKind::FromRemovedDevice), "{report:?}");
    assert_eq!(history(&new_tv), history(&phone));
    assert!(history(&new_tv).contains(&format!("tablet-1/{}", T0 + 1)));
    assert_eq!(new_tv.settings().unwrap().blocked_categories, vec!["after".to_string()]);
    assert_eq!(new_tv.sync_devices().unwrap().iter().filter(|d| d.removed).count(), 1);
}

#[test]
fn deleting_everywhere_deletes_on_every_device_and_nothing_of_a_stranger() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tv, stranger] = [0, 1, 2].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tv);
    stranger.create_sync_group().unwrap();
    phone.record_batch((0..30).map(|i| event(&format!("p-{i}"), EventKind::Play, T0 + i)).collect()).unwrap();
    phone.set_blocked_categories(vec!["x".into()]).unwrap();
    stranger.record(event("theirs", EventKind::Play, T0)).unwrap();
    for d in [&phone, &tv] {
        sync(d, &backend);
    }
    stranger.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert_eq!(tv.event_count().unwrap(), 30);
    // Everywhere, from the TV: its data and the backend's blobs go at once.
    tv.delete_everywhere(backend.clone()).unwrap();
    assert_eq!(tv.event_count().unwrap(), 0);
    assert_eq!(tv.sync_group().unwrap(), None);
    assert_eq!(backend.snapshot().into_keys().collect::<Vec<_>>(), vec!["wipe".to_string()]);
    // The phone, on its next sync.
    let report = phone.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.wiped, "{report:?}");
    assert_eq!(phone.event_count().unwrap(), 0);
    assert_eq!(phone.settings().unwrap(), PrivacySettings::default());
    assert_eq!(phone.sync_group().unwrap(), None);
    assert_eq!(phone.privacy_ledger().unwrap().entries.len(), 0);
    // Another person's group on the same backend: the wipe does not open
    // for it, and nothing of theirs changes.
    let report = stranger.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(!report.wiped && report.complete, "{report:?}");
    assert_eq!(stranger.event_count().unwrap(), 1);
    assert!(stranger.sync_group().unwrap().is_some());
}

#[test]
fn a_backend_that_fails_deletes_nothing_anywhere() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tv] = [0, 1].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tv);
    phone.record(event("kept", EventKind::Play, T0)).unwrap();
    sync(&phone, &backend);
    backend.fail_after(Some(0));
    assert!(matches!(tv.delete_everywhere(backend.clone()), Err(HearthError::Io { .. })));
    backend.fail_after(None);
    assert!(tv.sync_group().unwrap().is_some());
    assert!(!sync(&tv, &backend).wiped);
    assert_eq!(tv.event_count().unwrap(), 1);
    assert!(!sync(&phone, &backend).wiped);
    assert_eq!(phone.event_count().unwrap(), 1);
}

/// What a removed device wrote before its removal, and the remover had
/// applied, reaches a device that had not seen it yet, though it comes
/// under the earlier key from a device the rotation did not keep.
#[test]
fn a_removed_devices_records_from_before_reach_every_device() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv] = [0, 1, 2].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tablet);
    pair(&phone, &tv);
    sync(&phone, &backend);
    sync(&tv, &backend);
    tablet.record(event("tablet-1", EventKind::Play, T0)).unwrap();
    sync(&tablet, &backend);
    sync(&phone, &backend);
    let tablet_id = tablet.sync_group().unwrap().unwrap().device_id;
    assert!(phone.remove_sync_device(backend.clone(), tablet_id).unwrap().complete);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.complete && report.refused.is_empty(), "{report:?}");
    assert_eq!(report.events_received, 1);
    assert_eq!(history(&tv), history(&phone));
}

fn id(h: &Hearth) -> String {
    h.sync_group().unwrap().unwrap().device_id
}

/// A device that took a rotation checks the devices it kept against the
/// keys the remover signed into it: the removed device, with the backend,
/// cannot forge the first record of a kept device this one has not read
/// yet (announcing its own keys and turning federated learning on), and so
/// is never handed a later key in that device's name.
#[test]
fn a_removed_device_cannot_forge_the_first_record_of_a_device_that_stays() {
    use hearth_core::sync::rotation::Rotation;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv, laptop] = [0, 1, 2, 3].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    for d in [&tablet, &tv, &laptop] {
        pair(&phone, d);
    }
    for d in [&phone, &tablet, &tv, &phone] {
        sync(d, &backend);
    }
    // The laptop announces itself; the phone reads it, the TV not yet.
    sync(&laptop, &backend);
    sync(&phone, &backend);
    let stolen = sync_group_key(&tablet).unwrap();
    assert!(phone.remove_sync_device(backend.clone(), id(&tablet)).unwrap().complete);

    let laptop_id = id(&laptop);
    let first = RecordName { device: device_bytes(&laptop_id), seq: 1 };
    let forger = DeviceKeys::generate().unwrap();
    let (agreement, signing) = forger.public();
    let json = format!(
        r#"{{"changes":[{{"kind":"member","agreement":"{agreement}","signing":"{signing}","joined_ms":1}},{{"kind":"setting","field":"federated_opt_in","value":true,"at":{{"ms":9000000000000,"n":0,"device":"{laptop_id}"}}}}]}}"#
    );
    let (plain, _) = sign_body(&forger, &stolen.group_id, 1, &first.encode(), &CHAIN_START, json.as_bytes());
    let forged = RecordKey::new(&stolen, 1).seal(&first, &plain, [3; 12]).unwrap();
    backend.blobs.lock().unwrap().insert(first.encode(), forged);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.refused.contains(&RefusedRecord::new(first.encode(), &RecordError::BadSignature)), "{report:?}");
    assert!(!tv.settings().unwrap().federated_opt_in);

    // The TV's own removal later wraps the next key to the laptop's real
    // key, which the removed tablet cannot open.
    assert!(tv.remove_sync_device(backend.clone(), id(&phone)).unwrap().complete);
    let rotation = Rotation::parse_unverified(&backend.snapshot()["keys-0000000003"]).unwrap();
    let wrap = rotation.wraps.iter().find(|w| w.device == laptop_id).unwrap();
    assert!(forger.unwrap_key(&stolen.group_id, 3, &laptop_id, wrap).is_err());
}

/// A phone, a removed tablet and a TV that had not read the tablet's last
/// record; that record re-signed by the tablet as a purge of everything,
/// chained after its real records (as anyone holding the old key computes
/// the chain from the backend), sealed with the key it held; and its name.
struct Rewritten {
    _dirs: Vec<tempfile::TempDir>,
    tv: Arc<Hearth>,
    backend: Arc<MemoryBackend>,
    last: RecordName,
    swapped: Vec<u8>,
}

fn a_removed_tablet_rewrites_its_last_record() -> Rewritten {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv] = [0, 1, 2].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tablet);
    pair(&phone, &tv);
    phone.record(event("p-1", EventKind::Play, T0)).unwrap();
    for d in [&phone, &tablet, &tv, &phone] {
        sync(d, &backend);
    }
    tablet.record(event("t-1", EventKind::Play, T0 + 1)).unwrap();
    sync(&tablet, &backend);
    sync(&phone, &backend);
    let tablet_id = id(&tablet);
    let stolen = sync_group_key(&tablet).unwrap();
    let mut prev = CHAIN_START;
    let mut last = RecordName { device: device_bytes(&tablet_id), seq: 1 };
    loop {
        let next = RecordName { seq: last.seq + 1, ..last };
        if !backend.snapshot().contains_key(&next.encode()) {
            break;
        }
        let plain = RecordKey::new(&stolen, 1).open(&last, &backend.snapshot()[&last.encode()]).unwrap();
        prev = chain(&prev, &plain[..64]);
        last = next;
    }
    let json = format!(r#"{{"changes":[{{"kind":"purge","before_ms":{}}}]}}"#, T0 + 1000);
    let plain = hearth_core::testing::sync_signed_body(&tablet, 1, &last.encode(), &prev, json.as_bytes()).unwrap();
    assert!(phone.remove_sync_device(backend.clone(), tablet_id).unwrap().complete);
    let swapped = RecordKey::new(&stolen, 1).seal(&last, &plain, [1; 12]).unwrap();
    Rewritten { _dirs: dirs, tv, backend, last, swapped }
}

/// A removed device, with the backend, cannot put other content under a
/// number the group had applied from it: a device that had not read that
/// record yet checks the device's records against the chain value the
/// removal names, and refuses them (its history stays).
#[test]
fn a_removed_device_cannot_rewrite_its_records_for_a_device_behind() {
    let Rewritten { tv, backend, last, swapped, .. } = a_removed_tablet_rewrites_its_last_record();
    backend.blobs.lock().unwrap().insert(last.encode(), swapped);
    let report = tv.sync(backend.clone(), SyncOptions::default()).unwrap();
    let refused = RefusedRecord::new(last.encode(), &RecordError::OffChain);
    assert_eq!(report.refused, vec![refused], "{report:?}");
    assert!(history(&tv).contains(&format!("p-1/{T0}")), "{:?}", history(&tv));
    assert!(!history(&tv).contains(&format!("t-1/{}", T0 + 1)), "the tablet's records were taken: {:?}", history(&tv));
}

/// A backend that serves `name` genuinely on the first get and `swap` on
/// every later one (what a colluding backend can do at will).
struct SwapOnSecondGet {
    inner: Arc<MemoryBackend>,
    name: String,
    swap: Vec<u8>,
    gets: Mutex<usize>,
}

impl SyncTransport for SwapOnSecondGet {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        self.inner.put(name, blob)
    }
    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        self.inner.list()
    }
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        if name == self.name {
            let mut gets = self.gets.lock().unwrap();
            *gets += 1;
            if *gets > 1 {
                return Ok(Some(self.swap.clone()));
            }
        }
        self.inner.get(name)
    }
    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        self.inner.delete(name)
    }
}

/// The check of a removed device's records and the loop that applies them
/// read each record twice; a backend that serves the real one to the check
/// and a re-signed one after is refused (the record applied is the one
/// checked).
#[test]
fn a_removed_devices_record_is_applied_as_the_bytes_its_check_read() {
    let Rewritten { tv, backend, last, swapped, .. } = a_removed_tablet_rewrites_its_last_record();
    // The genuine record stays on the backend; only the second get differs.
    let evil =
        Arc::new(SwapOnSecondGet { inner: backend.clone(), name: last.encode(), swap: swapped, gets: Mutex::new(0) });
    let report = tv.sync(evil, SyncOptions::default()).unwrap();
    assert!(report.refused.contains(&RefusedRecord::new(last.encode(), &RecordError::OffChain)), "{report:?}");
    assert!(history(&tv).contains(&format!("p-1/{T0}")), "the forged purge was applied: {:?}", history(&tv));
}

/// A backend whose every get takes `delay`.
struct Slow {
    inner: Arc<MemoryBackend>,
    delay: Duration,
}

impl SyncTransport for Slow {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        self.inner.put(name, blob)
    }
    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        self.inner.list()
    }
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        std::thread::sleep(self.delay);
        self.inner.get(name)
    }
    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        self.inner.delete(name)
    }
}

/// Checking a removed device's backlog keeps within the time budget and
/// keeps what it read: a backlog longer than one sync's budget is checked
/// and applied across syncs, and the device's own records go out.
#[test]
fn a_removed_devices_backlog_longer_than_the_budget_is_read_across_syncs() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv] = [0, 1, 2].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tablet);
    pair(&phone, &tv);
    for d in [&phone, &tablet, &tv, &phone, &tv] {
        sync(d, &backend);
    }
    // The tablet writes 40 records while the TV is offline.
    for i in 0..40 {
        tablet.record(event(&format!("t-{i}"), EventKind::Play, T0 + i)).unwrap();
        sync(&tablet, &backend);
    }
    sync(&phone, &backend);
    assert!(phone.remove_sync_device(backend.clone(), id(&tablet)).unwrap().complete);
    tv.record(event("tv-own", EventKind::Play, T0 + 5000)).unwrap();
    // 10 ms a get: the 40 records take 400 ms to read; the budget is 300 ms,
    // enough for ~30 records a sync.
    let slow = Arc::new(Slow { inner: backend.clone(), delay: Duration::from_millis(10) });
    let mut got = 0;
    for _ in 0..6 {
        let report = tv.sync(slow.clone(), SyncOptions { time_budget_ms: 300 }).unwrap();
        got += report.records_applied;
    }
    assert_eq!(got, 40, "six syncs applied {got} of the 40 records");
    sync(&phone, &backend);
    assert!(history(&phone).contains(&format!("tv-own/{}", T0 + 5000)), "the TV never sent its own record");
}

/// A device one rotation behind that deletes everywhere syncs first, so
/// its wipe is sealed under the key the others hold.
#[test]
fn deleting_everywhere_from_a_device_behind_on_a_rotation_reaches_the_others() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tablet, tv] = [0, 1, 2].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tablet);
    pair(&phone, &tv);
    phone.record(event("p-1", EventKind::Play, T0)).unwrap();
    for d in [&phone, &tablet, &tv, &phone] {
        sync(d, &backend);
    }
    assert!(phone.remove_sync_device(backend.clone(), id(&tablet)).unwrap().complete);
    // The TV has not synced since; the person deletes everything from it.
    tv.delete_everywhere(backend.clone()).unwrap();
    let report = phone.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.wiped, "the phone kept everything: {} events", phone.event_count().unwrap());
}

#[test]
fn the_export_lists_the_group_and_never_a_key() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [phone, tv] = [0, 1].map(|i| open(dirs[i].path(), [i as u8 + 1; 32]).unwrap());
    let backend = Arc::new(MemoryBackend::default());
    phone.create_sync_group().unwrap();
    pair(&phone, &tv);
    sync(&phone, &backend);
    sync(&tv, &backend);
    sync(&phone, &backend);
    let key = sync_group_key(&phone).unwrap();
    let doc: ExportDocument = serde_json::from_str(&phone.export_json().unwrap()).unwrap();
    let group = doc.sync_group.expect("the group is listed");
    assert_eq!(group.group_id, phone.sync_group().unwrap().unwrap().group_id);
    assert_eq!(group.key_epoch, 1);
    assert_eq!(group.devices.len(), 2);
    let text = phone.export_json().unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(!text.contains(&hex(&key.profile_key)), "the profile key in the export");
    // Nor the device's own secret keys: the only hex of 64 digits or more
    // in it are the devices' public keys, which it does not list either.
    assert!(
        !text.split(|c: char| !c.is_ascii_hexdigit()).any(|run| run.len() >= 64),
        "a key-sized hex string in the export"
    );
    // An import ignores it.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(fresh_dir.path(), KEY_B).unwrap();
    fresh.import_json(text).unwrap();
    assert_eq!(fresh.sync_group().unwrap(), None);
}
