//! What a sync record holds, and what a device keeps to merge records so
//! that every device of the person converges on the same state, whatever
//! the order and however often it syncs.
//!
//! Each device writes only its own changes, as a numbered sequence of
//! records; a change is one of:
//!
//! - an event it recorded, numbered by its id there: events are only ever
//!   added, and a device imports each device's events once, in order (it
//!   keeps the last number it imported from each);
//! - a privacy setting, one field at a time, stamped by a hybrid logical
//!   clock ([`Stamp`]): the newest stamp wins on every device;
//! - a tombstone: the events of an item up to a time (`forget_item`), or
//!   every event before a time (retention). Tombstones are kept, so an
//!   event that arrives late from a device that was offline is dropped too;
//! - one of its privacy ledger entries, new or updated (keyed by when it
//!   was charged), so that every device counts what the person's other
//!   devices spent;
//! - the experiment secret, newest stamp wins, so that the person is in the
//!   same arm on every screen;
//! - the writer's own public keys, once (`member`), for key rotation.
//!
//! Applying a change is idempotent: a record applied twice (after a kill)
//! changes nothing the second time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::records::{MAX_BODY, RecordError};
use super::rotation::{DeviceKeys, SIGNATURE_LEN, verify};
use super::unhex;
use crate::federated::ledger::LedgerEntry;
use crate::store::history::Event;

/// A hybrid logical clock stamp: the writer's wall clock (ms), a counter
/// for changes within one millisecond or behind a clock seen from another
/// device, and the writer's device id to break ties. Ordered in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub ms: i64,
    pub n: u32,
    pub device: String,
}

impl Stamp {
    /// The stamp `device` makes now for a change after this one: its wall
    /// clock, or this stamp's time with the counter moved on when the
    /// clock is not past it.
    fn next(&self, now_ms: i64, device: &str) -> Stamp {
        if now_ms > self.ms {
            Stamp { ms: now_ms, n: 0, device: device.into() }
        } else {
            Stamp { ms: self.ms, n: self.n.saturating_add(1), device: device.into() }
        }
    }
}

/// Raises an item's tombstone to `through_ms` (a forget only ever covers
/// more).
fn raise(forgets: &mut BTreeMap<String, i64>, item_id: &str, through_ms: i64) {
    let through = forgets.entry(item_id.into()).or_insert(i64::MIN);
    *through = (*through).max(through_ms);
}

/// Whether the tombstones `forgets` and `purge_before` cover an event.
fn covered(forgets: &BTreeMap<String, i64>, purge_before: i64, event: &Event) -> bool {
    event.timestamp_ms < purge_before
        || forgets.get(&event.item_id).is_some_and(|through| event.timestamp_ms <= *through)
}

/// One change in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// An event the writer recorded; `seq` is its id on the writer.
    Event { seq: i64, event: Event },
    /// One field of the privacy settings (its name in the settings' JSON).
    Setting { field: String, value: serde_json::Value, at: Stamp },
    /// The events of `item_id` at or before `through_ms` are forgotten.
    Forget { item_id: String, through_ms: i64 },
    /// Every event before `before_ms` is gone (retention).
    Purge { before_ms: i64 },
    /// One of the writer's privacy ledger entries.
    Ledger { entry: LedgerEntry },
    /// The experiment secret, in hex.
    ExperimentSecret { secret: String, at: Stamp },
    /// The writer's own public keys (hex): X25519, that a rotation wraps
    /// the group's next key to, and Ed25519, that its rotations are signed
    /// with (`super::rotation`).
    Member { agreement: String, signing: String, joined_ms: i64 },
}

/// A device of the group, as its `member` change announced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub agreement: String,
    pub signing: String,
    pub joined_ms: i64,
}

/// A record's body: its changes, in the order the writer made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub changes: Vec<Change>,
}

impl Body {
    pub fn decode(bytes: &[u8]) -> Result<Body, RecordError> {
        serde_json::from_slice(bytes).map_err(|_| RecordError::Content("not a body of known changes"))
    }

    /// The writer's public signing key, when this body announces it (the
    /// writer's first record).
    pub fn announced_signing(&self) -> Option<&str> {
        self.changes.iter().find_map(|c| match c {
            Change::Member { signing, .. } => Some(signing.as_str()),
            _ => None,
        })
    }
}

const SIGNED_RECORD: &[u8] = b"hearth sync v2 record signature\0";

/// The start of every writer's chain: what its first record follows.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// What a writer signs for one record: a domain tag, the group id, the key
/// epoch (u32 LE), the record's name, the chain value of the writer's
/// record before it ([`chain`]; [`CHAIN_START`] for its first) and its
/// JSON body. The sealed record holds the 64-byte Ed25519 signature, then
/// the JSON. The chain makes each record name its predecessor, so a
/// rotation that names a removed device's last chain value fixes what all
/// of that device's records were.
pub fn signed_message(group_id: &[u8; 16], epoch: u32, name: &str, prev: &[u8; 32], json: &[u8]) -> Vec<u8> {
    [SIGNED_RECORD, group_id, &epoch.to_le_bytes(), name.as_bytes(), prev, json].concat()
}

/// The chain value after a record: SHA-256 of the one before it and the
/// record's signature.
pub fn chain(prev: &[u8; 32], signature: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(signature);
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The plaintext of a record, `signature | json`, and the chain value
/// after it.
pub fn sign_body(
    keys: &DeviceKeys,
    group_id: &[u8; 16],
    epoch: u32,
    name: &str,
    prev: &[u8; 32],
    json: &[u8],
) -> (Vec<u8>, [u8; 32]) {
    let signature = keys.sign(&signed_message(group_id, epoch, name, prev, json));
    ([&signature[..], json].concat(), chain(prev, &signature))
}

/// The body of an opened record, and the chain value after it, once its
/// signature checks against the writer's key (`known`, the key the writer
/// announced before, or else the one this record announces: its first)
/// and its place in the writer's chain (`prev`, the chain value of the
/// writer's record before it). `BadSignature` when it does not check,
/// `Content` when it is no body at all.
pub fn open_body(
    plain: &[u8],
    group_id: &[u8; 16],
    epoch: u32,
    name: &str,
    prev: &[u8; 32],
    known: Option<&str>,
) -> Result<(Body, [u8; 32]), RecordError> {
    if plain.len() < SIGNATURE_LEN {
        return Err(RecordError::Content("no signature"));
    }
    let (signature, json) = plain.split_at(SIGNATURE_LEN);
    let body = Body::decode(json)?;
    let signer = known.or(body.announced_signing()).ok_or(RecordError::BadSignature)?;
    verify(signer, &signed_message(group_id, epoch, name, prev, json), signature)?;
    Ok((body, chain(prev, signature)))
}

/// A packed body, and how many events it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub body: Vec<u8>,
    pub events: u64,
}

/// Packs changes, in order, into bodies whose signed plaintext is at most
/// [`MAX_BODY`] bytes. Each body holds whole changes; none is empty.
pub fn pack(changes: &[Change]) -> Result<Vec<Packed>, serde_json::Error> {
    const OPEN: &[u8] = br#"{"changes":["#;
    const CLOSE: &[u8] = b"]}";
    let mut bodies = Vec::new();
    let mut body = Packed { body: OPEN.to_vec(), events: 0 };
    for change in changes {
        let json = serde_json::to_vec(change)?;
        let first = body.body.len() == OPEN.len();
        if !first && body.body.len() + 1 + json.len() + CLOSE.len() > MAX_BODY - SIGNATURE_LEN {
            body.body.extend_from_slice(CLOSE);
            bodies.push(std::mem::replace(&mut body, Packed { body: OPEN.to_vec(), events: 0 }));
        }
        if body.body.len() > OPEN.len() {
            body.body.push(b',');
        }
        body.body.extend_from_slice(&json);
        body.events += matches!(change, Change::Event { .. }) as u64;
    }
    if body.body.len() > OPEN.len() {
        body.body.extend_from_slice(CLOSE);
        bodies.push(body);
    }
    Ok(bodies)
}

/// A record written but perhaps not yet stored by the backend: kept until
/// the backend took it, and sent again, byte for byte, after a kill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub name: String,
    pub blob: Vec<u8>,
    /// The events it holds (for the report of the sync that sends it).
    #[serde(default)]
    pub events: u64,
}

/// What a device keeps to sync (sealed in its store with the group).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncState {
    /// The sequence number of the next record this device writes.
    pub next_seq: u64,
    /// The records written and not yet confirmed stored, oldest first.
    pub outgoing: Vec<Outgoing>,
    /// The last of this device's own events written to a record.
    pub events_sent: i64,
    /// Per device (hex id): the last of its records applied here.
    pub applied: BTreeMap<String, u64>,
    /// Per device: the last of its event numbers imported here.
    pub imported: BTreeMap<String, i64>,
    /// The newest stamp this device made or saw.
    pub clock: Stamp,
    /// Per settings field: the stamp of the value held here.
    pub fields: BTreeMap<String, Stamp>,
    /// Fields changed here and not yet written to a record.
    pub fields_unsent: BTreeSet<String>,
    /// Every forgotten item known here, and up to when.
    pub forgets: BTreeMap<String, i64>,
    pub forgets_unsent: BTreeSet<String>,
    /// Retention: every event before this is gone.
    pub purge_before: i64,
    pub purge_sent: i64,
    /// The other devices' privacy ledger entries, by device.
    pub peer_ledgers: BTreeMap<String, Vec<LedgerEntry>>,
    /// This device's ledger entries as last written, by [`ledger_key`].
    pub ledger_sent: BTreeMap<String, LedgerEntry>,
    /// The experiment secret's stamp, and the secret as last written.
    pub secret_at: Option<Stamp>,
    pub secret_sent: Option<String>,
    /// The group's devices (this one included) as they announced
    /// themselves, and whether this one has.
    pub members: BTreeMap<String, Member>,
    pub member_sent: bool,
    /// Devices removed from the group, each with the last of its records
    /// the group applies.
    pub removed: BTreeMap<String, u64>,
    /// This device's chain value after its newest record, and each other
    /// writer's after its newest record applied here (hex; none: the
    /// chain's start).
    pub own_chain: Option<String>,
    pub chains: BTreeMap<String, String>,
    /// Each removed device's chain value after the last of its records the
    /// group applies, as the rotation that removed it says.
    pub removed_chains: BTreeMap<String, String>,
    /// Per key rotation this device took (by its new epoch), the devices it
    /// kept: a record sealed under an earlier epoch is taken only from a
    /// device the next rotation after that epoch kept (a removed device
    /// holds the earlier keys, and could write as a device never seen).
    pub kept: BTreeMap<u32, BTreeSet<String>>,
    /// The public keys of devices a rotation this device took kept, as the
    /// remover signed them, for those this device had not heard from: their
    /// records are checked against them (and a later removal here wraps to
    /// them); what a device announced itself is never replaced.
    pub pinned: BTreeMap<String, Member>,
    /// For a removed device whose records up to the last the group applies
    /// are not all applied here: the chain value after each one read so far
    /// (hex, by number). They are applied only once the whole run leads to
    /// the value the removal names, and each only as the bytes that were
    /// checked.
    pub removed_checked: BTreeMap<String, BTreeMap<u64, String>>,
    /// Whether this device knows which key epoch the key it holds is of
    /// (a device that joins after a rotation learns it on its first sync).
    pub epoch_known: bool,
    /// When the last sync ended here, and whether it got through.
    pub last_sync_ms: Option<i64>,
    pub last_sync_complete: bool,
}

/// Changes made here, kept apart from the [`SyncState`] (which a sync
/// under way rewrites) until the next record takes them in
/// ([`SyncState::take_notes`]): settings fields stamped, items forgotten,
/// retention's cut.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalNotes {
    pub fields: BTreeMap<String, Stamp>,
    pub forgets: BTreeMap<String, i64>,
    pub purge_before: i64,
    /// The newest stamp made here since the notes were last taken.
    pub clock: Stamp,
}

impl LocalNotes {
    /// A stamp for a change made here now, past the state's clock
    /// (`clock`, whose device is this one) and every stamp noted.
    pub fn tick(&mut self, clock: &Stamp, now_ms: i64) -> Stamp {
        let base = if (self.clock.ms, self.clock.n) > (clock.ms, clock.n) { &self.clock } else { clock };
        self.clock = base.next(now_ms, &clock.device);
        self.clock.clone()
    }

    /// Notes an item forgotten here, up to `through_ms`.
    pub fn forget(&mut self, item_id: &str, through_ms: i64) {
        raise(&mut self.forgets, item_id, through_ms);
    }

    /// Whether a tombstone noted here covers an event.
    pub fn covers(&self, event: &Event) -> bool {
        covered(&self.forgets, self.purge_before, event)
    }
}

/// How a ledger entry is known across devices: its writer charged it at
/// one moment for one round.
pub fn ledger_key(entry: &LedgerEntry) -> String {
    format!("{}:{}:{}", entry.at_ms, entry.run_id, entry.round.map_or(-1, |r| r as i128))
}

impl SyncState {
    /// A writer's chain value after its newest record applied here (its
    /// start when none is).
    pub fn chain_of(&self, device: &str) -> [u8; 32] {
        self.chains.get(device).and_then(|h| unhex(h)).unwrap_or(CHAIN_START)
    }

    /// The key a device's records are checked against: the one it
    /// announced, or else the one a rotation this device took pinned.
    pub fn signing_key(&self, device: &str) -> Option<&str> {
        self.members.get(device).or(self.pinned.get(device)).map(|m| m.signing.as_str())
    }

    /// This device's own chain value after its newest record.
    pub fn own_chain_value(&self) -> [u8; 32] {
        self.own_chain.as_deref().and_then(unhex).unwrap_or(CHAIN_START)
    }

    /// A state for a device that just joined or created a group.
    pub fn new(device: &str) -> SyncState {
        SyncState { next_seq: 1, clock: Stamp { ms: 0, n: 0, device: device.into() }, ..SyncState::default() }
    }

    /// A new stamp for a change made here now.
    pub fn tick(&mut self, now_ms: i64) -> Stamp {
        self.clock = self.clock.next(now_ms, &self.clock.device);
        self.clock.clone()
    }

    /// Moves the clock past a stamp seen in another device's record.
    pub fn observe(&mut self, seen: &Stamp) {
        if (seen.ms, seen.n) > (self.clock.ms, self.clock.n) {
            self.clock.ms = seen.ms;
            self.clock.n = seen.n;
        }
    }

    /// Takes in the changes noted here since the last record: each is
    /// written in the next one, unless a newer stamp from another device
    /// came first.
    pub fn take_notes(&mut self, notes: LocalNotes) {
        self.observe(&notes.clock);
        for (field, at) in notes.fields {
            if self.fields.get(&field).is_none_or(|held| *held < at) {
                self.fields.insert(field.clone(), at);
                self.fields_unsent.insert(field);
            }
        }
        for (item_id, through_ms) in notes.forgets {
            self.forget(&item_id, through_ms);
        }
        self.purge_before = self.purge_before.max(notes.purge_before);
    }

    /// Notes a settings field changed here.
    pub fn set_field(&mut self, field: &str, now_ms: i64) {
        let at = self.tick(now_ms);
        self.fields.insert(field.into(), at);
        self.fields_unsent.insert(field.into());
    }

    /// Notes an item forgotten here, up to `through_ms`.
    pub fn forget(&mut self, item_id: &str, through_ms: i64) {
        raise(&mut self.forgets, item_id, through_ms);
        self.forgets_unsent.insert(item_id.into());
    }

    /// Whether an event is covered by a tombstone known here.
    pub fn is_dropped(&self, event: &Event) -> bool {
        covered(&self.forgets, self.purge_before, event)
    }

    /// Every ledger entry of the person's other devices.
    pub fn peer_entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.peer_ledgers.values().flatten()
    }

    /// Takes in one of another device's ledger entries (new or updated).
    pub fn take_peer_entry(&mut self, device: &str, entry: LedgerEntry) {
        let entries = self.peer_ledgers.entry(device.into()).or_default();
        let key = ledger_key(&entry);
        match entries.iter_mut().find(|e| ledger_key(e) == key) {
            Some(e) => *e = entry,
            None => {
                entries.push(entry);
                entries.sort_by_key(|e| e.at_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests;
