//! The device's node key: ECDSA P-256, the identity a SuperLink knows a
//! device by. Every Fleet request carries three headers (checked by
//! `flwr/superlink/routers/fleet/node_auth.py` in flwr 1.42, even with
//! `--insecure`):
//!
//! * `flwr-public-key`: base64 of the public key as PEM SubjectPublicKeyInfo
//!   (the same bytes go in RegisterNode/ActivateNode's `public_key`);
//! * `flwr-timestamp`: the current UTC time, ISO 8601 (Python's
//!   `datetime.fromisoformat` must read it; the SuperLink accepts it from 5 s
//!   ahead of its clock to 305 s behind);
//! * `flwr-signature`: base64 of the ECDSA-SHA256 signature of the
//!   timestamp's ASCII bytes, ASN.1 DER encoded (what Python's
//!   `cryptography` makes and verifies), so ring's `ECDSA_P256_SHA256_ASN1`.
//!
//! The request body is not signed; the node id in the body must be the one
//! registered for the key.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use super::FleetError;

/// DER of SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } up to the
/// BIT STRING's contents (an uncompressed point of 65 bytes follows).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

pub const PUBLIC_KEY_HEADER: &str = "flwr-public-key";
pub const SIGNATURE_HEADER: &str = "flwr-signature";
pub const TIMESTAMP_HEADER: &str = "flwr-timestamp";

/// A P-256 key pair. Keep its PKCS#8 bytes ([`NodeKey::pkcs8`]) sealed on
/// the device to stay the same node across sessions.
pub struct NodeKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    pem: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, FleetError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| FleetError::Key("key generation failed".into()))?;
        NodeKey::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<NodeKey, FleetError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|_| FleetError::Key("not a P-256 PKCS#8 key".into()))?;
        let pem = spki_pem(pair.public_key().as_ref());
        Ok(NodeKey { pair, pkcs8: pkcs8.to_vec(), pem, rng })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// A short name for the key, for the ledger: the first 8 bytes of the
    /// SHA-256 of its public key PEM, in hex.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.public_key_pem());
        digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The public key as the SuperLink stores it: PEM SubjectPublicKeyInfo.
    pub fn public_key_pem(&self) -> &[u8] {
        &self.pem
    }

    /// The three authentication headers for a request made now.
    pub fn auth_headers(&self) -> Result<Vec<(String, String)>, FleetError> {
        let timestamp = iso8601_utc_now();
        let sig =
            self.pair.sign(&self.rng, timestamp.as_bytes()).map_err(|_| FleetError::Key("signing failed".into()))?;
        Ok(vec![
            (PUBLIC_KEY_HEADER.into(), B64.encode(&self.pem)),
            (TIMESTAMP_HEADER.into(), timestamp),
            (SIGNATURE_HEADER.into(), B64.encode(sig.as_ref())),
        ])
    }
}

fn spki_pem(point: &[u8]) -> Vec<u8> {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    let b64 = B64.encode(&der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem.into_bytes()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, as Python's
/// `datetime.now(UTC).isoformat()` writes it, rounded down to 10 s: the
/// SuperLink accepts a signed timestamp within 300 s of its clock, and a
/// finer one would show the device's clock skew, which can tell devices
/// (and one device's rounds) apart.
pub fn iso8601_utc_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    iso8601_utc(now - now % AUTH_TIMESTAMP_STEP_SECS, 0)
}

/// The granularity of the signed timestamp.
pub const AUTH_TIMESTAMP_STEP_SECS: i64 = 10;

pub(crate) fn iso8601_utc(secs: i64, micros: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_timestamps_are_whole_tens_of_seconds() {
        // The seconds' last digit and the fraction are always zero: no
        // finer reading of the device's clock.
        let now = iso8601_utc_now();
        assert!(now.ends_with("0.000000+00:00"), "{now}");
    }

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(iso8601_utc(0, 0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(iso8601_utc(1_795_000_000, 42), "2026-11-18T11:06:40.000042+00:00");
        assert_eq!(iso8601_utc(951_782_400, 0), "2000-02-29T00:00:00.000000+00:00");
    }

    #[test]
    fn the_public_key_is_pem_spki_and_signatures_verify() {
        let key = NodeKey::generate().unwrap();
        let pem = std::str::from_utf8(key.public_key_pem()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"));
        let headers = key.auth_headers().unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let sig = B64.decode(get(SIGNATURE_HEADER)).unwrap();
        let point = key.pair.public_key().as_ref().to_vec();
        let verifier = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point);
        verifier.verify(get(TIMESTAMP_HEADER).as_bytes(), &sig).unwrap();
        let again = NodeKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key_pem(), key.public_key_pem());
    }
}
