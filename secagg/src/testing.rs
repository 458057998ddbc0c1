//! A small honest round, driven to any stage, so that a message can be
//! thrown at a device or at the coordinator where it would arrive: for the
//! fuzz targets (`fuzz/`) and their seeds. Not for production use.

use std::collections::BTreeMap;

use crate::wire::{self, Reply, ReplyBody, Stage, StageBody};
use crate::{CoordinatorRound, DevicePolicy, DeviceRound, Quantization, Refusal, RoundConfig};
use prost::Message;

/// The update's length in these rounds.
pub const LEN: usize = 8;

/// The node every fuzzed message is for (or from).
pub const TARGET: u64 = 1;

/// The devices' policy here: cohorts of 3 allowed.
pub fn policy() -> DevicePolicy {
    DevicePolicy { min_cohort: 3, ..DevicePolicy::default() }
}

/// A round of `n` devices (node ids 1 to n) at the start of a stage: the
/// coordinator has sent the stage's messages, no device has answered.
pub struct Honest {
    pub coordinator: CoordinatorRound,
    pub devices: BTreeMap<u64, DeviceRound>,
    /// This stage's message to each device, encoded.
    pub messages: BTreeMap<u64, Vec<u8>>,
}

fn config(n: usize) -> RoundConfig {
    let bits = 16;
    let quantization = Quantization {
        bits,
        scale: Quantization::largest_scale(bits, 1.0, n as u32),
        clip_norm: 1.0,
        max_cohort: n as u32,
    };
    RoundConfig {
        run_id: 3,
        round: 1,
        quantization,
        degree: 40,
        threshold_fraction: 2.0 / 3.0,
        vector_len: LEN,
        noise: RoundConfig::NO_NOISE,
        sampling_rate: 0.0,
        count_weight: 0.0,
        task: crate::wire::Task::Train,
    }
}

/// The update every honest device sends.
pub fn update() -> Vec<f32> {
    (0..LEN).map(|i| (i as f32 - 3.5) / 20.0).collect()
}

/// `n` devices at the start of stage `stage` (0 setup, 1 share-keys,
/// 2 masked-input, 3 unmask).
pub fn honest(n: usize, stage: usize) -> Honest {
    let cohort: Vec<u64> = (1..=n as u64).collect();
    let coordinator = CoordinatorRound::new(config(n), &cohort).expect("an honest round");
    let mut h = Honest { coordinator, devices: BTreeMap::new(), messages: BTreeMap::new() };
    h.messages = h.coordinator.advance().expect("setup");
    for _ in 0..stage.min(3) {
        let messages = std::mem::take(&mut h.messages);
        for (node, message) in messages {
            let reply = h.answer(node, &message).expect("an honest answer");
            h.coordinator.receive(node, &reply).expect("an honest reply");
        }
        h.messages = h.coordinator.advance().expect("the next stage");
    }
    h
}

impl Honest {
    /// Device `node`'s answer to `message` (bytes of a [`Stage`]), as the
    /// Fleet client gives it: the encoded [`Reply`], or its refusal.
    pub fn answer(&mut self, node: u64, message: &[u8]) -> Result<Vec<u8>, Refusal> {
        let stage: Stage = wire::decode(message, wire::MAX_MESSAGE_BYTES).map_err(|_| Refusal::Aborted)?;
        let body = match stage.body {
            Some(StageBody::Setup(setup)) => {
                let (round, keys) = DeviceRound::setup(&policy(), node, LEN, &setup)?;
                self.devices.insert(node, round);
                ReplyBody::Keys(keys)
            }
            Some(body) => {
                let round = self.devices.get_mut(&node).ok_or(Refusal::Aborted)?;
                match body {
                    StageBody::ShareKeys(keys) => ReplyBody::Shares(round.share_keys(&keys.peers)?),
                    StageBody::MaskedInput(shares) => ReplyBody::Masked(round.masked_input(&shares.shares, &update())?),
                    StageBody::Unmask(unmask) => ReplyBody::Revealed(round.unmask(&unmask)?),
                    StageBody::Setup(_) => unreachable!("matched above"),
                }
            }
            None => return Err(Refusal::Aborted),
        };
        Ok(Reply { body: Some(body) }.encode_to_vec())
    }

    /// Every device but `except` answers this stage's message, then the
    /// coordinator and the devices finish the round honestly; the
    /// coordinator's result.
    pub fn finish_without(mut self, except: u64) -> Option<crate::Aggregate> {
        let mut skip = Some(except);
        loop {
            let messages = std::mem::take(&mut self.messages);
            for (node, message) in messages {
                if skip == Some(node) {
                    continue;
                }
                if let Ok(reply) = self.answer(node, &message) {
                    let _ = self.coordinator.receive(node, &reply);
                }
            }
            skip = None;
            if self.coordinator.stage() == crate::RoundStage::Unmask {
                return self.coordinator.finish().ok();
            }
            self.messages = self.coordinator.advance().ok()?;
        }
    }
}

/// The table sampler for sigma^2 = `num / den` with its body cut at
/// |x| = `cut` and its acceptance bounds coarsened to 64 - `coarse` bits,
/// so that the tail and the exact decision, rare in use, run often enough
/// to test their distribution.
pub fn stressed_sampler(num: u64, den: u64, cut: u64, coarse: u32) -> crate::noise::Sampler {
    crate::noise::Sampler::Table(Box::new(crate::noise::table::Table::with_cut(num, den, cut, coarse)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_reaches_every_stage_and_finishes() {
        for stage in 0..4 {
            let h = honest(4, stage);
            assert_eq!(h.messages.len(), 4);
            let aggregate = h.finish_without(0).expect("an honest round finishes");
            assert_eq!(aggregate.survivors, vec![1, 2, 3, 4]);
        }
    }
}
