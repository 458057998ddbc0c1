//! Removing a device from the person's group: the remover draws a new
//! profile key for the next key epoch and leaves, on the backend, a
//! rotation naming the devices removed, the new key wrapped for each
//! device that stays, and every earlier key sealed under the new one (for
//! devices that join later), signed by the remover. A removed device holds
//! no key for anything written after it.
//!
//! Each device has two long-lived keys of its own, made when it creates or
//! joins the group and sealed in its store: an X25519 key that rotations
//! wrap the new key to, and an Ed25519 key it signs its rotations with. It
//! announces their public halves to the group (a `member` change in its
//! records, sealed under the group key).
//!
//! A wrap: X25519 of a fresh ephemeral key and the device's public key;
//! HKDF-SHA256 of that secret, salted with the group id, for `"hearth sync
//! v1 wrap" | epoch (u32 LE) | device id | ephemeral public key | device
//! public key`; AES-256-GCM of the 32-byte key with a zero nonce (each key
//! is used once) and that info as additional data. The earlier keys:
//! AES-256-GCM under HKDF-SHA256 of the new key (salt the group id, info
//! `"hearth sync v1 earlier keys" | epoch`), zero nonce, of `epoch (u32 LE)
//! | key` for each. The blob: `version | Ed25519 signature (64) | JSON`,
//! the signature over `"hearth sync v1 rotation\0" | group id | JSON`.
//!
//! X25519 is x25519-dalek's (ring's X25519 keys cannot be kept); Ed25519,
//! HKDF and AES-GCM are ring's.

use std::collections::BTreeMap;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use super::hex;
use super::records::RecordError;

const WRAP: &[u8] = b"hearth sync v1 wrap";
const EARLIER: &[u8] = b"hearth sync v1 earlier keys";
const SIGNED: &[u8] = b"hearth sync v1 rotation\0";
const VERSION: u8 = 1;
/// The length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// The largest rotation blob read (a group of a few hundred devices).
pub const MAX_ROTATION: usize = 256 * 1024;

type Result<T> = std::result::Result<T, RecordError>;

fn unhex<const N: usize>(text: &str) -> Result<[u8; N]> {
    super::unhex(text).ok_or(RecordError::Content("a key that is not hex of its length"))
}

/// A device's own keys in its group.
pub struct DeviceKeys {
    agreement: StaticSecret,
    signing: Ed25519KeyPair,
    signing_pkcs8: Vec<u8>,
}

impl DeviceKeys {
    /// New keys from the system's CSPRNG.
    pub fn generate() -> Result<DeviceKeys> {
        let rng = SystemRandom::new();
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(|_| RecordError::Content("no randomness"))?;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| RecordError::Content("no randomness"))?;
        DeviceKeys::from_parts(secret, pkcs8.as_ref())
    }

    /// The keys from what the store keeps.
    pub fn from_parts(agreement: [u8; 32], signing_pkcs8: &[u8]) -> Result<DeviceKeys> {
        let signing = Ed25519KeyPair::from_pkcs8(signing_pkcs8).map_err(|_| RecordError::Content("a signing key"))?;
        Ok(DeviceKeys { agreement: StaticSecret::from(agreement), signing, signing_pkcs8: signing_pkcs8.to_vec() })
    }

    /// What the store keeps: the X25519 secret and the Ed25519 PKCS#8
    /// document.
    pub fn parts(&self) -> ([u8; 32], Vec<u8>) {
        (self.agreement.to_bytes(), self.signing_pkcs8.clone())
    }

    /// The public halves, as a member announces them.
    pub fn public(&self) -> (String, String) {
        (hex(PublicKey::from(&self.agreement).as_bytes()), hex(self.signing.public_key().as_ref()))
    }

    /// An Ed25519 signature of `message` (the writer's signature on each of
    /// its records, `super::changes::signed_message`).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).as_ref().try_into().expect("an Ed25519 signature is 64 bytes")
    }
}

/// Checks an Ed25519 `signature` of `message` under `public` (hex, as a
/// member announces it): `BadSignature` when it does not check.
pub fn verify(public: &str, message: &[u8], signature: &[u8]) -> Result<()> {
    let public: [u8; 32] = unhex(public)?;
    UnparsedPublicKey::new(&ED25519, public).verify(message, signature).map_err(|_| RecordError::BadSignature)
}

/// The new key wrapped for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrap {
    pub device: String,
    pub ephemeral: String,
    pub sealed: String,
}

/// The public keys of a device a rotation keeps, as the remover knows them
/// (hex, as the device announced them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptKeys {
    pub agreement: String,
    pub signing: String,
}

/// A rotation to a new key epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// The new epoch.
    pub epoch: u32,
    /// The device that removed (and signed).
    pub by: String,
    /// The devices removed, each with the last of its records the remover
    /// applied: the group applies none of theirs after it.
    pub removed: BTreeMap<String, u64>,
    pub wraps: Vec<Wrap>,
    /// Every earlier epoch's key, sealed under the new key.
    pub earlier: String,
    /// The public keys of each device kept, as signed by the remover: a
    /// device that takes the rotation checks those devices' records
    /// against them, whatever an earlier-epoch record announced.
    #[serde(default)]
    pub keys: BTreeMap<String, KeptKeys>,
    /// Each removed device's chain value (hex) after the last of its
    /// records the remover applied (`super::changes::chain`): a device
    /// that had not read them yet takes them only if they lead there.
    #[serde(default)]
    pub removed_chains: BTreeMap<String, String>,
}

fn aes(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"))
}

fn wrap_info(epoch: u32, device: &str, ephemeral: &[u8; 32], public: &[u8; 32]) -> Vec<u8> {
    [WRAP, &epoch.to_le_bytes(), device.as_bytes(), ephemeral, public].concat()
}

/// Seals `key` for `device` (its X25519 public key `public`) with the
/// ephemeral secret `ephemeral`.
pub fn wrap_key(
    group_id: &[u8; 16],
    epoch: u32,
    device: &str,
    public: &[u8; 32],
    ephemeral: [u8; 32],
    key: &[u8; 32],
) -> Wrap {
    let ephemeral = StaticSecret::from(ephemeral);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*public));
    let info = wrap_info(epoch, device, &ephemeral_public, public);
    let mut kek = [0u8; 32];
    super::hkdf(shared.as_bytes(), group_id, &info, &mut kek);
    let mut sealed = key.to_vec();
    aes(&kek)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(&info), &mut sealed)
        .expect("AES-GCM seals 32 bytes");
    Wrap { device: device.into(), ephemeral: hex(&ephemeral_public), sealed: hex(&sealed) }
}

impl DeviceKeys {
    /// Opens a wrap made for this device (`device`, its id).
    pub fn unwrap_key(&self, group_id: &[u8; 16], epoch: u32, device: &str, wrap: &Wrap) -> Result<[u8; 32]> {
        let ephemeral: [u8; 32] = unhex(&wrap.ephemeral)?;
        let mut sealed = unhex::<48>(&wrap.sealed)?.to_vec();
        let public = PublicKey::from(&self.agreement).to_bytes();
        let shared = self.agreement.diffie_hellman(&PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(RecordError::Unsealed);
        }
        let info = wrap_info(epoch, device, &ephemeral, &public);
        let mut kek = [0u8; 32];
        super::hkdf(shared.as_bytes(), group_id, &info, &mut kek);
        let plain = aes(&kek)
            .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(&info), &mut sealed)
            .map_err(|_| RecordError::Unsealed)?;
        Ok(plain.try_into().expect("32 bytes"))
    }
}

fn earlier_key(group_id: &[u8; 16], epoch: u32, key: &[u8; 32]) -> LessSafeKey {
    let mut out = [0u8; 32];
    super::hkdf(key, group_id, &[EARLIER, &epoch.to_le_bytes()].concat(), &mut out);
    aes(&out)
}

/// Every earlier key, sealed under the key of `epoch`, with `aad` (the
/// rotation's [`Rotation::header`]) bound to them.
pub fn seal_earlier(
    group_id: &[u8; 16],
    epoch: u32,
    key: &[u8; 32],
    earlier: &BTreeMap<u32, [u8; 32]>,
    aad: &[u8],
) -> String {
    let mut plain = Vec::with_capacity(36 * earlier.len());
    for (e, k) in earlier {
        plain.extend_from_slice(&e.to_le_bytes());
        plain.extend_from_slice(k);
    }
    earlier_key(group_id, epoch, key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), &mut plain)
        .expect("AES-GCM seals the keys");
    hex(&plain)
}

/// Opens the earlier keys of a rotation to `epoch` with its key.
pub fn open_earlier(
    group_id: &[u8; 16],
    epoch: u32,
    key: &[u8; 32],
    sealed: &str,
    aad: &[u8],
) -> Result<BTreeMap<u32, [u8; 32]>> {
    if sealed.len() % 2 != 0 || sealed.len() > 2 * MAX_ROTATION || !sealed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RecordError::Content("earlier keys that are not hex"));
    }
    let mut bytes: Vec<u8> =
        (0..sealed.len() / 2).map(|i| u8::from_str_radix(&sealed[2 * i..2 * i + 2], 16).expect("hex")).collect();
    let plain = earlier_key(group_id, epoch, key)
        .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), &mut bytes)
        .map_err(|_| RecordError::Unsealed)?;
    if plain.len() % 36 != 0 {
        return Err(RecordError::Content("earlier keys of a wrong length"));
    }
    Ok(plain
        .chunks(36)
        .map(|c| (u32::from_le_bytes(c[..4].try_into().expect("4")), c[4..].try_into().expect("32")))
        .collect())
}

impl Rotation {
    /// What the earlier keys' sealing binds: the epoch, the remover and the
    /// devices removed, as JSON (`[epoch,"by",{"device":seq}]`). A device
    /// that joins later, and cannot check the signature yet, knows from it
    /// that a device of the group wrote them.
    pub fn header(&self) -> Vec<u8> {
        serde_json::to_vec(&(self.epoch, &self.by, &self.removed)).expect("a header serializes")
    }

    /// The rotation a blob holds, without checking its signature: for a
    /// device that joined after it, which checks it by opening the earlier
    /// keys (bound to [`Rotation::header`]) with its own key.
    pub fn parse_unverified(blob: &[u8]) -> Result<Rotation> {
        if blob.len() > MAX_ROTATION {
            return Err(RecordError::TooLarge { size: blob.len() as u64 });
        }
        if blob.len() < 1 + SIGNATURE_LEN || blob[0] != VERSION {
            return Err(RecordError::Malformed("not a rotation"));
        }
        serde_json::from_slice(&blob[1 + SIGNATURE_LEN..]).map_err(|_| RecordError::Content("not a rotation's fields"))
    }

    /// The blob: signed by `keys`, for the group `group_id`.
    pub fn sign(&self, group_id: &[u8; 16], keys: &DeviceKeys) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a rotation serializes");
        let signature = keys.signing.sign(&[SIGNED, group_id, &json].concat());
        [&[VERSION][..], signature.as_ref(), &json].concat()
    }

    /// The rotation a blob holds, once its signature checks against the
    /// signing key of the device it names (`signing_key`, looked up by the
    /// caller from `by`, as `signer` gives it).
    pub fn open(group_id: &[u8; 16], blob: &[u8], signer: impl Fn(&str) -> Option<String>) -> Result<Rotation> {
        let rotation = Rotation::parse_unverified(blob)?;
        let (signature, json) = blob[1..].split_at(SIGNATURE_LEN);
        let public: [u8; 32] = unhex(&signer(&rotation.by).ok_or(RecordError::Unsealed)?)?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(&[SIGNED, group_id, json].concat(), signature)
            .map_err(|_| RecordError::Unsealed)?;
        Ok(rotation)
    }
}

#[cfg(test)]
mod tests;
