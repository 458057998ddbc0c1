//! Internals exposed for the workspace's own tests and benchmarks only (not
//! part of the API; hidden from the docs).

use std::path::Path;
use std::sync::Arc;

use crate::features::{CONTEXT_WIDTH, ID_ROWS, ITEM_WIDTH, USER_WIDTH};
use crate::model::{self, Model, ScoreInputs};
use crate::ranking::SplitMix;

pub use crate::store::schema::V1 as SCHEMA_V1_SQL;

/// The inputs of one inference call, as the graph takes them.
#[derive(Debug, Clone)]
pub struct InferenceInputs(ScoreInputs);

impl InferenceInputs {
    /// Deterministic inputs for `n` candidates and `k` history slots, every
    /// feature group populated with values in the ranges the device makes.
    pub fn synthetic(n: usize, k: usize, seed: u64) -> Self {
        let mut rng = SplitMix::new(seed);
        let mut u = move |lo: f32, hi: f32| lo + (hi - lo) * (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let mut user: Vec<f32> = (0..USER_WIDTH).map(|_| u(0.0, 1.0)).collect();
        let s: f32 = user[..32].iter().sum();
        user[..32].iter_mut().for_each(|x| *x /= s);
        let context = (0..CONTEXT_WIDTH).map(|_| u(-1.0, 1.0)).collect();
        let items = (0..n * ITEM_WIDTH)
            .map(|i| if i % ITEM_WIDTH < 32 { (u(0.0, 1.0) > 0.9) as u8 as f32 } else { u(0.0, 1.0) })
            .collect();
        let item_ids = (0..n).map(|_| (u(0.0, 1.0) * ID_ROWS as f32) as i64 % ID_ROWS as i64).collect();
        let history_ids = (0..k).map(|_| (u(0.0, 1.0) * ID_ROWS as f32) as i64 % ID_ROWS as i64).collect();
        let history_weights = (0..k).map(|_| u(0.0, 3.0)).collect();
        InferenceInputs(ScoreInputs { user, context, items, item_ids, history_ids, history_weights })
    }

    /// Writes each input as a `.npy` file (`user.npy`, `items.npy`, ...).
    pub fn write_npy(&self, dir: &Path) -> std::io::Result<()> {
        let i = &self.0;
        let n = i.item_ids.len();
        let k = i.history_ids.len();
        write_npy(&dir.join("user.npy"), "<f4", &[USER_WIDTH], &le_f32(&i.user))?;
        write_npy(&dir.join("context.npy"), "<f4", &[CONTEXT_WIDTH], &le_f32(&i.context))?;
        write_npy(&dir.join("items.npy"), "<f4", &[n, ITEM_WIDTH], &le_f32(&i.items))?;
        write_npy(&dir.join("item_ids.npy"), "<i8", &[n], &le_i64(&i.item_ids))?;
        write_npy(&dir.join("history_ids.npy"), "<i8", &[k], &le_i64(&i.history_ids))?;
        write_npy(&dir.join("history_weights.npy"), "<f4", &[k], &le_f32(&i.history_weights))
    }
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn le_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a NumPy `.npy` file (version 1.0; the encoder Flower objects use).
pub fn write_npy(path: &Path, dtype: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, crate::federated::objects::npy(dtype, shape, data))
}

/// The built-in model's inference plan, for benchmarks.
pub struct Inference(Arc<Model>);

impl Inference {
    pub fn builtin() -> Inference {
        Inference(model::builtin().expect("the built-in model loads"))
    }

    pub fn score(&self, inputs: &InferenceInputs) -> Vec<f32> {
        self.0.score(&inputs.0).expect("inference runs")
    }
}

/// Loss, gradients (flat, per parameter in manifest order, with names) and
/// scores of one training step of the built-in model at its shipped weights.
pub struct StepResult {
    pub loss: f32,
    pub scores: Vec<f32>,
    pub gradients: Vec<(String, Vec<f32>)>,
}

impl Inference {
    pub fn train_step(&self, inputs: &InferenceInputs, labels: &[f32], sample_weights: &[f32]) -> StepResult {
        let out = self.0.step(&self.0.weights, &inputs.0, labels, sample_weights).expect("training step runs");
        let names = self.0.manifest.parameters.iter().map(|p| p.name.clone());
        StepResult { loss: out.loss, scores: out.scores, gradients: names.zip(out.gradients).collect() }
    }
}

/// What local training produced (the clipped delta and its record).
pub use crate::training::LocalUpdate as UpdateReport;
pub use crate::training::RoundSettings;

/// The device's clipping, for benchmarks and tests: scales `delta` so its
/// L2 norm is at most `c` and returns the norm before.
pub fn clip(delta: &mut [f32], c: f64) -> f64 {
    crate::training::clip(delta, c)
}

/// The clipped update local training makes on `hearth`'s history, from the
/// active model's weights.
pub fn local_update(
    hearth: &crate::Hearth,
    clip_norm: f64,
    epochs: u32,
    seed: u64,
) -> Result<UpdateReport, crate::HearthError> {
    hearth.local_update(&RoundSettings { epochs, ..RoundSettings::new(clip_norm, seed) }, None)
}

/// The clipped update from `global` (weights.bin's layout; the active
/// model's weights when `None`) with a round's settings.
pub fn local_update_with(
    hearth: &crate::Hearth,
    round: &RoundSettings,
    global: Option<&[f32]>,
) -> Result<UpdateReport, crate::HearthError> {
    hearth.local_update(round, global)
}
