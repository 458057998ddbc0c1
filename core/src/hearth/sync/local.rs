//! Sync as the store sees it: noting this device's own changes for its
//! next record (settings, forgotten items, retention), gathering them into
//! changes, and applying another device's record, all or nothing.

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::super::session::Session;
use crate::error::{Error, Result};
use crate::experiments::assignment;
use crate::federated::ledger::LedgerEntry;
use crate::model::parse_hex;
use crate::store::history::{Event, now_ms};
use crate::store::settings::PrivacySettings;
use crate::sync::changes::{Body, Change, LocalNotes, Member, Stamp, SyncState, ledger_key};
use crate::sync::hex;
use crate::sync::records::RecordError;

/// The state record of [`SyncState`].
pub(crate) const STATE: &str = "sync_state";
/// The state record of the [`LocalNotes`]: kept apart, as a sync under way
/// rewrites the state from its own copy.
pub(crate) const NOTES: &str = "sync_notes";

/// An event as stored when it came from another device: its origin
/// (`<device>:<number>`) beside it, so that it is never sent back out.
#[derive(Serialize)]
struct Imported<'a> {
    #[serde(flatten)]
    event: &'a Event,
    origin: String,
}

#[derive(Deserialize)]
struct Origin {
    #[serde(default)]
    origin: Option<String>,
}

/// What applying one record did here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub changes: u64,
    pub events: u64,
    pub events_removed: u64,
}

/// The settings as a JSON object, field by field.
fn fields(settings: &PrivacySettings) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(settings)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(Error::Internal("settings are not a JSON object".into())),
    }
}

fn refused(e: RecordError) -> Error {
    Error::invalid("sync record", e.to_string())
}

impl Session {
    pub(crate) fn sync_state(&self) -> Result<Option<SyncState>> {
        self.store.get_json(STATE)
    }

    /// The changes noted here and not yet taken into a record.
    pub(crate) fn notes(&self) -> Result<LocalNotes> {
        Ok(self.store.get_json(NOTES)?.unwrap_or_default())
    }

    /// In a group, the notes changed by `f` (given the sync state's clock),
    /// as bytes to store; None when the device is in no group.
    fn notes_after(&self, f: impl FnOnce(&mut LocalNotes, &Stamp)) -> Result<Option<Vec<u8>>> {
        let Some(state) = self.sync_state()? else { return Ok(None) };
        let mut notes = self.notes()?;
        f(&mut notes, &state.clock);
        Ok(Some(serde_json::to_vec(&notes)?))
    }

    /// In a group, the notes with each settings field that `new` changes
    /// stamped for the next record: a state record to write with the
    /// settings, in one transaction.
    pub(crate) fn settings_change(&self, new: &PrivacySettings) -> Result<Option<(&'static str, Vec<u8>)>> {
        let (old, new) = (fields(&self.settings)?, fields(new)?);
        let now = now_ms();
        let notes = self.notes_after(|notes, clock| {
            for (field, value) in &new {
                if old.get(field) != Some(value) {
                    let at = notes.tick(clock, now);
                    notes.fields.insert(field.clone(), at);
                }
            }
        })?;
        Ok(notes.map(|bytes| (NOTES, bytes)))
    }

    /// Stamps every settings field: the group's settings start as this
    /// device's when it creates the group.
    pub(crate) fn stamp_all_settings(&self, state: &mut SyncState) -> Result<()> {
        let now = now_ms();
        for field in fields(&self.settings)?.keys() {
            state.set_field(field, now);
        }
        Ok(())
    }

    /// In a group, keeps a tombstone of an item forgotten here up to
    /// `through_ms`, for the other devices.
    pub(crate) fn note_forget(&mut self, item_id: &str, through_ms: i64) -> Result<()> {
        if let Some(notes) = self.notes_after(|notes, _| notes.forget(item_id, through_ms))? {
            self.store.put_state(NOTES, &notes)?;
        }
        Ok(())
    }

    /// In a group, notes that retention removed every event before
    /// `cutoff_ms` here.
    pub(crate) fn note_purge(&mut self, cutoff_ms: i64) -> Result<()> {
        if let Some(notes) = self.notes_after(|notes, _| notes.purge_before = notes.purge_before.max(cutoff_ms))? {
            self.store.put_state(NOTES, &notes)?;
        }
        Ok(())
    }

    /// This device's changes not yet written to a record, in the order they
    /// go out, and `state` as it is once they are written.
    ///
    /// An event recorded here that a tombstone known here covers (recorded
    /// after the item was forgotten on another device, with a time before
    /// that) is deleted instead, as every other device drops it: so the
    /// history converges on every event no tombstone covers.
    pub(crate) fn outgoing_changes(&mut self, state: &mut SyncState, own: &[LedgerEntry]) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        let mut covered = Vec::new();
        let mut last = state.events_sent;
        self.store.scan_event_json(state.events_sent, |id, json| {
            last = id;
            let parsed = json.and_then(|j| {
                let origin: Origin = serde_json::from_slice(&j)?;
                Ok((origin.origin, serde_json::from_slice::<Event>(&j)?))
            });
            match parsed {
                Ok((None, event)) if state.is_dropped(&event) => covered.push(id),
                Ok((None, event)) => changes.push(Change::Event { seq: id, event }),
                Ok((Some(_), _)) => {}
                Err(e) => warn!("event {id} unreadable, not synced: {e}"),
            }
            Ok(())
        })?;
        state.events_sent = last;
        if !covered.is_empty() {
            self.store.delete_events(&covered)?;
            self.rebuild_profile()?;
            info!("{} events recorded here fell under another device's tombstones", covered.len());
        }
        let settings = fields(&self.settings)?;
        for field in std::mem::take(&mut state.fields_unsent) {
            if let (Some(value), Some(at)) = (settings.get(&field), state.fields.get(&field)) {
                changes.push(Change::Setting { field, value: value.clone(), at: at.clone() });
            }
        }
        for item_id in std::mem::take(&mut state.forgets_unsent) {
            if let Some(through_ms) = state.forgets.get(&item_id) {
                changes.push(Change::Forget { item_id, through_ms: *through_ms });
            }
        }
        if state.purge_before > state.purge_sent {
            changes.push(Change::Purge { before_ms: state.purge_before });
            state.purge_sent = state.purge_before;
        }
        for entry in own {
            let key = ledger_key(entry);
            if state.ledger_sent.get(&key) != Some(entry) {
                state.ledger_sent.insert(key, entry.clone());
                changes.push(Change::Ledger { entry: entry.clone() });
            }
        }
        // First of all: the record that carries it (this device's first)
        // is checked against the key it announces.
        if !state.member_sent
            && let Some(me) = state.members.get(&state.clock.device)
        {
            let member = Change::Member {
                agreement: me.agreement.clone(),
                signing: me.signing.clone(),
                joined_ms: me.joined_ms,
            };
            changes.insert(0, member);
            state.member_sent = true;
        }
        if let Some(secret) = assignment::existing_secret(&self.store)?.map(|s| hex(&s))
            && state.secret_sent.as_ref() != Some(&secret)
        {
            let at = state.tick(now_ms());
            state.secret_at = Some(at.clone());
            state.secret_sent = Some(secret.clone());
            changes.push(Change::ExperimentSecret { secret, at });
        }
        Ok(changes)
    }

    /// Applies record `body` of `device` to this store and to `state`: all
    /// of it, or, when any change in it is not valid, none of it (an
    /// `InvalidInput` error naming the record). Re-applying a record
    /// changes nothing.
    pub(crate) fn apply_record(&mut self, state: &mut SyncState, device: &str, body: Body) -> Result<Applied> {
        let now = now_ms();
        let mut next = state.clone();
        // Changes noted here since the last record count as held here.
        let notes = self.notes()?;
        let mut settings = fields(&self.settings)?;
        let mut settings_changed = false;
        let mut secret = None;
        let mut events: Vec<(i64, Event)> = Vec::new();
        let mut forgets: Vec<(String, i64)> = Vec::new();
        let mut purge = None;
        let mut applied = Applied { changes: body.changes.len() as u64, ..Applied::default() };
        let mut imported = next.imported.get(device).copied().unwrap_or(0);
        for change in body.changes {
            match change {
                Change::Event { seq, event } => {
                    // The writer checked the time against its own clock.
                    event
                        .validate(now.max(event.timestamp_ms))
                        .map_err(|_| refused(RecordError::Content("an event")))?;
                    if seq > imported {
                        imported = seq;
                        events.push((seq, event));
                    }
                }
                Change::Setting { field, value, at } => {
                    if !settings.contains_key(&field) {
                        return Err(refused(RecordError::Content("a setting this version does not know")));
                    }
                    if at.device != device {
                        return Err(refused(RecordError::Content("a stamp of another device")));
                    }
                    next.observe(&at);
                    let held = next.fields.get(&field).max(notes.fields.get(&field));
                    if held.is_none_or(|held| *held < at) {
                        next.fields_unsent.remove(&field);
                        next.fields.insert(field.clone(), at);
                        settings.insert(field, value);
                        settings_changed = true;
                    }
                }
                Change::Forget { item_id, through_ms } => {
                    if item_id.is_empty() || item_id.len() > crate::store::history::MAX_ID_BYTES {
                        return Err(refused(RecordError::Content("a forgotten item id")));
                    }
                    if next.forgets.get(&item_id).is_none_or(|t| *t < through_ms) {
                        next.forgets.insert(item_id.clone(), through_ms);
                        forgets.push((item_id, through_ms));
                    }
                }
                Change::Purge { before_ms } => {
                    if before_ms > next.purge_before {
                        next.purge_before = before_ms;
                        purge = Some(before_ms);
                    }
                    // Another device's purge is its own to send: this one
                    // does not send it again as its own.
                    next.purge_sent = next.purge_sent.max(before_ms);
                }
                Change::Ledger { entry } => {
                    // What an entry spent may be unknown (NaN counts as
                    // infinite), never less than nothing.
                    let terms = [entry.epsilon_total, entry.segment_report_epsilon, entry.noise_multiplier];
                    if terms.iter().any(|x| *x < 0.0) || entry.sampling_rate < 0.0 {
                        return Err(refused(RecordError::Content("a ledger entry that spent less than nothing")));
                    }
                    next.take_peer_entry(device, entry)
                }
                Change::Member { agreement, signing, joined_ms } => {
                    let key = |k: &str| parse_hex(k).is_some_and(|b| b.len() == 32);
                    if !key(&agreement) || !key(&signing) {
                        return Err(refused(RecordError::Content("a member's keys")));
                    }
                    // A device's keys are what it first announced, or what a
                    // rotation said they are: a record that says otherwise
                    // is not the device's.
                    let held = next.members.get(device).or(next.pinned.get(device));
                    if held.is_some_and(|k| k.agreement != agreement || k.signing != signing) {
                        return Err(refused(RecordError::Content("a member's keys changed")));
                    }
                    next.members.insert(device.to_string(), Member { agreement, signing, joined_ms });
                }
                Change::ExperimentSecret { secret: hex_secret, at } => {
                    if at.device != device {
                        return Err(refused(RecordError::Content("a stamp of another device")));
                    }
                    let bytes: [u8; 32] = parse_hex(&hex_secret)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| refused(RecordError::Content("an experiment secret")))?;
                    next.observe(&at);
                    if next.secret_at.as_ref().is_none_or(|held| *held < at) {
                        next.secret_at = Some(at);
                        next.secret_sent = Some(hex_secret);
                        secret = Some(bytes);
                    }
                }
            }
        }
        let settings: Option<PrivacySettings> = if settings_changed {
            let s: PrivacySettings = serde_json::from_value(serde_json::Value::Object(settings))
                .map_err(|_| refused(RecordError::Content("a setting's value")))?;
            s.validate().map_err(|_| refused(RecordError::Content("a setting's value")))?;
            Some(s)
        } else {
            None
        };
        next.imported.insert(device.to_string(), imported);

        // Idempotent effects first; the events and the state that says they
        // are in, in one transaction, last.
        if let Some(s) = settings {
            self.store.put_json("settings", &s)?;
            self.settings = s;
        }
        if let Some(bytes) = secret {
            self.store.put_state(assignment::SECRET, &bytes)?;
        }
        for (item_id, through) in &forgets {
            applied.events_removed += self.forget_item(item_id, Some(*through))?;
        }
        if let Some(cutoff) = purge {
            crate::experiments::log::purge_before(&mut self.store, cutoff)?;
            self.latest_exposure.clear();
            applied.events_removed += self.delete_where(|e| e.timestamp_ms < cutoff)?;
        }
        events.retain(|(_, e)| !next.is_dropped(e) && !notes.covers(e));
        applied.events = events.len() as u64;
        let rows: Vec<Imported> =
            events.iter().map(|(seq, event)| Imported { event, origin: format!("{device}:{seq}") }).collect();
        self.import_events(&rows, &[(STATE, serde_json::to_vec(&next)?)], events.iter().map(|(_, e)| e))?;
        *state = next;
        Ok(applied)
    }

    fn import_events<'a>(
        &mut self,
        rows: &[Imported],
        states: &[(&str, Vec<u8>)],
        events: impl Iterator<Item = &'a Event>,
    ) -> Result<()> {
        let first = self.store.insert_events_with_state(rows, states)?;
        self.fold_stored(first, events);
        Ok(())
    }
}
