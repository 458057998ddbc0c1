//! The experiment log: what an experiment's rows showed (exposures) and what
//! the user did with the items (outcomes), one sealed record per row of the
//! store's `experiment_log` table.
//!
//! Bounded: the newest `MAX_LOG_RECORDS` records are kept, an exposure names
//! at most `MAX_EXPOSED_ITEMS` items. An outcome carries the position the
//! item had in the experiment's latest exposure when that exposure is at
//! most `ATTRIBUTION_WINDOW_MS` old and showed it, so a report can say
//! where in the row the user found what they played. `forget_item` removes
//! the item from every record (an exposure keeps its slot, emptied), retention removes records past the window,
//! export lists them all.

use log::warn;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::Store;

/// Records kept, newest first; older ones are dropped as new ones come.
pub const MAX_LOG_RECORDS: u32 = 4096;
/// Items of a row an exposure records (its top).
pub const MAX_EXPOSED_ITEMS: u32 = 20;
/// How long after an exposure an outcome is still attributed to it.
pub const ATTRIBUTION_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What the user did with an item an experiment may have shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, uniffi::Enum)]
pub enum OutcomeKind {
    /// Opened the item's page or tile.
    Click,
    /// Started playing it.
    Play,
    /// Finished it.
    Complete,
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentLogRecord {
    pub experiment: String,
    pub arm: String,
    pub at_ms: i64,
    pub entry: LogEntry,
}

/// An exposure or an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEntry {
    /// A row the experiment ranked, its top items in order.
    Exposure { items: Vec<String> },
    /// The user acted on an item; `position` (0 = first) in the latest
    /// exposure when it showed the item within the attribution window.
    Outcome { item_id: String, kind: OutcomeKind, position: Option<u32> },
}

fn decode(id: i64, opened: Result<Vec<u8>>) -> Option<ExperimentLogRecord> {
    match opened.map(|plain| serde_json::from_slice::<ExperimentLogRecord>(&plain)) {
        Ok(Ok(record)) => Some(record),
        Ok(Err(_)) | Err(_) => {
            warn!("experiment log record {id} failed its integrity check and was skipped");
            None
        }
    }
}

/// Appends a record, dropping the oldest past the bound.
pub(crate) fn append(store: &mut Store, record: &ExperimentLogRecord) -> Result<i64> {
    store.append_log(&serde_json::to_vec(record)?, MAX_LOG_RECORDS as u64)
}

/// The newest exposure of `experiment`, if any.
pub(crate) fn latest_exposure(store: &Store, experiment: &str) -> Result<Option<ExperimentLogRecord>> {
    let mut found = None;
    store.scan_log(true, |id, opened| {
        if let Some(r) = decode(id, opened)
            && r.experiment == experiment
            && matches!(r.entry, LogEntry::Exposure { .. })
        {
            found = Some(r);
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Where `item_id` was in `exposure`, if it showed the item at most the
/// attribution window before `at_ms`.
pub(crate) fn position_in(exposure: Option<&ExperimentLogRecord>, item_id: &str, at_ms: i64) -> Option<u32> {
    let exposure = exposure?;
    let LogEntry::Exposure { items } = &exposure.entry else {
        return None;
    };
    if at_ms - exposure.at_ms > ATTRIBUTION_WINDOW_MS {
        return None;
    }
    items.iter().position(|i| i == item_id).map(|p| p as u32)
}

/// Every readable record, oldest first.
pub(crate) fn records(store: &Store) -> Result<Vec<ExperimentLogRecord>> {
    let mut out = Vec::new();
    store.scan_log(false, |id, opened| {
        out.extend(decode(id, opened));
        Ok(true)
    })?;
    Ok(out)
}

/// Deletes the records `doomed` picks and rewrites those `edit` changes
/// (returning the new record); returns how many records changed.
fn rewrite(
    store: &mut Store,
    doomed: impl Fn(&ExperimentLogRecord) -> bool,
    edit: impl Fn(&ExperimentLogRecord) -> Option<ExperimentLogRecord>,
) -> Result<u64> {
    let (mut delete, mut replace) = (Vec::new(), Vec::new());
    let mut failed = None;
    store.scan_log(false, |id, opened| {
        if let Some(r) = decode(id, opened) {
            if doomed(&r) {
                delete.push(id);
            } else if let Some(new) = edit(&r) {
                match serde_json::to_vec(&new) {
                    Ok(bytes) => replace.push((id, bytes)),
                    Err(e) => failed = Some(e),
                }
            }
        }
        Ok(true)
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    store.edit_log(&delete, &replace)?;
    Ok((delete.len() + replace.len()) as u64)
}

/// Removes `item_id` from every record: its outcomes go; in exposures its
/// slot stays, emptied, so the other items keep their positions.
pub(crate) fn forget_item(store: &mut Store, item_id: &str) -> Result<u64> {
    rewrite(
        store,
        |r| matches!(&r.entry, LogEntry::Outcome { item_id: i, .. } if i == item_id),
        |r| match &r.entry {
            LogEntry::Exposure { items } if items.iter().any(|i| i == item_id) => Some(ExperimentLogRecord {
                entry: LogEntry::Exposure {
                    items: items.iter().map(|i| if i == item_id { String::new() } else { i.clone() }).collect(),
                },
                ..r.clone()
            }),
            _ => None,
        },
    )
}

/// Removes the records older than `cutoff_ms`.
pub(crate) fn purge_before(store: &mut Store, cutoff_ms: i64) -> Result<u64> {
    rewrite(store, |r| r.at_ms < cutoff_ms, |_| None)
}

/// Removes every record of `experiment`.
pub(crate) fn clear(store: &mut Store, experiment: &str) -> Result<u64> {
    rewrite(store, |r| r.experiment == experiment, |_| None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::crypto::fetch_root_key;
    use crate::store::{Durability, StoreOptions};

    fn record(at_ms: i64, entry: LogEntry) -> ExperimentLogRecord {
        ExperimentLogRecord { experiment: "home".into(), arm: "model".into(), at_ms, entry }
    }

    fn outcome(item: &str) -> LogEntry {
        LogEntry::Outcome { item_id: item.into(), kind: OutcomeKind::Play, position: None }
    }

    #[test]
    fn retention_drops_what_is_past_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let root = fetch_root_key(&crate::FixedKeyProvider::new([3; 32])).unwrap();
        let opts = StoreOptions { durability: Durability::Normal, max_store_bytes: None };
        let mut store = Store::open(dir.path(), &root, &opts).unwrap();
        let day = 86_400_000;
        for (t, item) in [(1, "a"), (5 * day, "b"), (2 * day, "c"), (9 * day, "d")] {
            append(&mut store, &record(t, outcome(item))).unwrap();
        }
        assert_eq!(purge_before(&mut store, 3 * day).unwrap(), 2);
        let left: Vec<i64> = records(&store).unwrap().iter().map(|r| r.at_ms).collect();
        assert_eq!(left, vec![5 * day, 9 * day]);
    }

    #[test]
    fn positions_need_the_item_in_a_recent_exposure() {
        let shown = record(1_000, LogEntry::Exposure { items: vec!["a".into(), "b".into()] });
        assert_eq!(position_in(Some(&shown), "b", 2_000), Some(1));
        assert_eq!(position_in(Some(&shown), "z", 2_000), None);
        assert_eq!(position_in(Some(&shown), "b", 1_000 + ATTRIBUTION_WINDOW_MS + 1), None);
        assert_eq!(position_in(None, "a", 2_000), None);
    }
}
