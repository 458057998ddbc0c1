//! The device's half of a round: a state machine that answers the
//! coordinator's four stages, in order, once each, and refuses anything
//! that would weaken what it promises.
//!
//! 1. **Setup** (the round's terms and this device's neighbours): the
//!    device checks them against its [`DevicePolicy`] and the model, makes
//!    two X25519 keys and sends their public halves.
//! 2. **Share keys** (its neighbours' public keys): it draws a self-mask
//!    seed, splits the seed and its mask key t-of-k (`crate::shamir`) and
//!    sends each neighbour its pair of shares, sealed under their channel
//!    key.
//! 3. **Masked input** (the shares its neighbours sealed for it, and the
//!    update): it quantizes the clipped update, adds its share of the
//!    round's noise when the round asks for one (`crate::noise`, sized by
//!    the device's own honest fraction), then its self mask and,
//!    for each neighbour that sent shares, the pair's mask (the lower id
//!    adds it, the higher subtracts it, so each pair cancels in the sum).
//! 4. **Unmask** (which of those neighbours survived, which dropped): for a
//!    survivor it reveals the share of the self-mask seed, for a dropped
//!    one the share of the mask key; never both for the same neighbour.
//!
//! Any refusal is a [`Refusal`], after which the round answers nothing
//! more: the caller uploads nothing for it.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use crate::csprng;
use crate::keys::{self, AgreementKey, KeyError, MaskSign, Purpose, RoundId, Seed};
use crate::noise::{DiscreteGaussian, NoiseTerms, RandomBits};
use crate::quantize::{self, Quantization, QuantizeError};
use crate::shamir::{self, SHARE_VALUE_BYTES, SecretShare, ShamirError};
use crate::wire::{
    MaskedVector, PeerKeys, PublicKeys, Revealed, RevealedShare, SealedShare, SealedShares, Setup, ShareKind,
    SharePair, Task, Unmask,
};

/// The most threads a device samples its noise share on (fewer where it
/// has fewer cores).
pub const NOISE_THREADS: usize = 4;

/// What a device requires of any round, whatever the coordinator says.
/// The app sets it; the defaults are the issue's.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePolicy {
    /// The fewest devices a round may start with.
    pub min_cohort: u32,
    /// The smallest threshold, as a fraction of the device's neighbours.
    /// Above 1/2, no coordinator can get both shares of one device from
    /// honest neighbours, who each reveal at most one.
    pub min_threshold_fraction: f64,
    /// The most neighbours a device takes (each costs a key agreement, two
    /// shares and a mask).
    pub max_neighbours: usize,
    /// The fraction of a round's cohort this device counts on to be honest
    /// and to survive, when it sizes its share of distributed noise: its
    /// share is (z C s)^2 / ceil(fraction * cohort), so those devices'
    /// shares alone carry the announced noise.
    pub honest_fraction: f64,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        DevicePolicy {
            min_cohort: 10,
            min_threshold_fraction: 2.0 / 3.0,
            max_neighbours: 1000,
            honest_fraction: 2.0 / 3.0,
        }
    }
}

/// Why a device refuses a stage. After any of them, the round is over for
/// this device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the round starts with {cohort} devices, below the {min} this device requires")]
    CohortTooSmall { cohort: u32, min: u32 },
    #[error("a threshold of {threshold} of {neighbours} neighbours is outside {min} to {neighbours}")]
    Threshold { threshold: u32, neighbours: usize, min: usize },
    #[error("the neighbour list is not usable: {0}")]
    Neighbours(&'static str),
    #[error("the quantization terms are refused: {0}")]
    Quantization(#[from] QuantizeError),
    #[error("the round's vector has {got} values, the model {want}")]
    VectorLength { got: u64, want: u64 },
    #[error("a {got} stage came when this device waited for {want}")]
    OutOfOrder { got: &'static str, want: &'static str },
    #[error("keys: {0}")]
    Key(#[from] KeyError),
    #[error("only {got} neighbours took part, below the threshold of {threshold}")]
    TooFewPeers { got: usize, threshold: usize },
    #[error("the share from node {0} is not one this device can accept")]
    BadShare(u64),
    #[error("both the self-mask share and the key share of node {0} were asked for")]
    BothShares(u64),
    #[error("the survivors and dropped nodes are not the neighbours this device masked with")]
    InconsistentNeighbours,
    #[error("sharing: {0}")]
    Sharing(#[from] ShamirError),
    #[error("the system random generator failed")]
    Random,
    #[error("the noise terms are refused: {0}")]
    Noise(String),
    #[error("the count of unclipped updates is refused: {0}")]
    Count(String),
    #[error("the round's task is refused: {0}")]
    Task(String),
    #[error("this round was refused before")]
    Aborted,
}

impl From<csprng::RandomFailed> for Refusal {
    fn from(_: csprng::RandomFailed) -> Self {
        Refusal::Random
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    ShareKeys,
    MaskedInput,
    Unmask,
    Done,
    Refused,
}

impl Waiting {
    fn name(self) -> &'static str {
        match self {
            Waiting::ShareKeys => "share-keys",
            Waiting::MaskedInput => "masked-input",
            Waiting::Unmask => "unmask",
            Waiting::Done => "nothing (the round is done)",
            Waiting::Refused => "nothing (the round was refused)",
        }
    }
}

struct Peer {
    mask: [u8; 32],
    /// The key of the shares sent to and from this neighbour (derived
    /// once, when its keys arrive).
    share_key: [u8; 32],
}

struct Received {
    self_mask: SecretShare,
    mask_key: SecretShare,
}

/// One device's state through one round.
pub struct DeviceRound {
    node: u64,
    round: RoundId,
    quantization: Quantization,
    threshold: usize,
    neighbours: BTreeSet<u64>,
    vector_len: usize,
    channel: AgreementKey,
    mask: AgreementKey,
    waiting: Waiting,
    peers: BTreeMap<u64, Peer>,
    self_seed: Seed,
    received: BTreeMap<u64, Received>,
    /// This device's share of the round's noise, when the round asks for one.
    noise: Option<DiscreteGaussian>,
    /// The round's local coin, when it has one.
    coin: Option<Coin>,
    /// Adaptive clipping's count weight (0: none).
    count_weight: f64,
    /// What the round sums.
    task: Task,
}

/// A round's local coin, flipped on the device at setup: the update is in
/// the sum with probability `rate`; otherwise the device sends its noise
/// share over zeros. Only the device knows which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coin {
    pub rate: f64,
    pub included: bool,
}

impl Coin {
    /// The coin a round's `sampling_rate` asks for, with distributed noise
    /// of multiplier `noise_multiplier`: None for 0 or 1 (no coin), the
    /// rate for one in (0, 1); why not for a rate outside [0, 1] or a coin
    /// without noise. The device and the coordinator both read a round's
    /// terms by it.
    pub fn rate(sampling_rate: f64, noise_multiplier: f64) -> Result<Option<f64>, String> {
        if !(0.0..=1.0).contains(&sampling_rate) {
            return Err(format!("a sampling rate of {sampling_rate}"));
        }
        if sampling_rate == 0.0 || sampling_rate == 1.0 {
            return Ok(None);
        }
        if noise_multiplier == 0.0 {
            return Err(format!("a coin (sampling rate {sampling_rate}) without noise"));
        }
        Ok(Some(sampling_rate))
    }

    /// Flips a coin of `rate` (in (0, 1)).
    fn flip(rate: f64) -> Result<Coin, Refusal> {
        use rand_core::Rng;
        // 53 uniform bits against the rate (a double's precision).
        let draw = (csprng::system_seeded()?.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Ok(Coin { rate, included: draw < rate })
    }
}

impl std::fmt::Debug for DeviceRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceRound(node {}, round {}, waiting for {})", self.node, self.round.round, self.waiting.name())
    }
}

fn key32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl DeviceRound {
    /// Stage 1: checks the round's `setup` for this device (`node`, whose
    /// model has `vector_len` parameters) against `policy`; gives the
    /// device's round and the public keys to send.
    pub fn setup(
        policy: &DevicePolicy,
        node: u64,
        vector_len: usize,
        setup: &Setup,
    ) -> Result<(Self, PublicKeys), Refusal> {
        if setup.cohort < policy.min_cohort {
            return Err(Refusal::CohortTooSmall { cohort: setup.cohort, min: policy.min_cohort });
        }
        let neighbours: BTreeSet<u64> = setup.neighbours.iter().copied().collect();
        if neighbours.len() != setup.neighbours.len() {
            return Err(Refusal::Neighbours("a node is listed twice"));
        }
        if neighbours.contains(&node) {
            return Err(Refusal::Neighbours("the device is its own neighbour"));
        }
        if neighbours.len() > policy.max_neighbours {
            return Err(Refusal::Neighbours("more neighbours than this device takes"));
        }
        if neighbours.len() as u64 + 1 > u64::from(setup.cohort) {
            return Err(Refusal::Neighbours("more neighbours than the cohort holds"));
        }
        let k = neighbours.len();
        let min = ((policy.min_threshold_fraction * k as f64).ceil() as usize).max(2);
        if (setup.threshold as usize) < min || setup.threshold as usize > k {
            return Err(Refusal::Threshold { threshold: setup.threshold, neighbours: k, min });
        }
        let quantization = Quantization {
            bits: setup.bits,
            scale: setup.scale,
            clip_norm: setup.clip_norm,
            max_cohort: setup.max_cohort,
        };
        let terms = NoiseTerms { multiplier: setup.noise_multiplier, honest_fraction: policy.honest_fraction };
        if !terms.valid() {
            return Err(Refusal::Noise(format!(
                "a multiplier of {} with an honest fraction of {}",
                setup.noise_multiplier, policy.honest_fraction
            )));
        }
        let coin =
            Coin::rate(setup.sampling_rate, terms.multiplier).map_err(Refusal::Noise)?.map(Coin::flip).transpose()?;
        crate::coordinator::check_count_weight(setup.count_weight, setup.clip_norm, setup.vector_len)
            .map_err(Refusal::Count)?;
        let task =
            Task::try_from(setup.task).map_err(|_| Refusal::Task(format!("an unknown task ({})", setup.task)))?;
        crate::coordinator::check_task(task, setup.count_weight).map_err(Refusal::Task)?;
        let noise = if terms.multiplier > 0.0 {
            let variance = terms.share_variance(setup.clip_norm, setup.scale, setup.cohort);
            Some(DiscreteGaussian::at_least(variance).map_err(|e| Refusal::Noise(e.to_string()))?)
        } else {
            None
        };
        // The sum must hold every device's share too.
        terms.check_room(&quantization, setup.cohort)?;
        if setup.max_cohort < setup.cohort {
            return Err(QuantizeError::CanWrap {
                cohort: setup.cohort,
                clip_norm: setup.clip_norm,
                scale: setup.scale,
                bits: setup.bits,
            }
            .into());
        }
        if setup.vector_len != vector_len as u64 {
            return Err(Refusal::VectorLength { got: setup.vector_len, want: vector_len as u64 });
        }
        let channel = AgreementKey::generate()?;
        let mask = AgreementKey::generate()?;
        let keys = PublicKeys { channel: channel.public().to_vec(), mask: mask.public().to_vec() };
        let round = DeviceRound {
            node,
            round: RoundId { run_id: setup.run_id, round: setup.round },
            quantization,
            threshold: setup.threshold as usize,
            neighbours,
            vector_len,
            channel,
            mask,
            waiting: Waiting::ShareKeys,
            peers: BTreeMap::new(),
            self_seed: [0; 32],
            received: BTreeMap::new(),
            noise,
            coin,
            count_weight: setup.count_weight,
            task,
        };
        Ok((round, keys))
    }

    /// Runs `step` if the round waits for `stage`; any refusal ends it.
    fn stage<T>(&mut self, stage: Waiting, step: impl FnOnce(&mut Self) -> Result<T, Refusal>) -> Result<T, Refusal> {
        if self.waiting == Waiting::Refused {
            return Err(Refusal::Aborted);
        }
        if self.waiting != stage {
            let got = stage.name();
            let want = self.waiting.name();
            self.waiting = Waiting::Refused;
            return Err(Refusal::OutOfOrder { got, want });
        }
        match step(self) {
            Ok(out) => Ok(out),
            Err(refusal) => {
                log::warn!("secure aggregation: round {} refused: {refusal}", self.round.round);
                self.waiting = Waiting::Refused;
                Err(refusal)
            }
        }
    }

    /// Stage 2: the neighbours' public keys in; this device's shares out,
    /// sealed for each neighbour.
    pub fn share_keys(&mut self, peers: &[PeerKeys]) -> Result<SealedShares, Refusal> {
        self.stage(Waiting::ShareKeys, |round| round.share_keys_step(peers))
    }

    fn share_keys_step(&mut self, peers: &[PeerKeys]) -> Result<SealedShares, Refusal> {
        for peer in peers {
            if !self.neighbours.contains(&peer.node) {
                return Err(Refusal::Neighbours("keys of a node that is not a neighbour"));
            }
            let keys = peer.keys.as_ref().ok_or(Refusal::Neighbours("a neighbour without keys"))?;
            let (Some(channel), Some(mask)) = (key32(&keys.channel), key32(&keys.mask)) else {
                return Err(Refusal::Neighbours("a neighbour's key is not 32 bytes"));
            };
            if self.peers.contains_key(&peer.node) {
                return Err(Refusal::Neighbours("a neighbour's keys are listed twice"));
            }
            let share_key = self.channel.pair_secret(self.round, self.node, peer.node, &channel, Purpose::ShareKey)?;
            self.peers.insert(peer.node, Peer { mask, share_key });
        }
        if self.peers.len() < self.threshold {
            return Err(Refusal::TooFewPeers { got: self.peers.len(), threshold: self.threshold });
        }
        let mut rng = csprng::system_seeded()?;
        self.self_seed = csprng::random_bytes()?;
        let count = self.peers.len();
        let self_shares = shamir::split(&self.self_seed, self.threshold, count, &mut rng)?;
        let key_shares = shamir::split(&self.mask.secret_bytes(), self.threshold, count, &mut rng)?;
        let mut out = Vec::with_capacity(count);
        for ((&dst, peer), (s, k)) in self.peers.iter().zip(self_shares.iter().zip(&key_shares)) {
            let pair = SharePair {
                src: self.node,
                dst,
                index: s.index,
                self_mask: s.value.to_vec(),
                mask_key: k.value.to_vec(),
            };
            let ciphertext = keys::seal_share(&peer.share_key, self.round, self.node, dst, &pair.encode_to_vec());
            out.push(SealedShare { src: self.node, dst, ciphertext });
        }
        self.waiting = Waiting::MaskedInput;
        Ok(SealedShares { shares: out })
    }

    /// Stage 3: the shares the neighbours sealed for this device, and the
    /// clipped update (norm at most the round's clip norm); the masked,
    /// quantized update out, with this device's noise share added before
    /// the masks when the round asks for one.
    pub fn masked_input(&mut self, shares: &[SealedShare], update: &[f32]) -> Result<MaskedVector, Refusal> {
        self.masked_input_quantized(shares, |q| q.quantize(update).map_err(Refusal::from), update.len())
    }

    /// As [`Self::masked_input`] with the update already quantized (load
    /// tests; the integers must be below 2^bits).
    pub fn masked_input_quantized(
        &mut self,
        shares: &[SealedShare],
        quantize: impl FnOnce(&Quantization) -> Result<Vec<u32>, Refusal>,
        len: usize,
    ) -> Result<MaskedVector, Refusal> {
        self.masked_input_observed(shares, quantize, |_| {}, len)
    }

    /// As [`Self::masked_input_quantized`], showing `observe` the update
    /// with this device's noise share added, before any mask (test-only
    /// records that check a coordinator's sum; it never leaves the device).
    pub fn masked_input_observed(
        &mut self,
        shares: &[SealedShare],
        quantize: impl FnOnce(&Quantization) -> Result<Vec<u32>, Refusal>,
        observe: impl FnOnce(&[u32]),
        len: usize,
    ) -> Result<MaskedVector, Refusal> {
        self.stage(Waiting::MaskedInput, |round| {
            if len != round.vector_len {
                return Err(Refusal::VectorLength { got: len as u64, want: round.vector_len as u64 });
            }
            round.open_shares(shares)?;
            let mut vector = quantize(&round.quantization)?;
            if vector.len() != round.vector_len {
                return Err(Refusal::VectorLength { got: vector.len() as u64, want: round.vector_len as u64 });
            }
            // The coin left this update out: its noise share goes over
            // zeros (the update was quantized all the same, so the work
            // and its failures do not depend on the coin).
            if round.coin.is_some_and(|c| !c.included) {
                vector.fill(0);
            }
            let bits = round.quantization.bits;
            if let Some(noise) = &round.noise {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(NOISE_THREADS));
                noise.add_to_parallel(&mut vector, bits, threads, || csprng::system_seeded().map(RandomBits::new))?;
            }
            observe(&vector);
            keys::apply_mask(&round.self_seed, bits, &mut vector, MaskSign::Add);
            for &peer in round.received.keys() {
                let public = &round.peers[&peer].mask;
                let seed = round.mask.pair_secret(round.round, round.node, peer, public, Purpose::MaskSeed)?;
                let sign = if round.node < peer { MaskSign::Add } else { MaskSign::Subtract };
                keys::apply_mask(&seed, bits, &mut vector, sign);
            }
            round.waiting = Waiting::Unmask;
            Ok(MaskedVector { packed: quantize::pack(&vector, bits) })
        })
    }

    fn open_shares(&mut self, shares: &[SealedShare]) -> Result<(), Refusal> {
        for sealed in shares {
            let src = sealed.src;
            if sealed.dst != self.node || self.received.contains_key(&src) {
                return Err(Refusal::BadShare(src));
            }
            let peer = self.peers.get(&src).ok_or(Refusal::BadShare(src))?;
            let plain = keys::open_share(&peer.share_key, self.round, src, self.node, &sealed.ciphertext)
                .map_err(|_| Refusal::BadShare(src))?;
            let pair = SharePair::decode(plain.as_slice()).map_err(|_| Refusal::BadShare(src))?;
            let value = |bytes: &[u8]| -> Result<SecretShare, Refusal> {
                let value: [u8; SHARE_VALUE_BYTES] = bytes.try_into().map_err(|_| Refusal::BadShare(src))?;
                Ok(SecretShare { index: pair.index, value })
            };
            if pair.src != src || pair.dst != self.node || pair.index == 0 || pair.index as usize > shamir::MAX_SHARES {
                return Err(Refusal::BadShare(src));
            }
            let received = Received { self_mask: value(&pair.self_mask)?, mask_key: value(&pair.mask_key)? };
            self.received.insert(src, received);
        }
        if self.received.len() < self.threshold {
            return Err(Refusal::TooFewPeers { got: self.received.len(), threshold: self.threshold });
        }
        Ok(())
    }

    /// Stage 4: which neighbours survived and which dropped; the shares
    /// this device reveals for them.
    pub fn unmask(&mut self, unmask: &Unmask) -> Result<Revealed, Refusal> {
        self.stage(Waiting::Unmask, |round| {
            let survivors: BTreeSet<u64> = unmask.survivors.iter().copied().collect();
            let dropped: BTreeSet<u64> = unmask.dropped.iter().copied().collect();
            if let Some(&both) = survivors.intersection(&dropped).next() {
                return Err(Refusal::BothShares(both));
            }
            let masked_with: BTreeSet<u64> = round.received.keys().copied().collect();
            let listed: BTreeSet<u64> = survivors.union(&dropped).copied().collect();
            let counted = unmask.survivors.len() + unmask.dropped.len();
            if listed != masked_with || counted != listed.len() {
                return Err(Refusal::InconsistentNeighbours);
            }
            if survivors.len() < round.threshold {
                return Err(Refusal::TooFewPeers { got: survivors.len(), threshold: round.threshold });
            }
            let reveal = |owner: u64, kind: ShareKind, share: &SecretShare| RevealedShare {
                owner,
                kind: kind as i32,
                index: share.index,
                value: share.value.to_vec(),
            };
            let mut shares = Vec::with_capacity(listed.len());
            for (&owner, received) in &round.received {
                if survivors.contains(&owner) {
                    shares.push(reveal(owner, ShareKind::SelfMask, &received.self_mask));
                } else {
                    shares.push(reveal(owner, ShareKind::MaskKey, &received.mask_key));
                }
            }
            round.waiting = Waiting::Done;
            round.received.clear();
            round.self_seed = [0; 32];
            Ok(Revealed { shares })
        })
    }

    /// The device's node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The round's terms for integers.
    pub fn quantization(&self) -> &Quantization {
        &self.quantization
    }

    /// This device's share of the round's noise (None: the round asks for
    /// none).
    pub fn noise(&self) -> Option<&DiscreteGaussian> {
        self.noise.as_ref()
    }

    /// The round's local coin, when it has one (never sent).
    pub fn coin(&self) -> Option<Coin> {
        self.coin
    }

    /// Adaptive clipping's count weight beta (0: the round counts
    /// nothing): the vector's last value is then `beta (bit - 1/2)`.
    pub fn count_weight(&self) -> f64 {
        self.count_weight
    }

    /// What the round sums: the caller makes the vector it asks for.
    pub fn task(&self) -> Task {
        self.task
    }
}
