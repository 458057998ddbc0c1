//! Sync backends for the tests: in memory (`hearth_core::testing`), whose
//! every byte the tests read as an attacker would and which fails on
//! demand, and in a directory, which processes share; and pairing.

pub use hearth_core::testing::MemoryBackend;
use std::sync::Arc;

use hearth_core::*;

/// Pairs `joiner` into `inviter`'s group, the person confirming the digits.
pub fn pair(inviter: &Hearth, joiner: &Hearth) {
    let answer = joiner.join_device(inviter.invite_device().unwrap()).unwrap();
    let InviteReply { message: reveal, digits } = inviter.invite_answer(answer).unwrap();
    assert_eq!(joiner.join_reveal(reveal).unwrap(), digits);
    let welcome = inviter.invite_confirm(true).unwrap().unwrap();
    joiner.join_finish(welcome, true).unwrap();
}

/// A sync that is expected to get through.
pub fn sync(device: &Hearth, backend: &Arc<MemoryBackend>) -> SyncReport {
    let report = device.sync(backend.clone(), SyncOptions::default()).unwrap();
    assert!(report.complete, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    report
}

/// A backend in a directory, one file per blob, so that processes share
/// it: a put writes a temporary file and renames it over the blob's.
pub struct DirBackend(pub std::path::PathBuf);

impl DirBackend {
    fn io(e: std::io::Error) -> SyncTransportError {
        SyncTransportError::Unavailable { reason: e.to_string() }
    }
}

impl SyncTransport for DirBackend {
    fn put(&self, name: String, blob: Vec<u8>) -> Result<(), SyncTransportError> {
        let tmp = self.0.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, &blob).map_err(Self::io)?;
        std::fs::rename(&tmp, self.0.join(&name)).map_err(Self::io)
    }

    fn list(&self) -> Result<Vec<SyncBlob>, SyncTransportError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.0).map_err(Self::io)? {
            let entry = entry.map_err(Self::io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(SyncBlob { name, size: entry.metadata().map_err(Self::io)?.len() });
            }
        }
        Ok(out)
    }

    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SyncTransportError> {
        match std::fs::read(self.0.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(e)),
        }
    }

    fn delete(&self, name: String) -> Result<(), SyncTransportError> {
        match std::fs::remove_file(self.0.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::io(e)),
            _ => Ok(()),
        }
    }
}
