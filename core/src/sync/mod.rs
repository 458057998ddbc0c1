//! End-to-end encrypted sync between one person's devices (issue 20):
//! the devices share their history with each other and with no one else;
//! the app's backend only relays and stores sealed bytes.
//!
//! - `pairing`: how a second device joins the person's sync group, the
//!   group key passing only between the two devices, authenticated by
//!   digits the person compares on both screens;
//! - `records`: the sealed, padded blobs the devices leave on the backend;
//! - `changes`: what a blob holds (events, settings, tombstones, ledger
//!   entries) and how a device merges them so that every device of the
//!   person converges on the same state;
//! - `rotation`: removing a device, with a new key the removed device never
//!   holds;
//! - `transport`, `webdav`: where the records are kept (the app's backend,
//!   or a WebDAV server).

pub mod changes;
pub mod pairing;
pub mod records;
pub mod rotation;
pub mod transport;
pub mod webdav;

use ring::hkdf::{HKDF_SHA256, KeyType, Salt};

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Lower-case hex, as sync names devices and keeps keys.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2 N` hex digits (nothing else, no trimming);
/// None when the text is not that.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// HKDF-SHA256 of `secret` under `salt` and `info`, filling `out`.
fn hkdf(secret: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    Salt::new(HKDF_SHA256, salt)
        .extract(secret)
        .expand(&[info], Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA256 gives up to 8,160 bytes");
}
