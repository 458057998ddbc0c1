//! Sync records where they arrive: from the backend, which holds every
//! blob and may change any byte, and from another device of the group,
//! which holds the key and may write any body. The first byte picks which:
//! even, the rest is a blob the backend returns as the next record of
//! another device (it must be refused: without the key nothing opens);
//! odd, the rest is a body that device signed and sealed honestly (it is
//! applied or refused whole; the device announced its keys in its first
//! record, which the harness wrote). Either way a real store takes it
//! through `sync`; nothing may panic, and a refused record changes nothing
//! stored.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use hearth_core::sync::changes::{CHAIN_START, sign_body};
use hearth_core::sync::pairing::GroupKey;
use hearth_core::sync::records::{RecordKey, RecordName};
use hearth_core::sync::rotation::DeviceKeys;
use hearth_core::testing::MemoryBackend;
use hearth_core::*;
use libfuzzer_sys::fuzz_target;

struct Key;

impl KeyProvider for Key {
    fn root_key(&self) -> Result<Vec<u8>, KeyError> {
        Ok(vec![0x5c; 32])
    }
}

struct Device {
    _dir: std::path::PathBuf,
    hearth: Arc<Hearth>,
    key: GroupKey,
    /// The other device's own keys.
    writer: DeviceKeys,
    /// The other device's next record, and its chain value before it.
    seq: Mutex<(u64, [u8; 32])>,
}

fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-fuzz-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = HearthConfig::new(dir.to_string_lossy().into_owned());
        let hearth = Hearth::open(config, Arc::new(Key)).expect("a store opens");
        hearth.create_sync_group().expect("a group");
        let key = hearth_core::testing::sync_group_key(&hearth).expect("its key");
        // The other device's first record announces its keys.
        let writer = DeviceKeys::generate().expect("keys");
        let (agreement, signing) = writer.public();
        let json = format!(
            r#"{{"changes":[{{"kind":"member","agreement":"{agreement}","signing":"{signing}","joined_ms":1}}]}}"#
        );
        let first = RecordName { device: [0x0d; 8], seq: 1 };
        let (plain, chain) = sign_body(&writer, &key.group_id, 1, &first.encode(), &CHAIN_START, json.as_bytes());
        let backend = Arc::new(MemoryBackend::default());
        let blob = RecordKey::new(&key, 1).seal(&first, &plain, [0; 12]).expect("sealed");
        backend.blobs.lock().unwrap().insert(first.encode(), blob);
        let report = hearth.sync(backend, SyncOptions::default()).expect("sync answers");
        assert_eq!(report.records_applied, 1, "the announcement was not applied: {report:?}");
        Device { _dir: dir, hearth, key, writer, seq: Mutex::new((2, chain)) }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let d = device();
    let mut next = d.seq.lock().unwrap();
    let (seq, prev) = *next;
    let name = RecordName { device: [0x0d; 8], seq };
    let mut after = prev;
    let blob = if which % 2 == 0 {
        rest.to_vec()
    } else {
        let (plain, chain) = sign_body(&d.writer, &d.key.group_id, 1, &name.encode(), &prev, rest);
        after = chain;
        match RecordKey::new(&d.key, 1).seal(&name, &plain, [0; 12]) {
            Ok(blob) => blob,
            Err(_) => return,
        }
    };
    let before = (d.hearth.event_count().unwrap(), d.hearth.settings().unwrap());
    let backend = Arc::new(MemoryBackend::default());
    backend.blobs.lock().unwrap().insert(name.encode(), blob);
    let report = d.hearth.sync(backend.clone(), SyncOptions::default()).expect("sync answers");
    if report.records_applied == 1 {
        *next = (seq + 1, after);
    } else {
        assert!(which % 2 == 1 || !report.refused.is_empty(), "a forged blob was neither applied nor refused");
        assert_eq!((d.hearth.event_count().unwrap(), d.hearth.settings().unwrap()), before, "a refused record changed the store");
    }
    assert!(which % 2 == 1 || report.records_applied == 0, "a blob opened without the key");
});
