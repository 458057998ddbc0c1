//! A round between in-process devices and a coordinator, with dropouts
//! where a test wants them and a record of everything the coordinator
//! received.
#![allow(dead_code)]

use std::collections::BTreeMap;

use hearth_secagg::wire::{self, Reply, ReplyBody, Stage, StageBody};
use hearth_secagg::{CoordinatorRound, DevicePolicy, DeviceRound, Quantization, RoundConfig, RoundError};
use prost::Message;

pub const LEN: usize = 300;

/// Where a device stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Never sends its keys.
    Setup,
    /// Sends its keys, then nothing (no shares).
    AfterKeys,
    /// Sends its shares, then no masked vector.
    AfterShares,
    /// Sends its masked vector, then does not answer the unmask stage.
    AfterMasked,
    /// Answers stage `0..4` with bytes that are not a reply to it.
    Garbage(usize),
}

pub fn config(n: usize, degree: usize) -> RoundConfig {
    let clip_norm = 1.0;
    let bits = 20;
    let quantization =
        Quantization { bits, scale: Quantization::largest_scale(bits, clip_norm, 1000), clip_norm, max_cohort: 1000 };
    let _ = n;
    RoundConfig {
        run_id: 9,
        round: 2,
        quantization,
        degree,
        threshold_fraction: 2.0 / 3.0,
        vector_len: LEN,
        noise: RoundConfig::NO_NOISE,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task: hearth_secagg::wire::Task::Train,
    }
}

/// A device's update: deterministic per node, norm below 1.
pub fn update(node: u64) -> Vec<f32> {
    (0..LEN).map(|i| (((node * 31 + i as u64 * 17) % 101) as f32 - 50.0) / 3000.0).collect()
}

pub struct Outcome {
    pub result: Result<hearth_secagg::Aggregate, RoundError>,
    /// Each device's quantized update, as it made it (the test-only
    /// record the sum is checked against).
    pub quantized: BTreeMap<u64, Vec<u32>>,
    /// Every reply the coordinator received: (stage 0 to 3, node, bytes).
    pub received: Vec<(usize, u64, Vec<u8>)>,
    /// Each device's threshold, as the coordinator set it.
    pub thresholds: BTreeMap<u64, usize>,
    /// Each device's local coin, when the round has one (test-only: it
    /// never leaves the device).
    pub coins: BTreeMap<u64, hearth_secagg::Coin>,
}

fn reply(body: ReplyBody) -> Vec<u8> {
    Reply { body: Some(body) }.encode_to_vec()
}

pub fn run(n: usize, degree: usize, drops: &BTreeMap<u64, Drop>) -> Outcome {
    run_with(n, degree, drops, &update)
}

/// A round of `n` devices (node ids `i * 1000 + 7`), each sending
/// `update(node)`, where `drops` stop answering.
pub fn run_with(n: usize, degree: usize, drops: &BTreeMap<u64, Drop>, update: &dyn Fn(u64) -> Vec<f32>) -> Outcome {
    run_configured(config(n, degree), n, drops, update)
}

/// As [`run_with`], under `config`.
pub fn run_configured(
    config: RoundConfig,
    n: usize,
    drops: &BTreeMap<u64, Drop>,
    update: &dyn Fn(u64) -> Vec<f32>,
) -> Outcome {
    let cohort: Vec<u64> = (1..=n as u64).map(|i| i * 1000 + 7).collect();
    let mut coordinator = CoordinatorRound::new(config, &cohort).unwrap();
    let policy = DevicePolicy::default();
    let mut devices: BTreeMap<u64, DeviceRound> = BTreeMap::new();
    let mut quantized = BTreeMap::new();
    let mut received = Vec::new();
    let mut thresholds = BTreeMap::new();
    let mut coins = BTreeMap::new();
    let stops = |node: u64, at: Drop| drops.get(&node) == Some(&at);
    for stage in 0..4 {
        let messages = match coordinator.advance() {
            Ok(m) => m,
            Err(e) => return Outcome { result: Err(e), quantized, received, thresholds, coins },
        };
        for (node, bytes) in messages {
            if drops.get(&node) == Some(&Drop::Garbage(stage)) {
                // Not a message, then a reply to another stage, then an
                // oversized one: each refused, none stops the round.
                let wrong = if stage == 0 {
                    ReplyBody::Revealed(Default::default())
                } else {
                    ReplyBody::Keys(Default::default())
                };
                for bad in [vec![0xff, 0xff], reply(wrong), vec![0; wire::MAX_MESSAGE_BYTES + 1]] {
                    assert!(coordinator.receive(node, &bad).is_err());
                }
                continue;
            }
            let message: Stage = wire::decode(&bytes, wire::MAX_MESSAGE_BYTES).unwrap();
            let answer = match (stage, message.body.unwrap()) {
                (0, StageBody::Setup(setup)) => {
                    if stops(node, Drop::Setup) {
                        continue;
                    }
                    thresholds.insert(node, setup.threshold as usize);
                    let (round, keys) = DeviceRound::setup(&policy, node, LEN, &setup).unwrap();
                    if let Some(coin) = round.coin() {
                        coins.insert(node, coin);
                    }
                    devices.insert(node, round);
                    reply(ReplyBody::Keys(keys))
                }
                (1, StageBody::ShareKeys(keys)) => {
                    if stops(node, Drop::AfterKeys) {
                        continue;
                    }
                    reply(ReplyBody::Shares(devices.get_mut(&node).unwrap().share_keys(&keys.peers).unwrap()))
                }
                (2, StageBody::MaskedInput(shares)) => {
                    if stops(node, Drop::AfterShares) {
                        continue;
                    }
                    let device = devices.get_mut(&node).unwrap();
                    let mut made = Vec::new();
                    let masked = device
                        .masked_input_quantized(
                            &shares.shares,
                            |q| {
                                made = q.quantize(&update(node))?;
                                Ok(made.clone())
                            },
                            LEN,
                        )
                        .unwrap();
                    quantized.insert(node, made);
                    reply(ReplyBody::Masked(masked))
                }
                (3, StageBody::Unmask(unmask)) => {
                    if stops(node, Drop::AfterMasked) {
                        continue;
                    }
                    reply(ReplyBody::Revealed(devices.get_mut(&node).unwrap().unmask(&unmask).unwrap()))
                }
                (stage, body) => panic!("stage {stage}: unexpected {:?}", Stage { body: Some(body) }.name()),
            };
            coordinator.receive(node, &answer).unwrap();
            received.push((stage, node, answer));
        }
    }
    Outcome { result: coordinator.finish(), quantized, received, thresholds, coins }
}

pub fn expected_sum(outcome: &Outcome, survivors: &[u64]) -> Vec<u32> {
    let mask = (1u32 << 20) - 1;
    let mut sum = vec![0u32; LEN];
    for node in survivors {
        for (s, v) in sum.iter_mut().zip(&outcome.quantized[node]) {
            *s = s.wrapping_add(*v) & mask;
        }
    }
    sum
}
