//! A sync record as the backend holds it: one opaque blob, named for the
//! device that wrote it and its place in that device's sequence, sealed
//! under the group's profile key and padded so that its size says only
//! which of a few buckets its content fell in.
//!
//! Name: `<device id, 16 hex digits>-<sequence, 10 decimal digits>`. The
//! backend sees which device of the group wrote a blob and how many it
//! wrote (it sees who uploads anyway), never what is in one.
//!
//! Blob: `version (1) | key epoch (u32 LE) | nonce (12) | ciphertext | tag
//! (16)`. The key is HKDF-SHA256 of the epoch's profile key, salted with
//! the group id, for `"hearth sync v1 records" | epoch (u32 LE)`; AES-256-GCM
//! with a random nonce, and the additional data binds the group id, the
//! epoch and the blob's name, so a blob opens only for the group and under
//! the name it was written for (a blob moved, renamed or copied from
//! another group is refused). The plaintext is `length (u32 LE) | body |
//! zeros` up to the smallest of [`BUCKETS`] that holds it; an opened blob
//! whose padding is not all zeros or whose length does not fit is refused.

use std::collections::BTreeMap;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::pairing::GroupKey;

/// Why a blob was refused. Nothing of a refused blob is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a blob of this format (too short, unknown version, a bad name).
    #[error("not a sync record: {0}")]
    Malformed(&'static str),
    /// The blob is bigger than any record.
    #[error("a blob of {size} bytes is larger than any sync record")]
    TooLarge { size: u64 },
    /// Sealed under a key epoch this device does not hold.
    #[error("sealed under key epoch {epoch}, which this device does not hold")]
    UnknownEpoch { epoch: u32 },
    /// The blob does not open under the group's key for its name: tampered
    /// with, truncated, renamed or another group's.
    #[error("the blob does not open for this group and name")]
    Unsealed,
    /// It opened, but what it holds is not a record this version reads.
    #[error("the record's content is not valid: {0}")]
    Content(&'static str),
    /// Written by a device removed from the group, after its removal.
    #[error("written by a device removed from the group, after its removal")]
    FromRemovedDevice,
    /// It opened, but its writer's signature does not check (written with
    /// the group's key by another device, or by a device not announced).
    #[error("not signed by the device it names")]
    BadSignature,
    /// Sealed under a key epoch before a rotation that did not keep its
    /// writer (a removed device, or one the group never knew).
    #[error("sealed under an earlier key by a device the group's rotation did not keep")]
    NotKept,
    /// A removed device's records that do not lead to the chain value its
    /// removal names: not the records the group applied.
    #[error("not the records of a removed device that its removal names")]
    OffChain,
}

type Result<T> = std::result::Result<T, RecordError>;

/// The format version this library writes and reads: 2, whose plaintext
/// is the writer's signature and the body (`super::changes::sign_body`).
/// Version 1, unsigned, was never released and is refused.
pub const VERSION: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Version, epoch, nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// The plaintext sizes a record is padded to.
pub const BUCKETS: [usize; 5] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10];
/// The longest body a record holds.
pub const MAX_BODY: usize = BUCKETS[BUCKETS.len() - 1] - 4;
/// The largest blob a record is.
pub const MAX_BLOB: usize = HEADER_LEN + BUCKETS[BUCKETS.len() - 1] + TAG_LEN;
/// Every size a blob can have: one per bucket.
pub const BLOB_SIZES: [usize; 5] = {
    let mut sizes = [0; 5];
    let mut i = 0;
    while i < BUCKETS.len() {
        sizes[i] = HEADER_LEN + BUCKETS[i] + TAG_LEN;
        i += 1;
    }
    sizes
};
const SEQ_DIGITS: usize = 10;

const KEY_INFO: &[u8] = b"hearth sync v1 records";
const AAD_PREFIX: &[u8] = b"hearth sync v1 record\0";

/// A blob's name: the device that wrote it and its sequence number there
/// (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordName {
    pub device: [u8; 8],
    pub seq: u64,
}

impl RecordName {
    /// The largest sequence number a name holds.
    pub const MAX_SEQ: u64 = 9_999_999_999;

    pub fn encode(&self) -> String {
        format!("{}-{:0width$}", super::hex(&self.device), self.seq, width = SEQ_DIGITS)
    }

    /// Parses a name this format writes; anything else is `Malformed`.
    pub fn parse(name: &str) -> Result<RecordName> {
        let bad = RecordError::Malformed("a blob name is <16 hex digits>-<10 digits>");
        let (device, seq) = name.split_once('-').ok_or(bad.clone())?;
        let lower_hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if device.len() != 16
            || !device.bytes().all(lower_hex)
            || seq.len() != SEQ_DIGITS
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad);
        }
        let mut id = [0u8; 8];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&device[2 * i..2 * i + 2], 16).map_err(|_| bad.clone())?;
        }
        let seq: u64 = seq.parse().map_err(|_| bad.clone())?;
        if seq == 0 {
            return Err(bad);
        }
        Ok(RecordName { device: id, seq })
    }
}

/// The AES-256-GCM key of one key epoch of a group.
pub struct RecordKey {
    group_id: [u8; 16],
    epoch: u32,
    key: LessSafeKey,
}

impl RecordKey {
    pub fn new(group: &GroupKey, epoch: u32) -> RecordKey {
        let mut key = [0u8; 32];
        super::hkdf(&group.profile_key, &group.group_id, &[KEY_INFO, &epoch.to_le_bytes()].concat(), &mut key);
        RecordKey {
            group_id: group.group_id,
            epoch,
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key")),
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn aad(&self, name: &str) -> Vec<u8> {
        [AAD_PREFIX, &self.group_id, &self.epoch.to_le_bytes(), name.as_bytes()].concat()
    }

    /// Seals `body` (at most [`MAX_BODY`] bytes) as the blob `name`, with
    /// `nonce` (fresh from the CSPRNG for every blob).
    pub fn seal(&self, name: &RecordName, body: &[u8], nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>> {
        self.seal_named(&name.encode(), body, nonce)
    }

    /// Opens the blob `name` sealed under this key: its body.
    pub fn open(&self, name: &RecordName, blob: &[u8]) -> Result<Vec<u8>> {
        self.open_named(&name.encode(), blob)
    }

    /// As [`RecordKey::seal`], for a blob outside the devices' sequences
    /// (the group-wide wipe).
    pub fn seal_named(&self, name: &str, body: &[u8], nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>> {
        let mut sealed = pad(body)?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad(name)), &mut sealed)
            .map_err(|_| RecordError::TooLarge { size: body.len() as u64 })?;
        let mut blob = Vec::with_capacity(HEADER_LEN + sealed.len());
        blob.push(VERSION);
        blob.extend_from_slice(&self.epoch.to_le_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// As [`RecordKey::open`], for a blob outside the devices' sequences.
    pub fn open_named(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>> {
        if blob_epoch(blob)? != self.epoch {
            return Err(RecordError::UnknownEpoch { epoch: blob_epoch(blob)? });
        }
        let nonce: [u8; NONCE_LEN] = blob[5..HEADER_LEN].try_into().expect("12 bytes");
        let mut sealed = blob[HEADER_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad(name)), &mut sealed)
            .map_err(|_| RecordError::Unsealed)?;
        unpad(plain).map(<[u8]>::to_vec)
    }
}

/// Opens the blob `name` under the key of the epoch it says it is sealed
/// under, of those in `keys`: the epoch and the plaintext.
pub fn open_under(keys: &BTreeMap<u32, RecordKey>, name: &RecordName, blob: &[u8]) -> Result<(u32, Vec<u8>)> {
    let epoch = blob_epoch(blob)?;
    let plain = keys.get(&epoch).ok_or(RecordError::UnknownEpoch { epoch })?.open(name, blob)?;
    Ok((epoch, plain))
}

/// The key epoch a blob says it is sealed under, after the checks that
/// need no key (size, version).
pub fn blob_epoch(blob: &[u8]) -> Result<u32> {
    if blob.len() > MAX_BLOB {
        return Err(RecordError::TooLarge { size: blob.len() as u64 });
    }
    if blob.len() < HEADER_LEN + TAG_LEN {
        return Err(RecordError::Malformed("shorter than a header and a tag"));
    }
    if blob[0] != VERSION {
        return Err(RecordError::Malformed("an unknown version"));
    }
    if !BLOB_SIZES.contains(&blob.len()) {
        return Err(RecordError::Malformed("not one of the padded sizes"));
    }
    Ok(u32::from_le_bytes(blob[1..5].try_into().expect("4 bytes")))
}

/// `length | body | zeros` up to the smallest bucket that holds it.
fn pad(body: &[u8]) -> Result<Vec<u8>> {
    if body.len() > MAX_BODY {
        return Err(RecordError::TooLarge { size: body.len() as u64 });
    }
    let bucket = BUCKETS.iter().copied().find(|b| *b >= body.len() + 4).expect("MAX_BODY fits the largest");
    let mut plain = Vec::with_capacity(bucket + TAG_LEN);
    plain.extend_from_slice(&(body.len() as u32).to_le_bytes());
    plain.extend_from_slice(body);
    plain.resize(bucket, 0);
    Ok(plain)
}

fn unpad(plain: &[u8]) -> Result<&[u8]> {
    if !BUCKETS.contains(&plain.len()) {
        return Err(RecordError::Content("not a padded size"));
    }
    let len = u32::from_le_bytes(plain[..4].try_into().expect("4 bytes")) as usize;
    if len > plain.len() - 4 {
        return Err(RecordError::Content("a length past the padding"));
    }
    let (body, padding) = plain[4..].split_at(len);
    if padding.iter().any(|b| *b != 0) {
        return Err(RecordError::Content("padding that is not zeros"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
