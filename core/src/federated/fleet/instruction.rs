//! What a train message asks of the device ([`TrainInstruction`], read
//! from the message's records and checked), what local training gives
//! back ([`LocalResult`]) through the caller's [`Trainer`], and the check
//! an update passes before it leaves.

use super::{Aggregation, ConfigValue, F32Array, FleetError, Record};
use crate::model::training::{MIN_DENSE_WEIGHT, l2};

/// What the server asks for in a train message.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainInstruction {
    pub run_id: u64,
    /// The server's round number, when its config says (`server-round`).
    pub round: Option<u64>,
    /// The L2 bound C of the update (`clip-norm`; required).
    pub clip_norm: f64,
    /// Local epochs (`local-epochs`; 1 when absent).
    pub epochs: u32,
    /// SGD learning rate (`learning-rate`), when the server sets one.
    pub learning_rate: Option<f64>,
    /// The most positives to train on (`max-examples`, 1 to 5,000), when the
    /// server sets it; the device's default (500) otherwise.
    pub max_examples: Option<usize>,
    /// The weight of the dense parameters' part of the update before
    /// clipping (`dense-weight`, in [1e-6, 1]), when the server sets one: the
    /// clip bound then spends itself more on the id tables, and the
    /// coordinator divides the dense part by it after the noise.
    pub dense_weight: Option<f64>,
    /// The global parameters, named, in the server's order.
    pub arrays: Vec<(String, F32Array)>,
    /// The whole train config, for keys this module does not read (such as
    /// `model-manifest` and `model-signature`, the signed manifest of the
    /// global model that `coordinator/` sends).
    pub config: Vec<(String, ConfigValue)>,
    /// How the update will leave the device: as it is (plain) or
    /// quantized and masked (secure aggregation, where nothing is sent
    /// beside it: no segment report).
    pub aggregation: Aggregation,
    /// A secure round whose devices add the noise (distributed DP): the
    /// terms this device sized its own share by. None when the coordinator
    /// adds the noise it announces in the config (central DP).
    pub distributed: Option<DistributedNoise>,
}

/// The distributed noise of a secure round, as this device took part in
/// it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedNoise {
    /// z: the std of the honest devices' summed noise, in clip norms.
    pub noise_multiplier: f64,
    /// The cohort the round started with, and the fraction of it this
    /// device counts on (its `HearthConfig::federated_honest_fraction`).
    pub cohort: u32,
    pub honest_fraction: f64,
    /// The integers' scale and how many values the update has.
    pub scale: f64,
    pub dimension: u64,
    /// This device's own share: its std, in clip norms.
    pub share: f64,
    /// The round's local coin, when it has one: the probability it puts
    /// the update in the sum, and whether it did (the device trains and
    /// adds its share either way; a left-out update is sent as zeros).
    pub coin: Option<hearth_secagg::Coin>,
}

impl TrainInstruction {
    /// A config value by key.
    pub fn config(&self, key: &str) -> Option<&ConfigValue> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl TrainInstruction {
    /// The global parameters concatenated, in order (weights.bin's layout
    /// when the server sends the model's parameters in manifest order).
    pub fn flat(&self) -> Vec<f32> {
        self.arrays.iter().flat_map(|(_, a)| a.data.iter().copied()).collect()
    }
}

/// What local training gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResult {
    /// `local - global` over the instruction's arrays concatenated, already
    /// clipped to L2 norm <= C.
    pub delta: Vec<f32>,
    /// Local examples used (reported coarsely).
    pub examples: usize,
    /// The device's randomized segment report, sent beside the update as
    /// the ConfigRecord `"segment-report"` when present.
    pub segment_report: Option<Vec<(String, ConfigValue)>>,
}

/// The device's training, as the round needs it.
pub trait Trainer {
    fn train(&mut self, instruction: &TrainInstruction) -> Result<LocalResult, String>;

    /// A model-evaluation round (secure rounds only): the device's
    /// contribution to the release gate's sums for the candidate model the
    /// instruction carries, [`GATE_METRICS`](crate::GATE_METRICS)
    /// values each in [0, 1]. A trainer that does not evaluate refuses.
    fn evaluate(&mut self, _instruction: &TrainInstruction) -> Result<Vec<f32>, String> {
        Err("this device does not evaluate models".into())
    }

    /// An experiment-report round (secure rounds only): the device's
    /// contribution to the per-arm sums of the experiment the instruction
    /// names (config `experiment-id`, and `experiment-arms`, its arms'
    /// names in order), `arms` x [`REPORT_METRICS`](crate::REPORT_METRICS)
    /// values each in [0, 1]. A trainer that does not report refuses.
    fn report(&mut self, _instruction: &TrainInstruction, _arms: usize) -> Result<Vec<f32>, String> {
        Err("this device does not report experiments".into())
    }
}

impl<F: FnMut(&TrainInstruction) -> Result<LocalResult, String>> Trainer for F {
    fn train(&mut self, instruction: &TrainInstruction) -> Result<LocalResult, String> {
        self(instruction)
    }
}

/// The most positives a round may ask a device to train on.
pub const MAX_EXAMPLES_PER_ROUND: usize = 5_000;

/// The instruction of a train message; `arrays` whether it must carry the
/// model's arrays (every round but an experiment report).
pub(super) fn instruction(
    run_id: u64,
    content: Vec<(String, Record)>,
    arrays_required: bool,
) -> Result<TrainInstruction, FleetError> {
    let mut arrays = None;
    let mut config = Vec::new();
    for (_, record) in content {
        match record {
            Record::Arrays(a) if arrays.is_none() => arrays = Some(a),
            Record::Arrays(_) => return Err(FleetError::Protocol("more than one ArrayRecord".into())),
            Record::Config(c) => config.extend(c),
            Record::Metrics(_) => {}
        }
    }
    let arrays = match arrays {
        Some(a) => a,
        None if !arrays_required => Vec::new(),
        None => return Err(FleetError::Protocol("a train message without arrays".into())),
    };
    let get = |k: &str| config.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let clip_norm = get("clip-norm")
        .and_then(ConfigValue::as_f64)
        .filter(|c| c.is_finite() && *c > 0.0)
        .ok_or_else(|| FleetError::Protocol("no positive clip-norm in the train config".into()))?;
    let epochs = whole_number(get("local-epochs"), "local-epochs", 20)?.unwrap_or(1) as u32;
    let learning_rate = match get("learning-rate").map(|v| v.as_f64()) {
        None => None,
        Some(Some(lr)) if lr.is_finite() && lr > 0.0 && lr <= 10.0 => Some(lr),
        Some(_) => return Err(FleetError::Protocol("learning-rate must be in (0, 10]".into())),
    };
    let max_examples = whole_number(get("max-examples"), "max-examples", MAX_EXAMPLES_PER_ROUND)?;
    let dense_weight = match get("dense-weight").map(|v| v.as_f64()) {
        None => None,
        Some(Some(w)) if w.is_finite() && (MIN_DENSE_WEIGHT..=1.0).contains(&w) => Some(w),
        Some(_) => return Err(FleetError::Protocol("dense-weight must be in [1e-6, 1]".into())),
    };
    let round = get("server-round").and_then(ConfigValue::as_f64).map(|r| r as u64);
    Ok(TrainInstruction {
        run_id,
        round,
        clip_norm,
        epochs,
        learning_rate,
        max_examples,
        dense_weight,
        arrays,
        config,
        aggregation: Aggregation::Plain,
        distributed: None,
    })
}

/// A whole-number setting of the train config, from 1 to `max`: None when
/// the coordinator left it out, a Protocol error when it is anything else
/// (a fraction, out of range, not a number).
fn whole_number(value: Option<&ConfigValue>, key: &str, max: usize) -> Result<Option<usize>, FleetError> {
    match value.map(ConfigValue::as_f64) {
        None => Ok(None),
        Some(Some(v)) if (1.0..=max as f64).contains(&v) && v.fract() == 0.0 => Ok(Some(v as usize)),
        Some(_) => Err(FleetError::Protocol(format!("{key} must be a whole number from 1 to {max}"))),
    }
}

/// What a round of bounded metrics (an evaluation or an experiment
/// report) sums: `len` values, each in [0, 1], of L2 norm at most `bound`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct MetricsShape {
    pub len: usize,
    pub bound: f64,
}

/// Refuses a round of metrics whose clip norm (the noise's unit) is below
/// their bound, before anything is computed (so the refusal says nothing of
/// the device's data), and metrics of the wrong length or with a value
/// outside [0, 1]; gives their norm.
pub(super) fn check_metrics(
    instruction: &TrainInstruction,
    shape: MetricsShape,
    values: Option<&[f32]>,
) -> Result<f64, FleetError> {
    if instruction.clip_norm < shape.bound {
        return Err(FleetError::Protocol(format!(
            "a metrics round's clip norm of {} is below the contribution's bound {:.4}",
            instruction.clip_norm, shape.bound
        )));
    }
    let Some(values) = values else { return Ok(0.0) };
    if values.len() != shape.len {
        return Err(FleetError::Update(format!("{} metric values, not {}", values.len(), shape.len)));
    }
    if !values.iter().all(|v| (0.0..=1.0).contains(v)) {
        return Err(FleetError::Update("a metric value outside [0, 1]".into()));
    }
    Ok(l2(values))
}

/// Refuses an update of the wrong length, not finite, or above C.
pub(super) fn check_update(instruction: &TrainInstruction, result: &LocalResult) -> Result<f64, FleetError> {
    let expected: usize = instruction.arrays.iter().map(|(_, a)| a.len()).sum();
    if result.delta.len() != expected {
        return Err(FleetError::Update(format!("{} values for {expected} parameters", result.delta.len())));
    }
    if result.delta.iter().any(|x| !x.is_finite()) {
        return Err(FleetError::Update("a value that is not finite".into()));
    }
    let norm = l2(&result.delta);
    if norm > instruction.clip_norm {
        return Err(FleetError::Update(format!("norm {norm:.6} above the clip norm {}", instruction.clip_norm)));
    }
    Ok(norm)
}
