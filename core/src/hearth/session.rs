//! The session: the open store and everything derived from it (settings,
//! profile, catalog cache, the audience summary), kept consistent as events
//! come and go. One per open `Hearth`, behind its lock.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use log::{debug, info, warn};

use super::HearthConfig;
use super::export::{EXPORT_FORMAT, EXPORT_FORMAT_VERSION, ExportDocument, ExportedEvent};
use crate::error::{Error, Result};
use crate::experiments::log::ExperimentLogRecord;
use crate::federated::ledger::{self, LedgerEntry};
use crate::federated::participation;
use crate::model::features;
use crate::store::Store;
use crate::store::crypto::{RootKey, Table};
use crate::store::history::{Catalog, CatalogItem, Event, now_ms};
use crate::store::profile::{ItemState, Profile};
use crate::store::settings::{PrivacySettings, RecordOutcome};

/// The profile is a cache of the history, written behind: when this long has
/// passed since its last write...
pub(crate) const PROFILE_FLUSH_INTERVAL_MS: i64 = 30_000;
/// ...or this many events arrived...
pub(crate) const PROFILE_FLUSH_EVENTS: u32 = 65_536;
/// ...or this many items changed; and on close. After a crash, opening the
/// store folds in the events past the watermark (at most the above).
pub(crate) const PROFILE_FLUSH_ITEMS: usize = 16_384;
/// Retention is enforced at most this often while recording.
pub(crate) const PURGE_INTERVAL_MS: i64 = 3600 * 1000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The open store and everything derived from it.
pub(crate) struct Session {
    pub(crate) store: Store,
    pub(crate) settings: PrivacySettings,
    pub(crate) profile: Profile,
    pub(crate) catalog: Catalog,
    /// What segments need of the history; built on first use (segments.rs).
    pub(crate) activity: Option<crate::audience::segments::Activity>,
    /// Per experiment, its newest exposure in the log (read on first use,
    /// then kept current; cleared when the log is edited).
    pub(crate) latest_exposure: HashMap<String, Option<ExperimentLogRecord>>,
    /// The catalog's largest popularity (item features are scaled by it).
    pub(crate) max_popularity: f64,
    pub(crate) unflushed: u32,
    pub(crate) last_flush_ms: i64,
    pub(crate) last_purge_ms: i64,
}

impl Session {
    pub(crate) fn open(config: &HearthConfig, root: &RootKey) -> Result<Session> {
        let dir = PathBuf::from(&config.data_dir);
        let store = Store::open(&dir, root, &config.store_options())?;
        let settings: PrivacySettings = store.get_json("settings")?.unwrap_or_default();
        let catalog = store.load_catalog()?.into_iter().map(|i| (i.id.clone(), Arc::new(i))).collect();
        let stored: Option<Profile> = match store.get_state("profile") {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                warn!("profile unreadable, rebuilding: {e}");
                None
            }
        };
        let mut session = Session {
            store,
            settings,
            profile: Profile::new(config.profile_half_life_days),
            max_popularity: features::max_popularity(&catalog),
            catalog,
            activity: None,
            latest_exposure: HashMap::new(),
            unflushed: 0,
            last_flush_ms: now_ms(),
            last_purge_ms: 0,
        };
        match stored {
            Some(mut p) => {
                let items: Vec<ItemState> = session.store.load_keyed(Table::ProfileItems)?;
                p.items = items.into_iter().map(|i| (i.id.clone(), i)).collect();
                p.reindex();
                session.profile = p;
                if session.catch_up_profile()? > 0 {
                    // Not fatal: a full store must still open, and the
                    // profile catches up again next time.
                    if let Err(e) = session.flush_profile(false) {
                        warn!("profile not written after catching up: {e}");
                    }
                }
            }
            None => session.rebuild_profile()?,
        }
        session.purge_expired()?;
        Ok(session)
    }

    /// Folds in the events stored after the profile's watermark.
    pub(crate) fn catch_up_profile(&mut self) -> Result<u32> {
        let after = self.profile.watermark;
        let mut folded = 0u32;
        let (profile, catalog) = (&mut self.profile, &self.catalog);
        self.store.scan_events(after, |id, ev| {
            match ev {
                Ok(ev) => {
                    profile.fold(id, &ev, catalog.get(&ev.item_id).map(Arc::as_ref));
                    folded += 1;
                }
                Err(e) => warn!("event {id} skipped while updating the profile: {e}"),
            }
            Ok(())
        })?;
        if folded > 0 {
            debug!("profile caught up with {folded} events");
        }
        Ok(folded)
    }

    /// Recomputes the profile from the whole history and writes it whole.
    pub(crate) fn rebuild_profile(&mut self) -> Result<()> {
        self.profile = Profile::new(self.profile.half_life_days);
        self.activity = None;
        self.catch_up_profile()?;
        if let Err(e) = self.flush_profile(true) {
            warn!("rebuilt profile not written: {e}");
        }
        Ok(())
    }

    /// Writes the aggregates and the changed items (all items with
    /// `replace_all`).
    pub(crate) fn flush_profile(&mut self, replace_all: bool) -> Result<()> {
        let aggregate = serde_json::to_vec(&self.profile)?;
        let changed: Vec<(String, Vec<u8>)> = self
            .profile
            .items
            .values()
            .filter(|i| replace_all || i.dirty)
            .map(|i| Ok((i.id.clone(), serde_json::to_vec(i)?)))
            .collect::<Result<_>>()?;
        self.store.write_profile(&aggregate, &changed, replace_all)?;
        self.profile.mark_clean();
        self.unflushed = 0;
        self.last_flush_ms = now_ms();
        Ok(())
    }

    /// Writes the profile when enough has changed since the last write.
    pub(crate) fn maybe_flush_profile(&mut self) {
        let due = self.unflushed > 0 && now_ms() - self.last_flush_ms >= PROFILE_FLUSH_INTERVAL_MS;
        if (due || self.unflushed >= PROFILE_FLUSH_EVENTS || self.profile.dirty_count >= PROFILE_FLUSH_ITEMS)
            && let Err(e) = self.flush_profile(false)
        {
            // The events are stored; the profile catches up on next open.
            warn!("profile not written: {e}");
        }
    }

    pub(crate) fn record(&mut self, events: &[Event]) -> Result<RecordOutcome> {
        let now = now_ms();
        for e in events {
            e.validate(now)?;
        }
        if self.settings.history_paused {
            debug!("history paused: {} events not stored", events.len());
            return Ok(RecordOutcome::Paused);
        }
        self.store_events(events)?;
        if self.settings.retention_days.is_some() && now - self.last_purge_ms > PURGE_INTERVAL_MS {
            self.purge_expired()?;
        }
        Ok(RecordOutcome::Stored { count: events.len() as u32 })
    }

    /// Stores validated events in one transaction and folds them into the
    /// profile once they are committed.
    pub(crate) fn store_events(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let first = self.store.insert_events(events)?;
        self.fold_stored(first, events.iter());
        Ok(())
    }

    /// Folds events just stored, from id `first` on, into the profile.
    pub(crate) fn fold_stored<'a>(&mut self, first: i64, events: impl Iterator<Item = &'a Event>) {
        let mut n = 0u32;
        for (i, e) in events.enumerate() {
            self.profile.fold(first + i as i64, e, self.catalog.get(&e.item_id).map(Arc::as_ref));
            if let Some(a) = &mut self.activity {
                a.fold(e);
            }
            n += 1;
        }
        if n > 0 {
            self.unflushed += n;
            self.maybe_flush_profile();
        }
    }

    /// Saves the settings (and, in a sync group, which fields changed), in
    /// one transaction.
    pub(crate) fn save_settings(&mut self, settings: PrivacySettings) -> Result<()> {
        settings.validate()?;
        let mut states = vec![("settings", serde_json::to_vec(&settings)?)];
        states.extend(self.settings_change(&settings)?);
        self.store.put_states(&states)?;
        self.settings = settings;
        Ok(())
    }

    /// Deletes the events of an item (up to `through_ms`, or all of them)
    /// and its experiment log records; in a sync group, a forget made here
    /// (all of them) leaves a tombstone for the other devices, up to now or
    /// the latest event it deleted. How many events went.
    pub(crate) fn forget_item(&mut self, item_id: &str, through_ms: Option<i64>) -> Result<u64> {
        let logged = crate::experiments::log::forget_item(&mut self.store, item_id)?;
        if logged > 0 {
            self.latest_exposure.clear();
            info!("{logged} experiment log records forgot the item");
        }
        // The tombstone first (a kill after the delete must not lose it);
        // a later one still if the item had events stamped past now.
        let now = now_ms();
        if through_ms.is_none() {
            self.note_forget(item_id, now)?;
        }
        let latest = Cell::new(now);
        let deleted = self.delete_where(|e| {
            let hit = e.item_id == item_id && through_ms.is_none_or(|t| e.timestamp_ms <= t);
            if hit {
                latest.set(latest.get().max(e.timestamp_ms));
            }
            hit
        })?;
        if through_ms.is_none() && latest.get() > now {
            self.note_forget(item_id, latest.get())?;
        }
        Ok(deleted)
    }

    /// Deletes events (and experiment log records) older than the retention
    /// window; returns how many events.
    pub(crate) fn purge_expired(&mut self) -> Result<u64> {
        self.last_purge_ms = now_ms();
        let Some(days) = self.settings.retention_days else {
            return Ok(0);
        };
        let cutoff = now_ms() - days as i64 * DAY_MS;
        if crate::experiments::log::purge_before(&mut self.store, cutoff)? > 0 {
            self.latest_exposure.clear();
        }
        let deleted = self.delete_where(|e| e.timestamp_ms < cutoff)?;
        if deleted > 0 {
            self.note_purge(cutoff)?;
        }
        Ok(deleted)
    }

    /// Deletes the events matching `pred` and recomputes the profile.
    pub(crate) fn delete_where(&mut self, pred: impl Fn(&Event) -> bool) -> Result<u64> {
        let mut doomed = Vec::new();
        self.store.scan_events(0, |id, ev| {
            match ev {
                Ok(ev) if pred(&ev) => doomed.push(id),
                Ok(_) => {}
                Err(e) => warn!("event {id} unreadable, left in place: {e}"),
            }
            Ok(())
        })?;
        if doomed.is_empty() {
            return Ok(0);
        }
        self.store.delete_events(&doomed)?;
        self.rebuild_profile()?;
        self.store.checkpoint()?;
        info!("deleted {} events", doomed.len());
        Ok(doomed.len() as u64)
    }

    pub(crate) fn upsert_catalog(&mut self, items: &[CatalogItem]) -> Result<()> {
        for i in items {
            i.validate()?;
        }
        self.store.upsert_catalog(items)?;
        let mut categories_changed = false;
        let mut popularity_fell = false;
        for item in items {
            let old = self.catalog.insert(item.id.clone(), Arc::new(item.clone()));
            popularity_fell |= old.as_ref().is_some_and(|o| o.popularity >= self.max_popularity);
            self.max_popularity = self.max_popularity.max(item.popularity);
            if self.profile.items.contains_key(&item.id)
                && old.as_ref().map(|o| &o.categories) != Some(&item.categories)
            {
                categories_changed = true;
            }
        }
        if popularity_fell {
            self.max_popularity = features::max_popularity(&self.catalog);
        }
        if categories_changed {
            self.profile.recompute_affinities(&self.catalog);
            self.flush_profile(false)?;
        }
        Ok(())
    }

    pub(crate) fn export(&self) -> Result<ExportDocument> {
        // A damaged page can hide rows from a scan without any error: the
        // file is checked first, and an export of a damaged store fails
        // rather than leave rows out without a word.
        let check = self.store.integrity_check()?;
        if check != "ok" {
            warn!("export refused: the database file failed SQLite's integrity check");
            return Err(Error::Corrupt(format!(
                "the database file failed its integrity check ({}), so an export could miss records",
                check.lines().next().unwrap_or_default()
            )));
        }
        let catalog_rows = self.store.row_count(Table::Catalog)?;
        if catalog_rows != self.catalog.len() as u64 {
            return Err(Error::Integrity { table: Table::Catalog.name() });
        }
        let mut events = Vec::new();
        self.store.scan_events(0, |id, ev| {
            events.push(ExportedEvent { id, event: ev? });
            Ok(())
        })?;
        let mut catalog: Vec<CatalogItem> = self.catalog.values().map(|i| CatalogItem::clone(i)).collect();
        catalog.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ExportDocument {
            format: EXPORT_FORMAT.into(),
            format_version: EXPORT_FORMAT_VERSION,
            exported_at_ms: now_ms(),
            settings: self.settings.clone(),
            events,
            catalog,
            profile: self.profile.summary(usize::MAX),
            privacy_ledger: self.ledger_entries()?,
            experiments: self.experiments_export()?,
            sync_group: self.exported_sync_group()?,
        })
    }

    /// The privacy ledger's entries, oldest first.
    pub(crate) fn ledger_entries(&self) -> Result<Vec<LedgerEntry>> {
        Ok(self.store.get_state(participation::LEDGER)?.map(|bytes| ledger::decode(&bytes)).unwrap_or_default())
    }

    /// Replaces the privacy ledger's entries.
    pub(crate) fn save_ledger(&mut self, entries: &[LedgerEntry]) -> Result<()> {
        self.store.put_state(participation::LEDGER, &ledger::encode(entries)?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if (self.unflushed > 0 || self.profile.dirty_count > 0)
            && let Err(e) = self.flush_profile(false)
        {
            warn!("profile not written on close: {e}");
        }
    }
}
