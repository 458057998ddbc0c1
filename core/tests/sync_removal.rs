//! Removing a device from the person's group: it reads nothing written
//! afterwards (tried with the key it held), the group applies nothing it
//! writes afterwards, and a device that joins later still reads the whole
//! history.

mod common;

use std::collections::BTreeSet;

use common::sync_backend::{MemoryBackend, pair, sync};
use common::*;
use hearth_core::sync::records::{RecordError, RecordKey, RecordName, blob_epoch};
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
    let backend = MemoryBackend::default();
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
    assert!(matches!(phone.remove_sync_device(&backend, "00".repeat(8)), Err(HearthError::InvalidInput { .. })));
    let own = phone.sync_group().unwrap().unwrap().device_id;
    assert!(matches!(phone.remove_sync_device(&backend, own), Err(HearthError::InvalidInput { .. })));

    let report = phone.remove_sync_device(&backend, tablet_id.clone()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(phone.sync_devices().unwrap().iter().any(|d| d.device_id == tablet_id && d.removed));
    phone.record(event("after-1", EventKind::Complete, T0 + 10)).unwrap();
    phone.set_blocked_categories(vec!["after".into()]).unwrap();
    sync(&phone, &backend);
    let report = tv.sync(&backend, SyncOptions::default()).unwrap();
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
    let report = tablet.sync(&backend, SyncOptions::default()).unwrap();
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
    let report = phone.sync(&backend, SyncOptions::default()).unwrap();
    assert_eq!(report.refused, vec![RefusedRecord { name: late.encode(), reason: RecordError::FromRemovedDevice }]);

    // A TV paired after the removal reads the whole history, the records
    // under the first key included, and nothing of the tablet's after.
    pair(&phone, &new_tv);
    let report = new_tv.sync(&backend, SyncOptions::default()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.refused.iter().all(|r| r.reason == RecordError::FromRemovedDevice), "{report:?}");
    assert_eq!(history(&new_tv), history(&phone));
    assert!(history(&new_tv).contains(&format!("tablet-1/{}", T0 + 1)));
    assert_eq!(new_tv.settings().unwrap().blocked_categories, vec!["after".to_string()]);
    assert_eq!(new_tv.sync_devices().unwrap().iter().filter(|d| d.removed).count(), 1);
}
