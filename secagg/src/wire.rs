//! The messages of a round, protobuf (prost), with the limits a decoder
//! applies before it believes a length. The coordinator sends each device
//! a [`Stage`] and gets a [`Reply`]; both travel as bytes in a Flower
//! ConfigRecord (the Fleet client and the ServerApp carry them; neither
//! reads them). A [`SharePair`] travels only sealed, from one device to a
//! neighbour.

use prost::Message;

/// The largest stage message or reply a decoder reads, masked vectors
/// aside (their size is known from the round's terms): 1,024 neighbours'
/// keys or sealed shares fit well within it.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Coordinator to device: the round's terms and the device's neighbours.
#[derive(Clone, PartialEq, Message)]
pub struct Setup {
    #[prost(uint64, tag = "1")]
    pub run_id: u64,
    #[prost(uint64, tag = "2")]
    pub round: u64,
    /// Values are integers modulo 2^bits.
    #[prost(uint32, tag = "3")]
    pub bits: u32,
    #[prost(double, tag = "4")]
    pub scale: f64,
    #[prost(double, tag = "5")]
    pub clip_norm: f64,
    /// The most updates the round adds up (for the no-wrap check).
    #[prost(uint32, tag = "6")]
    pub max_cohort: u32,
    /// How many devices the round starts with.
    #[prost(uint32, tag = "7")]
    pub cohort: u32,
    /// Shares of this device's secrets that rebuild them.
    #[prost(uint32, tag = "8")]
    pub threshold: u32,
    #[prost(uint64, repeated, tag = "9")]
    pub neighbours: Vec<u64>,
    /// The length of the update (the model's parameter count).
    #[prost(uint64, tag = "10")]
    pub vector_len: u64,
    /// Distributed noise: the std of the honest devices' summed noise, in
    /// clip norms (0: the devices add none).
    #[prost(double, tag = "11")]
    pub noise_multiplier: f64,
    /// Distributed noise with a local coin: the probability that each
    /// device's own coin, flipped on the device after setup, puts its
    /// update in the sum (a device whose coin says no sends its noise
    /// share over zeros, so no one can tell). 0 (absent) or 1: no coin.
    #[prost(double, tag = "12")]
    pub sampling_rate: f64,
    /// Adaptive clipping: the weight beta of one more value after the
    /// update's, `beta (bit - 1/2)` with the bit whether the device's
    /// update was within the train config's clip norm, so the sum counts
    /// the unclipped updates and no one sees a device's bit. The vector is
    /// then `vector_len` long with the count last. 0 (absent): no count.
    #[prost(double, tag = "13")]
    pub count_weight: f64,
    /// What the summed vector is ([`Task`]): an update of the model
    /// (absent: the rounds before evaluation existed) or a device's
    /// evaluation of a candidate model.
    #[prost(enumeration = "Task", tag = "14")]
    pub task: i32,
}

/// What a round sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Task {
    /// Each device's clipped model update (with adaptive clipping's count
    /// after it when the count weight is above 0).
    Train = 0,
    /// Each device's evaluation of the candidate model the masked-input
    /// stage carries: a few bounded metrics, no update and no count.
    EvaluateModel = 1,
    /// Each device's metric report of the experiment the masked-input
    /// stage names: bounded per-arm values, no update and no count.
    ExperimentReport = 2,
}

impl Task {
    /// The task's name, for logs, errors and the coordinator's config.
    pub fn name(self) -> &'static str {
        match self {
            Task::Train => "train",
            Task::EvaluateModel => "evaluate-model",
            Task::ExperimentReport => "experiment-report",
        }
    }
}

/// Device to coordinator: its two public keys for the round.
#[derive(Clone, PartialEq, Message)]
pub struct PublicKeys {
    #[prost(bytes = "vec", tag = "1")]
    pub channel: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub mask: Vec<u8>,
}

/// One neighbour's public keys, as the coordinator relays them.
#[derive(Clone, PartialEq, Message)]
pub struct PeerKeys {
    #[prost(uint64, tag = "1")]
    pub node: u64,
    #[prost(message, optional, tag = "2")]
    pub keys: Option<PublicKeys>,
}

/// Coordinator to device: the keys of the neighbours that sent theirs.
#[derive(Clone, PartialEq, Message)]
pub struct ShareKeys {
    #[prost(message, repeated, tag = "1")]
    pub peers: Vec<PeerKeys>,
}

/// A [`SharePair`] sealed from `src` to `dst` (AES-256-GCM).
#[derive(Clone, PartialEq, Message)]
pub struct SealedShare {
    #[prost(uint64, tag = "1")]
    pub src: u64,
    #[prost(uint64, tag = "2")]
    pub dst: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub ciphertext: Vec<u8>,
}

/// Sealed shares: a device's to its neighbours (its reply to
/// [`ShareKeys`]), or its neighbours' to it (the masked-input stage).
#[derive(Clone, PartialEq, Message)]
pub struct SealedShares {
    #[prost(message, repeated, tag = "1")]
    pub shares: Vec<SealedShare>,
}

/// Device to coordinator: the masked, quantized update, packed.
#[derive(Clone, PartialEq, Message)]
pub struct MaskedVector {
    #[prost(bytes = "vec", tag = "1")]
    pub packed: Vec<u8>,
}

/// Coordinator to device: which of the neighbours it masked with sent
/// their masked vectors, and which did not.
#[derive(Clone, PartialEq, Message)]
pub struct Unmask {
    #[prost(uint64, repeated, tag = "1")]
    pub survivors: Vec<u64>,
    #[prost(uint64, repeated, tag = "2")]
    pub dropped: Vec<u64>,
}

/// Which secret a revealed share is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ShareKind {
    Unknown = 0,
    /// A survivor's self-mask seed.
    SelfMask = 1,
    /// A dropped device's mask key.
    MaskKey = 2,
}

/// One share a device reveals at the unmasking stage.
#[derive(Clone, PartialEq, Message)]
pub struct RevealedShare {
    /// Whose secret the share is of.
    #[prost(uint64, tag = "1")]
    pub owner: u64,
    #[prost(enumeration = "ShareKind", tag = "2")]
    pub kind: i32,
    #[prost(uint32, tag = "3")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
}

/// Device to coordinator: the shares it reveals.
#[derive(Clone, PartialEq, Message)]
pub struct Revealed {
    #[prost(message, repeated, tag = "1")]
    pub shares: Vec<RevealedShare>,
}

/// What a device seals for one neighbour: its shares of its self-mask
/// seed and of its mask key, at the neighbour's index.
#[derive(Clone, PartialEq, Message)]
pub struct SharePair {
    #[prost(uint64, tag = "1")]
    pub src: u64,
    #[prost(uint64, tag = "2")]
    pub dst: u64,
    #[prost(uint32, tag = "3")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub self_mask: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub mask_key: Vec<u8>,
}

/// A stage message, coordinator to device.
#[derive(Clone, PartialEq, Message)]
pub struct Stage {
    #[prost(oneof = "StageBody", tags = "1, 2, 3, 4")]
    pub body: Option<StageBody>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum StageBody {
    #[prost(message, tag = "1")]
    Setup(Setup),
    #[prost(message, tag = "2")]
    ShareKeys(ShareKeys),
    /// The shares the device's neighbours sealed for it; the training
    /// instruction travels beside it, in the Flower message.
    #[prost(message, tag = "3")]
    MaskedInput(SealedShares),
    #[prost(message, tag = "4")]
    Unmask(Unmask),
}

/// A reply, device to coordinator.
#[derive(Clone, PartialEq, Message)]
pub struct Reply {
    #[prost(oneof = "ReplyBody", tags = "1, 2, 3, 4")]
    pub body: Option<ReplyBody>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ReplyBody {
    #[prost(message, tag = "1")]
    Keys(PublicKeys),
    #[prost(message, tag = "2")]
    Shares(SealedShares),
    #[prost(message, tag = "3")]
    Masked(MaskedVector),
    #[prost(message, tag = "4")]
    Revealed(Revealed),
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes, above the {1} allowed")]
    TooLarge(usize, usize),
    #[error("not a message of the round: {0}")]
    Malformed(String),
}

/// Decodes `bytes` as an `M`, refusing more than `limit` bytes before
/// reading any.
pub fn decode<M: Message + Default>(bytes: &[u8], limit: usize) -> Result<M, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge(bytes.len(), limit));
    }
    M::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

impl Stage {
    /// The stage's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match &self.body {
            Some(StageBody::Setup(_)) => "setup",
            Some(StageBody::ShareKeys(_)) => "share-keys",
            Some(StageBody::MaskedInput(_)) => "masked-input",
            Some(StageBody::Unmask(_)) => "unmask",
            None => "empty",
        }
    }
}
