//! Keys and masks of secure aggregation: a device's two X25519 keys for a
//! round, what it derives with each neighbour from them (with the *channel*
//! key, the key that seals the Shamir shares the pair sends each other;
//! with the *mask* key, the seed of the mask the pair adds and subtracts),
//! the sealing itself, and the expansion of a 256-bit seed into a mask.
//!
//! Two keys, not one, because the mask key of a device that drops out is
//! rebuilt by the coordinator from its neighbours' shares (to remove the
//! masks it left in the others' vectors): with one key, that would also
//! open every share the device sealed, its self-mask seed's included.
//!
//! Derivations are bound to the run, the round and the pair of node ids, so
//! no key of one round or pair serves another.

use ctr::cipher::{KeyIvInit, StreamCipher};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::csprng;

const DOMAIN: &[u8] = b"hearth secagg v1";
const SALT: &[u8] = b"hearth secagg v1 salt";
const SHARE_AAD: &[u8] = b"hearth secagg v1 share";

/// Why a key operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the system random generator failed")]
    Random,
    /// A peer's public key that gives no secret (a low-order point): a
    /// hostile or broken peer, refused.
    #[error("the peer's public key is not contributory")]
    NotContributory,
    #[error("a node is paired with itself")]
    SamePeer,
    #[error("a sealed share does not open (tampered, or not for this pair and round)")]
    Unsealed,
}

/// The round a key is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundId {
    pub run_id: u64,
    pub round: u64,
}

/// A 256-bit seed (a pairwise mask seed, a self-mask seed).
pub type Seed = [u8; 32];

/// What a secret derived with a neighbour is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The seed of the pair's mask (from the mask keys).
    MaskSeed = 1,
    /// The AES-256-GCM key of the shares the pair sends each other (from
    /// the channel keys).
    ShareKey = 2,
}

/// A device's X25519 key for one round, used once per neighbour.
pub struct AgreementKey(StaticSecret);

impl std::fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgreementKey(..)")
    }
}

impl AgreementKey {
    /// A new key from the system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let secret = csprng::random_bytes().map_err(|_| KeyError::Random)?;
        Ok(AgreementKey(StaticSecret::from(secret)))
    }

    /// The key from its 32 secret bytes (to rebuild a dropped device's
    /// pairwise masks from the shares of its key, and for tests).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        AgreementKey(StaticSecret::from(secret))
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// The secret for `purpose` this device (`me`) shares with `peer`,
    /// whose public key of the same kind is `peer_public`, in `round`. Both
    /// ends derive the same secret.
    pub fn pair_secret(
        &self,
        round: RoundId,
        me: u64,
        peer: u64,
        peer_public: &[u8; 32],
        purpose: Purpose,
    ) -> Result<[u8; 32], KeyError> {
        if me == peer {
            return Err(KeyError::SamePeer);
        }
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(KeyError::NotContributory);
        }
        let (low, high) = (me.min(peer), me.max(peer));
        Ok(derive(shared.as_bytes(), round, low, high, purpose as u8))
    }
}

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 of the shared secret, bound to the round, the pair (lower
/// id first) and the key's purpose.
fn derive(shared: &[u8; 32], round: RoundId, low: u64, high: u64, purpose: u8) -> [u8; 32] {
    let mut info = Vec::with_capacity(DOMAIN.len() + 33);
    info.extend_from_slice(DOMAIN);
    for v in [round.run_id, round.round, low, high] {
        info.extend_from_slice(&v.to_le_bytes());
    }
    info.push(purpose);
    let prk = Salt::new(HKDF_SHA256, SALT).extract(shared);
    let info = [info.as_slice()];
    let okm = prk.expand(&info, Len32).expect("32 bytes is a valid HKDF-SHA256 length");
    let mut out = [0u8; 32];
    okm.fill(&mut out).expect("the length asked for");
    out
}

/// The associated data and nonce of a share sealed from `src` to `dst`.
/// A share key seals one message each way per round: the direction makes
/// the nonce unique under the key.
fn share_terms(round: RoundId, src: u64, dst: u64) -> (Vec<u8>, Nonce) {
    let mut aad = Vec::with_capacity(SHARE_AAD.len() + 32);
    aad.extend_from_slice(SHARE_AAD);
    for v in [round.run_id, round.round, src, dst] {
        aad.extend_from_slice(&v.to_le_bytes());
    }
    let mut nonce = [0u8; 12];
    nonce[0] = u8::from(src > dst);
    (aad, Nonce::assume_unique_for_key(nonce))
}

/// Seals `plaintext` (the shares `src` gives `dst`) with AES-256-GCM under
/// the pair's share key; the coordinator relays it and cannot read it.
pub fn seal_share(share_key: &[u8; 32], round: RoundId, src: u64, dst: u64, plaintext: &[u8]) -> Vec<u8> {
    let (aad, nonce) = share_terms(round, src, dst);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, share_key).expect("a 32-byte key"));
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out).expect("a share is far below GCM's limit");
    out
}

/// Opens a share sealed by [`seal_share`] from `src` to `dst`.
pub fn open_share(
    share_key: &[u8; 32],
    round: RoundId,
    src: u64,
    dst: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let (aad, nonce) = share_terms(round, src, dst);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, share_key).expect("a 32-byte key"));
    let mut buf = sealed.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| KeyError::Unsealed)?;
    Ok(plain.to_vec())
}

/// AES-256 in counter mode, the 16-byte counter big-endian from 0 (NIST
/// SP 800-38A): as fast as the CPU's AES instructions allow (2.5 times
/// ChaCha20 here with AES-NI), which is most of a secure round's cost.
type MaskCipher = ctr::Ctr128BE<aes::Aes256>;

/// The mask a seed expands to: `len` values modulo 2^bits, the AES-256-CTR
/// keystream of the seed (counter from 0) read as a little-endian bit
/// stream, `bits` bits per value (value i is bits i*bits to
/// (i+1)*bits - 1; uniform, and no keystream is spent on bits the sum
/// drops). A seed is used for one mask of one round only.
pub fn expand_mask(seed: &Seed, len: usize, bits: u32) -> Vec<u32> {
    let mut out = vec![0u32; len];
    apply_mask(seed, bits, &mut out, MaskSign::Add);
    out
}

/// Whether a mask is added to a vector or taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSign {
    Add,
    Subtract,
}

/// The keystream bytes made at a time.
const MASK_BLOCK: usize = 4096;

/// `acc (+ or -)= the mask of seed` modulo 2^bits, element by element, in
/// blocks (no vector of the mask's length is made). `bits` is 1 to 32
/// (a round's [`Quantization`](crate::Quantization) holds 8 to 32).
pub fn apply_mask(seed: &Seed, bits: u32, acc: &mut [u32], sign: MaskSign) {
    let bits = bits.clamp(1, 32);
    let width = bits as usize;
    let mask = u64::MAX >> (64 - bits);
    let mut cipher = MaskCipher::new(seed.into(), &[0u8; 16].into());
    // 8 spare bytes: each value is read as the 8 bytes from its first.
    let mut block = [0u8; MASK_BLOCK + 8];
    // A whole number of bytes per block (8 values take `bits` bytes), so
    // the next block goes on where the stream left off.
    let per_block = MASK_BLOCK * 8 / width / 8 * 8;
    for chunk in acc.chunks_mut(per_block) {
        let bytes = &mut block[..(chunk.len() * width).div_ceil(8)];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        for (i, a) in chunk.iter_mut().enumerate() {
            let at = i * width;
            let word = u64::from_le_bytes(block[at / 8..at / 8 + 8].try_into().expect("8 bytes"));
            let m = ((word >> (at % 8)) & mask) as u32;
            *a = match sign {
                MaskSign::Add => a.wrapping_add(m),
                MaskSign::Subtract => a.wrapping_sub(m),
            } & mask as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    // Known answers from an independent implementation: Python's
    // `cryptography` 48 (OpenSSL), with the same inputs.

    #[test]
    fn a_mask_is_the_aes_256_ctr_keystream_of_its_seed() {
        let seed: Seed = std::array::from_fn(|i| i as u8);
        assert_eq!(expand_mask(&seed, 8, 16), vec![0x90f2, 0xb600, 0x492a, 0xd09f, 0xf3a9, 0x6a9a, 0x2edd, 0x8077]);
        assert_eq!(expand_mask(&seed, 4, 32), vec![0xb60090f2, 0xd09f492a, 0x6a9af3a9, 0x80772edd]);
        assert_eq!(
            expand_mask(&seed, 8, 20),
            vec![0x90f2, 0x2ab60, 0x9f49, 0xf3a9d, 0xd6a9a, 0x772ed, 0xdf080, 0xae765]
        );
        assert_eq!(expand_mask(&seed, 6, 13), vec![0x10f2, 0x1004, 0xaad, 0x1e92, 0x1d09, 0x19d4]);
        // Across the blocks the keystream is made in.
        let long = expand_mask(&seed, 3000, 20);
        assert_eq!((long[2047], long[2999]), (0xa640c, 0x61358));
        // A longer mask begins with the shorter one; another seed differs.
        assert_eq!(expand_mask(&seed, 1000, 16)[..8], expand_mask(&seed, 8, 16)[..]);
        // Applied in blocks, added then taken away, it leaves the vector.
        let mut v: Vec<u32> = (0..5000).map(|i| i & 0xffff).collect();
        apply_mask(&seed, 16, &mut v, MaskSign::Add);
        assert_eq!(v[1024], (1024 + expand_mask(&seed, 1025, 16)[1024]) & 0xffff);
        apply_mask(&seed, 16, &mut v, MaskSign::Subtract);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 & 0xffff));
        let mut other = seed;
        other[31] ^= 1;
        assert_ne!(expand_mask(&other, 8, 16), expand_mask(&seed, 8, 16));
    }

    #[test]
    fn pair_keys_are_hkdf_of_the_x25519_secret_bound_to_round_and_pair() {
        // RFC 7748, 6.1: Alice's private key, Bob's public key.
        let alice = AgreementKey::from_bytes(unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
        let bob_public = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let round = RoundId { run_id: 7, round: 3 };
        let mask_seed = alice.pair_secret(round, 42, 11, &bob_public, Purpose::MaskSeed).unwrap();
        let share_key = alice.pair_secret(round, 42, 11, &bob_public, Purpose::ShareKey).unwrap();
        assert_eq!(hex(&mask_seed), "bf1be99a8fafe6dbcaabd5c9ceaed8818746eea8d384507f2635b639ed40ed61");
        assert_eq!(hex(&share_key), "f81ea1e4be016f2dbf766e999508e70bcbc3de8537c0d6818736e2b4f54f9923");
        // Bob derives the same from his side.
        let bob = AgreementKey::from_bytes(unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
        assert_eq!(bob.public(), bob_public);
        assert_eq!(bob.pair_secret(round, 11, 42, &alice.public(), Purpose::MaskSeed).unwrap(), mask_seed);
        // Another round, or another pair, gives other keys.
        let other_round = RoundId { run_id: 7, round: 4 };
        assert_ne!(alice.pair_secret(other_round, 42, 11, &bob_public, Purpose::MaskSeed).unwrap(), mask_seed);
        assert_ne!(alice.pair_secret(round, 42, 12, &bob_public, Purpose::MaskSeed).unwrap(), mask_seed);
        assert_eq!(alice.pair_secret(round, 42, 42, &bob_public, Purpose::MaskSeed), Err(KeyError::SamePeer));
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let me = AgreementKey::generate().unwrap();
        let round = RoundId { run_id: 1, round: 1 };
        // The identity point, and a point of order 8 (RFC 7748's list).
        let zero = [0u8; 32];
        let order8 = unhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        assert_eq!(me.pair_secret(round, 1, 2, &zero, Purpose::ShareKey), Err(KeyError::NotContributory));
        assert_eq!(me.pair_secret(round, 1, 2, &order8, Purpose::MaskSeed), Err(KeyError::NotContributory));
    }

    #[test]
    fn shares_are_sealed_with_aes_gcm_bound_to_round_and_direction() {
        let keys: [u8; 32] = std::array::from_fn(|i| 32 + i as u8);
        let round = RoundId { run_id: 7, round: 3 };
        let sealed = seal_share(&keys, round, 11, 42, b"share of node 11 for node 42");
        assert_eq!(
            hex(&sealed),
            "9046802bf17f0b3fe8378b26039f3e514c52187481476ae8d71f189482e3f16b773eba237c21d2efc743aa97"
        );
        assert_eq!(open_share(&keys, round, 11, 42, &sealed).unwrap(), b"share of node 11 for node 42");
        // Not for another direction, round or pair; not tampered with.
        assert_eq!(open_share(&keys, round, 42, 11, &sealed), Err(KeyError::Unsealed));
        assert_eq!(open_share(&keys, RoundId { run_id: 7, round: 4 }, 11, 42, &sealed), Err(KeyError::Unsealed));
        assert_eq!(open_share(&keys, round, 11, 43, &sealed), Err(KeyError::Unsealed));
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert_eq!(open_share(&keys, round, 11, 42, &bad), Err(KeyError::Unsealed));
        // The other direction seals under another nonce.
        assert_ne!(seal_share(&keys, round, 42, 11, b"share of node 11 for node 42"), sealed);
    }

    #[test]
    fn pairwise_masks_cancel_in_the_sum() {
        let round = RoundId { run_id: 5, round: 1 };
        let (bits, len) = (16u32, 64usize);
        let keys: Vec<AgreementKey> = (0..4).map(|_| AgreementKey::generate().unwrap()).collect();
        let publics: Vec<[u8; 32]> = keys.iter().map(AgreementKey::public).collect();
        let modulus = 1u64 << bits;
        let mut sum = vec![0u64; len];
        for (i, key) in keys.iter().enumerate() {
            for (j, public) in publics.iter().enumerate() {
                if i == j {
                    continue;
                }
                let seed = key.pair_secret(round, i as u64, j as u64, public, Purpose::MaskSeed).unwrap();
                let mask = expand_mask(&seed, len, bits);
                for (s, m) in sum.iter_mut().zip(mask) {
                    // The lower id adds, the higher subtracts.
                    *s = if i < j { (*s + m as u64) % modulus } else { (*s + modulus - m as u64) % modulus };
                }
            }
        }
        assert!(sum.iter().all(|&s| s == 0));
    }
}
