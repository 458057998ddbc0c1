//! The coordinator's half of a round: it picks the neighbour graph, relays
//! keys and sealed shares, adds up masked vectors as they arrive, and at
//! the end removes what masks are left, from the shares the survivors
//! reveal. At no point does it hold one device's update: each vector it
//! receives is masked by a self mask whose seed it only learns for devices
//! whose masked vector is already in the sum, and by pair masks it only
//! learns for devices whose vector never reached it.
//!
//! It is driven stage by stage: [`CoordinatorRound::advance`] closes the
//! current stage and gives each remaining device its next message;
//! [`CoordinatorRound::receive`] takes a reply, and a reply that is late,
//! repeated, malformed or inconsistent is refused (logged, and the device
//! counts as dropped) without stopping the round; [`CoordinatorRound::finish`]
//! unmasks the sum. Memory is the sum (one vector) plus keys and shares
//! (cohort x degree), never cohort x vector.

use std::collections::{BTreeMap, BTreeSet};

use crate::csprng;
use crate::device::Coin;
use crate::graph::{self, Graph};
use crate::keys::{self, AgreementKey, MaskSign, Purpose, RoundId};
use crate::noise::NoiseTerms;
use crate::quantize::{self, Quantization};
use crate::shamir::{self, SHARE_VALUE_BYTES, SecretShare};
use crate::wire::{
    self, MAX_MESSAGE_BYTES, PeerKeys, PublicKeys, Reply, ReplyBody, Revealed, SealedShare, SealedShares, Setup,
    ShareKeys, ShareKind, Stage, StageBody, Task, Unmask,
};

/// The largest sealed share accepted (a [`wire::SharePair`] is about 90
/// bytes, plus the 16-byte tag).
const MAX_SEALED_SHARE_BYTES: usize = 256;

/// What the coordinator announces for a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    pub run_id: u64,
    pub round: u64,
    pub quantization: Quantization,
    /// Neighbours per device (rounded up to even; the complete graph when
    /// the cohort is smaller).
    pub degree: usize,
    /// Each device's threshold as a fraction of its neighbours.
    pub threshold_fraction: f64,
    /// The update's length (the model's parameter count).
    pub vector_len: usize,
    /// Distributed noise the devices add (multiplier 0: none). The
    /// coordinator's honest fraction sizes its wrap check and the fewest
    /// survivors it unmasks: ceil(fraction * cohort), below which the sum
    /// would carry less noise than announced.
    pub noise: NoiseTerms,
    /// With distributed noise, the probability of each device's own coin
    /// putting its update in the sum (0 or 1: no coin): the sum then holds
    /// about `sampling_rate` times the survivors' updates, and every
    /// survivor's noise share.
    pub sampling_rate: f64,
    /// Adaptive clipping's count: the weight of the vector's last value,
    /// each device's `beta (bit - 1/2)` (0: no count; the update is then
    /// the whole vector). At most twice the clip norm, which bounds the
    /// whole vector.
    pub count_weight: f64,
    /// What the devices sum: model updates or evaluations (which have no
    /// count).
    pub task: Task,
}

impl RoundConfig {
    /// No distributed noise.
    pub const NO_NOISE: NoiseTerms = NoiseTerms { multiplier: 0.0, honest_fraction: 1.0 };
}

/// Why a round cannot go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundError {
    #[error("the cohort of {0} devices is too small (at least 3 distinct ids)")]
    Cohort(usize),
    #[error("the round's terms are refused: {0}")]
    Terms(String),
    #[error("only {survivors} devices are left after the {stage} stage, fewer than the {needed} needed")]
    TooFewSurvivors { stage: &'static str, survivors: usize, needed: usize },
    #[error("the {kind} of node {node} cannot be rebuilt: {reason}")]
    Unrecoverable { node: u64, kind: &'static str, reason: String },
    #[error("the round is not at a stage where this can be done ({0})")]
    Order(&'static str),
    #[error("the system random generator failed")]
    Random,
}

/// Why a device's reply was refused (the device then counts as dropped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("reply of node {node} refused: {reason}")]
pub struct Rejected {
    pub node: u64,
    pub reason: String,
}

/// The stage a round is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStage {
    /// Nothing sent yet.
    Start,
    /// Setup sent; public keys coming in.
    Keys,
    /// Neighbours' keys sent; sealed shares coming in.
    Shares,
    /// Shares relayed; masked vectors coming in.
    Masked,
    /// Survivor lists sent; revealed shares coming in.
    Unmask,
    Finished,
}

impl RoundStage {
    pub fn name(self) -> &'static str {
        match self {
            RoundStage::Start => "start",
            RoundStage::Keys => "setup",
            RoundStage::Shares => "share-keys",
            RoundStage::Masked => "masked-input",
            RoundStage::Unmask => "unmask",
            RoundStage::Finished => "finished",
        }
    }
}

/// The unmasked sum and who is in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The sum of the survivors' quantized updates, modulo 2^bits.
    pub sum: Vec<u32>,
    /// The devices whose updates are in the sum.
    pub survivors: Vec<u64>,
    /// Devices lost at each stage (setup, share-keys, masked-input), and
    /// those that did not answer the unmask stage (their updates are in).
    pub dropped: [Vec<u64>; 4],
    /// Replies refused, with the reason.
    pub rejected: Vec<Rejected>,
}

impl Aggregate {
    /// The float sum of the survivors' updates.
    pub fn dequantized(&self, q: &Quantization) -> Vec<f64> {
        q.dequantize_sum(&self.sum)
    }
}

/// The coordinator's state through one round.
pub struct CoordinatorRound {
    config: RoundConfig,
    round: RoundId,
    graph: Graph,
    thresholds: BTreeMap<u64, usize>,
    stage: RoundStage,
    /// Who answered the stage under way.
    answered: BTreeSet<u64>,
    /// Who was sent the stage under way.
    asked: BTreeSet<u64>,
    keys: BTreeMap<u64, ([u8; 32], [u8; 32])>,
    inbox: BTreeMap<u64, Vec<SealedShare>>,
    masked_with: BTreeMap<u64, Vec<u64>>,
    sum: Vec<u32>,
    survivors: BTreeSet<u64>,
    self_shares: BTreeMap<u64, Vec<SecretShare>>,
    key_shares: BTreeMap<u64, Vec<SecretShare>>,
    dropped: [Vec<u64>; 4],
    rejected: Vec<Rejected>,
}

impl std::fmt::Debug for CoordinatorRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CoordinatorRound(round {}, {} devices, at {})",
            self.round.round,
            self.graph.len(),
            self.stage.name()
        )
    }
}

fn threshold(fraction: f64, neighbours: usize) -> usize {
    ((fraction * neighbours as f64).ceil() as usize).clamp(2.min(neighbours), neighbours)
}

/// A count weight a round can use: finite, 0 or above, at most twice the
/// clip norm (the count's value, beta / 2, is within the vector's bound),
/// and a vector long enough to hold an update and the count.
pub(crate) fn check_count_weight(weight: f64, clip_norm: f64, vector_len: u64) -> Result<(), String> {
    if !(weight.is_finite() && weight >= 0.0 && weight <= 2.0 * clip_norm) {
        return Err(format!("a count weight of {weight} with a clip norm of {clip_norm}"));
    }
    if weight > 0.0 && vector_len < 2 {
        return Err(format!("a count in a vector of {vector_len} values"));
    }
    Ok(())
}

/// A task's terms: only training carries a count of unclipped updates.
pub(crate) fn check_task(task: Task, count_weight: f64) -> Result<(), String> {
    if task != Task::Train && count_weight != 0.0 {
        return Err(format!("a {} round with a count weight of {count_weight}", task.name()));
    }
    Ok(())
}

impl CoordinatorRound {
    /// A round over `cohort` (distinct node ids) under `config`.
    pub fn new(config: RoundConfig, cohort: &[u64]) -> Result<Self, RoundError> {
        let distinct: BTreeSet<u64> = cohort.iter().copied().collect();
        if distinct.len() != cohort.len() || cohort.len() < 3 {
            return Err(RoundError::Cohort(cohort.len()));
        }
        if !config.noise.valid() {
            return Err(RoundError::Terms("the noise multiplier or the honest fraction is out of range".into()));
        }
        Coin::rate(config.sampling_rate, config.noise.multiplier).map_err(RoundError::Terms)?;
        check_count_weight(config.count_weight, config.quantization.clip_norm, config.vector_len as u64)
            .map_err(RoundError::Terms)?;
        check_task(config.task, config.count_weight).map_err(RoundError::Terms)?;
        config
            .noise
            .check_room(&config.quantization, cohort.len() as u32)
            .map_err(|e| RoundError::Terms(e.to_string()))?;
        if cohort.len() > config.quantization.max_cohort as usize {
            return Err(RoundError::Terms(format!("{} devices, above the max cohort", cohort.len())));
        }
        if !(config.threshold_fraction > 0.5 && config.threshold_fraction <= 1.0) {
            return Err(RoundError::Terms("the threshold must be above 1/2 of the neighbours".into()));
        }
        let mut rng = csprng::system_seeded().map_err(|_| RoundError::Random)?;
        let graph = graph::harary(cohort, config.degree.clamp(2, shamir::MAX_SHARES), &mut rng);
        let thresholds = graph.iter().map(|(&n, near)| (n, threshold(config.threshold_fraction, near.len()))).collect();
        Ok(CoordinatorRound {
            round: RoundId { run_id: config.run_id, round: config.round },
            sum: vec![0; config.vector_len],
            config,
            graph,
            thresholds,
            stage: RoundStage::Start,
            answered: BTreeSet::new(),
            asked: BTreeSet::new(),
            keys: BTreeMap::new(),
            inbox: BTreeMap::new(),
            masked_with: BTreeMap::new(),
            survivors: BTreeSet::new(),
            self_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            dropped: Default::default(),
            rejected: Vec::new(),
        })
    }

    pub fn stage(&self) -> RoundStage {
        self.stage
    }

    /// The neighbour graph (for tests and the round's summary).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The fewest devices a stage must keep: a device needs its threshold
    /// of surviving neighbours, so the round needs at least the smallest
    /// threshold plus one.
    fn needed(&self) -> usize {
        let shares = self.thresholds.values().copied().min().unwrap_or(2) + 1;
        if self.config.noise.multiplier > 0.0 {
            // Fewer survivors would sum to less noise than announced.
            shares.max(self.config.noise.honest(self.graph.len() as u32) as usize)
        } else {
            shares
        }
    }

    /// Closes the stage under way (devices that did not answer are
    /// dropped) and gives each remaining device its next message, encoded.
    pub fn advance(&mut self) -> Result<BTreeMap<u64, Vec<u8>>, RoundError> {
        let next = match self.stage {
            RoundStage::Start => RoundStage::Keys,
            RoundStage::Keys => RoundStage::Shares,
            RoundStage::Shares => RoundStage::Masked,
            RoundStage::Masked => RoundStage::Unmask,
            RoundStage::Unmask | RoundStage::Finished => return Err(RoundError::Order("advance after unmask")),
        };
        if self.stage != RoundStage::Start {
            let index = self.stage as usize - 1;
            let lost: Vec<u64> = self.asked.difference(&self.answered).copied().collect();
            self.dropped[index].extend(lost);
            if self.answered.len() < self.needed() {
                return Err(RoundError::TooFewSurvivors {
                    stage: self.stage.name(),
                    survivors: self.answered.len(),
                    needed: self.needed(),
                });
            }
        }
        let previous: BTreeSet<u64> = std::mem::take(&mut self.answered);
        let recipients: Vec<u64> = if self.stage == RoundStage::Start {
            self.graph.keys().copied().collect()
        } else {
            previous.into_iter().collect()
        };
        self.stage = next;
        let mut out = BTreeMap::new();
        for node in recipients {
            let body = match next {
                RoundStage::Keys => StageBody::Setup(self.setup_for(node)),
                RoundStage::Shares => StageBody::ShareKeys(self.share_keys_for(node)),
                RoundStage::Masked => StageBody::MaskedInput(self.masked_input_for(node)),
                RoundStage::Unmask => StageBody::Unmask(self.unmask_for(node)),
                RoundStage::Start | RoundStage::Finished => unreachable!("not a stage that sends"),
            };
            out.insert(node, prost::Message::encode_to_vec(&Stage { body: Some(body) }));
        }
        self.asked = out.keys().copied().collect();
        Ok(out)
    }

    fn setup_for(&self, node: u64) -> Setup {
        let q = &self.config.quantization;
        Setup {
            run_id: self.round.run_id,
            round: self.round.round,
            bits: q.bits,
            scale: q.scale,
            clip_norm: q.clip_norm,
            max_cohort: q.max_cohort,
            cohort: self.graph.len() as u32,
            threshold: self.thresholds[&node] as u32,
            neighbours: self.graph[&node].clone(),
            vector_len: self.config.vector_len as u64,
            noise_multiplier: self.config.noise.multiplier,
            sampling_rate: self.config.sampling_rate,
            count_weight: self.config.count_weight,
            task: self.config.task as i32,
        }
    }

    fn share_keys_for(&self, node: u64) -> ShareKeys {
        let peers = self.graph[&node]
            .iter()
            .filter_map(|peer| {
                self.keys.get(peer).map(|(channel, mask)| PeerKeys {
                    node: *peer,
                    keys: Some(PublicKeys { channel: channel.to_vec(), mask: mask.to_vec() }),
                })
            })
            .collect();
        ShareKeys { peers }
    }

    fn masked_input_for(&mut self, node: u64) -> SealedShares {
        // Only shares from devices that are still in (all of the inbox's
        // senders answered the share-keys stage, or they would not be in it).
        let shares = self.inbox.remove(&node).unwrap_or_default();
        self.masked_with.insert(node, shares.iter().map(|s| s.src).collect());
        SealedShares { shares }
    }

    fn unmask_for(&self, node: u64) -> Unmask {
        let (survivors, dropped) = self.masked_with[&node].iter().partition(|peer| self.survivors.contains(peer));
        Unmask { survivors, dropped }
    }

    /// Takes `node`'s reply to the stage under way.
    pub fn receive(&mut self, node: u64, reply: &[u8]) -> Result<(), Rejected> {
        let result = self.accept(node, reply);
        if let Err(reason) = result {
            let rejected = Rejected { node, reason };
            log::warn!("secure aggregation, round {}: {rejected}", self.round.round);
            self.rejected.push(rejected.clone());
            return Err(rejected);
        }
        self.answered.insert(node);
        Ok(())
    }

    fn accept(&mut self, node: u64, bytes: &[u8]) -> Result<(), String> {
        if !self.asked.contains(&node) {
            return Err(format!("not asked at the {} stage", self.stage.name()));
        }
        if self.answered.contains(&node) {
            return Err("a second reply".into());
        }
        let limit = if self.stage == RoundStage::Masked {
            (self.config.vector_len * self.config.quantization.bits as usize).div_ceil(8) + 64
        } else {
            MAX_MESSAGE_BYTES
        };
        let reply: Reply = wire::decode(bytes, limit).map_err(|e| e.to_string())?;
        match (self.stage, reply.body) {
            (RoundStage::Keys, Some(ReplyBody::Keys(keys))) => {
                let channel: [u8; 32] = keys.channel.as_slice().try_into().map_err(|_| "a key is not 32 bytes")?;
                let mask: [u8; 32] = keys.mask.as_slice().try_into().map_err(|_| "a key is not 32 bytes")?;
                self.keys.insert(node, (channel, mask));
            }
            (RoundStage::Shares, Some(ReplyBody::Shares(shares))) => self.accept_shares(node, shares)?,
            (RoundStage::Masked, Some(ReplyBody::Masked(masked))) => {
                let bits = self.config.quantization.bits;
                let values =
                    quantize::unpack(&masked.packed, bits, self.config.vector_len).map_err(|e| e.to_string())?;
                self.config.quantization.add_into(&mut self.sum, &values);
                self.survivors.insert(node);
            }
            (RoundStage::Unmask, Some(ReplyBody::Revealed(revealed))) => self.accept_revealed(node, revealed)?,
            (stage, _) => return Err(format!("not a reply to the {} stage", stage.name())),
        }
        Ok(())
    }

    fn accept_shares(&mut self, node: u64, shares: SealedShares) -> Result<(), String> {
        let expected: BTreeSet<u64> =
            self.graph[&node].iter().copied().filter(|peer| self.keys.contains_key(peer)).collect();
        let mut seen = BTreeSet::new();
        for share in &shares.shares {
            if share.src != node || !expected.contains(&share.dst) || !seen.insert(share.dst) {
                return Err("a share from or to the wrong node, or twice".into());
            }
            if share.ciphertext.len() > MAX_SEALED_SHARE_BYTES {
                return Err("a sealed share is too large".into());
            }
        }
        if seen != expected {
            return Err("not one share for each neighbour that sent keys".into());
        }
        for share in shares.shares {
            self.inbox.entry(share.dst).or_default().push(share);
        }
        Ok(())
    }

    fn accept_revealed(&mut self, node: u64, revealed: Revealed) -> Result<(), String> {
        let Unmask { survivors, dropped } = self.unmask_for(node);
        let mut seen = BTreeSet::new();
        let mut accepted = Vec::with_capacity(revealed.shares.len());
        for share in revealed.shares {
            let kind = ShareKind::try_from(share.kind).unwrap_or(ShareKind::Unknown);
            let wanted = match kind {
                ShareKind::SelfMask => survivors.contains(&share.owner),
                ShareKind::MaskKey => dropped.contains(&share.owner),
                ShareKind::Unknown => false,
            };
            if !wanted || !seen.insert(share.owner) {
                return Err("a share that was not asked for, or twice".into());
            }
            let value: [u8; SHARE_VALUE_BYTES] =
                share.value.as_slice().try_into().map_err(|_| "a share of the wrong size")?;
            accepted.push((kind, share.owner, SecretShare { index: share.index, value }));
        }
        for (kind, owner, share) in accepted {
            let store = if kind == ShareKind::SelfMask { &mut self.self_shares } else { &mut self.key_shares };
            store.entry(owner).or_default().push(share);
        }
        Ok(())
    }

    /// Closes the unmask stage and removes the masks left in the sum.
    pub fn finish(mut self) -> Result<Aggregate, RoundError> {
        if self.stage != RoundStage::Unmask {
            return Err(RoundError::Order("finish before the unmask stage"));
        }
        self.dropped[3] = self.asked.difference(&self.answered).copied().collect();
        self.stage = RoundStage::Finished;
        let bits = self.config.quantization.bits;
        for &node in &self.survivors {
            let seed = self.rebuild(node, &self.self_shares, "self-mask seed")?;
            keys::apply_mask(&seed, bits, &mut self.sum, MaskSign::Subtract);
        }
        // A device that sent shares but no masked vector: its pair masks
        // are in its neighbours' vectors and must come out.
        let survivors = &self.survivors;
        let lost: BTreeSet<u64> = self
            .masked_with
            .iter()
            .filter(|(node, _)| survivors.contains(node))
            .flat_map(|(_, peers)| peers.iter().copied())
            .filter(|peer| !survivors.contains(peer))
            .collect();
        for dropped in lost {
            let secret = self.rebuild(dropped, &self.key_shares, "mask key")?;
            let key = AgreementKey::from_bytes(secret);
            if key.public() != self.keys[&dropped].1 {
                return Err(RoundError::Unrecoverable {
                    node: dropped,
                    kind: "mask key",
                    reason: "the shares rebuild another key".into(),
                });
            }
            for (&survivor, peers) in &self.masked_with {
                if !self.survivors.contains(&survivor) || !peers.contains(&dropped) {
                    continue;
                }
                let public = &self.keys[&survivor].1;
                let seed = key.pair_secret(self.round, dropped, survivor, public, Purpose::MaskSeed).map_err(|e| {
                    RoundError::Unrecoverable { node: dropped, kind: "pair mask", reason: e.to_string() }
                })?;
                // The survivor added the pair's mask if its id is the lower.
                let sign = if survivor < dropped { MaskSign::Subtract } else { MaskSign::Add };
                keys::apply_mask(&seed, bits, &mut self.sum, sign);
            }
        }
        Ok(Aggregate {
            sum: self.sum,
            survivors: self.survivors.into_iter().collect(),
            dropped: self.dropped,
            rejected: self.rejected,
        })
    }

    fn rebuild(
        &self,
        node: u64,
        shares: &BTreeMap<u64, Vec<SecretShare>>,
        kind: &'static str,
    ) -> Result<[u8; 32], RoundError> {
        let got = shares.get(&node).map(Vec::as_slice).unwrap_or(&[]);
        shamir::combine(got, self.thresholds[&node]).map_err(|e| RoundError::Unrecoverable {
            node,
            kind,
            reason: e.to_string(),
        })
    }
}
