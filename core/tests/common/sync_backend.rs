//! A sync backend in memory, as the app's backend would be: it stores the
//! blobs it is given and hands them back; the tests read everything it
//! holds as an attacker would, and make it fail on demand.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hearth_core::*;

#[derive(Default)]
pub struct MemoryBackend {
    pub blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Calls left before every call fails (None: never).
    pub calls_left: Mutex<Option<usize>>,
    pub calls: Mutex<usize>,
}

impl MemoryBackend {
    fn call(&self) -> Result<(), SyncTransportError> {
        *self.calls.lock().unwrap() += 1;
        let mut left = self.calls_left.lock().unwrap();
        match left.as_mut() {
            Some(0) => Err(SyncTransportError::Unavailable { reason: "offline".into() }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Every blob: name and bytes.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.blobs.lock().unwrap().clone()
    }

    pub fn fail_after(&self, calls: Option<usize>) {
        *self.calls_left.lock().unwrap() = calls;
    }
}

impl SyncTransport for MemoryBackend {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        self.call()?;
        self.blobs.lock().unwrap().insert(name, blob);
        Ok(())
    }

    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        self.call()?;
        Ok(self.blobs.lock().unwrap().iter().map(|(n, b)| SyncBlob { name: n.clone(), size: b.len() as u64 }).collect())
    }

    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        self.call()?;
        Ok(self.blobs.lock().unwrap().get(&name).cloned())
    }

    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        self.call()?;
        self.blobs.lock().unwrap().remove(&name);
        Ok(())
    }
}

/// Pairs `joiner` into `inviter`'s group, the person confirming the digits.
pub fn pair(inviter: &Hearth, joiner: &Hearth) {
    let answer = joiner.join_device(&inviter.invite_device().unwrap()).unwrap();
    let (reveal, digits) = inviter.invite_answer(&answer).unwrap();
    assert_eq!(joiner.join_reveal(&reveal).unwrap(), digits);
    let welcome = inviter.invite_confirm(true).unwrap().unwrap();
    joiner.join_finish(&welcome, true).unwrap();
}

/// A sync that is expected to get through.
pub fn sync(device: &Hearth, backend: &MemoryBackend) -> SyncReport {
    let report = device.sync(backend, SyncOptions::default()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    report
}
