//! The group's devices: removing one, taking in the key rotations a
//! removal leaves on the backend (`crate::sync::rotation`), and deleting
//! everything on every device of the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::super::export::{ExportedSyncDevice, ExportedSyncGroup};
use super::super::session::Session;
use super::super::{Hearth, shield};
use super::exchange::{RefusedRecord, Stop, SyncBlob, SyncOptions, SyncReport, SyncTransport, SyncTransportError};
use super::local::{NOTES, STATE};
use super::{GROUP, StoredGroup, hex, random, unhex};
use crate::error::{Error, HearthError};
use crate::store::history::now_ms;
use crate::sync::changes::{Member, SyncState, open_body};
use crate::sync::records::{RecordError, RecordKey, RecordName, open_under};
use crate::sync::rotation::{KeptKeys, Rotation, open_earlier, seal_earlier, wrap_key};

/// The name of the group-wide wipe on the backend.
pub(super) const WIPE: &str = "wipe";

/// The name of the rotation to key epoch `epoch` on the backend.
pub(super) fn rotation_name(epoch: u32) -> String {
    format!("keys-{epoch:010}")
}

/// The epoch a rotation's name gives, if it is one.
pub(super) fn rotation_epoch(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("keys-")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|e| *e > 1)
}

/// A device of the person's group, as this device knows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncDevice {
    pub device_id: String,
    /// When it created or joined the group (its own clock).
    pub joined_ms: i64,
    pub this_device: bool,
    /// Removed from the group: nothing written since reaches it.
    pub removed: bool,
}

type Step<T> = std::result::Result<T, std::result::Result<Stop, HearthError>>;

fn internal(e: Error) -> std::result::Result<Stop, HearthError> {
    Err(e.into())
}

impl Session {
    /// The sync group as an export lists it (never a key).
    pub(crate) fn exported_sync_group(&self) -> crate::error::Result<Option<ExportedSyncGroup>> {
        let Some(group) = self.store.get_json::<StoredGroup>(GROUP)? else { return Ok(None) };
        let state = self.sync_state()?.unwrap_or_default();
        Ok(Some(ExportedSyncGroup {
            group_id: group.group_id.clone(),
            device_id: group.device_id.clone(),
            joined_ms: group.joined_ms,
            key_epoch: group.epoch,
            devices: state
                .members
                .iter()
                .map(|(id, m)| ExportedSyncDevice {
                    device_id: id.clone(),
                    joined_ms: m.joined_ms,
                    removed: state.removed.contains_key(id),
                })
                .collect(),
        }))
    }
}

/// The group's devices, for Kotlin and Swift too.
#[uniffi::export]
impl Hearth {
    /// The devices of this device's group that have announced themselves
    /// (by their first sync), this one included.
    pub fn sync_devices(&self) -> std::result::Result<Vec<SyncDevice>, HearthError> {
        shield(|| {
            let group = self.stored_group()?.ok_or_else(|| Error::invalid("sync group", "this device is in none"))?;
            let state: SyncState = self.with(|s| s.sync_state())?.unwrap_or_default();
            Ok(state
                .members
                .iter()
                .map(|(id, m)| SyncDevice {
                    device_id: id.clone(),
                    joined_ms: m.joined_ms,
                    this_device: *id == group.device_id,
                    removed: state.removed.contains_key(id),
                })
                .collect())
        })
    }

    /// Removes another device from the group: syncs first, then leaves on
    /// the backend a new key for the devices that stay, which the removed
    /// device cannot open, and syncs again under it. The removed device
    /// reads nothing written afterwards, and the group applies none of its
    /// records written after the last one this device applied. A device
    /// that has never synced is not known to the group and cannot be
    /// given the new key: it pairs again.
    pub fn remove_sync_device(
        &self,
        transport: Arc<dyn SyncTransport>,
        device_id: String,
    ) -> std::result::Result<SyncReport, HearthError> {
        let transport = &*transport;
        shield(|| {
            let first = self.sync_through(transport, SyncOptions::default())?;
            if !first.complete || first.removed_from_group {
                return Err(Error::invalid("sync", "this device could not finish a sync first; try again").into());
            }
            {
                let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
                let group =
                    self.stored_group()?.ok_or_else(|| Error::invalid("sync group", "this device is in none"))?;
                let state = self.with(|s| s.sync_state())?.unwrap_or_default();
                if device_id == group.device_id {
                    return Err(Error::invalid("device_id", "this device: leave the group instead").into());
                }
                if state.signing_key(&device_id).is_none() || state.removed.contains_key(&device_id) {
                    return Err(Error::invalid("device_id", "not a device of the group").into());
                }
                let group_id = group.group_id()?;
                let key: [u8; 32] = random()?;
                let epoch = group.epoch + 1;
                let removed =
                    BTreeMap::from([(device_id.clone(), state.applied.get(&device_id).copied().unwrap_or(0))]);
                let mut wraps = Vec::new();
                let mut keys = BTreeMap::new();
                // The devices announced here, and those a rotation pinned.
                let pinned = state.pinned.iter().filter(|(id, _)| !state.members.contains_key(*id));
                for (id, member) in state.members.iter().chain(pinned) {
                    if *id != device_id && !state.removed.contains_key(id) {
                        wraps.push(wrap_key(&group_id, epoch, id, &unhex(&member.agreement)?, random()?, &key));
                        let kept = KeptKeys { agreement: member.agreement.clone(), signing: member.signing.clone() };
                        keys.insert(id.clone(), kept);
                    }
                }
                let removed_chains = BTreeMap::from([(device_id.clone(), hex(&state.chain_of(&device_id)))]);
                let mut rotation = Rotation {
                    epoch,
                    by: group.device_id.clone(),
                    removed,
                    wraps,
                    earlier: String::new(),
                    keys,
                    removed_chains,
                };
                rotation.earlier = seal_earlier(&group_id, epoch, &key, &group.epoch_keys()?, &rotation.header());
                let blob = rotation.sign(&group_id, &group.device_keys()?);
                if let Err(e) = transport.put(rotation_name(epoch), blob) {
                    warn!("the rotation was not stored: {e}");
                    return Ok(SyncReport { transport_error: Some(e), ..first });
                }
                info!("device removed from the sync group; key epoch {epoch}");
            }
            // Take the rotation in as every device does.
            self.sync_through(transport, SyncOptions::default())
        })
    }

    /// Deletes everything, here and on every device of the group: leaves a
    /// wipe on the backend (sealed under the group's key: every device of
    /// the group opens it on its next sync, deletes all its data and
    /// leaves the group), deletes every other blob there, then deletes
    /// everything here (`delete_all`). `delete_all` alone deletes only
    /// here. It syncs first (so the wipe is sealed under the key the others
    /// hold). When the backend fails (`Io`, naming it) before it took the
    /// wipe, nothing is deleted anywhere; after, the other devices delete
    /// on their next sync, and calling this again finishes here.
    pub fn delete_everywhere(&self, transport: Arc<dyn SyncTransport>) -> std::result::Result<(), HearthError> {
        let transport = &*transport;
        shield(|| {
            // In step first (a device in no group is refused there): a wipe sealed under a key epoch the others have
            // moved past would open nowhere.
            let first = self.sync_through(transport, SyncOptions::default())?;
            if first.wiped {
                return Ok(());
            }
            if first.removed_from_group {
                return Err(Error::invalid("sync group", "this device was removed from its group").into());
            }
            if !first.complete {
                let why = first.transport_error.map_or("out of time".to_string(), |e| e.to_string());
                return Err(HearthError::Io {
                    reason: format!("sync backend: could not sync first ({why}); try again"),
                });
            }
            let group = self.stored_group()?.ok_or_else(|| Error::invalid("sync group", "this device is in none"))?;
            let key = RecordKey::new(&group.key()?, group.epoch);
            let body = format!("{{\"wipe_ms\":{}}}", now_ms()).into_bytes();
            let blob = key.seal_named(WIPE, &body, random()?).map_err(|e| Error::Internal(e.to_string()))?;
            let backend = |e: SyncTransportError| HearthError::Io { reason: format!("sync backend: {e}") };
            transport.put(WIPE.into(), blob).map_err(backend)?;
            // The rotations stay: a device behind on key epochs catches up
            // through them, and then opens the wipe.
            for held in transport.list().map_err(backend)? {
                if held.name != WIPE && rotation_epoch(&held.name).is_none() {
                    transport.delete(held.name).map_err(backend)?;
                }
            }
            info!("the person's data is deleted on every device of the group");
            self.delete_all()
        })
    }
}

impl Hearth {
    /// Whether the backend holds a wipe of this group under its current
    /// key: if so, this device deletes everything (and with it the group).
    pub(super) fn take_wipe(
        &self,
        transport: &dyn SyncTransport,
        group: &StoredGroup,
        report: &mut SyncReport,
    ) -> Step<bool> {
        let Some(blob) = transport.get(WIPE.into()).map_err(|e| Ok(Stop::Transport(e)))? else {
            return Ok(false);
        };
        // Only under the current key (rotations are taken first): a device
        // removed from the group, which holds the earlier keys, cannot wipe
        // it.
        let key = RecordKey::new(&group.key().map_err(internal)?, group.epoch);
        if key.open_named(WIPE, &blob).is_err() {
            // Another group's, an earlier key's, or not a wipe at all.
            return Ok(false);
        }
        info!("another device of the group deleted everything everywhere: deleting everything here");
        self.delete_all().map_err(Err)?;
        report.wiped = true;
        Ok(true)
    }

    /// Takes in the rotations past this device's key epoch, in order; a
    /// device that joined after some finds its own epoch among them first.
    /// Ok(true) when this device was removed (it has left the group).
    pub(super) fn take_rotations(
        &self,
        transport: &dyn SyncTransport,
        rotations: &BTreeMap<u32, String>,
        group: &mut StoredGroup,
        state: &mut SyncState,
        report: &mut SyncReport,
    ) -> Step<bool> {
        let group_id = group.group_id().map_err(internal)?;
        let get = |name: &String| transport.get(name.clone()).map_err(|e| Ok(Stop::Transport(e)));
        if !state.epoch_known {
            self.find_own_epoch(rotations, group, state, &group_id, get)?;
        }
        for (&epoch, name) in rotations.range(group.epoch + 1..) {
            let refuse = |reason: RecordError| RefusedRecord::new(name.clone(), &reason);
            if epoch != group.epoch + 1 {
                report.refuse(refuse(RecordError::Content("a rotation that skips an epoch")));
                break;
            }
            let Some(blob) = get(name)? else { break };
            // Signed by a device this one has not heard of yet: perhaps one
            // whose records come later in this sync.
            let by = Rotation::parse_unverified(&blob).map(|r| r.by);
            if by.as_ref().is_ok_and(|by| state.signing_key(by).is_none()) {
                break;
            }
            let signer = |by: &str| state.signing_key(by).filter(|_| !state.removed.contains_key(by)).map(String::from);
            let rotation = match Rotation::open(&group_id, &blob, signer) {
                Ok(r) if r.epoch == epoch => r,
                Ok(_) => {
                    report.refuse(refuse(RecordError::Content("a rotation under another epoch's name")));
                    break;
                }
                Err(reason) => {
                    report.refuse(refuse(reason));
                    break;
                }
            };
            if rotation.removed.contains_key(&group.device_id) {
                info!("this device was removed from its sync group; it leaves it");
                self.with(|s| s.store.delete_states(&[STATE, NOTES, GROUP])).map_err(Err)?;
                report.removed_from_group = true;
                return Ok(true);
            }
            let current: [u8; 32] = unhex(&group.profile_key).map_err(internal)?;
            let opened = rotation
                .wraps
                .iter()
                .find(|w| w.device == group.device_id)
                .ok_or(RecordError::Unsealed)
                .and_then(|w| {
                    group.device_keys().map_err(|_| RecordError::Unsealed)?.unwrap_key(
                        &group_id,
                        epoch,
                        &group.device_id,
                        w,
                    )
                })
                .and_then(|key| {
                    let earlier = open_earlier(&group_id, epoch, &key, &rotation.earlier, &rotation.header())?;
                    if earlier.get(&group.epoch) == Some(&current) {
                        Ok(key)
                    } else {
                        Err(RecordError::Content("a rotation from a key this device does not hold"))
                    }
                });
            let key = match opened {
                Ok(key) => key,
                Err(reason) => {
                    warn!("rotation to key epoch {epoch} not taken: {reason}");
                    report.refuse(refuse(reason));
                    break;
                }
            };
            group.earlier.insert(group.epoch, group.profile_key.clone());
            group.profile_key = hex(&key);
            group.epoch = epoch;
            state.removed.extend(rotation.removed);
            state.removed_chains.extend(rotation.removed_chains);
            state.kept.insert(epoch, rotation.wraps.iter().map(|w| w.device.clone()).collect());
            // The kept devices' keys, as the remover signed them: a device
            // whose first record this one has not read yet is checked (and
            // wrapped to, later) under them. Keys this device already holds
            // are its own reading, and stay.
            for (device, keys) in rotation.keys {
                let held = state.members.get(&device).or(state.pinned.get(&device));
                match held {
                    Some(h) if h.agreement != keys.agreement || h.signing != keys.signing => {
                        warn!("rotation to epoch {epoch} names other keys for a device than this one holds");
                    }
                    Some(_) => {}
                    None => {
                        let kept = Member { agreement: keys.agreement, signing: keys.signing, joined_ms: 0 };
                        state.pinned.insert(device, kept);
                    }
                }
            }
            self.save_group(group, state).map_err(Err)?;
            info!("sync group key rotated to epoch {epoch}");
        }
        Ok(false)
    }

    /// For a device that joined holding the key of some epoch: which one
    /// (the rotation whose earlier keys open under it), with the keys
    /// before it and the devices removed before it.
    fn find_own_epoch(
        &self,
        rotations: &BTreeMap<u32, String>,
        group: &mut StoredGroup,
        state: &mut SyncState,
        group_id: &[u8; 16],
        get: impl Fn(&String) -> Step<Option<Vec<u8>>>,
    ) -> Step<()> {
        let key: [u8; 32] = unhex(&group.profile_key).map_err(internal)?;
        let mut found: Option<(u32, BTreeMap<u32, [u8; 32]>)> = None;
        for (&epoch, name) in rotations.iter().rev() {
            let Some(blob) = get(name)? else { continue };
            let Ok(rotation) = Rotation::parse_unverified(&blob) else { continue };
            match &mut found {
                None => {
                    if let Ok(earlier) = open_earlier(group_id, epoch, &key, &rotation.earlier, &rotation.header()) {
                        state.removed.extend(rotation.removed);
                        found = Some((epoch, earlier));
                    }
                }
                // An earlier rotation: its removals count, once its own
                // earlier keys open under its epoch's key.
                Some((_, keys)) => {
                    if let Some(k) = keys.get(&epoch)
                        && open_earlier(group_id, epoch, k, &rotation.earlier, &rotation.header()).is_ok()
                    {
                        state.removed.extend(rotation.removed);
                    }
                }
            }
        }
        // Known once a rotation opened under the key, or when there is none
        // to open; otherwise it asks again next time, and writes nothing
        // meanwhile (a record sealed as the wrong epoch's would be refused).
        state.epoch_known = found.is_some() || rotations.is_empty();
        if let Some((epoch, earlier)) = found {
            group.epoch = epoch;
            group.earlier = earlier.into_iter().map(|(e, k)| (e, hex(&k))).collect();
        }
        self.save_group(group, state).map_err(Err)
    }

    fn save_group(&self, group: &StoredGroup, state: &SyncState) -> std::result::Result<(), HearthError> {
        self.with(|s| s.store.put_states(&[(GROUP, serde_json::to_vec(group)?), (STATE, serde_json::to_vec(state)?)]))
    }
}

/// What a removed device's records are read with, to check them.
pub(super) struct Scan<'a> {
    pub(super) transport: &'a dyn SyncTransport,
    pub(super) records: &'a BTreeMap<u64, &'a SyncBlob>,
    pub(super) keys: &'a BTreeMap<u32, RecordKey>,
    pub(super) group_id: &'a [u8; 16],
    pub(super) deadline: Instant,
}

/// Whether a device's records from some number on may be applied.
pub(super) enum Checked {
    /// Not a removed device, or past the records its removal covers.
    NotRemoved,
    /// A removed device's: they lead to the value its removal names.
    Leads,
    /// Not all on the backend yet.
    Wait,
    /// They do not lead there: not the records the group applied.
    OffChain,
}

impl Hearth {
    /// For a removed device whose records up to the last one the group
    /// applies are not all applied here, reads them (from where earlier
    /// syncs got to, within the time budget) and says whether they lead to
    /// the chain value its removal names, keeping the value after each in
    /// `state.removed_checked` for the apply loop to hold each record to.
    pub(super) fn check_removed(
        &self,
        scan: &Scan<'_>,
        state: &mut SyncState,
        device: &str,
        from: u64,
    ) -> Step<Checked> {
        let (Some(&last), Some(pinned)) = (state.removed.get(device), state.removed_chains.get(device).cloned()) else {
            return Ok(Checked::NotRemoved);
        };
        if from > last {
            return Ok(Checked::NotRemoved);
        }
        let mut checked = state.removed_checked.remove(device).unwrap_or_default();
        checked.retain(|seq, _| *seq >= from);
        let mut at = checked.keys().next_back().copied().unwrap_or(from - 1);
        let mut prev = match checked.get(&at) {
            Some(value) => unhex(value).map_err(internal)?,
            None => state.chain_of(device),
        };
        let mut known = state.signing_key(device).map(String::from);
        let outcome = loop {
            if at == last {
                break Ok(if hex(&prev) == pinned { Checked::Leads } else { Checked::OffChain });
            }
            if Instant::now() >= scan.deadline {
                break Err(Ok(Stop::OutOfTime));
            }
            let Some(blob) = scan.records.get(&(at + 1)) else { break Ok(Checked::Wait) };
            let bytes = match scan.transport.get(blob.name.clone()) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break Ok(Checked::Wait),
                Err(e) => break Err(Ok(Stop::Transport(e))),
            };
            let opened = RecordName::parse(&blob.name).and_then(|name| open_under(scan.keys, &name, &bytes)).and_then(
                |(epoch, plain)| open_body(&plain, scan.group_id, epoch, &blob.name, &prev, known.as_deref()),
            );
            let Ok((body, after)) = opened else { break Ok(Checked::OffChain) };
            if known.is_none() {
                known = body.announced_signing().map(String::from);
            }
            prev = after;
            at += 1;
            checked.insert(at, hex(&prev));
        };
        // Kept for the apply loop, and for a sync cut short to resume from;
        // after a mismatch, read again from the start (the backend may mend).
        if !matches!(outcome, Ok(Checked::OffChain)) {
            state.removed_checked.insert(device.to_string(), checked);
        }
        outcome
    }
}
