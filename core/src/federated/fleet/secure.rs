//! A secure-aggregation round as a device takes part in it: four messages
//! from the coordinator, each answered in turn, the update leaving the
//! device only quantized and masked (`hearth_secagg` holds the protocol;
//! this file carries its bytes over the Fleet API).
//!
//! A stage message is a train message whose content has the ConfigRecord
//! `"hearth.secagg"` with `"stage"` (bytes, a `hearth_secagg::wire::Stage`);
//! the masked-input stage also carries the global arrays and the train
//! config, as a plain round does. A reply has only `"hearth.secagg"` with
//! `"reply"` (bytes): no example count, no segment report, no training
//! time (the runtime field Flower requires is 0, as in every reply), and
//! the message's own creation time rather than the device's clock.
//!
//! When the device refuses a stage (a [`Refusal`]: terms below its
//! [`DevicePolicy`](hearth_secagg::DevicePolicy), inconsistent lists, a
//! request for both shares of one peer...), it answers that stage with an
//! error reply of a fixed reason, so the coordinator need not wait for it,
//! and sends nothing more in the round.

use hearth_secagg::wire::{self, Reply, ReplyBody, Stage, StageBody, Task};
use hearth_secagg::{DeviceRound, Refusal};
use prost::Message;

use super::instruction::{MetricsShape, check_metrics};
use super::{
    Aggregation, ConfigValue, DistributedNoise, FleetClient, FleetError, Record, RoundOutcome, RoundReport,
    SecureWitness, TrainInstruction, Trainer, Transport, instruction, objects, proto, reply_metadata,
};
use crate::experiments::MAX_ARMS;
use crate::experiments::gate::{self, GATE_METRICS};
use crate::experiments::report::{REPORT_METRICS, report_bound};

/// The ConfigRecord of a secure-aggregation message or reply.
pub const SECAGG_KEY: &str = "hearth.secagg";

const REFUSED: &str = "the device refused a stage of secure aggregation";

/// Takes the secure-aggregation record out of a message's content: None
/// for a plain round; the stage, or why it is not one, otherwise.
pub(super) fn take_stage(content: &mut Vec<(String, Record)>) -> Option<Result<Stage, FleetError>> {
    let at = content.iter().position(|(name, _)| name == SECAGG_KEY)?;
    let (_, record) = content.remove(at);
    let bytes = match record {
        Record::Config(mut values) if values.len() == 1 && values[0].0 == "stage" => match values.pop() {
            Some((_, ConfigValue::Bytes(bytes))) => bytes,
            _ => return Some(Err(FleetError::Protocol(format!("{SECAGG_KEY}: 'stage' is not bytes")))),
        },
        _ => return Some(Err(FleetError::Protocol(format!("{SECAGG_KEY} is not a ConfigRecord of one 'stage'")))),
    };
    Some(wire::decode::<Stage>(&bytes, wire::MAX_MESSAGE_BYTES).map_err(|e| FleetError::Protocol(e.to_string())))
}

impl<T: Transport> FleetClient<T> {
    /// A secure round that began with `first` (the setup stage) in the
    /// message `meta`.
    pub(super) fn secure_round(
        &mut self,
        node_id: u64,
        wait: std::time::Duration,
        meta: proto::Metadata,
        first: Result<Stage, FleetError>,
        trainer: &mut dyn Trainer,
    ) -> Result<RoundOutcome, FleetError> {
        let setup = match first.map(|s| s.body) {
            Ok(Some(StageBody::Setup(setup))) => setup,
            Ok(_) => {
                return self.refuse(node_id, &meta, FleetError::Protocol("a secure round not begun by setup".into()));
            }
            Err(e) => return self.refuse(node_id, &meta, e),
        };
        // An evaluation's metrics; or the model's parameter count, when the
        // client knows the model, and adaptive clipping's count after it.
        let vector_len = match &self.options.limits.expected_arrays {
            _ if setup.task == Task::EvaluateModel as i32 => GATE_METRICS,
            // Whole arms, 2 to MAX_ARMS (the experiment, named later, must
            // have as many); anything else is refused at setup.
            _ if setup.task == Task::ExperimentReport as i32 => {
                let per_arm = REPORT_METRICS as u64;
                let arms = setup.vector_len / per_arm;
                if setup.vector_len % per_arm == 0 && (2..=u64::from(MAX_ARMS)).contains(&arms) {
                    setup.vector_len as usize
                } else {
                    0
                }
            }
            Some(arrays) => {
                arrays.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum::<usize>()
                    + usize::from(setup.count_weight > 0.0)
            }
            None => setup.vector_len as usize,
        };
        let (mut device, keys) = match DeviceRound::setup(&self.options.secure, node_id, vector_len, &setup) {
            Ok(started) => started,
            Err(refusal) => return self.refuse(node_id, &meta, FleetError::Refused(refusal.to_string())),
        };
        log::info!("secure round {} of run {}: setup accepted", setup.round, setup.run_id);
        let distributed = device.noise().map(|share| DistributedNoise {
            noise_multiplier: setup.noise_multiplier,
            cohort: setup.cohort,
            honest_fraction: self.options.secure.honest_fraction,
            scale: setup.scale,
            dimension: vector_len as u64,
            share: share.variance().sqrt() / (setup.clip_norm * setup.scale),
            coin: device.coin(),
        });
        self.push_stage(node_id, &meta, ReplyBody::Keys(keys))?;
        let run_id = meta.run_id;
        let mut report = None;
        for step in 1..4 {
            let Some((meta, mut content)) = self.next_message(node_id, wait)? else {
                // The coordinator went on without this device (or stopped).
                return Err(FleetError::Timeout);
            };
            let stage = match take_stage(&mut content) {
                Some(Ok(stage)) if meta.run_id == run_id => stage,
                Some(Err(e)) => return self.refuse(node_id, &meta, e),
                _ => {
                    return self.refuse(
                        node_id,
                        &meta,
                        FleetError::Protocol("not the secure round's next stage".into()),
                    );
                }
            };
            let answer = match (step, stage.body) {
                (1, Some(StageBody::ShareKeys(keys))) => device.share_keys(&keys.peers).map(ReplyBody::Shares),
                (2, Some(StageBody::MaskedInput(shares))) => {
                    let task = device.task();
                    let mut instruction = instruction(run_id, content, task != Task::ExperimentReport)?;
                    instruction.aggregation = Aggregation::Secure;
                    instruction.distributed = distributed;
                    // What goes in the sum: the device's metrics (its
                    // evaluation of the candidate, its experiment report),
                    // or its clipped update (with the count).
                    let (vector, norm) = if task != Task::Train {
                        self.metrics_checked(node_id, &meta, trainer, &instruction, &setup, task, vector_len)?
                    } else {
                        let (result, norm) = self.train_checked(node_id, &meta, trainer, &instruction)?;
                        match with_count(&result.delta, norm, instruction.clip_norm, &setup, &device) {
                            Ok(v) => (v, norm),
                            Err(e) => return self.refuse(node_id, &meta, e),
                        }
                    };
                    report = Some(RoundReport {
                        node_id,
                        run_id,
                        round: instruction.round,
                        clip_norm: instruction.clip_norm,
                        norm,
                        examples_reported: 0,
                        bytes_sent: 0,
                        bytes_received: 0,
                    });
                    let witness = self.options.secure_witness.clone();
                    // What goes in the sum before the noise: zeros when the
                    // coin left this update out.
                    let left_out = device.coin().is_some_and(|c| !c.included);
                    let len = vector.len();
                    // Both closures see it: the first fills it, the second takes it.
                    let quantized = std::cell::RefCell::new(Vec::new());
                    device
                        .masked_input_observed(
                            &shares.shares,
                            |q| {
                                let made = q.quantize(&vector)?;
                                if witness.is_some() {
                                    *quantized.borrow_mut() = if left_out { vec![0; made.len()] } else { made.clone() };
                                }
                                Ok(made)
                            },
                            |noised| {
                                if let Some(w) = &witness {
                                    w.lock().unwrap_or_else(|p| p.into_inner()).push(SecureWitness {
                                        node_id,
                                        run_id,
                                        round: instruction.round,
                                        bits: setup.bits,
                                        quantized: quantized.take(),
                                        noised: noised.to_vec(),
                                        global: instruction.flat(),
                                    });
                                }
                            },
                            len,
                        )
                        .map(ReplyBody::Masked)
                }
                (3, Some(StageBody::Unmask(unmask))) => device.unmask(&unmask).map(ReplyBody::Revealed),
                (_, body) => Err(Refusal::OutOfOrder {
                    got: Stage { body }.name(),
                    want: ["setup", "share-keys", "masked-input", "unmask"][step],
                }),
            };
            match answer {
                Ok(body) => self.push_stage(node_id, &meta, body)?,
                Err(refusal) => return self.refuse(node_id, &meta, FleetError::Refused(refusal.to_string())),
            }
        }
        report.map(RoundOutcome::Done).ok_or_else(|| FleetError::Protocol("a secure round without an update".into()))
    }

    /// The device's metrics for a round of `task` (its evaluation of the
    /// candidate the instruction carries, or its report of the experiment
    /// it names), `len` values, checked (`check_metrics`), and their norm.
    /// The round's bound must hold a contribution: the noise is sized by
    /// it. Refusals before computing and a failure are answered with an
    /// error, as for training.
    #[allow(clippy::too_many_arguments)]
    fn metrics_checked(
        &mut self,
        node_id: u64,
        meta: &proto::Metadata,
        trainer: &mut dyn Trainer,
        instruction: &TrainInstruction,
        setup: &hearth_secagg::wire::Setup,
        task: Task,
        len: usize,
    ) -> Result<(Vec<f32>, f64), FleetError> {
        let shape = match task {
            Task::EvaluateModel => MetricsShape { len, bound: gate::contribution_bound() },
            _ => MetricsShape { len, bound: report_bound() },
        };
        if let Err(e) = check_metrics(instruction, shape, None) {
            return self.refuse(node_id, meta, e);
        }
        if instruction.clip_norm > setup.clip_norm * (1.0 + 1e-9) {
            let why = format!("a clip norm of {} above the round's bound {}", instruction.clip_norm, setup.clip_norm);
            return self.refuse(node_id, meta, FleetError::Protocol(why));
        }
        let arms = len / REPORT_METRICS as usize;
        let values = match self.online(node_id, || match task {
            Task::EvaluateModel => trainer.evaluate(instruction),
            _ => trainer.report(instruction, arms),
        }) {
            Ok(v) => v,
            Err(why) => {
                self.push_error(node_id, meta, "local evaluation failed on the device")?;
                return Err(FleetError::Update(why));
            }
        };
        match check_metrics(instruction, shape, Some(&values)) {
            Ok(norm) => Ok((values, norm)),
            Err(e) => {
                self.push_error(node_id, meta, "the device refused its own evaluation")?;
                Err(e)
            }
        }
    }

    /// Answers `to` with an error of a fixed reason and gives `why`.
    fn refuse<R>(&mut self, node_id: u64, to: &proto::Metadata, why: FleetError) -> Result<R, FleetError> {
        log::warn!("secure aggregation: {why}");
        self.push_error(node_id, to, REFUSED)?;
        Err(why)
    }

    /// Replies to `to` with a stage's answer.
    fn push_stage(&mut self, node_id: u64, to: &proto::Metadata, body: ReplyBody) -> Result<(), FleetError> {
        let bytes = Reply { body: Some(body) }.encode_to_vec();
        let content = vec![(SECAGG_KEY.to_string(), Record::Config(vec![("reply".into(), ConfigValue::Bytes(bytes))]))];
        let meta = reply_metadata(node_id, to)?;
        let deflated = objects::deflate_message(&meta, &content);
        self.push_reply(node_id, meta, deflated, None)
    }
}

/// The vector a secure round sums: the clipped update, and with adaptive
/// clipping (the setup's count weight beta > 0) one value more,
/// `beta (bit - 1/2)`, the bit whether the update's norm was within the
/// train config's C, so the sum counts the unclipped updates and no one
/// sees this device's bit. The setup's clip norm must bound the whole:
/// sqrt(C^2 + (beta / 2)^2) at most, or the round is refused (a
/// coordinator that understates it would get a sum its noise does not
/// cover).
fn with_count(
    delta: &[f32],
    norm: f64,
    clip_norm: f64,
    setup: &hearth_secagg::wire::Setup,
    device: &DeviceRound,
) -> Result<Vec<f32>, FleetError> {
    let beta = device.count_weight();
    if beta == 0.0 {
        return Ok(delta.to_vec());
    }
    let bound = clip_norm.hypot(beta / 2.0);
    if bound > setup.clip_norm * (1.0 + 1e-9) {
        return Err(FleetError::Protocol(format!(
            "a count of weight {beta} with C = {clip_norm} needs a bound of {bound}, the round's is {}",
            setup.clip_norm
        )));
    }
    let unclipped = norm < clip_norm * (1.0 - UNCLIPPED_MARGIN);
    // beta / 2 in f32, never above it (the bound is for the exact value).
    let mut half = (beta / 2.0) as f32;
    if half as f64 > beta / 2.0 {
        // The next f32 towards zero (beta / 2 > 0, so its bits fall by one).
        half = f32::from_bits(half.to_bits() - 1);
    }
    let mut v = Vec::with_capacity(delta.len() + 1);
    v.extend_from_slice(delta);
    v.push(if unclipped { half } else { -half });
    Ok(v)
}

/// A clipped update's norm is C up to f32 rounding; one below C by more
/// than this (relative) was not clipped (the coordinator's rule too,
/// coordinator/hearth_coordinator/adaptive_clip.py).
pub(crate) const UNCLIPPED_MARGIN: f64 = 1e-5;

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_secagg::wire::Setup;
    use hearth_secagg::{DevicePolicy, Quantization};

    fn round(count_weight: f64, clip_norm: f64) -> (Setup, DeviceRound) {
        let setup = Setup {
            run_id: 1,
            round: 1,
            bits: 20,
            scale: Quantization::largest_scale(20, clip_norm, 10),
            clip_norm,
            max_cohort: 10,
            cohort: 10,
            threshold: 6,
            neighbours: (2..=10).collect(),
            vector_len: 4,
            noise_multiplier: 0.0,
            sampling_rate: 0.0,
            count_weight,
            task: 0,
        };
        let policy = DevicePolicy { min_cohort: 3, ..DevicePolicy::default() };
        let (device, _) = DeviceRound::setup(&policy, 1, 4, &setup).unwrap();
        (setup, device)
    }

    #[test]
    fn the_count_follows_the_update_and_the_bound_must_hold_it() {
        let delta = [0.3f32, 0.4, 0.0];
        // C = 1, beta = 0.5: the bound sqrt(1 + 1/16).
        let (setup, device) = round(0.5, 1.0f64.hypot(0.25));
        // Norm 0.5 within C: unclipped, +beta/2; at C: clipped, -beta/2.
        assert_eq!(with_count(&delta, 0.5, 1.0, &setup, &device).unwrap(), vec![0.3, 0.4, 0.0, 0.25]);
        assert_eq!(with_count(&delta, 1.0, 1.0, &setup, &device).unwrap(), vec![0.3, 0.4, 0.0, -0.25]);
        assert_eq!(with_count(&delta, 1.0 - 1e-7, 1.0, &setup, &device).unwrap()[3], -0.25);
        // A train config's C the round's bound cannot hold with the count.
        assert!(matches!(with_count(&delta, 0.5, 1.01, &setup, &device), Err(FleetError::Protocol(_))));
        // Without a count weight the vector is the update.
        let (setup, device) = round(0.0, 1.0);
        assert_eq!(with_count(&delta, 0.5, 1.0, &setup, &device).unwrap(), delta.to_vec());
        // beta / 2 in f32 never above beta / 2.
        let beta = 0.2f64;
        let (setup, device) = round(beta, 1.0f64.hypot(beta / 2.0));
        let v = with_count(&delta, 0.5, 1.0, &setup, &device).unwrap()[3] as f64;
        assert!(v <= beta / 2.0 && v > beta / 2.0 * (1.0 - 1e-6), "{v}");
    }
}
