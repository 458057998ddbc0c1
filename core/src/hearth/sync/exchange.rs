//! One sync: send again what a killed sync left unsent, take in the other
//! devices' new records in order, then write this device's changes as new
//! records, over the app's [`SyncTransport`].
//!
//! Resumable at every point: a record is applied with the state that says
//! so in one transaction (a kill before it commits applies it again next
//! time, which changes nothing), and a record to send is stored with the
//! state that moved past its changes before it is sent, and sent again,
//! byte for byte, until the backend took it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::super::{Hearth, shield};
use super::StoredGroup;
use super::local::{NOTES, STATE};
use super::removal::{Checked, Scan, WIPE, rotation_epoch};
use crate::error::{Error, HearthError};
use crate::store::crypto::random_bytes;
use crate::store::history::now_ms;
use crate::sync::changes::{Outgoing, SyncState, open_body, pack, sign_body};
use crate::sync::hex;
use crate::sync::records::{MAX_BLOB, RecordError, RecordKey, RecordName, open_under};
pub use crate::sync::transport::{SyncBlob, SyncTransport, SyncTransportError};

/// How long one sync may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SyncOptions {
    /// Between records, a sync that has run this long stops (what it did
    /// is kept; the next sync goes on from there). Each call to the
    /// transport is bounded by the app's own timeout, not by this.
    #[uniffi(default = 30000)]
    pub time_budget_ms: u64,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { time_budget_ms: 30_000 }
    }
}

/// Where sync stands on a device.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// The device's group; None when it is in none.
    pub group: Option<super::SyncGroupInfo>,
    pub key_epoch: u32,
    /// The group's devices this one knows of (itself included), removed
    /// ones left out.
    pub devices: u32,
    /// Records written and not yet taken by the backend.
    pub records_waiting: u32,
    /// When the last sync ended, and whether it got through everything.
    pub last_sync_ms: Option<i64>,
    pub last_sync_complete: bool,
}

/// Why a record of another device was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RefusalKind {
    /// Not a sync record of this format (a bad name, size or version).
    NotARecord,
    /// Larger than any sync record.
    TooLarge,
    /// Sealed under a key epoch this device does not hold (yet).
    UnknownEpoch,
    /// It does not open under the group's key for its name: tampered
    /// with, truncated, renamed, or another group's.
    DoesNotOpen,
    /// It opened, but holds what this version does not read.
    NotValid,
    /// Written by a removed device after its removal (or under an earlier
    /// key by a device the group's key rotation did not keep).
    FromRemovedDevice,
    /// Not signed by the device it names (another device of the group
    /// wrote it with the group's key).
    NotSignedByWriter,
}

/// A record of another device that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedRecord {
    /// Its name on the backend.
    pub name: String,
    pub kind: RefusalKind,
    /// Why, in words (for logs and support, not for people).
    pub reason: String,
}

impl RefusedRecord {
    pub fn new(name: impl Into<String>, reason: &RecordError) -> RefusedRecord {
        let kind = match reason {
            RecordError::Malformed(_) => RefusalKind::NotARecord,
            RecordError::TooLarge { .. } => RefusalKind::TooLarge,
            RecordError::UnknownEpoch { .. } => RefusalKind::UnknownEpoch,
            RecordError::Unsealed => RefusalKind::DoesNotOpen,
            RecordError::Content(_) => RefusalKind::NotValid,
            RecordError::FromRemovedDevice | RecordError::NotKept | RecordError::OffChain => {
                RefusalKind::FromRemovedDevice
            }
            RecordError::BadSignature => RefusalKind::NotSignedByWriter,
        };
        RefusedRecord { name: name.into(), kind, reason: reason.to_string() }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Records of this device the backend took (sent again after a kill
    /// included).
    pub records_sent: u32,
    /// This device's events among them.
    pub events_sent: u64,
    /// Other devices' records applied here, their changes, the events they
    /// added and the events their tombstones removed.
    pub records_applied: u32,
    pub changes_applied: u64,
    pub events_received: u64,
    pub events_removed: u64,
    /// Records not applied (tampered with, another group's, not this
    /// format): that device's later records wait behind them.
    pub refused: Vec<RefusedRecord>,
    /// Whether the sync got through everything: false when the time
    /// budget or the backend stopped it (`transport_error` says which).
    pub complete: bool,
    pub transport_error: Option<SyncTransportError>,
    /// Another device removed this one from the group: it has left it
    /// (its own data stays; nothing more syncs).
    pub removed_from_group: bool,
    /// Another device deleted the person's data everywhere: everything
    /// here is deleted, the group with it.
    pub wiped: bool,
}

impl SyncReport {
    /// Notes a refused record once (a sync may meet it twice).
    pub(super) fn refuse(&mut self, refused: RefusedRecord) {
        if !self.refused.contains(&refused) {
            self.refused.push(refused);
        }
    }
}

/// A stop of the sync, with what it did so far.
pub(super) enum Stop {
    Transport(SyncTransportError),
    OutOfTime,
}

impl Hearth {
    fn sync_state(&self) -> std::result::Result<SyncState, HearthError> {
        self.with(|s| s.sync_state())?.ok_or_else(|| Error::invalid("sync group", "this device is in none").into())
    }

    fn save_sync_state(&self, state: &SyncState) -> std::result::Result<(), HearthError> {
        self.with(|s| s.store.put_json(STATE, state))
    }
}

/// Sync, for Kotlin and Swift too.
#[uniffi::export]
impl Hearth {
    /// Where sync stands on this device: its group (None when in none),
    /// the devices known, records waiting to be sent, and the last sync.
    pub fn sync_status(&self) -> std::result::Result<SyncStatus, HearthError> {
        shield(|| {
            let Some(group) = self.stored_group()? else { return Ok(SyncStatus::default()) };
            let state = self.with(|s| s.sync_state())?.unwrap_or_default();
            Ok(SyncStatus {
                group: Some(group.info()),
                key_epoch: group.epoch,
                devices: state.members.keys().filter(|d| !state.removed.contains_key(*d)).count() as u32,
                records_waiting: state.outgoing.len() as u32,
                last_sync_ms: state.last_sync_ms,
                last_sync_complete: state.last_sync_complete,
            })
        })
    }

    /// Syncs this device with the others of its group through `transport`:
    /// sends what a killed sync left unsent, applies the other devices'
    /// new records, then sends this device's changes. `InvalidInput` when
    /// the device is in no group. A backend that fails or a time budget
    /// spent stops it early with what it did kept (`complete` false);
    /// another call goes on from there.
    ///
    /// Blocking: call it from a background worker (WorkManager,
    /// BGProcessingTask), never the main thread; one sync runs at a time
    /// on a store.
    pub fn sync(
        &self,
        transport: Arc<dyn SyncTransport>,
        options: SyncOptions,
    ) -> std::result::Result<SyncReport, HearthError> {
        self.sync_through(&*transport, options)
    }
}

impl Hearth {
    /// `sync` over a transport the caller holds.
    pub(super) fn sync_through(
        &self,
        transport: &dyn SyncTransport,
        options: SyncOptions,
    ) -> std::result::Result<SyncReport, HearthError> {
        shield(|| {
            let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut group =
                self.stored_group()?.ok_or_else(|| Error::invalid("sync group", "this device is in none"))?;
            let deadline = Instant::now() + Duration::from_millis(options.time_budget_ms);
            let mut report = SyncReport::default();
            let mut state = self.sync_state()?;
            let result = self.exchange(transport, deadline, &mut group, &mut state, &mut report);
            match result {
                Ok(()) => report.complete = true,
                Err(Ok(Stop::Transport(e))) => {
                    warn!("sync stopped: {e}");
                    report.transport_error = Some(e);
                }
                Err(Ok(Stop::OutOfTime)) => info!("sync stopped: its time budget is spent"),
                Err(Err(e)) => return Err(e),
            }
            if !report.removed_from_group && !report.wiped {
                state.last_sync_ms = Some(now_ms());
                state.last_sync_complete = report.complete;
                self.save_sync_state(&state)?;
            }
            info!(
                "sync: {} records sent, {} applied, {} refused{}",
                report.records_sent,
                report.records_applied,
                report.refused.len(),
                if report.complete { "" } else { ", incomplete" }
            );
            Ok(report)
        })
    }

    /// The steps of one sync; Ok also when this device turns out removed.
    fn exchange(
        &self,
        transport: &dyn SyncTransport,
        deadline: Instant,
        group: &mut StoredGroup,
        state: &mut SyncState,
        report: &mut SyncReport,
    ) -> std::result::Result<(), std::result::Result<Stop, HearthError>> {
        self.send_outgoing(transport, state, report)?;
        let listing = transport.list().map_err(|e| Ok(Stop::Transport(e)))?;
        let rotations: BTreeMap<u32, String> =
            listing.iter().filter_map(|b| rotation_epoch(&b.name).map(|e| (e, b.name.clone()))).collect();
        let records: Vec<&SyncBlob> =
            listing.iter().filter(|b| rotation_epoch(&b.name).is_none() && b.name != WIPE).collect();
        let wiped = listing.iter().any(|b| b.name == WIPE);
        for _ in 0..2 {
            if self.take_rotations(transport, &rotations, group, state, report)? {
                return Ok(());
            }
            if wiped && self.take_wipe(transport, group, report)? {
                return Ok(());
            }
            self.receive(transport, &records, group, deadline, state, report)?;
            // A rotation signed by a device announced only in the records
            // just applied is taken on the second pass.
            if rotations.range(group.epoch + 1..).next().is_none() {
                break;
            }
        }
        if state.epoch_known {
            self.write_records(group, state)?;
        }
        self.send_outgoing(transport, state, report)
    }

    /// Sends the records written and not yet taken, oldest first, each
    /// forgotten once the backend took it.
    fn send_outgoing(
        &self,
        transport: &dyn SyncTransport,
        state: &mut SyncState,
        report: &mut SyncReport,
    ) -> std::result::Result<(), std::result::Result<Stop, HearthError>> {
        while let Some(record) = state.outgoing.first() {
            transport.put(record.name.clone(), record.blob.clone()).map_err(|e| Ok(Stop::Transport(e)))?;
            let sent = state.outgoing.remove(0);
            self.save_sync_state(state).map_err(Err)?;
            report.records_sent += 1;
            report.events_sent += sent.events;
        }
        Ok(())
    }

    /// Applies the other devices' records not yet applied, each device's
    /// in order; a refused record holds back that device's later ones.
    fn receive(
        &self,
        transport: &dyn SyncTransport,
        listing: &[&SyncBlob],
        group: &StoredGroup,
        deadline: Instant,
        state: &mut SyncState,
        report: &mut SyncReport,
    ) -> std::result::Result<(), std::result::Result<Stop, HearthError>> {
        let keys = group.record_keys().map_err(|e| Err(e.into()))?;
        let group_id = group.group_id().map_err(|e| Err(e.into()))?;
        let own_device = group.device_id.as_str();
        let mut by_device: BTreeMap<String, BTreeMap<u64, &SyncBlob>> = BTreeMap::new();
        for blob in listing {
            match RecordName::parse(&blob.name) {
                Ok(name) => {
                    let device = hex(&name.device);
                    if device != own_device {
                        by_device.entry(device).or_default().insert(name.seq, blob);
                    }
                }
                Err(reason) => report.refuse(RefusedRecord::new(&blob.name, &reason)),
            }
        }
        for (device, records) in by_device {
            let mut seq = state.applied.get(&device).copied().unwrap_or(0) + 1;
            // A removed device's records not applied here yet are taken only
            // once they all lead to the chain value its removal names.
            let scan = Scan { transport, records: &records, keys: &keys, group_id: &group_id, deadline };
            match self.check_removed(&scan, state, &device, seq)? {
                Checked::NotRemoved | Checked::Leads => {}
                Checked::Wait => continue,
                Checked::OffChain => {
                    if let Some(blob) = records.get(&seq) {
                        report.refuse(RefusedRecord::new(&blob.name, &RecordError::OffChain));
                    }
                    continue;
                }
            }
            while let Some(blob) = records.get(&seq) {
                if Instant::now() >= deadline {
                    return Err(Ok(Stop::OutOfTime));
                }
                let refuse = |reason| RefusedRecord::new(&blob.name, &reason);
                if state.removed.get(&device).is_some_and(|last| seq > *last) {
                    report.refuse(refuse(RecordError::FromRemovedDevice));
                    break;
                }
                if blob.size > MAX_BLOB as u64 {
                    report.refuse(refuse(RecordError::TooLarge { size: blob.size }));
                    break;
                }
                let Some(bytes) = transport.get(blob.name.clone()).map_err(|e| Ok(Stop::Transport(e)))? else {
                    break;
                };
                let name = RecordName::parse(&blob.name).expect("parsed above");
                // Opened under the key of its epoch; from a device the
                // rotations since that epoch kept; then checked against its
                // writer's signing key.
                let known = state.signing_key(&device);
                let prev = state.chain_of(&device);
                let opened = open_under(&keys, &name, &bytes).and_then(|(epoch, plain)| {
                    // (A removed device's records up to the last one the
                    // group applies are its own, from before.)
                    let before_removal = state.removed.get(&device).is_some_and(|last| seq <= *last);
                    if let Some((_, kept)) = state.kept.range(epoch + 1..).next()
                        && !kept.contains(&device)
                        && !before_removal
                    {
                        return Err(RecordError::NotKept);
                    }
                    open_body(&plain, &group_id, epoch, &blob.name, &prev, known)
                });
                // A removed device's record is the one its check read.
                let checked = state.removed_checked.get(&device).and_then(|c| c.get(&seq));
                let opened = opened.and_then(|(body, after)| match checked {
                    Some(value) if *value != hex(&after) => Err(RecordError::OffChain),
                    _ => Ok((body, after)),
                });
                let (body, after) = match opened {
                    Ok(opened) => opened,
                    Err(reason) => {
                        warn!("sync record {} refused: {reason}", blob.name);
                        report.refuse(refuse(reason));
                        break;
                    }
                };
                let mut next = state.clone();
                next.applied.insert(device.clone(), seq);
                next.chains.insert(device.clone(), hex(&after));
                if let Some(checked) = next.removed_checked.get_mut(&device) {
                    checked.remove(&seq);
                    if checked.is_empty() {
                        next.removed_checked.remove(&device);
                    }
                }
                match self.with(|s| s.apply_record(&mut next, &device, body)) {
                    Ok(applied) => {
                        *state = next;
                        report.records_applied += 1;
                        report.changes_applied += applied.changes;
                        report.events_received += applied.events;
                        report.events_removed += applied.events_removed;
                    }
                    Err(HearthError::InvalidInput { field, reason }) if field == "sync record" => {
                        warn!("sync record {} refused: {reason}", blob.name);
                        report.refuse(refuse(RecordError::Content("a change that is not valid")));
                        break;
                    }
                    Err(e) => return Err(Err(e)),
                }
                seq += 1;
            }
        }
        Ok(())
    }

    /// Writes this device's changes since its last record as new records,
    /// stored (to send) with the state that moved past them.
    fn write_records(
        &self,
        group: &StoredGroup,
        state: &mut SyncState,
    ) -> std::result::Result<(), std::result::Result<Stop, HearthError>> {
        let internal = |e: Error| Err(HearthError::from(e));
        let device: [u8; 8] = crate::model::parse_hex(&group.device_id)
            .and_then(|b| b.try_into().ok())
            .ok_or(Err(HearthError::from(Error::Integrity { table: "state" })))?;
        let group_id = group.group_id().map_err(internal)?;
        let key = RecordKey::new(&group.key().map_err(internal)?, group.epoch);
        let signer = group.device_keys().map_err(internal)?;
        let own = self.ledger_entries().map_err(Err)?;
        // Under one lock: the notes taken in, the changes gathered and
        // sealed, and the state saved with the notes gone, in one
        // transaction (a change noted meanwhile waits for the next).
        let written = self
            .with(|s| {
                let mut next = state.clone();
                let mut prev = next.own_chain_value();
                next.take_notes(s.notes()?);
                let changes = s.outgoing_changes(&mut next, &own)?;
                if changes.is_empty() && next == *state {
                    return Ok(None);
                }
                for packed in pack(&changes)? {
                    let name = RecordName { device, seq: next.next_seq }.encode();
                    let nonce: [u8; 12] = random_bytes(12)?.try_into().expect("12 random bytes");
                    let (plain, after) = sign_body(&signer, &group_id, group.epoch, &name, &prev, &packed.body);
                    prev = after;
                    next.own_chain = Some(hex(&prev));
                    let blob = key.seal_named(&name, &plain, nonce).map_err(|e| Error::Internal(e.to_string()))?;
                    next.outgoing.push(Outgoing { name, blob, events: packed.events });
                    next.next_seq += 1;
                }
                s.store.write_states(&[(STATE, serde_json::to_vec(&next)?)], &[NOTES])?;
                Ok(Some(next))
            })
            .map_err(Err)?;
        if let Some(next) = written {
            *state = next;
        }
        Ok(())
    }
}
