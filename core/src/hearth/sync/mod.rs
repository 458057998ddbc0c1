//! The person's sync group on this device: its key sealed in the store,
//! and the pairing that brings another device in (`crate::sync::pairing`),
//! driven by the app over bytes it relays (a QR code, its backend) and the
//! digits it shows; then `sync` (exchange.rs) keeps the devices of the
//! group in step through the app's backend. Kotlin and Swift call the same
//! methods (UniFFI), with the backend as their own `SyncTransport`.
//!
//! One pairing at a time per store, held in memory: a pairing survives no
//! restart (the person starts again), and nothing of it is written until
//! the joiner has the group key.

mod exchange;
mod local;
mod removal;

use std::collections::BTreeMap;

pub use exchange::{
    RefusalKind, RefusedRecord, SyncBlob, SyncOptions, SyncReport, SyncStatus, SyncTransport, SyncTransportError,
};
pub use removal::SyncDevice;
use serde::{Deserialize, Serialize};

use super::{Hearth, shield};
use crate::error::{Error, HearthError, Result};
use crate::model::parse_hex;
use crate::store::crypto::random_bytes;
use crate::store::history::now_ms;
use crate::sync::changes::{Member, SyncState};
use crate::sync::hex;
use crate::sync::pairing::{GroupKey, Inviter, Joiner, PairingError, PairingMessage, SAS_DIGITS};
use crate::sync::records::RecordKey;
use crate::sync::rotation::DeviceKeys;

/// The state record of the group.
const GROUP: &str = "sync_group";

/// The group as this device holds it (sealed in the store).
#[derive(Clone, Serialize, Deserialize)]
struct StoredGroup {
    group_id: String,
    /// The key of the current epoch.
    profile_key: String,
    device_id: String,
    joined_ms: i64,
    /// The current key epoch: 1, and one more each time a device is
    /// removed.
    #[serde(default = "first_epoch")]
    epoch: u32,
    /// The keys of earlier epochs, to read what was written under them.
    #[serde(default)]
    earlier: BTreeMap<u32, String>,
    /// This device's own keys in the group (hex): its X25519 secret and
    /// its Ed25519 key's PKCS#8 document (`crate::sync::rotation`).
    #[serde(default)]
    agreement: String,
    #[serde(default)]
    signing: String,
}

fn first_epoch() -> u32 {
    1
}

/// This device's sync group, as the person's screens show it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncGroupInfo {
    /// The group's id and this device's, in hex (random, not derived from
    /// anything of the person).
    pub group_id: String,
    pub device_id: String,
    /// When this device created or joined the group.
    pub joined_ms: i64,
}

/// The inviter's step once the joiner answered: the message to relay back
/// to the joiner, and the digits to show, which the joiner's screen shows
/// too when no one came between them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InviteReply {
    pub message: Vec<u8>,
    /// Six digits ("042917"), shown as they are.
    pub digits: String,
}

/// The digits a screen shows: zero-padded, always `SAS_DIGITS` of them.
fn digits_text(digits: u32) -> String {
    format!("{digits:0width$}", width = SAS_DIGITS as usize)
}

/// A pairing under way on this device.
pub(crate) enum Pairing {
    Inviting(Inviter),
    Joining(Joiner),
}

/// `N` bytes from the hex a stored group holds; an integrity failure when
/// it is not that.
fn unhex<const N: usize>(text: &str) -> Result<[u8; N]> {
    crate::sync::unhex(text).ok_or(Error::Integrity { table: "state" })
}

fn random<const N: usize>() -> Result<[u8; N]> {
    Ok(random_bytes(N)?.try_into().expect("N random bytes"))
}

impl From<PairingError> for Error {
    fn from(e: PairingError) -> Self {
        match e {
            PairingError::Random => Error::Crypto("no randomness"),
            other => Error::invalid("pairing", other.to_string()),
        }
    }
}

impl StoredGroup {
    fn info(&self) -> SyncGroupInfo {
        SyncGroupInfo { group_id: self.group_id.clone(), device_id: self.device_id.clone(), joined_ms: self.joined_ms }
    }

    fn key(&self) -> Result<GroupKey> {
        Ok(GroupKey { group_id: unhex(&self.group_id)?, profile_key: unhex(&self.profile_key)? })
    }

    fn new(key: &GroupKey) -> Result<StoredGroup> {
        let (agreement, signing) = DeviceKeys::generate().map_err(|_| Error::Crypto("no randomness"))?.parts();
        Ok(StoredGroup {
            group_id: hex(&key.group_id),
            profile_key: hex(&key.profile_key),
            device_id: hex(&random::<8>()?),
            joined_ms: now_ms(),
            epoch: 1,
            earlier: BTreeMap::new(),
            agreement: hex(&agreement),
            signing: hex(&signing),
        })
    }

    fn group_id(&self) -> Result<[u8; 16]> {
        unhex(&self.group_id)
    }

    fn device_keys(&self) -> Result<DeviceKeys> {
        let signing = parse_hex(&self.signing).ok_or(Error::Integrity { table: "state" })?;
        DeviceKeys::from_parts(unhex(&self.agreement)?, &signing).map_err(|_| Error::Integrity { table: "state" })
    }

    /// The key of every epoch this device holds.
    fn epoch_keys(&self) -> Result<BTreeMap<u32, [u8; 32]>> {
        let mut keys = BTreeMap::new();
        for (epoch, key) in &self.earlier {
            keys.insert(*epoch, unhex(key)?);
        }
        keys.insert(self.epoch, unhex(&self.profile_key)?);
        Ok(keys)
    }

    /// The record key of every epoch this device holds.
    fn record_keys(&self) -> Result<BTreeMap<u32, RecordKey>> {
        let group_id = self.group_id()?;
        Ok(self
            .epoch_keys()?
            .into_iter()
            .map(|(epoch, profile_key)| (epoch, RecordKey::new(&GroupKey { group_id, profile_key }, epoch)))
            .collect())
    }

    /// This device as its `member` change announces it.
    fn member(&self) -> Result<Member> {
        let (agreement, signing) = self.device_keys()?.public();
        Ok(Member { agreement, signing, joined_ms: self.joined_ms })
    }

    /// A new sync state for this device, knowing itself as a member;
    /// `creator` when it made the group (and so knows its key's epoch).
    fn new_state(&self, creator: bool) -> Result<SyncState> {
        let mut state = SyncState::new(&self.device_id);
        state.members.insert(self.device_id.clone(), self.member()?);
        state.epoch_known = creator;
        Ok(state)
    }
}

impl Hearth {
    fn stored_group(&self) -> std::result::Result<Option<StoredGroup>, HearthError> {
        self.with(|s| s.store.get_json(GROUP))
    }

    /// The group key this device holds (for the workspace's tests, which
    /// play another device of the group through `testing`).
    pub(crate) fn group_key(&self) -> std::result::Result<Option<GroupKey>, HearthError> {
        Ok(self.stored_group()?.map(|g| g.key()).transpose()?)
    }

    /// A record's plaintext as this device signs it (for `testing`).
    pub(crate) fn signed_record_body(
        &self,
        epoch: u32,
        name: &str,
        prev: &[u8; 32],
        json: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, HearthError> {
        let Some(group) = self.stored_group()? else { return Ok(None) };
        let (plain, _) =
            crate::sync::changes::sign_body(&group.device_keys()?, &group.group_id()?, epoch, name, prev, json);
        Ok(Some(plain))
    }

    fn pairing(&self) -> std::sync::MutexGuard<'_, Option<Pairing>> {
        self.pairing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Pairing: the inviter calls `invite_device`, `invite_answer` and
/// `invite_confirm`; the joiner `join_device`, `join_reveal` and
/// `join_finish`; the app relays the messages between them (a QR code one
/// way, its backend or a second code the other) and shows the digits on
/// both screens for the person to compare.
#[uniffi::export]
impl Hearth {
    /// This device's sync group, if it is in one.
    pub fn sync_group(&self) -> std::result::Result<Option<SyncGroupInfo>, HearthError> {
        shield(|| Ok(self.stored_group()?.map(|g| g.info())))
    }

    /// Starts the person's sync group on this device (a new group id and
    /// profile key from the system's CSPRNG, sealed in the store).
    /// `InvalidInput` when the device is in a group already.
    pub fn create_sync_group(&self) -> std::result::Result<SyncGroupInfo, HearthError> {
        shield(|| {
            if self.stored_group()?.is_some() {
                return Err(Error::invalid("sync group", "this device is in a group already").into());
            }
            let group = StoredGroup::new(&GroupKey { group_id: random()?, profile_key: random()? })?;
            self.with(|s| {
                // The group's settings start as this device's.
                let mut state = group.new_state(true)?;
                s.stamp_all_settings(&mut state)?;
                s.store.put_states(&[(GROUP, serde_json::to_vec(&group)?), (local::STATE, serde_json::to_vec(&state)?)])
            })?;
            Ok(group.info())
        })
    }

    /// Starts bringing another device into this device's group: the first
    /// message to show (a QR code) or relay. A pairing already under way
    /// is dropped.
    pub fn invite_device(&self) -> std::result::Result<Vec<u8>, HearthError> {
        shield(|| {
            let group = self.stored_group()?.ok_or_else(|| Error::invalid("sync group", "this device is in none"))?;
            let (inviter, commit) = Inviter::start(group.key()?).map_err(Error::from)?;
            *self.pairing() = Some(Pairing::Inviting(inviter));
            Ok(PairingMessage::Commit(commit).encode())
        })
    }

    /// The joiner's answer: the message to relay back, and the digits to
    /// show (the joiner shows the same ones).
    pub fn invite_answer(&self, answer: Vec<u8>) -> std::result::Result<InviteReply, HearthError> {
        shield(|| {
            let mut pairing = self.pairing();
            let Some(Pairing::Inviting(inviter)) = pairing.as_mut() else {
                return Err(Error::invalid("pairing", "no invitation under way").into());
            };
            let Ok(PairingMessage::Answer(answer)) = PairingMessage::decode(&answer) else {
                *pairing = None;
                return Err(Error::invalid("pairing", "not an answer").into());
            };
            match inviter.reveal(&answer) {
                Ok((reveal, digits)) => {
                    Ok(InviteReply { message: PairingMessage::Reveal(reveal).encode(), digits: digits_text(digits) })
                }
                Err(e) => {
                    *pairing = None;
                    Err(Error::from(e).into())
                }
            }
        })
    }

    /// Whether the person saw the same digits on both screens: if so, the
    /// message that hands the other device the group key; if not, None and
    /// the pairing is over. Either way nothing more of it is held.
    pub fn invite_confirm(&self, digits_match: bool) -> std::result::Result<Option<Vec<u8>>, HearthError> {
        shield(|| {
            let Some(Pairing::Inviting(inviter)) = self.pairing().take() else {
                return Err(Error::invalid("pairing", "no invitation under way").into());
            };
            if !digits_match {
                return Ok(None);
            }
            Ok(Some(PairingMessage::Welcome(inviter.welcome(true).map_err(Error::from)?).encode()))
        })
    }

    /// Answers another device's invitation (its first message): the
    /// message to relay back. `InvalidInput` when this device is in a group
    /// already (leave it first).
    pub fn join_device(&self, invitation: Vec<u8>) -> std::result::Result<Vec<u8>, HearthError> {
        shield(|| {
            if self.stored_group()?.is_some() {
                return Err(Error::invalid("sync group", "this device is in a group already").into());
            }
            let PairingMessage::Commit(commit) = PairingMessage::decode(&invitation).map_err(Error::from)? else {
                return Err(Error::invalid("pairing", "not an invitation").into());
            };
            let (joiner, answer) = Joiner::answer(commit).map_err(Error::from)?;
            *self.pairing() = Some(Pairing::Joining(joiner));
            Ok(PairingMessage::Answer(answer).encode())
        })
    }

    /// The inviter's reveal: the digits to show (six, as they are).
    pub fn join_reveal(&self, reveal: Vec<u8>) -> std::result::Result<String, HearthError> {
        shield(|| {
            let mut pairing = self.pairing();
            let Some(Pairing::Joining(joiner)) = pairing.as_mut() else {
                return Err(Error::invalid("pairing", "no joining under way").into());
            };
            let checked = match PairingMessage::decode(&reveal) {
                Ok(PairingMessage::Reveal(reveal)) => joiner.check(&reveal).map_err(Error::from),
                _ => Err(Error::invalid("pairing", "not a reveal")),
            };
            if checked.is_err() {
                *pairing = None;
            }
            Ok(digits_text(checked?))
        })
    }

    /// The inviter's welcome, once the person saw the same digits on both
    /// screens (`digits_match`): this device joins the group, its key
    /// sealed in the store. Without the confirmation, or with a welcome
    /// that does not open, nothing is stored and the pairing is over.
    pub fn join_finish(&self, welcome: Vec<u8>, digits_match: bool) -> std::result::Result<SyncGroupInfo, HearthError> {
        shield(|| {
            let Some(Pairing::Joining(joiner)) = self.pairing().take() else {
                return Err(Error::invalid("pairing", "no joining under way").into());
            };
            let PairingMessage::Welcome(welcome) = PairingMessage::decode(&welcome).map_err(Error::from)? else {
                return Err(Error::invalid("pairing", "not a welcome").into());
            };
            let key = joiner.accept(&welcome, digits_match).map_err(Error::from)?;
            let group = StoredGroup::new(&key)?;
            // The joiner takes the group's settings as its first sync
            // brings them.
            let state = group.new_state(false)?;
            self.with(|s| {
                s.store.put_states(&[(GROUP, serde_json::to_vec(&group)?), (local::STATE, serde_json::to_vec(&state)?)])
            })?;
            Ok(group.info())
        })
    }

    /// Forgets the group on this device (its key included); the other
    /// devices keep it. Whether there was one.
    pub fn leave_sync_group(&self) -> std::result::Result<bool, HearthError> {
        shield(|| {
            *self.pairing() = None;
            let had = self.stored_group()?.is_some();
            if had {
                self.with(|s| s.store.delete_states(&[local::STATE, local::NOTES, GROUP]))?;
            }
            Ok(had)
        })
    }
}
