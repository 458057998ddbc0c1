//! Pairing a second device into a person's sync group, through a relay
//! neither device trusts (the app's backend): an X25519 exchange
//! authenticated by a short authentication string (SAS) that both screens
//! show and the person compares, with a commitment so that a relay in the
//! middle gets one guess at the SAS, not a search.
//!
//! The messages, inviter (the device that holds the group) to joiner:
//!
//! 1. [`Commit`]: the group id and SHA-256 of the inviter's public key and
//!    nonce, so the inviter's key is fixed before it sees the joiner's;
//! 2. [`Answer`] (joiner to inviter): the joiner's public key and nonce;
//! 3. [`Reveal`]: the inviter's public key and nonce, which the joiner
//!    checks against the commitment. Both now hold the X25519 secret and
//!    the transcript (the group id, both keys, both nonces) and show the
//!    same six digits, derived from both;
//! 4. [`Welcome`], only once the person confirmed on the inviter that the
//!    digits match: the group's profile key, sealed (AES-256-GCM) under a
//!    key derived from the secret and the transcript. The joiner opens it
//!    only once the person confirmed the digits on it too.
//!
//! A relay that substitutes its own keys must send the joiner a key before
//! it knows the inviter's (still committed), and the inviter a key before
//! the inviter reveals its own; the digits each device shows then depend on
//! keys the relay could not choose together, and match with probability
//! 10^-6. Every derivation is bound to the transcript, so nothing of one
//! pairing serves another. The primitives are ring's (X25519 ephemeral
//! agreement, SHA-256, HKDF-SHA256, AES-256-GCM, the system CSPRNG); the
//! derivations are [`sas_digits`], [`commitment`], [`transcript`] and the
//! welcome's sealing, with known answers in the tests.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{EphemeralPrivateKey, PublicKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a pairing step failed. After any of them the pairing is over: start
/// a new one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    #[error("the system random generator failed")]
    Random,
    #[error("the peer's public key gives no shared secret")]
    NotContributory,
    #[error("the reveal is not the key the inviter committed to")]
    NotCommitted,
    #[error("the digits were not confirmed on this device")]
    NotConfirmed,
    #[error("the welcome does not open for this pairing and group")]
    Unsealed,
    #[error("a step out of order: {0}")]
    OutOfOrder(&'static str),
    #[error("not a pairing message: {0}")]
    Malformed(&'static str),
}

type Result<T> = std::result::Result<T, PairingError>;

const COMMIT: &[u8] = b"hearth pair v1 commit";
const TRANSCRIPT: &[u8] = b"hearth pair v1 transcript";
const SAS: &[u8] = b"hearth pair v1 sas";
const WELCOME: &[u8] = b"hearth pair v1 welcome";

/// How many decimal digits the SAS has.
pub const SAS_DIGITS: u32 = 6;

/// A sync group's id and its profile key: what pairing gives the joiner.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub group_id: [u8; 16],
    pub profile_key: [u8; 32],
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupKey({:02x?}, ..)", self.group_id)
    }
}

/// Inviter to joiner, first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub group_id: [u8; 16],
    pub commitment: [u8; 32],
}

/// Joiner to inviter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub public: [u8; 32],
    pub nonce: [u8; 32],
}

/// Inviter to joiner, once it has the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    pub public: [u8; 32],
    pub nonce: [u8; 32],
}

/// Inviter to joiner, once the person confirmed the digits: the group key,
/// sealed for this pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub sealed: Vec<u8>,
}

/// A pairing message as it travels (a QR code, a typed code's relay, the
/// app's backend): a version byte, a kind byte, then the message's
/// fixed-size fields in order. Nothing else is read, and any other length is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingMessage {
    Commit(Commit),
    Answer(Answer),
    Reveal(Reveal),
    Welcome(Welcome),
}

/// The wire format's version.
const VERSION: u8 = 1;
/// A welcome's length: the group id, the profile key, the GCM tag.
const WELCOME_LEN: usize = 16 + 32 + 16;

impl PairingMessage {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, fields): (u8, Vec<&[u8]>) = match self {
            PairingMessage::Commit(m) => (1, vec![&m.group_id, &m.commitment]),
            PairingMessage::Answer(m) => (2, vec![&m.public, &m.nonce]),
            PairingMessage::Reveal(m) => (3, vec![&m.public, &m.nonce]),
            PairingMessage::Welcome(m) => (4, vec![&m.sealed]),
        };
        let mut out = vec![VERSION, kind];
        for f in fields {
            out.extend_from_slice(f);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PairingMessage> {
        let [version, kind, body @ ..] = bytes else { return Err(PairingError::Malformed("too short")) };
        if *version != VERSION {
            return Err(PairingError::Malformed("an unknown version"));
        }
        let pair = |body: &[u8]| -> Result<([u8; 32], [u8; 32])> {
            let (a, b) = body.split_at_checked(32).ok_or(PairingError::Malformed("wrong length"))?;
            let a = a.try_into().map_err(|_| PairingError::Malformed("wrong length"))?;
            let b = b.try_into().map_err(|_| PairingError::Malformed("wrong length"))?;
            Ok((a, b))
        };
        Ok(match kind {
            1 => {
                if body.len() != 48 {
                    return Err(PairingError::Malformed("wrong length"));
                }
                let (id, c) = body.split_at(16);
                PairingMessage::Commit(Commit {
                    group_id: id.try_into().map_err(|_| PairingError::Malformed("wrong length"))?,
                    commitment: c.try_into().map_err(|_| PairingError::Malformed("wrong length"))?,
                })
            }
            2 => pair(body).map(|(public, nonce)| PairingMessage::Answer(Answer { public, nonce }))?,
            3 => pair(body).map(|(public, nonce)| PairingMessage::Reveal(Reveal { public, nonce }))?,
            4 if body.len() == WELCOME_LEN => PairingMessage::Welcome(Welcome { sealed: body.to_vec() }),
            4 => return Err(PairingError::Malformed("wrong length")),
            _ => return Err(PairingError::Malformed("an unknown kind")),
        })
    }
}

/// SHA-256 of the inviter's public key and nonce, domain-separated.
pub fn commitment(public: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    hash(&[COMMIT, public, nonce])
}

/// SHA-256 of everything both devices agreed on, in a fixed order.
pub fn transcript(group_id: &[u8; 16], inviter: &Reveal, joiner: &Answer) -> [u8; 32] {
    hash(&[TRANSCRIPT, group_id, &inviter.public, &joiner.public, &inviter.nonce, &joiner.nonce])
}

/// The digits both screens show: HKDF-SHA256 of the X25519 secret, salted
/// with the transcript, read as a 64-bit integer modulo 10^6 (a bias of
/// about 10^-13).
pub fn sas_digits(shared: &[u8; 32], transcript: &[u8; 32]) -> u32 {
    let mut out = [0u8; 8];
    super::hkdf(shared, transcript, SAS, &mut out);
    (u64::from_be_bytes(out) % 10u64.pow(SAS_DIGITS)) as u32
}

/// The welcome's AES-256-GCM key (used once, so its nonce is zero).
fn welcome_key(shared: &[u8; 32], transcript: &[u8; 32]) -> LessSafeKey {
    let mut key = [0u8; 32];
    super::hkdf(shared, transcript, WELCOME, &mut key);
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key"))
}

/// The group key sealed for the pairing of `transcript`.
pub fn seal_welcome(shared: &[u8; 32], transcript: &[u8; 32], group: &GroupKey) -> Welcome {
    let mut sealed = [group.group_id.as_slice(), &group.profile_key].concat();
    welcome_key(shared, transcript)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(transcript), &mut sealed)
        .expect("AES-GCM seals 48 bytes");
    Welcome { sealed }
}

/// Opens a welcome sealed for the pairing of `transcript`, for the group it
/// committed to.
pub fn open_welcome(
    shared: &[u8; 32],
    transcript: &[u8; 32],
    group_id: &[u8; 16],
    welcome: &Welcome,
) -> Result<GroupKey> {
    let mut data = welcome.sealed.clone();
    let plain = welcome_key(shared, transcript)
        .open_in_place(Nonce::assume_unique_for_key([0; NONCE_LEN]), Aad::from(transcript), &mut data)
        .map_err(|_| PairingError::Unsealed)?;
    let (id, key) = plain.split_at(16);
    if id != group_id || key.len() != 32 {
        return Err(PairingError::Unsealed);
    }
    Ok(GroupKey { group_id: *group_id, profile_key: key.try_into().expect("32 bytes") })
}

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut all = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        all.extend_from_slice(p);
    }
    digest(&SHA256, &all).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    rng.fill(&mut out).map_err(|_| PairingError::Random)?;
    Ok(out)
}

fn keypair(rng: &SystemRandom) -> Result<(EphemeralPrivateKey, [u8; 32])> {
    let private = EphemeralPrivateKey::generate(&X25519, rng).map_err(|_| PairingError::Random)?;
    let public: PublicKey = private.compute_public_key().map_err(|_| PairingError::Random)?;
    Ok((private, public.as_ref().try_into().expect("an X25519 key is 32 bytes")))
}

/// The X25519 secret with `peer` (a key that gives no secret is refused).
fn agree(private: EphemeralPrivateKey, peer: &[u8; 32]) -> Result<[u8; 32]> {
    agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |s| <[u8; 32]>::try_from(s))
        .map_err(|_| PairingError::NotContributory)?
        .map_err(|_| PairingError::NotContributory)
}

/// The device that holds the group, through one pairing.
pub struct Inviter {
    group: GroupKey,
    private: Option<EphemeralPrivateKey>,
    reveal: Reveal,
    /// The secret and transcript, once the answer came.
    agreed: Option<([u8; 32], [u8; 32])>,
}

impl Inviter {
    /// Starts a pairing into `group`: the commitment to send.
    pub fn start(group: GroupKey) -> Result<(Inviter, Commit)> {
        let rng = SystemRandom::new();
        let (private, public) = keypair(&rng)?;
        let reveal = Reveal { public, nonce: random(&rng)? };
        let commit = Commit { group_id: group.group_id, commitment: commitment(&reveal.public, &reveal.nonce) };
        Ok((Inviter { group, private: Some(private), reveal, agreed: None }, commit))
    }

    /// With the joiner's answer: what to send it, and the digits to show.
    /// Once only.
    pub fn reveal(&mut self, answer: &Answer) -> Result<(Reveal, u32)> {
        let private = self.private.take().ok_or(PairingError::OutOfOrder("this pairing was answered"))?;
        let shared = agree(private, &answer.public)?;
        let transcript = transcript(&self.group.group_id, &self.reveal, answer);
        self.agreed = Some((shared, transcript));
        Ok((self.reveal.clone(), sas_digits(&shared, &transcript)))
    }

    /// The group key for the joiner, once the person confirmed that both
    /// screens show the same digits (`confirmed`); nothing otherwise.
    pub fn welcome(self, confirmed: bool) -> Result<Welcome> {
        let Some((shared, transcript)) = self.agreed else {
            return Err(PairingError::OutOfOrder("no answer yet"));
        };
        if !confirmed {
            return Err(PairingError::NotConfirmed);
        }
        Ok(seal_welcome(&shared, &transcript, &self.group))
    }
}

/// The device that joins, through one pairing.
pub struct Joiner {
    commit: Commit,
    private: Option<EphemeralPrivateKey>,
    answer: Answer,
    agreed: Option<([u8; 32], [u8; 32])>,
}

impl Joiner {
    /// Answers a commitment.
    pub fn answer(commit: Commit) -> Result<(Joiner, Answer)> {
        let rng = SystemRandom::new();
        let (private, public) = keypair(&rng)?;
        let answer = Answer { public, nonce: random(&rng)? };
        Ok((Joiner { commit, private: Some(private), answer: answer.clone(), agreed: None }, answer))
    }

    /// With the inviter's reveal, checked against its commitment: the
    /// digits to show. Once only.
    pub fn check(&mut self, reveal: &Reveal) -> Result<u32> {
        if commitment(&reveal.public, &reveal.nonce) != self.commit.commitment {
            self.private = None;
            return Err(PairingError::NotCommitted);
        }
        let private = self.private.take().ok_or(PairingError::OutOfOrder("this pairing was checked"))?;
        let shared = agree(private, &reveal.public)?;
        let transcript = transcript(&self.commit.group_id, reveal, &self.answer);
        self.agreed = Some((shared, transcript));
        Ok(sas_digits(&shared, &transcript))
    }

    /// The group key, once the person confirmed the digits here too.
    pub fn accept(self, welcome: &Welcome, confirmed: bool) -> Result<GroupKey> {
        let Some((shared, transcript)) = self.agreed else {
            return Err(PairingError::OutOfOrder("no reveal yet"));
        };
        if !confirmed {
            return Err(PairingError::NotConfirmed);
        }
        open_welcome(&shared, &transcript, &self.commit.group_id, welcome)
    }
}

#[cfg(test)]
mod tests;
