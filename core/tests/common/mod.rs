//! Shared by the integration tests: a fresh store in a temp directory, event
//! and catalog generators, and a byte scanner for the store's directory.
#![allow(dead_code)]

pub mod flower;
pub mod secure_round;
pub mod superlink;
pub mod sync_backend;

use std::path::Path;
use std::sync::Arc;

use hearth_core::*;

pub const KEY_A: [u8; 32] = [0xA1; 32];
pub const KEY_B: [u8; 32] = [0xB2; 32];
/// 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

pub fn keys(k: [u8; 32]) -> Arc<dyn KeyProvider> {
    Arc::new(FixedKeyProvider::new(k))
}

pub fn open(dir: &Path, key: [u8; 32]) -> Result<Arc<Hearth>, HearthError> {
    Hearth::open(HearthConfig::new(dir.to_str().unwrap()), keys(key))
}

pub fn open_with(config: HearthConfig, key: [u8; 32]) -> Result<Arc<Hearth>, HearthError> {
    Hearth::open(config, keys(key))
}

pub fn event(item: &str, kind: EventKind, t: i64) -> Event {
    Event {
        item_id: item.to_string(),
        kind,
        timestamp_ms: t,
        position_ms: Some(60_000),
        duration_ms: Some(3_600_000),
        context: EventContext { device: DeviceClass::Tv, local_hour: 21, locale: Some("en-GB".into()) },
    }
}

pub fn item(id: &str, title: &str, categories: &[&str]) -> CatalogItem {
    CatalogItem {
        id: id.to_string(),
        title: title.to_string(),
        categories: categories.iter().map(|c| c.to_string()).collect(),
        language: Some("en".into()),
        duration_ms: Some(5_400_000),
        release_year: Some(2001),
        popularity: 12.5,
        content_rating: Some("PG".into()),
    }
}

/// Every file in `dir` (recursively) with its bytes.
pub fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(dir_bytes(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The names of the files in `dir` that contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    dir_bytes(dir).into_iter().filter(|(_, b)| contains(b, needle)).map(|(n, _)| n).collect()
}

pub fn item_ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.item_id.clone()).collect()
}
