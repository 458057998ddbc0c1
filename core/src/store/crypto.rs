//! Keys and sealing.
//!
//! Key hierarchy:
//! * the **root key** (32 bytes) belongs to the app, which keeps it in the
//!   Android Keystore or the iOS Keychain and hands it over through a
//!   [`KeyProvider`]. Hearth never writes it anywhere.
//! * a **wrapping key** = HKDF-SHA256(root, salt = the store's random salt,
//!   info = "hearth/v1/wrap"), which seals the data keys kept in the store.
//! * one or two **data keys** (random, 32 bytes, one per key epoch). A data key
//!   never changes while it lives; `rekey` makes a new epoch and re-seals
//!   every record under it. From each data key HKDF derives one AEAD key per
//!   purpose (events, catalog, state) and an HMAC key for the catalog's blind
//!   index.
//!
//! A sealed record is `[format 1][epoch u32 LE][nonce 12][AES-256-GCM(padded)]`
//! with associated data that binds it to its table and row, so a record moved
//! to another row or table fails to open. Plaintexts are padded to a few fixed
//! sizes so that the length of a row says little about what it holds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac, pbkdf2};

use crate::error::{Error, Result};

/// Lower-case hex of the SHA-256 of `bytes` (model package digests,
/// Flower object ids).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Length of the root key an app hands over.
pub const ROOT_KEY_LEN: usize = 32;
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// What a [`KeyProvider`] may fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum KeyError {
    /// The key exists but cannot be had now (device locked, user not
    /// authenticated). Hearth reports `KeyUnavailable`; try later.
    #[error("key unavailable: {reason}")]
    Unavailable { reason: String },
    /// The platform destroyed or invalidated the key for good. Hearth reports
    /// `KeyInvalidated`; the app should call `destroy_store` and start fresh.
    #[error("key invalidated")]
    Invalidated,
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        // Kotlin hands over the whole stack trace: keep the first line, short.
        let first = e.reason.lines().next().unwrap_or("").trim();
        let reason: String = first.chars().take(160).collect();
        KeyError::Unavailable { reason: format!("key provider failed: {reason}") }
    }
}

/// Supplies the 32-byte root key. Apps implement it over the Android Keystore
/// (for example a key wrapped by a Keystore AES key) or the iOS Keychain.
///
/// Hearth calls it when a store is opened, deleted or re-keyed, never while it
/// holds its own lock, and the implementation must not call back into Hearth.
#[uniffi::export(foreign)]
pub trait KeyProvider: Send + Sync {
    /// The root key: exactly 32 bytes.
    fn root_key(&self) -> Result<Vec<u8>, KeyError>;
}

/// A provider holding a key in memory: for tests and for hosts that manage
/// keys themselves.
pub struct FixedKeyProvider {
    key: Vec<u8>,
}

impl FixedKeyProvider {
    pub fn new(key: [u8; ROOT_KEY_LEN]) -> Self {
        FixedKeyProvider { key: key.to_vec() }
    }
}

impl KeyProvider for FixedKeyProvider {
    fn root_key(&self) -> Result<Vec<u8>, KeyError> {
        Ok(self.key.clone())
    }
}

/// Derives a root key from a passphrase with PBKDF2-HMAC-SHA256 and a salt
/// kept beside the store. For command-line tools, never for apps (apps have a
/// hardware-backed keystore).
pub struct PassphraseKeyProvider {
    key: [u8; ROOT_KEY_LEN],
}

/// PBKDF2 iterations for [`PassphraseKeyProvider`].
pub const PASSPHRASE_ITERATIONS: u32 = 210_000;
/// Name of the salt file written beside a passphrase-protected store.
pub const PASSPHRASE_SALT_FILE: &str = "passphrase.salt";

impl PassphraseKeyProvider {
    /// Reads the salt from `dir/passphrase.salt`, creating it if absent.
    pub fn for_dir(dir: &std::path::Path, passphrase: &str, iterations: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(PASSPHRASE_SALT_FILE);
        let salt = match std::fs::read(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = [0u8; 16];
                SystemRandom::new().fill(&mut s).map_err(|_| std::io::Error::other("no randomness"))?;
                std::fs::write(&path, s)?;
                s.to_vec()
            }
            Err(e) => return Err(e),
        };
        Ok(Self::derive(passphrase, &salt, iterations))
    }

    pub fn derive(passphrase: &str, salt: &[u8], iterations: u32) -> Self {
        let mut key = [0u8; ROOT_KEY_LEN];
        let iterations = NonZeroU32::new(iterations.max(1)).expect("max(1) is non-zero");
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, passphrase.as_bytes(), &mut key);
        PassphraseKeyProvider { key }
    }
}

impl KeyProvider for PassphraseKeyProvider {
    fn root_key(&self) -> Result<Vec<u8>, KeyError> {
        Ok(self.key.to_vec())
    }
}

/// Asks the provider for the root key and checks its shape.
pub(crate) fn fetch_root_key(provider: &dyn KeyProvider) -> Result<RootKey> {
    let bytes = provider.root_key().map_err(|e| match e {
        KeyError::Unavailable { reason } => Error::KeyUnavailable(reason),
        KeyError::Invalidated => Error::KeyInvalidated,
    })?;
    if bytes.len() != ROOT_KEY_LEN {
        return Err(Error::invalid("root_key", format!("must be {ROOT_KEY_LEN} bytes, got {}", bytes.len())));
    }
    let mut k = [0u8; ROOT_KEY_LEN];
    k.copy_from_slice(&bytes);
    Ok(RootKey(k))
}

/// The app's root key, held only as long as a call needs it.
pub(crate) struct RootKey([u8; ROOT_KEY_LEN]);

impl Drop for RootKey {
    fn drop(&mut self) {
        // Best effort: the optimizer may keep copies, but not this one.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_expand(ikm: &[u8], salt: &[u8], info: &str) -> [u8; 32] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let info = [info.as_bytes()];
    let okm = prk.expand(&info, Len(32)).expect("32 bytes is a valid HKDF length");
    let mut out = [0u8; 32];
    okm.fill(&mut out).expect("length matches");
    out
}

fn aead_key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key"))
}

/// Seals and opens the data keys stored in the store, under the root key.
pub(crate) struct Wrapper {
    key: LessSafeKey,
}

impl Wrapper {
    pub(crate) fn new(root: &RootKey, store_salt: &[u8]) -> Self {
        Wrapper { key: aead_key(&hkdf_expand(&root.0, store_salt, "hearth/v1/wrap")) }
    }

    pub(crate) fn wrap(&self, epoch: u32, data_key: &DataKey) -> Result<Vec<u8>> {
        seal_raw(&self.key, &wrap_aad(epoch), &data_key.0)
    }

    /// Opens a wrapped data key; a failure means the root key is wrong.
    pub(crate) fn unwrap(&self, epoch: u32, wrapped: &[u8]) -> Result<DataKey> {
        let plain = open_raw(&self.key, &wrap_aad(epoch), wrapped).map_err(|_| Error::WrongKey)?;
        if plain.len() != 32 {
            return Err(Error::WrongKey);
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&plain);
        Ok(DataKey(k))
    }
}

fn wrap_aad(epoch: u32) -> Vec<u8> {
    format!("hearth/v1/data-key/{epoch}").into_bytes()
}

/// A random data key (one per epoch).
#[derive(Clone)]
pub(crate) struct DataKey([u8; 32]);

impl DataKey {
    pub(crate) fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).map_err(|_| Error::Crypto("no randomness"))?;
        Ok(DataKey(k))
    }

    /// A fixed key (the fuzz targets' `testing::decode_record`).
    pub(crate) fn from_bytes(k: [u8; 32]) -> Self {
        DataKey(k)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// What a sealed record belongs to. Part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Events,
    Catalog,
    State,
    ProfileItems,
    ExperimentLog,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Catalog => "catalog",
            Table::State => "state",
            Table::ProfileItems => "profile_items",
            Table::ExperimentLog => "experiment_log",
        }
    }
}

/// Per-purpose keys derived from one data key.
struct EpochKeys {
    events: LessSafeKey,
    catalog: LessSafeKey,
    state: LessSafeKey,
    profile_items: LessSafeKey,
    experiment_log: LessSafeKey,
    index: hmac::Key,
}

impl EpochKeys {
    fn derive(dk: &DataKey) -> Self {
        let salt = b"hearth/v1";
        EpochKeys {
            events: aead_key(&hkdf_expand(&dk.0, salt, "hearth/v1/events")),
            catalog: aead_key(&hkdf_expand(&dk.0, salt, "hearth/v1/catalog")),
            state: aead_key(&hkdf_expand(&dk.0, salt, "hearth/v1/state")),
            profile_items: aead_key(&hkdf_expand(&dk.0, salt, "hearth/v1/profile-items")),
            experiment_log: aead_key(&hkdf_expand(&dk.0, salt, "hearth/v1/experiment-log")),
            index: hmac::Key::new(hmac::HMAC_SHA256, &hkdf_expand(&dk.0, salt, "hearth/v1/index")),
        }
    }

    fn aead(&self, table: Table) -> &LessSafeKey {
        match table {
            Table::Events => &self.events,
            Table::Catalog => &self.catalog,
            Table::State => &self.state,
            Table::ProfileItems => &self.profile_items,
            Table::ExperimentLog => &self.experiment_log,
        }
    }
}

/// The keys of a store: every live epoch, and the one new records use.
pub(crate) struct KeyRing {
    epochs: BTreeMap<u32, EpochKeys>,
    current: u32,
    nonces: RefCell<NoncePool>,
}

/// Random nonces, drawn from the system's generator a few hundred at a time
/// rather than with one system call per record.
struct NoncePool {
    buf: Vec<u8>,
    used: usize,
}

const NONCE_POOL: usize = NONCE_LEN * 256;

impl NoncePool {
    fn next(&mut self) -> Result<[u8; NONCE_LEN]> {
        if self.used + NONCE_LEN > self.buf.len() {
            self.buf.resize(NONCE_POOL, 0);
            SystemRandom::new().fill(&mut self.buf).map_err(|_| Error::Crypto("no randomness"))?;
            self.used = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&self.buf[self.used..self.used + NONCE_LEN]);
        // A nonce is used once: wipe it from the pool.
        self.buf[self.used..self.used + NONCE_LEN].fill(0);
        self.used += NONCE_LEN;
        Ok(n)
    }
}

impl KeyRing {
    pub(crate) fn new(current: u32, keys: Vec<(u32, DataKey)>) -> Self {
        let epochs = keys.iter().map(|(e, k)| (*e, EpochKeys::derive(k))).collect();
        KeyRing { epochs, current, nonces: RefCell::new(NoncePool { buf: Vec::new(), used: 0 }) }
    }

    pub(crate) fn current_epoch(&self) -> u32 {
        self.current
    }

    /// Seals `plain` for `table`/`row` under the current epoch.
    pub(crate) fn seal(&self, table: Table, row: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let keys = self.epochs.get(&self.current).ok_or(Error::Crypto("no key for current epoch"))?;
        let nonce = self.nonces.borrow_mut().next()?;
        let total = padded_len(plain.len());
        let mut out = Vec::with_capacity(HEADER_LEN + total + TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&self.current.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        out.extend_from_slice(plain);
        out.resize(HEADER_LEN + total, 0);
        let aad = record_aad(table, row, self.current);
        let tag = keys
            .aead(table)
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut out[HEADER_LEN..])
            .map_err(|_| Error::Crypto("seal failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a sealed record; any mismatch (tampered bytes, wrong row, wrong
    /// table, unknown epoch) is an integrity error for this record.
    pub(crate) fn open(&self, table: Table, row: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let integrity = Error::Integrity { table: table.name() };
        let epoch = record_epoch(sealed).ok_or(Error::Integrity { table: table.name() })?;
        let keys = self.epochs.get(&epoch).ok_or(Error::Integrity { table: table.name() })?;
        let aad = record_aad(table, row, epoch);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[5..HEADER_LEN]);
        let mut buf = sealed[HEADER_LEN..].to_vec();
        let plain = keys
            .aead(table)
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut buf)
            .map_err(|_| Error::Integrity { table: table.name() })?;
        unpad(plain).ok_or(integrity)
    }

    /// The blind index of an item id in `table` under the current epoch:
    /// lets the store find a row without holding the id in clear. Different
    /// tables give different indexes, so rows cannot be matched across them.
    pub(crate) fn blind_index(&self, table: Table, item_id: &str) -> Vec<u8> {
        let keys = &self.epochs[&self.current];
        let mut msg = table.name().as_bytes().to_vec();
        msg.push(0);
        msg.extend_from_slice(item_id.as_bytes());
        let tag = hmac::sign(&keys.index, &msg);
        tag.as_ref()[..16].to_vec()
    }
}

/// The epoch a sealed record was sealed under, if the header is well formed.
pub(crate) fn record_epoch(sealed: &[u8]) -> Option<u32> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT {
        return None;
    }
    Some(u32::from_le_bytes(sealed[1..5].try_into().ok()?))
}

fn record_aad(table: Table, row: &[u8], epoch: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + row.len());
    aad.extend_from_slice(b"hearth/v1/");
    aad.extend_from_slice(table.name().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&epoch.to_le_bytes());
    aad.extend_from_slice(row);
    aad
}

fn seal_raw(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| Error::Crypto("no randomness"))?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| Error::Crypto("seal failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open_raw(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(());
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| ())?;
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| ())?;
    Ok(plain.to_vec())
}

/// The padded sizes of sealed plaintexts: a length prefix, the payload, zeros.
/// Steps of about 1.5x; beyond the last bucket sizes grow in whole 4 KiB steps.
const BUCKETS: [usize; 12] = [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096];

pub(crate) fn padded_len(payload: usize) -> usize {
    let need = payload + 4;
    BUCKETS.iter().copied().find(|b| *b >= need).unwrap_or_else(|| need.div_ceil(4096) * 4096)
}

fn unpad(padded: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(padded.get(..4)?.try_into().ok()?) as usize;
    padded.get(4..4 + len).map(|p| p.to_vec())
}

/// Fresh random bytes.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    SystemRandom::new().fill(&mut v).map_err(|_| Error::Crypto("no randomness"))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(1, vec![(1, DataKey([7u8; 32]))])
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let r = ring();
        let sealed = r.seal(Table::Events, b"42", b"hello").unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + 64 + TAG_LEN);
        assert_eq!(r.open(Table::Events, b"42", &sealed).unwrap(), b"hello");
        // Another row, another table: refused.
        assert!(matches!(r.open(Table::Events, b"43", &sealed), Err(Error::Integrity { .. })));
        assert!(matches!(r.open(Table::State, b"42", &sealed), Err(Error::Integrity { .. })));
        // Any flipped byte: refused.
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(r.open(Table::Events, b"42", &t).is_err(), "byte {i}");
        }
    }

    #[test]
    fn nonces_are_never_repeated() {
        let r = ring();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let s = r.seal(Table::Events, b"1", b"x").unwrap();
            assert!(seen.insert(s[5..HEADER_LEN].to_vec()));
        }
    }

    #[test]
    fn padding_hides_exact_lengths() {
        assert_eq!(padded_len(0), 64);
        assert_eq!(padded_len(60), 64);
        assert_eq!(padded_len(61), 96);
        assert_eq!(padded_len(150), 192);
        assert_eq!(padded_len(4092), 4096);
        assert_eq!(padded_len(4093), 8192);
        let r = ring();
        let a = r.seal(Table::State, b"x", &[1u8; 10]).unwrap();
        let b = r.seal(Table::State, b"x", &[1u8; 50]).unwrap();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn wrong_root_key_is_reported_as_such() {
        let salt = [3u8; 16];
        let w = Wrapper::new(&RootKey([1u8; 32]), &salt);
        let wrapped = w.wrap(1, &DataKey([9u8; 32])).unwrap();
        assert!(w.unwrap(1, &wrapped).is_ok());
        let other = Wrapper::new(&RootKey([2u8; 32]), &salt);
        assert!(matches!(other.unwrap(1, &wrapped), Err(Error::WrongKey)));
        // Wrapped for epoch 1, presented as epoch 2: refused.
        assert!(matches!(w.unwrap(2, &wrapped), Err(Error::WrongKey)));
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let a = PassphraseKeyProvider::derive("pw", b"salt-one", 1000).root_key().unwrap();
        let b = PassphraseKeyProvider::derive("pw", b"salt-one", 1000).root_key().unwrap();
        let c = PassphraseKeyProvider::derive("pw", b"salt-two", 1000).root_key().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 32);
    }
}
